//! The AArch64 decoder's accesses for one instruction per row, checked event for event.
//!
//! Each row gives one instruction word (assembled with GNU as 2.40 for
//! `armv9.2-a+ls64+mops+memtag+sme` and read back with objdump), the registers that differ
//! from `base_regs`, and the exact accesses the instruction makes under the Arm ARM's
//! pseudocode: address, size, kind and order. The base registers all differ, so an address
//! computed from the wrong register shows up as a wrong address.

use ffitrace::decode::{decode_aarch64, Decoded};
use ffitrace::event::{Access, AccessKind};
use ffitrace::regs::Aarch64Registers;
use proptest::prelude::*;

const R: AccessKind = AccessKind::Read;
const W: AccessKind = AccessKind::Write;
const P: AccessKind = AccessKind::PossibleWrite;

/// Register number 31, which names the stack pointer as a base register.
const SP_INDEX: usize = 31;

const PC: u64 = 0x40_0000;
const SP: u64 = 0x7fff_f000;
const X0: u64 = 0x1_0000;
const X1: u64 = 0x2_0000;
const X2: u64 = 0x3_0000;
const X4: u64 = 0x5_0000;

/// What a row expects from the decoder.
enum Expect {
    /// Decoded, with exactly these `(addr, size, kind)` accesses in this order.
    Accesses(&'static [(u64, u32, AccessKind)]),
    /// Unsupported, with a reason containing this text.
    Unsupported(&'static str),
}
use Expect::{Accesses, Unsupported};

/// One instruction: its assembly, its 32-bit word as objdump prints it (stored
/// little-endian), registers to override by number (31 is SP) and the expected outcome.
struct Row(&'static str, u32, &'static [(usize, u64)], Expect);

/// Registers where `xN` is `0x10000 * (N + 1)`, so every base register has its own value.
fn base_regs() -> Aarch64Registers {
    let mut regs = Aarch64Registers {
        sp: SP,
        pc: PC,
        ..Aarch64Registers::default()
    };
    for (n, value) in regs.x.iter_mut().enumerate() {
        *value = 0x1_0000 * (n as u64 + 1);
    }
    regs
}

fn regs_with(overrides: &[(usize, u64)]) -> Aarch64Registers {
    let mut regs = base_regs();
    for &(n, value) in overrides {
        match regs.x.get_mut(n) {
            Some(register) => *register = value,
            None if n == SP_INDEX => regs.sp = value,
            None => panic!("the table names register number {n}, which does not exist"),
        }
    }
    regs
}

#[rustfmt::skip]
const ROWS: &[Row] = &[
    // Unsigned offset.
    Row("ldrb w0, [x1, #4095]", 0x397ffc20, &[], Accesses(&[(X1 + 4095, 1, R)])),
    Row("ldrh w0, [x1, #8190]", 0x797ffc20, &[], Accesses(&[(X1 + 0x1ffe, 2, R)])),
    Row("ldr w0, [x1, #16380]", 0xb97ffc20, &[], Accesses(&[(X1 + 0x3ffc, 4, R)])),
    Row("ldr x0, [x1, #8]", 0xf9400420, &[], Accesses(&[(X1 + 8, 8, R)])),
    Row("ldrsb x0, [x1, #1]", 0x39800420, &[], Accesses(&[(X1 + 1, 1, R)])),
    Row("ldrsb w0, [x1]", 0x39c00020, &[], Accesses(&[(X1, 1, R)])),
    Row("ldrsh x0, [x1, #2]", 0x79800420, &[], Accesses(&[(X1 + 2, 2, R)])),
    Row("ldrsh w0, [x1, #4]", 0x79c00820, &[], Accesses(&[(X1 + 4, 2, R)])),
    Row("ldrsw x0, [x1, #4]", 0xb9800420, &[], Accesses(&[(X1 + 4, 4, R)])),
    Row("strb w0, [x1, #3]", 0x39000c20, &[], Accesses(&[(X1 + 3, 1, W)])),
    Row("strh w0, [x1, #6]", 0x79000c20, &[], Accesses(&[(X1 + 6, 2, W)])),
    Row("str w0, [x1, #12]", 0xb9000c20, &[], Accesses(&[(X1 + 12, 4, W)])),
    Row("str x0, [sp, #16]", 0xf9000be0, &[], Accesses(&[(SP + 16, 8, W)])),
    Row("ldr b0, [x1, #1]", 0x3d400420, &[], Accesses(&[(X1 + 1, 1, R)])),
    Row("ldr h0, [x1, #2]", 0x7d400420, &[], Accesses(&[(X1 + 2, 2, R)])),
    Row("ldr s0, [x1, #4]", 0xbd400420, &[], Accesses(&[(X1 + 4, 4, R)])),
    Row("ldr d0, [x1, #8]", 0xfd400420, &[], Accesses(&[(X1 + 8, 8, R)])),
    Row("ldr q0, [x1, #16]", 0x3dc00420, &[], Accesses(&[(X1 + 16, 16, R)])),
    Row("ldr q0, [x1, #65520]", 0x3dfffc20, &[], Accesses(&[(X1 + 0xfff0, 16, R)])),
    Row("str b0, [x1, #1]", 0x3d000420, &[], Accesses(&[(X1 + 1, 1, W)])),
    Row("str h0, [x1, #2]", 0x7d000420, &[], Accesses(&[(X1 + 2, 2, W)])),
    Row("str s0, [x1, #4]", 0xbd000420, &[], Accesses(&[(X1 + 4, 4, W)])),
    Row("str d0, [x1, #8]", 0xfd000420, &[], Accesses(&[(X1 + 8, 8, W)])),
    Row("str q0, [x1, #32]", 0x3d800820, &[], Accesses(&[(X1 + 32, 16, W)])),

    // Unscaled offset.
    Row("ldur x0, [x1, #-8]", 0xf85f8020, &[], Accesses(&[(X1 - 8, 8, R)])),
    Row("ldur w0, [x1, #3]", 0xb8403020, &[], Accesses(&[(X1 + 3, 4, R)])),
    Row("ldurb w0, [x1, #-256]", 0x38500020, &[], Accesses(&[(X1 - 256, 1, R)])),
    Row("ldurh w0, [x1, #255]", 0x784ff020, &[], Accesses(&[(X1 + 255, 2, R)])),
    Row("ldursb x0, [x1, #-1]", 0x389ff020, &[], Accesses(&[(X1 - 1, 1, R)])),
    Row("ldursh w0, [x1, #-2]", 0x78dfe020, &[], Accesses(&[(X1 - 2, 2, R)])),
    Row("ldursw x0, [x1, #-3]", 0xb89fd020, &[], Accesses(&[(X1 - 3, 4, R)])),
    Row("stur w0, [x1, #-1]", 0xb81ff020, &[], Accesses(&[(X1 - 1, 4, W)])),
    Row("stur x0, [sp, #-8]", 0xf81f83e0, &[], Accesses(&[(SP - 8, 8, W)])),
    Row("sturb w0, [x1, #7]", 0x38007020, &[], Accesses(&[(X1 + 7, 1, W)])),
    Row("sturh w0, [x1, #-7]", 0x781f9020, &[], Accesses(&[(X1 - 7, 2, W)])),
    Row("ldur q0, [x1, #-16]", 0x3cdf0020, &[], Accesses(&[(X1 - 16, 16, R)])),
    Row("ldur b0, [x1, #-1]", 0x3c5ff020, &[], Accesses(&[(X1 - 1, 1, R)])),
    Row("stur d0, [x1, #1]", 0xfc001020, &[], Accesses(&[(X1 + 1, 8, W)])),
    Row("stur h0, [x1, #-2]", 0x7c1fe020, &[], Accesses(&[(X1 - 2, 2, W)])),

    // Register offset.
    Row("ldr x0, [x1, x2]", 0xf8626820, &[(2, 0x10)], Accesses(&[(X1 + 16, 8, R)])),
    Row("ldr x0, [x1, x2, lsl #3]", 0xf8627820, &[(2, 0x10)], Accesses(&[(X1 + 128, 8, R)])),
    Row("ldr w0, [x1, w2, uxtw #2]", 0xb8625820, &[(2, 0xffffffff00000004)], Accesses(&[(X1 + 16, 4, R)])),
    Row("ldr w0, [x1, w2, uxtw]", 0xb8624820, &[(2, 0xfffffff0)], Accesses(&[(X1 + 0xfffffff0, 4, R)])),
    Row("ldr w0, [x1, w2, sxtw]", 0xb862c820, &[(2, 0xfffffff0)], Accesses(&[(X1 - 16, 4, R)])),
    Row("ldr x0, [x1, w2, sxtw #3]", 0xf862d820, &[(2, 0x1234ffffffff)], Accesses(&[(X1 - 8, 8, R)])),
    Row("ldr x0, [x1, x2, sxtx]", 0xf862e820, &[(2, 0xfffffffffffffffb)], Accesses(&[(X1 - 5, 8, R)])),
    Row("ldr x0, [x1, x2, sxtx #3]", 0xf862f820, &[(2, 0xfffffffffffffffb)], Accesses(&[(X1 - 40, 8, R)])),
    Row("ldr x0, [x1, xzr]", 0xf87f6820, &[], Accesses(&[(X1, 8, R)])),
    Row("ldr x0, [sp, x2]", 0xf8626be0, &[(2, 0x20)], Accesses(&[(SP + 32, 8, R)])),
    Row("ldrb w0, [x1, x2]", 0x38626820, &[(2, 0x5)], Accesses(&[(X1 + 5, 1, R)])),
    Row("ldrb w0, [x1, x2, lsl #0]", 0x38627820, &[(2, 0x5)], Accesses(&[(X1 + 5, 1, R)])),
    Row("ldrb w0, [x1, w2, sxtw]", 0x3862c820, &[(2, 0xffffffff)], Accesses(&[(X1 - 1, 1, R)])),
    Row("ldrsb x0, [x1, w2, uxtw]", 0x38a24820, &[(2, 0x80000000)], Accesses(&[(X1 + 0x80000000, 1, R)])),
    Row("ldrh w0, [x1, x2, lsl #1]", 0x78627820, &[(2, 0x3)], Accesses(&[(X1 + 6, 2, R)])),
    Row("ldrsh x0, [x1, w2, sxtw #1]", 0x78a2d820, &[(2, 0xfffffffe)], Accesses(&[(X1 - 4, 2, R)])),
    Row("ldrsw x0, [x1, x2, lsl #2]", 0xb8a27820, &[(2, 0x3)], Accesses(&[(X1 + 12, 4, R)])),
    Row("strb w0, [x1, x2]", 0x38226820, &[(2, 0x9)], Accesses(&[(X1 + 9, 1, W)])),
    Row("strh w0, [x1, w2, uxtw #1]", 0x78225820, &[(2, 0x9)], Accesses(&[(X1 + 18, 2, W)])),
    Row("str x0, [x1, x2, lsl #3]", 0xf8227820, &[(2, 0x9)], Accesses(&[(X1 + 72, 8, W)])),
    Row("ldr b0, [x1, x2]", 0x3c626820, &[(2, 0x3)], Accesses(&[(X1 + 3, 1, R)])),
    Row("ldr d0, [x1, w2, uxtw #3]", 0xfc625820, &[(2, 0x3)], Accesses(&[(X1 + 24, 8, R)])),
    Row("ldr q0, [x1, x2, lsl #4]", 0x3ce27820, &[(2, 0x3)], Accesses(&[(X1 + 48, 16, R)])),
    Row("str q0, [x1, x2]", 0x3ca26820, &[(2, 0x3)], Accesses(&[(X1 + 3, 16, W)])),
    Row("str s0, [x1, w2, sxtw #2]", 0xbc22d820, &[(2, 0xfffffffe)], Accesses(&[(X1 - 8, 4, W)])),

    // Literal.
    Row("ldr x0, .+0x100", 0x58000800, &[], Accesses(&[(PC + 256, 8, R)])),
    Row("ldr w0, .-4", 0x18ffffe0, &[], Accesses(&[(PC - 4, 4, R)])),
    Row("ldrsw x0, .+8", 0x98000040, &[], Accesses(&[(PC + 8, 4, R)])),
    Row("ldr s0, .+12", 0x1c000060, &[], Accesses(&[(PC + 12, 4, R)])),
    Row("ldr d0, .-0x100000", 0x5c800000, &[], Accesses(&[(PC - 0x100000, 8, R)])),
    Row("ldr q0, .+0xffffc", 0x9c7fffe0, &[], Accesses(&[(PC + 0xffffc, 16, R)])),
    Row("prfm pldl1keep, .+64", 0xd8000200, &[], Accesses(&[])),

    // Pre-index and post-index.
    Row("ldr x0, [x1, #8]!", 0xf8408c20, &[], Accesses(&[(X1 + 8, 8, R)])),
    Row("ldr x0, [x1], #8", 0xf8408420, &[], Accesses(&[(X1, 8, R)])),
    Row("str w0, [x1, #-4]!", 0xb81fcc20, &[], Accesses(&[(X1 - 4, 4, W)])),
    Row("str w0, [x1], #-4", 0xb81fc420, &[], Accesses(&[(X1, 4, W)])),
    Row("strb w0, [x1], #1", 0x38001420, &[], Accesses(&[(X1, 1, W)])),
    Row("ldrb w0, [x1, #-1]!", 0x385ffc20, &[], Accesses(&[(X1 - 1, 1, R)])),
    Row("ldrh w0, [x1], #2", 0x78402420, &[], Accesses(&[(X1, 2, R)])),
    Row("strh w0, [x1, #2]!", 0x78002c20, &[], Accesses(&[(X1 + 2, 2, W)])),
    Row("ldrsh x0, [x1, #-2]!", 0x789fec20, &[], Accesses(&[(X1 - 2, 2, R)])),
    Row("ldrsb w0, [x1], #255", 0x38cff420, &[], Accesses(&[(X1, 1, R)])),
    Row("ldrsw x0, [x1, #-256]!", 0xb8900c20, &[], Accesses(&[(X1 - 256, 4, R)])),
    Row("str x30, [sp, #-16]!", 0xf81f0ffe, &[], Accesses(&[(SP - 16, 8, W)])),
    Row("ldr x30, [sp], #16", 0xf84107fe, &[], Accesses(&[(SP, 8, R)])),
    Row("ldr q0, [x1, #32]!", 0x3cc20c20, &[], Accesses(&[(X1 + 32, 16, R)])),
    Row("str d0, [x1], #-8", 0xfc1f8420, &[], Accesses(&[(X1, 8, W)])),
    Row("ldr b0, [x1], #1", 0x3c401420, &[], Accesses(&[(X1, 1, R)])),
    Row("str s0, [x1, #4]!", 0xbc004c20, &[], Accesses(&[(X1 + 4, 4, W)])),

    // Unprivileged.
    Row("ldtr x0, [x1, #8]", 0xf8408820, &[], Accesses(&[(X1 + 8, 8, R)])),
    Row("ldtr w0, [x1, #-4]", 0xb85fc820, &[], Accesses(&[(X1 - 4, 4, R)])),
    Row("ldtrb w0, [x1, #1]", 0x38401820, &[], Accesses(&[(X1 + 1, 1, R)])),
    Row("ldtrh w0, [x1, #2]", 0x78402820, &[], Accesses(&[(X1 + 2, 2, R)])),
    Row("ldtrsb x0, [x1]", 0x38800820, &[], Accesses(&[(X1, 1, R)])),
    Row("ldtrsh w0, [x1, #-2]", 0x78dfe820, &[], Accesses(&[(X1 - 2, 2, R)])),
    Row("ldtrsw x0, [x1, #4]", 0xb8804820, &[], Accesses(&[(X1 + 4, 4, R)])),
    Row("sttr x0, [x1, #-8]", 0xf81f8820, &[], Accesses(&[(X1 - 8, 8, W)])),
    Row("sttrb w0, [x1, #-1]", 0x381ff820, &[], Accesses(&[(X1 - 1, 1, W)])),
    Row("sttrh w0, [x1, #6]", 0x78006820, &[], Accesses(&[(X1 + 6, 2, W)])),

    // Prefetch.
    Row("prfm pldl1keep, [x1, #8]", 0xf9800420, &[], Accesses(&[])),
    Row("prfum pstl2strm, [x1, #-1]", 0xf89ff033, &[], Accesses(&[])),
    Row("prfm pldl3keep, [x1, x2, lsl #3]", 0xf8a27824, &[], Accesses(&[])),

    // Pairs.
    Row("ldp w0, w1, [x2, #8]", 0x29410440, &[], Accesses(&[(X2 + 8, 4, R), (X2 + 12, 4, R)])),
    Row("ldp x0, x1, [x2, #-16]", 0xa97f0440, &[], Accesses(&[(X2 - 16, 8, R), (X2 - 8, 8, R)])),
    Row("stp w0, w1, [x2, #252]", 0x291f8440, &[], Accesses(&[(X2 + 252, 4, W), (X2 + 256, 4, W)])),
    Row("stp x29, x30, [sp, #-16]!", 0xa9bf7bfd, &[], Accesses(&[(SP - 16, 8, W), (SP - 8, 8, W)])),
    Row("ldp x29, x30, [sp], #16", 0xa8c17bfd, &[], Accesses(&[(SP, 8, R), (SP + 8, 8, R)])),
    Row("stp x0, x1, [x2], #-512", 0xa8a00440, &[], Accesses(&[(X2, 8, W), (X2 + 8, 8, W)])),
    Row("ldp w0, w1, [x2, #-256]!", 0x29e00440, &[], Accesses(&[(X2 - 256, 4, R), (X2 - 252, 4, R)])),
    Row("ldpsw x0, x1, [x2, #8]", 0x69410440, &[], Accesses(&[(X2 + 8, 4, R), (X2 + 12, 4, R)])),
    Row("ldpsw x0, x1, [x2, #-8]!", 0x69ff0440, &[], Accesses(&[(X2 - 8, 4, R), (X2 - 4, 4, R)])),
    Row("ldpsw x0, x1, [x2], #8", 0x68c10440, &[], Accesses(&[(X2, 4, R), (X2 + 4, 4, R)])),
    Row("ldnp x0, x1, [x2, #16]", 0xa8410440, &[], Accesses(&[(X2 + 16, 8, R), (X2 + 24, 8, R)])),
    Row("stnp w0, w1, [x2, #-4]", 0x283f8440, &[], Accesses(&[(X2 - 4, 4, W), (X2, 4, W)])),
    Row("ldnp q0, q1, [x2, #32]", 0xac410440, &[], Accesses(&[(X2 + 32, 16, R), (X2 + 48, 16, R)])),
    Row("stnp d0, d1, [x2, #-8]", 0x6c3f8440, &[], Accesses(&[(X2 - 8, 8, W), (X2, 8, W)])),
    Row("ldnp s0, s1, [x2]", 0x2c400440, &[], Accesses(&[(X2, 4, R), (X2 + 4, 4, R)])),
    Row("ldp s0, s1, [x2, #4]", 0x2d408440, &[], Accesses(&[(X2 + 4, 4, R), (X2 + 8, 4, R)])),
    Row("stp d0, d1, [x2, #-16]!", 0x6dbf0440, &[], Accesses(&[(X2 - 16, 8, W), (X2 - 8, 8, W)])),
    Row("ldp q0, q1, [x2, #-32]!", 0xadff0440, &[], Accesses(&[(X2 - 32, 16, R), (X2 - 16, 16, R)])),
    Row("stp q0, q1, [x2], #32", 0xac810440, &[], Accesses(&[(X2, 16, W), (X2 + 16, 16, W)])),
    Row("stp q0, q1, [sp, #1008]", 0xad1f87e0, &[], Accesses(&[(SP + 1008, 16, W), (SP + 1024, 16, W)])),
    Row("stgp x0, x1, [x2, #32]", 0x69010440, &[], Accesses(&[(X2 + 32, 8, W), (X2 + 40, 8, W)])),
    Row("stgp x0, x1, [x2], #-16", 0x68bf8440, &[], Accesses(&[(X2, 8, W), (X2 + 8, 8, W)])),

    // Exclusive.
    Row("ldxrb w0, [x1]", 0x085f7c20, &[], Accesses(&[(X1, 1, R)])),
    Row("ldxrh w0, [x1]", 0x485f7c20, &[], Accesses(&[(X1, 2, R)])),
    Row("ldxr w0, [x1]", 0x885f7c20, &[], Accesses(&[(X1, 4, R)])),
    Row("ldxr x0, [sp]", 0xc85f7fe0, &[], Accesses(&[(SP, 8, R)])),
    Row("ldaxr x0, [x1]", 0xc85ffc20, &[], Accesses(&[(X1, 8, R)])),
    Row("ldaxrb w0, [x1]", 0x085ffc20, &[], Accesses(&[(X1, 1, R)])),
    Row("stxr w3, x0, [x1]", 0xc8037c20, &[], Accesses(&[(X1, 8, P)])),
    Row("stxrb w3, w0, [x1]", 0x08037c20, &[], Accesses(&[(X1, 1, P)])),
    Row("stxrh w3, w0, [x1]", 0x48037c20, &[], Accesses(&[(X1, 2, P)])),
    Row("stlxr w3, w0, [x1]", 0x8803fc20, &[], Accesses(&[(X1, 4, P)])),
    Row("stlxrh w3, w0, [x1]", 0x4803fc20, &[], Accesses(&[(X1, 2, P)])),
    Row("ldxp x0, x1, [x2]", 0xc87f0440, &[], Accesses(&[(X2, 8, R), (X2 + 8, 8, R)])),
    Row("ldxp w0, w1, [x2]", 0x887f0440, &[], Accesses(&[(X2, 4, R), (X2 + 4, 4, R)])),
    Row("ldaxp x0, x1, [x2]", 0xc87f8440, &[], Accesses(&[(X2, 8, R), (X2 + 8, 8, R)])),
    Row("stxp w3, x0, x1, [x2]", 0xc8230440, &[], Accesses(&[(X2, 8, P), (X2 + 8, 8, P)])),
    Row("stlxp w3, w0, w1, [x2]", 0x88238440, &[], Accesses(&[(X2, 4, P), (X2 + 4, 4, P)])),

    // Acquire and release.
    Row("ldar x0, [x1]", 0xc8dffc20, &[], Accesses(&[(X1, 8, R)])),
    Row("ldar w0, [x1]", 0x88dffc20, &[], Accesses(&[(X1, 4, R)])),
    Row("ldarb w0, [x1]", 0x08dffc20, &[], Accesses(&[(X1, 1, R)])),
    Row("ldarh w0, [x1]", 0x48dffc20, &[], Accesses(&[(X1, 2, R)])),
    Row("stlr x0, [x1]", 0xc89ffc20, &[], Accesses(&[(X1, 8, W)])),
    Row("stlr w0, [sp]", 0x889fffe0, &[], Accesses(&[(SP, 4, W)])),
    Row("stlrb w0, [x1]", 0x089ffc20, &[], Accesses(&[(X1, 1, W)])),
    Row("stlrh w0, [x1]", 0x489ffc20, &[], Accesses(&[(X1, 2, W)])),
    Row("ldlar x0, [x1]", 0xc8df7c20, &[], Accesses(&[(X1, 8, R)])),
    Row("stllrb w0, [x1]", 0x089f7c20, &[], Accesses(&[(X1, 1, W)])),
    Row("ldapr x0, [x1]", 0xf8bfc020, &[], Accesses(&[(X1, 8, R)])),
    Row("ldapr w0, [x1]", 0xb8bfc020, &[], Accesses(&[(X1, 4, R)])),
    Row("ldaprb w0, [x1]", 0x38bfc020, &[], Accesses(&[(X1, 1, R)])),
    Row("ldaprh w0, [x1]", 0x78bfc020, &[], Accesses(&[(X1, 2, R)])),
    Row("ldapur w0, [x1, #-4]", 0x995fc020, &[], Accesses(&[(X1 - 4, 4, R)])),
    Row("ldapur x0, [x1, #255]", 0xd94ff020, &[], Accesses(&[(X1 + 255, 8, R)])),
    Row("ldapurb w0, [x1, #-3]", 0x195fd020, &[], Accesses(&[(X1 - 3, 1, R)])),
    Row("ldapurh w0, [x1, #2]", 0x59402020, &[], Accesses(&[(X1 + 2, 2, R)])),
    Row("ldapursb x0, [x1, #1]", 0x19801020, &[], Accesses(&[(X1 + 1, 1, R)])),
    Row("ldapursb w0, [x1, #1]", 0x19c01020, &[], Accesses(&[(X1 + 1, 1, R)])),
    Row("ldapursh x0, [x1, #-256]", 0x59900020, &[], Accesses(&[(X1 - 256, 2, R)])),
    Row("ldapursw x0, [x1, #5]", 0x99805020, &[], Accesses(&[(X1 + 5, 4, R)])),
    Row("stlur x0, [sp, #8]", 0xd90083e0, &[], Accesses(&[(SP + 8, 8, W)])),
    Row("stlur w0, [x1, #-1]", 0x991ff020, &[], Accesses(&[(X1 - 1, 4, W)])),
    Row("stlurb w0, [x1, #1]", 0x19001020, &[], Accesses(&[(X1 + 1, 1, W)])),
    Row("stlurh w0, [x1, #-2]", 0x591fe020, &[], Accesses(&[(X1 - 2, 2, W)])),

    // Atomics.
    Row("ldadd x0, x1, [x2]", 0xf8200041, &[], Accesses(&[(X2, 8, R), (X2, 8, W)])),
    Row("ldaddab w0, w1, [x2]", 0x38a00041, &[], Accesses(&[(X2, 1, R), (X2, 1, W)])),
    Row("ldaddal w0, w1, [sp]", 0xb8e003e1, &[], Accesses(&[(SP, 4, R), (SP, 4, W)])),
    Row("ldclrh w0, w1, [x2]", 0x78201041, &[], Accesses(&[(X2, 2, R), (X2, 2, W)])),
    Row("ldclrl x0, x1, [x2]", 0xf8601041, &[], Accesses(&[(X2, 8, R), (X2, 8, W)])),
    Row("ldeor w0, w1, [x2]", 0xb8202041, &[], Accesses(&[(X2, 4, R), (X2, 4, W)])),
    Row("ldeoralb w0, w1, [x2]", 0x38e02041, &[], Accesses(&[(X2, 1, R), (X2, 1, W)])),
    Row("ldset x0, x1, [x2]", 0xf8203041, &[], Accesses(&[(X2, 8, R), (X2, 8, W)])),
    Row("ldsetah w0, w1, [x2]", 0x78a03041, &[], Accesses(&[(X2, 2, R), (X2, 2, W)])),
    Row("ldsmax w0, w1, [x2]", 0xb8204041, &[], Accesses(&[(X2, 4, R), (X2, 4, W)])),
    Row("ldsmin x0, x1, [x2]", 0xf8205041, &[], Accesses(&[(X2, 8, R), (X2, 8, W)])),
    Row("ldumax w0, w1, [x2]", 0xb8206041, &[], Accesses(&[(X2, 4, R), (X2, 4, W)])),
    Row("lduminb w0, w1, [x2]", 0x38207041, &[], Accesses(&[(X2, 1, R), (X2, 1, W)])),
    Row("stadd w0, [x2]", 0xb820005f, &[], Accesses(&[(X2, 4, R), (X2, 4, W)])),
    Row("stsetlh w0, [x2]", 0x7860305f, &[], Accesses(&[(X2, 2, R), (X2, 2, W)])),
    Row("swp x0, x1, [x2]", 0xf8208041, &[], Accesses(&[(X2, 8, R), (X2, 8, W)])),
    Row("swpalb w0, w1, [x2]", 0x38e08041, &[], Accesses(&[(X2, 1, R), (X2, 1, W)])),
    Row("swph w0, w1, [x2]", 0x78208041, &[], Accesses(&[(X2, 2, R), (X2, 2, W)])),
    Row("cas x0, x1, [x2]", 0xc8a07c41, &[], Accesses(&[(X2, 8, R), (X2, 8, P)])),
    Row("casb w0, w1, [x2]", 0x08a07c41, &[], Accesses(&[(X2, 1, R), (X2, 1, P)])),
    Row("casah w0, w1, [x2]", 0x48e07c41, &[], Accesses(&[(X2, 2, R), (X2, 2, P)])),
    Row("casal w0, w1, [sp]", 0x88e0ffe1, &[], Accesses(&[(SP, 4, R), (SP, 4, P)])),
    Row("casl x0, x1, [x2]", 0xc8a0fc41, &[], Accesses(&[(X2, 8, R), (X2, 8, P)])),
    Row("casp x0, x1, x2, x3, [x4]", 0x48207c82, &[], Accesses(&[(X4, 8, R), (X4 + 8, 8, R), (X4, 8, P), (X4 + 8, 8, P)])),
    Row("caspal w0, w1, w2, w3, [x4]", 0x0860fc82, &[], Accesses(&[(X4, 4, R), (X4 + 4, 4, R), (X4, 4, P), (X4 + 4, 4, P)])),
    Row("ld64b x0, [x1]", 0xf83fd020, &[], Accesses(&[(X1, 64, R)])),
    Row("st64b x2, [x1]", 0xf83f9022, &[], Accesses(&[(X1, 64, W)])),
    Row("st64bv x3, x4, [x1]", 0xf823b024, &[], Accesses(&[(X1, 64, P)])),
    Row("st64bv0 x3, x22, [x1]", 0xf823a036, &[], Accesses(&[(X1, 64, P)])),

    // SIMD multiple structures.
    Row("ld1 {v0.16b}, [x0]", 0x4c407000, &[], Accesses(&[(X0, 16, R)])),
    Row("ld1 {v0.8b}, [x0]", 0x0c407000, &[], Accesses(&[(X0, 8, R)])),
    Row("ld1 {v0.4s, v1.4s}, [x0]", 0x4c40a800, &[], Accesses(&[(X0, 32, R)])),
    Row("ld1 {v0.2d, v1.2d, v2.2d}, [x0]", 0x4c406c00, &[], Accesses(&[(X0, 48, R)])),
    Row("ld1 {v0.1d, v1.1d, v2.1d, v3.1d}, [x0]", 0x0c402c00, &[], Accesses(&[(X0, 32, R)])),
    Row("ld1 {v0.16b, v1.16b, v2.16b, v3.16b}, [sp]", 0x4c4023e0, &[], Accesses(&[(SP, 64, R)])),
    Row("ld2 {v0.8h, v1.8h}, [x0]", 0x4c408400, &[], Accesses(&[(X0, 32, R)])),
    Row("ld2 {v0.4h, v1.4h}, [x0]", 0x0c408400, &[], Accesses(&[(X0, 16, R)])),
    Row("ld3 {v0.4s, v1.4s, v2.4s}, [x0]", 0x4c404800, &[], Accesses(&[(X0, 48, R)])),
    Row("ld3 {v0.8b, v1.8b, v2.8b}, [x0]", 0x0c404000, &[], Accesses(&[(X0, 24, R)])),
    Row("ld4 {v0.2d, v1.2d, v2.2d, v3.2d}, [x0]", 0x4c400c00, &[], Accesses(&[(X0, 64, R)])),
    Row("ld4 {v0.2s, v1.2s, v2.2s, v3.2s}, [x0]", 0x0c400800, &[], Accesses(&[(X0, 32, R)])),
    Row("st1 {v0.2d}, [x0]", 0x4c007c00, &[], Accesses(&[(X0, 16, W)])),
    Row("st1 {v0.1d, v1.1d}, [x0]", 0x0c00ac00, &[], Accesses(&[(X0, 16, W)])),
    Row("st1 {v0.8h, v1.8h, v2.8h}, [x0]", 0x4c006400, &[], Accesses(&[(X0, 48, W)])),
    Row("st1 {v0.4s, v1.4s, v2.4s, v3.4s}, [x0]", 0x4c002800, &[], Accesses(&[(X0, 64, W)])),
    Row("st2 {v0.4s, v1.4s}, [x0]", 0x4c008800, &[], Accesses(&[(X0, 32, W)])),
    Row("st3 {v0.16b, v1.16b, v2.16b}, [x0]", 0x4c004000, &[], Accesses(&[(X0, 48, W)])),
    Row("st4 {v0.8b, v1.8b, v2.8b, v3.8b}, [x0]", 0x0c000000, &[], Accesses(&[(X0, 32, W)])),
    Row("ld1 {v0.16b}, [x0], #16", 0x4cdf7000, &[], Accesses(&[(X0, 16, R)])),
    Row("ld4 {v0.16b, v1.16b, v2.16b, v3.16b}, [x0], #64", 0x4cdf0000, &[], Accesses(&[(X0, 64, R)])),
    Row("ld2 {v0.2s, v1.2s}, [x0], x5", 0x0cc58800, &[], Accesses(&[(X0, 16, R)])),
    Row("st1 {v0.4s, v1.4s}, [x0], x5", 0x4c85a800, &[], Accesses(&[(X0, 32, W)])),
    Row("st3 {v0.4h, v1.4h, v2.4h}, [x0], #24", 0x0c9f4400, &[], Accesses(&[(X0, 24, W)])),

    // SIMD single structures.
    Row("ld1 {v0.b}[15], [x0]", 0x4d401c00, &[], Accesses(&[(X0, 1, R)])),
    Row("ld1 {v0.h}[3], [x0]", 0x0d405800, &[], Accesses(&[(X0, 2, R)])),
    Row("ld1 {v0.s}[1], [x0]", 0x0d409000, &[], Accesses(&[(X0, 4, R)])),
    Row("ld1 {v0.d}[1], [x0]", 0x4d408400, &[], Accesses(&[(X0, 8, R)])),
    Row("ld2 {v0.s, v1.s}[3], [x0]", 0x4d609000, &[], Accesses(&[(X0, 8, R)])),
    Row("ld3 {v0.h, v1.h, v2.h}[7], [x0]", 0x4d407800, &[], Accesses(&[(X0, 6, R)])),
    Row("ld4 {v0.d, v1.d, v2.d, v3.d}[0], [x0]", 0x0d60a400, &[], Accesses(&[(X0, 32, R)])),
    Row("ld4 {v0.b, v1.b, v2.b, v3.b}[9], [x0]", 0x4d602400, &[], Accesses(&[(X0, 4, R)])),
    Row("st1 {v0.d}[0], [x0]", 0x0d008400, &[], Accesses(&[(X0, 8, W)])),
    Row("st2 {v0.b, v1.b}[1], [x0]", 0x0d200400, &[], Accesses(&[(X0, 2, W)])),
    Row("st3 {v0.s, v1.s, v2.s}[2], [x0]", 0x4d00a000, &[], Accesses(&[(X0, 12, W)])),
    Row("st4 {v0.h, v1.h, v2.h, v3.h}[5], [x0]", 0x4d206800, &[], Accesses(&[(X0, 8, W)])),
    Row("ld1 {v0.s}[0], [x0], #4", 0x0ddf8000, &[], Accesses(&[(X0, 4, R)])),
    Row("st4 {v0.s, v1.s, v2.s, v3.s}[1], [x0], x9", 0x0da9b000, &[], Accesses(&[(X0, 16, W)])),
    Row("ld1r {v0.4s}, [x0]", 0x4d40c800, &[], Accesses(&[(X0, 4, R)])),
    Row("ld1r {v0.16b}, [x0]", 0x4d40c000, &[], Accesses(&[(X0, 1, R)])),
    Row("ld2r {v0.2d, v1.2d}, [x0]", 0x4d60cc00, &[], Accesses(&[(X0, 16, R)])),
    Row("ld3r {v0.8h, v1.8h, v2.8h}, [x0]", 0x4d40e400, &[], Accesses(&[(X0, 6, R)])),
    Row("ld4r {v0.1d, v1.1d, v2.1d, v3.1d}, [x0]", 0x0d60ec00, &[], Accesses(&[(X0, 32, R)])),
    Row("ld4r {v0.8b, v1.8b, v2.8b, v3.8b}, [x0], #4", 0x0dffe000, &[], Accesses(&[(X0, 4, R)])),
    Row("ld2r {v0.4h, v1.4h}, [x0], x3", 0x0de3c400, &[], Accesses(&[(X0, 4, R)])),

    // System.
    Row("dc zva, x3", 0xd50b7423, &[(3, 0x12345)], Accesses(&[(0x12340, 64, W)])),
    Row("dc gzva, x3", 0xd50b7483, &[(3, 0x12345)], Accesses(&[(0x12340, 64, W)])),
    Row("dc civac, x3", 0xd50b7e23, &[(3, 0x12345)], Accesses(&[])),
    Row("dc cvac, x3", 0xd50b7a23, &[(3, 0x12345)], Accesses(&[])),
    Row("dc cvau, x3", 0xd50b7b23, &[(3, 0x12345)], Accesses(&[])),
    Row("dc cvap, x3", 0xd50b7c23, &[(3, 0x12345)], Accesses(&[])),
    Row("ic ivau, x3", 0xd50b7523, &[(3, 0x12345)], Accesses(&[])),

    // No memory access.
    Row("add x0, x1, x2", 0x8b020020, &[], Accesses(&[])),
    Row("b .+8", 0x14000002, &[], Accesses(&[])),
    Row("bl .-4", 0x97ffffff, &[], Accesses(&[])),
    Row("ret", 0xd65f03c0, &[], Accesses(&[])),
    Row("svc #0", 0xd4000001, &[], Accesses(&[])),
    Row("mrs x0, tpidr_el0", 0xd53bd040, &[], Accesses(&[])),
    Row("nop", 0xd503201f, &[], Accesses(&[])),
    Row("dmb ish", 0xd5033bbf, &[], Accesses(&[])),
    Row("fadd v0.4s, v1.4s, v2.4s", 0x4e22d420, &[], Accesses(&[])),
    Row("adrp x0, .+0x1000", 0x90000000, &[], Accesses(&[])),
    Row("udf #0", 0x00000000, &[], Accesses(&[])),
    Row("add z0.s, z1.s, z2.s", 0x04a20020, &[], Accesses(&[])),

    // Not modelled.
    Row("ld1b {z0.b}, p0/z, [x0]", 0xa400a000, &[], Unsupported("SVE")),
    Row("st1d {z0.d}, p0, [x0, z1.d, lsl #3]", 0xe5a1a000, &[], Unsupported("SVE")),
    Row("ldr za[w12, 0], [x0]", 0xe1000000, &[], Unsupported("SME")),
    Row("ldraa x0, [x1, #8]", 0xf8201420, &[], Unsupported("pointer-authenticated")),
    Row("stzg x0, [x1]", 0xd9600820, &[], Unsupported("memory tag")),
    Row("ldg x0, [x1]", 0xd9600020, &[], Unsupported("memory tag")),
    Row("cpyfp [x0]!, [x1]!, x2!", 0x19010440, &[], Unsupported("copy and set")),
    Row("setp [x0]!, x1!, x2", 0x19c20420, &[], Unsupported("copy and set")),
    Row("dc gva, x3", 0xd50b7463, &[], Unsupported("allocation tags")),
    Row("sysl x0, #3, c7, c4, #1", 0xd52b7420, &[], Unsupported("SYSL")),
];

/// Returns what is wrong with the decoder's outcome for `row`, or `None` if it matches.
fn check(row: &Row) -> Option<String> {
    let Row(asm, word, overrides, expect) = row;
    let regs = regs_with(overrides);
    let decoded = decode_aarch64(&word.to_le_bytes(), &regs);
    let mnemonic = asm.split_whitespace().next().unwrap_or_default();
    match (decoded, expect) {
        (Decoded::Instruction(instruction), Accesses(expected)) => {
            let expected: Vec<Access> = expected
                .iter()
                .map(|&(addr, size, kind)| Access { addr, size, kind })
                .collect();
            // Capstone 5 does not know STGP, so its text falls back to the word.
            let text_matches = instruction.text.split_whitespace().next() == Some(mnemonic)
                || (mnemonic == "stgp" && instruction.text == format!(".inst {word:#010x}"));
            if instruction.len != 4 {
                Some(format!("length {}, expected 4", instruction.len))
            } else if !text_matches {
                Some(format!(
                    "text {:?} does not start with {mnemonic:?}",
                    instruction.text
                ))
            } else if instruction.accesses != expected {
                Some(format!(
                    "accesses {:x?}, expected {expected:x?}",
                    instruction.accesses
                ))
            } else {
                None
            }
        }
        (Decoded::Unsupported(unsupported), Unsupported(reason)) => {
            if unsupported.addr != PC {
                Some(format!(
                    "unsupported at {:#x}, expected the pc {PC:#x}",
                    unsupported.addr
                ))
            } else if !unsupported.reason.contains(reason) {
                Some(format!(
                    "reason {:?} does not mention {reason:?}",
                    unsupported.reason
                ))
            } else {
                None
            }
        }
        (decoded, _) => Some(format!("unexpected outcome {decoded:x?}")),
    }
}

#[test]
fn table_rows_decode_exactly() {
    let failures: Vec<String> = ROWS
        .iter()
        .filter_map(|row| {
            check(row).map(|failure| format!("{} ({:#010x}): {failure}", row.0, row.1))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        ROWS.len(),
        failures.join("\n")
    );
}

fn decode_word(word: u32, regs: &Aarch64Registers) -> Decoded {
    decode_aarch64(&word.to_le_bytes(), regs)
}

fn accesses(decoded: Decoded) -> Vec<Access> {
    match decoded {
        Decoded::Instruction(instruction) => instruction.accesses,
        other => panic!("expected a decoded instruction, got {other:?}"),
    }
}

fn unsupported_reason(decoded: Decoded) -> String {
    match decoded {
        Decoded::Unsupported(unsupported) => unsupported.reason,
        other => panic!("expected an unsupported instruction, got {other:?}"),
    }
}

/// `ldr x0, [x1]`
const LDR_X0_X1: u32 = 0xf940_0020;

#[test]
fn tagged_pointer_loses_its_tag() {
    let regs = regs_with(&[(1, 0x5a00_0000_0002_0000)]);
    assert_eq!(
        accesses(decode_word(LDR_X0_X1, &regs)),
        [Access {
            addr: 0x2_0000,
            size: 8,
            kind: R
        }]
    );
}

#[test]
fn tagged_upper_half_address_is_sign_extended() {
    let regs = regs_with(&[(1, 0x0080_0000_0000_1000)]);
    assert_eq!(
        accesses(decode_word(LDR_X0_X1, &regs)),
        [Access {
            addr: 0xff80_0000_0000_1000,
            size: 8,
            kind: R
        }]
    );
}

#[test]
fn negative_offset_wraps_below_zero() {
    // ldur x0, [x1, #-8]
    let regs = regs_with(&[(1, 0)]);
    assert_eq!(
        accesses(decode_word(0xf85f_8020, &regs)),
        [Access {
            addr: u64::MAX - 7,
            size: 8,
            kind: R
        }]
    );
}

#[test]
fn pair_straddling_the_top_wraps() {
    // ldp x0, x1, [x2]
    let regs = regs_with(&[(2, u64::MAX - 7)]);
    let expected = [
        Access {
            addr: u64::MAX - 7,
            size: 8,
            kind: R,
        },
        Access {
            addr: 0,
            size: 8,
            kind: R,
        },
    ];
    assert_eq!(accesses(decode_word(0xa940_0440, &regs)), expected);
}

/// `dc zva, x3`
const DC_ZVA_X3: u32 = 0xd50b_7423;

#[test]
fn dc_zva_uses_the_given_block_size() {
    for (block_size, start) in [(4, 0x12344), (64, 0x12340), (128, 0x12300), (2048, 0x12000)] {
        let regs = Aarch64Registers {
            dczva_block_size: block_size,
            ..regs_with(&[(3, 0x12345)])
        };
        let expected = [Access {
            addr: start,
            size: block_size,
            kind: W,
        }];
        assert_eq!(
            accesses(decode_word(DC_ZVA_X3, &regs)),
            expected,
            "block size {block_size}"
        );
    }
}

#[test]
fn dc_zva_rejects_invalid_block_sizes() {
    for block_size in [0, 2, 48, 4096, u32::MAX] {
        let regs = Aarch64Registers {
            dczva_block_size: block_size,
            ..base_regs()
        };
        let reason = unsupported_reason(decode_word(DC_ZVA_X3, &regs));
        assert!(
            reason.contains("block size"),
            "block size {block_size}: {reason}"
        );
    }
}

#[test]
fn dc_zva_with_xzr_zeroes_the_first_block() {
    // dc zva, xzr
    let expected = [Access {
        addr: 0,
        size: 64,
        kind: W,
    }];
    assert_eq!(accesses(decode_word(0xd50b_743f, &base_regs())), expected);
}

#[test]
fn default_dc_zva_block_size_is_64() {
    assert_eq!(Aarch64Registers::default().dczva_block_size, 64);
}

#[test]
fn constrained_unpredictable_encoding_still_decodes() {
    // ldxr x0, [x1] with Rs = 0 where the Arm ARM specifies should-be-one bits: capstone rejects it, but a
    // core that faults on it is loading from x1.
    let decoded = decode_word(0xc840_7c20, &base_regs());
    let Decoded::Instruction(instruction) = decoded else {
        panic!("expected an instruction, got {decoded:?}")
    };
    assert_eq!(instruction.text, ".inst 0xc8407c20");
    assert_eq!(
        instruction.accesses,
        [Access {
            addr: X1,
            size: 8,
            kind: R
        }]
    );
}

#[test]
fn unallocated_load_store_is_unsupported() {
    // LDR (literal) with V = 1 and opc = 11 is unallocated.
    let reason = unsupported_reason(decode_word(0xdc00_0000, &base_regs()));
    assert!(reason.contains("not a valid"), "{reason}");
}

#[test]
fn truncated_bytes_are_unsupported() {
    for code in [&[][..], &[0x20][..], &[0x20, 0x00, 0x40][..]] {
        let decoded = decode_aarch64(code, &base_regs());
        let Decoded::Unsupported(unsupported) = decoded else {
            panic!("expected unsupported, got {decoded:?}")
        };
        assert_eq!(unsupported.addr, PC);
        assert!(
            unsupported.reason.contains("fewer than 4"),
            "{}",
            unsupported.reason
        );
    }
}

#[test]
fn bytes_after_the_first_word_are_ignored() {
    let mut code = LDR_X0_X1.to_le_bytes().to_vec();
    code.extend_from_slice(&[0xff; 4]);
    let decoded = decode_aarch64(&code, &base_regs());
    let Decoded::Instruction(instruction) = decoded else {
        panic!("expected an instruction, got {decoded:?}")
    };
    assert_eq!(instruction.len, 4);
    assert_eq!(instruction.text, "ldr x0, [x1]");
}

#[test]
fn registers_round_trip_through_json() {
    let regs = regs_with(&[(30, 0xdead_beef), (SP_INDEX, 0x1234)]);
    let json = serde_json::to_string(&regs).expect("registers serialise");
    let back: Aarch64Registers = serde_json::from_str(&json).expect("registers deserialise");
    assert_eq!(back, regs);
}

#[test]
fn missing_block_size_deserialises_as_64() {
    let x = vec![0u64; 31];
    let json = serde_json::json!({ "x": x, "sp": 1, "pc": 2 });
    let regs: Aarch64Registers = serde_json::from_value(json).expect("registers deserialise");
    assert_eq!(regs.dczva_block_size, 64);
}

fn any_registers() -> impl Strategy<Value = Aarch64Registers> {
    (
        prop::array::uniform31(any::<u64>()),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(x, sp, pc, dczva_block_size)| Aarch64Registers {
            x,
            sp,
            pc,
            dczva_block_size,
        })
}

/// Words biased towards the loads-and-stores group (op1 = x1x0), where most of the decoding
/// happens, with fully random words mixed in.
fn any_word() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        any::<u32>().prop_map(|word| (word | 0x0800_0000) & !0x0200_0000)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn arbitrary_words_never_panic(word in any_word(), regs in any_registers()) {
        match decode_word(word, &regs) {
            Decoded::Instruction(instruction) => {
                prop_assert_eq!(instruction.len, 4);
                prop_assert!(!instruction.text.is_empty());
                for access in &instruction.accesses {
                    prop_assert!(access.size > 0 && access.size <= 2048, "{:?}", access);
                }
            }
            Decoded::Unsupported(unsupported) => {
                prop_assert_eq!(unsupported.addr, regs.pc);
                prop_assert!(!unsupported.reason.is_empty());
            }
            Decoded::NeedsVectorRegisters => prop_assert!(false, "AArch64 never needs vector registers"),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(code in prop::collection::vec(any::<u8>(), 0..8), regs in any_registers()) {
        let _ = decode_aarch64(&code, &regs);
    }
}
