//! valgrind's lackey tool on the C driver, and the driver's native run it is compared with.
//!
//! lackey prints one line per instruction and per data access of the whole program. The
//! driver reports the address ranges of its buffers. The accesses that fall in them, divided
//! by the calls the driver made, are lackey's accesses per call. Its cost per access is
//! (time per call under lackey - native time per call) / accesses per call: everything lackey
//! adds to the call, charged to the accesses of the traced buffers.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::child::Measurement;
use crate::workloads::Workload;

/// The driver's JSON line.
#[derive(Deserialize)]
struct DriverReport {
    ns_per_call: f64,
    start: u64,
    end: u64,
    start2: u64,
    end2: u64,
}

pub fn available() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok_and(|output| output.status.success())
}

/// Runs the driver natively with `native_calls` calls and under lackey with `lackey_calls`
/// calls (each after one warm-up call). `placement` is applied to both processes.
pub fn measure(
    driver: &Path,
    workload: Workload,
    size: usize,
    native_calls: u64,
    lackey_calls: u64,
    placement: &dyn Fn(&mut Command),
) -> Result<Measurement, String> {
    let mut native = Command::new(driver);
    native.args([workload.name(), &size.to_string(), &native_calls.to_string()]);
    placement(&mut native);
    let native = run_driver(native)?;

    let log = log_path(workload);
    let mut lackey = Command::new("valgrind");
    lackey.args(["--tool=lackey", "--trace-mem=yes"]).arg(format!("--log-file={}", log.display()));
    lackey.arg(driver).args([workload.name(), &size.to_string(), &lackey_calls.to_string()]);
    placement(&mut lackey);
    let traced = run_driver(lackey);
    let counted = traced.and_then(|traced| count_accesses(&log, &traced).map(|count| (traced, count)));
    let _ = std::fs::remove_file(&log);
    let (traced, accesses) = counted?;

    Ok(Measurement {
        calls: lackey_calls,
        ns_per_call: traced.ns_per_call,
        accesses_per_call: accesses as f64 / (lackey_calls + 1) as f64,
        native_ns_per_call: native.ns_per_call,
        ..Measurement::default()
    })
}

fn log_path(workload: Workload) -> PathBuf {
    let shared_memory = Path::new("/dev/shm");
    let directory = if shared_memory.is_dir() { shared_memory.to_path_buf() } else { std::env::temp_dir() };
    directory.join(format!("ffitrace-lackey-{}-{}.log", std::process::id(), workload.name()))
}

fn run_driver(mut command: Command) -> Result<DriverReport, String> {
    let output = command.output().map_err(|error| format!("starting {command:?} failed: {error}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("{command:?} failed with {}: {}", output.status, stderr.trim()));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    serde_json::from_str(stdout.trim()).map_err(|error| format!("bad driver output '{stdout}': {error}"))
}

/// Counts the load, store and modify lines of the log that touch the driver's buffers. A
/// modify (a read and a write by one instruction) counts once.
fn count_accesses(log: &Path, report: &DriverReport) -> Result<u64, String> {
    let file = std::fs::File::open(log).map_err(|error| format!("opening {}: {error}", log.display()))?;
    let inside = |addr: u64, size: u64| {
        let end = addr + size;
        (addr < report.end && report.start < end) || (addr < report.end2 && report.start2 < end)
    };
    let mut count = 0;
    for line in BufReader::with_capacity(1 << 20, file).split(b'\n') {
        let line = line.map_err(|error| error.to_string())?;
        // Data lines are " L addr,size", " S addr,size" or " M addr,size"; instruction lines
        // start with "I" and valgrind's own messages with "==".
        let [b' ', b'L' | b'S' | b'M', b' ', rest @ ..] = line.as_slice() else {
            continue;
        };
        let Some((addr, size)) = std::str::from_utf8(rest).ok().and_then(|text| text.split_once(',')) else {
            continue;
        };
        let (Ok(addr), Ok(size)) = (u64::from_str_radix(addr, 16), size.trim().parse::<u64>()) else {
            continue;
        };
        if inside(addr, size) {
            count += 1;
        }
    }
    Ok(count)
}
