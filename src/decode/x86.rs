//! x86-64 decoding with iced-x86: instruction bytes and registers in, memory accesses out.
//!
//! iced decodes the instruction and lists its memory operands, explicit and implicit (stack
//! slots, string operands), each with an access kind. This module turns each operand into
//! [`Access`] events at the effective address the registers give, in the order the CPU
//! makes them. The rules where iced's model and the CPU differ are in [`corrections`]. The
//! operands whose accesses depend on vector and opmask registers are in [`vector`].

mod corrections;
pub(crate) mod emulate;
mod registers;
mod vector;

use std::fmt;

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, Formatter, Instruction, InstructionInfoFactory,
    IntelFormatter, OpAccess, Register, UsedMemory,
};

use super::{Decoded, DecodedInstruction};
use crate::event::{Access, AccessKind, UnsupportedInstruction};
use crate::regs::{Registers, VectorRegisters};

/// Maximum length of an x86 instruction in bytes.
const MAX_INSTRUCTION_LEN: usize = 15;

/// Decodes the instruction at the start of `code`, located at `regs.rip`, and computes the
/// accesses it makes with `regs` and, where they matter, `vectors`.
pub(super) fn decode(code: &[u8], regs: &Registers, vectors: Option<&VectorRegisters>) -> Decoded {
    let instr = match decode_instruction(code, regs.rip) {
        Ok(instr) => instr,
        Err(gap) => return unsupported(regs.rip, hex(code), gap),
    };
    match accesses(&instr, regs, vectors) {
        Ok(accesses) => Decoded::Instruction(DecodedInstruction {
            len: instr.len(),
            text: format(&instr),
            accesses,
        }),
        Err(Gap::NeedsVectorRegisters) => Decoded::NeedsVectorRegisters,
        Err(gap) => unsupported(regs.rip, format(&instr), gap),
    }
}

/// Returns the instruction at the start of `code` in Intel syntax, or `None` if the bytes
/// are not a complete, valid instruction.
pub(super) fn disassemble(code: &[u8], rip: u64) -> Option<String> {
    decode_instruction(code, rip)
        .ok()
        .map(|instr| format(&instr))
}

/// Reason the decoder could not compute an instruction's accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gap {
    /// No bytes at all.
    NoBytes,
    /// The bytes end in the middle of an instruction.
    Truncated,
    /// The bytes are not an x86-64 instruction.
    Invalid,
    /// The accesses depend on vector or opmask registers, and the caller gave none.
    NeedsVectorRegisters,
    /// An address depends on a register that the decoder was not given.
    MissingRegister(Register),
    /// The XSAVE family: which bytes of the XSAVE area are accessed depends on XCR0, on the
    /// requested-feature mask in EDX:EAX, on which state components are in use and, for the
    /// restores, on the header stored in the area itself.
    XsaveArea,
    /// The operand's length depends on other processor state (AMX tiles, for example).
    UnknownSize,
}

impl fmt::Display for Gap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Gap::NoBytes => f.write_str("no instruction bytes"),
            Gap::Truncated => f.write_str("the bytes end before the instruction does"),
            Gap::Invalid => f.write_str("not a valid x86-64 instruction"),
            Gap::NeedsVectorRegisters => f.write_str("needs the vector and opmask registers"),
            Gap::MissingRegister(reg) => write!(f, "needs the value of register {reg:?}"),
            Gap::XsaveArea => f.write_str(
                "the size and layout of its XSAVE area depend on XCR0, EDX:EAX and the state \
                 in use, which the decoder does not see",
            ),
            Gap::UnknownSize => {
                f.write_str("the size of its memory operand depends on processor state")
            }
        }
    }
}

/// Decodes one 64-bit-mode instruction at the start of `code`.
fn decode_instruction(code: &[u8], rip: u64) -> Result<Instruction, Gap> {
    if code.is_empty() {
        return Err(Gap::NoBytes);
    }
    let mut decoder =
        Decoder::try_with_ip(64, code, rip, DecoderOptions::NONE).map_err(|_| Gap::Invalid)?;
    let instr = decoder.decode();
    if !instr.is_invalid() {
        return Ok(instr);
    }
    match decoder.last_error() {
        DecoderError::NoMoreBytes => Err(Gap::Truncated),
        _ => Err(Gap::Invalid),
    }
}

/// Lists the accesses `instr` makes with `regs`, in the order the CPU makes them.
///
/// Returns [`Gap::NeedsVectorRegisters`] if an operand's accesses depend on vector or opmask
/// registers and `vectors` is `None`.
fn accesses(
    instr: &Instruction,
    regs: &Registers,
    vectors: Option<&VectorRegisters>,
) -> Result<Vec<Access>, Gap> {
    if corrections::repeats_zero_times(instr, regs) {
        return Ok(Vec::new());
    }

    let mut factory = InstructionInfoFactory::new();
    let mut operands: Vec<UsedMemory> = factory.info(instr).used_memory().to_vec();
    if corrections::reads_before_writes(instr) {
        // A stable sort keeps iced's order among the reads and among the writes.
        operands.sort_by_key(|mem| writes(corrections::corrected_access(instr, mem.access())));
    }

    // Only BT, BTS, BTR and BTC get a non-zero delta, and they have one memory operand.
    let bit_base_delta = corrections::bit_base_displacement(instr, regs);
    let mut accesses = Vec::new();
    for mem in &operands {
        if let Some(operand) = vector::classify(instr, mem) {
            let vectors = vectors.ok_or(Gap::NeedsVectorRegisters)?;
            accesses.extend(vector::accesses(&operand, mem, instr, regs, vectors)?);
            continue;
        }
        let kinds = access_kinds(corrections::corrected_access(instr, mem.access()));
        if kinds.is_empty() {
            continue;
        }
        let size = u32::try_from(corrections::access_size(instr, mem))
            .ok()
            .filter(|&size| size > 0)
            .ok_or_else(|| size_gap(instr))?;
        let addr = effective_address(&corrections::displaced(mem, bit_base_delta), instr, regs)?;
        accesses.extend(kinds.iter().map(|&kind| Access { addr, size, kind }));
    }
    Ok(accesses)
}

/// Returns the effective address of `mem`: base, index times scale and displacement,
/// truncated to the address size, plus the segment base.
fn effective_address(mem: &UsedMemory, instr: &Instruction, regs: &Registers) -> Result<u64, Gap> {
    let mut missing = None;
    let addr = mem.virtual_address(0, |reg, _element, _element_size| {
        let value = registers::register_value(regs, reg, instr.next_ip());
        if value.is_none() {
            missing = Some(reg);
        }
        value
    });
    match (addr, missing) {
        (Some(addr), _) => Ok(addr),
        (None, Some(reg)) => Err(Gap::MissingRegister(reg)),
        (None, None) => Err(Gap::Invalid),
    }
}

/// Returns why an operand of `instr` has no known size.
fn size_gap(instr: &Instruction) -> Gap {
    if corrections::uses_xsave_area(instr) {
        Gap::XsaveArea
    } else {
        Gap::UnknownSize
    }
}

/// Returns the accesses one operand access makes, in order: a read-modify-write reads
/// before it writes.
fn access_kinds(access: OpAccess) -> &'static [AccessKind] {
    match access {
        OpAccess::Read | OpAccess::CondRead => &[AccessKind::Read],
        OpAccess::Write => &[AccessKind::Write],
        OpAccess::CondWrite => &[AccessKind::PossibleWrite],
        OpAccess::ReadWrite => &[AccessKind::Read, AccessKind::Write],
        OpAccess::ReadCondWrite => &[AccessKind::Read, AccessKind::PossibleWrite],
        OpAccess::None | OpAccess::NoMemAccess => &[],
    }
}

/// Returns true if `access` may store to memory.
fn writes(access: OpAccess) -> bool {
    matches!(
        access,
        OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

/// Formats `instr` in Intel syntax with lowercase `0x` hexadecimal numbers, as objdump and
/// GDB print them. A memory operand's size is shown only where the registers leave it open.
fn format(instr: &Instruction) -> String {
    let mut formatter = IntelFormatter::new();
    let options = formatter.options_mut();
    options.set_hex_prefix("0x");
    options.set_hex_suffix("");
    options.set_uppercase_hex(false);
    options.set_branch_leading_zeros(false);
    options.set_space_after_operand_separator(true);
    let mut text = String::new();
    formatter.format(instr, &mut text);
    text
}

/// Formats up to one instruction's worth of bytes as space-separated hexadecimal.
fn hex(code: &[u8]) -> String {
    super::hex_bytes(code, MAX_INSTRUCTION_LEN)
}

fn unsupported(addr: u64, text: String, gap: Gap) -> Decoded {
    Decoded::Unsupported(UnsupportedInstruction {
        addr,
        text,
        reason: gap.to_string(),
    })
}
