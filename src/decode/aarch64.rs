//! AArch64 decoding: an instruction word and registers in, memory accesses out.
//!
//! Capstone validates the word and formats its text. The accesses come from this module's
//! own decoding of the encoding fields, which follows the A64 encoding index and pseudocode of
//! the Arm Architecture Reference Manual (DDI 0487). Capstone's operand details are not used.
//! Capstone 5.0.6 gives a memory operand no size and a post-index offset as a separate
//! immediate, and capstone-rs 0.14 aborts the process while it converts the operands of MRS
//! and MSR with some system registers. The rules that apply to every form:
//!
//! - Addresses are computed modulo 2^64 and then lose their top byte the way Linux's
//!   top-byte-ignore does for user space (bits 63:56 become copies of bit 55), so a tagged
//!   pointer yields the address of the bytes it names.
//! - A pre-indexed access is at base + offset and a post-indexed one at the base.
//! - Forms that transfer a register pair (LDP, STP, LDXP, CASP and the like) produce one
//!   access per register, the first register's slot first, because the architecture defines
//!   them as one access per register.
//! - A SIMD&FP structure load or store produces one access covering all the bytes it
//!   transfers, because its registers' elements interleave in memory.
//! - A read-modify-write (LSE atomics, SWP, CAS) reads before it writes.
//! - A store whose outcome depends on state the decoder cannot see (store-exclusive,
//!   compare-and-swap) is a [`AccessKind::PossibleWrite`].
//! - `dc zva` writes the aligned block whose size the caller gives in
//!   [`Aarch64Registers::dczva_block_size`], because DCZID_EL0 is not part of the registers.
//! - SVE, SME, memory tagging, pointer-authenticated loads and the memory copy and set
//!   instructions are reported as unsupported.

mod load_store;
mod simd;
mod system;

use std::cell::OnceCell;
use std::fmt;

use capstone::arch::arm64::ArchMode;
use capstone::arch::BuildsCapstone;
use capstone::Capstone;

use super::{Decoded, DecodedInstruction};
use crate::event::{Access, AccessKind, UnsupportedInstruction};
use crate::regs::Aarch64Registers;

/// Length of every A64 instruction in bytes.
const INSTRUCTION_LEN: usize = 4;

/// Decodes the instruction at the start of `code`, located at `regs.pc`, and computes the
/// accesses it makes with `regs`.
pub(super) fn decode(code: &[u8], regs: &Aarch64Registers) -> Decoded {
    let Some(word) = instruction_word(code) else {
        return unsupported(regs.pc, hex(code), Gap::Truncated);
    };
    let accesses = accesses(word, regs);
    let text = match (disassemble(word, regs.pc), &accesses) {
        (Ok(text), _) => text,
        // Capstone 5.0.6 rejects STGP, and encodings that the Arm ARM calls CONSTRAINED
        // UNPREDICTABLE (a should-be-one field that is not all ones, LDP to one register twice,
        // writeback to a transferred register). A core that took a memory fault on one of
        // them was making the accesses its fields describe, so those accesses still stand.
        (Err(Gap::Invalid), Ok(list)) if !list.is_empty() => format!(".inst {word:#010x}"),
        (Err(gap), _) => return unsupported(regs.pc, hex(code), gap),
    };
    match accesses {
        Ok(accesses) => Decoded::Instruction(DecodedInstruction {
            len: INSTRUCTION_LEN,
            text,
            accesses,
        }),
        Err(gap) => unsupported(regs.pc, text, gap),
    }
}

/// Reason the decoder could not compute an instruction's accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gap {
    /// Fewer than four bytes.
    Truncated,
    /// Capstone could not be set up.
    DisassemblerUnavailable,
    /// Capstone does not recognise the word.
    Invalid,
    /// Capstone recognises the word, but the fields are an unallocated encoding of a memory
    /// class.
    Unallocated,
    /// The instruction touches memory in a way that is not modelled. The text names the
    /// instructions, and sometimes the reason.
    NotModelled(&'static str),
    /// `dc zva` with a block size that DCZID_EL0 cannot encode.
    InvalidZvaBlockSize(u32),
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::Truncated => f.write_str("fewer than 4 instruction bytes"),
            Gap::DisassemblerUnavailable => f.write_str("capstone failed to initialise for AArch64"),
            Gap::Invalid => f.write_str("not a valid AArch64 instruction"),
            Gap::Unallocated => f.write_str("unallocated encoding of a load/store class"),
            Gap::NotModelled(what) => write!(f, "{what} are not modelled"),
            Gap::InvalidZvaBlockSize(size) => write!(
                f,
                "dc zva block size {size} is invalid: it must be a power of two from 4 to 2048 bytes"
            ),
        }
    }
}

/// Returns the little-endian instruction word at the start of `code`.
fn instruction_word(code: &[u8]) -> Option<u32> {
    let bytes: [u8; INSTRUCTION_LEN] = code.get(..INSTRUCTION_LEN)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Formats `word` as capstone prints it, such as `ldr x0, [x1, #8]`.
fn disassemble(word: u32, pc: u64) -> Result<String, Gap> {
    thread_local! {
        static CAPSTONE: OnceCell<Option<Capstone>> = const { OnceCell::new() };
    }
    CAPSTONE.with(|cell| {
        let capstone = cell
            .get_or_init(|| Capstone::new().arm64().mode(ArchMode::Arm).build().ok())
            .as_ref()
            .ok_or(Gap::DisassemblerUnavailable)?;
        let instructions = capstone
            .disasm_count(&word.to_le_bytes(), pc, 1)
            .map_err(|_| Gap::Invalid)?;
        let instruction = instructions.iter().next().ok_or(Gap::Invalid)?;
        let mnemonic = instruction.mnemonic().unwrap_or_default();
        let operands = instruction.op_str().unwrap_or_default();
        Ok(if operands.is_empty() {
            mnemonic.to_string()
        } else {
            format!("{mnemonic} {operands}")
        })
    })
}

/// Lists the accesses the instruction `word` makes with `regs`, in the order it makes them.
fn accesses(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    // Bits 28:25 (op1 in the Arm ARM) select the top-level encoding group.
    let group = bits(word, 28, 25);
    match group {
        // Loads and stores: x1x0.
        0b0100 | 0b0110 | 0b1100 | 0b1110 => load_store::accesses(word, regs),
        // Branches, exception generation and system instructions: 101x.
        0b1010 | 0b1011 => system::accesses(word, regs),
        // SME (bit 31 set) shares 0000 with the reserved space that contains UDF.
        0b0000 if bit(word, 31) => Err(Gap::NotModelled("SME instructions")),
        // SVE: bit 31 set selects the memory half (loads, stores, gathers, scatters, prefetches).
        0b0010 if bit(word, 31) => Err(Gap::NotModelled("SVE loads and stores")),
        // Data processing on general-purpose, SIMD&FP and SVE registers touches no memory.
        _ => Ok(Vec::new()),
    }
}

/// Returns bits `high..=low` of `word`, shifted down.
fn bits(word: u32, high: u32, low: u32) -> u32 {
    (word >> low) & (u32::MAX >> (31 - (high - low)))
}

/// Returns bit `index` of `word`.
fn bit(word: u32, index: u32) -> bool {
    (word >> index) & 1 == 1
}

/// Sign-extends the low `width` bits of `value`.
fn sign_extend(value: u32, width: u32) -> i64 {
    let shift = 64 - width;
    (i64::from(value) << shift) >> shift
}

/// Returns the base register `n` of a load or store, where 31 names the stack pointer.
fn base_register(regs: &Aarch64Registers, n: u32) -> u64 {
    general_register(regs, n).unwrap_or(regs.sp)
}

/// Returns register `n` where 31 names the zero register.
fn register_or_zero(regs: &Aarch64Registers, n: u32) -> u64 {
    general_register(regs, n).unwrap_or(0)
}

/// Returns `x0..x30`, or `None` for register number 31.
fn general_register(regs: &Aarch64Registers, n: u32) -> Option<u64> {
    regs.x.get(usize::try_from(n).ok()?).copied()
}

/// Removes the address tag: with top-byte-ignore, bits 63:56 play no part in translation and
/// bit 55 selects the upper or lower half of the address space.
fn untagged(addr: u64) -> u64 {
    (((addr << 8) as i64) >> 8) as u64
}

/// Returns one access of `size` bytes at `base + offset`, untagged.
fn access(base: u64, offset: u64, size: u32, kind: AccessKind) -> Access {
    Access {
        addr: untagged(base.wrapping_add(offset)),
        size,
        kind,
    }
}

/// Formats the bytes of an undecodable instruction as space-separated hexadecimal.
fn hex(code: &[u8]) -> String {
    super::hex_bytes(code, INSTRUCTION_LEN)
}

fn unsupported(addr: u64, text: String, gap: Gap) -> Decoded {
    Decoded::Unsupported(UnsupportedInstruction {
        addr,
        text,
        reason: gap.to_string(),
    })
}

#[cfg(test)]
mod tests;
