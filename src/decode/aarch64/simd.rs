//! Advanced SIMD structure loads and stores: LD1..LD4 and ST1..ST4 (multiple structures and
//! single lanes) and LD1R..LD4R.
//!
//! Each produces one access that covers every byte it transfers, at the base register. The
//! post-index forms (bit 23 set) update the base by an immediate or by `Rm` only after the
//! access, so the offset does not move the access.

use super::{access, base_register, bit, bits, Gap};
use crate::event::{Access, AccessKind};
use crate::regs::Aarch64Registers;

/// LD1..LD4 and ST1..ST4 (multiple structures): `0 Q 001100 P L 0 Rm opcode size Rn Rt`,
/// where `P` (bit 23) selects post-index.
pub(super) fn multiple_structures(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let post_index = bit(word, 23);
    // Bit 21 is zero in both forms, and Rm is zero without post-index.
    if bit(word, 21) || (!post_index && bits(word, 20, 16) != 0) {
        return Err(Gap::Unallocated);
    }
    // (registers transferred, elements per structure)
    let (registers, structure_elements) = match bits(word, 15, 12) {
        0b0000 => (4, 4),
        0b0010 => (4, 1),
        0b0100 => (3, 3),
        0b0110 => (3, 1),
        0b0111 => (1, 1),
        0b1000 => (2, 2),
        0b1010 => (2, 1),
        _ => return Err(Gap::Unallocated),
    };
    let quad = bit(word, 30);
    // The 1D arrangement exists only for LD1 and ST1.
    if bits(word, 11, 10) == 0b11 && !quad && structure_elements > 1 {
        return Err(Gap::Unallocated);
    }
    let register_bytes = if quad { 16 } else { 8 };
    Ok(vec![access(
        base_register(regs, bits(word, 9, 5)),
        0,
        registers * register_bytes,
        kind(word),
    )])
}

/// LD1..LD4 and ST1..ST4 (single structure) and LD1R..LD4R:
/// `0 Q 001101 P L R Rm opcode S size Rn Rt`.
pub(super) fn single_structure(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    if !bit(word, 23) && bits(word, 20, 16) != 0 {
        return Err(Gap::Unallocated);
    }
    let opcode = bits(word, 15, 13);
    let size = bits(word, 11, 10);
    let s = bit(word, 12);
    // Structures of one to four elements: opcode<0> and R (bit 21) count them.
    let structure_elements = ((opcode & 1) << 1 | u32::from(bit(word, 21))) + 1;
    let element_bytes = match opcode >> 1 {
        0b00 => 1,
        0b01 if size & 1 == 0 => 2,
        0b10 if size == 0b00 => 4,
        0b10 if size == 0b01 && !s => 8,
        // LD1R..LD4R load one structure and replicate it: loads only, with no lane index.
        0b11 if bit(word, 22) && !s => 1 << size,
        _ => return Err(Gap::Unallocated),
    };
    let base = base_register(regs, bits(word, 9, 5));
    Ok(vec![access(
        base,
        0,
        structure_elements * element_bytes,
        kind(word),
    )])
}

/// Returns whether the structure instruction loads (L, bit 22) or stores.
fn kind(word: u32) -> AccessKind {
    if bit(word, 22) {
        AccessKind::Read
    } else {
        AccessKind::Write
    }
}
