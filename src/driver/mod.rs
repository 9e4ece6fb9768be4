//! The thin ptrace driver: turns `waitpid` results into [`ExecEvent`]s, feeds them to the
//! core and executes the [`Action`]s it returns. Every decision lives in the core.

#[cfg(feature = "fault-injection")]
mod inject;
mod ptrace;
mod wait;
mod xstate;

use std::time::Duration;

use ipc_channel::ipc::{IpcReceiver, IpcSender, TryRecvError};
use tracing::{debug, error, warn};

use crate::board::Board;
use crate::core::{Action, ExecEvent, Supervisor};
use crate::messages::{ChildMessage, SupervisorMessage};
use crate::{Options, ProcessView};

/// The supervisor's resources: the traced child, both IPC ends and the embedder's settings.
struct Driver {
    pid: i32,
    to_child: IpcSender<SupervisorMessage>,
    from_child: IpcReceiver<ChildMessage>,
    options: Options,
    xsave_layout: xstate::XsaveLayout,
    /// The program's `/proc/PID/mem`, opened once: it reads and writes memory whatever the
    /// protection, and serves every thread because they share the address space.
    program_memory: Option<std::fs::File>,
    /// The call board shared with the program, and the call and activity last fed from it.
    board: Option<Board>,
    board_seen: (u64, bool, u64),
}

/// Attaches to `pid` and supervises it until it is gone, then exits the process with the
/// status the core chose. Runs in the parent after `fork`.
pub(crate) fn supervise(
    pid: i32,
    to_child: IpcSender<SupervisorMessage>,
    from_child: IpcReceiver<ChildMessage>,
    options: Options,
    board: Option<Board>,
) -> ! {
    keep_freed_memory();
    ignore_terminal_signals();
    forward_termination_signals(pid);
    let xsave_layout = xstate::XsaveLayout::from_cpuid();
    let program_memory = std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem")).ok();
    let mut driver =
        Driver { pid, to_child, from_child, options, xsave_layout, program_memory, board, board_seen: (0, false, 0) };

    if let Err(reason) = ptrace::seize(pid) {
        // The program receives the reason in `InitError::PtraceDenied` and decides what to print.
        debug!(pid, %reason, "ptrace unavailable, the program runs untraced");
        let _ = driver.to_child.send(SupervisorMessage::Attached(Err(reason)));
        std::process::exit(wait::wait_untraced(pid));
    }
    if let Err(error) = driver.to_child.send(SupervisorMessage::Attached(Ok(()))) {
        error!(pid, %error, "could not tell the child it is traced");
    }

    let mut core = Supervisor::new(pid);
    loop {
        let event = wait::next_event(pid, driver.program_memory.as_ref());
        // The stop may be the first the core hears of a board call, or the first after one.
        if let Some(change) = driver.board.as_ref().and_then(|board| board.poll(&mut driver.board_seen)) {
            let program_gone = matches!(event, ExecEvent::Exited { .. } | ExecEvent::Killed { .. });
            driver.run(&mut core, ExecEvent::CallBoard(change), program_gone);
        }
        driver.run(&mut core, event, false);
    }
}

/// Reads memory of thread `tid` with `process_vm_readv`, which, unlike `/proc/PID/mem`, fails
/// where the thread could not read itself. Returns `None` unless every byte was read.
fn read_as_program(tid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut bytes = vec![0u8; len];
    let local = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: `local` describes `bytes`, which outlives the call; the remote range is only
    // read, in another process.
    let read = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    (read == len as isize).then_some(bytes)
}

/// Writes memory of thread `tid` with `process_vm_writev`, which fails where the thread could
/// not write itself. Returns true when every byte was written.
fn write_as_program(tid: i32, addr: u64, bytes: &[u8]) -> bool {
    let local = libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: bytes.len() };
    // SAFETY: `local` describes `bytes`, which the kernel only reads; the remote range lies in
    // another process.
    let written = unsafe { libc::process_vm_writev(tid, &local, 1, &remote, 1, 0) };
    written == bytes.len() as isize
}

/// Keeps memory the supervisor frees for its next allocation. Carrying out a `rep` block
/// allocates and frees buffers of the block's size, at most 4 MiB, at every stop. By default
/// glibc gives that memory back and faults it in again at the next stop, which cost 1.5 µs of
/// a 64 KiB `memset`'s 47 µs, pinned. With these settings blocks up to 8 MiB come from the
/// heap, and up to 16 MiB of freed memory is kept.
fn keep_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes integers and only changes the allocator's thresholds.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 8 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 16 << 20);
    }
}

/// Leaves Ctrl-C and Ctrl-\ to the traced program: it decides whether they end it, and the
/// supervisor exits when it does.
fn ignore_terminal_signals() {
    // SAFETY: installing SIG_IGN involves no handler code.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGQUIT, libc::SIG_IGN);
    }
}

/// The traced program, for the signal handler that forwards signals to it.
static PROGRAM: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Passes SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to the supervisor on to the traced
/// program. `timeout`, a service manager or the native code itself (with `getppid`) sends
/// them to the supervisor, because it is the process they see. Forwarded, they end the
/// program as they would untraced, and the supervisor reports what was traced.
fn forward_termination_signals(pid: i32) {
    extern "C" fn forward(signal: libc::c_int) {
        let program = PROGRAM.load(std::sync::atomic::Ordering::Relaxed);
        if program > 0 {
            // SAFETY: kill is async-signal-safe and takes two integers.
            unsafe { libc::kill(program, signal) };
        }
    }
    PROGRAM.store(pid, std::sync::atomic::Ordering::Relaxed);
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2] {
        // SAFETY: the handler only calls kill, which is async-signal-safe; the sigaction
        // structure is fully initialised before use.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                warn!(signal, error = %std::io::Error::last_os_error(), "cannot forward a signal to the program");
            }
        }
    }
}

impl Driver {
    /// Feeds `event` to the core and executes its actions; an action that yields an event
    /// (receiving a message) feeds that event in turn.
    /// `program_gone` is true when the program was already reaped, so nothing may signal it.
    fn run(
        &mut self,
        core: &mut Supervisor,
        event: ExecEvent,
        #[cfg_attr(not(feature = "fault-injection"), allow(unused_variables))] program_gone: bool,
    ) {
        let mut pending = Some(event);
        while let Some(event) = pending.take() {
            #[cfg(feature = "fault-injection")]
            let event_name = inject::event_name(&event);
            for action in core.handle_event(event) {
                if let Some(next) = self.execute(action) {
                    pending = Some(next);
                }
            }
            #[cfg(feature = "fault-injection")]
            inject::after_event(self.pid, event_name, program_gone);
        }
    }

    fn execute(&mut self, action: Action) -> Option<ExecEvent> {
        let pid = self.pid;
        #[cfg(feature = "fault-injection")]
        inject::before_action(pid, &action);
        let result = match action {
            Action::SetRegisters { tid, regs } => ptrace::set_registers(tid, &regs),
            Action::WriteMemory { tid, addr, bytes } => self.write_memory(tid, addr, &bytes),
            Action::ZeroWords { tid, addr, count } => ptrace::zero_words(tid, addr, count),
            Action::SetKeyRights { tid, key, rights } => xstate::set_key_rights(tid, &self.xsave_layout, key, rights),
            Action::SetVectorRegister { tid, register, bytes } => {
                xstate::set_vector_register(tid, &self.xsave_layout, usize::from(register), &bytes)
            }
            Action::Step { tid, signal } => ptrace::resume(tid, ptrace::Resume::Step, signal.as_ref()),
            Action::Continue { tid, signal } => ptrace::resume(tid, ptrace::Resume::Continue, signal.as_ref()),
            Action::ContinueToSyscall { tid, signal } => {
                ptrace::resume(tid, ptrace::Resume::ToSyscall, signal.as_ref())
            }
            Action::QueueSignal { tid, info } => ptrace::queue_signal(tid, &info),
            Action::Detach { tid } => ptrace::detach(tid),
            Action::Interrupt { tid } => ptrace::interrupt(tid),
            Action::ReceiveMessage => return Some(self.receive(self.options.message_timeout)),
            // Anything the ended program sent is already in the socket.
            Action::PollMessage => return Some(self.receive(Duration::from_millis(100))),
            Action::ReadMemory { tid, addr, len } => {
                return Some(ExecEvent::Memory { tid, bytes: self.read_memory(tid, addr, len) });
            }
            Action::ReadMemoryAsProgram { tid, addr, len } => {
                return Some(ExecEvent::Memory { tid, bytes: read_as_program(tid, addr, len) });
            }
            Action::WriteMemoryAsProgram { tid, addr, bytes } => {
                return Some(ExecEvent::MemoryWritten { tid, written: write_as_program(tid, addr, &bytes) });
            }
            Action::ReadDisposition { tid, signal } => {
                return Some(ExecEvent::Disposition { tid, disposition: wait::read_disposition(tid, signal) });
            }
            Action::ReadVectorRegisters { tid } => {
                let vectors = xstate::read_vector_registers(tid, &self.xsave_layout).unwrap_or_else(|error| {
                    // Zeros make the decoder report no element of a masked or gathered
                    // access, never an invented one; the error is logged so the cause shows.
                    warn!(tid, %error, "reading vector registers failed");
                    Default::default()
                });
                return Some(ExecEvent::VectorRegisters { tid, vectors });
            }
            Action::Reply(message) => {
                self.to_child.send(message).map_err(|error| format!("sending to the child failed: {error}"))
            }
            Action::Report(report) => {
                (self.options.report)(&report, &ProcessView { pid });
                Ok(())
            }
            Action::Kill => ptrace::kill(pid),
            Action::BlockSignal { tid, signal } => ptrace::block_signal(tid, signal),
            Action::Publish { call, records, complete } => {
                self.board.as_ref().map_or(Ok(()), |board| {
                    board.publish(call, &records, complete);
                    Ok(())
                })
            }
            Action::SetSyscallSelector { slot, block } => match &self.board {
                Some(board) => board.set_selector(slot, block),
                None => Err("no call board".to_string()),
            },
            Action::WatchSystemCalls { tid, slot } => match self.board.as_ref().and_then(|board| board.selector_address(slot)) {
                Some(selector) => {
                    if let Some(board) = &self.board {
                        board.use_slot(slot);
                    }
                    let (offset, len) = crate::child::syscall_gadget_range();
                    if let Err(error) = ptrace::set_syscall_dispatch(tid, selector, offset, len) {
                        // Before Linux 6.4: this thread's system calls go unchecked in calls.
                        debug!(tid, %error, "syscall user dispatch unavailable for a new thread");
                    }
                    Ok(())
                }
                // Calls stop at their start and end: nothing reads the selectors.
                None => Ok(()),
            },
            Action::Finish { exit_code } => {
                debug!(pid, exit_code, "traced program gone, supervisor exits");
                std::process::exit(exit_code);
            }
        };
        if let Err(error) = result {
            // A task can die between two actions; its exit arrives as a later event.
            warn!(pid, %error, "action failed");
        }
        None
    }

    /// Reads another thread's memory: through the cached file for the program's threads, by
    /// opening `/proc/TID/mem` for a forked process.
    fn read_memory(&self, tid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = vec![0u8; len];
        match (&self.program_memory, self.is_program_thread(tid)) {
            (Some(file), true) => file.read_exact_at(&mut bytes, addr).ok().map(|()| bytes),
            _ => crate::child::read_process_memory(tid, addr, len),
        }
    }

    fn write_memory(&self, tid: i32, addr: u64, bytes: &[u8]) -> Result<(), String> {
        use std::os::unix::fs::FileExt;
        match (&self.program_memory, self.is_program_thread(tid)) {
            (Some(file), true) => file
                .write_all_at(bytes, addr)
                .map_err(|error| format!("writing {} bytes at {addr:#x} failed: {error}", bytes.len())),
            _ => ptrace::write_memory(tid, addr, bytes),
        }
    }

    /// True if `tid` shares the program's address space (is one of its threads).
    fn is_program_thread(&self, tid: i32) -> bool {
        tid == self.pid || std::path::Path::new(&format!("/proc/{}/task/{tid}", self.pid)).exists()
    }

    fn receive(&self, timeout: Duration) -> ExecEvent {
        match self.from_child.try_recv_timeout(timeout) {
            Ok(message) => ExecEvent::Message(message),
            Err(TryRecvError::Empty) => ExecEvent::MessageLost { reason: format!("timed out after {timeout:?}") },
            Err(TryRecvError::IpcError(error)) => ExecEvent::MessageLost { reason: error.to_string() },
        }
    }
}

