//! One real-process test per x86-64 instruction family. Each test calls functions of the
//! fixtures in `tests/fixtures/forms_*.c` through `ffitrace call ... --json` and checks the
//! exact ordered accesses, every buffer's bytes after the call and the return value.
//!
//! The fixtures are written in assembly, and a comment beside each instruction gives the
//! access it makes. The expected offsets here follow from that layout, not from the tool's
//! output. The fixtures are compiled with gcc on first use.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const SCALAR: &str = "forms_scalar";
const STRING: &str = "forms_string";
const VECTOR: &str = "forms_vector";
const AVX512: &str = "forms_avx512";
const UNSUPPORTED: &str = "forms_unsupported";

/// One access line: kind, buffer, offset, size and, for a write, whether it is certain.
type Access = (&'static str, u64, i64, u64, Option<bool>);

fn read(buffer: u64, offset: i64, size: u64) -> Access {
    ("read", buffer, offset, size, None)
}

fn write(buffer: u64, offset: i64, size: u64) -> Access {
    ("write", buffer, offset, size, Some(true))
}

/// What one `ffitrace call --json` run printed.
struct Call {
    status: Option<i32>,
    stderr: String,
    accesses: Vec<Access>,
    /// Each buffer's address and its bytes after the call, by buffer index.
    buffers: Vec<(u64, Vec<u8>)>,
    returned: Option<u64>,
}

impl Call {
    fn bytes(&self, buffer: usize) -> &[u8] {
        &self.buffers[buffer].1
    }
}

/// Builds the fixture libraries once per test run and returns the path of `name`.
fn fixture(name: &str) -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("forms-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let libraries: [(&str, &[&str]); 5] = [
            (SCALAR, &[]),
            (STRING, &[]),
            (VECTOR, &["-mavx2"]),
            (AVX512, &["-mavx512f", "-mavx512bw", "-mavx512vl"]),
            (UNSUPPORTED, &[]),
        ];
        for (source, flags) in libraries {
            let c_file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(format!("{source}.c"));
            let library = dir.join(format!("{source}.so"));
            let status = Command::new("gcc")
                .args(["-O2", "-shared", "-fPIC"])
                .args(flags)
                .arg("-o")
                .arg(&library)
                .arg(&c_file)
                .status();
            assert!(
                status.unwrap().success(),
                "gcc failed on {}",
                c_file.display()
            );
        }
        dir
    });
    dir.join(format!("{name}.so"))
        .to_string_lossy()
        .into_owned()
}

/// Runs `ffitrace call LIBRARY SYMBOL ARGS... --json` and parses what it printed.
fn run(library: &str, symbol: &str, args: &[&str]) -> Call {
    let output = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .args(["call", &fixture(library), symbol])
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{error}: {line}")))
        .collect();
    let mut call = Call {
        status: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        accesses: Vec::new(),
        buffers: Vec::new(),
        returned: None,
    };
    for line in &lines {
        match line["kind"].as_str() {
            Some("read") => call.accesses.push(access("read", line)),
            Some("write") => call.accesses.push(access("write", line)),
            Some("buffer") => {
                assert_eq!(
                    line["index"].as_u64(),
                    Some(call.buffers.len() as u64),
                    "{line}"
                );
                let addr = line["addr"].as_str().unwrap().trim_start_matches("0x");
                let bytes = line["bytes"].as_str().unwrap();
                call.buffers
                    .push((u64::from_str_radix(addr, 16).unwrap(), unhex(bytes)));
            }
            Some("return") => call.returned = line["value"].as_u64(),
            _ => panic!("unexpected line {line}"),
        }
    }
    call
}

/// Runs like [`run`] and requires a complete trace: exit status 0 and nothing on stderr.
fn traced(library: &str, symbol: &str, args: &[&str]) -> Call {
    let call = run(library, symbol, args);
    assert_eq!(call.status, Some(0), "{symbol} {args:?}: {}", call.stderr);
    assert_eq!(call.stderr, "", "{symbol} {args:?}");
    call
}

fn access(kind: &'static str, line: &Value) -> Access {
    let buffer = line["buffer"]
        .as_u64()
        .unwrap_or_else(|| panic!("access outside every buffer: {line}"));
    (
        kind,
        buffer,
        line["offset"].as_i64().unwrap(),
        line["size"].as_u64().unwrap(),
        line["certain"].as_bool(),
    )
}

/// Formats the argument for a traced buffer that starts out as `bytes`.
fn buffer(bytes: &[u8]) -> String {
    format!("buf:{}={}", bytes.len(), hex(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Copies `bytes` into `memory` at `offset`.
fn put(memory: &mut [u8], offset: usize, bytes: &[u8]) {
    memory[offset..offset + bytes.len()].copy_from_slice(bytes);
}

/// Bytes 0, 1, 2, ... up to `len`, so that every offset contains a different value.
fn counting(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

fn qword(bytes: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(bytes[offset..offset + 8].try_into().unwrap())
}

/// Returns true when this CPU has `feature`, and otherwise prints that the test is skipped.
fn cpu_has(feature: &str, available: bool) -> bool {
    if !available {
        eprintln!("skipped: this CPU lacks {feature}");
    }
    available
}

#[test]
fn mov_scaled_index_loads_and_stores() {
    let mut before = vec![0u8; 72];
    before[4] = 0x11;
    put(&mut before, 8, &0x2200u16.to_le_bytes());
    put(&mut before, 16, &0x0033_0000u32.to_le_bytes());
    put(&mut before, 32, &0x4400_0000_0000_0000u64.to_le_bytes());
    let sum: u64 = 0x4400_0000_0033_2211;

    let call = traced(SCALAR, "forms_mov", &[&buffer(&before)]);
    assert_eq!(
        call.accesses,
        [
            read(0, 4, 1),
            read(0, 8, 2),
            read(0, 16, 4),
            read(0, 32, 8),
            write(0, 40, 1),
            write(0, 48, 2),
            write(0, 56, 4),
            write(0, 64, 8),
            write(0, 0, 8),
        ]
    );
    let mut after = before.clone();
    put(&mut after, 40, &sum.to_le_bytes()[..1]);
    put(&mut after, 48, &sum.to_le_bytes()[..2]);
    put(&mut after, 56, &sum.to_le_bytes()[..4]);
    put(&mut after, 64, &sum.to_le_bytes());
    put(&mut after, 0, &sum.to_le_bytes());
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(sum));
}

#[test]
fn read_modify_write_reads_then_writes() {
    let mut before = vec![0u8; 72];
    put(&mut before, 0, &0x10u32.to_le_bytes());
    before[4] = 0x01;
    put(&mut before, 6, &0x1234u16.to_le_bytes());
    put(&mut before, 8, &0x0123_4567_89ab_cdefu64.to_le_bytes());
    put(&mut before, 16, &0x0000_ffffu32.to_le_bytes());
    put(&mut before, 24, &5u64.to_le_bytes());
    before[32] = 0xff;
    put(&mut before, 40, &0x10u64.to_le_bytes());
    put(&mut before, 48, &0x0010u16.to_le_bytes());
    put(&mut before, 52, &0xffff_ffffu32.to_le_bytes());
    put(&mut before, 56, &0xaabb_ccddu32.to_le_bytes());
    put(&mut before, 60, &20u32.to_le_bytes());
    put(&mut before, 64, &1000u64.to_le_bytes());
    let xor_operand = 0xff00_ff00_ff00_ff00u64;

    let call = traced(
        SCALAR,
        "forms_rmw",
        &[&buffer(&before), &format!("{xor_operand:#x}")],
    );
    let both = |offset, size| [read(0, offset, size), write(0, offset, size)];
    let expected: Vec<Access> = [
        both(0, 4),
        both(4, 1),
        both(6, 2),
        both(8, 8),
        both(16, 4),
        both(24, 8),
        both(32, 1),
        both(40, 8),
        both(48, 2),
        both(52, 4),
        both(56, 4),
        both(60, 4),
        both(64, 8),
    ]
    .concat();
    assert_eq!(call.accesses, expected);

    let mut after = before.clone();
    put(&mut after, 0, &0x15u32.to_le_bytes());
    after[4] = 0x81;
    put(&mut after, 6, &0x0230u16.to_le_bytes());
    put(
        &mut after,
        8,
        &(0x0123_4567_89ab_cdefu64 ^ xor_operand).to_le_bytes(),
    );
    put(&mut after, 16, &0xffff_0000u32.to_le_bytes());
    put(&mut after, 24, &5u64.wrapping_neg().to_le_bytes());
    after[32] = 0x00;
    put(&mut after, 40, &0x17u64.to_le_bytes());
    put(&mut after, 48, &0x0111u16.to_le_bytes());
    put(&mut after, 52, &0u32.to_le_bytes());
    put(&mut after, 56, &0x1122_3344u32.to_le_bytes());
    put(&mut after, 60, &30u32.to_le_bytes());
    put(&mut after, 64, &1100u64.to_le_bytes());
    assert_eq!(call.bytes(0), after);
    // The old values: 0xaabbccdd from XCHG, 20 and 1000 from the two XADDs.
    assert_eq!(call.returned, Some(0xaabb_ccdd + 20 + 1000));
}

#[test]
fn cmpxchg_writes_whether_it_succeeds_or_fails() {
    let mut before = vec![0u8; 48];
    put(&mut before, 0, &5u32.to_le_bytes());
    put(&mut before, 4, &7u32.to_le_bytes());
    put(&mut before, 8, &0x0000_0002_0000_0001u64.to_le_bytes());
    put(&mut before, 16, &0x33u64.to_le_bytes());
    put(&mut before, 24, &0x44u64.to_le_bytes());
    put(&mut before, 32, &0x55u64.to_le_bytes());
    put(&mut before, 40, &0x66u64.to_le_bytes());

    let call = traced(SCALAR, "forms_cmpxchg", &[&buffer(&before)]);
    // The destination gets a write cycle in both outcomes. A failed compare writes back the
    // value it read.
    assert_eq!(
        call.accesses,
        [
            read(0, 0, 4),
            write(0, 0, 4),
            read(0, 4, 4),
            write(0, 4, 4),
            read(0, 8, 8),
            write(0, 8, 8),
            read(0, 16, 16),
            write(0, 16, 16),
            read(0, 32, 16),
            write(0, 32, 16),
        ]
    );
    let mut after = before.clone();
    put(&mut after, 0, &9u32.to_le_bytes());
    put(&mut after, 8, &0x0000_cccc_0000_bbbbu64.to_le_bytes());
    put(&mut after, 32, &0x77u64.to_le_bytes());
    put(&mut after, 40, &0x88u64.to_le_bytes());
    assert_eq!(call.bytes(0), after);
    // ZF is set, clear, set, clear and set. Above it are the values that the two failed
    // compares loaded, EAX = 7 and RDX = 0x44.
    assert_eq!(call.returned, Some(0b10101 | 7 << 8 | 0x44 << 16));
}

#[test]
fn push_pop_call_and_jmp_through_memory() {
    let first = 0x0807_0605_0403_0201u64;
    let mut before = vec![0u8; 32];
    put(&mut before, 0, &first.to_le_bytes());

    let call = traced(SCALAR, "forms_indirect", &[&buffer(&before)]);
    // The pushes, the pop's stack read and the return address of the call go to the
    // thread's own stack, which is not traced.
    assert_eq!(
        call.accesses,
        [
            write(0, 16, 8),
            write(0, 24, 8),
            read(0, 0, 8),
            write(0, 8, 8),
            read(0, 16, 8),
            read(0, 24, 8)
        ]
    );
    let after = call.bytes(0);
    assert_eq!(qword(after, 0), first);
    assert_eq!(qword(after, 8), first);
    // The jump target follows the call target, `mov eax, 0x42` (5 bytes) and `ret` (1 byte).
    assert_ne!(qword(after, 16), 0);
    assert_eq!(qword(after, 24).wrapping_sub(qword(after, 16)), 6);
    assert_eq!(call.returned, Some(0x1042));
}

#[test]
fn xlatb_reads_the_byte_at_al() {
    let table: Vec<u8> = (0..16).map(|i| 0x30 + i).collect();
    let call = traced(SCALAR, "forms_xlatb", &[&buffer(&table), "7"]);
    assert_eq!(call.accesses, [read(0, 7, 1)]);
    assert_eq!(call.bytes(0), table);
    assert_eq!(call.returned, Some(0x37));

    // An index past the 16-byte buffer still lands on its page, which is zero there.
    let call = traced(SCALAR, "forms_xlatb", &[&buffer(&table), "200"]);
    assert_eq!(call.accesses, [read(0, 200, 1)]);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn setcc_writes_in_both_outcomes() {
    let before = [0xff; 4];
    // rsi, then the bytes for equal, not equal and less.
    for (value, flags) in [("3", [1, 0, 0]), ("1", [0, 1, 1])] {
        let call = traced(SCALAR, "forms_setcc", &[&buffer(&before), value]);
        assert_eq!(
            call.accesses,
            [write(0, 1, 1), write(0, 2, 1), write(0, 3, 1)],
            "rsi = {value}"
        );
        assert_eq!(
            call.bytes(0),
            [0xff, flags[0], flags[1], flags[2]],
            "rsi = {value}"
        );
        assert_eq!(call.returned, Some(0));
    }
}

#[test]
fn cmovcc_reads_in_both_outcomes() {
    let mut before = vec![0u8; 16];
    put(&mut before, 4, &0x1122_3344u32.to_le_bytes());
    put(&mut before, 8, &0x5566_7788_99aa_bbccu64.to_le_bytes());
    // With rsi = 3, CMOVE moves and CMOVB does not. With rsi = 1, it is the other way round.
    for (value, returned) in [("3", 0x1122_3344u64), ("1", 0x77 + 0x5566_7788_99aa_bbcc)] {
        let call = traced(SCALAR, "forms_cmov", &[&buffer(&before), value]);
        assert_eq!(
            call.accesses,
            [read(0, 4, 4), read(0, 8, 8)],
            "rsi = {value}"
        );
        assert_eq!(call.bytes(0), before, "rsi = {value}");
        assert_eq!(call.returned, Some(returned), "rsi = {value}");
    }
}

#[test]
fn bit_test_register_offsets_reach_outside() {
    let mut before = vec![0u8; 64];
    before[0] = 0x08;
    before[19] = 0x80;
    before[30] = 0x80;
    before[48] = 0x08;

    let call = traced(SCALAR, "forms_bits", &[&buffer(&before)]);
    assert_eq!(
        call.accesses,
        [
            // BT, bit 323 of a dword @8: the dword 40 bytes further.
            read(0, 48, 4),
            // BTS, bit 325 of a qword @8: the qword 40 bytes further.
            read(0, 48, 8),
            write(0, 48, 8),
            // BTR, bit -9 of a dword @32: the dword below it.
            read(0, 28, 4),
            write(0, 28, 4),
            // BTC, bit -1 of a word @20: the word below it.
            read(0, 18, 2),
            write(0, 18, 2),
            // BT with the immediate 35: bit 3 of the operand itself.
            read(0, 0, 4),
        ]
    );
    let mut after = before.clone();
    after[48] = 0x28;
    after[30] = 0x00;
    after[19] = 0x00;
    assert_eq!(call.bytes(0), after);
    // The old bits: set, clear, set, set, set.
    assert_eq!(call.returned, Some(0b11101));
}

#[test]
fn movbe_loads_and_stores_byte_swapped() {
    let mut before = vec![0u8; 16];
    put(&mut before, 0, &[0x11, 0x22, 0x33, 0x44]);
    let call = traced(SCALAR, "forms_movbe", &[&buffer(&before)]);
    assert_eq!(call.accesses, [read(0, 0, 4), write(0, 8, 8)]);
    let mut after = before.clone();
    put(&mut after, 8, &0x1122_3344u64.to_be_bytes());
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0x1122_3344));
}

#[test]
fn enter_leave_on_thread_stack_untraced() {
    let call = traced(SCALAR, "forms_enter_leave", &["buf:8"]);
    // Only the one store to the buffer is traced, because the frames are on the thread's stack.
    assert_eq!(call.accesses, [write(0, 0, 4)]);
    assert_eq!(call.bytes(0), [1, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(call.returned, Some(0x3c));
}

#[test]
fn stack_slots_in_buffer_are_traced() {
    let mut before = vec![0u8; 64];
    put(&mut before, 0, &0x0807_0605_0403_0201u64.to_le_bytes());
    let pushed = 0x2222u64;

    let call = traced(
        SCALAR,
        "forms_stack_in_buffer",
        &[&buffer(&before), "0x1111", &format!("{pushed:#x}")],
    );
    assert_eq!(
        call.accesses,
        [
            // CALL stores the return address and RET loads it.
            write(0, 56, 8),
            read(0, 56, 8),
            // ENTER 16, 2 with RBP @32 saves RBP, copies the enclosing frame pointer @24
            // and pushes the new frame pointer. LEAVE restores RBP.
            write(0, 56, 8),
            read(0, 24, 8),
            write(0, 48, 8),
            write(0, 40, 8),
            read(0, 56, 8),
            // ENTER 16, 0 saves RBP and LEAVE restores it.
            write(0, 56, 8),
            read(0, 56, 8),
            // PUSH RDX.
            write(0, 56, 8),
            // PUSH [RDI] reads its operand, then writes the stack.
            read(0, 0, 8),
            write(0, 48, 8),
            // PUSH [RSP + 8] addresses its operand with RSP before the decrement.
            read(0, 56, 8),
            write(0, 40, 8),
            // POP [RSP] reads the stack, then addresses its operand with RSP after the increment.
            read(0, 40, 8),
            write(0, 48, 8),
            // POP RAX and POP RCX.
            read(0, 48, 8),
            read(0, 56, 8),
        ]
    );
    let mut after = before.clone();
    for offset in [40, 48, 56] {
        put(&mut after, offset, &pushed.to_le_bytes());
    }
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(2 * pushed));
}

#[test]
fn pushfq_in_buffer_stores_program_flags() {
    let call = run(SCALAR, "forms_pushf", &["buf:64"]);
    // The tracer single-steps PUSHFQ with the trap flag set. The image that PUSHFQ stores
    // must still be the program's own flags, without the trap flag, or the POPFQ that
    // restores it raises a trace trap that kills the program.
    assert_eq!(call.status, Some(0), "{}", call.stderr);
    assert_eq!(
        call.accesses,
        [write(0, 56, 8), read(0, 56, 8), read(0, 56, 8)]
    );
    let image = call.returned.expect("no return line");
    const TRAP_FLAG: u64 = 1 << 8;
    assert_eq!(image & TRAP_FLAG, 0, "flags image {image:#x}");
    // Bit 1 is always set and IF is set in user mode.
    assert_eq!(image & 0x202, 0x202, "flags image {image:#x}");
    assert_eq!(qword(call.bytes(0), 56), image);
}

#[test]
fn rep_movs_traces_each_iteration() {
    let source = counting(48);
    let call = traced(
        STRING,
        "forms_rep_movsb",
        &["buf:8", &buffer(&source[..8]), "5"],
    );
    let expected: Vec<Access> = (0..5)
        .flat_map(|i| [read(1, i, 1), write(0, i, 1)])
        .collect();
    assert_eq!(call.accesses, expected);
    assert_eq!(call.bytes(0), [0, 1, 2, 3, 4, 0, 0, 0]);
    assert_eq!(call.bytes(1), &source[..8]);
    assert_eq!(call.returned, Some(5));

    let call = traced(
        STRING,
        "forms_rep_movsq",
        &["buf:48", &buffer(&source), "5"],
    );
    let expected: Vec<Access> = (0..5)
        .flat_map(|i| [read(1, 8 * i, 8), write(0, 8 * i, 8)])
        .collect();
    assert_eq!(call.accesses, expected);
    let mut after = vec![0u8; 48];
    put(&mut after, 0, &source[..40]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(40));

    // A zero count runs no iteration.
    for symbol in ["forms_rep_movsb", "forms_rep_movsq"] {
        let call = traced(STRING, symbol, &["buf:48", &buffer(&source), "0"]);
        assert_eq!(call.accesses, [], "{symbol}");
        assert_eq!(call.bytes(0), [0; 48], "{symbol}");
        assert_eq!(call.returned, Some(0), "{symbol}");
    }
}

#[test]
fn rep_stos_traces_each_iteration() {
    let call = traced(STRING, "forms_rep_stosb", &["buf:8", "0xab", "5"]);
    assert_eq!(
        call.accesses,
        (0..5).map(|i| write(0, i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(call.bytes(0), [0xab, 0xab, 0xab, 0xab, 0xab, 0, 0, 0]);
    assert_eq!(call.returned, Some(5));

    let call = traced(STRING, "forms_rep_stosd", &["buf:24", "0xabcdef01", "5"]);
    assert_eq!(
        call.accesses,
        (0..5).map(|i| write(0, 4 * i, 4)).collect::<Vec<_>>()
    );
    let mut after = 0xabcd_ef01u32.to_le_bytes().repeat(5);
    after.extend([0; 4]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(20));

    for symbol in ["forms_rep_stosb", "forms_rep_stosd"] {
        let call = traced(STRING, symbol, &["buf:24", "0xabcdef01", "0"]);
        assert_eq!(call.accesses, [], "{symbol}");
        assert_eq!(call.bytes(0), [0; 24], "{symbol}");
        assert_eq!(call.returned, Some(0), "{symbol}");
    }
}

#[test]
fn rep_lods_traces_each_iteration() {
    let source = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17];
    let call = traced(STRING, "forms_rep_lodsb", &[&buffer(&source), "5"]);
    assert_eq!(
        call.accesses,
        (0..5).map(|i| read(0, i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(call.bytes(0), source);
    assert_eq!(call.returned, Some(0x14));

    let call = traced(STRING, "forms_rep_lodsb", &[&buffer(&source), "0"]);
    assert_eq!(call.accesses, []);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn repne_scas_stops_at_match() {
    let haystack = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17];
    // No match: all five iterations run.
    let call = traced(
        STRING,
        "forms_repne_scasb",
        &[&buffer(&haystack), "0xff", "5"],
    );
    assert_eq!(
        call.accesses,
        (0..5).map(|i| read(0, i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(call.bytes(0), haystack);
    assert_eq!(call.returned, Some(5));

    // A match at index 2 ends the scan after three iterations.
    let call = traced(
        STRING,
        "forms_repne_scasb",
        &[&buffer(&haystack), "0x12", "5"],
    );
    assert_eq!(
        call.accesses,
        (0..3).map(|i| read(0, i, 1)).collect::<Vec<_>>()
    );
    assert_eq!(call.returned, Some(3));

    let call = traced(
        STRING,
        "forms_repne_scasb",
        &[&buffer(&haystack), "0xff", "0"],
    );
    assert_eq!(call.accesses, []);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn repe_cmps_stops_at_difference() {
    let first = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut second = first;
    // CMPS compares the byte at RSI (buffer 1) with the byte at RDI (buffer 0), in that order.
    let both = |i| [read(1, i, 1), read(0, i, 1)];

    let call = traced(
        STRING,
        "forms_repe_cmpsb",
        &[&buffer(&first), &buffer(&second), "5"],
    );
    assert_eq!(call.accesses, (0..5).flat_map(both).collect::<Vec<_>>());
    assert_eq!(call.bytes(0), first);
    assert_eq!(call.bytes(1), second);
    assert_eq!(call.returned, Some(5));

    // A difference at index 2 ends the comparison after three iterations.
    second[2] = 0xff;
    let call = traced(
        STRING,
        "forms_repe_cmpsb",
        &[&buffer(&first), &buffer(&second), "5"],
    );
    assert_eq!(call.accesses, (0..3).flat_map(both).collect::<Vec<_>>());
    assert_eq!(call.returned, Some(3));

    let call = traced(
        STRING,
        "forms_repe_cmpsb",
        &[&buffer(&first), &buffer(&second), "0"],
    );
    assert_eq!(call.accesses, []);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn direction_flag_reverses_string_iterations() {
    let source = [0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17];
    let call = traced(
        STRING,
        "forms_rep_movsb_down",
        &["buf:8", &buffer(&source), "5"],
    );
    let expected: Vec<Access> = (0..5)
        .rev()
        .flat_map(|i| [read(1, i, 1), write(0, i, 1)])
        .collect();
    assert_eq!(call.accesses, expected);
    assert_eq!(call.bytes(0), [0x10, 0x11, 0x12, 0x13, 0x14, 0, 0, 0]);
    // RDI ends one byte below the destination.
    assert_eq!(call.returned, Some(-1i64 as u64));

    let call = traced(
        STRING,
        "forms_rep_stosd_down",
        &["buf:24", "0xabcdef01", "5"],
    );
    assert_eq!(
        call.accesses,
        (0..5).rev().map(|i| write(0, 4 * i, 4)).collect::<Vec<_>>()
    );
    let mut after = 0xabcd_ef01u32.to_le_bytes().repeat(5);
    after.extend([0; 4]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(-4i64 as u64));

    let call = traced(
        STRING,
        "forms_rep_movsb_down",
        &["buf:8", &buffer(&source), "0"],
    );
    assert_eq!(call.accesses, []);
    assert_eq!(call.bytes(0), [0; 8]);
}

#[test]
fn vector_moves_are_one_access_each() {
    if !cpu_has("AVX2", std::arch::is_x86_feature_detected!("avx2")) {
        return;
    }
    let before = counting(160);
    let call = traced(VECTOR, "forms_vector_moves", &[&buffer(&before)]);
    assert_eq!(
        call.accesses,
        [
            read(0, 1, 16),
            read(0, 16, 16),
            write(0, 35, 16),
            read(0, 3, 32),
            write(0, 67, 32),
            read(0, 32, 32),
            write(0, 128, 32),
            read(0, 5, 16),
            read(0, 9, 8),
        ]
    );
    let mut after = before.clone();
    let xmm0 = after[1..17].to_vec();
    put(&mut after, 35, &xmm0);
    let ymm2 = after[3..35].to_vec();
    put(&mut after, 67, &ymm2);
    let ymm3 = after[32..64].to_vec();
    put(&mut after, 128, &ymm3);
    assert_eq!(call.bytes(0), after);
    // VPMOVZXBD zero-extended the byte @9, which is 9.
    assert_eq!(call.returned, Some(9));
}

#[test]
fn vector_access_across_page_boundary() {
    if !cpu_has("AVX", std::arch::is_x86_feature_detected!("avx")) {
        return;
    }
    let before = counting(64);
    let call = traced(
        VECTOR,
        "forms_vector_straddle",
        &[&format!("buf:64@4072={}", hex(&before))],
    );
    // 4072 + 24 is 4096, so the page boundary falls at offset 24.
    assert_eq!((call.buffers[0].0 + 24) % 4096, 0);
    assert_eq!(
        call.accesses,
        [
            read(0, 8, 32),
            read(0, 16, 16),
            write(0, 20, 32),
            write(0, 12, 16)
        ]
    );
    let mut after = before.clone();
    let ymm0 = after[8..40].to_vec();
    let xmm1 = after[16..32].to_vec();
    put(&mut after, 20, &ymm0);
    put(&mut after, 12, &xmm1);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn vmaskmovps_accesses_enabled_elements_only() {
    if !cpu_has("AVX", std::arch::is_x86_feature_detected!("avx")) {
        return;
    }
    let before = counting(64);
    let call = traced(VECTOR, "forms_maskmov", &[&buffer(&before)]);
    // The mask enables dwords 0, 1, 3 and 6: three runs, each one access.
    assert_eq!(
        call.accesses,
        [
            read(0, 0, 8),
            read(0, 12, 4),
            read(0, 24, 4),
            write(0, 32, 8),
            write(0, 44, 4),
            write(0, 56, 4)
        ]
    );
    let mut after = before.clone();
    put(&mut after, 32, &before[0..8]);
    put(&mut after, 44, &before[12..16]);
    put(&mut after, 56, &before[24..28]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));

    // An all-zero mask accesses nothing.
    let call = traced(VECTOR, "forms_maskmov_none", &[&buffer(&before)]);
    assert_eq!(call.accesses, []);
    assert_eq!(call.bytes(0), before);
}

#[test]
fn vpgatherdd_reads_enabled_elements_in_order() {
    if !cpu_has("AVX2", std::arch::is_x86_feature_detected!("avx2")) {
        return;
    }
    let dwords: Vec<u32> = (0..16).map(|i| 0x100 + i).collect();
    let mut before: Vec<u8> = dwords
        .iter()
        .flat_map(|dword| dword.to_le_bytes())
        .collect();
    before.resize(96, 0);

    let call = traced(VECTOR, "forms_gather", &[&buffer(&before)]);
    // Indices 7, 0, 3, 12, 5, 1, 9, 2 under a mask that enables elements 0, 1, 3, 4 and 6.
    assert_eq!(
        call.accesses,
        [
            read(0, 28, 4),
            read(0, 0, 4),
            read(0, 48, 4),
            read(0, 20, 4),
            read(0, 36, 4),
            write(0, 64, 32)
        ]
    );
    let gathered = [
        dwords[7], dwords[0], 0, dwords[12], dwords[5], 0, dwords[9], 0,
    ];
    let mut after = before.clone();
    put(
        &mut after,
        64,
        &gathered
            .iter()
            .flat_map(|dword| dword.to_le_bytes())
            .collect::<Vec<_>>(),
    );
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn fxsave_fxrstor_access_416_bytes() {
    let before = [0xa5u8; 512];
    let call = traced(VECTOR, "forms_fxsave", &[&buffer(&before)]);
    // The decoder reports bytes 0 to 415, the x87 and SSE state. Bytes 416 to 511 are left
    // to software, so they keep their contents.
    assert_eq!(
        call.accesses,
        [
            write(0, 0, 416),
            read(0, 0, 416),
            write(0, 0, 416),
            read(0, 0, 416)
        ]
    );
    let after = call.bytes(0);
    assert_eq!(after[416..], before[416..]);
    // XMM0's slot contains the fixture's pattern.
    assert_eq!(after[160..176], (0xf0..=0xff).collect::<Vec<u8>>());
    // The x87 control word and MXCSR have Linux's initial values.
    assert_eq!(after[0..2], 0x037fu16.to_le_bytes());
    assert_eq!(after[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(call.returned, Some(0));
}

#[test]
fn maskmovq_write_certain_when_it_faults() {
    let data = 0x8877_6655_4433_2211u64;
    let before = [0xee; 8];

    // Bytes 0, 5 and 7 enabled. The tracer steps MASKMOVQ with the page read-only first.
    // The store faults, so the tracer reports a certain write of the whole operand.
    let mask = "0x8000800000000080";
    let call = traced(
        VECTOR,
        "forms_maskmovq",
        &[&buffer(&before), &format!("{data:#x}"), mask],
    );
    assert_eq!(call.accesses, [write(0, 0, 8)]);
    assert_eq!(
        call.bytes(0),
        [0x11, 0xee, 0xee, 0xee, 0xee, 0x66, 0xee, 0x88]
    );
    assert_eq!(call.returned, Some(0));

    // No byte enabled: whether the CPU checks the page anyway is implementation-specific.
    // AMD processors do: MASKMOVQ faults on the inaccessible page, and again on the
    // read-only probe, so the tracer reports a certain 8-byte write although the hardware
    // stores no byte. That matches the fault the hardware raised, not the bytes it changed.
    // A CPU that does not check the page never faults, and the tracer records no access.
    let amd = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap()
        .contains("AuthenticAMD");
    for mask in ["0", "0x7f7f7f7f7f7f7f7f"] {
        let call = traced(
            VECTOR,
            "forms_maskmovq",
            &[&buffer(&before), &format!("{data:#x}"), mask],
        );
        if amd {
            assert_eq!(call.accesses, [write(0, 0, 8)], "mask {mask}");
        } else {
            assert!(
                call.accesses.is_empty() || call.accesses == [write(0, 0, 8)],
                "mask {mask}: {:?}",
                call.accesses
            );
        }
        assert_eq!(call.bytes(0), before, "mask {mask}");
        assert_eq!(call.returned, Some(0));
    }
}

#[test]
fn xsave_unsupported_but_call_completes() {
    let call = run(UNSUPPORTED, "forms_xsave", &["buf:4096", "buf:8"]);
    // Exit status 3: the call returned, but an instruction's accesses are missing.
    assert_eq!(call.status, Some(3), "{}", call.stderr);
    assert!(
        call.stderr
            .contains("could not decode the instruction at 0x"),
        "{}",
        call.stderr
    );
    assert!(call.stderr.contains("(xsave [rdi])"), "{}", call.stderr);
    assert!(call.stderr.contains("XSAVE area"), "{}", call.stderr);
    assert!(
        call.stderr.contains("its accesses are missing"),
        "{}",
        call.stderr
    );
    // The stores before and after XSAVE are traced, but XSAVE itself has no access.
    assert_eq!(call.accesses, [write(1, 0, 4), write(1, 4, 4)]);
    assert_eq!(call.bytes(1), [1, 0, 0, 0, 2, 0, 0, 0]);
    // XSAVE ran: MXCSR, saved with the SSE state, has Linux's initial value.
    assert_eq!(call.bytes(0)[24..28], 0x1f80u32.to_le_bytes());
    assert_eq!(call.returned, Some(0x600d));
}

/// Returns true when this CPU has the AVX-512 subsets `forms_avx512.c` is built for, and
/// otherwise prints that the test is skipped.
fn has_avx512() -> bool {
    cpu_has(
        "AVX-512 (F, BW and VL)",
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl"),
    )
}

/// Returns the 64 bytes that `forms_avx512.c` loads into its registers, 0x80 to 0xbf.
fn zmm_pattern() -> Vec<u8> {
    (0x80..0xc0).collect()
}

/// Returns the dwords of `memory` as `u32`s, for messages that show which element differs.
fn dwords(memory: &[u8]) -> Vec<u32> {
    memory
        .chunks_exact(4)
        .map(|dword| u32::from_le_bytes(dword.try_into().unwrap()))
        .collect()
}

#[test]
fn zmm_store_is_one_write() {
    if !has_avx512() {
        return;
    }
    let before = counting(96);
    let call = traced(AVX512, "forms_avx512_store", &[&buffer(&before)]);
    assert_eq!(call.accesses, [write(0, 0, 64)]);
    let mut after = before.clone();
    put(&mut after, 0, &zmm_pattern());
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn zmm_load_then_store_copies() {
    if !has_avx512() {
        return;
    }
    let before = counting(160);
    let call = traced(AVX512, "forms_avx512_copy", &[&buffer(&before)]);
    assert_eq!(call.accesses, [read(0, 0, 64), write(0, 67, 64)]);
    let mut after = before.clone();
    put(&mut after, 67, &before[0..64]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn opmask_store_writes_enabled_runs() {
    if !has_avx512() {
        return;
    }
    let before = counting(64);
    let pattern = zmm_pattern();
    // The decoder reports each run of adjacent enabled dwords as one write, lowest address
    // first. A mask of zero enables no dword, so nothing is written or reported.
    let cases: [(u16, Vec<Access>); 5] = [
        (
            0b1010_0000_1111_0001,
            vec![
                write(0, 0, 4),
                write(0, 16, 16),
                write(0, 52, 4),
                write(0, 60, 4),
            ],
        ),
        (
            0b0101_0101_0101_0101,
            (0..8).map(|i| write(0, 8 * i, 4)).collect(),
        ),
        (0b1000_0000_0000_0001, vec![write(0, 0, 4), write(0, 60, 4)]),
        (0xffff, vec![write(0, 0, 64)]),
        (0, vec![]),
    ];
    for (mask, expected) in cases {
        let call = traced(
            AVX512,
            "forms_avx512_masked_store",
            &[&buffer(&before), &format!("{mask:#x}")],
        );
        assert_eq!(call.accesses, expected, "mask {mask:#018b}");

        // Only the enabled dwords take the pattern's bytes. The others keep their contents.
        let mut after = before.clone();
        for element in (0..16).filter(|element| mask >> element & 1 != 0) {
            put(
                &mut after,
                4 * element,
                &pattern[4 * element..4 * element + 4],
            );
        }
        assert_eq!(dwords(call.bytes(0)), dwords(&after), "mask {mask:#018b}");
        assert_eq!(call.returned, Some(u64::from(mask)), "mask {mask:#018b}");
    }
}

#[test]
fn zero_masking_load_reads_enabled_runs() {
    if !has_avx512() {
        return;
    }
    let before = counting(128);
    // Each case ends with the unmasked 64-byte store of the loaded register @64.
    let cases: [(u16, Vec<Access>); 3] = [
        (
            0b0110_0000_1000_0111,
            vec![
                read(0, 0, 12),
                read(0, 28, 4),
                read(0, 52, 8),
                write(0, 64, 64),
            ],
        ),
        (
            0b1010_1010_1010_1010,
            (0..8)
                .map(|i| read(0, 8 * i + 4, 4))
                .chain([write(0, 64, 64)])
                .collect(),
        ),
        (0, vec![write(0, 64, 64)]),
    ];
    for (mask, expected) in cases {
        let call = traced(
            AVX512,
            "forms_avx512_masked_load",
            &[&buffer(&before), &format!("{mask:#x}")],
        );
        assert_eq!(call.accesses, expected, "mask {mask:#018b}");

        // Enabled dwords are loaded, and zero masking clears the others.
        let mut after = before.clone();
        put(&mut after, 64, &[0; 64]);
        for element in (0..16).filter(|element| mask >> element & 1 != 0) {
            put(
                &mut after,
                64 + 4 * element,
                &before[4 * element..4 * element + 4],
            );
        }
        assert_eq!(dwords(call.bytes(0)), dwords(&after), "mask {mask:#018b}");
        assert_eq!(call.returned, Some(u64::from(mask)), "mask {mask:#018b}");
    }
}

#[test]
fn evex_gather_reads_enabled_elements_in_order() {
    if !has_avx512() {
        return;
    }
    let table: Vec<u32> = (0..16).map(|i| 0x200 + i).collect();
    let mut before: Vec<u8> = table.iter().flat_map(|dword| dword.to_le_bytes()).collect();
    before.resize(128, 0);

    let call = traced(AVX512, "forms_avx512_gather", &[&buffer(&before)]);
    // Elements 0, 1, 4, 6, 7, 9, 10, 12, 13 and 15 are enabled, and their indices are 15, 3,
    // 12, 1, 10, 14, 2, 6, 11 and 13. Each is one read, in element order.
    assert_eq!(
        call.accesses,
        [
            read(0, 60, 4),
            read(0, 12, 4),
            read(0, 48, 4),
            read(0, 4, 4),
            read(0, 40, 4),
            read(0, 56, 4),
            read(0, 8, 4),
            read(0, 24, 4),
            read(0, 44, 4),
            read(0, 52, 4),
            write(0, 64, 64),
        ]
    );
    let index = [15, 3, 8, 0, 12, 7, 1, 10, 5, 14, 2, 9, 6, 11, 4, 13];
    let mask = 0b1011_0110_1101_0011u16;
    let gathered: Vec<u32> = (0..16)
        .map(|element| {
            if mask >> element & 1 != 0 {
                table[index[element]]
            } else {
                0
            }
        })
        .collect();
    assert_eq!(dwords(&call.bytes(0)[64..]), gathered);
    assert_eq!(call.bytes(0)[..64], before[..64]);
    // A gather clears each mask bit as it loads the element, so k1 ends as zero.
    assert_eq!(call.returned, Some(0));
}

#[test]
fn aligned_zmm_and_ymm16_moves() {
    if !has_avx512() {
        return;
    }
    let before = counting(192);
    let call = traced(AVX512, "forms_avx512_aligned", &[&buffer(&before)]);
    // VMOVDQA64 raises #GP on an address that is not 64-byte aligned.
    assert_eq!(call.buffers[0].0 % 64, 0);
    assert_eq!(
        call.accesses,
        [write(0, 64, 64), read(0, 128, 64), write(0, 0, 32)]
    );
    let pattern = zmm_pattern();
    let mut after = before.clone();
    put(&mut after, 64, &pattern);
    put(&mut after, 0, &pattern[16..48]);
    assert_eq!(call.bytes(0), after);
    // The low dword of the aligned load @128 is bytes 128 to 131 of the counting pattern.
    assert_eq!(call.returned, Some(0x8382_8180));
}

#[test]
fn zmm_access_across_page_boundary() {
    if !has_avx512() {
        return;
    }
    let before = counting(128);
    let call = traced(
        AVX512,
        "forms_avx512_straddle",
        &[&format!("buf:128@4032={}", hex(&before))],
    );
    // 4032 + 64 is 4096, so the page boundary falls at offset 64.
    assert_eq!((call.buffers[0].0 + 64) % 4096, 0);
    // The masked store enables dwords 8 to 15 of the operand @40, the 32 bytes @72, which
    // lie wholly on the second page.
    assert_eq!(
        call.accesses,
        [read(0, 8, 64), write(0, 40, 64), write(0, 72, 32)]
    );
    let mut after = before.clone();
    put(&mut after, 40, &before[8..72]);
    put(&mut after, 72, &zmm_pattern()[32..64]);
    assert_eq!(call.bytes(0), after);
    assert_eq!(call.returned, Some(0));
}

#[test]
fn vex_load_zeroes_upper_bytes() {
    if !has_avx512() {
        return;
    }
    let before = counting(192);
    let call = traced(AVX512, "forms_avx512_upper_bytes", &[&buffer(&before)]);
    assert_eq!(call.accesses, [read(0, 0, 16), read(0, 0, 16), write(0, 64, 64), write(0, 128, 64)]);
    let mut zeroed = before[0..16].to_vec();
    zeroed.resize(64, 0x00);
    let mut kept = before[0..16].to_vec();
    kept.resize(64, 0xff);
    assert_eq!(call.bytes(0)[64..128], zeroed[..]);
    assert_eq!(call.bytes(0)[128..192], kept[..]);
    assert_eq!(call.bytes(0)[0..64], before[0..64]);
}

#[test]
fn opmask_arithmetic_reads_enabled_elements() {
    if !has_avx512() {
        return;
    }
    let mut before = vec![0u8; 64];
    before[1] = 9;
    before[4] = 9;
    let call = traced(AVX512, "forms_avx512_masked_arithmetic", &[&buffer(&before)]);
    assert_eq!(call.accesses, [read(0, 0, 6), read(0, 0, 8), read(0, 60, 4)]);
    // Bytes 1 and 4 differ from zero: the not-equal compare sets their bits.
    assert_eq!(call.returned, Some(0b1_0010));
    assert_eq!(call.bytes(0), before);
}
