//! Fuzzes the x86-64 decoder with arbitrary instruction bytes, registers and vector
//! registers, and compares every decoded instruction with capstone.
//!
//! Run from the repository root (nightly toolchain and `cargo install cargo-fuzz`):
//!
//! ```text
//! fuzz/seed_corpus.sh
//! cargo +nightly fuzz run decode_x86 -- -max_total_time=600
//! ```
//!
//! Input layout: one byte `n`, then `n % 15 + 1` instruction bytes (fewer if the input ends
//! first), then the opmask registers, the general-purpose registers and the vector registers,
//! read with `arbitrary` and zero where the input runs out. The corpus seeds are therefore
//! just a length byte and one instruction.
//!
//! Properties checked, besides the absence of panics:
//! - `decode_x86_64_with_vectors` never returns `NeedsVectorRegisters`;
//! - when `decode_x86_64` decodes an instruction without vector registers, the decoder
//!   returns the same result when given them;
//! - a decoded instruction is at most 15 bytes long and no longer than the input;
//! - the comparison with capstone has no unresolved disagreement, by the same rules and
//!   resolution table as `tests/decode_differential.rs`.

#![no_main]

#[path = "../../tests/differential/compare.rs"]
mod compare;
#[path = "../../tests/differential/resolutions.rs"]
mod resolutions;

use arbitrary::{Arbitrary, Unstructured};
use ffitrace::decode::{decode_x86_64, decode_x86_64_with_vectors, Decoded};
use ffitrace::regs::{Registers, VectorRegisters};
use libfuzzer_sys::fuzz_target;

use compare::{Comparer, MAX_INSTRUCTION_LEN};

thread_local! {
    static COMPARER: Comparer = Comparer::new();
}

/// Splits the fuzzer's input into instruction bytes, registers and vector registers.
fn split_input(data: &[u8]) -> Option<(&[u8], Registers, VectorRegisters)> {
    let (&length, rest) = data.split_first()?;
    let length = (usize::from(length) % MAX_INSTRUCTION_LEN + 1).min(rest.len());
    let (code, tail) = rest.split_at(length);
    if code.is_empty() {
        return None;
    }

    let mut u = Unstructured::new(tail);
    let k = <[u64; 8]>::arbitrary(&mut u).unwrap_or_default();
    let regs = registers(&mut u);
    let zmm = (0..32).map(|_| <[u64; 8]>::arbitrary(&mut u).unwrap_or_default()).collect();
    Some((code, regs, VectorRegisters { zmm, k }))
}

/// Reads every field of `Registers`, in `user_regs_struct` order.
fn registers(u: &mut Unstructured<'_>) -> Registers {
    let mut next = || u64::arbitrary(u).unwrap_or_default();
    Registers {
        r15: next(),
        r14: next(),
        r13: next(),
        r12: next(),
        rbp: next(),
        rbx: next(),
        r11: next(),
        r10: next(),
        r9: next(),
        r8: next(),
        rax: next(),
        rcx: next(),
        rdx: next(),
        rsi: next(),
        rdi: next(),
        orig_rax: next(),
        rip: next(),
        cs: next(),
        eflags: next(),
        rsp: next(),
        ss: next(),
        fs_base: next(),
        gs_base: next(),
        ds: next(),
        es: next(),
        fs: next(),
        gs: next(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((code, regs, vectors)) = split_input(data) else {
        return;
    };

    let plain = decode_x86_64(code, &regs);
    let with_vectors = decode_x86_64_with_vectors(code, &regs, &vectors);
    assert!(
        with_vectors != Decoded::NeedsVectorRegisters,
        "decode_x86_64_with_vectors asked for vector registers: {}",
        compare::hex(code)
    );
    if let Decoded::Instruction(instr) = &plain {
        assert_eq!(
            Decoded::Instruction(instr.clone()),
            with_vectors,
            "the vector registers changed the accesses of an instruction that did not need \
             them: {}",
            compare::hex(code)
        );
        assert!(instr.len <= code.len().min(MAX_INSTRUCTION_LEN), "length {} out of range", instr.len);
    }

    COMPARER.with(|comparer| {
        let comparison = comparer.compare(code, &regs, &vectors);
        assert!(comparison.is_consistent(), "unresolved disagreement with capstone:\n{comparison}");
    });
});
