//! The places where iced's access model differs from what the CPU does, and the fixes.
//!
//! iced describes each memory operand as the instruction set reference draws it. The tracer
//! needs the bytes that one execution touches, in order, with the current registers. Every
//! rule that bridges the two is in this file, so the main decoding loop stays a plain
//! translation.
//!
//! Operands whose accesses depend on vector or opmask registers (gathers, scatters, masked
//! loads and stores) do not reach these rules: [`super::vector`] models them.

use iced_x86::{Instruction, MemorySize, Mnemonic, OpAccess, OpKind, Register, UsedMemory};

use super::registers::{register_value, signed_register_value};
use crate::regs::Registers;

/// Returns the access the CPU really makes where iced's access kind is wrong, or `access`
/// unchanged.
///
/// - CMPXCHG, CMPXCHG8B and CMPXCHG16B: the Intel SDM instruction reference (Vol. 2A,
///   CMPXCHG and CMPXCHG8B/CMPXCHG16B) states that the destination receives a write cycle
///   whatever the outcome of the comparison, and a failed compare writes back the value it
///   read. iced calls the write conditional, but it is certain.
/// - MASKMOVQ: only the bytes whose mask bit is set are written, and the mask is in an MMX
///   register, which [`crate::regs::VectorRegisters`] does not contain. iced reports a certain
///   write of all eight bytes, so the decoder reports a possible write instead.
/// - A repeated string instruction (REP, REPE, REPNE): iced covers all iterations with
///   conditional accesses. The decoder reports only the iteration about to run, which runs
///   whenever the count register is non-zero, and the caller has already handled a zero count.
pub(super) fn corrected_access(instr: &Instruction, access: OpAccess) -> OpAccess {
    match instr.mnemonic() {
        Mnemonic::Cmpxchg | Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b
            if access == OpAccess::ReadCondWrite =>
        {
            OpAccess::ReadWrite
        }
        Mnemonic::Maskmovq if access == OpAccess::Write => OpAccess::CondWrite,
        _ if is_repeated_string(instr) => match access {
            OpAccess::CondRead => OpAccess::Read,
            OpAccess::CondWrite => OpAccess::Write,
            other => other,
        },
        _ => access,
    }
}

/// Number of bytes of an FXSAVE area that FXSAVE writes and FXRSTOR reads.
const FXSAVE_STATE_BYTES: usize = 416;

/// Returns the size in bytes of one access to `mem`.
///
/// - A repeated string instruction: iced gives its operands no size (`MemorySize::Unknown`)
///   because it describes the whole run. One iteration accesses one element.
/// - FXSAVE, FXSAVE64, FXRSTOR and FXRSTOR64: iced reports the whole 512-byte area. The
///   Intel SDM (Vol. 1, section 10.5.1, "FXSAVE Area") places the x87 and SSE state in bytes
///   0 to 415 and states that FXSAVE and FXRSTOR do not use bytes 416 to 511. The FXSAVE
///   entry in Vol. 2A adds that the processor never writes bytes 464 to 511, which are left
///   to software. An AMD EPYC (Zen) processor also writes exactly bytes 0 to 415, as
///   tests/decode_vectors.rs checks, so the decoder reports those 416 bytes. That processor
///   still checks all 512 bytes for page faults, so a fault on a traced page that contains
///   only bytes 416 to 511 has no reported access.
pub(super) fn access_size(instr: &Instruction, mem: &UsedMemory) -> usize {
    if is_repeated_string(instr) {
        instr.memory_size().size()
    } else if matches!(
        mem.memory_size(),
        MemorySize::Fxsave_512Byte | MemorySize::Fxsave64_512Byte
    ) {
        FXSAVE_STATE_BYTES
    } else {
        mem.memory_size().size()
    }
}

/// Returns true for XSAVE, XSAVEC, XSAVEOPT, XSAVES, XRSTOR and XRSTORS, whose memory
/// operand is an XSAVE area of a size the instruction alone does not give.
pub(super) fn uses_xsave_area(instr: &Instruction) -> bool {
    matches!(instr.memory_size(), MemorySize::Xsave | MemorySize::Xsave64)
}

/// Returns true if a repeated string instruction will not run at all because its count
/// register (RCX, or ECX under a 0x67 address-size prefix) is zero.
pub(super) fn repeats_zero_times(instr: &Instruction, regs: &Registers) -> bool {
    if !is_repeated_string(instr) {
        return false;
    }
    let count = if uses_32_bit_string_addresses(instr) {
        Register::ECX
    } else {
        Register::RCX
    };
    register_value(regs, count, 0) == Some(0)
}

/// Returns true for an instruction that reads memory before it writes memory although iced
/// lists the write first. POP to memory reads the stack, then writes the destination. MOVS
/// reads the source, then writes the destination.
pub(super) fn reads_before_writes(instr: &Instruction) -> bool {
    let pop_to_memory = instr.mnemonic() == Mnemonic::Pop && instr.op0_kind() == OpKind::Memory;
    pop_to_memory || is_string(instr)
}

/// Returns the number of bytes to add to the memory operand's address when BT, BTS, BTR or
/// BTC takes its bit offset from a register.
///
/// With a register offset the memory operand is only the bit base, and the offset is the
/// register's value read as signed. The Intel SDM (Vol. 2A, BT) gives the bytes the CPU may
/// access as `address + 4 * (offset DIV 32)` for a 32-bit operand and
/// `address + 2 * (offset DIV 16)` for a 16-bit one, with DIV rounding towards negative
/// infinity. This applies the same rule to 64-bit operands: the operand-size unit that
/// contains the addressed bit. iced reports the unit at the bit base instead. An immediate
/// offset is taken modulo the operand width, so the nominal operand is right and this
/// returns 0.
pub(super) fn bit_base_displacement(instr: &Instruction, regs: &Registers) -> i64 {
    let is_bit_test = matches!(
        instr.mnemonic(),
        Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
    );
    if !is_bit_test || instr.op0_kind() != OpKind::Memory || instr.op1_kind() != OpKind::Register {
        return 0;
    }
    let Some(offset) = signed_register_value(regs, instr.op1_register()) else {
        return 0;
    };
    let unit_bytes = match instr.memory_size().size() {
        2 => 2i64,
        4 => 4,
        8 => 8,
        _ => return 0,
    };

    // An arithmetic shift by log2 of the unit's width in bits is a floor division, so a
    // negative offset selects a unit below the bit base.
    let shift = (unit_bytes * 8).trailing_zeros();
    (offset >> shift).wrapping_mul(unit_bytes)
}

/// Returns a copy of `mem` with `delta` added to its displacement.
pub(super) fn displaced(mem: &UsedMemory, delta: i64) -> UsedMemory {
    // Adding the two's-complement bits of `delta` subtracts when it is negative.
    UsedMemory::new2(
        mem.segment(),
        mem.base(),
        mem.index(),
        mem.scale(),
        mem.displacement().wrapping_add(delta as u64),
        mem.memory_size(),
        mem.access(),
        mem.address_size(),
        mem.vsib_size(),
    )
}

/// Returns true for MOVS, CMPS, STOS, LODS, SCAS, INS and OUTS, recognised by their
/// implicit (R/E)SI and (R/E)DI operands.
fn is_string(instr: &Instruction) -> bool {
    (0..instr.op_count()).any(|i| {
        matches!(
            instr.op_kind(i),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    })
}

/// Returns true for a string instruction with a REP, REPE or REPNE prefix.
fn is_repeated_string(instr: &Instruction) -> bool {
    (instr.has_rep_prefix() || instr.has_repne_prefix()) && is_string(instr)
}

/// Returns true if a string instruction addresses memory through ESI/EDI (0x67 prefix).
fn uses_32_bit_string_addresses(instr: &Instruction) -> bool {
    (0..instr.op_count())
        .any(|i| matches!(instr.op_kind(i), OpKind::MemorySegESI | OpKind::MemoryESEDI))
}
