//! One measurement, run in a process of its own: one method on one workload.
//!
//! The parent starts this binary again with `RUN_VARIABLE` set to `METHOD WORKLOAD SIZE
//! TARGET_MS`. The process sets the workload up, makes calls until their time adds up to the
//! target, checks the buffers and prints one line of JSON on stdout.

use std::time::{Duration, Instant};

use ffitrace::{PageProtection, TraceOutcome};
use serde::{Deserialize, Serialize};

use crate::floor;
use crate::workloads::{Fixtures, Library, Setup, Workload};
use crate::Method;

pub const RUN_VARIABLE: &str = "FFITRACE_BENCH_RUN";

/// Maximum number of timed calls in one measurement, however fast they are.
const MAX_CALLS: u64 = 20_000;

/// The result line a measurement process prints.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measurement {
    /// Timed calls.
    pub calls: u64,
    /// Median wall time of the timed calls, in nanoseconds.
    pub ns_per_call: f64,
    /// Mean number of accesses ffitrace recorded per call (traced methods only).
    pub accesses_per_call: f64,
    /// Tracer stops in one call (the floor only).
    pub stops_per_call: f64,
    /// `size_of::<ffitrace::Access>()`.
    pub access_bytes: usize,
    /// Bytes of the received access log per event: its heap memory divided by its length.
    pub log_bytes_per_event: f64,
    /// The mean time of a valgrind run's calls when natively run (lackey only).
    pub native_ns_per_call: f64,
    /// The supervisor's resident memory in KiB after the first call and after the last
    /// (ffitrace methods only; 0 when `/proc` could not tell).
    pub supervisor_rss_kib: (u64, u64),
    /// The reason the measurement failed, if it did.
    pub error: Option<String>,
}

/// Parses the run description and measures; never returns.
pub fn run(description: &str) -> ! {
    let result = parse(description).and_then(|(method, workload, size, target)| measure(method, workload, size, target));
    let measurement = result.unwrap_or_else(|error| Measurement { error: Some(error), ..Measurement::default() });
    println!("{}", serde_json::to_string(&measurement).unwrap_or_default());
    std::process::exit(0);
}

pub fn describe(method: Method, workload: Workload, size: usize, target: Duration) -> String {
    format!("{} {} {size} {}", method.name(), workload.name(), target.as_millis())
}

fn parse(description: &str) -> Result<(Method, Workload, usize, Duration), String> {
    let fields: Vec<&str> = description.split_whitespace().collect();
    let [method, workload, size, target] = fields[..] else {
        return Err(format!("bad run description '{description}'"));
    };
    let method = Method::from_name(method).ok_or_else(|| format!("unknown method {method}"))?;
    let workload = Workload::from_name(workload).ok_or_else(|| format!("unknown workload {workload}"))?;
    let size = size.parse().map_err(|_| format!("bad size {size}"))?;
    let target = Duration::from_millis(target.parse().map_err(|_| format!("bad target {target}"))?);
    Ok((method, workload, size, target))
}

fn measure(method: Method, workload: Workload, size: usize, target: Duration) -> Result<Measurement, String> {
    let library = Library::load(&Fixtures::paths().library)?;
    // The seed-style tracer steps every access: it has no supervisor-side emulation.
    let (page_protection, emulate_simple_accesses, stopless_calls) = match method {
        Method::Untraced => return untraced(&library, workload, size, target),
        Method::Floor => return floor::measure(&library, workload, size, target, false),
        Method::FloorData => return floor::measure(&library, workload, size, target, true),
        Method::SeedStyle => (PageProtection::ComparisonZeroedStack, false, false),
        Method::Mprotect => (PageProtection::Mprotect, true, true),
        Method::DefaultStepped => (PageProtection::Auto, false, true),
        Method::DefaultStops => (PageProtection::Auto, true, false),
        Method::Default => (PageProtection::Auto, true, true),
        Method::Lackey => return Err("lackey runs valgrind from the parent".to_string()),
    };
    let options =
        ffitrace::Options { page_protection, emulate_simple_accesses, stopless_calls, ..ffitrace::Options::default() };
    // SAFETY: this process has one thread: the bench's main has started none.
    unsafe { ffitrace::init(options) }.map_err(|error| format!("ffitrace::init failed: {error}"))?;

    let mut setup = Setup::new(workload, size);
    let ranges = setup.ranges();
    // Accesses recorded by each call, the warm-up included. The count can differ from call to
    // call: qsort of 1 000 ints recorded 34 012 on a process's first call and 34 060 on later
    // ones, probably because glibc's temporary buffer from malloc moved.
    let mut accesses = Vec::new();
    let mut log_bytes_per_event = 0.0;
    let mut supervisor_rss_kib = (0, 0);
    let timing = time_calls(target, || {
        setup.prepare();
        let start = Instant::now();
        let traced = ffitrace::trace_call(&ranges, || setup.call(&library));
        let elapsed = start.elapsed();
        let trace = match traced.map_err(|error| error.to_string())?.outcome {
            TraceOutcome::Traced(trace) if trace.is_complete() => trace,
            TraceOutcome::Traced(trace) => return Err(format!("incomplete trace: {:?}", trace.unsupported)),
            other => return Err(format!("call not traced: {other:?}")),
        };
        let count = trace.accesses.len();
        accesses.push(count);
        log_bytes_per_event = trace.accesses.allocated_bytes() as f64 / count.max(1) as f64;
        let rss = supervisor_rss();
        if accesses.len() == 1 {
            supervisor_rss_kib.0 = rss;
        }
        supervisor_rss_kib.1 = rss;
        Ok(elapsed)
    })?;
    setup.check()?;
    Ok(Measurement {
        calls: timing.calls,
        ns_per_call: timing.ns_per_call,
        accesses_per_call: accesses.iter().sum::<usize>() as f64 / accesses.len().max(1) as f64,
        access_bytes: std::mem::size_of::<ffitrace::Access>(),
        log_bytes_per_event,
        supervisor_rss_kib,
        ..Measurement::default()
    })
}

/// Returns the resident memory of this process's parent, the ffitrace supervisor, in KiB.
fn supervisor_rss() -> u64 {
    // SAFETY: getppid has no preconditions.
    let supervisor = unsafe { libc::getppid() };
    let status = std::fs::read_to_string(format!("/proc/{supervisor}/status")).unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or(0)
}

fn untraced(library: &Library, workload: Workload, size: usize, target: Duration) -> Result<Measurement, String> {
    let mut setup = Setup::new(workload, size);
    let timing = time_calls(target, || {
        setup.prepare();
        let start = Instant::now();
        setup.call(library);
        Ok(start.elapsed())
    })?;
    setup.check()?;
    Ok(Measurement { calls: timing.calls, ns_per_call: timing.ns_per_call, ..Measurement::default() })
}

pub struct Timing {
    pub calls: u64,
    /// Median time of the timed calls: a call that another process on this shared machine
    /// delayed moves it less than it moves the mean.
    pub ns_per_call: f64,
}

/// Makes timed calls until their time adds up to `target`. The first call is a warm-up that
/// is not counted, unless it alone takes more than a quarter of the target. In that case it
/// counts, so that a slow workload does not run twice for nothing. Each call returns its own
/// time.
pub fn time_calls(target: Duration, mut call: impl FnMut() -> Result<Duration, String>) -> Result<Timing, String> {
    let first = call()?;
    let mut times = if first > target / 4 { vec![first] } else { Vec::new() };
    let mut total: Duration = times.iter().sum();
    while total < target && (times.len() as u64) < MAX_CALLS {
        let time = call()?;
        total += time;
        times.push(time);
    }
    times.sort();
    let middle = times.len() / 2;
    let median = if times.len() % 2 == 1 { times[middle] } else { (times[middle - 1] + times[middle]) / 2 };
    Ok(Timing { calls: times.len() as u64, ns_per_call: median.as_nanos() as f64 })
}
