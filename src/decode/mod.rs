//! The instruction decoder: a pure function from instruction bytes and register values to the
//! memory accesses the instruction makes.
//!
//! Nothing outside this module knows which disassembler library is used.

use crate::event::{Access, UnsupportedInstruction};
use crate::regs::{Registers, VectorRegisters};

mod aarch64;
mod x86;

/// The decoder's outcome for one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The instruction was decoded and its accesses computed.
    Instruction(DecodedInstruction),
    /// The bytes are not a valid instruction, or the instruction's accesses are not modelled.
    Unsupported(UnsupportedInstruction),
    /// The accesses depend on vector or opmask registers (gathers, scatters, masked loads and
    /// stores): decode again with [`decode_x86_64_with_vectors`].
    NeedsVectorRegisters,
}

/// A decoded instruction and the accesses it makes with the given registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodedInstruction {
    /// Length of the instruction in bytes.
    pub len: usize,
    /// The instruction in Intel syntax.
    pub text: String,
    /// Every memory access the instruction makes, in the order the CPU makes them.
    pub accesses: Vec<Access>,
}

/// Decodes the x86-64 instruction at the start of `code`, located at `regs.rip`, and computes
/// its accesses from `regs`. Never panics, whatever the bytes and registers.
pub fn decode_x86_64(code: &[u8], regs: &Registers) -> Decoded {
    x86::decode(code, regs, None)
}

/// Like [`decode_x86_64`], with the vector and opmask registers that gathers, scatters and
/// masked accesses need. Never returns [`Decoded::NeedsVectorRegisters`].
pub fn decode_x86_64_with_vectors(code: &[u8], regs: &Registers, vectors: &VectorRegisters) -> Decoded {
    x86::decode(code, regs, Some(vectors))
}

/// Returns a plan for carrying out the x86-64 instruction at the start of `code` without
/// single-stepping it (general-register loads and stores, `stos` and `rep movs`), or `None`
/// when it must be stepped.
pub fn plan_emulation_x86_64(code: &[u8], regs: &Registers) -> Option<EmulationPlan> {
    x86::emulate::plan(code, regs)
}

/// Returns what the supervisor can do with the x86-64 instruction at the start of `code`:
/// carry it out with a plan, read the vector registers first (a vector store), or step it.
pub fn plan_access_x86_64(code: &[u8], regs: &Registers, vectors: Option<&VectorRegisters>) -> PlannedAccess {
    x86::emulate::plan_access(code, regs, vectors)
}

pub use x86::emulate::{Emulation, Extend, Plan as EmulationPlan, Planned as PlannedAccess, Target as EmulationTarget};

/// Returns the instruction at the start of `code` (located at `rip`) in Intel syntax, or
/// `None` if the bytes are not a valid x86-64 instruction.
pub fn disassemble_x86_64(code: &[u8], rip: u64) -> Option<String> {
    x86::disassemble(code, rip)
}

/// Decodes the AArch64 instruction at the start of `code`, located at `regs.pc`, and computes
/// its accesses from `regs`. Never panics, whatever the bytes and registers, and never returns
/// [`Decoded::NeedsVectorRegisters`].
pub fn decode_aarch64(code: &[u8], regs: &crate::regs::Aarch64Registers) -> Decoded {
    aarch64::decode(code, regs)
}

/// Formats at most `max_len` of `code`'s bytes as space-separated hexadecimal, the text of an
/// instruction that could not be decoded.
pub(crate) fn hex_bytes(code: &[u8], max_len: usize) -> String {
    let bytes = code.get(..max_len).unwrap_or(code);
    bytes.iter().map(|byte| format!("{byte:02x}")).collect::<Vec<_>>().join(" ")
}
