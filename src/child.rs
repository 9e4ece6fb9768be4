//! The traced program's side of the protocol: forking the supervisor off, and announcing,
//! protecting and ending traced calls.

use std::cell::Cell;
use std::sync::Mutex;
use std::time::Duration;

use ipc_channel::ipc::{self, IpcReceiver, IpcSender};

use crate::board::{Board, Published};
use crate::core::{PageSet, PROTOCOL_COOKIE, PROTOCOL_SIGNAL, START_ACCEPTED, SYS_GETPPID};
use crate::error::{InitError, TraceError};
use crate::event::PageRange;
use crate::messages::{ChildMessage, Protection, StartReply, StartRequest, SupervisorMessage};
use crate::{Options, PageProtection, TraceOutcome, Traced};

std::arch::global_asm!(
    ".pushsection .text.ffitrace_syscall_gadget,\"ax\",@progbits",
    ".globl ffitrace_syscall_gadget",
    ".hidden ffitrace_syscall_gadget",
    ".type ffitrace_syscall_gadget,@function",
    "ffitrace_syscall_gadget:",
    "    syscall",
    "    int3",
    ".size ffitrace_syscall_gadget, . - ffitrace_syscall_gadget",
    ".popsection",
);

extern "C" {
    /// A `syscall` instruction the supervisor points the child at to run `mprotect` in it.
    /// Never called from Rust.
    fn ffitrace_syscall_gadget();
}

/// Size of the exempt code area: the `syscall` gadget, then one trampoline per `syscall`
/// site of the native code (see `core/stopless.rs`).
const EXEMPT_CODE_BYTES: usize = 64 << 10;

/// Start of the exempt code area, or 0 when calls do not use the call board. `init` maps it
/// before it forks, so it lies at the same address in both processes.
static EXEMPT_CODE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Maps the exempt code area with a `syscall` gadget (`syscall; int3`) at its start, and
/// returns its address. `None` where executable anonymous memory is not allowed.
fn map_exempt_code() -> Option<u64> {
    // SAFETY: a fresh private anonymous mapping, written before it becomes executable.
    unsafe {
        let base = libc::mmap(
            std::ptr::null_mut(),
            EXEMPT_CODE_BYTES,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if base == libc::MAP_FAILED {
            return None;
        }
        // int3 everywhere, so a jump into a free trampoline traps instead of running zeros.
        std::ptr::write_bytes(base.cast::<u8>(), 0xcc, EXEMPT_CODE_BYTES);
        std::ptr::copy_nonoverlapping([0x0f, 0x05].as_ptr(), base.cast::<u8>(), 2);
        if libc::mprotect(base, EXEMPT_CODE_BYTES, libc::PROT_READ | libc::PROT_EXEC) != 0 {
            libc::munmap(base, EXEMPT_CODE_BYTES);
            return None;
        }
        Some(base as u64)
    }
}

/// Returns the range from which syscall user dispatch lets system calls through: the exempt
/// code area, or the built-in gadget alone when there is none. The supervisor's own
/// `mprotect`s run from there while the selectors block.
pub(crate) fn syscall_gadget_range() -> (u64, u64) {
    match EXEMPT_CODE.load(std::sync::atomic::Ordering::Relaxed) {
        0 => {
            // The kernel compares the address after the `syscall` instruction: the `int3` after it.
            (ffitrace_syscall_gadget as *const () as usize as u64, 3)
        }
        start => (start, EXEMPT_CODE_BYTES as u64),
    }
}

/// The child's end of the protocol, set by a successful [`init`].
struct Channel {
    to_supervisor: IpcSender<ChildMessage>,
    from_supervisor: IpcReceiver<SupervisorMessage>,
    timeout: Duration,
    protection: Protection,
    emulate: bool,
    /// This process's id, kept so that ending a call needs no `getpid`.
    pid: i32,
    /// The call board, when calls start and end through it (see [`crate::board`]).
    board: Option<Board>,
    /// The number of the last call announced on the board.
    calls: std::sync::atomic::AtomicU64,
}

enum Status {
    Uninitialized,
    Off(String),
    On(Channel),
}

static STATUS: Mutex<Status> = Mutex::new(Status::Uninitialized);

/// The 1024 bytes the comparison protocol has the supervisor zero before each `mprotect`.
/// Atomics, because the supervisor writes them behind this process's back.
static COMPARISON_STACK: [std::sync::atomic::AtomicU64; 128] = [const { std::sync::atomic::AtomicU64::new(0) }; 128];

thread_local! {
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Forks the supervisor off and returns in the child, which goes on as the program.
///
/// The parent never returns from this function: it supervises the child and exits with the
/// child's exit status (or the one set with [`set_exit_code`]) when the child is gone. When the
/// kernel does not permit ptrace the parent still waits for the child and forwards its status,
/// the error explains why and how to fix it, and [`trace_call`] runs calls untraced.
///
/// # Safety
/// Call it once, early, while the process has exactly one thread: `fork` copies only the
/// calling thread, so locks held by other threads would stay locked in both processes.
pub unsafe fn init(options: Options) -> Result<(), InitError> {
    let mut status = STATUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !matches!(*status, Status::Uninitialized) {
        return Err(InitError::AlreadyInitialized);
    }
    *status = Status::Off("ffitrace::init failed".to_string());

    let ipc_error = |error: std::io::Error| InitError::Ipc(error.to_string());
    let (to_supervisor, supervisor_inbox) = ipc::channel::<ChildMessage>().map_err(ipc_error)?;
    let (to_child, child_inbox) = ipc::channel::<SupervisorMessage>().map_err(ipc_error)?;
    let parent_pid = std::process::id() as i32;
    let board = if options.stopless_calls { Board::create().ok() } else { None };
    let exempt_code = if board.is_some() { map_exempt_code() } else { None };
    EXEMPT_CODE.store(exempt_code.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    let board = board.filter(|_| exempt_code.is_some());

    // SAFETY: the caller guarantees the process is single-threaded.
    match unsafe { libc::fork() } {
        -1 => Err(InitError::Os { call: "fork", errno: std::io::Error::last_os_error() }),
        0 => {
            drop((supervisor_inbox, to_child));
            die_with_parent(parent_pid)?;
            let protection = choose_protection(options.page_protection);
            let board = board.filter(|board| {
                board.keep_from_forks();
                matches!(protection, Protection::Mprotect { zeroed_stack: None, .. } | Protection::ProtectionKey { .. })
                    && watch_own_system_calls(board)
            });
            let channel = Channel {
                to_supervisor,
                from_supervisor: child_inbox,
                timeout: options.message_timeout,
                protection,
                emulate: options.emulate_simple_accesses,
                // SAFETY: getpid has no preconditions.
                pid: unsafe { libc::getpid() },
                board,
                calls: std::sync::atomic::AtomicU64::new(0),
            };
            let attached = channel.receive();
            match attached {
                Ok(SupervisorMessage::Attached(Ok(()))) => {
                    *status = Status::On(channel);
                    Ok(())
                }
                Ok(SupervisorMessage::Attached(Err(reason))) => {
                    *status = Status::Off(reason.clone());
                    Err(InitError::PtraceDenied(reason))
                }
                Ok(other) => Err(InitError::Ipc(format!("expected the attach message, received {other:?}"))),
                Err(error) => Err(InitError::Ipc(error.to_string())),
            }
        }
        child_pid => {
            drop((to_supervisor, child_inbox));
            drop(status);
            crate::driver::supervise(child_pid, to_child, supervisor_inbox, options, board)
        }
    }
}

/// Picks how pages are protected during calls. A protection key is allocated with access
/// disabled, so this thread and every thread it creates later fault on pages that carry it.
fn choose_protection(choice: PageProtection) -> Protection {
    let (syscall_gadget, _) = syscall_gadget_range();
    let gadget = Protection::Mprotect { syscall_gadget, zeroed_stack: None };
    match choice {
        PageProtection::Mprotect => return gadget,
        PageProtection::ComparisonZeroedStack => {
            let stack = std::ptr::addr_of!(COMPARISON_STACK) as u64;
            return Protection::Mprotect { syscall_gadget, zeroed_stack: Some(stack) };
        }
        PageProtection::Auto => {}
    }
    /// `PKEY_DISABLE_ACCESS` from `<sys/mman.h>`.
    const PKEY_DISABLE_ACCESS: libc::c_long = 0x1;
    // SAFETY: pkey_alloc takes two integers; it fails cleanly where keys are unsupported.
    let key = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0 as libc::c_long, PKEY_DISABLE_ACCESS) };
    match u32::try_from(key) {
        Ok(key) if key > 0 => Protection::ProtectionKey { key },
        _ => gadget,
    }
}

/// Turns on syscall user dispatch for this thread, the program's main thread, with the
/// selector of slot 0. Returns false where the kernel lacks it (before Linux 5.11).
fn watch_own_system_calls(board: &Board) -> bool {
    /// `PR_SET_SYSCALL_USER_DISPATCH` and `PR_SYS_DISPATCH_ON` from `<linux/prctl.h>`.
    const PR_SET_SYSCALL_USER_DISPATCH: libc::c_int = 59;
    const PR_SYS_DISPATCH_ON: libc::c_ulong = 1;
    let Some(selector) = board.selector_address(0) else { return false };
    let (offset, len) = syscall_gadget_range();
    // SAFETY: the selector lies in the board, which stays mapped for the life of the process.
    let result = unsafe { libc::prctl(PR_SET_SYSCALL_USER_DISPATCH, PR_SYS_DISPATCH_ON, offset, len, selector) };
    if result != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "no syscall user dispatch: every call stops at its start and end");
    }
    result == 0
}

/// Makes the kernel kill this process when the supervisor dies, and exits if it already has.
fn die_with_parent(parent_pid: i32) -> Result<(), InitError> {
    // SAFETY: prctl with PR_SET_PDEATHSIG takes a signal number and no pointers.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) } != 0 {
        return Err(InitError::Os { call: "prctl(PR_SET_PDEATHSIG)", errno: std::io::Error::last_os_error() });
    }
    // The parent may have died between fork and prctl, in which case no signal will come.
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent_pid {
        std::process::exit(1);
    }
    Ok(())
}

/// Returns `Ok(())` when calls are traced, or the reason they run untraced.
pub fn tracing_status() -> Result<(), String> {
    // A traced call holds the status lock until it returns, and it only runs traced when
    // tracing is on.
    if IN_CALL.with(Cell::get) {
        return Ok(());
    }
    match &*STATUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) {
        Status::On(_) => Ok(()),
        Status::Off(reason) => Err(reason.clone()),
        Status::Uninitialized => Err("ffitrace::init was not called".to_string()),
    }
}

/// Returns the size of a page in bytes.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// Makes the supervisor exit with `code` when the program exits with status 0.
///
/// Inside a traced call (from the closure of [`trace_call`]) it returns
/// [`TraceError::Nested`]: set the code before or after the call.
pub fn set_exit_code(code: i32) -> Result<(), TraceError> {
    if IN_CALL.with(Cell::get) {
        return Err(TraceError::Nested);
    }
    let guard = STATUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    match &*guard {
        Status::On(channel) => channel.request(ChildMessage::SetExitCode(code)).map(|_| ()),
        Status::Off(reason) => Err(TraceError::Rejected(reason.clone())),
        Status::Uninitialized => Err(TraceError::Rejected("ffitrace::init was not called".to_string())),
    }
}

/// Runs `call` with `pages` traced and returns its value with the accesses it made to them.
///
/// Every range must be page-aligned and mapped, and no two may overlap. Otherwise nothing is
/// protected, `call` does not run and the error names the wrong range. The ranges should be
/// readable and writable, because the pages are made inaccessible for the duration of `call`
/// and `PROT_READ | PROT_WRITE` afterwards, whatever their protection was before.
/// When tracing is off, and in a process forked from the program, `call` runs untraced and
/// the outcome gives the reason.
///
/// Accesses by every thread of the program during `call` are traced. Traced calls run one
/// at a time: a `trace_call` from another thread waits until the running one returns, so a
/// closure must not wait for another thread's traced call. Between protecting the pages and
/// the start of tracing, and between the end of tracing and reopening them, another thread
/// that touches the pages faults: keep other threads off the pages around a call.
///
/// If `call` panics, the call is ended, its pages are reopened and the panic resumes.
// NOTE: the protection is not checked, because that would mean reading /proc/self/maps, a
// text of every mapping, on every call. A read-only or PROT_NONE range comes back read-write.
pub fn trace_call<R>(pages: &[PageRange], call: impl FnOnce() -> R) -> Result<Traced<R>, TraceError> {
    let page_size = page_size() as u64;
    let set = PageSet::new(pages, page_size)?;
    for run in set.runs() {
        check_mapped(run)?;
    }
    if IN_CALL.with(|flag| flag.replace(true)) {
        return Err(TraceError::Nested);
    }
    /// Clears the in-call flag however `run_traced` ends, a panic included.
    struct InCall;
    impl Drop for InCall {
        fn drop(&mut self) {
            IN_CALL.with(|flag| flag.set(false));
        }
    }
    let _in_call = InCall;
    run_traced(&set, page_size, call)
}

fn run_traced<R>(set: &PageSet, page_size: u64, call: impl FnOnce() -> R) -> Result<Traced<R>, TraceError> {
    let guard = STATUS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let channel = match &*guard {
        Status::On(channel) => channel,
        Status::Off(reason) => return Ok(Traced { value: call(), outcome: TraceOutcome::Untraced(reason.clone()) }),
        Status::Uninitialized => {
            let reason = "ffitrace::init was not called".to_string();
            return Ok(Traced { value: call(), outcome: TraceOutcome::Untraced(reason) });
        }
    };
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != channel.pid {
        // A process the program forked: the supervisor does not trace it, and the call board
        // is not mapped in it.
        let reason = "this process was forked from the traced program, which alone is traced".to_string();
        return Ok(Traced { value: call(), outcome: TraceOutcome::Untraced(reason) });
    }

    // The pages are protected before the call is announced, so the supervisor never sees this
    // process change their protection while a call is traced.
    let protection = channel.protection;
    let fault_signals = FaultSignals::capture();
    close(set, protection)?;
    let request = StartRequest { pages: set.runs().to_vec(), page_size, protection, emulate: channel.emulate };
    let tid = current_thread_id();
    if let Some(board) = channel.board.as_ref().filter(|_| fault_signals.allow_dispatch()) {
        let number = channel.calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if board.begin(number, tid, &request, syscall_gadget_range()) {
            let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
            board.end();
            let outcome = match board.published(number) {
                Published::Complete(mut trace) => {
                    // Rebuilding grows the log by doubling; keep 16 bytes per access.
                    trace.accesses.shrink_to_fit();
                    TraceOutcome::Traced(trace)
                }
                Published::AskSupervisor => channel.ask_for_trace(),
            };
            let traced = finish_call(set, protection, &fault_signals, value, outcome);
            // Last, after the system calls of reopening, at which a pending signal may end the
            // program: until this the supervisor reports the trace if the program dies.
            board.received(number);
            return Ok(traced);
        }
    }
    // From the protocol stop until the end marker the supervisor stops this thread at every
    // system call, so nothing in between makes one: an accepted start's reply is read after
    // the call.
    let (started, reply_pending) = match channel.request(ChildMessage::Start(request)) {
        Ok(raised) if raised == START_ACCEPTED as i64 => (Ok(SupervisorMessage::StartReply(StartReply::Started)), true),
        Ok(_) => (channel.receive(), false),
        Err(error) => (Err(error), false),
    };
    let rejection = match started {
        Ok(SupervisorMessage::StartReply(StartReply::Started)) => None,
        Ok(SupervisorMessage::StartReply(StartReply::Rejected(reason))) => Some(TraceError::Rejected(reason)),
        Ok(other) => Some(TraceError::Ipc(format!("expected a start reply, received {other:?}"))),
        Err(error) => Some(error),
    };
    if let Some(error) = rejection {
        protect(set, protection, Protect::Open)?;
        return Err(error);
    }

    let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));

    let outcome = channel.trace_outcome(channel.end_call(tid, reply_pending));
    Ok(finish_call(set, protection, &fault_signals, value, outcome))
}

/// Reopens the pages, undoes the kernel's changes to the fault signals and returns the
/// call's value with its outcome, or resumes the closure's panic.
fn finish_call<R>(
    set: &PageSet,
    protection: Protection,
    fault_signals: &FaultSignals,
    value: std::thread::Result<R>,
    outcome: TraceOutcome,
) -> Traced<R> {
    // The call has run: its value and trace are returned even when a range cannot be
    // reopened, for example because the native code unmapped it.
    reopen(set, protection);
    fault_signals.undo_kernel_changes();
    match value {
        Ok(value) => Traced { value, outcome },
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Makes every traced page accessible again after a call, page by page where a whole run
/// fails. Pages the native code unmapped or remapped meanwhile are skipped.
fn reopen(set: &PageSet, protection: Protection) {
    reopen_runs(set.runs(), protection);
}

fn reopen_runs(runs: &[PageRange], protection: Protection) {
    for run in runs {
        if protect_run(run, protection, Protect::Open).is_ok() {
            continue;
        }
        let page_size = page_size() as u64;
        let mut start = run.start;
        while start < run.end() {
            let page = PageRange { start, len: page_size };
            if let Err(error) = protect_run(&page, protection, Protect::Open) {
                tracing::debug!(addr = start, %error, "a traced page could not be reopened");
            }
            start += page_size;
        }
    }
}

/// The calling thread's disposition and mask of the signals tracing raises (SIGSEGV for each
/// fault, SIGTRAP for each single-step, SIGSYS for each system call of a board call).
///
/// When the kernel raises a fault or trap signal that the thread blocks or ignores, it resets
/// the handler to SIG_DFL and unblocks the signal, so a traced call would leave those changes
/// behind. They are undone when the call ends.
// NOTE: during the call itself the changes remain visible to the native code.
struct FaultSignals {
    mask: libc::sigset_t,
    actions: [(libc::c_int, libc::sigaction); 3],
}

impl FaultSignals {
    fn capture() -> FaultSignals {
        // SAFETY: sigset_t and sigaction are plain C structures; the calls below only fill
        // them, with null pointers where nothing is changed.
        unsafe {
            let mut mask: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut mask);
            let mut actions =
                [(libc::SIGSEGV, std::mem::zeroed()), (libc::SIGTRAP, std::mem::zeroed()), (libc::SIGSYS, std::mem::zeroed())];
            for (signal, action) in &mut actions {
                libc::sigaction(*signal, std::ptr::null(), action);
            }
            FaultSignals { mask, actions }
        }
    }

    /// Returns true when SIGSYS has its default disposition and is not blocked. Only then may
    /// a call raise SIGSYS for its system calls: the kernel would reset a handler that is
    /// blocked, as it is while it runs, and an ignored SIGSYS, for the rest of the program.
    fn allow_dispatch(&self) -> bool {
        // SAFETY: sigismember reads the mask captured in `capture`.
        let blocked = unsafe { libc::sigismember(&self.mask, libc::SIGSYS) } == 1;
        let default = self.actions.iter().any(|(signal, action)| *signal == libc::SIGSYS && action.sa_sigaction == libc::SIG_DFL);
        !blocked && default
    }

    /// Restores a disposition the kernel reset to SIG_DFL, and the block it lifted, for each
    /// signal that was blocked or ignored when the call started.
    fn undo_kernel_changes(&self) {
        // SAFETY: as in `capture`; the restored values came from sigaction and sigprocmask.
        unsafe {
            let mut now: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut now);
            for (signal, before) in &self.actions {
                let was_blocked = libc::sigismember(&self.mask, *signal) == 1;
                let was_ignored = before.sa_sigaction == libc::SIG_IGN;
                if !was_blocked && !was_ignored {
                    continue;
                }
                let mut current: libc::sigaction = std::mem::zeroed();
                libc::sigaction(*signal, std::ptr::null(), &mut current);
                if current.sa_sigaction == libc::SIG_DFL && before.sa_sigaction != libc::SIG_DFL {
                    libc::sigaction(*signal, before, std::ptr::null_mut());
                }
                if was_blocked && libc::sigismember(&now, *signal) == 0 {
                    let mut only: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut only);
                    libc::sigaddset(&mut only, *signal);
                    libc::pthread_sigmask(libc::SIG_BLOCK, &only, std::ptr::null_mut());
                }
            }
        }
    }
}

impl Channel {
    /// Sends `message` and stops this thread with the protocol signal so the supervisor reads
    /// it while the thread is stopped. Returns the value of the system call that raised the
    /// signal, which the supervisor may have set.
    fn request(&self, message: ChildMessage) -> Result<i64, TraceError> {
        self.to_supervisor.send(message).map_err(|error| TraceError::Ipc(error.to_string()))?;
        raise_protocol_signal()
    }

    /// Ends the traced call of thread `tid` and returns the supervisor's reply, the trace when
    /// all goes well. `start_reply_pending` is true while the start reply is still unread.
    fn end_call(&self, tid: i32, start_reply_pending: bool) -> Result<SupervisorMessage, TraceError> {
        if !self.end_marker_seen(tid) {
            self.request(ChildMessage::End)?;
        }
        if start_reply_pending {
            match self.receive()? {
                SupervisorMessage::StartReply(StartReply::Started) => {}
                other => return Err(TraceError::Ipc(format!("expected the start reply, received {other:?}"))),
            }
        }
        self.receive()
    }

    /// Makes the end marker system call, `getppid(PROTOCOL_COOKIE, tid)`, and returns true if
    /// the supervisor saw it: it then turns the call into `getpid`.
    fn end_marker_seen(&self, tid: i32) -> bool {
        // SAFETY: getppid ignores its arguments and has no other effect.
        let result = unsafe { libc::syscall(SYS_GETPPID as libc::c_long, PROTOCOL_COOKIE as libc::c_long, tid as libc::c_long) };
        result == i64::from(self.pid)
    }

    /// Turns the supervisor's reply to the end of a call into the call's outcome, and
    /// acknowledges a trace.
    fn trace_outcome(&self, reply: Result<SupervisorMessage, TraceError>) -> TraceOutcome {
        match reply {
            Ok(SupervisorMessage::Trace(mut trace)) => {
                // Without this, the supervisor reports the trace itself if the program ends first.
                let _ = self.to_supervisor.send(ChildMessage::TraceReceived);
                // Deserialising grows the vector by doubling; keep 16 bytes per access.
                trace.accesses.shrink_to_fit();
                TraceOutcome::Traced(trace)
            }
            Ok(other) => TraceOutcome::Lost(TraceError::Ipc(format!("expected the trace, received {other:?}"))),
            Err(error) => TraceOutcome::Lost(error),
        }
    }

    /// Asks the supervisor for the trace of the board call that just ended, when the board
    /// could not carry all of it.
    fn ask_for_trace(&self) -> TraceOutcome {
        let reply = self.request(ChildMessage::End).and_then(|_| self.receive());
        self.trace_outcome(reply)
    }

    fn receive(&self) -> Result<SupervisorMessage, TraceError> {
        self.from_supervisor.try_recv_timeout(self.timeout).map_err(|error| match error {
            ipc::TryRecvError::Empty => {
                TraceError::Ipc(format!("no response from the supervisor within {:?}", self.timeout))
            }
            ipc::TryRecvError::IpcError(error) => TraceError::Ipc(error.to_string()),
        })
    }
}

thread_local! {
    static THREAD_ID: Cell<i32> = const { Cell::new(0) };
}

/// Returns the calling thread's id, asking the kernel once per thread.
fn current_thread_id() -> i32 {
    THREAD_ID.with(|id| {
        if id.get() == 0 {
            // SAFETY: gettid has no preconditions.
            id.set(unsafe { libc::gettid() });
        }
        id.get()
    })
}

/// Queues the protocol signal, marked with the protocol cookie, to the calling thread, and
/// returns the value of the system call that queued it. A blocked signal is unblocked for the
/// duration so the stop happens before this function returns. An unblocked one needs no
/// system call after the stop, which matters because the supervisor stops a thread in a call
/// at every system call.
fn raise_protocol_signal() -> Result<i64, TraceError> {
    // SAFETY: every pointer passed below refers to a live, properly initialised local.
    unsafe {
        let mut only_protocol: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only_protocol);
        libc::sigaddset(&mut only_protocol, PROTOCOL_SIGNAL);
        libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut previous);
        let blocked = libc::sigismember(&previous, PROTOCOL_SIGNAL) == 1;
        if blocked {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &only_protocol, std::ptr::null_mut());
        }

        let mut info: libc::siginfo_t = std::mem::zeroed();
        let raw = &mut info as *mut libc::siginfo_t as *mut u8;
        // The siginfo_t layout on Linux: si_signo, si_errno, si_code as three ints, then for
        // queued signals si_pid (int) at 16, si_uid (uint) at 20 and si_value at 24.
        raw.cast::<i32>().write(PROTOCOL_SIGNAL);
        raw.add(8).cast::<i32>().write(libc::SI_QUEUE);
        raw.add(16).cast::<i32>().write(libc::getpid());
        raw.add(20).cast::<u32>().write(libc::getuid());
        raw.add(24).cast::<u64>().write(PROTOCOL_COOKIE);
        let result = libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            libc::getpid(),
            libc::gettid(),
            PROTOCOL_SIGNAL,
            &info as *const libc::siginfo_t,
        );
        let errno = std::io::Error::last_os_error();
        if blocked {
            libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        }
        if result == -1 {
            return Err(TraceError::Os { call: "rt_tgsigqueueinfo", errno });
        }
        Ok(result)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Protect {
    /// Make every access fault.
    Close,
    /// Make the pages readable and writable again.
    Open,
}

fn protect(set: &PageSet, protection: Protection, how: Protect) -> Result<(), TraceError> {
    set.runs().iter().try_for_each(|run| protect_run(run, protection, how))
}

/// Makes every run of `set` inaccessible before a call. When a run fails, as when the process
/// has too many mappings to split one more, the runs changed so far are opened again.
fn close(set: &PageSet, protection: Protection) -> Result<(), TraceError> {
    for (index, run) in set.runs().iter().enumerate() {
        if let Err(error) = protect_run(run, protection, Protect::Close) {
            reopen_runs(&set.runs()[..=index], protection);
            return Err(error);
        }
    }
    Ok(())
}

fn protect_run(run: &PageRange, protection: Protection, how: Protect) -> Result<(), TraceError> {
    let read_write = libc::PROT_READ | libc::PROT_WRITE;
    let (start, len) = (run.start as *mut libc::c_void, run.len as usize);
    // SAFETY: the runs were checked to be mapped; changing their protection is the point.
    let result = unsafe {
        match (protection, how) {
            (Protection::Mprotect { .. }, Protect::Close) => libc::mprotect(start, len, libc::PROT_NONE),
            (Protection::Mprotect { .. }, Protect::Open) => libc::mprotect(start, len, read_write),
            (Protection::ProtectionKey { key }, Protect::Close) => {
                libc::syscall(libc::SYS_pkey_mprotect, start, len, read_write, key as libc::c_long) as libc::c_int
            }
            (Protection::ProtectionKey { .. }, Protect::Open) => {
                libc::syscall(libc::SYS_pkey_mprotect, start, len, read_write, 0 as libc::c_long) as libc::c_int
            }
        }
    };
    if result != 0 {
        return Err(TraceError::Os { call: "mprotect", errno: std::io::Error::last_os_error() });
    }
    Ok(())
}

/// Rejects a range with an unmapped page before anything is protected. `msync` without flags
/// does nothing but fail with ENOMEM on a hole. It looks at the mappings only, so it costs
/// the same for 1 page or 4 096, about 0.24 µs here, against 1.1 to 8.4 µs for `mincore`,
/// which walks the page tables.
fn check_mapped(run: &PageRange) -> Result<(), TraceError> {
    // SAFETY: msync with no flags neither reads nor writes the range; the start is
    // page-aligned, as msync requires.
    let result = unsafe { libc::msync(run.start as *mut libc::c_void, run.len as usize, 0) };
    if result != 0 {
        return Err(TraceError::Unmapped { start: run.start, len: run.len });
    }
    Ok(())
}

/// Reads another process's memory through `/proc/PID/mem`, which ignores page protection.
pub(crate) fn read_process_memory(pid: i32, addr: u64, len: usize) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(format!("/proc/{pid}/mem")).ok()?;
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, addr).ok()?;
    Some(bytes)
}
