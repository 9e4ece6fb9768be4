//! Runs the `ffitrace call` acceptance cases that ship beside this repository, if present.
//!
//! The cases live in `../shared/cases` (a fixture per case, built with gcc, and `run.py`,
//! which compares the JSON output with each case's expectation). Cases listed in
//! `REQUIRED` must pass; the others are run and printed so a regression is visible.

use std::path::PathBuf;
use std::process::Command;

/// Cases whose instruction forms the tracer handles exactly today.
const REQUIRED: &[&str] = &["ro_cmp_test", "sse_avx_sizes", "push_pop_call_mem", "repne_scasb_strlen"];

fn cases_runner() -> Option<PathBuf> {
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/cases/run.py");
    runner.exists().then_some(runner)
}

#[test]
fn required_cases_pass() {
    let Some(runner) = cases_runner() else {
        eprintln!("../shared/cases/run.py not found; acceptance cases not run");
        return;
    };
    let mut command = Command::new("python3");
    command.arg(&runner).arg(env!("CARGO_BIN_EXE_ffitrace"));
    for case in REQUIRED {
        command.args(["--only", case]);
    }
    let output = command.output().expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    assert!(output.status.success(), "required acceptance cases failed:\n{stdout}");
    for case in REQUIRED {
        assert!(stdout.lines().any(|line| line == format!("PASS {case}")), "case {case} did not pass:\n{stdout}");
    }
}

#[test]
fn no_case_panics_or_hangs() {
    let Some(runner) = cases_runner() else {
        eprintln!("../shared/cases/run.py not found; acceptance cases not run");
        return;
    };
    let output = Command::new("python3")
        .arg(&runner)
        .arg(env!("CARGO_BIN_EXE_ffitrace"))
        .arg("-v")
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("panicked"), "a case made ffitrace panic:\n{text}");
        assert!(!text.contains("timed out"), "a case hung:\n{text}");
    }
}
