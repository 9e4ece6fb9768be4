//! Fault injection at each step of the driver: the traced program is killed, terminated or
//! made to exit, or the supervisor itself exits. After each fault the supervisor must end
//! promptly with the right status, print the accesses traced so far and leave no process
//! behind.
//!
//! The injection hook exists only in builds with the `fault-injection` feature (see
//! `src/driver/inject.rs`), so run this suite with
//!
//! ```text
//! cargo test --release --features fault-injection --test fault_injection
//! ```
//!
//! Each test runs one function of `tests/fixtures/fault_injection.c` once with
//! `FFITRACE_INJECT=list`, which prints every step the supervisor reaches, then once per
//! injection: at the first three and the last two occurrences of each step, with each of
//! the four faults. The steps reached cover every state of the core:
//!
//! - idle: `Continue` after the call, `Reply` of the trace, `Finish`;
//! - awaiting a message: `ReceiveMessage`;
//! - tracing: `ContinueToSyscall`, `Syscall` and `Message` events;
//! - carrying out an access in the supervisor: `ReadMemory` and the `Memory` event;
//! - stepping: with mprotect the first three `Step`s open the pages, step the instruction
//!   and close them; with protection keys `SetKeyRights` and `Step`;
//! - fetching vector registers: `ReadVectorRegisters`; fetching a disposition:
//!   `ReadDisposition`;
//! - waiting and held threads with mprotect: `Interrupt` and the `OtherStop` events of the
//!   second thread;
//! - signals held back during a step: `QueueSignal`; forked processes: `Detach`;
//! - a crash: `Report`.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long one run may take before it counts as a hang.
const RUN_DEADLINE: Duration = Duration::from_secs(20);
/// How long the processes of a run may take to disappear after `ffitrace` exited.
const CLEANUP_DEADLINE: Duration = Duration::from_secs(5);
/// How many of the first occurrences of each step get an injection.
const FIRST_OCCURRENCES: u32 = 3;
/// How many of the last occurrences of each step in the uninjected run get an injection.
/// The counts of some steps vary from run to run, so these may land elsewhere or not at all.
const LAST_OCCURRENCES: u32 = 2;
/// Runs in flight at once in each test.
const PARALLEL_RUNS: usize = 2;
/// The status of `ffitrace` when the program dies of SIGSEGV.
const SIGSEGV_STATUS: i32 = 128 + 11;

/// The faults `FFITRACE_INJECT` injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillProgram,
    TermProgram,
    ExitProgram,
    KillSupervisor,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::KillProgram, Fault::TermProgram, Fault::ExitProgram, Fault::KillSupervisor];

    fn name(self) -> &'static str {
        match self {
            Fault::KillProgram => "kill-program",
            Fault::TermProgram => "term-program",
            Fault::ExitProgram => "exit-program",
            Fault::KillSupervisor => "kill-supervisor",
        }
    }

    /// Returns the status of `ffitrace` when the fault alone decides the outcome: 128 plus
    /// the signal, the fixture's `_exit(42)` for SIGUSR2, or the supervisor's `_exit(99)`.
    fn status(self) -> i32 {
        match self {
            Fault::KillProgram => 128 + 9,
            Fault::TermProgram => 128 + 15,
            Fault::ExitProgram => 42,
            Fault::KillSupervisor => 99,
        }
    }
}

/// One fixture function traced under one page protection.
struct Scenario {
    symbol: &'static str,
    args: &'static [&'static str],
    protection: &'static str,
    /// The status of the run without injection.
    natural_status: i32,
    /// The step whose last occurrence handles the program's own fatal fault. From there on
    /// a SIGTERM or SIGUSR2 stays pending and the program dies of the fault.
    fatal_from: Option<&'static str>,
    /// Only steps with this prefix get injections (all when empty).
    only: &'static str,
    /// Steps at which at least one fault must fire for the test to count as covering them.
    required: &'static [&'static str],
    /// Calls start and end through the call board (`FFITRACE_STOPLESS`), rather than with
    /// the protocol signal and the end marker.
    stopless: bool,
}

impl Scenario {
    fn label(&self) -> String {
        format!("{} {}", self.protection, self.symbol)
    }
}

/// One access line of the JSON output, without its address, which changes from run to run.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Access {
    kind: String,
    buffer: i64,
    offset: i64,
    size: u64,
}

/// The result of one run of `ffitrace`.
struct Outcome {
    /// The exit status, `None` when `ffitrace` itself died of a signal or hung.
    status: Option<i32>,
    stdout: String,
    stderr: String,
    /// The accesses the program completed, from the fixture's progress counter.
    progress: u64,
    /// The processes of the run when `ffitrace` had not exited within [`RUN_DEADLINE`].
    hang: Option<Vec<String>>,
    /// Processes of the run still present [`CLEANUP_DEADLINE`] after `ffitrace` exited.
    leftovers: Vec<String>,
}

/// The uninjected run: its accesses and every injection point, in order.
struct Baseline {
    accesses: Vec<Access>,
    points: Vec<String>,
}

/// Compiles the fixture library once per test process.
fn fixture() -> &'static Path {
    static LIBRARY: OnceLock<PathBuf> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fault_injection.c");
        let library = scratch_dir().join("fault_injection.so");
        // -O1 keeps every access of the fixture one instruction, in source order.
        let status = Command::new("gcc")
            .args(["-O1", "-shared", "-fPIC", "-pthread", "-o"])
            .arg(&library)
            .arg(source)
            .status()
            .expect("gcc runs");
        assert!(status.success(), "gcc failed on {source}");
        library
    })
}

fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fault-injection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch directory can be created");
        dir
    })
}

/// Runs `ffitrace call` on the scenario with `FFITRACE_INJECT` set to `inject`, in a process
/// group of its own, and waits for it and every process of the group to end.
fn run(scenario: &Scenario, inject: &str) -> Outcome {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    become_subreaper();
    let number = RUNS.fetch_add(1, Ordering::Relaxed);
    let file = |kind: &str| scratch_dir().join(format!("{kind}-{number}"));
    let (progress_path, stdout_path, stderr_path) = (file("progress"), file("stdout"), file("stderr"));
    std::fs::write(&progress_path, [0u8; 4096]).expect("the progress file can be written");
    let stdout = std::fs::File::create(&stdout_path).expect("the stdout file can be created");
    let stderr = std::fs::File::create(&stderr_path).expect("the stderr file can be created");

    let mut child = Command::new(env!("CARGO_BIN_EXE_ffitrace"))
        .arg("call")
        .arg(fixture())
        .arg(scenario.symbol)
        .args(scenario.args)
        .arg("--json")
        .env("FFITRACE_PROTECTION", scenario.protection)
        .env("FFITRACE_STOPLESS", if scenario.stopless { "1" } else { "0" })
        .env("FFITRACE_INJECT", inject)
        .env("FAULT_INJECTION_PROGRESS_FILE", &progress_path)
        .env_remove("FFITRACE_LOG")
        .env_remove("FFITRACE_EMULATE")
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .expect("ffitrace starts");
    let group = child.id() as i32;

    let started = Instant::now();
    let mut hang = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for ffitrace works") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            hang = Some(processes_in_group(group));
            kill_group(group);
            break child.wait().expect("waiting for ffitrace works");
        }
        std::thread::sleep(Duration::from_millis(2));
    };

    let mut leftovers = Vec::new();
    let exited = Instant::now();
    reap_orphans(group);
    while group_exists(group) {
        if exited.elapsed() > CLEANUP_DEADLINE {
            leftovers = processes_in_group(group);
            kill_group(group);
            std::thread::sleep(Duration::from_millis(100));
            reap_orphans(group);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
        reap_orphans(group);
    }

    let read = |path: &Path| String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let progress_bytes = std::fs::read(&progress_path).unwrap_or_default();
    let progress = progress_bytes.get(..8).map_or(0, |bytes| u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8])));
    let outcome = Outcome {
        status: status.code(),
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
        progress,
        hang,
        leftovers,
    };
    for path in [progress_path, stdout_path, stderr_path] {
        let _ = std::fs::remove_file(path);
    }
    outcome
}

/// Makes this test process the parent of every run's orphans, so it can reap them at once.
/// An unreaped zombie still counts as a member of its process group, and the init process
/// of a container may take seconds to reap one.
fn become_subreaper() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
        let result = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
        assert_eq!(result, 0, "PR_SET_CHILD_SUBREAPER failed: {}", std::io::Error::last_os_error());
    });
}

/// Reaps the processes of `group` that have ended and been handed to this process. Call it
/// only once `ffitrace`, the group's leader, has been reaped through its `Child`.
fn reap_orphans(group: i32) {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a live int for waitpid to fill.
        let reaped = unsafe { libc::waitpid(-group, &mut status, libc::WNOHANG) };
        if reaped <= 0 {
            return;
        }
    }
}

/// True while any process is in `group`, zombies included.
fn group_exists(group: i32) -> bool {
    // SAFETY: kill with signal 0 sends nothing; it only checks that the group exists.
    let result = unsafe { libc::kill(-group, 0) };
    result == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

fn kill_group(group: i32) {
    // SAFETY: kill takes no pointers; the group is the one this test started.
    unsafe { libc::kill(-group, libc::SIGKILL) };
}

/// Describes each process of `group` as `pid N (name) state S`, from `/proc/N/stat`.
fn processes_in_group(group: i32) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // The name is in parentheses and may contain spaces, so fields count from its end.
        let Some(name_end) = stat.rfind(')') else { continue };
        let fields: Vec<&str> = stat[name_end + 1..].split_whitespace().collect();
        if fields.get(2).and_then(|pgrp| pgrp.parse::<i32>().ok()) == Some(group) {
            found.push(format!("pid {} state {}", &stat[..name_end + 1], fields[0]));
        }
    }
    found
}

/// Parses the access lines of the JSON output; `Err` names the first line that is not JSON.
fn accesses(stdout: &str) -> Result<Vec<Access>, String> {
    let mut found = Vec::new();
    for line in stdout.lines() {
        let value: Value =
            serde_json::from_str(line).map_err(|error| format!("stdout line {line:?} is not JSON: {error}"))?;
        if let Some(kind @ ("read" | "write")) = value["kind"].as_str() {
            found.push(Access {
                kind: kind.to_string(),
                buffer: value["buffer"].as_i64().unwrap_or(-1),
                offset: value["offset"].as_i64().unwrap_or(i64::MIN),
                size: value["size"].as_u64().unwrap_or(0),
            });
        }
    }
    Ok(found)
}

/// Runs the scenario without injection and checks that it succeeds on its own terms.
fn baseline(scenario: &Scenario) -> Baseline {
    let outcome = run(scenario, "list");
    let label = scenario.label();
    assert!(outcome.hang.is_none(), "[{label}] the uninjected run hung");
    assert_eq!(
        outcome.status,
        Some(scenario.natural_status),
        "[{label}] uninjected status; stderr:\n{}",
        outcome.stderr
    );
    assert!(!outcome.stderr.contains("panicked"), "[{label}] the uninjected run panicked:\n{}", outcome.stderr);
    let accesses = accesses(&outcome.stdout).unwrap_or_else(|error| panic!("[{label}] {error}"));
    assert_eq!(accesses.len() as u64, outcome.progress, "[{label}] the fixture's counter disagrees with the trace");
    let points: Vec<String> = outcome
        .stderr
        .lines()
        .filter_map(|line| line.strip_prefix("ffitrace: injection point "))
        .map(str::to_string)
        .collect();
    assert!(!points.is_empty(), "[{label}] FFITRACE_INJECT=list printed no point; is the fault-injection feature on?");
    Baseline { accesses, points }
}

/// Splits `before-action:Step:3` into `before-action:Step` and 3.
fn split_point(point: &str) -> (&str, u32) {
    let (step, occurrence) = point.rsplit_once(':').expect("a point ends with its occurrence");
    (step, occurrence.parse().expect("the occurrence is a number"))
}

/// The result of one injected run that fired.
struct Checked {
    step: String,
    failures: Vec<String>,
}

/// Checks one injected run; returns `None` when the injection never fired.
fn check(scenario: &Scenario, baseline: &Baseline, point: &str, fault: Fault, outcome: &Outcome) -> Option<Checked> {
    let context = format!("[{}] {point} {}", scenario.label(), fault.name());
    let mut failures = Vec::new();
    let stderr_tail = || {
        let lines: Vec<&str> = outcome.stderr.lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n    ")
    };
    if let Some(processes) = &outcome.hang {
        failures.push(format!("{context}: ffitrace did not exit within {RUN_DEADLINE:?}; processes of the run: {processes:?}; stderr:\n    {}", stderr_tail()));
        return Some(Checked { step: split_point(point).0.to_string(), failures });
    }
    let marker = format!("ffitrace: injected {} at {point}\n", fault.name());
    if !outcome.stderr.contains(&marker) {
        return None;
    }

    let expected = expected_statuses(scenario, baseline, point, fault, outcome);
    if !outcome.status.is_some_and(|status| expected.contains(&status)) {
        failures.push(format!(
            "{context}: exit status {:?}, expected one of {expected:?}; stderr:\n    {}",
            outcome.status,
            stderr_tail()
        ));
    }
    if !outcome.leftovers.is_empty() {
        failures.push(format!(
            "{context}: processes left {CLEANUP_DEADLINE:?} after ffitrace exited: {:?}",
            outcome.leftovers
        ));
    }
    if outcome.stderr.contains("panicked") {
        failures.push(format!("{context}: panic on stderr:\n    {}", stderr_tail()));
    }
    match accesses(&outcome.stdout) {
        Err(error) => failures.push(format!("{context}: {error}")),
        Ok(printed) => {
            if !baseline.accesses.starts_with(&printed) {
                failures.push(format!(
                    "{context}: the {} accesses printed are not a prefix of the {} of the uninjected run",
                    printed.len(),
                    baseline.accesses.len()
                ));
            }
            // The supervisor records an access before the program runs the next instruction,
            // so a dead program's trace contains at least as many as its counter shows. Once
            // the program acknowledged the trace it prints it itself, and a death while it
            // prints leaves part of it (the exit status tells): only the prefix is checked.
            let printing = trace_sent(baseline, point);
            if fault != Fault::KillSupervisor && !printing && (printed.len() as u64) < outcome.progress {
                let when = if outcome.progress == baseline.accesses.len() as u64 {
                    "after its last access"
                } else {
                    "during the call"
                };
                failures.push(format!(
                    "{context}: {} accesses printed, but the program had completed {} when it died {when}; stderr:\n    {}",
                    printed.len(),
                    outcome.progress,
                    stderr_tail()
                ));
            }
        }
    }
    Some(Checked { step: split_point(point).0.to_string(), failures })
}

/// Returns true if the injection point comes after the supervisor sent the trace.
fn trace_sent(baseline: &Baseline, point: &str) -> bool {
    let index = baseline.points.iter().position(|known| known == point);
    match (index, trace_handed_over(baseline)) {
        (Some(index), Some(handed_over)) => index > handed_over,
        _ => false,
    }
}

/// Returns the position in the uninjected run of the step that hands the program its
/// trace: the reply with the trace, or with calls on the board the last records published,
/// after which the program runs to its end without another stop.
fn trace_handed_over(baseline: &Baseline) -> Option<usize> {
    let reply = baseline.points.iter().position(|known| known == "before-action:Reply:2");
    reply.or_else(|| baseline.points.iter().rposition(|known| split_point(known).0 == "before-action:Publish"))
}

/// Returns the statuses `ffitrace` may end with after the injection.
fn expected_statuses(
    scenario: &Scenario,
    baseline: &Baseline,
    point: &str,
    fault: Fault,
    outcome: &Outcome,
) -> Vec<i32> {
    if fault == Fault::KillSupervisor {
        return vec![fault.status()];
    }
    let position = |wanted: &dyn Fn(&String) -> bool| baseline.points.iter().position(wanted);
    let Some(index) = position(&|known| known == point) else { return vec![fault.status()] };

    // Once the trace is sent, the program may read it, print it and exit before the signal
    // comes, which then finds a zombie and changes nothing.
    let trace_sent = trace_handed_over(baseline).is_some_and(|handed_over| index > handed_over);
    let printed_everything = outcome.stdout.lines().any(|line| line.starts_with(r#"{"kind":"return""#));
    if trace_sent && printed_everything {
        return vec![fault.status(), scenario.natural_status];
    }

    let fatal =
        scenario.fatal_from.and_then(|step| baseline.points.iter().rposition(|known| split_point(known).0 == step));
    match fatal {
        // The program is stopped at its fault: SIGKILL still wins, SIGTERM and SIGUSR2 stay
        // pending behind the fault. Right after the last resume before the fault, the program
        // runs into it while the signal is being sent, and either may come first. A SIGKILL
        // sent after the fault is delivered may find the program already dying of it.
        Some(fatal) if index >= fatal && fault == Fault::KillProgram => vec![fault.status(), SIGSEGV_STATUS],
        Some(fatal) if index >= fatal => vec![SIGSEGV_STATUS],
        Some(fatal) if index + 1 == fatal => vec![fault.status(), SIGSEGV_STATUS],
        _ => vec![fault.status()],
    }
}

/// Injects every fault at the first and last occurrences of every step of the baseline, and
/// fails with every problem found.
fn inject_everywhere(scenario: &Scenario) {
    let baseline = baseline(scenario);
    let mut counts: BTreeMap<&str, u32> = BTreeMap::new();
    for point in &baseline.points {
        let (step, occurrence) = split_point(point);
        let count = counts.entry(step).or_default();
        *count = (*count).max(occurrence);
    }
    let selected = |point: &&String| {
        let (step, occurrence) = split_point(point);
        occurrence <= FIRST_OCCURRENCES || occurrence + LAST_OCCURRENCES > counts[step]
    };
    let points: Vec<&String> =
        baseline.points.iter().filter(|point| point.starts_with(scenario.only)).filter(selected).collect();
    let jobs: Vec<(&String, Fault)> = points.iter().flat_map(|&point| Fault::ALL.map(|fault| (point, fault))).collect();

    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Checked>>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..PARALLEL_RUNS {
            scope.spawn(|| {
                while let Some(&(point, fault)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = run(scenario, &format!("{point}:{}", fault.name()));
                    let checked = check(scenario, &baseline, point, fault, &outcome);
                    results.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(checked);
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());

    let fired: Vec<&Checked> = results.iter().flatten().collect();
    let mut failures: Vec<&String> = fired.iter().flat_map(|checked| &checked.failures).collect();
    failures.sort();
    let covered: BTreeSet<&str> = fired.iter().map(|checked| checked.step.as_str()).collect();
    let listed: BTreeSet<&str> = points.iter().map(|point| split_point(point).0).collect();
    let missing: Vec<&&str> = scenario.required.iter().filter(|step| !covered.contains(**step)).collect();
    let mut per_step: BTreeMap<&str, usize> = BTreeMap::new();
    for checked in &fired {
        *per_step.entry(checked.step.as_str()).or_default() += 1;
    }
    eprintln!(
        "[{}] {} runs, {} fired; steps injected at: {per_step:?}; listed but never fired: {:?}",
        scenario.label(),
        jobs.len(),
        fired.len(),
        listed.difference(&covered).collect::<Vec<_>>()
    );
    assert!(missing.is_empty(), "[{}] required steps never fired: {missing:?}", scenario.label());
    assert!(
        failures.is_empty(),
        "{} injections failed:\n{}",
        failures.len(),
        failures.iter().map(|f| f.as_str()).collect::<Vec<_>>().join("\n")
    );
}

/// True when `/proc/cpuinfo` lists every one of `wanted` among the CPU flags.
fn cpu_has(wanted: &[&str]) -> bool {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo.lines().find(|line| line.starts_with("flags")).unwrap_or_default();
    wanted.iter().all(|flag| flags.split_whitespace().any(|present| present == *flag))
}

/// The steps every protection reaches in `every_step`, with either call protocol.
const EVERY_STEP_COMMON: [&str; 13] = [
    "before-action:SetRegisters",
    "before-action:Step",
    "before-action:Continue",
    "before-action:Detach",
    "before-action:ReadMemory",
    "before-action:ReadDisposition",
    "before-action:WriteMemory",
    "after-event:Signal",
    "after-event:Memory",
    "after-event:Disposition",
    "after-event:NewTask",
    "after-event:OtherStop",
    "after-event:TaskExited",
];

/// The steps of calls that start with the protocol signal and end with the end marker.
const SIGNAL_PROTOCOL_STEPS: [&str; 5] = [
    "before-action:ContinueToSyscall",
    "before-action:ReceiveMessage",
    "before-action:Reply",
    "after-event:Message",
    "after-event:Syscall",
];

/// The steps of calls that start and end through the call board.
const BOARD_STEPS: [&str; 3] = ["after-event:CallBoard", "before-action:Publish", "before-action:WatchSystemCalls"];

/// The steps of the vector gather, which the fixture runs only on a CPU with AVX2.
const GATHER_STEPS: [&str; 2] = ["before-action:ReadVectorRegisters", "after-event:VectorRegisters"];

fn every_step(protection: &'static str, stopless: bool, specific: &'static [&'static str]) -> Scenario {
    let gather: &[&str] = if cpu_has(&["avx2"]) { &GATHER_STEPS } else { &[] };
    let protocol: &[&str] = if stopless { &BOARD_STEPS } else { &SIGNAL_PROTOCOL_STEPS };
    let required: Vec<&'static str> =
        EVERY_STEP_COMMON.iter().chain(protocol).chain(gather).chain(specific).copied().collect();
    Scenario {
        symbol: "every_step",
        args: &["buf:4096"],
        protection,
        natural_status: 0,
        fatal_from: None,
        only: "",
        required: required.leak(),
        stopless,
    }
}

#[test]
fn every_step_with_mprotect() {
    let specific = &["before-action:Interrupt", "before-action:QueueSignal"];
    inject_everywhere(&every_step("mprotect", true, specific));
}

#[test]
fn every_step_with_signal_protocol() {
    let specific = &["before-action:Interrupt", "before-action:QueueSignal"];
    inject_everywhere(&every_step("mprotect", false, specific));
}

#[test]
fn every_step_with_auto_protection() {
    let specific: &'static [&'static str] =
        if cpu_has(&["pku", "ospke"]) { &["before-action:SetKeyRights"] } else { &[] };
    inject_everywhere(&every_step("auto", true, specific));
}

/// The comparison protocol of the benchmarks zeroes a stack before each `mprotect`.
#[test]
fn zeroed_stack_words() {
    inject_everywhere(&Scenario {
        symbol: "every_step",
        args: &["buf:4096"],
        protection: "zeroed-stack",
        natural_status: 0,
        fatal_from: None,
        only: "before-action:ZeroWords",
        required: &["before-action:ZeroWords"],
        stopless: false,
    });
}

fn crash(protection: &'static str) -> Scenario {
    Scenario {
        symbol: "crash_after_accesses",
        args: &["buf:64"],
        protection,
        natural_status: SIGSEGV_STATUS,
        // Rust's runtime catches the first SIGSEGV to look for a stack overflow, then restores
        // the default action and the fault repeats.
        fatal_from: Some("before-action:ReadDisposition"),
        only: "",
        required: &["before-action:ReadDisposition", "before-action:Report", "after-event:Disposition"],
        stopless: true,
    }
}

#[test]
fn crash_with_mprotect() {
    inject_everywhere(&crash("mprotect"));
}

#[test]
fn crash_with_auto_protection() {
    inject_everywhere(&crash("auto"));
}
