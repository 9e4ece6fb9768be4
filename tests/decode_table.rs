//! The decoder's accesses for one instruction per row, checked event for event.
//!
//! Each row gives the bytes of one instruction (assembled with GNU as and read back with
//! objdump), the registers that differ from `base_regs`, and the exact accesses the CPU makes:
//! address, size, kind and order. The base registers all differ, so an address computed from
//! the wrong register shows up as a wrong address.

use ffitrace::decode::{decode_x86_64, disassemble_x86_64, Decoded};
use ffitrace::event::{Access, AccessKind};
use ffitrace::regs::Registers;
use proptest::prelude::*;

const R: AccessKind = AccessKind::Read;
const W: AccessKind = AccessKind::Write;
const P: AccessKind = AccessKind::PossibleWrite;

const RIP: u64 = 0x40_1000;
const RAX: u64 = 0x1_0000;
const RBX: u64 = 0x2_0000;
const RCX: u64 = 3;
const RSI: u64 = 0x5_0000;
const RDI: u64 = 0x6_0000;
const RBP: u64 = 0x7_0000;
const RSP: u64 = 0x7fff_f000;
const FS_BASE: u64 = 0x7f00_0000_0000;
const GS_BASE: u64 = 0x7f00_1000_0000;

/// What a row expects from the decoder.
enum Expect {
    /// Decoded, with exactly these `(addr, size, kind)` accesses in this order.
    Accesses(&'static [(u64, u32, AccessKind)]),
    /// Unsupported, with a reason containing this text.
    Unsupported(&'static str),
    /// The accesses depend on vector or opmask registers, which these rows do not give.
    NeedsVectors,
}
use Expect::{Accesses, NeedsVectors, Unsupported};

/// One instruction: a name for failure messages, its bytes in hex, registers to override
/// (by `user_regs_struct` field name) and the expected outcome.
struct Row(
    &'static str,
    &'static str,
    &'static [(&'static str, u64)],
    Expect,
);

fn base_regs() -> Registers {
    Registers {
        rax: RAX,
        rbx: RBX,
        rcx: RCX,
        rdx: 0x4_0000,
        rsi: RSI,
        rdi: RDI,
        rbp: RBP,
        rsp: RSP,
        r8: 0x8_0000,
        r9: 0x9_0000,
        r10: 0xa_0000,
        r11: 0xb_0000,
        r12: 0xc_0000,
        r13: 0xd_0000,
        r14: 0xe_0000,
        r15: 0xf_0000,
        rip: RIP,
        fs_base: FS_BASE,
        gs_base: GS_BASE,
        eflags: 0x202,
        ..Registers::default()
    }
}

fn set(regs: &mut Registers, name: &str, value: u64) {
    let field = match name {
        "rax" => &mut regs.rax,
        "rbx" => &mut regs.rbx,
        "rcx" => &mut regs.rcx,
        "rsi" => &mut regs.rsi,
        "rdi" => &mut regs.rdi,
        "rsp" => &mut regs.rsp,
        "r8" => &mut regs.r8,
        "r9" => &mut regs.r9,
        "eflags" => &mut regs.eflags,
        other => panic!("the table names an unknown register {other}"),
    };
    *field = value;
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("the table's hex is valid"))
        .collect()
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Plain loads and stores of every width and addressing form.
    Row("mov al, byte ptr [rbx+rcx*2+0x10]", "8a444b10", &[], Accesses(&[(RBX + 6 + 0x10, 1, R)])),
    Row("mov word ptr [rbx+rcx*2+0x10], ax", "6689444b10", &[], Accesses(&[(RBX + 6 + 0x10, 2, W)])),
    Row("mov eax, dword ptr [rbx+rcx*4-0x8]", "8b448bf8", &[], Accesses(&[(RBX + 12 - 8, 4, R)])),
    Row("mov qword ptr [rbx+rcx*8+0x100], rax", "488984cb00010000", &[], Accesses(&[(RBX + 24 + 0x100, 8, W)])),
    Row("mov byte ptr [r12+r13*1+0x7f], r10b", "4788542c7f", &[], Accesses(&[(0xc_0000 + 0xd_0000 + 0x7f, 1, W)])),
    Row("mov rax, qword ptr [rip+0x100] (relative to the next instruction)", "488b0500010000", &[], Accesses(&[(RIP + 7 + 0x100, 8, R)])),
    Row("mov rax, qword ptr fs:0x28", "64488b042528000000", &[], Accesses(&[(FS_BASE + 0x28, 8, R)])),
    Row("mov eax, dword ptr fs:[rax]", "648b00", &[], Accesses(&[(FS_BASE + RAX, 4, R)])),
    Row("mov rax, qword ptr gs:[rdi]", "65488b07", &[], Accesses(&[(GS_BASE + RDI, 8, R)])),
    Row("mov ax, word ptr [eax+ebx*1] (32-bit address wraps)", "67668b0418", &[("rax", 0xffff_ffff_8000_0000), ("rbx", 0x9000_0000)], Accesses(&[(0x1000_0000, 2, R)])),
    Row("mov eax, dword ptr [r8d+r9d*4] (32-bit registers)", "67438b0488", &[("r8", 0xdead_0000_0000_1000), ("r9", 0xbeef_0000_0000_0010)], Accesses(&[(0x1040, 4, R)])),
    Row("mov rax, qword ptr [rdi] straddling a page boundary", "488b07", &[("rdi", 0x6_0ffc)], Accesses(&[(0x6_0ffc, 8, R)])),
    Row("movzx eax, byte ptr [rdi]", "0fb607", &[], Accesses(&[(RDI, 1, R)])),
    Row("movsx rax, word ptr [rdi+0x2]", "480fbf4702", &[], Accesses(&[(RDI + 2, 2, R)])),
    Row("movsxd rax, dword ptr [rdi+0x4]", "48634704", &[], Accesses(&[(RDI + 4, 4, R)])),
    Row("movbe eax, dword ptr [rdi]", "0f38f007", &[], Accesses(&[(RDI, 4, R)])),
    Row("movbe qword ptr [rdi], rax", "480f38f107", &[], Accesses(&[(RDI, 8, W)])),
    Row("cmovne rax, qword ptr [rdi]", "480f4507", &[], Accesses(&[(RDI, 8, R)])),
    Row("sete byte ptr [rdi]", "0f9407", &[], Accesses(&[(RDI, 1, W)])),

    // Compares only read.
    Row("cmp dword ptr [rdi], 0x5", "833f05", &[], Accesses(&[(RDI, 4, R)])),
    Row("test byte ptr [rdi+0x1], 0x1", "f6470101", &[], Accesses(&[(RDI + 1, 1, R)])),

    // Read-modify-write: one read, then one certain write of the same bytes.
    Row("add dword ptr [rdi+0x4], esi", "017704", &[], Accesses(&[(RDI + 4, 4, R), (RDI + 4, 4, W)])),
    Row("lock xadd qword ptr [rdi], rax", "f0480fc107", &[], Accesses(&[(RDI, 8, R), (RDI, 8, W)])),
    Row("xchg dword ptr [rdi], eax", "8707", &[], Accesses(&[(RDI, 4, R), (RDI, 4, W)])),
    Row("not qword ptr [rdi]", "48f717", &[], Accesses(&[(RDI, 8, R), (RDI, 8, W)])),
    Row("neg dword ptr [rdi]", "f71f", &[], Accesses(&[(RDI, 4, R), (RDI, 4, W)])),
    Row("inc byte ptr [rdi]", "fe07", &[], Accesses(&[(RDI, 1, R), (RDI, 1, W)])),
    Row("lock or dword ptr [rdi], 0x1", "f0830f01", &[], Accesses(&[(RDI, 4, R), (RDI, 4, W)])),
    Row("lock cmpxchg dword ptr [rdi], ecx (writes even when the compare fails)", "f00fb10f", &[], Accesses(&[(RDI, 4, R), (RDI, 4, W)])),
    Row("cmpxchg byte ptr [rdi], cl", "0fb00f", &[], Accesses(&[(RDI, 1, R), (RDI, 1, W)])),
    Row("cmpxchg8b qword ptr [rdi]", "0fc70f", &[], Accesses(&[(RDI, 8, R), (RDI, 8, W)])),
    Row("lock cmpxchg16b xmmword ptr [rdi]", "f0480fc70f", &[], Accesses(&[(RDI, 16, R), (RDI, 16, W)])),

    // The stack: pushes write below RSP, pops read at RSP.
    Row("push rbx", "53", &[], Accesses(&[(RSP - 8, 8, W)])),
    Row("pop rbx", "5b", &[], Accesses(&[(RSP, 8, R)])),
    Row("push qword ptr [rdi+0x8]", "ff7708", &[], Accesses(&[(RDI + 8, 8, R), (RSP - 8, 8, W)])),
    Row("pop qword ptr [rdi+0x8]", "8f4708", &[], Accesses(&[(RSP, 8, R), (RDI + 8, 8, W)])),
    Row("pop qword ptr [rsp+0x8] (address taken after RSP moves)", "8f442408", &[], Accesses(&[(RSP, 8, R), (RSP + 16, 8, W)])),
    Row("call qword ptr [rdi]", "ff17", &[], Accesses(&[(RDI, 8, R), (RSP - 8, 8, W)])),
    Row("call qword ptr [rip+0x10]", "ff1510000000", &[], Accesses(&[(RIP + 6 + 0x10, 8, R), (RSP - 8, 8, W)])),
    Row("call rel32", "e800000000", &[], Accesses(&[(RSP - 8, 8, W)])),
    Row("jmp qword ptr [rdi]", "ff27", &[], Accesses(&[(RDI, 8, R)])),
    Row("ret", "c3", &[], Accesses(&[(RSP, 8, R)])),
    Row("pushfq", "9c", &[], Accesses(&[(RSP - 8, 8, W)])),
    Row("enter 0x10, 0x0", "c8100000", &[], Accesses(&[(RSP - 8, 8, W)])),
    Row("enter 0x20, 0x3", "c8200003", &[], Accesses(&[
        (RSP - 8, 8, W), (RBP - 8, 8, R), (RSP - 16, 8, W), (RBP - 16, 8, R), (RSP - 24, 8, W), (RSP - 32, 8, W),
    ])),
    Row("leave", "c9", &[], Accesses(&[(RBP, 8, R)])),

    // String instructions: one iteration at the current RSI/RDI, source before destination.
    Row("movsq", "48a5", &[], Accesses(&[(RSI, 8, R), (RDI, 8, W)])),
    Row("movsb with an fs override on the source", "64a4", &[], Accesses(&[(FS_BASE + RSI, 1, R), (RDI, 1, W)])),
    Row("rep movsb", "f3a4", &[("rcx", 5)], Accesses(&[(RSI, 1, R), (RDI, 1, W)])),
    Row("rep movsb, direction flag set", "f3a4", &[("rcx", 5), ("eflags", 0x602)], Accesses(&[(RSI, 1, R), (RDI, 1, W)])),
    Row("rep movsb with rcx = 0", "f3a4", &[("rcx", 0)], Accesses(&[])),
    Row("rep movsd", "f3a5", &[("rcx", 2)], Accesses(&[(RSI, 4, R), (RDI, 4, W)])),
    Row("addr32 rep movsb, ecx = 0 with high bits set", "67f3a4", &[("rcx", 0x1_0000_0000)], Accesses(&[])),
    Row("addr32 rep movsb uses esi/edi", "67f3a4", &[("rcx", 1), ("rsi", 0xffff_ffff_0005_0000), ("rdi", 0x1_0006_0000)], Accesses(&[(RSI, 1, R), (RDI, 1, W)])),
    Row("repne scasb with rcx = -1", "f2ae", &[("rcx", u64::MAX)], Accesses(&[(RDI, 1, R)])),
    Row("repe cmpsb", "f3a6", &[("rcx", 1)], Accesses(&[(RSI, 1, R), (RDI, 1, R)])),
    Row("stosq", "48ab", &[], Accesses(&[(RDI, 8, W)])),
    Row("rep stosq", "f348ab", &[("rcx", 2)], Accesses(&[(RDI, 8, W)])),
    Row("lodsb", "ac", &[], Accesses(&[(RSI, 1, R)])),
    Row("cmpsb", "a6", &[], Accesses(&[(RSI, 1, R), (RDI, 1, R)])),
    Row("scasw", "66af", &[], Accesses(&[(RDI, 2, R)])),
    Row("xlatb: rbx + zero-extended al", "d7", &[("rax", 0xffff_ffff_ffff_ff85)], Accesses(&[(RBX + 0x85, 1, R)])),

    // Bit tests with a register offset access the unit that contains the bit.
    Row("bt qword ptr [rdi], rsi with offset 1000", "480fa337", &[("rsi", 1000)], Accesses(&[(RDI + 120, 8, R)])),
    Row("bt qword ptr [rdi], rsi with offset 2^32", "480fa337", &[("rsi", 1 << 32)], Accesses(&[(RDI + (1 << 29), 8, R)])),
    Row("bt qword ptr [rdi], rsi with offset -1", "480fa337", &[("rsi", u64::MAX)], Accesses(&[(RDI - 8, 8, R)])),
    Row("bts dword ptr [rdi], esi with offset -33", "0fab37", &[("rsi", 0xdead_beef_ffff_ffdf)], Accesses(&[(RDI - 8, 4, R), (RDI - 8, 4, W)])),
    Row("bts dword ptr [rdi], esi with offset 31", "0fab37", &[("rsi", 31)], Accesses(&[(RDI, 4, R), (RDI, 4, W)])),
    Row("btr word ptr [rdi], si with offset 17", "660fb337", &[("rsi", 17)], Accesses(&[(RDI + 2, 2, R), (RDI + 2, 2, W)])),
    Row("btr word ptr [rdi], si with offset -1", "660fb337", &[("rsi", 0xffff)], Accesses(&[(RDI - 2, 2, R), (RDI - 2, 2, W)])),
    Row("lock bts qword ptr [rdi], rsi with offset 64", "f0480fab37", &[("rsi", 64)], Accesses(&[(RDI + 8, 8, R), (RDI + 8, 8, W)])),
    Row("btc qword ptr [rdi], 0x46 (immediate wraps)", "480fba3f46", &[], Accesses(&[(RDI, 8, R), (RDI, 8, W)])),
    Row("bt dword ptr [rdi], 0x3", "0fba2703", &[], Accesses(&[(RDI, 4, R)])),
    Row("bt word ptr [rdi], 0x11", "660fba2711", &[], Accesses(&[(RDI, 2, R)])),

    // SSE and AVX operand sizes.
    Row("comisd xmm0, qword ptr [rdi]", "660f2f07", &[], Accesses(&[(RDI, 8, R)])),
    Row("movhps xmm0, qword ptr [rdi]", "0f1607", &[], Accesses(&[(RDI, 8, R)])),
    Row("cvtss2sd xmm0, dword ptr [rdi]", "f30f5a07", &[], Accesses(&[(RDI, 4, R)])),
    Row("pinsrb xmm0, byte ptr [rdi], 0x3", "660f3a200703", &[], Accesses(&[(RDI, 1, R)])),
    Row("pextrw word ptr [rdi], xmm0, 0x1", "660f3a150701", &[], Accesses(&[(RDI, 2, W)])),
    Row("vbroadcastss ymm0, dword ptr [rdi]", "c4e27d1807", &[], Accesses(&[(RDI, 4, R)])),
    Row("vpmovzxbd ymm0, qword ptr [rdi]", "c4e27d3107", &[], Accesses(&[(RDI, 8, R)])),
    Row("vinserti128 ymm0, ymm0, xmmword ptr [rdi], 0x1", "c4e37d380701", &[], Accesses(&[(RDI, 16, R)])),
    Row("movss dword ptr [rdi], xmm0", "f30f1107", &[], Accesses(&[(RDI, 4, W)])),
    Row("movsd qword ptr [rdi], xmm0", "f20f1107", &[], Accesses(&[(RDI, 8, W)])),
    Row("movups xmmword ptr [rdi], xmm0", "0f1107", &[], Accesses(&[(RDI, 16, W)])),
    Row("vmovups ymmword ptr [rdi], ymm0", "c5fc1107", &[], Accesses(&[(RDI, 32, W)])),
    Row("vaddps zmm0, zmm1, dword bcst [rdi]", "62f174585807", &[], Accesses(&[(RDI, 4, R)])),

    // Masked loads and stores, gathers and scatters need the vector and opmask registers
    // (tests/decode_vectors.rs decodes them with register values).
    Row("vmaskmovps ymmword ptr [rdi], ymm1, ymm0", "c4e2752e07", &[], NeedsVectors),
    Row("vmaskmovps ymm0, ymm1, ymmword ptr [rdi]", "c4e2752c07", &[], NeedsVectors),
    Row("maskmovdqu xmm0, xmm1", "660ff7c1", &[], NeedsVectors),
    Row("vmovdqu8 zmmword ptr [rdi]{k1}, zmm0", "62f17f497f07", &[], NeedsVectors),
    Row("vpgatherdd ymm0, [rdi+ymm1*4], ymm2", "c4e26d90048f", &[], NeedsVectors),
    Row("vpscatterdd [rdi+zmm1*4]{k1}, zmm0", "62f27d49a0048f", &[], NeedsVectors),

    // Masked forms that do not need them. MASKMOVQ's mask is in an MMX register, which the
    // decoder is never given, so the store may write any of its eight bytes.
    Row("maskmovq mm0, mm1", "0ff7c1", &[], Accesses(&[(RDI, 8, P)])),
    Row("vaddps zmm0{k1}, zmm1, zmmword ptr [rdi] (enabled elements only)", "62f174495807", &[], NeedsVectors),
    Row("vpermd zmm0{k1}, zmm1, zmmword ptr [rdi] (a permute reads the whole operand)", "62f275493607", &[], Accesses(&[(RDI, 64, R)])),
    Row("vmovups zmm0, zmmword ptr [rdi] (no opmask)", "62f17c481007", &[], Accesses(&[(RDI, 64, R)])),
    Row("vgatherpf0dps [rdi+zmm1*4]{k1} (a prefetch)", "62f27d49c60c8f", &[], Accesses(&[])),

    // FXSAVE and FXRSTOR use bytes 0 to 415 of their 512-byte area.
    Row("fxsave [rdi]", "0fae07", &[], Accesses(&[(RDI, 416, W)])),
    Row("fxsave64 [rdi]", "480fae07", &[], Accesses(&[(RDI, 416, W)])),
    Row("fxrstor [rdi]", "0fae0f", &[], Accesses(&[(RDI, 416, R)])),
    Row("fxrstor64 [rdi]", "480fae0f", &[], Accesses(&[(RDI, 416, R)])),

    // No memory access at all.
    Row("lea rax, [rdi+rsi*8]", "488d04f7", &[], Accesses(&[])),
    Row("nop dword ptr [rax]", "0f1f00", &[], Accesses(&[])),
    Row("prefetcht0 byte ptr [rdi]", "0f180f", &[], Accesses(&[])),

    // What the decoder does not model.
    Row("xsave [rdi]", "0fae27", &[], Unsupported("XSAVE area")),
    Row("xsavec [rdi]", "0fc727", &[], Unsupported("XSAVE area")),
    Row("xsaveopt [rdi]", "0fae37", &[], Unsupported("XSAVE area")),
    Row("xsaves64 [rdi]", "480fc72f", &[], Unsupported("XSAVE area")),
    Row("xrstor [rdi]", "0fae2f", &[], Unsupported("XSAVE area")),
    Row("xrstors [rdi]", "0fc71f", &[], Unsupported("XSAVE area")),
    Row("push es (invalid in 64-bit mode)", "0690909090", &[], Unsupported("not a valid")),
    Row("ff /7 (undefined)", "ffff", &[], Unsupported("not a valid")),
    Row("truncated mov", "488b", &[], Unsupported("end before")),
    Row("truncated VEX prefix", "c4e2", &[], Unsupported("end before")),
    Row("empty input", "", &[], Unsupported("no instruction bytes")),
];

#[test]
fn every_row_decodes_to_its_accesses() {
    let mut failures = Vec::new();
    for Row(name, hex, overrides, expect) in ROWS {
        let code = bytes(hex);
        let mut regs = base_regs();
        for &(reg, value) in *overrides {
            set(&mut regs, reg, value);
        }
        if let Some(failure) = check(&code, &regs, expect) {
            failures.push(format!("{name} ({hex}): {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Returns a description of how the decoder's result differs from `expect`, if it does.
fn check(code: &[u8], regs: &Registers, expect: &Expect) -> Option<String> {
    match (decode_x86_64(code, regs), expect) {
        (Decoded::Instruction(instr), Accesses(want)) => {
            let want: Vec<Access> = want
                .iter()
                .map(|&(addr, size, kind)| Access { addr, size, kind })
                .collect();
            if instr.len != code.len() {
                Some(format!("length {} instead of {}", instr.len, code.len()))
            } else if instr.accesses != want {
                Some(format!(
                    "accesses\n    {:x?}\n  instead of\n    {:x?}",
                    instr.accesses, want
                ))
            } else {
                None
            }
        }
        (Decoded::Unsupported(gap), Unsupported(reason)) => {
            if gap.addr != regs.rip {
                Some(format!(
                    "unsupported at {:#x} instead of {:#x}",
                    gap.addr, regs.rip
                ))
            } else if !gap.reason.contains(reason) {
                Some(format!(
                    "reason {:?} does not mention {reason:?}",
                    gap.reason
                ))
            } else {
                None
            }
        }
        (Decoded::NeedsVectorRegisters, NeedsVectors) => None,
        (got, _) => Some(format!("unexpected outcome {got:?}")),
    }
}

#[test]
fn text_is_intel_syntax_or_hex() {
    let regs = base_regs();
    let Decoded::Instruction(instr) = decode_x86_64(&bytes("64488b042528000000"), &regs) else {
        panic!("mov from fs: did not decode");
    };
    assert_eq!(instr.text, "mov rax, fs:[0x28]");
    assert_eq!(
        disassemble_x86_64(&bytes("ff17"), RIP).as_deref(),
        Some("call qword ptr [rdi]")
    );
    assert_eq!(disassemble_x86_64(&bytes("06"), RIP), None);

    let Decoded::Unsupported(gap) = decode_x86_64(&bytes("488b"), &regs) else {
        panic!("truncated bytes decoded");
    };
    assert_eq!(gap.text, "48 8b");
    assert_eq!(
        disassemble_x86_64(&bytes("c4e26d90048f"), RIP).as_deref(),
        Some("vpgatherdd ymm0, [rdi+ymm1*4], ymm2")
    );
}

#[test]
fn trailing_bytes_after_the_instruction_are_ignored() {
    let regs = base_regs();
    let Decoded::Instruction(instr) =
        decode_x86_64(&bytes("8707ffffffffffffffffffffffffff"), &regs)
    else {
        panic!("xchg followed by other bytes did not decode");
    };
    assert_eq!(instr.len, 2);
    assert_eq!(instr.accesses.len(), 2);
}

fn registers_from(values: [u64; 27]) -> Registers {
    let [r15, r14, r13, r12, rbp, rbx, r11, r10, r9, r8, rax, rcx, rdx, rsi, rdi, orig_rax, rip, cs, eflags, rsp, ss, fs_base, gs_base, ds, es, fs, gs] =
        values;
    Registers {
        r15,
        r14,
        r13,
        r12,
        rbp,
        rbx,
        r11,
        r10,
        r9,
        r8,
        rax,
        rcx,
        rdx,
        rsi,
        rdi,
        orig_rax,
        rip,
        cs,
        eflags,
        rsp,
        ss,
        fs_base,
        gs_base,
        ds,
        es,
        fs,
        gs,
    }
}

proptest! {
    #[test]
    fn decode_never_panics(
        code in prop::collection::vec(any::<u8>(), 0..20),
        values in prop::array::uniform::<_, 27>(any::<u64>()),
    ) {
        let regs = registers_from(values);
        match decode_x86_64(&code, &regs) {
            Decoded::Instruction(instr) => {
                prop_assert!(instr.len >= 1 && instr.len <= code.len());
                prop_assert!(instr.accesses.iter().all(|access| access.size > 0));
            }
            Decoded::Unsupported(gap) => prop_assert_eq!(gap.addr, regs.rip),
            Decoded::NeedsVectorRegisters => {}
        }
        let _ = disassemble_x86_64(&code, regs.rip);
    }

    /// Random bytes rarely start with an escape or a prefix; this run always does, to reach
    /// the VEX, EVEX, string and address-size forms more often.
    #[test]
    fn decode_never_panics_after_a_prefix(
        prefix in prop::sample::select(PREFIXES),
        tail in prop::collection::vec(any::<u8>(), 0..16),
        values in prop::array::uniform::<_, 27>(any::<u64>()),
    ) {
        let code: Vec<u8> = prefix.iter().chain(&tail).copied().collect();
        let regs = registers_from(values);
        if let Decoded::Instruction(instr) = decode_x86_64(&code, &regs) {
            prop_assert!(instr.len >= 1 && instr.len <= code.len());
        }
    }
}

const PREFIXES: &[&[u8]] = &[
    &[0x62],
    &[0xc4],
    &[0xc5],
    &[0x8f],
    &[0x0f],
    &[0x0f, 0x38],
    &[0x0f, 0x3a],
    &[0x0f, 0xc7],
    &[0xf3],
    &[0xf2],
    &[0xf0],
    &[0x67],
    &[0x66],
    &[0x64],
    &[0x65],
    &[0x48],
    &[0x67, 0xf3],
    &[0xf0, 0x48, 0x0f],
];
