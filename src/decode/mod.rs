//! The instruction decoder: a pure function from instruction bytes and register values to the
//! memory accesses the instruction makes.
//!
//! Nothing outside this module knows which disassembler library is used.

use crate::event::{Access, UnsupportedInstruction};
use crate::regs::Registers;

mod x86;

/// The decoder's outcome for one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    /// The instruction was decoded and its accesses computed.
    Instruction(DecodedInstruction),
    /// The bytes are not a valid instruction, or the instruction's accesses are not modelled.
    Unsupported(UnsupportedInstruction),
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
    x86::decode(code, regs)
}

/// Returns the instruction at the start of `code` (located at `rip`) in Intel syntax, or
/// `None` if the bytes are not a valid x86-64 instruction.
pub fn disassemble_x86_64(code: &[u8], rip: u64) -> Option<String> {
    x86::disassemble(code, rip)
}
