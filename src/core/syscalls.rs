//! System calls made during a traced call that name traced pages.
//!
//! During a call every thread stops at system-call entries. A call that changes the mapping
//! of traced pages, or hands the kernel a pointer into them, is recorded in the trace. The
//! kernel's own accesses respect the pages' protection: they fail with `EFAULT` and raise no
//! fault the supervisor could step, so the trace would otherwise miss them silently.

use super::Call;
use crate::event::SystemCallOnTracedPages;
use crate::messages::Protection;
use crate::regs::Registers;

const SYS_MMAP: u64 = 9;
const SYS_MPROTECT: u64 = 10;
const SYS_MUNMAP: u64 = 11;
const SYS_MREMAP: u64 = 25;
const SYS_MADVISE: u64 = 28;
const SYS_PKEY_MPROTECT: u64 = 329;
const MAP_FIXED: u64 = 0x10;

/// Checks a system-call entry and returns the note to record, if it names traced pages.
pub(super) fn check_entry(call: &Call, regs: &Registers) -> Option<SystemCallOnTracedPages> {
    let number = regs.orig_rax;
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    let effect = match number {
        SYS_MPROTECT if matches!(call.protection, Protection::ProtectionKey { .. }) => {
            // mprotect keeps a page's protection key, so tracing goes on. A protection that
            // forbids an access makes it fault for real when it is stepped.
            return None;
        }
        SYS_MPROTECT | SYS_PKEY_MPROTECT if overlaps(call, args[0], args[1]) => {
            "changes the protection of traced pages, so accesses to them may no longer be traced"
        }
        SYS_MUNMAP if overlaps(call, args[0], args[1]) => "unmaps traced pages",
        SYS_MREMAP if overlaps(call, args[0], args[1]) => "moves or resizes traced pages",
        SYS_MMAP if args[3] & MAP_FIXED != 0 && overlaps(call, args[0], args[1]) => "maps new memory over traced pages",
        SYS_MADVISE if overlaps(call, args[0], args[1]) => "advises the kernel on traced pages, which may discard their contents",
        SYS_MMAP | SYS_MPROTECT | SYS_PKEY_MPROTECT | SYS_MUNMAP | SYS_MREMAP | SYS_MADVISE => return None,
        _ if args.iter().take(arity(number)).any(|&arg| call.pages.contains(arg)) => {
            "passes a pointer into traced pages: the kernel's accesses there fail with EFAULT and are not traced"
        }
        _ => return None,
    };
    Some(SystemCallOnTracedPages {
        addr: regs.rip,
        number,
        name: name(number),
        args,
        effect: effect.to_string(),
    })
}

/// Returns true if the system call changes the mapping or protection of traced pages.
pub(super) fn changes_mapping(call: &Call, regs: &Registers) -> bool {
    let (start, len) = (regs.rdi, regs.rsi);
    match regs.orig_rax {
        SYS_MPROTECT | SYS_PKEY_MPROTECT | SYS_MUNMAP | SYS_MREMAP | SYS_MADVISE => overlaps(call, start, len),
        SYS_MMAP => regs.r10 & MAP_FIXED != 0 && overlaps(call, start, len),
        _ => false,
    }
}

fn overlaps(call: &Call, start: u64, len: u64) -> bool {
    !call.pages.traced_pages_of(start, start.saturating_add(len)).is_empty()
}

/// Common Linux x86-64 system calls: number, name and argument count.
const KNOWN: &[(u64, &str, usize)] = &[
    (0, "read", 3),
    (1, "write", 3),
    (2, "open", 3),
    (3, "close", 1),
    (4, "stat", 2),
    (5, "fstat", 2),
    (7, "poll", 3),
    (8, "lseek", 3),
    (9, "mmap", 6),
    (10, "mprotect", 3),
    (11, "munmap", 2),
    (12, "brk", 1),
    (13, "rt_sigaction", 4),
    (14, "rt_sigprocmask", 4),
    (15, "rt_sigreturn", 0),
    (16, "ioctl", 3),
    (17, "pread64", 4),
    (18, "pwrite64", 4),
    (19, "readv", 3),
    (20, "writev", 3),
    (21, "access", 2),
    (22, "pipe", 1),
    (24, "sched_yield", 0),
    (25, "mremap", 5),
    (28, "madvise", 3),
    (32, "dup", 1),
    (33, "dup2", 2),
    (34, "pause", 0),
    (35, "nanosleep", 2),
    (37, "alarm", 1),
    (38, "setitimer", 3),
    (39, "getpid", 0),
    (41, "socket", 3),
    (42, "connect", 3),
    (43, "accept", 3),
    (44, "sendto", 6),
    (45, "recvfrom", 6),
    (46, "sendmsg", 3),
    (47, "recvmsg", 3),
    (49, "bind", 3),
    (50, "listen", 2),
    (56, "clone", 5),
    (57, "fork", 0),
    (58, "vfork", 0),
    (59, "execve", 3),
    (60, "exit", 1),
    (61, "wait4", 4),
    (62, "kill", 2),
    (63, "uname", 1),
    (72, "fcntl", 3),
    (79, "getcwd", 2),
    (83, "mkdir", 2),
    (87, "unlink", 1),
    (89, "readlink", 3),
    (96, "gettimeofday", 2),
    (97, "getrlimit", 2),
    (98, "getrusage", 2),
    (99, "sysinfo", 1),
    (102, "getuid", 0),
    (104, "getgid", 0),
    (107, "geteuid", 0),
    (108, "getegid", 0),
    (110, "getppid", 0),
    (111, "getpgrp", 0),
    (137, "statfs", 2),
    (186, "gettid", 0),
    (200, "tkill", 2),
    (201, "time", 1),
    (202, "futex", 6),
    (203, "sched_setaffinity", 3),
    (204, "sched_getaffinity", 3),
    (217, "getdents64", 3),
    (228, "clock_gettime", 2),
    (230, "clock_nanosleep", 4),
    (231, "exit_group", 1),
    (232, "epoll_wait", 4),
    (234, "tgkill", 3),
    (257, "openat", 4),
    (262, "newfstatat", 4),
    (273, "set_robust_list", 2),
    (281, "epoll_pwait", 6),
    (293, "pipe2", 2),
    (302, "prlimit64", 4),
    (318, "getrandom", 3),
    (329, "pkey_mprotect", 4),
    (332, "statx", 5),
    (334, "rseq", 4),
    (435, "clone3", 2),
    (439, "faccessat2", 4),
];

/// Returns the system call's name, or `syscall N` when it is not in [`KNOWN`].
fn name(number: u64) -> String {
    match KNOWN.iter().find(|(known, _, _)| *known == number) {
        Some((_, name, _)) => name.to_string(),
        None => format!("syscall {number}"),
    }
}

/// Returns how many argument registers the system call reads; all six when it is not in
/// [`KNOWN`], so an unknown call is checked conservatively.
fn arity(number: u64) -> usize {
    KNOWN.iter().find(|(known, _, _)| *known == number).map_or(6, |(_, _, arity)| *arity)
}
