//! The x86-64 general-purpose register file as the core and the decoder see it.

use serde::{Deserialize, Serialize};

/// The x86-64 general-purpose registers of a stopped thread, field for field as Linux's
/// `user_regs_struct` lays them out, so a read followed by a write loses nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// The system call number on entry to a system call, `u64::MAX` (-1) elsewhere.
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// The vector and opmask registers of a stopped thread, for instructions whose addresses or
/// accessed elements depend on them (VSIB gathers and scatters, masked loads and stores).
///
/// Registers the CPU does not have (the upper halves of `zmm` without AVX-512, `zmm16..31`,
/// the opmasks) read as zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VectorRegisters {
    /// `zmm0..zmm31` as eight little-endian quadwords each: `xmmN` is the first two and
    /// `ymmN` the first four.
    pub zmm: Vec<[u64; 8]>,
    /// The AVX-512 opmask registers `k0..k7`.
    pub k: [u64; 8],
}

impl VectorRegisters {
    /// Returns `count` bytes (at most 64) of vector register `index`, or zeros if the register
    /// is not present.
    pub fn bytes(&self, index: usize, count: usize) -> Vec<u8> {
        let quadwords = self.zmm.get(index).copied().unwrap_or([0; 8]);
        quadwords.iter().flat_map(|word| word.to_le_bytes()).take(count.min(64)).collect()
    }
}

/// The AArch64 registers that the decoder reads to compute a stopped thread's accesses.
///
/// The decoder needs no SIMD&FP register: every modelled address comes from a general-purpose
/// register, the stack pointer or the program counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Aarch64Registers {
    /// The general-purpose registers `x0..x30`.
    pub x: [u64; 31],
    /// The stack pointer, which base register number 31 names in loads and stores.
    pub sp: u64,
    /// Address of the instruction, the base of literal (PC-relative) loads.
    pub pc: u64,
    /// Number of bytes that `dc zva` zeroes, `4 << DCZID_EL0.BS`. The decoder cannot read
    /// DCZID_EL0, so the caller supplies it (user space can read it with MRS). Defaults to
    /// 64, a common value, not necessarily the traced machine's.
    #[serde(default = "default_dczva_block_size")]
    pub dczva_block_size: u32,
}

impl Default for Aarch64Registers {
    fn default() -> Aarch64Registers {
        Aarch64Registers { x: [0; 31], sp: 0, pc: 0, dczva_block_size: default_dczva_block_size() }
    }
}

fn default_dczva_block_size() -> u32 {
    64
}
