//! Branches, exception generation and system instructions. Only the SYS space (DC, IC and
//! the other operations by address) touches memory.

use super::{bits, register_or_zero, untagged, Gap};
use crate::event::{Access, AccessKind};
use crate::regs::Aarch64Registers;

/// Lists the accesses of an instruction from the branch, exception and system group.
pub(super) fn accesses(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    match word & 0xfff8_0000 {
        // SYS #op1, Cn, Cm, #op2, Xt
        0xd508_0000 => system_operation(word, regs),
        // SYSL, and SYSP (128-bit operands).
        0xd528_0000 | 0xd548_0000 => Err(Gap::NotModelled("SYSL and SYSP system instructions")),
        // Branches, exception generation, hints, barriers, MRS and MSR.
        _ => Ok(Vec::new()),
    }
}

/// Lists the accesses of the SYS operations that user space can run, named by
/// (op1, CRn, CRm, op2).
fn system_operation(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let operation = (
        bits(word, 18, 16),
        bits(word, 15, 12),
        bits(word, 11, 8),
        bits(word, 7, 5),
    );
    let address = register_or_zero(regs, bits(word, 4, 0));
    match operation {
        // DC ZVA zeroes a block. DC GZVA also sets the block's allocation tags, which the
        // trace does not represent.
        (3, 7, 4, 1) | (3, 7, 4, 4) => zero_block(address, regs.dczva_block_size),
        (3, 7, 4, 3) => Err(Gap::NotModelled("DC GVA writes of allocation tags")),
        // Cache cleaning and invalidation to the point of coherency, unification or
        // persistence: DC CVAC, CVAU, CVAP, CVADP, CIVAC, their tag variants, and IC IVAU.
        // They can fault like a read, but read or write no data.
        (3, 7, 10 | 12 | 13 | 14, 1 | 3 | 5) | (3, 7, 11, 1) | (3, 7, 5, 1) => Ok(Vec::new()),
        // CFP, DVP, COSP and CPP RCTX restrict speculation and access no memory.
        (3, 7, 3, 4..=7) => Ok(Vec::new()),
        _ => Err(Gap::NotModelled(
            "SYS operations other than DC and IC by address",
        )),
    }
}

/// Returns the write of DC ZVA: the naturally aligned block of `block_size` bytes that
/// contains `address`.
fn zero_block(address: u64, block_size: u32) -> Result<Vec<Access>, Gap> {
    // DCZID_EL0.BS is log2 of the block size in 4-byte words, at most 9 (2 KiB).
    if !block_size.is_power_of_two() || !(4..=2048).contains(&block_size) {
        return Err(Gap::InvalidZvaBlockSize(block_size));
    }
    let start = untagged(address) & !(u64::from(block_size) - 1);
    Ok(vec![Access {
        addr: start,
        size: block_size,
        kind: AccessKind::Write,
    }])
}
