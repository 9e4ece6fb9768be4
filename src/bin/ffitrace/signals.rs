//! Names of signals and of the `si_code` values the kernel sets for faults.

/// The signal's conventional name, such as `SIGSEGV`.
pub fn name(signo: i32) -> String {
    let known = match signo {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {signo}"),
    };
    known.to_string()
}

/// What `code` means for a signal `signo`, as `<signal.h>` documents it on Linux.
pub fn code_meaning(signo: i32, code: i32) -> &'static str {
    match (signo, code) {
        (_, 0) => "sent by a process with kill",
        (_, -1) => "queued by a process",
        (_, -6) => "sent by a thread with tgkill, for example by abort",
        (libc::SIGSEGV, KERNEL) => {
            "a general-protection fault: a non-canonical address, a misaligned aligned access or a privileged instruction"
        }
        (libc::SIGTRAP, KERNEL) => "a breakpoint instruction (int3) just before the instruction pointer",
        (_, KERNEL) => "raised by the kernel",
        (libc::SIGSEGV, 1) => "address not mapped",
        (libc::SIGSEGV, 2) => "no permission for the mapped address",
        (libc::SIGSEGV, 3) => "failed bounds check",
        (libc::SIGSEGV, 4) => "protection key check failed",
        (libc::SIGBUS, 1) => "invalid address alignment",
        (libc::SIGBUS, 2) => "nonexistent physical address",
        (libc::SIGBUS, 3) => "object-specific hardware error",
        (libc::SIGILL, 1) => "illegal opcode",
        (libc::SIGILL, 2) => "illegal operand",
        (libc::SIGILL, 3) => "illegal addressing mode",
        (libc::SIGILL, 4) => "illegal trap",
        (libc::SIGILL, 5) => "privileged opcode",
        (libc::SIGILL, 6) => "privileged register",
        (libc::SIGILL, 7) => "coprocessor error",
        (libc::SIGILL, 8) => "internal stack error",
        (libc::SIGFPE, 1) => "integer divide by zero",
        (libc::SIGFPE, 2) => "integer overflow",
        (libc::SIGFPE, 3) => "floating-point divide by zero",
        (libc::SIGFPE, 4) => "floating-point overflow",
        (libc::SIGFPE, 5) => "floating-point underflow",
        (libc::SIGFPE, 6) => "floating-point inexact result",
        (libc::SIGFPE, 7) => "invalid floating-point operation",
        (libc::SIGFPE, 8) => "subscript out of range",
        (libc::SIGTRAP, 1) => "breakpoint",
        (libc::SIGTRAP, 2) => "trace trap",
        _ => "unknown cause",
    }
}

/// `SI_KERNEL`: the kernel raised the signal without a fault address.
const KERNEL: i32 = 0x80;

/// True for the signals whose `si_addr` is the faulting data address rather than code. A
/// general-protection fault (`SI_KERNEL`) carries no address.
pub fn has_data_address(signo: i32, code: i32) -> bool {
    (signo == libc::SIGSEGV || signo == libc::SIGBUS) && code != KERNEL
}
