//! The parent process: runs every measurement in its own process, round-robin, and prints the
//! table and the ratio line.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::child::{self, Measurement};
use crate::lackey;
use crate::workloads::{self, Fixtures, Workload};
use crate::Method;

/// How long one measurement process may run before it is killed.
const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    /// The scheduler places the tracer and the traced process.
    Unpinned,
    /// Every process of the measurement runs on CPU 0.
    Pinned,
}

impl Placement {
    fn name(self) -> &'static str {
        match self {
            Placement::Unpinned => "unpinned",
            Placement::Pinned => "pinned to CPU 0",
        }
    }

    /// Makes `command`'s process, and so every process it forks, run on the CPUs this placement
    /// selects.
    fn apply(self, command: &mut Command) {
        if self == Placement::Pinned {
            // SAFETY: the closure only calls sched_setaffinity on a local set, which is safe
            // between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(0, &mut set);
                    if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
    }
}

/// The size each method runs a workload at. Methods that would take far longer than a
/// second per call run a smaller instance of the same workload; the table prints the sizes.
fn size_for(workload: Workload, method: Method, quick: bool) -> usize {
    let scaled = match (method, workload) {
        // Every byte of a rep stos or rep movs is stepped: 4 KiB still runs the rep path.
        (Method::SeedStyle | Method::DefaultStepped, Workload::Memset | Workload::Memcpy) => 4096,
        (Method::SeedStyle, Workload::Pages10k) => 250,
        (Method::SeedStyle, Workload::Qsort) => 100,
        // At 10 000 ints one traced call records 601 000 accesses and took 37 s on the machine
        // described in BENCHMARKS.md.
        (_, Workload::Qsort) => 300,
        (Method::Lackey, Workload::Isolated | Workload::Pages10k) => 100,
        _ => workload.full_size(),
    };
    if quick {
        match workload {
            Workload::Isolated | Workload::Pages10k => scaled.min(50),
            Workload::Memset | Workload::Memcpy => scaled.min(4096),
            Workload::Strlen => scaled,
            Workload::Qsort => scaled.min(100),
        }
    } else {
        scaled
    }
}

/// One measurement of one round.
struct Sample {
    round: usize,
    size: usize,
    measurement: Measurement,
}

type Key = (Placement, Workload, Method);

pub fn run_all(quick: bool) -> Result<(), String> {
    let rounds: usize = match std::env::var("FFITRACE_BENCH_ROUNDS") {
        Ok(text) => text.parse().map_err(|_| format!("bad FFITRACE_BENCH_ROUNDS '{text}'"))?,
        Err(_) if quick => 1,
        Err(_) => 5,
    };
    let selected: Vec<Workload> = match std::env::var("FFITRACE_BENCH_ONLY") {
        Ok(list) => list
            .split(',')
            .map(|name| Workload::from_name(name.trim()).ok_or_else(|| format!("unknown workload {name}")))
            .collect::<Result<_, _>>()?,
        Err(_) => workloads::ALL.to_vec(),
    };
    let target = Duration::from_millis(if quick { 20 } else { 150 });
    let fixtures = Fixtures::build()?;
    let with_lackey = lackey::available();
    let methods: Vec<Method> =
        Method::ALL.into_iter().filter(|&method| method != Method::Lackey || with_lackey).collect();
    let placements = if quick { vec![Placement::Unpinned] } else { vec![Placement::Unpinned, Placement::Pinned] };

    let load_before = load_average();
    let started = Instant::now();
    let mut samples: BTreeMap<Key, Vec<Sample>> = BTreeMap::new();
    let mut failures = Vec::new();
    // Each round runs both placements, so that drift of the machine's load reaches them alike.
    for round in 0..rounds {
        for &placement in &placements {
            eprint!("round {}/{rounds}, {}:", round + 1, placement.name());
            for &workload in &selected {
                // A different method goes first in each round, so none always runs right after
                // the same neighbour.
                for index in 0..methods.len() {
                    let method = methods[(index + round) % methods.len()];
                    let size = size_for(workload, method, quick);
                    let result = if method == Method::Lackey {
                        let native_calls = if quick { 10 } else { 200 };
                        lackey::measure(&fixtures.driver, workload, size, native_calls, 1, &|command| {
                            placement.apply(command)
                        })
                    } else {
                        run_child(method, workload, size, target, placement)
                    };
                    match result.and_then(|measurement| match &measurement.error {
                        Some(error) => Err(error.clone()),
                        None => Ok(measurement),
                    }) {
                        Ok(measurement) => {
                            samples.entry((placement, workload, method)).or_default().push(Sample { round, size, measurement })
                        }
                        Err(error) => failures.push(format!(
                            "{} {} {} round {}: {error}",
                            placement.name(),
                            workload.name(),
                            method.name(),
                            round + 1
                        )),
                    }
                }
                eprint!(" {}", workload.name());
            }
            eprintln!(" ({:.0} s so far)", started.elapsed().as_secs_f64());
        }
    }

    let mut context = format!(
        "{:.0} s in all; load average (1 min) {load_before} before, {} after",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    if !quick {
        context = format!("{context}\n{}", crate::probes::describe_memory(target));
    }
    print_report(&samples, &placements, &selected, &methods, rounds, quick, &failures, &context);
    if quick {
        // The plain closing line the project's test tooling reads.
        println!("{} passed, {} failed", samples.values().map(Vec::len).sum::<usize>(), failures.len());
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!("{} measurements failed", failures.len()))
    }
}

/// Returns the first field of /proc/loadavg: the load average over one minute.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

/// Runs one measurement in a new process of this binary and returns what it printed.
pub fn run_child(
    method: Method,
    workload: Workload,
    size: usize,
    target: Duration,
    placement: Placement,
) -> Result<Measurement, String> {
    let executable = std::env::current_exe().map_err(|error| error.to_string())?;
    let mut command = Command::new(executable);
    command
        .env(child::RUN_VARIABLE, child::describe(method, workload, size, target))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    placement.apply(&mut command);
    let mut process = command.spawn().map_err(|error| format!("starting a measurement failed: {error}"))?;
    let started = Instant::now();
    loop {
        match process.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if started.elapsed() > DEADLINE => {
                // The measurement's own process: killing it makes the kernel kill the traced
                // process too, which set PR_SET_PDEATHSIG for that.
                let _ = process.kill();
                let _ = process.wait();
                return Err(format!("no result within {DEADLINE:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(error) => return Err(error.to_string()),
        }
    }
    let output = process.wait_with_output().map_err(|error| error.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|line| line.starts_with('{')).ok_or_else(|| {
        format!("no result ({}); stderr: {}", output.status, String::from_utf8_lossy(&output.stderr).trim())
    })?;
    serde_json::from_str(line).map_err(|error| format!("bad result '{line}': {error}"))
}

/// Per-access statistics of one method on one workload in one placement.
struct Row {
    size: usize,
    /// Accesses per call the per-access figure divides by.
    per_call: f64,
    /// The floor's stops per call.
    stops_per_call: f64,
    ms_per_call: f64,
    /// Microseconds per access in each round.
    by_round: BTreeMap<usize, f64>,
}

impl Row {
    fn median(&self) -> f64 {
        median(&mut self.by_round.values().copied().collect::<Vec<_>>())
    }

    fn min(&self) -> f64 {
        self.by_round.values().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.by_round.values().copied().fold(0.0, f64::max)
    }

    /// Returns the ratio of this row to `base` within each round that both have.
    fn ratios_to(&self, base: &Row) -> BTreeMap<usize, f64> {
        self.by_round
            .iter()
            .filter_map(|(round, value)| base.by_round.get(round).map(|base| (*round, value / base)))
            .collect()
    }

    /// Returns the median, minimum and maximum over rounds of the ratio to `base`.
    fn ratio_to(&self, base: &Row) -> Option<(f64, f64, f64)> {
        summary(&self.ratios_to(base))
    }
}

/// Returns the median, minimum and maximum of per-round values.
fn summary(by_round: &BTreeMap<usize, f64>) -> Option<(f64, f64, f64)> {
    let mut values: Vec<f64> = by_round.values().copied().collect();
    if values.is_empty() {
        return None;
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    Some((median(&mut values), min, max))
}

/// Formats a positive number with about four significant digits and no exponent.
fn short(value: f64) -> String {
    let decimals = if value > 0.0 { (3 - value.log10().floor() as i32).clamp(0, 8) } else { 0 };
    format!("{value:.*}", decimals as usize)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.is_empty() {
        f64::NAN
    } else if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// Computes the per-access figures. The untraced call and the floor divide by the accesses
/// the default method recorded for the same call, so their ratios are ratios of call times.
/// Where the floor's skipped loads change the workload's path, the floor divides by its own
/// stops instead. ffitrace's methods divide by the accesses they recorded; lackey by the buffer
/// accesses it printed, after subtracting the native time.
fn row(samples: &BTreeMap<Key, Vec<Sample>>, key: Key) -> Option<Row> {
    let (placement, workload, method) = key;
    let list = samples.get(&key)?;
    let size = list.first()?.size;
    let default_accesses = samples
        .get(&(placement, workload, Method::Default))
        .and_then(|list| list.iter().find(|sample| sample.size == size))
        .map(|sample| sample.measurement.accesses_per_call);
    let mut by_round = BTreeMap::new();
    let mut ms = Vec::new();
    let mut stops = Vec::new();
    let mut per_call = 0.0;
    for sample in list {
        let measurement = &sample.measurement;
        let (count, ns) = match method {
            Method::Untraced => (default_accesses?, measurement.ns_per_call),
            Method::Floor | Method::FloorData if workload.floor_follows_path() => {
                (default_accesses?, measurement.ns_per_call)
            }
            Method::Floor | Method::FloorData => (measurement.stops_per_call, measurement.ns_per_call),
            Method::Lackey => {
                (measurement.accesses_per_call, measurement.ns_per_call - measurement.native_ns_per_call)
            }
            _ => (measurement.accesses_per_call, measurement.ns_per_call),
        };
        if count <= 0.0 {
            return None;
        }
        per_call = count;
        by_round.insert(sample.round, ns / count / 1000.0);
        ms.push(measurement.ns_per_call / 1e6);
        stops.push(measurement.stops_per_call);
    }
    Some(Row { size, per_call, stops_per_call: median(&mut stops), ms_per_call: median(&mut ms), by_round })
}

#[allow(clippy::too_many_arguments)]
fn print_report(
    samples: &BTreeMap<Key, Vec<Sample>>,
    placements: &[Placement],
    selected: &[Workload],
    methods: &[Method],
    rounds: usize,
    quick: bool,
    failures: &[String],
    context: &str,
) {
    println!();
    println!(
        "per_access: µs per traced access, median and min-max over {rounds} round(s){}",
        if quick { " (quick run: small sizes; pass --bench for the real one)" } else { "" }
    );
    println!("{context}");
    println!("size_of::<ffitrace::Access>() = {} bytes", std::mem::size_of::<ffitrace::Access>());
    if let Some(bytes) = samples
        .iter()
        .filter(|(key, _)| key.2 == Method::Default)
        .flat_map(|(_, list)| list.iter().map(|sample| sample.measurement.log_bytes_per_event))
        .reduce(f64::max)
    {
        println!("access log of the table's default calls as received: at most {bytes:.1} bytes per event");
    }
    for &placement in placements {
        print_table(samples, placement, selected, methods);
    }
    print_notes(failures);
    print_ratios(samples, placements);
}

/// Prints one placement's table: one line per workload and method.
fn print_table(samples: &BTreeMap<Key, Vec<Sample>>, placement: Placement, selected: &[Workload], methods: &[Method]) {
    println!();
    println!("placement: {}", placement.name());
    println!(
        "{:<9} {:<13} {:>26} {:>9} {:>6} {:>9} {:>10} {:>19} {:>9} {:>10}",
        "workload", "method", "size", "acc/call", "stops", "ms/call", "µs/access", "min-max", "x floor", "x untraced"
    );
    for &workload in selected {
        let floor = row(samples, (placement, workload, Method::Floor));
        let untraced = row(samples, (placement, workload, Method::Untraced));
        for &method in methods {
            let Some(row) = row(samples, (placement, workload, method)) else {
                println!("{:<9} {:<13} (no result)", workload.name(), method.name());
                continue;
            };
            let ratio = |base: &Option<Row>| {
                base.as_ref().and_then(|base| row.ratio_to(base)).map_or("-".to_string(), |(ratio, ..)| short(ratio))
            };
            let floor_like = matches!(method, Method::Floor | Method::FloorData);
            let marker = if floor_like && !workload.floor_follows_path() { "*" } else { "" };
            println!(
                "{:<9} {:<13} {:>26} {:>9.0} {:>6} {:>9.3} {:>10} {:>19} {:>9} {:>10}",
                workload.name(),
                method.name(),
                workload.describe(row.size),
                row.per_call,
                if floor_like { format!("{:.0}", row.stops_per_call) } else { "-".to_string() },
                row.ms_per_call,
                format!("{}{marker}", short(row.median())),
                format!("{}-{}", short(row.min()), short(row.max())),
                ratio(&floor),
                ratio(&untraced),
            );
        }
    }
}

/// Prints the definitions behind the table and any failed measurement.
fn print_notes(failures: &[String]) {
    println!();
    for line in [
        "µs/access: time per call divided by acc/call. untraced and floor divide by the accesses default",
        "recorded for the same call; * marks a floor whose skipped loads change the path (strlen, qsort):",
        "it divides by its own stops. lackey charges (lackey time - native time) to the buffer accesses it",
        "printed. stops = the floor's ptrace stops per call. Ratios are the median over rounds of the ratio",
        "within each round. dense = geometric mean of memset and memcpy; seed-style/default and",
        "pages10k/pages1 are per access on the isolated workload (pages1 = isolated).",
    ] {
        println!("{line}");
    }
    for failure in failures {
        println!("FAILED {failure}");
    }
}

/// Prints the ratio lines, the unpinned placement's last.
fn print_ratios(samples: &BTreeMap<Key, Vec<Sample>>, placements: &[Placement]) {
    for &placement in placements.iter().rev() {
        let get = |workload, method| row(samples, (placement, workload, method));
        let pairs = [
            (get(Workload::Isolated, Method::Default), get(Workload::Isolated, Method::Floor)),
            (get(Workload::Memset, Method::Default), get(Workload::Memset, Method::Floor)),
            (get(Workload::Memcpy, Method::Default), get(Workload::Memcpy, Method::Floor)),
            (get(Workload::Isolated, Method::SeedStyle), get(Workload::Isolated, Method::Default)),
            (get(Workload::Pages10k, Method::Default), get(Workload::Isolated, Method::Default)),
        ];
        let by_round: Vec<BTreeMap<usize, f64>> = pairs
            .iter()
            .map(|pair| match pair {
                (Some(numerator), Some(denominator)) => numerator.ratios_to(denominator),
                _ => BTreeMap::new(),
            })
            .collect();
        // dense is the geometric mean of memset's and memcpy's ratios, round by round.
        let dense: BTreeMap<usize, f64> = by_round[1]
            .iter()
            .filter_map(|(round, memset)| by_round[2].get(round).map(|memcpy| (*round, (memset * memcpy).sqrt())))
            .collect();
        let summaries = [summary(&by_round[0]), summary(&dense), summary(&by_round[3]), summary(&by_round[4])];
        let of_minimums: Vec<Option<f64>> = pairs
            .iter()
            .map(|pair| match pair {
                (Some(numerator), Some(denominator)) => Some(numerator.min() / denominator.min()),
                _ => None,
            })
            .collect();
        let dense_of_minimums = of_minimums[1].zip(of_minimums[2]).map(|(memset, memcpy)| (memset * memcpy).sqrt());
        let minimums = [of_minimums[0], dense_of_minimums, of_minimums[3], of_minimums[4]];

        let show = |value: Option<f64>| value.map_or("n/a".to_string(), |value| format!("{value:.2}"));
        let ratio_line = |values: [Option<f64>; 4]| {
            format!(
                "ratio default/floor isolated={} dense={}; seed-style/default={}; pages10k/pages1={}",
                show(values[0]),
                show(values[1]),
                show(values[2]),
                show(values[3])
            )
        };
        let spread: Vec<String> = summaries
            .iter()
            .map(|summary| summary.map_or("n/a".to_string(), |(_, min, max)| format!("{min:.2}-{max:.2}")))
            .collect();
        print_data_ratios(samples, placement);
        println!(
            "{}: per-round spread of the ratios: isolated {}, dense {}, seed-style/default {}, pages10k/pages1 {}",
            placement.name(),
            spread[0],
            spread[1],
            spread[2],
            spread[3]
        );
        println!("{}: of the minimums over rounds: {}", placement.name(), ratio_line(minimums));
        let medians = summaries.map(|summary| summary.map(|(median, ..)| median));
        if placement == Placement::Unpinned {
            println!("{}", ratio_line(medians));
        } else {
            println!("{}: {}", placement.name(), ratio_line(medians));
        }
    }
}

/// Prints how the data path splits the gap to the floor: the floor with data against the
/// floor, and ffitrace against the floor with data.
fn print_data_ratios(samples: &BTreeMap<Key, Vec<Sample>>, placement: Placement) {
    let workloads = [Workload::Isolated, Workload::Memset, Workload::Memcpy];
    let median_ratio = |workload, numerator, denominator| {
        let numerator = row(samples, (placement, workload, numerator))?;
        let denominator = row(samples, (placement, workload, denominator))?;
        summary(&numerator.ratios_to(&denominator)).map(|(median, ..)| median)
    };
    let line = |numerator, denominator| {
        let values: Vec<String> = workloads
            .iter()
            .map(|&workload| {
                let value = median_ratio(workload, numerator, denominator);
                format!("{}={}", workload.name(), value.map_or("n/a".to_string(), |value| format!("{value:.2}")))
            })
            .collect();
        values.join(" ")
    };
    println!(
        "{}: floor-data/floor {}; default/floor-data {}",
        placement.name(),
        line(Method::FloorData, Method::Floor),
        line(Method::Default, Method::FloorData)
    );
}
