//! `cargo bench --bench per_access`: microseconds per traced access, for each workload and
//! each tracing method, side by side.
//!
//! Every measurement runs in a process of its own, because `ffitrace::init` forks and fixes
//! the page protection for the life of the process: this binary starts itself again with
//! `FFITRACE_BENCH_RUN` naming the method, the workload and its size (see `child.rs`). The
//! parent runs the methods round-robin, several rounds, so that drift of this shared machine
//! affects them alike, once with the processes left to the scheduler and once with all of
//! them pinned to CPU 0. It then prints a table and a last line of ratios.
//!
//! Environment: `FFITRACE_BENCH_ROUNDS` (default 5), `FFITRACE_BENCH_ONLY` (a comma-separated
//! list of workloads to run). Without `--bench` (as under `cargo test --benches`) it runs one
//! quick round as a smoke test.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/child.rs"]
mod child;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/floor.rs"]
mod floor;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/lackey.rs"]
mod lackey;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/probes.rs"]
mod probes;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/report.rs"]
mod report;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[path = "per_access/workloads.rs"]
mod workloads;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn main() {
    if let Ok(description) = std::env::var(child::RUN_VARIABLE) {
        child::run(&description);
    }
    let quick = !std::env::args().any(|arg| arg == "--bench");
    if let Err(error) = report::run_all(quick) {
        eprintln!("per_access: {error}");
        std::process::exit(1);
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
fn main() {
    println!("per_access measures ptrace tracing on Linux x86-64 only");
}

/// A way of running a workload, from untraced to valgrind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// The native call on unprotected memory.
    Untraced,
    /// The minimal one-stop-per-access tracer of `floor.rs`.
    Floor,
    /// The same tracer, also moving each access's bytes through `/proc/PID/mem` as a
    /// supervisor that carries out the instruction must (`floor.rs`).
    FloorData,
    /// ffitrace with `PageProtection::ComparisonZeroedStack` and no emulation: every access
    /// is stepped with four stops, and 2 x 128 words are zeroed.
    SeedStyle,
    /// ffitrace with `PageProtection::Mprotect`.
    Mprotect,
    /// ffitrace's default protection (a protection key here) with emulation turned off, so
    /// every access is stepped: two stops.
    DefaultStepped,
    /// ffitrace's default options with `stopless_calls: false`: each call also stops at its
    /// start and its end.
    DefaultStops,
    /// ffitrace's default options: `PageProtection::Auto`, emulation of simple accesses and
    /// calls that start and end without a stop.
    Default,
    /// valgrind's lackey tool on the C driver.
    Lackey,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Untraced,
        Method::Floor,
        Method::FloorData,
        Method::SeedStyle,
        Method::Mprotect,
        Method::DefaultStepped,
        Method::DefaultStops,
        Method::Default,
        Method::Lackey,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Untraced => "untraced",
            Method::Floor => "floor",
            Method::FloorData => "floor-data",
            Method::SeedStyle => "seed-style",
            Method::Mprotect => "mprotect",
            Method::DefaultStepped => "default-step",
            Method::DefaultStops => "default-stops",
            Method::Default => "default",
            Method::Lackey => "lackey",
        }
    }

    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|method| method.name() == name)
    }
}
