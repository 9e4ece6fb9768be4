//! Invalid requests, exit statuses, crashes and ptrace being denied.
//!
//! Tests that end the traced program run this test binary again with `MODE_VARIABLE` set; the
//! sub-process initialises its own supervisor, so its exit status is the supervisor's.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ffitrace::{PageRange, Report, TraceError, TraceOutcome};

use super::support::{expect_eq, trace, Fixtures, Pages, TestResult};

pub const MODE_VARIABLE: &str = "FFITRACE_EMBED_MODE";

pub fn unaligned_pages_rejected(_: &Fixtures) -> TestResult {
    let buffer = Pages::new(2);
    let range = PageRange { start: buffer.base as u64 + 8, len: buffer.len as u64 };
    let mut ran = false;
    let result = ffitrace::trace_call(&[range], || ran = true);
    expect_eq("ran", ran, false)?;
    match result {
        Err(TraceError::InvalidPages(_)) => Ok(()),
        other => Err(format!("expected InvalidPages, got {other:?}")),
    }
}

pub fn overlapping_pages_rejected(_: &Fixtures) -> TestResult {
    let buffer = Pages::new(2);
    let page = ffitrace::page_size() as u64;
    let whole = buffer.range();
    let second = PageRange { start: whole.start + page, len: page };
    for ranges in [vec![whole, second], vec![whole, whole]] {
        let mut ran = false;
        let result = ffitrace::trace_call(&ranges, || ran = true);
        expect_eq("ran", ran, false)?;
        if !matches!(result, Err(TraceError::InvalidPages(_))) {
            return Err(format!("expected InvalidPages for {ranges:?}, got {result:?}"));
        }
    }
    // Nothing was protected: the pages are still writable.
    unsafe { buffer.base.write(1) };
    Ok(())
}

pub fn unmapped_pages_rejected(_: &Fixtures) -> TestResult {
    let mapped = Pages::new(1);
    let unmapped = Pages::new(1);
    let gone = unmapped.range();
    drop(unmapped);
    let result = ffitrace::trace_call(&[mapped.range(), gone], || ());
    if !matches!(result, Err(TraceError::Unmapped { .. })) {
        return Err(format!("expected Unmapped, got {result:?}"));
    }
    unsafe { mapped.base.write(1) };

    // One run whose second page is gone: it is rejected before anything is protected, so its
    // first page stays writable.
    let pages = Pages::new(2);
    let page = ffitrace::page_size();
    // SAFETY: the second page belongs to `pages`; it is mapped again below before the drop.
    let hole = unsafe { pages.base.add(page) };
    if unsafe { libc::munmap(hole.cast(), page) } != 0 {
        return Err("munmap of the second page failed".to_string());
    }
    let result = ffitrace::trace_call(&[pages.range()], || ());
    if !matches!(result, Err(TraceError::Unmapped { start, len }) if start == pages.range().start && len == 2 * page as u64)
    {
        return Err(format!("expected Unmapped for the run with a hole, got {result:?}"));
    }
    // A fault here would kill the test.
    unsafe { pages.base.write(2) };
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: the hole is the range unmapped above, mapped again so that the drop unmaps only
    // this test's pages.
    let remapped = unsafe { libc::mmap(hole.cast(), page, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    if remapped == libc::MAP_FAILED {
        return Err("mapping the hole again failed".to_string());
    }
    Ok(())
}

pub fn nested_call_rejected(_: &Fixtures) -> TestResult {
    let outer = Pages::new(1);
    let inner = Pages::new(1);
    let (inner_result, _) = trace(&[&outer], || ffitrace::trace_call(&[inner.range()], || ()))?;
    match inner_result {
        Err(TraceError::Nested) => Ok(()),
        other => Err(format!("expected Nested, got {other:?}")),
    }
}

pub fn status_calls_inside_call_return(_: &Fixtures) -> TestResult {
    let pages = Pages::new(1);
    let ((status, exit_code), _) = trace(&[&pages], || (ffitrace::tracing_status(), ffitrace::set_exit_code(5)))?;
    expect_eq("tracing_status", status, Ok(()))?;
    match exit_code {
        Err(TraceError::Nested) => Ok(()),
        other => Err(format!("expected Nested from set_exit_code, got {other:?}")),
    }
}

pub fn forked_process_runs_untraced(_: &Fixtures) -> TestResult {
    let pages = Pages::new(1);
    let range = pages.range();
    let base = pages.base;
    // SAFETY: the child only calls trace_call on its own copy of the page, then _exit.
    let child = unsafe { libc::fork() };
    if child == 0 {
        let traced = ffitrace::trace_call(&[range], || unsafe { base.write(9) });
        let untraced = matches!(traced, Ok(ffitrace::Traced { outcome: TraceOutcome::Untraced(_), .. }));
        let written = unsafe { base.read() } == 9;
        // SAFETY: _exit ends the forked copy without running the parent's destructors.
        unsafe { libc::_exit(if untraced && written { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    let waited = unsafe { libc::waitpid(child, &mut status, 0) };
    expect_eq("waitpid", waited, child)?;
    expect_eq("forked process exit status (0: ran untraced and wrote)", status, 0)?;
    // The program itself is still traced.
    let ((), trace) = trace(&[&pages], || unsafe { base.write(4) })?;
    expect_eq("accesses after the fork", trace.accesses.len(), 1)
}

pub fn background_system_calls_survive(_: &Fixtures) -> TestResult {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let running = stop.clone();
    // A thread that makes system calls all the time, so some stop just as a call ends.
    let background = std::thread::spawn(move || {
        while !running.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: getppid has no preconditions.
            unsafe { libc::getppid() };
        }
    });
    let pages = Pages::new(1);
    let base = pages.base;
    let mut result = Ok(());
    for round in 0..5000u32 {
        let ((), trace) = match trace(&[&pages], || unsafe { base.write(round as u8) }) {
            Ok(traced) => traced,
            Err(error) => {
                result = Err(format!("call {round}: {error}"));
                break;
            }
        };
        if trace.accesses.len() != 1 {
            result = Err(format!("call {round}: {} accesses, expected 1", trace.accesses.len()));
            break;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.join().map_err(|_| "the background thread panicked".to_string())?;
    result
}

pub fn panic_in_call_ends_it(_: &Fixtures) -> TestResult {
    let pages = Pages::new(1);
    let range = pages.range();
    let base = pages.base;
    let previous_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let outcome = std::panic::catch_unwind(|| {
        let _ = ffitrace::trace_call(&[range], || {
            unsafe { base.write(7) };
            panic!("native callback failed");
        });
    });
    std::panic::set_hook(previous_hook);
    expect_eq("panic resumed", outcome.is_err(), true)?;
    // The pages are open again and the next call is traced normally.
    expect_eq("byte written before the panic", unsafe { base.read() }, 7)?;
    unsafe { base.write(1) };
    let (_, trace) = trace(&[&pages], || unsafe { base.add(8).write_volatile(2) })?;
    let writes: Vec<(u64, u32)> =
        trace.accesses.iter().map(|access| (access.addr - base as u64, access.size)).collect();
    expect_eq("accesses after the panic", writes, vec![(8, 1)])
}

pub fn unmapped_during_call_keeps_trace(_: &Fixtures) -> TestResult {
    let kept = Pages::new(1);
    let dropped = Pages::new(1);
    let (kept_base, dropped_base, dropped_len) = (kept.base, dropped.base, dropped.len);
    let ranges = [kept.range(), dropped.range()];
    let traced = ffitrace::trace_call(&ranges, || unsafe {
        kept_base.write_volatile(3);
        libc::munmap(dropped_base.cast(), dropped_len)
    })
    .map_err(|error| format!("trace_call failed after the call ran: {error}"))?;
    std::mem::forget(dropped);
    expect_eq("munmap result", traced.value, 0)?;
    let TraceOutcome::Traced(trace) = traced.outcome else {
        return Err(format!("call not traced: {:?}", traced.outcome));
    };
    let names: Vec<&str> = trace.system_calls.iter().map(|call| call.name.as_str()).collect();
    expect_eq("system calls", names, vec!["munmap"])?;
    expect_eq("accesses", trace.accesses.len(), 1)?;
    // The page that is still mapped was reopened.
    expect_eq("kept page", unsafe { kept_base.read_volatile() }, 3)
}

pub fn exit_code_forwarded(_: &Fixtures) -> TestResult {
    let output = run_mode_process("exit-code")?;
    expect_eq("exit status", output.status.code(), Some(23))
}

pub fn set_exit_code_overrides_zero(_: &Fixtures) -> TestResult {
    let output = run_mode_process("set-exit-code")?;
    expect_eq("exit status", output.status.code(), Some(42))
}

pub fn crash_in_call_reported(_: &Fixtures) -> TestResult {
    let output = run_mode_process("crash")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    expect_eq("exit status", output.status.code(), Some(128 + libc::SIGSEGV))?;
    expect_eq("report", stderr.trim(), "crash signal 11 at 0x0, 2 accesses traced before it")
}

pub fn exit_during_call(_: &Fixtures) -> TestResult {
    let output = run_mode_process("exit-in-call")?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    expect_eq("exit status", output.status.code(), Some(7))?;
    expect_eq("report", stderr.trim(), "died with Exited(7), 2 accesses traced before it")
}

pub fn ptrace_denied_runs_untraced(_: &Fixtures) -> TestResult {
    let output = run_mode_process("ptrace-denied")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    expect_eq("exit status", output.status.code(), Some(0))?;
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or_default();
    if !first.starts_with("init: ptrace is not permitted: PTRACE_SEIZE failed") {
        return Err(format!("unexpected init message: {first}"));
    }
    expect_eq("call", lines.next(), Some("untraced call returned 42"))
}

/// Runs this binary in `mode` and waits at most a minute for it.
fn run_mode_process(mode: &str) -> Result<Output, String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut child = Command::new(executable)
        .env(MODE_VARIABLE, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("spawning the {mode} process failed: {error}"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().map_err(|error| error.to_string())?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            return Err(format!("the {mode} process hung"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().map_err(|error| error.to_string())
}

/// Entry point of the sub-processes; never returns.
pub fn run_mode(mode: &str) -> ! {
    match mode {
        "exit-code" => {
            init_with_report();
            std::process::exit(23);
        }
        "set-exit-code" => {
            init_with_report();
            if let Err(error) = ffitrace::set_exit_code(42) {
                println!("set_exit_code failed: {error}");
                std::process::exit(1);
            }
            std::process::exit(0);
        }
        "crash" | "exit-in-call" => {
            let fixtures = load_built_fixtures();
            init_with_report();
            let buffer = Pages::new(1);
            let increment = fixtures.function("increment_int").unwrap_or_else(|error| fail(&error));
            let crash = fixtures.function("write_null").unwrap_or_else(|error| fail(&error));
            let _ = ffitrace::trace_call(&[buffer.range()], || {
                increment(buffer.base);
                if mode == "crash" {
                    crash(buffer.base);
                }
                // SAFETY: _exit ends the process without running anything else.
                unsafe { libc::_exit(7) }
            });
            fail("the traced call returned")
        }
        "ptrace-denied" => {
            deny_ptrace();
            match unsafe { ffitrace::init(ffitrace::Options::default()) } {
                Ok(()) => fail("init succeeded although ptrace is denied"),
                Err(error) => println!("init: {error}"),
            }
            let buffer = Pages::new(1);
            match ffitrace::trace_call(&[buffer.range()], || 42) {
                Ok(traced) if matches!(traced.outcome, TraceOutcome::Untraced(_)) => {
                    println!("untraced call returned {}", traced.value)
                }
                other => println!("unexpected result: {other:?}"),
            }
            std::process::exit(0);
        }
        other => fail(&format!("unknown mode {other}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(99);
}

fn load_built_fixtures() -> Fixtures {
    Fixtures::build().unwrap_or_else(|error| fail(&error))
}

/// Initialises tracing with a report handler that prints one line per report to stderr.
fn init_with_report() {
    let report = |report: &Report, _: &ffitrace::ProcessView| {
        let line = match report {
            Report::Crash(crash) => {
                let traced = crash.trace.as_ref().map_or(0, |trace| trace.accesses.len());
                format!("crash signal {} at {:#x}, {traced} accesses traced before it", crash.info.signo, crash.info.addr)
            }
            Report::DiedDuringCall { status, trace, .. } => {
                format!("died with {status:?}, {} accesses traced before it", trace.accesses.len())
            }
            Report::ProtocolError { message, .. } => format!("protocol error: {message}"),
        };
        let _ = writeln!(std::io::stderr(), "{line}");
    };
    let options = ffitrace::Options { report: Box::new(report), ..super::options_from_environment() };
    // SAFETY: called at the start of a sub-process that has a single thread.
    if let Err(error) = unsafe { ffitrace::init(options) } {
        fail(&format!("init failed: {error}"));
    }
}

/// Installs a seccomp filter that makes `ptrace` fail with EPERM, as container runtimes do.
fn deny_ptrace() {
    const LOAD_SYSCALL_NUMBER: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JUMP_IF_EQUAL: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
    const RETURN: u16 = 0x06; // BPF_RET | BPF_K
    const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
    const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
    let filter = [
        libc::sock_filter { code: LOAD_SYSCALL_NUMBER, jt: 0, jf: 0, k: 0 },
        libc::sock_filter { code: JUMP_IF_EQUAL, jt: 0, jf: 1, k: libc::SYS_ptrace as u32 },
        libc::sock_filter { code: RETURN, jt: 0, jf: 0, k: SECCOMP_RET_ERRNO | libc::EPERM as u32 },
        libc::sock_filter { code: RETURN, jt: 0, jf: 0, k: SECCOMP_RET_ALLOW },
    ];
    let program = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    // SAFETY: `program` points at `filter`, which outlives both calls.
    let installed = unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
            && libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &program as *const _) == 0
    };
    if !installed {
        fail("installing the seccomp filter failed");
    }
}

/// Returns the permissions (such as `r--p`) of the mapping that contains `addr`, read from
/// /proc/self/maps.
fn permissions_at(addr: u64) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (start, end) = fields.next()?.split_once('-')?;
        let (start, end) = (u64::from_str_radix(start, 16).ok()?, u64::from_str_radix(end, 16).ok()?);
        (start <= addr && addr < end).then(|| fields.next().map(str::to_string)).flatten()
    })
}

/// Checks that a range with an unmapped page is rejected before any page's protection
/// changes: read-only pages around the hole, a hole first, and a read-only shared file page.
pub fn unmapped_pages_keep_protection(_: &Fixtures) -> TestResult {
    let page = ffitrace::page_size();
    // Read-only pages 0 and 2, page 1 unmapped.
    let pages = Pages::new(3);
    // SAFETY: the pages belong to `pages`, and the hole is mapped again below before the drop.
    unsafe {
        libc::mprotect(pages.base.cast(), 3 * page, libc::PROT_READ);
        libc::munmap(pages.at(page).cast(), page);
    }
    let result = ffitrace::trace_call(&[pages.range()], || ());
    if !matches!(result, Err(TraceError::Unmapped { .. })) {
        return Err(format!("expected Unmapped, got {result:?}"));
    }
    expect_eq("page before the hole", permissions_at(pages.base as u64), Some("r--p".to_string()))?;
    expect_eq("page after the hole", permissions_at(pages.at(2 * page) as u64), Some("r--p".to_string()))?;

    // The hole first.
    let first = PageRange { start: pages.at(page) as u64, len: 2 * page as u64 };
    let result = ffitrace::trace_call(&[first], || ());
    if !matches!(result, Err(TraceError::Unmapped { .. })) {
        return Err(format!("expected Unmapped for the hole first, got {result:?}"));
    }
    expect_eq("page after a leading hole", permissions_at(pages.at(2 * page) as u64), Some("r--p".to_string()))?;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
    // SAFETY: the hole is the page unmapped above, mapped again so that the drop unmaps only
    // this test's pages.
    if unsafe { libc::mmap(pages.at(page).cast(), page, libc::PROT_READ, flags, -1, 0) } == libc::MAP_FAILED {
        return Err("mapping the hole again failed".to_string());
    }

    // A shared mapping of a file opened read-only, which could not be made writable again: it
    // keeps its protection.
    let file = std::fs::File::open("/proc/self/exe").map_err(|error| error.to_string())?;
    let area = Pages::new(2);
    // SAFETY: the file is mapped over the first page of `area` and the second page is unmapped.
    // Both are mapped again below before the drop.
    let shared = unsafe {
        use std::os::unix::io::AsRawFd;
        let flags = libc::MAP_SHARED | libc::MAP_FIXED;
        libc::mmap(area.base.cast(), page, libc::PROT_READ, flags, file.as_raw_fd(), 0)
    };
    if shared == libc::MAP_FAILED {
        return Err("mapping the file failed".to_string());
    }
    // SAFETY: the second page belongs to `area`.
    unsafe { libc::munmap(area.at(page).cast(), page) };
    let result = ffitrace::trace_call(&[area.range()], || ());
    if !matches!(result, Err(TraceError::Unmapped { .. })) {
        return Err(format!("expected Unmapped for the file page, got {result:?}"));
    }
    let permissions = permissions_at(area.base as u64);
    // SAFETY: both pages of `area` are mapped anonymous again, so the drop unmaps only them.
    unsafe { libc::mmap(area.base.cast(), 2 * page, libc::PROT_READ | libc::PROT_WRITE, flags, -1, 0) };
    expect_eq("file page after the error", permissions, Some("r--s".to_string()))
}
