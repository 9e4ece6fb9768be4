//! Waiting for the traced program and turning what `waitpid` reports into an [`ExecEvent`].

use tracing::warn;

use super::ptrace;
use crate::core::{Disposition, ExecEvent, SignalStop, SyscallPhase, TaskKind};

/// The meaning of one `waitpid` status, decoded without any system call.
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

/// `PTRACE_EVENT_*` numbers from `<sys/ptrace.h>`.
const PTRACE_EVENT_FORK: i32 = 1;
const PTRACE_EVENT_VFORK: i32 = 2;
const PTRACE_EVENT_CLONE: i32 = 3;

/// Blocks until a traced task changes state and describes the change. `program` is the
/// main thread: its exit is the program's, any other task's is a [`ExecEvent::TaskExited`].
/// `memory` is the program's open `/proc/PID/mem`, which reads its main thread's code faster
/// than `process_vm_readv`.
pub(super) fn next_event(program: i32, memory: Option<&std::fs::File>) -> ExecEvent {
    loop {
        let (tid, status) = match wait(-1, libc::__WALL) {
            Ok(result) => result,
            Err(error) => {
                // ECHILD means every task is already reaped: nothing more will ever happen.
                warn!(program, %error, "waitpid failed");
                return ExecEvent::Killed { signal: libc::SIGKILL, core_dumped: false };
            }
        };
        match decode_status(status) {
            WaitStatus::Exited(status) if tid == program => return ExecEvent::Exited { status },
            WaitStatus::Killed { signal, core_dumped } if tid == program => {
                return ExecEvent::Killed { signal, core_dumped }
            }
            WaitStatus::Exited(_) | WaitStatus::Killed { .. } => return ExecEvent::TaskExited { tid },
            WaitStatus::EventStop { event, .. } => return event_stop(tid, event),
            WaitStatus::SignalStop(SYSCALL_STOP) => match syscall_stop(tid) {
                Ok(event) => return event,
                Err(error) => warn!(tid, %error, "could not read the system-call stop"),
            },
            WaitStatus::SignalStop(signal) => match signal_stop(tid, signal, memory.filter(|_| tid == program)) {
                Ok(stop) => return ExecEvent::Signal(stop),
                Err(error) => warn!(tid, signal, %error, "could not read the stopped thread's state"),
            },
            WaitStatus::Other => {}
        }
    }
}

/// The stop signal of a system-call stop with `PTRACE_O_TRACESYSGOOD`: SIGTRAP | 0x80.
const SYSCALL_STOP: i32 = libc::SIGTRAP | 0x80;

fn syscall_stop(tid: i32) -> Result<ExecEvent, String> {
    let regs = ptrace::get_registers(tid)?;
    let (entry, compat) = ptrace::syscall_stop_kind(tid)?;
    let phase = if entry { SyscallPhase::Entry } else { SyscallPhase::Exit };
    Ok(ExecEvent::Syscall { tid, regs, phase, compat })
}

fn event_stop(tid: i32, event: i32) -> ExecEvent {
    let kind = match event {
        PTRACE_EVENT_CLONE => TaskKind::Thread,
        PTRACE_EVENT_FORK => TaskKind::Fork,
        PTRACE_EVENT_VFORK => TaskKind::Vfork,
        _ => return ExecEvent::OtherStop { tid, regs: ptrace::get_registers(tid).ok() },
    };
    match ptrace::event_message(tid) {
        // A clone made with CLONE_THREAD is a thread; a clone without it (posix_spawn's
        // CLONE_VM | CLONE_VFORK comes as a vfork event) is treated as its event kind.
        Ok(new_tid) => ExecEvent::NewTask { parent: tid, tid: new_tid as i32, kind },
        Err(error) => {
            warn!(tid, %error, "could not read the new task's id");
            ExecEvent::OtherStop { tid, regs: None }
        }
    }
}

fn signal_stop(tid: i32, signal: i32, memory: Option<&std::fs::File>) -> Result<SignalStop, String> {
    let info = ptrace::get_siginfo(tid)?;
    let regs = ptrace::get_registers(tid)?;
    let fault = matches!(
        signal,
        libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP | libc::SIGABRT
    );
    let code = match (fault, memory) {
        (false, _) => Vec::new(),
        (true, Some(memory)) => ptrace::read_code_from(memory, regs.rip),
        (true, None) => ptrace::read_code(tid, regs.rip),
    };
    // The disposition costs a read of /proc/TID/status, more than the rest of the stop, so
    // it is read only on the core's request (ReadDisposition).
    Ok(SignalStop { tid, info, regs, code, disposition: Disposition::Unknown })
}

/// Reads the disposition of `signal` from the SigIgn and SigCgt masks of `/proc/PID/status`.
pub(super) fn read_disposition(pid: i32, signal: i32) -> Disposition {
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

fn wait(pid: i32, flags: i32) -> Result<(i32, i32), std::io::Error> {
    let mut status = 0;
    loop {
        // SAFETY: `status` is a live int for waitpid to fill.
        let result = unsafe { libc::waitpid(pid, &mut status, flags) };
        if result > 0 {
            return Ok((result, status));
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
        match wait(pid, 0).map(|(_, status)| decode_status(status)) {
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
