//! The memory goals, measured once per bench run: the access log's size per event for ten
//! million events, with and without runs, and the supervisor's memory over many calls.

use std::time::{Duration, Instant};

use ffitrace::{Access, AccessKind, AccessLog};

use crate::child::Measurement;
use crate::report::{run_child, Placement};
use crate::workloads::Workload;
use crate::Method;

/// Events in the probes of the access log's size.
const PROBE_EVENTS: usize = 10_000_000;

/// Returns the lines that describe the memory probes.
pub fn describe_memory(target: Duration) -> String {
    [probe_run_log(target), probe_single_events(), probe_supervisor_memory()].join("\n")
}

/// Traces one memset of `PROBE_EVENTS` bytes (one event per byte, carried out as one run) with
/// the default options.
fn probe_run_log(target: Duration) -> String {
    match run_child(Method::Default, Workload::Memset, PROBE_EVENTS, target, Placement::Unpinned) {
        Ok(Measurement { error: None, accesses_per_call, log_bytes_per_event, ns_per_call, .. }) => format!(
            "access log of one {accesses_per_call:.0}-event default call (memset, one rep stosb) as received: \
             {log_bytes_per_event:.6} bytes per event, {:.1} ms per call",
            ns_per_call / 1e6
        ),
        Ok(Measurement { error: Some(error), .. }) | Err(error) => format!("access log probe failed: {error}"),
    }
}

/// Sends a log of `PROBE_EVENTS` single accesses at scattered addresses, which fold into no
/// run, through an ipc-channel as the supervisor sends a trace, and measures its size.
fn probe_single_events() -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut log = AccessLog::new();
    for index in 0..PROBE_EVENTS {
        // xorshift64: addresses without a constant stride.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let kind = if index % 3 == 0 { AccessKind::Write } else { AccessKind::Read };
        log.push(Access { addr: 0x7f00_0000_0000 + (state & 0xfff_fff8), size: 8, kind });
    }
    let sent_bytes = log.allocated_bytes() as f64 / PROBE_EVENTS as f64;
    let started = Instant::now();
    let received = match send_through_channel(log) {
        Ok(received) => received,
        Err(error) => return format!("single-access log probe failed: {error}"),
    };
    let elapsed = started.elapsed();
    let mut received = received;
    received.shrink_to_fit();
    format!(
        "{} single accesses (no runs) through an ipc-channel: {} received in {:.0} ms; {sent_bytes:.1} bytes per \
         event before, {:.1} after shrink_to_fit",
        PROBE_EVENTS,
        received.len(),
        elapsed.as_secs_f64() * 1e3,
        received.allocated_bytes() as f64 / PROBE_EVENTS as f64,
    )
}

/// Sends `log` from another thread, since a message larger than the socket buffer blocks its
/// sender until the receiver reads, and returns what arrived.
fn send_through_channel(log: AccessLog) -> Result<AccessLog, String> {
    let (sender, receiver) = ipc_channel::ipc::channel::<AccessLog>().map_err(|error| error.to_string())?;
    let sending = std::thread::spawn(move || sender.send(log).map_err(|error| error.to_string()));
    let received = receiver.recv().map_err(|error| format!("{error:?}"))?;
    sending.join().map_err(|_| "the sending thread panicked".to_string())??;
    Ok(received)
}

/// Makes ten seconds' worth of 4 KiB memset calls in one process and compares the
/// supervisor's resident memory after the first call with that after the last.
fn probe_supervisor_memory() -> String {
    let target = Duration::from_secs(10);
    match run_child(Method::Default, Workload::Memset, 4096, target, Placement::Unpinned) {
        Ok(Measurement { error: None, calls, supervisor_rss_kib: (first, last), .. }) => format!(
            "supervisor resident memory: {first} KiB after the first call, {last} KiB after {calls} calls \
             (default, memset 4 KiB)"
        ),
        Ok(Measurement { error: Some(error), .. }) | Err(error) => format!("supervisor memory probe failed: {error}"),
    }
}
