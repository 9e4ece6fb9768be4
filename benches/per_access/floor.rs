//! The floor: the least a ptrace tracer can do per access.
//!
//! This process forks. The new process requests tracing with `PTRACE_TRACEME`, makes the
//! buffers `PROT_NONE`, runs the workload and makes them accessible again. This process, on each SIGSEGV, only moves the
//! instruction pointer past the faulting instruction and continues: one stop per faulting
//! instruction, with `PTRACE_GETREGS`, `PTRACE_SETREGS` and `PTRACE_CONT` as its only
//! requests. Instruction lengths are decoded with iced-x86 once per address and cached. A
//! `rep` string instruction is skipped whole, in one stop, as ffitrace's supervisor carries
//! out `rep stos` and `rep movs` in one stop.
//!
//! The skipped instructions never read or write, so loads leave stale registers and the
//! buffers keep their old contents: the floor is a lower bound on cost, not a tracer, and its
//! buffers are not checked. Where the workload's path depends on the loaded values (strlen,
//! qsort), the floor's path differs from the real one.
//!
//! The floor with data (`floor-data`) adds, at each stop, the system calls that a supervisor
//! which carries the instruction out cannot avoid. These are `PTRACE_GETSIGINFO`, because a
//! SIGSEGV sent with `kill` must not be taken for a fault, a `pread` of the code from
//! `/proc/PID/mem`, not cached because code can change, and the access's bytes through
//! `/proc/PID/mem`, which alone reaches `PROT_NONE` pages. A `rep stos` or `rep movs` is carried out: its bytes are written
//! (and for `movs` first read) and RSI, RDI and RCX set after it. Any other instruction reads
//! its memory operand's bytes at the fault address and is skipped. It still leaves loaded
//! registers stale, so it is no tracer either.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use std::os::unix::fs::FileExt;

use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};

use crate::child::{time_calls, Measurement, Timing};
use crate::workloads::{Library, Setup, Workload};

/// Runs the workload under the floor, or under the floor with data when `carry_data` is set.
pub fn measure(
    library: &Library,
    workload: Workload,
    size: usize,
    target: Duration,
    carry_data: bool,
) -> Result<Measurement, String> {
    let mut pipe = [0; 2];
    // SAFETY: `pipe` has room for the two descriptors.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return Err(format!("pipe failed: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: this process has one thread, so the child may run any code after fork.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork failed: {}", std::io::Error::last_os_error())),
        0 => {
            // SAFETY: the read end belongs to the tracer.
            unsafe { libc::close(pipe[0]) };
            traced_process(library, workload, size, target, pipe[1])
        }
        pid => {
            // SAFETY: the write end belongs to the traced process.
            unsafe { libc::close(pipe[1]) };
            let stops = trace(pid, carry_data.then(DataPath::new))?;
            let mut text = String::new();
            {
                use std::io::Read;
                use std::os::fd::FromRawFd;
                // SAFETY: `pipe[0]` is this process's open read end, owned by the file now.
                let mut file = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
                file.read_to_string(&mut text).map_err(|error| error.to_string())?;
            }
            let fields: Vec<f64> = text.split_whitespace().filter_map(|field| field.parse().ok()).collect();
            let [timed, ns_per_call, all_calls] = fields[..] else {
                return Err(format!("the traced process reported '{text}'"));
            };
            Ok(Measurement {
                calls: timed as u64,
                ns_per_call,
                stops_per_call: stops as f64 / all_calls,
                ..Measurement::default()
            })
        }
    }
}

/// Runs in the traced process: makes the calls with the buffers inaccessible and writes
/// `TIMED_CALLS NS_PER_CALL ALL_CALLS` to `report`.
fn traced_process(library: &Library, workload: Workload, size: usize, target: Duration, report: i32) -> ! {
    // SAFETY: these calls take integers only.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) != 0 {
            libc::_exit(2);
        }
        libc::raise(libc::SIGSTOP);
    }
    let mut setup = Setup::new(workload, size);
    let ranges = setup.ranges();
    let protect = |protection: libc::c_int| {
        for range in &ranges {
            // SAFETY: the range is one of the setup's own mappings.
            unsafe { libc::mprotect(range.start as *mut libc::c_void, range.len as usize, protection) };
        }
    };
    let mut all_calls = 0u64;
    let timing = time_calls(target, || {
        setup.prepare();
        // The protection changes are timed, as ffitrace's are inside trace_call.
        let start = Instant::now();
        protect(libc::PROT_NONE);
        setup.call(library);
        protect(libc::PROT_READ | libc::PROT_WRITE);
        let elapsed = start.elapsed();
        all_calls += 1;
        Ok(elapsed)
    });
    let Ok(Timing { calls, ns_per_call }) = timing else {
        // SAFETY: _exit ends the process without running anything else.
        unsafe { libc::_exit(3) };
    };
    let text = format!("{calls} {ns_per_call} {all_calls}");
    // SAFETY: `text` is live for the call; `report` is the pipe's write end.
    unsafe {
        libc::write(report, text.as_ptr().cast(), text.len());
        libc::_exit(0);
    }
}

/// Traces `pid` until it exits and returns the number of SIGSEGV stops.
fn trace(pid: i32, mut data: Option<DataPath>) -> Result<u64, String> {
    let mut lengths: HashMap<u64, u64> = HashMap::new();
    let mut stops = 0u64;
    loop {
        let mut status = 0;
        // SAFETY: `status` is a live integer for waitpid to fill.
        if unsafe { libc::waitpid(pid, &mut status, libc::__WALL) } != pid {
            return Err(format!("waitpid failed: {}", std::io::Error::last_os_error()));
        }
        if libc::WIFEXITED(status) {
            return match libc::WEXITSTATUS(status) {
                0 => Ok(stops),
                code => Err(format!("the floor's traced process exited with {code}")),
            };
        }
        if libc::WIFSIGNALED(status) {
            return Err(format!("the floor's traced process died of signal {}", libc::WTERMSIG(status)));
        }
        let signal = libc::WSTOPSIG(status);
        let deliver = match signal {
            libc::SIGSEGV => {
                stops += 1;
                match data.as_mut() {
                    Some(data) => data.carry_out(pid)?,
                    None => skip_instruction(pid, &mut lengths)?,
                }
                0
            }
            libc::SIGSTOP => 0,
            other => other,
        };
        // SAFETY: PTRACE_CONT takes the signal to deliver as an integer.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, deliver as libc::c_long) };
    }
}

fn skip_instruction(pid: i32, lengths: &mut HashMap<u64, u64>) -> Result<(), String> {
    let mut regs = get_registers(pid)?;
    let len = match lengths.get(&regs.rip) {
        Some(&len) => len,
        None => {
            let len = instruction_length(pid, regs.rip)?;
            lengths.insert(regs.rip, len);
            len
        }
    };
    regs.rip += len;
    set_registers(pid, &regs)
}

/// The floor with data's access to the traced process's memory.
struct DataPath {
    /// `/proc/PID/mem`, opened at the first stop, once the process is traced.
    memory: Option<std::fs::File>,
    bytes: Vec<u8>,
}

impl DataPath {
    fn new() -> DataPath {
        DataPath { memory: None, bytes: Vec::new() }
    }

    /// Moves the faulting instruction's bytes and then its instruction pointer past it.
    fn carry_out(&mut self, pid: i32) -> Result<(), String> {
        // SAFETY: siginfo_t is plain data; PTRACE_GETSIGINFO fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is live and of the type PTRACE_GETSIGINFO writes.
        if unsafe { libc::ptrace(libc::PTRACE_GETSIGINFO, pid, 0, &mut info) } != 0 {
            return Err(format!("PTRACE_GETSIGINFO failed: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: the stop is a SIGSEGV, whose siginfo carries an address.
        let fault = unsafe { info.si_addr() } as u64;
        let mut regs = get_registers(pid)?;
        if self.memory.is_none() {
            let path = format!("/proc/{pid}/mem");
            let file = std::fs::OpenOptions::new().read(true).write(true).open(&path);
            self.memory = Some(file.map_err(|error| format!("opening {path} failed: {error}"))?);
        }
        let Some(memory) = self.memory.as_ref() else { return Err("no /proc/PID/mem".to_string()) };
        let mut code = [0u8; 15];
        let read = memory.read_at(&mut code, regs.rip).map_err(|error| format!("reading the code failed: {error}"))?;
        let instruction = Decoder::with_ip(64, &code[..read], regs.rip, DecoderOptions::NONE).decode();
        if instruction.is_invalid() {
            return Err(format!("invalid instruction at {:#x}", regs.rip));
        }
        let element = instruction.memory_size().size().max(1) as u64;
        let forward = regs.eflags & 0x400 == 0;
        let failed = |what: &str, error: std::io::Error| format!("{what} through /proc/PID/mem failed: {error}");
        match string_kind(&instruction) {
            Some(StringKind::Store) if forward => {
                let count = regs.rcx * element;
                let pattern = regs.rax.to_le_bytes();
                self.bytes.clear();
                self.bytes.resize(count as usize, pattern[0]);
                if element > 1 {
                    for chunk in self.bytes.chunks_exact_mut(element as usize) {
                        chunk.copy_from_slice(&pattern[..element as usize]);
                    }
                }
                memory.write_all_at(&self.bytes, regs.rdi).map_err(|error| failed("writing", error))?;
                regs.rdi += count;
                regs.rcx = 0;
            }
            Some(StringKind::Move) if forward => {
                let count = regs.rcx * element;
                self.bytes.resize(count as usize, 0);
                memory.read_exact_at(&mut self.bytes, regs.rsi).map_err(|error| failed("reading", error))?;
                memory.write_all_at(&self.bytes, regs.rdi).map_err(|error| failed("writing", error))?;
                regs.rsi += count;
                regs.rdi += count;
                regs.rcx = 0;
            }
            _ => {
                self.bytes.resize(element as usize, 0);
                memory.read_exact_at(&mut self.bytes, fault).map_err(|error| failed("reading", error))?;
            }
        }
        regs.rip += instruction.len() as u64;
        set_registers(pid, &regs)
    }
}

enum StringKind {
    Store,
    Move,
}

/// Returns the kind of a `rep stos` or `rep movs`.
fn string_kind(instruction: &Instruction) -> Option<StringKind> {
    if !instruction.has_rep_prefix() {
        return None;
    }
    match instruction.mnemonic() {
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => Some(StringKind::Store),
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => Some(StringKind::Move),
        _ => None,
    }
}

fn get_registers(pid: i32) -> Result<libc::user_regs_struct, String> {
    // SAFETY: user_regs_struct is plain integers; PTRACE_GETREGS fills it.
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: `regs` is live and of the type PTRACE_GETREGS writes.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs) } != 0 {
        return Err(format!("PTRACE_GETREGS failed: {}", std::io::Error::last_os_error()));
    }
    Ok(regs)
}

fn set_registers(pid: i32, regs: &libc::user_regs_struct) -> Result<(), String> {
    // SAFETY: `regs` is live and of the type PTRACE_SETREGS reads.
    if unsafe { libc::ptrace(libc::PTRACE_SETREGS, pid, 0, regs) } != 0 {
        return Err(format!("PTRACE_SETREGS failed: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads and decodes the instruction at `rip` in the traced process and returns its length.
fn instruction_length(pid: i32, rip: u64) -> Result<u64, String> {
    let mut code = [0u8; 15];
    let local = libc::iovec { iov_base: code.as_mut_ptr().cast(), iov_len: code.len() };
    let remote = libc::iovec { iov_base: rip as *mut libc::c_void, iov_len: code.len() };
    // SAFETY: `local` describes `code`, which outlives the call; `remote` is only read.
    let read = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if read <= 0 {
        return Err(format!("reading the code at {rip:#x} failed"));
    }
    let instruction = Decoder::with_ip(64, &code[..read as usize], rip, DecoderOptions::NONE).decode();
    if instruction.is_invalid() {
        return Err(format!("invalid instruction at {rip:#x}"));
    }
    Ok(instruction.len() as u64)
}
