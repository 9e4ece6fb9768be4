//! Memory operands whose accesses depend on vector or opmask register values.
//!
//! Three shapes of operand touch only some of their elements, or take each element's address
//! from a vector register:
//!
//! - VSIB gathers and scatters (AVX2 and AVX-512). Element `i` lies at
//!   `base + sign-extended index[i] * scale + displacement`, and the instruction accesses it
//!   only when mask element `i` is enabled. Each element is one access, lowest element first,
//!   because the elements' addresses are unrelated to one another.
//! - Loads and stores under a vector mask (VMASKMOVPS/PD, VPMASKMOVD/Q, MASKMOVDQU,
//!   VMASKMOVDQU) or an opmask (the AVX-512 moves, widening loads, narrowing stores, extracts
//!   and half-precision conversions). Element `i` of the memory operand is accessed only when
//!   mask element `i` is enabled. Each run of adjacent enabled elements is one access, lowest
//!   address first.
//! - Compress stores and expand loads under an opmask (VPCOMPRESS*, VCOMPRESSPS/PD,
//!   VPEXPAND*, VEXPANDPS/PD). They access as many adjacent elements as the mask has enabled
//!   elements, from the start of the operand, as one access.
//!
//! A vector mask enables an element when the element's sign bit is set. An opmask enables
//! element `i` when bit `i` is set. A mask that enables nothing yields no access at all.
//!
//! Stores under a known mask are certain writes, because the enabled elements are exactly the
//! ones written. A scatter writes elements whose addresses overlap in element order (Intel
//! SDM, VPSCATTERDD), which is the order reported.
//!
//! AVX-512 compares, tests and element-wise arithmetic under an opmask are masked the same
//! way when their memory elements are the size of their result elements. The CPU suppresses
//! faults on the masked-out elements (Intel SDM, exception types E2 and E4), so it does not
//! read them. Other AVX-512 instructions with a memory operand under an opmask (permutes,
//! shuffles, inserts, broadcasts, widening arithmetic) are left to iced's model, which
//! reports the whole operand. Some of them read every element whatever the mask.

use iced_x86::{EncodingKind, Instruction, Mnemonic, OpAccess, OpKind, Register, UsedMemory};

use super::registers::register_value;
use super::Gap;
use crate::event::{Access, AccessKind};
use crate::regs::{Registers, VectorRegisters};

/// Number of bytes in a ZMM register, the widest vector register.
const ZMM_BYTES: usize = 64;

/// A memory operand whose accesses depend on vector or opmask registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct VectorOperand {
    shape: Shape,
    mask: Mask,
    kind: AccessKind,
}

/// The layout of the operand's elements in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// `count` elements of `size` bytes at addresses computed from the VSIB index register.
    Indexed { size: u32, count: usize },
    /// `count` adjacent elements of `size` bytes; element `i` is accessed when mask element
    /// `i` is enabled.
    Masked { size: u32, count: usize },
    /// `count` adjacent elements of `size` bytes, of which the first `n` are accessed, where
    /// `n` is the number of enabled mask elements.
    Packed { size: u32, count: usize },
}

/// The source of the mask that enables elements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mask {
    /// The sign bit of each `size`-byte element of a vector register.
    SignBits { register: Register, size: usize },
    /// The bits of an opmask register, one per element.
    Opmask(Register),
    /// Every element is enabled (an AVX-512 gather or scatter without an opmask, which the CPU
    /// rejects, but which is modelled rather than refused).
    All,
}

/// Returns the vector operand model of `mem`, or `None` if its accesses do not depend on
/// vector or opmask registers.
pub(super) fn classify(instr: &Instruction, mem: &UsedMemory) -> Option<VectorOperand> {
    let kind = match mem.access() {
        OpAccess::Read | OpAccess::CondRead => AccessKind::Read,
        OpAccess::Write | OpAccess::CondWrite => AccessKind::Write,
        _ => return None,
    };
    if mem.index().is_vector_register() {
        return indexed(instr, mem, kind);
    }
    match instr.mnemonic() {
        Mnemonic::Vmaskmovps
        | Mnemonic::Vmaskmovpd
        | Mnemonic::Vpmaskmovd
        | Mnemonic::Vpmaskmovq => {
            // Both the load and the store form take the mask from the second operand.
            let (size, count) = elements(mem)?;
            let register = vector_operand(instr, 1)?;
            let mask = Mask::SignBits {
                register,
                size: usize::try_from(size).ok()?,
            };
            Some(VectorOperand {
                shape: Shape::Masked { size, count },
                mask,
                kind,
            })
        }
        Mnemonic::Maskmovdqu | Mnemonic::Vmaskmovdqu => {
            // One mask byte per destination byte, in the third operand.
            let register = vector_operand(instr, 2)?;
            let mask = Mask::SignBits { register, size: 1 };
            Some(VectorOperand {
                shape: Shape::Masked { size: 1, count: 16 },
                mask,
                kind,
            })
        }
        _ => opmasked(instr, mem, kind),
    }
}

/// Computes the accesses of `operand`, the model of `mem`, from the registers.
pub(super) fn accesses(
    operand: &VectorOperand,
    mem: &UsedMemory,
    instr: &Instruction,
    regs: &Registers,
    vectors: &VectorRegisters,
) -> Result<Vec<Access>, Gap> {
    let kind = operand.kind;
    let enabled = |element: usize| operand.mask.enables(element, vectors);
    match operand.shape {
        Shape::Indexed { size, count } => {
            let mut accesses = Vec::new();
            for element in (0..count).filter(|&element| enabled(element)) {
                let addr = element_address(mem, element, instr, regs, vectors)?;
                accesses.push(Access { addr, size, kind });
            }
            Ok(accesses)
        }
        Shape::Masked { size, count } => {
            let base = super::effective_address(mem, instr, regs)?;
            Ok(runs(count, enabled)
                .into_iter()
                .map(|(first, len)| run_access(base, size, first, len, kind))
                .collect())
        }
        Shape::Packed { size, count } => {
            let base = super::effective_address(mem, instr, regs)?;
            let len = (0..count).filter(|&element| enabled(element)).count();
            Ok((len > 0)
                .then(|| run_access(base, size, 0, len, kind))
                .into_iter()
                .collect())
        }
    }
}

impl Mask {
    /// Returns true if the mask enables element `element`.
    fn enables(self, element: usize, vectors: &VectorRegisters) -> bool {
        match self {
            Mask::SignBits { register, size } => {
                let Some(top_byte) = element
                    .checked_mul(size)
                    .and_then(|start| start.checked_add(size))
                    .and_then(|end| end.checked_sub(1))
                else {
                    return false;
                };
                vector_bytes(vectors, register)
                    .get(top_byte)
                    .is_some_and(|byte| byte & 0x80 != 0)
            }
            Mask::Opmask(register) => {
                let bits = vectors.k.get(register.number()).copied().unwrap_or(0);
                element < 64 && (bits >> element) & 1 != 0
            }
            Mask::All => true,
        }
    }
}

/// Models a VSIB operand: a gather's source or a scatter's destination.
fn indexed(instr: &Instruction, mem: &UsedMemory, kind: AccessKind) -> Option<VectorOperand> {
    let size = u32::try_from(mem.memory_size().size())
        .ok()
        .filter(|&size| size > 0)?;
    let index_size = usize::try_from(mem.vsib_size())
        .ok()
        .filter(|&size| size > 0)?;
    // The element count is the smaller of what the index register and the data register
    // hold: VPGATHERQD with a YMM index fills only an XMM destination, and VPGATHERDQ with
    // an XMM index fills a YMM destination.
    let index_count = mem.index().size() / index_size;
    let data = (0..instr.op_count())
        .filter(|&operand| instr.op_kind(operand) == OpKind::Register)
        .map(|operand| instr.op_register(operand))
        .find(|register| register.is_vector_register())?;
    let data_count = data.size() / mem.memory_size().size();
    let count = index_count.min(data_count);

    let mask = if instr.encoding() == EncodingKind::EVEX {
        opmask(instr).unwrap_or(Mask::All)
    } else {
        // The AVX2 gathers' mask vector is the third operand, with elements as wide as the
        // data elements.
        let register = vector_operand(instr, 2)?;
        Mask::SignBits {
            register,
            size: mem.memory_size().size(),
        }
    };
    Some(VectorOperand {
        shape: Shape::Indexed { size, count },
        mask,
        kind,
    })
}

/// Models an AVX-512 memory operand under an opmask, for the instructions whose memory
/// elements correspond one to one, in order, with the mask's bits.
fn opmasked(instr: &Instruction, mem: &UsedMemory, kind: AccessKind) -> Option<VectorOperand> {
    let mask = opmask(instr)?;
    if instr.is_broadcast() {
        return None;
    }
    let (size, count) = elements(mem)?;
    let shape = if is_compress_or_expand(instr.mnemonic()) {
        Shape::Packed { size, count }
    } else if is_elementwise(instr.mnemonic()) {
        Shape::Masked { size, count }
    } else {
        return None;
    };
    Some(VectorOperand { shape, mask, kind })
}

/// Returns the instruction's opmask, if it has one other than k0.
fn opmask(instr: &Instruction) -> Option<Mask> {
    let register = instr.op_mask();
    (register != Register::None && register.is_k()).then_some(Mask::Opmask(register))
}

/// Returns the element size and count of a memory operand, as the instruction set reference
/// divides it (a scalar operand is one element).
fn elements(mem: &UsedMemory) -> Option<(u32, usize)> {
    let total = mem.memory_size().size();
    let size = mem.memory_size().element_size();
    if size == 0 || total == 0 || total % size != 0 {
        return None;
    }
    Some((u32::try_from(size).ok()?, total / size))
}

/// Returns operand `operand` if it is a vector register.
fn vector_operand(instr: &Instruction, operand: u32) -> Option<Register> {
    (operand < instr.op_count() && instr.op_kind(operand) == OpKind::Register)
        .then(|| instr.op_register(operand))
        .filter(|register| register.is_vector_register())
}

/// AVX-512 instructions whose memory element `i` is accessed exactly when opmask bit `i` is
/// set: the masked moves, the widening loads and narrowing stores, the extracts to memory and
/// the half-precision conversions.
fn is_elementwise(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Vmovdqu8
            | Vmovdqu16
            | Vmovdqu32
            | Vmovdqu64
            | Vmovdqa32
            | Vmovdqa64
            | Vmovups
            | Vmovupd
            | Vmovaps
            | Vmovapd
            | Vmovss
            | Vmovsd
            | Vmovsh
            | Vpmovzxbw
            | Vpmovzxbd
            | Vpmovzxbq
            | Vpmovzxwd
            | Vpmovzxwq
            | Vpmovzxdq
            | Vpmovsxbw
            | Vpmovsxbd
            | Vpmovsxbq
            | Vpmovsxwd
            | Vpmovsxwq
            | Vpmovsxdq
            | Vpmovwb
            | Vpmovswb
            | Vpmovuswb
            | Vpmovdb
            | Vpmovsdb
            | Vpmovusdb
            | Vpmovdw
            | Vpmovsdw
            | Vpmovusdw
            | Vpmovqb
            | Vpmovsqb
            | Vpmovusqb
            | Vpmovqw
            | Vpmovsqw
            | Vpmovusqw
            | Vpmovqd
            | Vpmovsqd
            | Vpmovusqd
            | Vextractf32x4
            | Vextractf32x8
            | Vextractf64x2
            | Vextractf64x4
            | Vextracti32x4
            | Vextracti32x8
            | Vextracti64x2
            | Vextracti64x4
            | Vcvtps2ph
            | Vcvtph2ps
    ) || is_elementwise_arithmetic(mnemonic)
}

/// AVX-512 compares, tests and arithmetic whose memory element `i` is the source of result
/// element `i`, so opmask bit `i` enables it.
fn is_elementwise_arithmetic(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Vpcmpb | Vpcmpub | Vpcmpw | Vpcmpuw | Vpcmpd | Vpcmpud | Vpcmpq | Vpcmpuq
            | Vpcmpeqb | Vpcmpeqw | Vpcmpeqd | Vpcmpeqq | Vpcmpgtb | Vpcmpgtw | Vpcmpgtd | Vpcmpgtq
            | Vptestmb | Vptestmw | Vptestmd | Vptestmq | Vptestnmb | Vptestnmw | Vptestnmd | Vptestnmq
            | Vcmpps | Vcmppd
            | Vpaddb | Vpaddw | Vpaddd | Vpaddq | Vpsubb | Vpsubw | Vpsubd | Vpsubq
            | Vpaddsb | Vpaddsw | Vpaddusb | Vpaddusw | Vpsubsb | Vpsubsw | Vpsubusb | Vpsubusw
            | Vpandd | Vpandq | Vpandnd | Vpandnq | Vpord | Vporq | Vpxord | Vpxorq
            | Vpminsb | Vpminsw | Vpminsd | Vpminsq | Vpminub | Vpminuw | Vpminud | Vpminuq
            | Vpmaxsb | Vpmaxsw | Vpmaxsd | Vpmaxsq | Vpmaxub | Vpmaxuw | Vpmaxud | Vpmaxuq
            | Vpabsb | Vpabsw | Vpabsd | Vpabsq | Vpavgb | Vpavgw | Vpmullw | Vpmulld | Vpmullq
            | Vpsllvw | Vpsllvd | Vpsllvq | Vpsrlvw | Vpsrlvd | Vpsrlvq | Vpsravw | Vpsravd | Vpsravq
            | Vpternlogd | Vpternlogq
            | Vaddps | Vaddpd | Vsubps | Vsubpd | Vmulps | Vmulpd | Vdivps | Vdivpd
            | Vminps | Vminpd | Vmaxps | Vmaxpd | Vsqrtps | Vsqrtpd
    )
}

/// Compress stores and expand loads: they access the first elements of memory, one per
/// enabled mask element.
fn is_compress_or_expand(mnemonic: Mnemonic) -> bool {
    use Mnemonic::*;
    matches!(
        mnemonic,
        Vpcompressb
            | Vpcompressw
            | Vpcompressd
            | Vpcompressq
            | Vcompressps
            | Vcompresspd
            | Vpexpandb
            | Vpexpandw
            | Vpexpandd
            | Vpexpandq
            | Vexpandps
            | Vexpandpd
    )
}

/// Returns the address of element `element` of a VSIB operand.
fn element_address(
    mem: &UsedMemory,
    element: usize,
    instr: &Instruction,
    regs: &Registers,
    vectors: &VectorRegisters,
) -> Result<u64, Gap> {
    let mut missing = None;
    let addr = mem.virtual_address(element, |register, element, element_size| {
        let value = if register.is_vector_register() {
            vector_element(vectors, register, element, element_size)
        } else {
            register_value(regs, register, instr.next_ip())
        };
        if value.is_none() {
            missing = Some(register);
        }
        value
    });
    match (addr, missing) {
        (Some(addr), _) => Ok(addr),
        (None, Some(register)) => Err(Gap::MissingRegister(register)),
        (None, None) => Err(Gap::Invalid),
    }
}

/// Returns element `element`, `size` bytes wide, of a vector register, zero-extended. iced
/// sign-extends doubleword indices itself.
fn vector_element(
    vectors: &VectorRegisters,
    register: Register,
    element: usize,
    size: usize,
) -> Option<u64> {
    if size == 0 || size > 8 {
        return None;
    }
    let start = element.checked_mul(size)?;
    let bytes = vector_bytes(vectors, register);
    let field = bytes.get(start..start.checked_add(size)?)?;
    let mut value = [0u8; 8];
    value[..size].copy_from_slice(field);
    Some(u64::from_le_bytes(value))
}

/// Returns the bytes of the XMM, YMM or ZMM register `register`, little-endian, with the
/// bytes past its width as zero. A register missing from `vectors` reads as zero.
fn vector_bytes(vectors: &VectorRegisters, register: Register) -> Vec<u8> {
    let width = register.size().min(ZMM_BYTES);
    vectors.bytes(register.number(), width)
}

/// Returns the lists of adjacent enabled elements among `0..count` as `(first, length)`.
fn runs(count: usize, enabled: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for element in (0..count).filter(|&element| enabled(element)) {
        match runs.last_mut() {
            Some((first, len)) if *first + *len == element => *len += 1,
            _ => runs.push((element, 1)),
        }
    }
    runs
}

/// Returns the access to `len` adjacent elements of `size` bytes, the first of which is
/// element `first` of an operand at `base`.
fn run_access(base: u64, size: u32, first: usize, len: usize, kind: AccessKind) -> Access {
    // `first` and `len` are at most 64 and `size` at most 64, so neither product overflows.
    let offset = (first as u64).wrapping_mul(u64::from(size));
    let bytes = (len as u64).wrapping_mul(u64::from(size));
    Access {
        addr: base.wrapping_add(offset),
        size: u32::try_from(bytes).unwrap_or(u32::MAX),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_merge_adjacent_elements() {
        let mask = 0b1011_0110u64;
        let enabled = |element: usize| (mask >> element) & 1 != 0;
        assert_eq!(runs(8, enabled), vec![(1, 2), (4, 2), (7, 1)]);
        assert_eq!(runs(8, |_| false), vec![]);
        assert_eq!(runs(4, |_| true), vec![(0, 4)]);
    }

    #[test]
    fn vector_elements_are_little_endian() {
        let vectors = VectorRegisters {
            zmm: vec![[
                0x1122_3344_5566_7788,
                0x99aa_bbcc_ddee_ff00,
                0,
                0,
                0,
                0,
                0,
                7,
            ]],
            k: [0; 8],
        };
        assert_eq!(
            vector_element(&vectors, Register::XMM0, 1, 4),
            Some(0x1122_3344)
        );
        assert_eq!(
            vector_element(&vectors, Register::XMM0, 1, 8),
            Some(0x99aa_bbcc_ddee_ff00)
        );
        // Past the register's width, or from a register that is not there.
        assert_eq!(vector_element(&vectors, Register::XMM0, 2, 8), None);
        assert_eq!(vector_element(&vectors, Register::ZMM0, 7, 8), Some(7));
        assert_eq!(vector_element(&vectors, Register::YMM9, 0, 8), Some(0));
    }

    #[test]
    fn masks_read_sign_bits_and_opmask_bits() {
        let vectors = VectorRegisters {
            zmm: vec![
                [0; 8],
                [
                    0x8000_0000_0000_0000,
                    0x0000_0000_8000_0000,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
            ],
            k: [0, 0b101, 0, 0, 0, 0, 0, u64::MAX],
        };
        let dwords = Mask::SignBits {
            register: Register::XMM1,
            size: 4,
        };
        let enabled: Vec<bool> = (0..4)
            .map(|element| dwords.enables(element, &vectors))
            .collect();
        assert_eq!(enabled, [false, true, true, false]);
        assert!(!dwords.enables(usize::MAX, &vectors));

        let k1 = Mask::Opmask(Register::K1);
        let enabled: Vec<bool> = (0..4)
            .map(|element| k1.enables(element, &vectors))
            .collect();
        assert_eq!(enabled, [true, false, true, false]);
        assert!(Mask::Opmask(Register::K7).enables(63, &vectors));
        assert!(!Mask::Opmask(Register::K7).enables(64, &vectors));
    }
}
