//! Runs the `ffitrace call` command on libc functions and on small C fixtures and checks its
//! exact output. The fixtures are compiled with gcc on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ffitrace(args: &[&str]) -> Run {
    ffitrace_with(args, &[])
}

/// Runs `ffitrace` with `args` and the environment variables `vars` set.
fn ffitrace_with(args: &[&str], vars: &[(&str, &str)]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ffitrace"));
    command.args(args).env_remove("NO_COLOR").envs(vars.iter().copied());
    let output = command.output().unwrap();
    Run {
        status: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs `ffitrace call ... --json`, requires success and returns the parsed lines.
fn traced(args: &[&str]) -> Vec<Value> {
    let mut words = vec!["call"];
    words.extend_from_slice(args);
    words.push("--json");
    let run = ffitrace(&words);
    assert_eq!(run.status, Some(0), "{args:?}: {}", run.stderr);
    assert_eq!(run.stderr, "", "{args:?}");
    json_lines(&run.stdout)
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Builds a fixture library from `tests/fixtures/NAME.c` once per test run.
fn fixture(name: &str) -> String {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-fixtures-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for source in ["access_patterns", "crashes"] {
            let c_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{source}.c"));
            let library = dir.join(format!("{source}.so"));
            // -O1 keeps every access a plain scalar instruction, in source order.
            let status =
                Command::new("gcc").args(["-O1", "-shared", "-fPIC", "-o"]).arg(&library).arg(&c_file).status();
            assert!(status.unwrap().success(), "gcc failed on {}", c_file.display());
        }
        dir
    });
    dir.join(format!("{name}.so")).to_string_lossy().into_owned()
}

/// Extracts the access lines as (kind, buffer, offset, size, certain).
fn accesses(lines: &[Value]) -> Vec<(String, i64, i64, u64, Option<bool>)> {
    let access = |line: &Value| {
        let kind = line["kind"].as_str().unwrap().to_string();
        (
            kind,
            line["buffer"].as_i64().unwrap(),
            line["offset"].as_i64().unwrap(),
            line["size"].as_u64().unwrap(),
            line["certain"].as_bool(),
        )
    };
    lines.iter().filter(|line| line["kind"] == "read" || line["kind"] == "write").map(access).collect()
}

fn read(buffer: i64, offset: i64, size: u64) -> (String, i64, i64, u64, Option<bool>) {
    ("read".to_string(), buffer, offset, size, None)
}

fn write(buffer: i64, offset: i64, size: u64) -> (String, i64, i64, u64, Option<bool>) {
    ("write".to_string(), buffer, offset, size, Some(true))
}

/// Merges the byte ranges of `kind` accesses to `buffer`, as sorted half-open ranges.
fn union(lines: &[Value], buffer: i64, kind: &str) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = accesses(lines)
        .into_iter()
        .filter(|(k, b, ..)| k == kind && *b == buffer)
        .map(|(_, _, offset, size, _)| (offset, offset + size as i64))
        .collect();
    spans.sort();
    let mut merged: Vec<(i64, i64)> = Vec::new();
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

fn buffer_line(lines: &[Value], index: u64) -> &Value {
    lines.iter().find(|line| line["kind"] == "buffer" && line["index"] == index).unwrap()
}

fn bytes(lines: &[Value], index: u64) -> String {
    buffer_line(lines, index)["bytes"].as_str().unwrap().to_string()
}

fn address(lines: &[Value], index: u64) -> u64 {
    u64::from_str_radix(buffer_line(lines, index)["addr"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

fn returned(lines: &[Value]) -> u64 {
    let last = lines.last().unwrap();
    assert_eq!(last["kind"], "return");
    last["value"].as_u64().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn memcpy_copies_a_whole_page() {
    let source: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let fill = format!("buf:4096={}", hex(&source));
    let lines = traced(&["libc.so.6", "memcpy", "buf:4096", &fill, "4096"]);
    assert_eq!(union(&lines, 1, "read"), [(0, 4096)]);
    assert_eq!(union(&lines, 0, "write"), [(0, 4096)]);
    assert_eq!(union(&lines, 0, "read"), []);
    assert_eq!(union(&lines, 1, "write"), []);
    assert!(accesses(&lines).iter().all(|(kind, .., certain)| kind == "read" || *certain == Some(true)));
    assert_eq!(bytes(&lines, 0), hex(&source));
    assert_eq!(bytes(&lines, 1), hex(&source));
    assert_eq!(returned(&lines), address(&lines, 0));
}

#[test]
fn memset_writes_exactly_its_bytes() {
    let lines = traced(&["libc.so.6", "memset", "buf:64", "0x5a", "40"]);
    assert_eq!(union(&lines, 0, "write"), [(0, 40)]);
    assert_eq!(union(&lines, 0, "read"), []);
    assert_eq!(bytes(&lines, 0), format!("{}{}", "5a".repeat(40), "00".repeat(24)));
}

#[test]
fn overlapping_memmove_in_both_directions() {
    let fill = "buf:16=000102030405060708090a0b0c0d0e0f";
    let cases = [
        ([fill, "&0+4"], (4, 16), (0, 12), "0405060708090a0b0c0d0e0f0c0d0e0f"),
        (["&0+4", fill], (0, 12), (4, 16), "00010203000102030405060708090a0b"),
    ];
    for ([first, second], reads, writes, after) in cases {
        let lines = traced(&["libc.so.6", "memmove", first, second, "12"]);
        assert_eq!(union(&lines, 0, "read"), [reads], "{first} {second}");
        assert_eq!(union(&lines, 0, "write"), [writes], "{first} {second}");
        assert_eq!(bytes(&lines, 0), after);
    }
}

#[test]
fn strlen_reads_within_its_page() {
    let lines = traced(&["libc.so.6", "strlen", "str:hello, tracer"]);
    assert_eq!(returned(&lines), 13);
    let reads = union(&lines, 0, "read");
    // How far past the NUL strlen reads depends on the CPU's vector width. Its loads are
    // aligned, so they stay on the buffer's one page.
    assert_eq!(reads[0].0, 0, "{reads:?}");
    assert!(reads[0].1 >= 14, "{reads:?}");
    assert!(reads[reads.len() - 1].1 <= 4096, "{reads:?}");
    assert_eq!(union(&lines, 0, "write"), []);
    assert_eq!(bytes(&lines, 0), hex(b"hello, tracer\0"));
}

#[test]
fn increment_reads_then_writes_one_int() {
    let lines = traced(&[&fixture("access_patterns"), "increment", "buf:4=29000000"]);
    assert_eq!(accesses(&lines), [read(0, 0, 4), write(0, 0, 4)]);
    assert_eq!(bytes(&lines, 0), "2a000000");
}

#[test]
fn two_byte_store_leaves_the_third_byte_alone() {
    let lines = traced(&[&fixture("access_patterns"), "write_two", "buf:3=010203"]);
    assert_eq!(accesses(&lines), [write(0, 0, 2)]);
    assert_eq!(bytes(&lines, 0), "aabb03");
}

#[test]
fn swap_pair_reads_both_slots() {
    let lines = traced(&[&fixture("access_patterns"), "swap_pair", "buf:16={&1}{&2+5}", "buf:1", "buf:1"]);
    assert_eq!(accesses(&lines), [read(0, 0, 8), read(0, 8, 8), write(0, 0, 8), write(0, 8, 8)]);
    let swapped = [(address(&lines, 2) + 5).to_le_bytes(), address(&lines, 1).to_le_bytes()].concat();
    assert_eq!(bytes(&lines, 0), hex(&swapped));
}

#[test]
fn fill_from_a_file() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fill-{}.bin", std::process::id()));
    std::fs::write(&path, [9, 8, 7]).unwrap();
    let fill = format!("buf:4=@{}", path.display());
    let lines = traced(&["libc.so.6", "memcpy", "buf:4", &fill, "3"]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(bytes(&lines, 0), "09080700");
    assert_eq!(union(&lines, 1, "read"), [(0, 3)]);
    assert_eq!(union(&lines, 0, "write"), [(0, 3)]);
}

#[test]
fn integers_without_buffers_print_only_the_return_value() {
    for (arg, value) in [("-7", 7), ("-0x10", 16), ("42", 42)] {
        let run = ffitrace(&["call", "libc.so.6", "labs", arg, "--json"]);
        assert_eq!(run.status, Some(0));
        assert_eq!(run.stdout, format!("{{\"kind\":\"return\",\"value\":{value}}}\n"));
    }
}

#[test]
fn text_report_letter_map() {
    let run = ffitrace(&["call", &fixture("access_patterns"), "increment", "buf:20=41424344"]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "2 accesses:");
    assert_eq!(lines[1], "     #  kind    buffer    offset    size  address");
    assert!(lines[2].starts_with("     0  read         0         0       4  0x"), "{}", lines[2]);
    assert!(lines[3].starts_with("     1  write        0         0       4  0x"), "{}", lines[3]);
    assert_eq!(lines[5], "byte maps: r read, w written, b read and written, . untouched");
    assert!(lines[6].starts_with("buffer 0: 20 bytes at 0x"), "{}", lines[6]);
    assert!(lines[6].ends_with(", 4 read, 4 written"), "{}", lines[6]);
    let dots = "00. ".repeat(12);
    assert_eq!(lines[7], format!("  0x0000  42b 42b 43b 44b {}  |BBCD............|", dots.trim_end()));
    assert_eq!(lines[8], "  0x0010  00. 00. 00. 00.                                                  |....|");
    // increment returns nothing, so rax contains whatever it contained last.
    assert!(lines[10].starts_with("returned 0x"), "{}", lines[10]);
    assert_eq!(lines.len(), 11);
}

#[test]
fn text_report_shows_a_run_once() {
    // fill_down(buffer, 5, value): rep stosq from offset 32 down to offset 0.
    let run = ffitrace(&["call", &fixture("access_patterns"), "fill_down", "buf:48", "5", "0x1122334455667788"]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "5 accesses:");
    assert!(lines[2].starts_with("     0  write        0        32       8  0x"), "{}", lines[2]);
    assert_eq!(lines[3], "        ... #0 repeats 5 times in all, each time 8 bytes lower, to #4");
    assert_eq!(lines[4], "");
    assert!(lines[6].ends_with(", 0 read, 40 written"), "{}", lines[6]);
}

#[test]
fn descending_rep_stos_in_order() {
    let lines = traced(&[&fixture("access_patterns"), "fill_down", "buf:40", "4", "0x1122334455667788"]);
    assert_eq!(accesses(&lines), [write(0, 24, 8), write(0, 16, 8), write(0, 8, 8), write(0, 0, 8)]);
    assert_eq!(bytes(&lines, 0), format!("{}{}", "8877665544332211".repeat(4), "00".repeat(8)));
}

#[test]
fn overlapping_rep_movs_copies_as_the_cpu_does() {
    let fill = "buf:24=000102030405060708090a0b0c0d0e0f1011121314151617";
    let pairs = |reads: &[i64], writes: &[i64], size: u64| {
        reads.iter().zip(writes).flat_map(|(&from, &to)| [read(0, from, size), write(0, to, size)]).collect::<Vec<_>>()
    };
    // Destination 2 bytes above the source: each byte is read after it was written, so the
    // first two bytes repeat.
    let lines = traced(&[&fixture("access_patterns"), "copy_up", "&0+2", fill, "6"]);
    assert_eq!(accesses(&lines), pairs(&[0, 1, 2, 3, 4, 5], &[2, 3, 4, 5, 6, 7], 1));
    assert_eq!(bytes(&lines, 0), "000100010001000108090a0b0c0d0e0f1011121314151617");
    // Destination below the source: the bytes as they were.
    let lines = traced(&[&fixture("access_patterns"), "copy_up", fill, "&0+3", "5"]);
    assert_eq!(accesses(&lines), pairs(&[3, 4, 5, 6, 7], &[0, 1, 2, 3, 4], 1));
    assert_eq!(bytes(&lines, 0), "030405060705060708090a0b0c0d0e0f1011121314151617");
    // Quadwords 3 bytes apart: the second reads three bytes the first wrote. This form is
    // stepped.
    let lines = traced(&[&fixture("access_patterns"), "copy_up_quads", "&0+3", fill, "2"]);
    assert_eq!(accesses(&lines), pairs(&[0, 8], &[3, 11], 8));
    assert_eq!(bytes(&lines, 0), "00010200010203040506070506070b0c0d0e0f1314151617");
}

#[test]
fn rep_movs_to_and_from_untraced_memory() {
    // 8 KiB of a traced buffer into the heap: only the reads are traced.
    let lines = traced(&[&fixture("access_patterns"), "copy_out", "buf:8192=0102030405", "8192"]);
    let entries = accesses(&lines);
    assert_eq!(entries.len(), 8192);
    assert_eq!(entries[0], read(0, 0, 1));
    assert_eq!(entries[8191], read(0, 8191, 1));
    assert_eq!(union(&lines, 0, "read"), [(0, 8192)]);
    assert_eq!(union(&lines, 0, "write"), []);
    assert_eq!(returned(&lines), 15);
    // 8 KiB of the heap into a traced buffer: only the writes are traced.
    let lines = traced(&[&fixture("access_patterns"), "copy_in", "buf:8192", "8192"]);
    assert_eq!(union(&lines, 0, "write"), [(0, 8192)]);
    assert_eq!(union(&lines, 0, "read"), []);
    let pattern: String = (0..8192).map(|index| format!("{:02x}", index % 256)).collect();
    assert_eq!(bytes(&lines, 0), pattern);
}

#[test]
fn rep_movs_into_read_only_memory_crashes() {
    let run = ffitrace(&["call", &fixture("access_patterns"), "copy_to_read_only", "buf:64=01", "16", "--json"]);
    assert_eq!(run.status, Some(128 + 11), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    // The faulting iteration never completed: nothing was read or written.
    let lines = json_lines(&run.stdout);
    assert_eq!(accesses(&lines), []);
    // The crash comes with its diagnosis and the buffer's contents, as for any other crash.
    assert!(run.stderr.contains("got SIGSEGV (no permission for the mapped address)"), "{}", run.stderr);
    assert!(run.stderr.contains("the instruction was `rep movsb [rdi], [rsi]`"), "{}", run.stderr);
    assert_eq!(bytes(&lines, 0), format!("01{}", "00".repeat(63)));
}

#[test]
fn long_rep_stos_is_one_run() {
    // 9 MiB: more than two of the parts the supervisor carries out per stop. Emulation stays
    // on even where the suite runs with it off: stepping would take a stop per byte.
    let size = (9 << 20).to_string();
    let buffer = format!("buf:{size}");
    let run = ffitrace_with(&["call", "libc.so.6", "memset", &buffer, "0x5a", &size], &[("FFITRACE_EMULATE", "1")]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], format!("{size} accesses:"));
    assert!(lines[2].starts_with("     0  write        0         0       1  0x"), "{}", lines[2]);
    assert_eq!(lines[3], format!("        ... #0 repeats {size} times in all, each time 1 byte higher, to #{}", (9 << 20) - 1));
    assert!(lines[6].ends_with(&format!(", 0 read, {size} written")), "{}", lines[6]);
    assert!(lines[7].starts_with("  0x000000  5aw 5aw"), "{}", lines[7]);
}

#[test]
fn native_output_comes_before_text_report() {
    let run = ffitrace(&["call", "libc.so.6", "puts", "str:hello from C"]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0], "hello from C", "{}", run.stdout);
    assert_eq!(lines[1], "13 accesses:", "{}", run.stdout);
    assert_eq!(lines.iter().filter(|line| **line == "hello from C").count(), 1, "{}", run.stdout);
}

#[test]
fn native_output_stays_out_of_json() {
    let run = ffitrace(&["call", "libc.so.6", "puts", "str:hello from C", "--json"]);
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.last().map(|line| line["kind"].clone()), Some(Value::from("return")));
    assert_eq!(run.stderr, "hello from C\n");
}

#[test]
fn sigterm_to_supervisor_reports_trace() {
    use std::process::Stdio;

    let child = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .args(["call", &fixture("crashes"), "spin_forever", "buf:8", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the supervisor has forked the traced program, then give the call time to run.
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&children).unwrap_or_default().trim().is_empty() {
        assert!(started.elapsed().as_secs() < 10, "the traced program never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The process started is the supervisor: `timeout` and service managers signal it.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(128 + 15), "{stderr}");
    assert!(stderr.contains("killed by SIGTERM before the call returned"), "{stderr}");
    let lines = json_lines(&String::from_utf8_lossy(&output.stdout));
    assert!(lines.iter().any(|line| line["kind"] == "write"), "no traced write before the signal");
}

#[test]
fn closed_stderr_keeps_exit_status() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::Stdio;

    let mut ends = [0; 2];
    assert_eq!(unsafe { libc::pipe(ends.as_mut_ptr()) }, 0);
    unsafe { libc::close(ends[0]) };
    // SAFETY: `ends[1]` is a descriptor this test just opened and owns.
    let write_end = unsafe { OwnedFd::from_raw_fd(ends[1]) };
    let status = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .args(["call", &fixture("crashes"), "store_int", "0", "5", "buf:4"])
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end))
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(128 + 11));
}

#[test]
fn closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .args(["call", "libc.so.6", "memset", "buf:65536", "1", "65536", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(first.starts_with(r#"{"kind":"write""#), "{first}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn null_write_crash_is_explained() {
    let run = ffitrace(&["call", &fixture("crashes"), "store_int", "0", "5", "buf:4", "--json"]);
    assert_eq!(run.status, Some(128 + 11), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(run.stderr.contains("SIGSEGV (address not mapped) during the traced call at address 0x0, a null pointer"));
    assert!(run.stderr.contains("the instruction was `mov [rdi], esi`"), "{}", run.stderr);
    assert!(run.stderr.contains("crashes.so+0x"), "{}", run.stderr);
    assert!(run.stderr.contains("in store_int+0x0"), "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 1, "only the buffer line: {}", run.stdout);
    assert_eq!(bytes(&lines, 0), "00000000");
}

#[test]
fn non_canonical_store_is_a_protection_fault() {
    let run = ffitrace(&["call", &fixture("crashes"), "store_int", "0x8000000000000000", "5", "buf:4", "--json"]);
    assert_eq!(run.status, Some(128 + 11), "{}", run.stderr);
    assert!(run.stderr.contains("SIGSEGV (a general-protection fault: a non-canonical address"), "{}", run.stderr);
    assert!(!run.stderr.contains("null pointer"), "{}", run.stderr);
    assert!(!run.stderr.contains(" at address 0x0"), "{}", run.stderr);
    assert!(run.stderr.contains("the instruction was `mov [rdi], esi`"), "{}", run.stderr);
}

#[test]
fn stack_overflow_is_named() {
    let run = ffitrace(&["call", &fixture("crashes"), "recurse_forever", "buf:8", "0", "--json"]);
    assert_eq!(run.status, Some(128 + 11), "{}", run.stderr);
    assert!(run.stderr.contains("SIGSEGV (address not mapped) during the traced call"), "{}", run.stderr);
    assert!(run.stderr.contains("next to the stack pointer: a stack overflow"), "{}", run.stderr);
    assert!(!run.stderr.contains("has overflowed its stack"), "{}", run.stderr);
    assert!(json_lines(&run.stdout).iter().any(|line| line["kind"] == "read"));
}

#[test]
fn write_past_the_pages_crash_names_the_buffer() {
    let run = ffitrace(&["call", &fixture("crashes"), "poke", "buf:16=aa", "4100", "--json"]);
    assert_eq!(run.status, Some(128 + 11), "{}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let lines = json_lines(&run.stdout);
    let fault = address(&lines, 0) + 4100;
    assert!(
        run.stderr.contains(&format!("at address {fault:#x}, 4084 bytes past the end of buffer 0")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("on the inaccessible guard page"), "{}", run.stderr);
    assert!(run.stderr.contains("the instruction was `mov byte ptr [rdi], 1`"), "{}", run.stderr);
    assert!(run.stderr.contains("in poke+0x"), "{}", run.stderr);
    assert_eq!(bytes(&lines, 0), format!("aa{}", "00".repeat(15)));
    assert!(run.stderr.contains("registers at the fault:\n"), "{}", run.stderr);
    assert!(!run.stderr.trim_end().contains("\n\n"), "one paragraph: {}", run.stderr);
}

#[test]
fn exit_during_the_call_is_a_failure() {
    let run = ffitrace(&["call", "libc.so.6", "exit", "0", "buf:8", "--json"]);
    assert_eq!(run.status, Some(1));
    assert!(run.stderr.starts_with("ffitrace: the process exited with status 0 before the call returned"));
}

#[test]
fn bad_arguments_get_one_line_and_status_2() {
    let seven = ["1"; 7];
    let table: &[(&[&str], &str)] = &[
        (&["buf:abc"], "error: invalid argument 'buf:abc': buffer size 'abc' is not a number"),
        (&["buf:4=abc"], "error: invalid argument 'buf:4=abc': HEX has an odd number of digits (3)"),
        (&["buf:4=0g"], "error: invalid argument 'buf:4=0g': 'g' is not a hex digit"),
        (&["buf:8={&3}"], "error: invalid argument 'buf:8={&3}': there is no buffer 3 (buffers: 1)"),
        (&["buf:2=000000"], "error: invalid argument 'buf:2=000000': the initial contents are 3 bytes long, more than the buffer's 2"),
        (&["buf:4@99999"], "error: invalid argument 'buf:4@99999': page offset 99999 is not smaller than the page size 4096"),
        (&["buf:4=@/nonexistent/fill"], "error: invalid argument 'buf:4=@/nonexistent/fill': cannot read '/nonexistent/fill': No such file or directory (os error 2)"),
        (&["buf:1", "&1"], "error: invalid argument '&1': there is no buffer 1 (buffers: 1)"),
        (&["twelve"], "error: invalid argument 'twelve': not an integer, buf:N, str:TEXT or &K"),
        (&seven, "error: too many arguments: 7 given, a function takes at most 6"),
    ];
    for (args, expected) in table {
        let mut words = vec!["call", "libc.so.6", "memset"];
        words.extend_from_slice(args);
        let run = ffitrace(&words);
        assert_eq!(run.status, Some(2), "{args:?}");
        assert_eq!(run.stderr, format!("{expected}\n"), "{args:?}");
        assert_eq!(run.stdout, "", "{args:?}");
    }
}

#[test]
fn clap_errors_are_one_line() {
    for args in [&["call", "libc.so.6"][..], &["frobnicate"], &[], &["call", "libc.so.6", "memset", "--bogus"]] {
        let run = ffitrace(args);
        assert_eq!(run.status, Some(2), "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error: "), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn unknown_symbol_or_library_is_status_2() {
    let run = ffitrace(&["call", "libc.so.6", "no_such_function_here", "buf:4"]);
    assert_eq!(run.status, Some(2));
    assert!(
        run.stderr.starts_with("error: cannot find symbol 'no_such_function_here' in 'libc.so.6': "),
        "{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1);

    let run = ffitrace(&["call", "/nonexistent/libnothing.so", "f"]);
    assert_eq!(run.status, Some(2));
    assert!(run.stderr.starts_with("error: cannot load library '/nonexistent/libnothing.so': "), "{}", run.stderr);
}

#[test]
fn help_documents_the_argument_forms_and_exit_statuses() {
    let run = ffitrace(&["call", "--help"]);
    assert_eq!(run.status, Some(0));
    for needle in ["buf:N@OFF", "{&K+OFF}", "str:TEXT", "&K, &K+OFF, &K-OFF", "N may be 0", "Exit status:", "128+S"] {
        assert!(run.stdout.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn switch_variables_accept_empty_and_case() {
    for (value, status) in [("", Some(0)), ("ON", Some(0)), ("Off", Some(0)), ("maybe", Some(2))] {
        let output = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
            .args(["call", "libc.so.6", "strlen", "str:abc", "--json"])
            .env("FFITRACE_STOPLESS", value)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), status, "FFITRACE_STOPLESS={value:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
}
