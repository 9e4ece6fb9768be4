//! One small function per ptrace request, each returning the failure as a message.

use std::os::unix::fs::FileExt;

use crate::core::SigInfo;
use crate::regs::Registers;

/// How to resume a stopped thread.
#[derive(Clone, Copy, Debug)]
pub(super) enum Resume {
    Step,
    Continue,
    /// Continue, stopping at the next system-call entry or exit.
    ToSyscall,
}

fn last_error(request: &str, pid: i32) -> String {
    format!("{request}({pid}) failed: {}", std::io::Error::last_os_error())
}

/// Attaches to `pid` with `PTRACE_SEIZE`, killing it if the supervisor exits.
pub(super) fn seize(pid: i32) -> Result<(), String> {
    let options = libc::PTRACE_O_EXITKILL
        | libc::PTRACE_O_TRACECLONE
        | libc::PTRACE_O_TRACEFORK
        | libc::PTRACE_O_TRACEVFORK
        | libc::PTRACE_O_TRACESYSGOOD;
    // SAFETY: PTRACE_SEIZE takes no pointer arguments; `data` carries the option bits.
    let result = unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, options as usize) };
    if result == 0 {
        return Ok(());
    }
    let errno = std::io::Error::last_os_error();
    Err(explain_seize_failure(&errno))
}

/// Says why `PTRACE_SEIZE` failed and what would fix it.
fn explain_seize_failure(errno: &std::io::Error) -> String {
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok();
    let scope = scope.as_deref().map(str::trim);
    match (errno.raw_os_error(), scope) {
        (Some(libc::EPERM), Some("3")) => format!(
            "PTRACE_SEIZE failed ({errno}): Yama ptrace_scope is 3, which forbids ptrace until reboot; \
             boot with kernel.yama.ptrace_scope set to 0, 1 or 2"
        ),
        (Some(libc::EPERM), Some("2")) => format!(
            "PTRACE_SEIZE failed ({errno}): Yama ptrace_scope is 2, which requires CAP_SYS_PTRACE; \
             run as root, grant CAP_SYS_PTRACE, or set kernel.yama.ptrace_scope to 1"
        ),
        (Some(libc::EPERM), _) => format!(
            "PTRACE_SEIZE failed ({errno}): ptrace is not permitted, usually by a container or a seccomp \
             profile; run the container with --cap-add=SYS_PTRACE and a seccomp profile that allows ptrace"
        ),
        (Some(libc::ENOSYS), _) => format!("PTRACE_SEIZE failed ({errno}): ptrace is blocked by a seccomp filter"),
        _ => format!("PTRACE_SEIZE failed: {errno}"),
    }
}

pub(super) fn get_registers(pid: i32) -> Result<Registers, String> {
    // SAFETY: user_regs_struct is plain integers, so all-zero is valid; the kernel fills it.
    let mut raw: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `raw` is a live user_regs_struct, as PTRACE_GETREGS requires.
    let result = unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0usize, &mut raw as *mut _) };
    if result != 0 {
        return Err(last_error("PTRACE_GETREGS", pid));
    }
    Ok(from_raw_registers(&raw))
}

pub(super) fn set_registers(pid: i32, regs: &Registers) -> Result<(), String> {
    let raw = to_raw_registers(regs);
    // SAFETY: `raw` is a live user_regs_struct, as PTRACE_SETREGS requires.
    let result = unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0usize, &raw as *const _) };
    if result != 0 {
        return Err(last_error("PTRACE_SETREGS", pid));
    }
    Ok(())
}

pub(super) fn get_siginfo(pid: i32) -> Result<SigInfo, String> {
    let mut raw = [0u64; 16];
    // SAFETY: `raw` is 128 bytes, the size of siginfo_t, as PTRACE_GETSIGINFO requires.
    let result = unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0usize, raw.as_mut_ptr()) };
    if result != 0 {
        return Err(last_error("PTRACE_GETSIGINFO", pid));
    }
    Ok(parse_siginfo(raw))
}

/// Decodes the fields of a raw siginfo_t that the core reads. Linux x86-64 layout: three
/// ints (signo, errno, code), padding, then a union at byte 16 where faults keep `si_addr`,
/// and signals from processes keep `si_pid` (16), `si_uid` (20) and `si_value` (24).
pub(super) fn parse_siginfo(raw: [u64; 16]) -> SigInfo {
    let signo = raw[0] as u32 as i32;
    let code = (raw[1] & 0xffff_ffff) as u32 as i32;
    let is_fault = matches!(signo, libc::SIGSEGV | libc::SIGBUS | libc::SIGILL | libc::SIGFPE | libc::SIGTRAP);
    let from_kernel = code > 0;
    let (addr, pid, value) = if is_fault && from_kernel {
        (raw[2], 0, 0)
    } else {
        ((0), raw[2] as u32 as i32, raw[3])
    };
    SigInfo { signo, code, addr, pid, value, raw }
}

/// Resumes the thread, delivering `signal` with its original siginfo if given.
pub(super) fn resume(pid: i32, how: Resume, signal: Option<&SigInfo>) -> Result<(), String> {
    let signo = match signal {
        Some(info) => {
            // SAFETY: `info.raw` is 128 bytes, the size of siginfo_t.
            let result = unsafe { libc::ptrace(libc::PTRACE_SETSIGINFO, pid, 0usize, info.raw.as_ptr()) };
            if result != 0 {
                return Err(last_error("PTRACE_SETSIGINFO", pid));
            }
            info.signo
        }
        None => 0,
    };
    let (request, name) = match how {
        Resume::Step => (libc::PTRACE_SINGLESTEP, "PTRACE_SINGLESTEP"),
        Resume::Continue => (libc::PTRACE_CONT, "PTRACE_CONT"),
        Resume::ToSyscall => (libc::PTRACE_SYSCALL, "PTRACE_SYSCALL"),
    };
    // SAFETY: both requests take the signal to deliver in `data` and no pointer.
    let result = unsafe { libc::ptrace(request, pid, 0usize, signo as usize) };
    if result != 0 {
        return Err(last_error(name, pid));
    }
    Ok(())
}

/// Makes `info`'s signal pending for thread `tid` again. `rt_tgsigqueueinfo` keeps the
/// siginfo but Linux accepts it only for process-sent codes (negative, other than SI_TKILL);
/// anything else is re-sent with `tgkill`.
pub(super) fn queue_signal(tid: i32, info: &SigInfo) -> Result<(), String> {
    // SAFETY: getpid and the syscalls below take plain integers and a pointer to `info.raw`,
    // a live 128-byte siginfo_t.
    let result = unsafe {
        let tgid = tgid_of(tid);
        if info.code < 0 && info.code != libc::SI_TKILL {
            libc::syscall(libc::SYS_rt_tgsigqueueinfo, tgid, tid, info.signo, info.raw.as_ptr())
        } else {
            libc::syscall(libc::SYS_tgkill, tgid, tid, info.signo)
        }
    };
    if result != 0 {
        return Err(last_error("rt_tgsigqueueinfo/tgkill", tid));
    }
    Ok(())
}

/// Returns the thread group (process) id of thread `tid`, or `tid` if it cannot be read.
fn tgid_of(tid: i32) -> i32 {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(tid)
}

/// Returns `PTRACE_GETEVENTMSG`: the new task's id at a clone, fork or vfork stop.
pub(super) fn event_message(tid: i32) -> Result<u64, String> {
    let mut message: libc::c_ulong = 0;
    // SAFETY: `message` is a live unsigned long for the kernel to fill.
    let result = unsafe { libc::ptrace(libc::PTRACE_GETEVENTMSG, tid, 0usize, &mut message as *mut _) };
    if result != 0 {
        return Err(last_error("PTRACE_GETEVENTMSG", tid));
    }
    Ok(message as u64)
}

/// Stops the running thread with `PTRACE_INTERRUPT`; the stop is reported through waitpid.
pub(super) fn interrupt(tid: i32) -> Result<(), String> {
    // SAFETY: PTRACE_INTERRUPT takes no pointer arguments.
    let result = unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize) };
    if result != 0 {
        return Err(last_error("PTRACE_INTERRUPT", tid));
    }
    Ok(())
}

/// Returns whether the thread's system-call stop is an entry, and whether the system call is
/// a 32-bit one. It uses `PTRACE_GET_SYSCALL_INFO` (Linux 5.3 and later): the first byte of
/// the result is 1 at entry and 2 at exit, and the 32-bit word at byte 4 is `AUDIT_ARCH_*`.
pub(super) fn syscall_stop_kind(tid: i32) -> Result<(bool, bool), String> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
    let mut info = [0u8; 88];
    // SAFETY: `info` is 88 bytes, the size passed, which fits struct ptrace_syscall_info.
    let result = unsafe { libc::ptrace(PTRACE_GET_SYSCALL_INFO, tid, info.len(), info.as_mut_ptr()) };
    if result < 0 {
        return Err(last_error("PTRACE_GET_SYSCALL_INFO", tid));
    }
    let arch = u32::from_ne_bytes([info[4], info[5], info[6], info[7]]);
    Ok((info[0] == 1, arch != AUDIT_ARCH_X86_64))
}

/// Turns on syscall user dispatch for the stopped thread (Linux 6.4 and later): while the
/// byte at `selector` blocks, its system calls outside `offset..offset + len` raise SIGSYS.
pub(super) fn set_syscall_dispatch(tid: i32, selector: u64, offset: u64, len: u64) -> Result<(), String> {
    const PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG: libc::c_uint = 0x4210;
    /// `PR_SYS_DISPATCH_ON`.
    const ON: u64 = 1;
    // struct ptrace_sud_config: mode, selector, offset, len.
    let config: [u64; 4] = [ON, selector, offset, len];
    let size = std::mem::size_of_val(&config);
    // SAFETY: `config` is the 32-byte structure whose size is passed; the kernel only reads it.
    let result = unsafe { libc::ptrace(PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG, tid, size, config.as_ptr()) };
    if result != 0 {
        return Err(last_error("PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG", tid));
    }
    Ok(())
}

/// Adds `signal` to the stopped thread's blocked signals.
pub(super) fn block_signal(tid: i32, signal: i32) -> Result<(), String> {
    const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
    const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
    let mut mask: u64 = 0;
    let size = std::mem::size_of::<u64>();
    // SAFETY: `mask` is the 8-byte kernel signal set whose size is passed.
    if unsafe { libc::ptrace(PTRACE_GETSIGMASK, tid, size, &mut mask as *mut u64) } != 0 {
        return Err(last_error("PTRACE_GETSIGMASK", tid));
    }
    mask |= 1 << (signal - 1);
    // SAFETY: as above; the kernel only reads the set.
    if unsafe { libc::ptrace(PTRACE_SETSIGMASK, tid, size, &mask as *const u64) } != 0 {
        return Err(last_error("PTRACE_SETSIGMASK", tid));
    }
    Ok(())
}

/// Detaches from the stopped task, which resumes untraced.
pub(super) fn detach(tid: i32) -> Result<(), String> {
    // SAFETY: PTRACE_DETACH takes the signal to deliver (none) in `data` and no pointer.
    let result = unsafe { libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize) };
    if result != 0 {
        return Err(last_error("PTRACE_DETACH", tid));
    }
    Ok(())
}

pub(super) fn kill(pid: i32) -> Result<(), String> {
    // SAFETY: kill takes no pointers.
    if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
        return Err(last_error("kill", pid));
    }
    Ok(())
}

/// Writes into the child through `/proc/PID/mem`, which ignores page protection.
pub(super) fn write_memory(pid: i32, addr: u64, bytes: &[u8]) -> Result<(), String> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{pid}/mem"))
        .map_err(|error| format!("opening /proc/{pid}/mem failed: {error}"))?;
    file.write_all_at(bytes, addr).map_err(|error| format!("writing {} bytes at {addr:#x} failed: {error}", bytes.len()))
}

/// Writes `count` zero words at `addr` with one `PTRACE_POKEDATA` each.
pub(super) fn zero_words(tid: i32, addr: u64, count: u32) -> Result<(), String> {
    for word in 0..u64::from(count) {
        // SAFETY: PTRACE_POKEDATA takes the address and the word's value, no pointer.
        let result = unsafe { libc::ptrace(libc::PTRACE_POKEDATA, tid, addr + word * 8, 0usize) };
        if result != 0 {
            return Err(last_error("PTRACE_POKEDATA", tid));
        }
    }
    Ok(())
}

/// Reads up to 15 instruction bytes at `rip`, stopping early at an unreadable page.
pub(super) fn read_code(pid: i32, rip: u64) -> Vec<u8> {
    const MAX_INSTRUCTION_LEN: usize = 15;
    let mut code = vec![0u8; MAX_INSTRUCTION_LEN];
    let local = libc::iovec { iov_base: code.as_mut_ptr().cast(), iov_len: code.len() };
    let remote = libc::iovec { iov_base: rip as *mut libc::c_void, iov_len: code.len() };
    // SAFETY: `local` describes `code`, which outlives the call; `remote` is only read by the
    // kernel from the other process. A read that crosses into an unreadable page stops there
    // and returns the bytes before it.
    let read = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    code.truncate(usize::try_from(read).unwrap_or(0));
    code
}

/// Reads up to 15 instruction bytes at `rip` from the process's open `/proc/PID/mem`,
/// stopping early at an unmapped page.
pub(super) fn read_code_from(memory: &std::fs::File, rip: u64) -> Vec<u8> {
    const MAX_INSTRUCTION_LEN: usize = 15;
    let mut code = vec![0u8; MAX_INSTRUCTION_LEN];
    // A read that crosses into an unmapped page returns the bytes before it.
    let read = memory.read_at(&mut code, rip).unwrap_or(0);
    code.truncate(read);
    code
}

fn from_raw_registers(raw: &libc::user_regs_struct) -> Registers {
    Registers {
        r15: raw.r15,
        r14: raw.r14,
        r13: raw.r13,
        r12: raw.r12,
        rbp: raw.rbp,
        rbx: raw.rbx,
        r11: raw.r11,
        r10: raw.r10,
        r9: raw.r9,
        r8: raw.r8,
        rax: raw.rax,
        rcx: raw.rcx,
        rdx: raw.rdx,
        rsi: raw.rsi,
        rdi: raw.rdi,
        orig_rax: raw.orig_rax,
        rip: raw.rip,
        cs: raw.cs,
        eflags: raw.eflags,
        rsp: raw.rsp,
        ss: raw.ss,
        fs_base: raw.fs_base,
        gs_base: raw.gs_base,
        ds: raw.ds,
        es: raw.es,
        fs: raw.fs,
        gs: raw.gs,
    }
}

fn to_raw_registers(regs: &Registers) -> libc::user_regs_struct {
    libc::user_regs_struct {
        r15: regs.r15,
        r14: regs.r14,
        r13: regs.r13,
        r12: regs.r12,
        rbp: regs.rbp,
        rbx: regs.rbx,
        r11: regs.r11,
        r10: regs.r10,
        r9: regs.r9,
        r8: regs.r8,
        rax: regs.rax,
        rcx: regs.rcx,
        rdx: regs.rdx,
        rsi: regs.rsi,
        rdi: regs.rdi,
        orig_rax: regs.orig_rax,
        rip: regs.rip,
        cs: regs.cs,
        eflags: regs.eflags,
        rsp: regs.rsp,
        ss: regs.ss,
        fs_base: regs.fs_base,
        gs_base: regs.gs_base,
        ds: regs.ds,
        es: regs.es,
        fs: regs.fs,
        gs: regs.gs,
    }
}
