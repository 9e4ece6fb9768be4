//! The loads-and-stores encoding group: single registers, pairs, literals, exclusives,
//! load-acquire and store-release, compare-and-swap and the LSE atomics.
//!
//! Field names follow the Arm ARM's encoding diagrams: `size` (31:30), `V` (26, set for
//! SIMD&FP registers), `opc` (23:22), `Rn` (9:5, the base) and `Rt` (4:0).

use super::{access, base_register, bit, bits, register_or_zero, sign_extend, simd, Gap};
use crate::event::{Access, AccessKind};
use crate::regs::Aarch64Registers;

/// Lists the accesses of an instruction from the loads-and-stores group.
pub(super) fn accesses(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    if word & 0xbf00_0000 == 0x0c00_0000 {
        return simd::multiple_structures(word, regs);
    }
    if word & 0xbf00_0000 == 0x0d00_0000 {
        return simd::single_structure(word, regs);
    }
    // STG, STZG, ST2G, STZ2G, LDG, STGM, STZGM, LDGM.
    if word & 0xff20_0000 == 0xd920_0000 {
        return Err(Gap::NotModelled("memory tag loads and stores"));
    }
    if word & 0x3f00_0000 == 0x0800_0000 {
        return exclusive_ordered_or_cas(word, regs);
    }
    if word & 0x3f20_0c00 == 0x1900_0000 {
        return release_consistent_unscaled(word, regs);
    }
    if word & 0x3b20_0c00 == 0x1900_0400 {
        return Err(Gap::NotModelled(
            "memory copy and set instructions (CPY*, SET*)",
        ));
    }
    if word & 0x3b00_0000 == 0x1800_0000 {
        return literal(word, regs);
    }
    if word & 0x3a00_0000 == 0x2800_0000 {
        return pair(word, regs);
    }
    if word & 0x3a00_0000 == 0x3800_0000 {
        return single_register(word, regs);
    }
    Err(Gap::NotModelled(
        "load/store encodings outside the modelled classes",
    ))
}

/// The transfer of a single-register load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transfer {
    /// Loads `size` bytes.
    Load(u32),
    /// Stores `size` bytes.
    Store(u32),
    /// PRFM or PRFUM: a hint that never faults and accesses nothing.
    Prefetch,
}

impl Transfer {
    /// Returns log2 of the transfer size, the shift that scales an unsigned offset.
    fn scale(self) -> u32 {
        match self {
            Transfer::Load(size) | Transfer::Store(size) => size.trailing_zeros(),
            Transfer::Prefetch => 3,
        }
    }

    fn accesses(self, base: u64, offset: u64) -> Vec<Access> {
        match self {
            Transfer::Load(size) => vec![access(base, offset, size, AccessKind::Read)],
            Transfer::Store(size) => vec![access(base, offset, size, AccessKind::Write)],
            Transfer::Prefetch => Vec::new(),
        }
    }
}

/// Returns what the `size`, `V` and `opc` fields of a single-register load or store select,
/// or `None` for an unallocated combination.
fn transfer(word: u32) -> Option<Transfer> {
    let size = bits(word, 31, 30);
    let opc = bits(word, 23, 22);
    let bytes = 1 << size;
    if bit(word, 26) {
        return match (opc, size) {
            (0b00, _) => Some(Transfer::Store(bytes)),
            (0b01, _) => Some(Transfer::Load(bytes)),
            (0b10, 0b00) => Some(Transfer::Store(16)),
            (0b11, 0b00) => Some(Transfer::Load(16)),
            _ => None,
        };
    }
    match (opc, size) {
        (0b00, _) => Some(Transfer::Store(bytes)),
        (0b01, _) => Some(Transfer::Load(bytes)),
        // LDRSB and LDRSH to a 64-bit (opc 10) or 32-bit (opc 11) register, and LDRSW.
        (0b10 | 0b11, 0b00 | 0b01) | (0b10, 0b10) => Some(Transfer::Load(bytes)),
        (0b10, 0b11) => Some(Transfer::Prefetch),
        _ => None,
    }
}

/// LDR, STR and their variants with one register: unsigned offset, unscaled offset,
/// pre-index, post-index, unprivileged, register offset, and the LSE atomics that share the
/// encoding space.
fn single_register(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let base = base_register(regs, bits(word, 9, 5));
    let simd = bit(word, 26);

    if bit(word, 24) {
        // Unsigned offset: imm12 scaled by the transfer size.
        let transfer = transfer(word).ok_or(Gap::Unallocated)?;
        let offset = u64::from(bits(word, 21, 10)) << transfer.scale();
        return Ok(transfer.accesses(base, offset));
    }

    if !bit(word, 21) {
        let transfer = transfer(word).ok_or(Gap::Unallocated)?;
        let offset = sign_extend(bits(word, 20, 12), 9) as u64;
        return match bits(word, 11, 10) {
            // LDUR, STUR, PRFUM.
            0b00 => Ok(transfer.accesses(base, offset)),
            // LDTR, STTR: at EL0 they access memory as LDUR and STUR do.
            0b10 if simd || transfer == Transfer::Prefetch => Err(Gap::Unallocated),
            0b10 => Ok(transfer.accesses(base, offset)),
            _ if transfer == Transfer::Prefetch => Err(Gap::Unallocated),
            // Post-index accesses the base and pre-index the updated base.
            0b01 => Ok(transfer.accesses(base, 0)),
            _ => Ok(transfer.accesses(base, offset)),
        };
    }

    match bits(word, 11, 10) {
        0b00 if simd => Err(Gap::NotModelled("SIMD&FP atomic memory operations")),
        0b00 => atomic(word, base),
        0b10 => {
            let transfer = transfer(word).ok_or(Gap::Unallocated)?;
            let offset = register_offset(word, regs, transfer.scale())?;
            Ok(transfer.accesses(base, offset))
        }
        _ if !simd && bits(word, 31, 30) == 0b11 => Err(Gap::NotModelled(
            "pointer-authenticated loads (LDRAA, LDRAB), whose address needs the authentication key,",
        )),
        _ => Err(Gap::Unallocated),
    }
}

/// Returns the offset of a register-offset load or store: `Rm` extended by `option` (bits
/// 15:13) and shifted left by `scale` when `S` (bit 12) is set.
fn register_offset(word: u32, regs: &Aarch64Registers, scale: u32) -> Result<u64, Gap> {
    let index = register_or_zero(regs, bits(word, 20, 16));
    let extended = match bits(word, 15, 13) {
        // UXTW
        0b010 => index & 0xffff_ffff,
        // LSL (UXTX) and SXTX
        0b011 | 0b111 => index,
        // SXTW
        0b110 => index as u32 as i32 as i64 as u64,
        _ => return Err(Gap::Unallocated),
    };
    let shift = if bit(word, 12) { scale } else { 0 };
    Ok(extended << shift)
}

/// Lists the accesses of the LSE atomics (LDADD, LDCLR, LDEOR, LDSET, LDSMAX, LDSMIN,
/// LDUMAX, LDUMIN, SWP and their ST aliases), LDAPR, and the 64-byte loads and stores of
/// FEAT_LS64.
fn atomic(word: u32, base: u64) -> Result<Vec<Access>, Gap> {
    let size = 1 << bits(word, 31, 30);
    let acquire_release = bits(word, 23, 22);
    let o3 = bit(word, 15);
    let opc = bits(word, 14, 12);
    let read = access(base, 0, size, AccessKind::Read);
    let write = access(base, 0, size, AccessKind::Write);
    let block = |kind| Ok(vec![access(base, 0, 64, kind)]);
    match (o3, opc) {
        // The eight read-modify-write operations, and SWP: the old value is read, the new one
        // written, whatever the register values.
        (false, _) | (true, 0b000) => Ok(vec![read, write]),
        // LDAPR, LDAPRB, LDAPRH: acquire (A) without release (R).
        (true, 0b100) if acquire_release == 0b10 => Ok(vec![read]),
        // The 64-byte forms transfer eight registers from Rt on, so Rt must be even and at
        // most 22.
        (true, _)
            if size != 8 || acquire_release != 0 || bit(word, 0) || bits(word, 4, 3) == 0b11 =>
        {
            Err(Gap::Unallocated)
        }
        // LD64B
        (true, 0b101) => block(AccessKind::Read),
        // ST64B
        (true, 0b001) => block(AccessKind::Write),
        // ST64BV and ST64BV0 return a status that reports whether the target accepted the
        // store.
        (true, 0b011 | 0b010) => block(AccessKind::PossibleWrite),
        _ => Err(Gap::Unallocated),
    }
}

/// LDP, STP, LDNP, STNP, LDPSW and STGP, on general-purpose or SIMD&FP registers.
fn pair(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let opc = bits(word, 31, 30);
    let mode = bits(word, 24, 23);
    let load = bit(word, 22);
    // (bytes per register, bytes per unit of imm7)
    let (size, scale) = if bit(word, 26) {
        match opc {
            0b00 => (4, 4),
            0b01 => (8, 8),
            0b10 => (16, 16),
            _ => return Err(Gap::Unallocated),
        }
    } else {
        match opc {
            0b00 => (4, 4),
            0b10 => (8, 8),
            // No-allocate pairs have no opc 01 form.
            0b01 if mode == 0b00 => return Err(Gap::Unallocated),
            // LDPSW
            0b01 if load => (4, 4),
            // STGP stores two doublewords and sets their allocation tag, which the trace does
            // not represent. Its offset counts 16-byte tag granules.
            0b01 => (8, 16),
            _ => return Err(Gap::Unallocated),
        }
    };
    let base = base_register(regs, bits(word, 9, 5));
    let offset = match mode {
        // Post-index accesses the base and updates it afterwards.
        0b01 => 0,
        _ => (sign_extend(bits(word, 21, 15), 7) * scale) as u64,
    };
    let kind = if load {
        AccessKind::Read
    } else {
        AccessKind::Write
    };
    Ok(register_pair(base, offset, size, kind))
}

/// Returns one access per register of a pair: the first register's slot, then the second's.
fn register_pair(base: u64, offset: u64, size: u32, kind: AccessKind) -> Vec<Access> {
    vec![
        access(base, offset, size, kind),
        access(base, offset.wrapping_add(u64::from(size)), size, kind),
    ]
}

/// LDR (literal), LDRSW (literal) and PRFM (literal): the address is the instruction's own
/// plus imm19 words.
fn literal(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let size = match (bit(word, 26), bits(word, 31, 30)) {
        (false, 0b00 | 0b10) | (true, 0b00) => 4,
        (false, 0b01) | (true, 0b01) => 8,
        (true, 0b10) => 16,
        (false, _) => return Ok(Vec::new()),
        (true, _) => return Err(Gap::Unallocated),
    };
    let offset = (sign_extend(bits(word, 23, 5), 19) * 4) as u64;
    Ok(vec![access(regs.pc, offset, size, AccessKind::Read)])
}

/// Lists the accesses of the class at bits 29:24 = 001000: load and store exclusive (register
/// and pair), load-acquire and store-release, LDLAR and STLLR, CAS and CASP.
fn exclusive_ordered_or_cas(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let size_field = bits(word, 31, 30);
    let size = 1 << size_field;
    // The Arm ARM names these fields o2, L and o1.
    let ordered = bit(word, 23);
    let load = bit(word, 22);
    let pair_or_cas = bit(word, 21);
    let base = base_register(regs, bits(word, 9, 5));
    let read = |size| access(base, 0, size, AccessKind::Read);

    match (ordered, pair_or_cas) {
        // LDXR, LDAXR, STXR, STLXR. A store-exclusive writes only if the exclusive monitor
        // still covers the address, which the decoder cannot see.
        (false, false) if load => Ok(vec![read(size)]),
        (false, false) => Ok(vec![access(base, 0, size, AccessKind::PossibleWrite)]),
        // LDXP, LDAXP, STXP, STLXP with 32-bit (size 10) or 64-bit (size 11) registers.
        (false, true) if size_field >= 0b10 => {
            let kind = if load {
                AccessKind::Read
            } else {
                AccessKind::PossibleWrite
            };
            Ok(register_pair(base, 0, size, kind))
        }
        // CASP, CASPA, CASPL, CASPAL with 32-bit (size 00) or 64-bit (size 01) registers,
        // which must be even-numbered. Memory is written only if it equals the compared pair,
        // which the decoder cannot read.
        (false, true) => {
            if bit(word, 16) || bit(word, 0) {
                return Err(Gap::Unallocated);
            }
            let register = 4 * size;
            let mut accesses = register_pair(base, 0, register, AccessKind::Read);
            accesses.extend(register_pair(base, 0, register, AccessKind::PossibleWrite));
            Ok(accesses)
        }
        // LDAR, LDLAR, STLR, STLLR.
        (true, false) if load => Ok(vec![read(size)]),
        (true, false) => Ok(vec![access(base, 0, size, AccessKind::Write)]),
        // CAS, CASA, CASL, CASAL and their byte and halfword forms.
        (true, true) => Ok(vec![
            read(size),
            access(base, 0, size, AccessKind::PossibleWrite),
        ]),
    }
}

/// LDAPUR and STLUR in all widths (FEAT_LRCPC2): a signed 9-bit unscaled offset.
fn release_consistent_unscaled(word: u32, regs: &Aarch64Registers) -> Result<Vec<Access>, Gap> {
    let size_field = bits(word, 31, 30);
    let size = 1 << size_field;
    let kind = match (bits(word, 23, 22), size_field) {
        (0b00, _) => AccessKind::Write,
        (0b01, _) | (0b10, 0b00..=0b10) | (0b11, 0b00 | 0b01) => AccessKind::Read,
        _ => return Err(Gap::Unallocated),
    };
    let base = base_register(regs, bits(word, 9, 5));
    let offset = sign_extend(bits(word, 20, 12), 9) as u64;
    Ok(vec![access(base, offset, size, kind)])
}
