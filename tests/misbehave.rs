//! Native code that starts threads, forks, runs commands and takes signals during a traced
//! call, run through `ffitrace call` under each page protection.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

const PROTECTIONS: [&str; 2] = ["auto", "mprotect"];

fn fixture() -> &'static PathBuf {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/misbehave.c");
        let library = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("misbehave.so");
        let status = Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-pthread", "-o"])
            .arg(&library)
            .arg(source)
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc failed on {source}");
        library
    })
}

/// One access line of the JSON output.
#[derive(Debug, PartialEq, Eq)]
struct Access {
    kind: String,
    buffer: i64,
    offset: i64,
    size: i64,
}

struct Run {
    output: Output,
    accesses: Vec<Access>,
    buffers: BTreeMap<i64, Vec<u8>>,
    returned: Option<u64>,
}

fn call(protection: &str, symbol: &str, args: &[&str]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .env("FFITRACE_PROTECTION", protection)
        .arg("call")
        .arg(fixture())
        .arg(symbol)
        .args(args)
        .arg("--json")
        .output()
        .expect("ffitrace runs");
    let mut run = Run { output, accesses: Vec::new(), buffers: BTreeMap::new(), returned: None };
    for line in String::from_utf8_lossy(&run.output.stdout).lines() {
        let value: Value = serde_json::from_str(line).expect("each stdout line is JSON");
        match value["kind"].as_str() {
            Some("read" | "write") => run.accesses.push(Access {
                kind: value["kind"].as_str().unwrap_or_default().to_string(),
                buffer: value["buffer"].as_i64().unwrap_or(-1),
                offset: value["offset"].as_i64().unwrap_or(i64::MIN),
                size: value["size"].as_i64().unwrap_or(0),
            }),
            Some("buffer") => {
                let hex = value["bytes"].as_str().unwrap_or_default();
                let bytes = (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0)).collect();
                run.buffers.insert(value["index"].as_i64().unwrap_or(-1), bytes);
            }
            Some("return") => run.returned = value["value"].as_u64(),
            _ => {}
        }
    }
    run
}

fn assert_success(run: &Run, protection: &str) {
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert_eq!(run.output.status.code(), Some(0), "[{protection}] exit status; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "[{protection}] panic: {stderr}");
}

fn write(buffer: i64, offset: i64, size: i64) -> Access {
    Access { kind: "write".to_string(), buffer, offset, size }
}

#[test]
fn four_threads_cover_buffer_once() {
    for protection in PROTECTIONS {
        let run = call(protection, "four_threads_write_quarters", &["buf:4096", "4096"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(4), "[{protection}] threads joined");

        let mut times_written = vec![0u32; 4096];
        for access in &run.accesses {
            assert_eq!(access.kind, "write", "[{protection}] only writes: {access:?}");
            assert_eq!(access.size, 8, "[{protection}] word writes: {access:?}");
            for offset in access.offset..access.offset + access.size {
                times_written[offset as usize] += 1;
            }
        }
        let wrong: Vec<usize> = (0..4096).filter(|&i| times_written[i] != 1).take(8).collect();
        assert!(wrong.is_empty(), "[{protection}] bytes not written exactly once: {wrong:?}");
        assert_eq!(run.accesses.len(), 512, "[{protection}] one access per word");
    }
}

#[test]
fn forked_child_uses_its_copy() {
    for protection in PROTECTIONS {
        let run = call(protection, "fork_child_uses_copy", &["buf:16"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(7), "[{protection}] the child's write and read succeeded");
        // The child's accesses are its own copy's and untraced; the parent's write is traced.
        assert_eq!(run.accesses, vec![write(0, 8, 1)], "[{protection}] accesses");
        assert_eq!(run.buffers[&0][0], 0, "[{protection}] the parent's byte 0 is untouched");
        assert_eq!(run.buffers[&0][8], 7, "[{protection}] byte 8");
    }
}

#[test]
fn system_runs_a_command() {
    for protection in PROTECTIONS {
        let run = call(protection, "system_exit_status", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(3), "[{protection}] system() status");
        assert_eq!(run.accesses, vec![write(0, 0, 1)], "[{protection}] accesses");
    }
}

#[test]
fn popen_reads_command_output() {
    for protection in PROTECTIONS {
        let run = call(protection, "popen_reads_output", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(2), "[{protection}] bytes read from the pipe");
        assert_eq!(&run.buffers[&0][..2], b"hi", "[{protection}] output copied");
        assert_eq!(run.accesses, vec![write(0, 0, 2)], "[{protection}] accesses");
    }
}

#[test]
fn vfork_then_exec() {
    for protection in PROTECTIONS {
        let run = call(protection, "vfork_exec_true", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(0), "[{protection}] /bin/true status");
        assert_eq!(run.accesses, vec![write(0, 0, 1)], "[{protection}] accesses");
    }
}

#[test]
fn alarm_handler_runs_and_is_traced() {
    for protection in PROTECTIONS {
        let run = call(protection, "alarm_during_accesses", &["buf:16"]);
        assert_success(&run, protection);
        // The timer keeps firing until the loop counts three alarms and stops it, so a few more
        // may arrive in between; each handled alarm writes once.
        let alarms = run.returned.unwrap_or(0);
        assert!(alarms >= 3, "[{protection}] {alarms} alarms handled");
        let handler_writes: Vec<&Access> = run.accesses.iter().filter(|access| access.offset == 8).collect();
        assert_eq!(handler_writes.len() as u64, alarms, "[{protection}] one handler write per alarm");
        assert!(handler_writes.iter().all(|access| **access == write(0, 8, 8)), "[{protection}] handler writes");
        assert!(
            run.accesses.iter().all(|access| *access == write(0, 0, 8) || *access == write(0, 8, 8)),
            "[{protection}] only the loop's and the handler's writes: {:?}",
            run.accesses
        );
        assert_eq!(u64::from(run.buffers[&0][8]), alarms, "[{protection}] alarm count stored");
    }
}

#[test]
fn mprotect_on_traced_page_reported() {
    // With mprotect the native code's own mprotect ends tracing of the page, which is
    // reported and makes the trace incomplete (exit status 3).
    let run = call("mprotect", "mprotect_traced_page", &["buf:8"]);
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert_eq!(run.output.status.code(), Some(3), "stderr: {stderr}");
    assert!(stderr.contains("called mprotect("), "stderr: {stderr}");
    assert!(stderr.contains("changes the protection of traced pages"), "stderr: {stderr}");
    assert_eq!(run.returned, Some(0), "mprotect succeeded");
    assert_eq!(run.buffers[&0][0], 1, "the write happened");

    // A protection key survives mprotect, so the write after it is still traced.
    if !cpu_has_protection_keys() {
        return;
    }
    let run = call("auto", "mprotect_traced_page", &["buf:8"]);
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    assert_eq!(run.output.status.code(), Some(0), "stderr: {stderr}");
    assert_eq!(run.accesses, vec![write(0, 0, 1)], "accesses with a protection key");
}

/// Returns true if the CPU has protection keys enabled by the OS (the `ospke` flag).
fn cpu_has_protection_keys() -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo.lines().any(|line| line.starts_with("flags") && line.split_whitespace().any(|flag| flag == "ospke"))
}

#[test]
fn system_call_into_traced_buffer_reported() {
    for protection in PROTECTIONS {
        let run = call(protection, "read_into_traced_buffer", &["buf:8"]);
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert_eq!(run.output.status.code(), Some(3), "[{protection}] stderr: {stderr}");
        assert!(stderr.contains("called read(0x"), "[{protection}] stderr: {stderr}");
        assert!(stderr.contains("fail with EFAULT"), "[{protection}] stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "[{protection}] only read is reported: {stderr}");
        assert_eq!(run.returned, Some(u64::MAX), "[{protection}] read returned -1");
        assert!(run.accesses.is_empty(), "[{protection}] no access traced: {:?}", run.accesses);
    }
}

#[test]
fn new_thread_system_call_into_traced_buffer_reported() {
    for protection in PROTECTIONS {
        let run = call(protection, "thread_reads_into_traced_buffer", &["buf:16"]);
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert_eq!(run.output.status.code(), Some(3), "[{protection}] stderr: {stderr}");
        assert!(stderr.contains("called read(0x"), "[{protection}] stderr: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "[{protection}] only read is reported: {stderr}");
        assert_eq!(run.returned, Some(u64::MAX), "[{protection}] read returned -1");
        assert_eq!(run.accesses, vec![write(0, 8, 1)], "[{protection}] the thread's own store is traced");
    }
}

#[test]
fn system_calls_while_other_thread_steps() {
    for protection in PROTECTIONS {
        let run = call(protection, "syscalls_while_other_steps", &["buf:64", "3000"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(3000), "[{protection}] every system call returned");
        assert!(!run.accesses.is_empty(), "[{protection}] the locked adds are traced");
    }
}

#[test]
fn sigsys_handler_survives_call() {
    for protection in PROTECTIONS {
        let run = call(protection, "sigsys_handler_runs_twice", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(2), "[{protection}] handler runs");
        assert_eq!(run.accesses, vec![write(0, 0, 1)], "[{protection}] accesses");
    }
}

#[test]
fn seccomp_trap_reaches_handler() {
    for protection in PROTECTIONS {
        let run = call(protection, "seccomp_trap_returns_777", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(777), "[{protection}] the handler's return value");
    }
}

#[test]
fn int80_system_call_runs_unreported() {
    for protection in PROTECTIONS {
        let run = call(protection, "int80_getpid_matches", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(0), "[{protection}] int 0x80 getpid returns the pid");
        let stderr = String::from_utf8_lossy(&run.output.stderr);
        assert!(!stderr.contains("called"), "[{protection}] no system-call note: {stderr}");
    }
}

#[test]
fn signal_contexts_show_native_code() {
    for protection in PROTECTIONS {
        let run = call(protection, "signal_contexts_stay_native", &["buf:8", "5000"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(0), "[{protection}] interrupted places outside loaded objects");
    }
}

#[test]
fn blocked_sigsys_stays_blocked() {
    for protection in PROTECTIONS {
        let run = call(protection, "sigsys_stays_blocked", &["buf:8"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(1), "[{protection}] SIGSYS still blocked after a system call");
    }
}

#[test]
fn own_segv_handler_sees_untraced_fault() {
    for protection in PROTECTIONS {
        let run = call(protection, "own_segv_handler_recovers", &["buf:16"]);
        assert_success(&run, protection);
        assert_eq!(run.returned, Some(1), "[{protection}] faults the handler saw");
        assert_eq!(run.accesses, vec![write(0, 0, 8), write(0, 8, 8)], "[{protection}] accesses");
    }
}
