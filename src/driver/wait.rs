//! Waiting for the traced program and turning what `waitpid` reports into an [`ExecEvent`].

use tracing::warn;

use super::ptrace;
use crate::core::{Disposition, ExecEvent, SignalStop};

/// What one `waitpid` status means, decoded without any system call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WaitStatus {
    Exited(i32),
    Killed { signal: i32, core_dumped: bool },
    /// A signal-delivery-stop for this signal.
    SignalStop(i32),
    /// A group-stop or `PTRACE_EVENT_*` stop: the event number is in bits 16..24.
    EventStop { signal: i32, event: i32 },
    /// Anything else (`WIFCONTINUED`, unknown encodings).
    Other,
}

/// Decodes a raw status as `<sys/wait.h>` defines it on Linux.
pub(super) fn decode_status(status: i32) -> WaitStatus {
    if status == 0xffff {
        return WaitStatus::Other;
    }
    let low = status & 0x7f;
    if low == 0 {
        return WaitStatus::Exited((status >> 8) & 0xff);
    }
    if low == 0x7f {
        let signal = (status >> 8) & 0xff;
        let event = (status >> 16) & 0xff;
        if event != 0 {
            return WaitStatus::EventStop { signal, event };
        }
        return WaitStatus::SignalStop(signal);
    }
    WaitStatus::Killed { signal: low, core_dumped: status & 0x80 != 0 }
}

/// Blocks until the traced program changes state and describes the change.
pub(super) fn next_event(pid: i32) -> ExecEvent {
    loop {
        let status = match wait(pid, libc::__WALL) {
            Ok(status) => status,
            Err(error) => {
                // ECHILD means the child is already reaped: nothing more will ever happen.
                warn!(pid, %error, "waitpid failed");
                return ExecEvent::Killed { signal: libc::SIGKILL, core_dumped: false };
            }
        };
        match decode_status(status) {
            WaitStatus::Exited(status) => return ExecEvent::Exited { status },
            WaitStatus::Killed { signal, core_dumped } => return ExecEvent::Killed { signal, core_dumped },
            WaitStatus::EventStop { .. } => return ExecEvent::OtherStop,
            WaitStatus::SignalStop(signal) => match signal_stop(pid, signal) {
                Ok(stop) => return ExecEvent::Signal(stop),
                Err(error) => warn!(pid, signal, %error, "could not read the stopped thread's state"),
            },
            WaitStatus::Other => {}
        }
    }
}

fn signal_stop(pid: i32, signal: i32) -> Result<SignalStop, String> {
    let info = ptrace::get_siginfo(pid)?;
    let regs = ptrace::get_registers(pid)?;
    let fault = matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGABRT
    );
    let code = if fault { ptrace::read_code(pid, regs.rip) } else { Vec::new() };
    // NOTE: the disposition costs a read of /proc/PID/status, so it is read for faults only;
    // the core consults it for nothing else.
    let disposition = if fault { read_disposition(pid, signal) } else { Disposition::Caught };
    Ok(SignalStop { info, regs, code, disposition })
}

/// Reads the disposition of `signal` from the SigIgn and SigCgt masks of `/proc/PID/status`.
fn read_disposition(pid: i32, signal: i32) -> Disposition {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return Disposition::Default;
    };
    parse_disposition(&status, signal)
}

pub(super) fn parse_disposition(status: &str, signal: i32) -> Disposition {
    let bit = 1u64.checked_shl((signal - 1) as u32).unwrap_or(0);
    let mask_of = |field: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap_or(0)
    };
    if mask_of("SigCgt:") & bit != 0 {
        Disposition::Caught
    } else if mask_of("SigIgn:") & bit != 0 {
        Disposition::Ignored
    } else {
        Disposition::Default
    }
}

fn wait(pid: i32, flags: i32) -> Result<i32, std::io::Error> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int for waitpid to fill.
        let result = unsafe { libc::waitpid(pid, &mut status, flags) };
        if result == pid {
            return Ok(status);
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}

/// Waits for an untraced child to end and returns the shell's exit status for it.
pub(super) fn wait_untraced(pid: i32) -> i32 {
    loop {
        match wait(pid, 0).map(decode_status) {
            Ok(WaitStatus::Exited(status)) => return status,
            Ok(WaitStatus::Killed { signal, .. }) => return 128 + signal,
            Ok(_) => continue,
            Err(_) => return 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_exit_and_kill() {
        assert_eq!(decode_status(0x0300), WaitStatus::Exited(3));
        assert_eq!(decode_status(0x000b), WaitStatus::Killed { signal: 11, core_dumped: false });
        assert_eq!(decode_status(0x008b), WaitStatus::Killed { signal: 11, core_dumped: true });
    }

    #[test]
    fn status_stops() {
        assert_eq!(decode_status(0x0b7f), WaitStatus::SignalStop(11));
        assert_eq!(decode_status(0x8005_7f), WaitStatus::EventStop { signal: 5, event: 0x80 });
        assert_eq!(decode_status(0xffff), WaitStatus::Other);
    }

    #[test]
    fn disposition_masks() {
        let status = "Name:\tx\nSigIgn:\t0000000000001000\nSigCgt:\t0000000000000400\n";
        assert_eq!(parse_disposition(status, 11), Disposition::Caught);
        assert_eq!(parse_disposition(status, 13), Disposition::Ignored);
        assert_eq!(parse_disposition(status, 7), Disposition::Default);
    }
}
