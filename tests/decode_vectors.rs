//! The decoder's accesses for gathers, scatters and masked loads and stores, whose accesses
//! depend on the values of vector and opmask registers.
//!
//! The table gives, per instruction (bytes from GNU as and objdump), the general-purpose and
//! vector registers that differ from the base values and the exact accesses expected. Every
//! row is also decoded without vector registers, which must ask for them.
//!
//! `avx2_forms_match_the_hardware` runs the AVX2 forms on this CPU
//! (tests/fixtures/vector_avx2.c) and checks the decoder's accesses against the bytes each
//! instruction really loaded or stored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ffitrace::decode::{decode_x86_64, decode_x86_64_with_vectors, Decoded};
use ffitrace::event::{Access, AccessKind};
use ffitrace::regs::{Registers, VectorRegisters};
use proptest::prelude::*;

const R: AccessKind = AccessKind::Read;
const W: AccessKind = AccessKind::Write;
const P: AccessKind = AccessKind::PossibleWrite;

const RIP: u64 = 0x40_1000;
const RAX: u64 = 0x1_0000;
const RSI: u64 = 0x5_0000;
const RDI: u64 = 0x6_0000;
const R8: u64 = 0x8_0000;
const FS_BASE: u64 = 0x7f00_0000_0000;

/// A doubleword or quadword mask element with only its sign bit set.
const ON32: i64 = 0x8000_0000;
const ON64: i64 = i64::MIN;

/// A vector or opmask register value for a row. Lanes not listed are zero, and a value is
/// truncated to its lane's width, so `-1` fills a lane with ones.
#[derive(Clone, Copy)]
enum V {
    /// Doubleword lanes of `zmmN`, lowest first.
    D(usize, &'static [i64]),
    /// Quadword lanes of `zmmN`, lowest first.
    Q(usize, &'static [i64]),
    /// Byte lanes of `zmmN`, lowest first.
    B(usize, &'static [u8]),
    /// Opmask register `kN`.
    K(usize, u64),
}
use V::{B, D, K, Q};

/// Expected accesses as `(addr, size, kind)`, in order.
type Expected = &'static [(u64, u32, AccessKind)];

/// One instruction: a name for failure messages, its bytes in hex, general-purpose registers
/// to override (by field name), vector register values and the expected accesses.
struct Row(
    &'static str,
    &'static str,
    &'static [(&'static str, u64)],
    &'static [V],
    Expected,
);

fn base_regs() -> Registers {
    Registers {
        rax: RAX,
        rbx: 0x2_0000,
        rcx: 3,
        rdx: 0x4_0000,
        rsi: RSI,
        rdi: RDI,
        rbp: 0x7_0000,
        rsp: 0x7fff_f000,
        r8: R8,
        r9: 0x9_0000,
        rip: RIP,
        fs_base: FS_BASE,
        gs_base: 0x7f00_1000_0000,
        ..Registers::default()
    }
}

fn set(regs: &mut Registers, name: &str, value: u64) {
    let field = match name {
        "rax" => &mut regs.rax,
        "rsi" => &mut regs.rsi,
        "rdi" => &mut regs.rdi,
        other => panic!("the table names an unknown register {other}"),
    };
    *field = value;
}

fn vectors_from(values: &[V]) -> VectorRegisters {
    let mut vectors = VectorRegisters {
        zmm: vec![[0; 8]; 32],
        k: [0; 8],
    };
    let mut put = |register: usize, lane_bytes: usize, lane: usize, value: u64| {
        let zmm = &mut vectors.zmm[register];
        for byte in 0..lane_bytes {
            let offset = lane * lane_bytes + byte;
            let bits = (value >> (8 * byte)) & 0xff;
            zmm[offset / 8] &= !(0xff << (8 * (offset % 8)));
            zmm[offset / 8] |= bits << (8 * (offset % 8));
        }
    };
    for value in values {
        match *value {
            D(register, lanes) => {
                for (lane, &lane_value) in lanes.iter().enumerate() {
                    put(register, 4, lane, lane_value as u64);
                }
            }
            Q(register, lanes) => {
                for (lane, &lane_value) in lanes.iter().enumerate() {
                    put(register, 8, lane, lane_value as u64);
                }
            }
            B(register, lanes) => {
                for (lane, &lane_value) in lanes.iter().enumerate() {
                    put(register, 1, lane, u64::from(lane_value));
                }
            }
            K(register, bits) => vectors.k[register] = bits,
        }
    }
    vectors
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("the hex is valid"))
        .collect()
}

/// The doubleword mask of the VMASKMOVPS rows: elements 0, 1, 3, 6 and 7 enabled.
const HOLES32: &[i64] = &[ON32, -1, 0, ON32, 0, 0x7fff_ffff, ON32, ON32 | 7];
/// The byte mask of the MASKMOVDQU rows: bytes 0 to 3, 8 and 15 enabled.
const HOLES8: &[u8] = &[
    0x80, 0x81, 0xff, 0x80, 0, 0, 0x7f, 0, 0x80, 0x7f, 0, 0, 0, 0, 0, 0x80,
];

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // AVX2 gathers read element i at base + sign-extended index[i] * scale + displacement
    // when the sign bit of mask element i is set. Each element is one access, lowest first.
    Row("vpgatherdd ymm0, [rdi+ymm1*4+0x10], ymm2 with holes and negative indices", "c4e26d90448f10", &[],
        &[D(1, &[0, 1, -1, 5, -8, 100, 2, 3]), D(2, &[ON32, 0, -1, ON32 | 1, ON32, 0x7fff_ffff, ON32, 0])],
        &[(RDI + 0x10, 4, R), (RDI - 4 + 0x10, 4, R), (RDI + 20 + 0x10, 4, R), (RDI - 32 + 0x10, 4, R), (RDI + 8 + 0x10, 4, R)]),
    Row("vpgatherdd ymm0, [rdi+ymm1*4+0x10], ymm2 with every element masked off", "c4e26d90448f10", &[],
        &[D(1, &[0, 1, 2, 3, 4, 5, 6, 7]), D(2, &[0x7fff_ffff, 1, 0, 0, 0, 0, 0, 0x7fff_ffff])],
        &[]),
    Row("vpgatherqq ymm0, [rdi+ymm1*8], ymm2", "c4e2ed9104cf", &[],
        &[Q(1, &[-1, 2, -0x1000, 3]), Q(2, &[ON64, ON64, ON64, -1])],
        &[(RDI - 8, 8, R), (RDI + 16, 8, R), (RDI - 0x8000, 8, R), (RDI + 24, 8, R)]),
    Row("vpgatherdq ymm0, [rdi+xmm1*8], ymm2 (doubleword indices, quadword data)", "c4e2ed9004cf", &[],
        &[D(1, &[1, -2, 3, -4, 50, 50, 50, 50]), Q(2, &[ON64, 0, ON64, ON64])],
        &[(RDI + 8, 8, R), (RDI + 24, 8, R), (RDI - 32, 8, R)]),
    Row("vpgatherqd xmm0, [rdi+ymm1*4], xmm2 (quadword indices, four elements)", "c4e26d91048f", &[],
        &[Q(1, &[1, -1, 0x1_0000_0000, 2]), D(2, &[ON32, ON32, ON32, 0, ON32, ON32, ON32, ON32])],
        &[(RDI + 4, 4, R), (RDI - 4, 4, R), (RDI + 0x4_0000_0000, 4, R)]),
    Row("vgatherdps xmm0, [rdi+xmm1*4-0x8], xmm2", "c4e26992448ff8", &[],
        &[D(1, &[-3, 0, 7, 2, 9, 9, 9, 9]), D(2, &[ON32, ON32, 0, ON32, ON32, ON32, ON32, ON32])],
        &[(RDI - 12 - 8, 4, R), (RDI - 8, 4, R), (RDI + 8 - 8, 4, R)]),
    Row("vgatherdpd xmm0, [rdi+xmm1*8], xmm2 (two of four indices)", "c4e2e99204cf", &[],
        &[D(1, &[5, -5, 99, 99]), Q(2, &[ON64, ON64, ON64, ON64])],
        &[(RDI + 40, 8, R), (RDI - 40, 8, R)]),
    Row("vpgatherdd ymm0, [eax+ymm1*4], ymm2 (32-bit addresses wrap)", "67c4e26d900488", &[("rax", 0xffff_ffff_0000_0010)],
        &[D(1, &[-8, 1]), D(2, &[ON32, ON32])],
        &[(0xffff_fff0, 4, R), (0x14, 4, R)]),
    Row("vpgatherdd ymm0, [ymm1*4+0x10], ymm2 (no base register)", "c4e26d90048d10000000", &[],
        &[D(1, &[-4, 0x100]), D(2, &[ON32, ON32])],
        &[(0, 4, R), (0x410, 4, R)]),
    Row("vpgatherdd ymm0, fs:[rdi+ymm1*4], ymm2", "64c4e26d90048f", &[],
        &[D(1, &[2]), D(2, &[ON32])],
        &[(FS_BASE + RDI + 8, 4, R)]),

    // AVX-512 gathers and scatters: element i when bit i of the opmask is set. Scatters are
    // certain writes, even to the same address twice.
    Row("vpgatherdd zmm0{k1}, [rdi+zmm1*4]", "62f27d4990048f", &[],
        &[D(1, &[10, 0, -20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]), K(1, 0x8005)],
        &[(RDI + 40, 4, R), (RDI - 80, 4, R), (RDI + 28, 4, R)]),
    Row("vpgatherdd zmm0{k1}, [rdi+zmm1*4] with k1 = 0", "62f27d4990048f", &[],
        &[D(1, &[10, 0, -20]), K(1, 0)],
        &[]),
    Row("vpgatherqd ymm0{k1}, [rdi+zmm1*4] (mask bits past the eighth ignored)", "62f27d4991048f", &[],
        &[Q(1, &[3, -3, 0, 0, 0, 0, 0, 9]), K(1, 0xff03)],
        &[(RDI + 12, 4, R), (RDI - 12, 4, R)]),
    Row("vpgatherdd zmm16{k7}, [r8+zmm31*4]", "62827d479004b8", &[],
        &[D(31, &[1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0x7fff_ffff]), K(7, 1 << 15)],
        &[(R8 + 0x1_ffff_fffc, 4, R)]),
    Row("vpscatterdd [rdi+zmm1*4]{k1}, zmm0 (the same address twice)", "62f27d49a0048f", &[],
        &[D(1, &[-1, -1]), K(1, 0b11)],
        &[(RDI - 4, 4, W), (RDI - 4, 4, W)]),
    Row("vscatterqps [rdi+zmm1*4]{k1}, ymm0", "62f27d49a3048f", &[],
        &[Q(1, &[0, 1, 2, 3, 4, 5, 6, -7]), K(1, 0x81)],
        &[(RDI, 4, W), (RDI - 28, 4, W)]),
    Row("vscatterdpd [rdi+ymm1*8]{k1}, zmm0", "62f2fd49a204cf", &[],
        &[D(1, &[1, 2, 3, 4, 5, 6, -7, 8]), K(1, 0b0100_0000)],
        &[(RDI - 56, 8, W)]),
    Row("vpscatterqq [rdi+xmm1*8]{k1}, xmm0 (two elements)", "62f2fd09a104cf", &[],
        &[Q(1, &[-2, 2, 5, 5]), K(1, 0xff)],
        &[(RDI - 16, 8, W), (RDI + 16, 8, W)]),

    // AVX masked loads and stores: each run of adjacent enabled elements is one access.
    Row("vmaskmovps ymm0, ymm1, [rdi] with holes", "c4e2752c07", &[],
        &[D(1, HOLES32)],
        &[(RDI, 8, R), (RDI + 12, 4, R), (RDI + 24, 8, R)]),
    Row("vmaskmovps [rdi], ymm1, ymm0 with holes", "c4e2752e07", &[],
        &[D(1, HOLES32)],
        &[(RDI, 8, W), (RDI + 12, 4, W), (RDI + 24, 8, W)]),
    Row("vmaskmovpd xmm0, xmm1, [rdi] with every element enabled", "c4e2712d07", &[],
        &[Q(1, &[ON64, -1])],
        &[(RDI, 16, R)]),
    Row("vpmaskmovd [rdi], ymm1, ymm0 with every element masked off", "c4e2758e07", &[],
        &[D(1, &[0x7fff_ffff, 1, 2, 3, 4, 5, 6, 7]), D(0, &[-1, -1, -1, -1, -1, -1, -1, -1])],
        &[]),
    Row("vpmaskmovq ymm0, ymm1, [rdi] with the last element enabled", "c4e2f58c07", &[],
        &[Q(1, &[i64::MAX, 0, 1, ON64])],
        &[(RDI + 24, 8, R)]),

    // MASKMOVDQU: one mask byte per byte, in the second register; the address is DS:RDI.
    Row("maskmovdqu xmm0, xmm1 with holes", "660ff7c1", &[],
        &[B(1, HOLES8), B(0, &[0xff; 16])],
        &[(RDI, 4, W), (RDI + 8, 1, W), (RDI + 15, 1, W)]),
    Row("vmaskmovdqu xmm0, xmm1 with holes", "c5f9f7c1", &[],
        &[B(1, HOLES8)],
        &[(RDI, 4, W), (RDI + 8, 1, W), (RDI + 15, 1, W)]),
    Row("addr32 maskmovdqu xmm0, xmm1 uses edi", "67660ff7c1", &[("rdi", 0x1_0006_0000)],
        &[B(1, &[0x80; 16])],
        &[(RDI, 16, W)]),
    Row("maskmovdqu xmm0, xmm1 with every byte masked off", "660ff7c1", &[],
        &[B(0, &[0x80; 16])],
        &[]),

    // AVX-512 moves under an opmask, of every element width and vector length.
    Row("vmovdqu8 zmmword ptr [rdi]{k1}, zmm0", "62f17f497f07", &[],
        &[K(1, 0xf0f0_0000_0000_0001)],
        &[(RDI, 1, W), (RDI + 52, 4, W), (RDI + 60, 4, W)]),
    Row("vmovdqu8 zmm0{k1}{z}, zmmword ptr [rdi]", "62f17fc96f07", &[],
        &[K(1, 0xf0f0_0000_0000_0001)],
        &[(RDI, 1, R), (RDI + 52, 4, R), (RDI + 60, 4, R)]),
    Row("vmovdqu16 ymm0{k2}, ymmword ptr [rdi] (mask bits past the sixteenth ignored)", "62f1ff2a6f07", &[],
        &[K(2, 0xf_ffff)],
        &[(RDI, 32, R)]),
    Row("vmovdqu32 xmm0{k3}, xmmword ptr [rdi]", "62f17e0b6f07", &[],
        &[K(3, 0b1010)],
        &[(RDI + 4, 4, R), (RDI + 12, 4, R)]),
    Row("vmovdqu64 ymmword ptr [rdi]{k1}, ymm0 with k1 = 0", "62f1fe297f07", &[],
        &[K(2, u64::MAX)],
        &[]),
    Row("vmovdqa32 zmmword ptr [rdi]{k1}, zmm0", "62f17d497f07", &[],
        &[K(1, 0x8001)],
        &[(RDI, 4, W), (RDI + 60, 4, W)]),
    Row("vmovups zmm0{k1}, zmmword ptr [rdi]", "62f17c491007", &[],
        &[K(1, 0x0ff0)],
        &[(RDI + 16, 32, R)]),
    Row("vmovapd xmmword ptr [rdi]{k1}, xmm0", "62f1fd092907", &[],
        &[K(1, 0b10)],
        &[(RDI + 8, 8, W)]),

    // AVX-512 compares and element-wise arithmetic under an opmask read enabled elements.
    Row("vaddps zmm0{k1}, zmm1, zmmword ptr [rdi]", "62f174495807", &[],
        &[K(1, 0x8003)],
        &[(RDI, 8, R), (RDI + 60, 4, R)]),
    Row("vpcmpub k1{k2}, zmm0, zmmword ptr [rdi], 4", "62f37d4a3e0f04", &[],
        &[K(2, 0x3f)],
        &[(RDI, 6, R)]),
    Row("vmovss xmm0{k1}, dword ptr [rdi]", "62f17e091007", &[],
        &[K(1, 1)],
        &[(RDI, 4, R)]),
    Row("vmovss xmm0{k1}, dword ptr [rdi] with bit 0 clear", "62f17e091007", &[],
        &[K(1, 0b10)],
        &[]),
    Row("vmovsd qword ptr [rdi]{k1}, xmm0", "62f1ff091107", &[],
        &[K(1, 1)],
        &[(RDI, 8, W)]),
    Row("vmovsh xmm0{k1}, word ptr [rdi]", "62f57e091007", &[],
        &[K(1, 1)],
        &[(RDI, 2, R)]),
    Row("vmovdqu64 zmm16{k7}, zmmword ptr [r8]", "62c1fe4f6f00", &[],
        &[K(7, 0x80)],
        &[(R8 + 56, 8, R)]),

    // Widening loads, narrowing stores, extracts and conversions: one mask bit per memory
    // element.
    Row("vpmovdb xmmword ptr [rdi]{k1}, zmm0", "62f27e493107", &[],
        &[K(1, 0xffff_00ff)],
        &[(RDI, 8, W)]),
    Row("vpmovqb word ptr [rdi]{k1}, xmm0", "62f27e093207", &[],
        &[K(1, 0b10)],
        &[(RDI + 1, 1, W)]),
    Row("vpmovzxbd zmm0{k1}, xmmword ptr [rdi]", "62f27d493107", &[],
        &[K(1, 0x0f0f)],
        &[(RDI, 4, R), (RDI + 8, 4, R)]),
    Row("vpmovsxwq zmm0{k1}, xmmword ptr [rdi]", "62f27d492407", &[],
        &[K(1, 0x81)],
        &[(RDI, 2, R), (RDI + 14, 2, R)]),
    Row("vextracti32x4 xmmword ptr [rdi]{k1}, zmm0, 0x1", "62f37d49390701", &[],
        &[K(1, 0b0110)],
        &[(RDI + 4, 8, W)]),
    Row("vcvtps2ph ymmword ptr [rdi]{k1}, zmm0, 0x0", "62f37d491d0700", &[],
        &[K(1, 0xff00)],
        &[(RDI + 16, 16, W)]),

    // Compress and expand: as many elements as the mask enables, from the operand's start.
    Row("vpcompressd zmmword ptr [rdi]{k1}, zmm0", "62f27d498b07", &[],
        &[K(1, 0b1010_0101)],
        &[(RDI, 16, W)]),
    Row("vpcompressb zmmword ptr [rdi]{k1}, zmm0", "62f27d496307", &[],
        &[K(1, u64::MAX)],
        &[(RDI, 64, W)]),
    Row("vpexpandd zmm0{k1}, zmmword ptr [rdi]", "62f27d498907", &[],
        &[K(1, 0xffff)],
        &[(RDI, 64, R)]),
    Row("vpexpandd zmm0{k1}, zmmword ptr [rdi] with k1 = 0", "62f27d498907", &[],
        &[K(1, 0)],
        &[]),
    Row("vpexpandq zmm0{k1}{z}, zmmword ptr [rdi+rsi*8+0x40]", "62f2fdc98944f708", &[],
        &[K(1, 0b1110)],
        &[(RDI + RSI * 8 + 0x40, 24, R)]),
];

/// Instructions whose accesses do not depend on vector registers: the same with or without.
#[rustfmt::skip]
const INDEPENDENT: &[(&str, &str, Expected)] = &[
    ("maskmovq mm0, mm1 (MMX registers are not given)", "0ff7c1", &[(RDI, 8, P)]),
    ("vpermd zmm0{k1}, zmm1, zmmword ptr [rdi] (a permute reads every element)", "62f275493607", &[(RDI, 64, R)]),
    ("vaddps zmm0{k1}, zmm1, dword bcst [rdi]", "62f174595807", &[(RDI, 4, R)]),
    ("vinserti32x4 zmm0{k1}, zmm1, xmmword ptr [rdi], 0x1", "62f37549380701", &[(RDI, 16, R)]),
    ("vmovdqu8 zmm0, zmmword ptr [rdi] (no opmask)", "62f17f486f07", &[(RDI, 64, R)]),
    ("vgatherpf0dps [rdi+zmm1*4]{k1} (a prefetch)", "62f27d49c60c8f", &[]),
    ("fxsave [rdi]", "0fae07", &[(RDI, 416, W)]),
];

fn want(expected: &[(u64, u32, AccessKind)]) -> Vec<Access> {
    expected
        .iter()
        .map(|&(addr, size, kind)| Access { addr, size, kind })
        .collect()
}

#[test]
fn every_row_decodes_to_its_accesses() {
    let mut failures = Vec::new();
    for Row(name, hex, overrides, values, expected) in ROWS {
        let code = bytes(hex);
        let mut regs = base_regs();
        for &(reg, value) in *overrides {
            set(&mut regs, reg, value);
        }
        match decode_x86_64(&code, &regs) {
            Decoded::NeedsVectorRegisters => {}
            other => failures.push(format!("{name} ({hex}): without vectors gave {other:?}")),
        }
        match decode_x86_64_with_vectors(&code, &regs, &vectors_from(values)) {
            Decoded::Instruction(instr) if instr.len != code.len() => {
                failures.push(format!(
                    "{name} ({hex}): length {} instead of {}",
                    instr.len,
                    code.len()
                ));
            }
            Decoded::Instruction(instr) if instr.accesses != want(expected) => {
                failures.push(format!(
                    "{name} ({hex}): accesses\n    {:x?}\n  instead of\n    {:x?}",
                    instr.accesses,
                    want(expected)
                ))
            }
            Decoded::Instruction(_) => {}
            other => failures.push(format!("{name} ({hex}): with vectors gave {other:?}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn other_forms_ignore_the_vector_registers() {
    let regs = base_regs();
    let vectors = vectors_from(&[K(1, 0b1), D(1, &[-1; 16]), B(2, &[0; 16])]);
    for &(name, hex, expected) in INDEPENDENT {
        let code = bytes(hex);
        for decoded in [
            decode_x86_64(&code, &regs),
            decode_x86_64_with_vectors(&code, &regs, &vectors),
        ] {
            match decoded {
                Decoded::Instruction(instr) => assert_eq!(instr.accesses, want(expected), "{name}"),
                other => panic!("{name}: {other:?}"),
            }
        }
    }
}

#[test]
fn missing_vector_registers_read_as_zero() {
    // A caller that could read only the XMM registers passes fewer than 32 entries.
    let regs = base_regs();
    let vectors = VectorRegisters {
        zmm: vec![[0; 8]; 2],
        k: [0; 8],
    };
    // The mask in ymm2 is absent, so every element is masked off.
    let Decoded::Instruction(instr) =
        decode_x86_64_with_vectors(&bytes("c4e26d90448f10"), &regs, &vectors)
    else {
        panic!("vpgatherdd did not decode");
    };
    assert_eq!(instr.accesses, vec![]);
}

/// The text of an instruction does not depend on the registers.
#[test]
fn text_is_the_same_with_vectors() {
    let regs = base_regs();
    let vectors = vectors_from(&[D(2, &[-1; 8])]);
    let Decoded::Instruction(instr) =
        decode_x86_64_with_vectors(&bytes("c4e26d90448f10"), &regs, &vectors)
    else {
        panic!("vpgatherdd did not decode");
    };
    assert_eq!(instr.text, "vpgatherdd ymm0, [rdi+ymm1*4+0x10], ymm2");
    assert_eq!(instr.len, 7);
}

fn vectors_strategy() -> impl Strategy<Value = VectorRegisters> {
    (
        prop::collection::vec(prop::array::uniform8(any::<u64>()), 0..=32),
        prop::array::uniform8(any::<u64>()),
    )
        .prop_map(|(zmm, k)| VectorRegisters { zmm, k })
}

fn dwords(zmm: &[u64; 8]) -> [u32; 16] {
    let mut lanes = [0u32; 16];
    for (lane, value) in lanes.iter_mut().enumerate() {
        *value = (zmm[lane / 2] >> (32 * (lane % 2))) as u32;
    }
    lanes
}

proptest! {
    /// With vectors given, the decoder never panics and never requests them again.
    #[test]
    fn decode_with_vectors_never_panics(
        prefix in prop::sample::select(PREFIXES),
        tail in prop::collection::vec(any::<u8>(), 0..16),
        values in prop::array::uniform::<_, 6>(any::<u64>()),
        vectors in vectors_strategy(),
    ) {
        let code: Vec<u8> = prefix.iter().chain(&tail).copied().collect();
        let regs = Registers { rax: values[0], rdi: values[1], rsi: values[2], r8: values[3], rip: values[4], fs_base: values[5], ..Registers::default() };
        match decode_x86_64_with_vectors(&code, &regs, &vectors) {
            Decoded::Instruction(instr) => {
                prop_assert!(instr.len >= 1 && instr.len <= code.len());
                prop_assert!(instr.accesses.iter().all(|access| access.size > 0));
            }
            Decoded::Unsupported(gap) => prop_assert_eq!(gap.addr, regs.rip),
            Decoded::NeedsVectorRegisters => prop_assert!(false, "asked for vectors it was given"),
        }
    }

    /// Random bytes behind a VSIB or opmask encoding, with random registers.
    #[test]
    fn vector_forms_never_panic(
        form in prop::sample::select(VECTOR_FORMS),
        modrm_and_rest in prop::collection::vec(any::<u8>(), 0..10),
        vectors in vectors_strategy(),
        rdi in any::<u64>(),
    ) {
        let code: Vec<u8> = form.iter().chain(&modrm_and_rest).copied().collect();
        let regs = Registers { rdi, ..base_regs() };
        let _ = decode_x86_64(&code, &regs);
        if let Decoded::Instruction(instr) = decode_x86_64_with_vectors(&code, &regs, &vectors) {
            prop_assert!(instr.accesses.iter().all(|access| access.size > 0 && access.size <= 64));
        }
    }

    /// VPGATHERDD's accesses match a direct computation for any index and mask values.
    #[test]
    fn vpgatherdd_matches_the_definition(vectors in vectors_strategy(), rdi in any::<u64>()) {
        let regs = Registers { rdi, ..base_regs() };
        let Decoded::Instruction(instr) = decode_x86_64_with_vectors(&bytes("c4e26d90448f10"), &regs, &vectors) else {
            panic!("vpgatherdd did not decode");
        };
        let zmm = |n: usize| vectors.zmm.get(n).copied().unwrap_or([0; 8]);
        let (index, mask) = (dwords(&zmm(1)), dwords(&zmm(2)));
        let expected: Vec<Access> = (0..8)
            .filter(|&i| mask[i] & 0x8000_0000 != 0)
            .map(|i| Access {
                addr: rdi.wrapping_add((index[i] as i32 as i64 * 4) as u64).wrapping_add(0x10),
                size: 4,
                kind: R,
            })
            .collect();
        prop_assert_eq!(instr.accesses, expected);
    }

    /// A masked load's accesses are disjoint, in address order, inside the operand and cover
    /// exactly the enabled elements.
    #[test]
    fn masked_runs_cover_the_enabled_elements(k1 in any::<u64>(), rdi in 0u64..1 << 40) {
        let regs = Registers { rdi, ..base_regs() };
        let vectors = vectors_from(&[K(1, k1)]);
        let Decoded::Instruction(instr) = decode_x86_64_with_vectors(&bytes("62f17fc96f07"), &regs, &vectors) else {
            panic!("vmovdqu8 did not decode");
        };
        let mut covered = BTreeSet::new();
        let mut last_end = rdi;
        for access in &instr.accesses {
            prop_assert!(access.addr >= last_end && access.end() <= rdi + 64);
            last_end = access.end();
            covered.extend(access.addr - rdi..access.end() - rdi);
        }
        let enabled: BTreeSet<u64> = (0..64).filter(|bit| (k1 >> bit) & 1 != 0).collect();
        prop_assert_eq!(covered, enabled);
    }
}

const PREFIXES: &[&[u8]] = &[
    &[0x62],
    &[0xc4, 0xe2],
    &[0xc5],
    &[0x66, 0x0f, 0xf7],
    &[0x0f, 0xae],
    &[0x67, 0xc4, 0xe2],
];

/// Leading bytes of VSIB and masked encodings; the ModRM byte and what follows are random.
const VECTOR_FORMS: &[&[u8]] = &[
    &[0xc4, 0xe2, 0x6d, 0x90],
    &[0xc4, 0xe2, 0xed, 0x91],
    &[0xc4, 0xe2, 0x69, 0x92],
    &[0xc4, 0xe2, 0x75, 0x2c],
    &[0xc4, 0xe2, 0xf5, 0x8e],
    &[0x62, 0xf2, 0x7d, 0x49, 0x90],
    &[0x62, 0xf2, 0xfd, 0x49, 0xa2],
    &[0x62, 0x82, 0x7d, 0x47, 0x90],
    &[0x62, 0xf1, 0x7f, 0x49, 0x7f],
    &[0x62, 0xf2, 0x7d, 0x49, 0x8b],
    &[0x62, 0xf2, 0x7e, 0x09, 0x32],
    &[0x62, 0xf1, 0xfe, 0x4f, 0x6f],
    &[0x66, 0x0f, 0xf7],
];

/// One case of tests/fixtures/vector_avx2.c: what ran, and what it did to memory and ymm0.
#[derive(Default)]
struct HardwareCase {
    name: String,
    check: Vec<String>,
    code: Vec<u8>,
    regs: Registers,
    vectors: VectorRegisters,
    buffer: u64,
    /// Buffer contents before and after each run of the instruction.
    runs: Vec<(Vec<u8>, Vec<u8>)>,
    result: [u8; 32],
}

fn hex_u64(text: &str) -> u64 {
    u64::from_str_radix(text, 16).expect("the fixture prints hexadecimal numbers")
}

fn quadwords_to_bytes(words: &[&str]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, word) in words.iter().enumerate().take(4) {
        out[i * 8..i * 8 + 8].copy_from_slice(&hex_u64(word).to_le_bytes());
    }
    out
}

fn parse_cases(output: &str) -> Vec<HardwareCase> {
    let mut cases = Vec::new();
    let mut case = HardwareCase::default();
    let mut before = Vec::new();
    for line in output.lines() {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match key {
            "case" => {
                case = HardwareCase {
                    name: rest.to_string(),
                    vectors: VectorRegisters {
                        zmm: vec![[0; 8]; 32],
                        k: [0; 8],
                    },
                    ..HardwareCase::default()
                }
            }
            "check" => case.check = words.iter().map(|word| word.to_string()).collect(),
            "code" => case.code = bytes(rest),
            "rip" => case.regs.rip = hex_u64(rest),
            "rdi" => case.regs.rdi = hex_u64(rest),
            "ymm" => {
                let register: usize = words[0].parse().expect("a register number");
                let values = quadwords_to_bytes(&words[1..]);
                for (i, word) in case.vectors.zmm[register].iter_mut().take(4).enumerate() {
                    *word = u64::from_le_bytes(values[i * 8..i * 8 + 8].try_into().unwrap());
                }
            }
            "buffer" => case.buffer = hex_u64(words[0]),
            "before" => before = bytes(rest),
            "after" => case.runs.push((std::mem::take(&mut before), bytes(rest))),
            "result" => case.result = quadwords_to_bytes(&words),
            "end" => cases.push(std::mem::take(&mut case)),
            other => panic!("unexpected line from the fixture: {other}"),
        }
    }
    cases
}

/// Returns the bytes, as offsets into the buffer, that `accesses` of `kind` cover.
fn covered(
    accesses: &[Access],
    kind: AccessKind,
    buffer: u64,
    len: usize,
) -> Result<BTreeSet<u64>, String> {
    let mut offsets = BTreeSet::new();
    for access in accesses.iter().filter(|access| access.kind == kind) {
        if access.addr < buffer || access.end() > buffer + len as u64 {
            return Err(format!("access {access:x?} is outside the buffer"));
        }
        offsets.extend(access.addr - buffer..access.end() - buffer);
    }
    Ok(offsets)
}

/// Compares one hardware case with the decoder; returns a description of any difference.
fn compare(case: &HardwareCase) -> Result<(), String> {
    let Decoded::Instruction(instr) =
        decode_x86_64_with_vectors(&case.code, &case.regs, &case.vectors)
    else {
        return Err("did not decode".to_string());
    };
    if instr.len != case.code.len() {
        return Err(format!(
            "length {} instead of {}",
            instr.len,
            case.code.len()
        ));
    }
    let Some((first_before, _)) = case.runs.first() else {
        return Err("the fixture reported no run".to_string());
    };
    let len = first_before.len();
    let only = |kind: AccessKind| instr.accesses.iter().all(|access| access.kind == kind);
    match case.check.first().map(String::as_str) {
        Some("store") => {
            let stored: BTreeSet<u64> = case
                .runs
                .iter()
                .flat_map(|(before, after)| (0..len).filter(move |&i| before[i] != after[i]))
                .map(|i| i as u64)
                .collect();
            let decoded = covered(&instr.accesses, W, case.buffer, len)?;
            if !only(W) || decoded != stored {
                return Err(format!(
                    "the CPU stored to offsets {stored:?}, the decoder says {:x?}",
                    instr.accesses
                ));
            }
        }
        Some("load") => {
            // Masked-off elements load as zero, and the buffer contains no zero byte.
            let base = case.regs.rdi - case.buffer;
            let loaded: BTreeSet<u64> = (0..32u64)
                .filter(|&j| case.result[j as usize] != 0)
                .map(|j| base + j)
                .collect();
            let decoded = covered(&instr.accesses, R, case.buffer, len)?;
            if !only(R) || decoded != loaded {
                return Err(format!(
                    "the CPU loaded offsets {loaded:?}, the decoder says {:x?}",
                    instr.accesses
                ));
            }
            for &offset in &loaded {
                if case.result[(offset - base) as usize] != first_before[offset as usize] {
                    return Err(format!("ymm0 does not hold the byte at offset {offset}"));
                }
            }
        }
        Some("gather") => {
            let parse = |i: usize| {
                case.check
                    .get(i)
                    .and_then(|word| word.parse::<usize>().ok())
            };
            let (Some(size), Some(count)) = (parse(1), parse(2)) else {
                return Err(format!("bad check line {:?}", case.check));
            };
            // An element the CPU loaded no longer equals ymm0's old value.
            let old = &case.vectors.zmm[0];
            let old_bytes: Vec<u8> = old.iter().flat_map(|word| word.to_le_bytes()).collect();
            let element = |bytes: &[u8], i: usize| bytes[i * size..(i + 1) * size].to_vec();
            let loaded: Vec<usize> = (0..count)
                .filter(|&i| element(&case.result, i) != element(&old_bytes, i))
                .collect();
            if !only(R) || instr.accesses.len() != loaded.len() {
                return Err(format!(
                    "the CPU loaded elements {loaded:?}, the decoder says {:x?}",
                    instr.accesses
                ));
            }
            for (access, &i) in instr.accesses.iter().zip(&loaded) {
                let offsets = covered(std::slice::from_ref(access), R, case.buffer, len)?;
                let memory: Vec<u8> = offsets
                    .iter()
                    .map(|&offset| first_before[offset as usize])
                    .collect();
                if access.size as usize != size || memory != element(&case.result, i) {
                    return Err(format!("element {i} is not the memory at {access:x?}"));
                }
            }
        }
        _ => return Err(format!("bad check line {:?}", case.check)),
    }
    Ok(())
}

fn build_fixture() -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vector_avx2.c");
    let binary = Path::new(env!("CARGO_TARGET_TMPDIR")).join("vector_avx2");
    let status = Command::new("gcc")
        .args(["-O1", "-mavx2", "-o"])
        .arg(&binary)
        .arg(&source)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc could not build {}", source.display());
    binary
}

#[test]
fn avx2_forms_match_the_hardware() {
    if !std::arch::is_x86_feature_detected!("avx2") {
        eprintln!("this CPU has no AVX2; the hardware comparison did not run");
        return;
    }
    let output = Command::new(build_fixture())
        .output()
        .expect("the fixture runs");
    assert!(output.status.success(), "the fixture failed: {output:?}");
    let cases = parse_cases(&String::from_utf8_lossy(&output.stdout));
    assert!(
        cases.len() >= 20,
        "the fixture printed {} cases",
        cases.len()
    );
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            compare(case)
                .err()
                .map(|error| format!("{}: {error}", case.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} cases differ from the hardware:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
