//! The supervisor's protocol as a side-effect-free state machine.
//!
//! [`Supervisor::handle_event`] takes one [`ExecEvent`] and returns the [`Action`]s the driver
//! must carry out, in order, before it waits for the next event. The core makes no system
//! call, reads no clock and holds no global: registers, signal information, instruction bytes
//! and the page size all arrive as event data. No input makes it panic. An event that makes no
//! sense in the current state is logged and gets the action that keeps the traced
//! program alive and the pages protected.
//!
//! # The protocol, as the child and the supervisor run it
//!
//! 1. The child protects the pages, sends [`ChildMessage::Start`], then stops itself with the
//!    protocol signal ([`PROTOCOL_SIGNAL`] queued with [`PROTOCOL_COOKIE`]).
//! 2. At that stop the core requests the message, sets the child's rax to [`START_ACCEPTED`]
//!    (the return value of the system call that raised the signal), queues [`StartReply`]
//!    and resumes the child. Seeing the value, the child calls the native code at once and
//!    reads the reply after the call, because during a call every system call it makes
//!    costs two stops.
//! 3. Each access to a traced page faults in whichever thread makes it. The core decodes the
//!    instruction, opens the pages for that one instruction (see [`access`] for the two ways),
//!    steps it, records its accesses, closes the pages and resumes the thread.
//! 4. After the call the child's first system call is the end marker: `getppid` with
//!    [`PROTOCOL_COOKIE`] and its thread id as arguments. At its entry stop the core ends the
//!    call, turns the system call into `getpid` so the child can tell it was seen, resumes
//!    the child without system-call stops and sends the [`CallTrace`]. A child that gets its
//!    parent's id back instead sends [`ChildMessage::End`] and stops as in step 1. Then it
//!    makes the pages accessible again.
//!
//! Where the kernel has syscall user dispatch, steps 1, 2 and 4 take no stop: the program
//! announces the call on the call board and the core learns of it at the call's first stop
//! (see [`stopless`]).
//!
//! Every thread of the program is traced. Processes the program forks are traced only until
//! their copy of the pages is made accessible, then detached (see [`tasks`]).
#![forbid(unsafe_code)]

mod access;
mod action;
mod dispatch;
mod emulation;
mod event;
mod pages;
mod report;
mod stopless;
mod syscalls;
mod tasks;

use std::collections::BTreeMap;

pub use action::{Action, KeyRights, Recorded};
pub use event::{BoardCall, Disposition, ExecEvent, SigInfo, SignalStop, SyscallPhase, TaskKind};
pub use pages::{PageSet, PageSetError};
pub use report::{Crash, ExitStatus, Report};

use access::AccessStep;
use tracing::{debug, trace, warn};

use crate::decode::PlannedAccess;
use crate::event::CallTrace;
use crate::messages::{ChildMessage, Protection, StartReply, StartRequest, SupervisorMessage};
use crate::regs::VectorRegisters;

/// The signal the child raises to stop itself at a protocol step (SIGUSR1 on Linux).
pub const PROTOCOL_SIGNAL: i32 = 10;
/// The `si_value` that marks a queued [`PROTOCOL_SIGNAL`] as the protocol's, so a SIGUSR1
/// that the traced program raises for its own reasons is delivered to it untouched.
pub const PROTOCOL_COOKIE: u64 = 0x6666_6974_7261_6365;
/// The value the core puts in the child's rax at the protocol stop of an accepted start
/// request. Any other value means the child must read the reply before the call.
pub const START_ACCEPTED: u64 = 0x6666_6974_7374_6172;
/// `si_code` of a signal queued with `sigqueue`/`rt_sigqueueinfo`.
const SI_QUEUE: i32 = -1;
/// The x86-64 number of `getppid`, the end marker's system call.
pub const SYS_GETPPID: u64 = 110;
/// The x86-64 number of `getpid`, which the core turns a seen end marker into.
const SYS_GETPID: u64 = 39;

pub(crate) const SIGILL: i32 = 4;
pub(crate) const SIGTRAP: i32 = 5;
pub(crate) const SIGABRT: i32 = 6;
pub(crate) const SIGBUS: i32 = 7;
pub(crate) const SIGFPE: i32 = 8;
pub(crate) const SIGSEGV: i32 = 11;
/// `si_code` of the trap that ends a single-step.
pub(crate) const TRAP_TRACE: i32 = 2;
/// `si_code` of a breakpoint trap.
pub(crate) const TRAP_BRKPT: i32 = 1;

/// The supervisor's protocol state machine. Feed it every event with
/// [`Supervisor::handle_event`] and execute the returned actions in order.
#[derive(Debug)]
pub struct Supervisor {
    program: i32,
    exit_code: Option<i32>,
    lifecycle: Lifecycle,
    call: Option<Call>,
    /// The thread stopped with the protocol signal whose message is being received, and its
    /// registers at that stop.
    awaiting_message: Option<(i32, crate::regs::Registers)>,
    threads: BTreeMap<i32, Thread>,
    tasks: tasks::NewTasks,
    /// The last call's trace and pages, sent to the child but not yet acknowledged. If the
    /// program ends before it acknowledges them, they are reported instead.
    undelivered: Option<(CallTrace, Vec<crate::event::PageRange>)>,
    /// The last board call's trace and pages after the board showed it ended, for the
    /// program to ask for when the board could not carry the whole trace.
    ended_quietly: Option<(u64, CallTrace, Vec<crate::event::PageRange>)>,
    /// The number of the last board call whose trace the program returned to its caller.
    board_received: u64,
    /// Each thread's slot on the call board, whose selector its syscall user dispatch reads.
    slots: BTreeMap<i32, u16>,
    /// The program's code that syscall user dispatch lets through, once a board call showed it.
    exempt: Option<crate::event::PageRange>,
    /// The system-call trampolines written into that code.
    trampolines: dispatch::Trampolines,
    /// Slots whose selector the core blocked after a step while the program may have been
    /// opening every selector at the end of the call.
    maybe_stale: std::collections::BTreeSet<u16>,
    /// The number of the last call the board showed.
    last_board_call: u64,
    /// Threads that blocked SIGSYS during the board call, followed through their
    /// `rt_sigprocmask`s: each dispatched SIGSYS unblocks it, and the core blocks it again.
    sigsys_blocked: std::collections::BTreeSet<i32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Running,
    /// A fatal fault was reported and the program is about to die of it.
    Dying,
    /// The program ended with this status; the core checks whether it received its last
    /// trace before finishing.
    Ending(ExitStatus),
    /// The program is gone.
    Finished,
}

/// The core's state for one thread.
#[derive(Debug)]
pub(crate) enum Thread {
    Running,
    /// A fault on a traced page waits for the vector registers that carrying it out or
    /// decoding it needs.
    FetchingVectors(SignalStop, VectorsFor),
    /// One faulting instruction is being stepped with its pages open.
    Stepping(AccessStep),
    /// Its faulting instruction is carried out by the supervisor, which waits for the memory
    /// the instruction reads.
    Emulating(emulation::Emulating),
    /// Stopped with a fault signal whose disposition was asked for.
    FetchingDisposition(SignalStop),
    /// Faulted on a traced page and waits for every other thread to stop before its pages
    /// are opened with `mprotect`.
    Waiting(SignalStop),
    /// Kept stopped while another thread has pages open with `mprotect`.
    Held(Held),
    /// Steps a system call that its selector blocked during a board call, with the selector
    /// of its slot open.
    InSystemCall(dispatch::SystemCallStep),
    /// Stopped at a blocked `rt_sigprocmask`, waiting for the signal set it passes.
    ReadingSignalMask(SignalStop),
}

/// The use of the vector registers a thread waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VectorsFor {
    /// The supervisor carries out the vector store that faulted.
    Emulation,
    /// The decoder computes the accesses of the instruction to step (gathers, masked moves).
    Step,
}

/// A thread the core keeps stopped, with what it will do once released.
#[derive(Debug, Default)]
pub(crate) struct Held {
    /// The fault on a traced page it stopped with, to be handled once released.
    fault: Option<SignalStop>,
    /// Signals it stopped for while held, to be delivered once released.
    signals: Vec<SigInfo>,
    /// It has reported a stop since it was interrupted (or was stopped when held).
    stopped: bool,
}

/// One traced call in progress.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) pages: PageSet,
    pub(crate) protection: Protection,
    pub(crate) trace: CallTrace,
    /// Simple instructions may be carried out by the supervisor: the child asked for it and
    /// no system call has changed the traced pages' mapping since the call started.
    pub(crate) emulation: bool,
    /// The native code set a SIGSYS disposition during this board call, so the core opened
    /// every selector: system calls from then on run unchecked, and any SIGSYS is the
    /// program's.
    pub(crate) dispatch_off: bool,
    /// The call's number on the call board, or `None` for a call started with the protocol
    /// signal.
    pub(crate) board: Option<u64>,
    /// The records made since the last [`Action::Publish`] (board calls only).
    pub(crate) journal: Vec<Recorded>,
    /// Whether the trace was complete at the last [`Action::Publish`].
    pub(crate) published_complete: bool,
}

impl Call {
    /// Appends accesses to the trace, one at a time.
    pub(crate) fn record(&mut self, accesses: impl IntoIterator<Item = crate::event::Access>) {
        for access in accesses {
            self.trace.accesses.push(access);
            if self.board.is_some() {
                self.journal.push(Recorded::Access(access));
            }
        }
    }

    /// Appends a run of accesses to the trace.
    pub(crate) fn record_run(&mut self, run: crate::event::AccessRun) {
        self.trace.accesses.push_run(run);
        if self.board.is_some() {
            self.journal.push(Recorded::Run(run));
        }
    }
}

impl Supervisor {
    /// Creates the core for a program whose main thread has this id; it starts outside any
    /// call.
    pub fn new(program: i32) -> Supervisor {
        let mut threads = BTreeMap::new();
        threads.insert(program, Thread::Running);
        // The program turns dispatch on for its main thread itself, with slot 0.
        let slots = BTreeMap::from([(program, 0)]);
        Supervisor {
            program,
            exit_code: None,
            lifecycle: Lifecycle::Running,
            call: None,
            awaiting_message: None,
            threads,
            tasks: tasks::NewTasks::default(),
            undelivered: None,
            ended_quietly: None,
            board_received: 0,
            slots,
            exempt: None,
            trampolines: dispatch::Trampolines::default(),
            maybe_stale: std::collections::BTreeSet::new(),
            last_board_call: 0,
            sigsys_blocked: std::collections::BTreeSet::new(),
        }
    }

    /// Returns true while a traced call is running.
    pub fn in_call(&self) -> bool {
        self.call.is_some()
    }

    /// Returns true once the program is gone and no further event is expected.
    pub fn is_finished(&self) -> bool {
        self.lifecycle == Lifecycle::Finished
    }

    /// Consumes one event and returns the actions to carry out, in order.
    #[must_use]
    pub fn handle_event(&mut self, event: ExecEvent) -> Vec<Action> {
        trace!(?event, "event");
        if self.is_finished() {
            // The driver stops at `Finish`, so an event after it has no process to act on.
            warn!(?event, "event after the traced program was gone");
            return Vec::new();
        }
        let actions = match event {
            ExecEvent::Message(message) => self.on_message(message),
            ExecEvent::MessageLost { reason } => self.on_message_lost(reason),
            ExecEvent::Signal(stop) => self.on_signal(stop),
            ExecEvent::VectorRegisters { tid, vectors } => self.on_vector_registers(tid, vectors),
            ExecEvent::NewTask { parent, tid, kind } => self.on_new_task(parent, tid, kind),
            ExecEvent::OtherStop { tid, regs } => self.on_other_stop(tid, regs),
            ExecEvent::Syscall { tid, regs, phase, compat } => self.on_syscall(tid, &regs, phase, compat),
            ExecEvent::Disposition { tid, disposition } => self.on_disposition(tid, disposition),
            ExecEvent::Memory { tid, bytes } => self.on_memory(tid, bytes),
            ExecEvent::MemoryWritten { tid, written } => self.on_memory_written(tid, written),
            ExecEvent::TaskExited { tid } => self.on_task_exited(tid),
            ExecEvent::Exited { status } => self.on_exit(ExitStatus::Exited(status)),
            ExecEvent::Killed { signal, core_dumped } => self.on_exit(ExitStatus::Killed { signal, core_dumped }),
            ExecEvent::CallBoard(board) => self.on_board(board),
        };
        let actions = self.stop_at_syscalls_during_call(actions);
        let actions = self.publish(actions);
        for action in &actions {
            trace!(?action, "action");
        }
        actions
    }

    /// Makes every resume during a call also stop at system calls, so calls that touch the
    /// traced pages are seen. Outside calls threads run without those stops.
    fn stop_at_syscalls_during_call(&self, actions: Vec<Action>) -> Vec<Action> {
        if !self.call.as_ref().is_some_and(|call| call.board.is_none()) {
            return actions;
        }
        let convert = |action| match action {
            Action::Continue { tid, signal } => Action::ContinueToSyscall { tid, signal },
            other => other,
        };
        actions.into_iter().map(convert).collect()
    }

    fn on_syscall(&mut self, tid: i32, regs: &crate::regs::Registers, phase: SyscallPhase, compat: bool) -> Vec<Action> {
        let running = matches!(self.threads.get(&tid), Some(Thread::Running));
        if phase == SyscallPhase::Entry && running && !compat && is_end_marker(tid, regs) {
            if let Some((trace, pages)) = self.finish_call() {
                self.undelivered = Some((trace.clone(), pages));
                let seen = crate::regs::Registers { orig_rax: SYS_GETPID, ..*regs };
                // Resume first: the child must run to read a reply larger than the socket
                // buffer.
                return vec![
                    Action::SetRegisters { tid, regs: seen },
                    Action::Continue { tid, signal: None },
                    Action::Reply(SupervisorMessage::Trace(trace)),
                ];
            }
        }
        // NOTE: 32-bit system calls (int 0x80) have other numbers, which are not checked.
        if phase == SyscallPhase::Entry && !compat {
            self.check_syscall_entry(tid, regs);
        }
        match self.threads.get(&tid) {
            // The interrupt a held thread owes may come as this stop: it stays stopped. Other
            // states see this stop only from a confused driver, since only `ContinueToSyscall`
            // leads to it; it is handled as any stop that is not a signal delivery, so a step
            // in flight is repeated.
            Some(Thread::Held(_) | Thread::Stepping(_) | Thread::Waiting(_) | Thread::FetchingDisposition(_)) => {
                self.on_other_stop(tid, Some(*regs))
            }
            _ => vec![Action::Continue { tid, signal: None }],
        }
    }

    /// Notes a system call at its entry (`orig_rax` the number) that names traced pages.
    fn check_syscall_entry(&mut self, tid: i32, regs: &crate::regs::Registers) {
        let Some(call) = self.call.as_mut() else { return };
        if syscalls::changes_mapping(call, regs) {
            call.emulation = false;
        }
        if let Some(note) = syscalls::check_entry(call, regs) {
            debug!(tid, name = %note.name, effect = %note.effect, "system call on traced pages");
            call.trace.system_calls.push(note);
        }
    }

    fn on_message(&mut self, message: ChildMessage) -> Vec<Action> {
        if let ChildMessage::TraceReceived = message {
            // An acknowledgement queued before the message the core asked for: read on.
            self.undelivered = None;
            return match self.lifecycle {
                Lifecycle::Ending(status) => self.finish(status),
                _ => vec![Action::ReceiveMessage],
            };
        }
        if let Lifecycle::Ending(status) = self.lifecycle {
            // Read on: the acknowledgement may follow, and the closed channel ends the loop.
            debug!(?message, ?status, "message from a program that has ended");
            return vec![Action::PollMessage];
        }
        let Some((tid, regs)) = self.awaiting_message.take() else {
            warn!(?message, "message received while none was requested");
            return Vec::new();
        };
        let resume = Action::Continue { tid, signal: None };
        let accepted = Action::SetRegisters { tid, regs: crate::regs::Registers { rax: START_ACCEPTED, ..regs } };
        let reply = match message {
            ChildMessage::Start(_) if self.call.is_some() => {
                SupervisorMessage::StartReply(StartReply::Rejected("a traced call is already running".to_string()))
            }
            ChildMessage::Start(request) => match start_call(request) {
                Ok(call) => {
                    debug!(tid, pages = call.pages.runs().len(), "traced call starts");
                    self.call = Some(call);
                    let reply = SupervisorMessage::StartReply(StartReply::Started);
                    return vec![accepted, resume, Action::Reply(reply)];
                }
                Err(reason) => SupervisorMessage::StartReply(StartReply::Rejected(reason)),
            },
            ChildMessage::End => match self.finish_call().or_else(|| self.ended_quietly.take().map(|(_, trace, pages)| (trace, pages))) {
                Some((trace, pages)) => {
                    self.undelivered = Some((trace.clone(), pages));
                    SupervisorMessage::Trace(trace)
                }
                None => SupervisorMessage::Rejected("no traced call is running".to_string()),
            },
            ChildMessage::TraceReceived => return Vec::new(),
            ChildMessage::SetExitCode(code) => {
                self.exit_code = Some(code);
                return vec![resume];
            }
        };
        // Resume first: the child must run to read a reply larger than the socket buffer.
        vec![resume, Action::Reply(reply)]
    }

    /// Ends the call and returns its trace. Threads still stepping finish their step without
    /// recording it (see [`access::on_signal_after_call`]), even if another call starts first.
    fn finish_call(&mut self) -> Option<(CallTrace, Vec<crate::event::PageRange>)> {
        let call = self.call.take()?;
        for thread in self.threads.values_mut() {
            if let Thread::Stepping(step) = thread {
                step.end_call();
            }
        }
        debug!(accesses = call.trace.accesses.len(), "traced call ends");
        let pages = call.pages.runs().to_vec();
        Some((call.trace, pages))
    }

    fn on_message_lost(&mut self, reason: String) -> Vec<Action> {
        if let Lifecycle::Ending(status) = self.lifecycle {
            // The program ended without acknowledging its last trace: report it.
            let mut actions = Vec::new();
            if let Some((trace, pages)) = self.undelivered.take() {
                actions.push(Action::Report(Box::new(Report::DiedDuringCall { status, trace, pages })));
            }
            actions.extend(self.finish(status));
            return actions;
        }
        if self.awaiting_message.take().is_none() {
            warn!(%reason, "message lost while none was requested");
            return Vec::new();
        }
        let message = format!("the traced program stopped for a protocol message but sent none: {reason}");
        let trace = self.call.as_ref().map(|call| call.trace.clone());
        self.lifecycle = Lifecycle::Dying;
        vec![Action::Report(Box::new(Report::ProtocolError { message, trace })), Action::Kill]
    }

    fn on_signal(&mut self, stop: SignalStop) -> Vec<Action> {
        let tid = stop.tid;
        if self.tasks.is_new_process(tid) {
            return tasks::on_process_signal(self, stop);
        }
        let thread = self.threads.remove(&tid).unwrap_or(Thread::Running);
        let (next, actions) = match thread {
            Thread::Running => self.on_running_signal(stop),
            Thread::InSystemCall(step) => self.on_system_call_signal(step, stop),
            Thread::Stepping(step) => match self.call.as_mut() {
                Some(call) if !step.call_ended() => access::on_signal(call, step, stop),
                _ => access::on_signal_after_call(step, stop),
            },
            Thread::FetchingVectors(..) => {
                // The driver feeds the vector registers right after reading them, so this stop
                // should not happen. The pending fault is dropped: its instruction faults again
                // once the thread runs.
                warn!(tid, signal = stop.info.signo, "signal stop while waiting for vector registers");
                self.on_running_signal(stop)
            }
            Thread::Held(mut held) if dispatch::is_dispatched_syscall(&stop) => {
                let actions = dispatch::hold_dispatched_syscall(&mut held, &stop);
                (Thread::Held(held), actions)
            }
            Thread::Held(mut held) => {
                held.stopped = true;
                let traced_fault = self.call.as_ref().is_some_and(|call| is_traced_fault(call, &stop));
                if traced_fault && held.fault.is_none() {
                    held.fault = Some(stop);
                } else {
                    held.signals.push(stop.info);
                }
                (Thread::Held(held), Vec::new())
            }
            Thread::FetchingDisposition(pending) => {
                warn!(tid, signal = stop.info.signo, "signal stop while waiting for a disposition");
                (Thread::FetchingDisposition(pending), Vec::new())
            }
            Thread::Emulating(emulating) => {
                warn!(tid, signal = stop.info.signo, "signal stop while carrying out an instruction");
                (Thread::Emulating(emulating), Vec::new())
            }
            Thread::ReadingSignalMask(pending) => {
                warn!(tid, signal = stop.info.signo, "signal stop while reading a signal mask");
                (Thread::ReadingSignalMask(pending), Vec::new())
            }
            Thread::Waiting(waiting) => {
                // It is stopped at its fault, so no stop should come; keep the first.
                warn!(tid, signal = stop.info.signo, "signal stop of a waiting thread");
                (Thread::Waiting(waiting), Vec::new())
            }
        };
        self.threads.insert(tid, next);
        self.note_fatal_actions(&actions);
        self.schedule(actions)
    }

    /// After a crash report or a kill the program is about to die; a later exit needs no
    /// second report.
    fn note_fatal_actions(&mut self, actions: &[Action]) {
        let fatal = actions.iter().any(|action| match action {
            Action::Kill => true,
            Action::Report(report) => matches!(**report, Report::Crash(_)),
            _ => false,
        });
        if fatal {
            self.lifecycle = Lifecycle::Dying;
        }
    }

    fn on_running_signal(&mut self, mut stop: SignalStop) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        if dispatch::is_dispatched_syscall(&stop) {
            return self.on_dispatched_syscall(stop);
        }
        if let Some(native) = self.trampolines.leave(&stop.regs) {
            // A signal at a system call run from a trampoline: deliver it in the native
            // context. The code bytes read were the trampoline's, so none are reported.
            stop.regs = native;
            stop.code.clear();
            let (next, mut actions) = self.on_running_signal(stop);
            actions.insert(0, Action::SetRegisters { tid, regs: native });
            return (next, actions);
        }
        if self.is_protocol_signal(&stop.info) {
            self.awaiting_message = Some((tid, stop.regs));
            return (Thread::Running, vec![Action::ReceiveMessage]);
        }
        let traced_fault = self.call.as_ref().is_some_and(|call| is_traced_fault(call, &stop));
        if traced_fault {
            return self.on_traced_fault(stop, None);
        }
        if self.lifecycle == Lifecycle::Running && is_fault_signal(&stop) && stop.disposition == Disposition::Unknown {
            let signal = stop.info.signo;
            return (Thread::FetchingDisposition(stop), vec![Action::ReadDisposition { tid, signal }]);
        }
        if self.lifecycle == Lifecycle::Running && is_fatal_fault(&stop) {
            self.lifecycle = Lifecycle::Dying;
            let report = crash_report(&stop, self.call.as_ref());
            return (Thread::Running, vec![Action::Report(Box::new(report)), Action::Continue { tid, signal: Some(stop.info) }]);
        }
        (Thread::Running, vec![Action::Continue { tid, signal: Some(stop.info) }])
    }

    /// Carries out a fault on a traced page in the supervisor when it can, reading the vector
    /// registers first for a vector store, and otherwise steps it.
    fn on_traced_fault(&mut self, stop: SignalStop, vectors: Option<&VectorRegisters>) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let Some(call) = self.call.as_mut() else { return (Thread::Running, vec![Action::Continue { tid, signal: None }]) };
        match emulation::plan(call, &stop, vectors) {
            PlannedAccess::Ready(plan) => {
                return match emulation::start(call, stop, plan) {
                    (Some(emulating), actions) => (Thread::Emulating(emulating), actions),
                    (None, actions) => (Thread::Running, actions),
                };
            }
            PlannedAccess::NeedsVectorRegisters(_) if vectors.is_none() => {
                let fetching = Thread::FetchingVectors(stop, VectorsFor::Emulation);
                return (fetching, vec![Action::ReadVectorRegisters { tid }]);
            }
            PlannedAccess::NeedsVectorRegisters(_) | PlannedAccess::Step => {}
        }
        if self.uses_mprotect() {
            return self.stop_the_world(stop);
        }
        self.start_access(stop, vectors)
    }

    fn start_access(&mut self, stop: SignalStop, vectors: Option<&VectorRegisters>) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let Some(call) = self.call.as_mut().filter(|call| is_traced_fault(call, &stop)) else {
            // The call ended while the fault waited, so the pages are accessible again, or a
            // new call that does not trace the page has started: the instruction runs again.
            return (Thread::Running, vec![Action::Continue { tid, signal: None }]);
        };
        match access::start(call, stop, vectors) {
            access::Started::Stepping(step, actions) => (Thread::Stepping(step), actions),
            access::Started::NeedsVectors(stop) => {
                (Thread::FetchingVectors(stop, VectorsFor::Step), vec![Action::ReadVectorRegisters { tid }])
            }
        }
    }

    fn uses_mprotect(&self) -> bool {
        matches!(self.call.as_ref().map(|call| call.protection), Some(Protection::Mprotect { .. }))
    }

    /// With `mprotect`, opening a page opens it for every thread, so before a thread steps an
    /// access every other thread is stopped (and kept stopped until the pages are closed).
    /// A thread that faults while another steps or waits is held with its fault.
    fn stop_the_world(&mut self, stop: SignalStop) -> (Thread, Vec<Action>) {
        let busy = self.threads.values().any(is_busy);
        if busy {
            return (Thread::Held(Held { fault: Some(stop), signals: Vec::new(), stopped: true }), Vec::new());
        }
        let tid = stop.tid;
        let running: Vec<i32> = self
            .threads
            .iter()
            .filter(|(&other, thread)| other != tid && matches!(thread, Thread::Running))
            .map(|(&other, _)| other)
            .collect();
        // A thread interrupted earlier may not have stopped yet: the access waits for it too.
        let stopping = self.threads.values().any(|thread| matches!(thread, Thread::Held(Held { stopped: false, .. })));
        if running.is_empty() && !stopping {
            return self.start_access(stop, None);
        }
        let mut actions = Vec::new();
        for other in running {
            self.threads.insert(other, Thread::Held(Held::default()));
            actions.push(Action::Interrupt { tid: other });
        }
        (Thread::Waiting(stop), actions)
    }

    /// Moves the threads on once the world changed: a waiting thread starts stepping when
    /// every held thread has stopped; when no thread steps, a held thread with a fault steps
    /// next, and once none is left every held thread is released. Appends to `actions`.
    fn schedule(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        // A thread fetching vector registers steps next, so the others stay as they are.
        if self.threads.values().any(|thread| matches!(thread, Thread::Stepping(_) | Thread::FetchingVectors(..))) {
            return actions;
        }
        let all_stopped = self.threads.values().all(|thread| !matches!(thread, Thread::Held(Held { stopped: false, .. })));
        let waiting = self.threads.iter().find(|(_, thread)| matches!(thread, Thread::Waiting(_))).map(|(&tid, _)| tid);
        if let Some(tid) = waiting {
            if !all_stopped {
                return actions;
            }
            if let Some(Thread::Waiting(stop)) = self.threads.remove(&tid) {
                let (next, mut started) = self.start_access(stop, None);
                self.threads.insert(tid, next);
                actions.append(&mut started);
            }
            return self.schedule(actions);
        }

        let next_fault = self
            .threads
            .iter()
            .find(|(_, thread)| matches!(thread, Thread::Held(Held { fault: Some(_), .. })))
            .map(|(&tid, _)| tid);
        if let Some(tid) = next_fault {
            // The thread that just finished stepping may run again, so the world is stopped
            // anew before the next held fault opens pages.
            if let Some(Thread::Held(held)) = self.threads.remove(&tid) {
                let Some(fault) = held.fault else { return actions };
                actions.extend(held.signals.into_iter().map(|info| Action::QueueSignal { tid, info }));
                let (next, mut started) = self.stop_the_world(fault);
                self.threads.insert(tid, next);
                actions.append(&mut started);
            }
            return self.schedule(actions);
        }

        let held: Vec<i32> =
            self.threads.iter().filter(|(_, thread)| matches!(thread, Thread::Held(_))).map(|(&tid, _)| tid).collect();
        for tid in held {
            let Some(Thread::Held(held)) = self.threads.remove(&tid) else { continue };
            actions.extend(held.signals.into_iter().map(|info| Action::QueueSignal { tid, info }));
            // A thread interrupted but not yet stopped is running: its stop comes later and
            // is handled then.
            if held.stopped {
                actions.push(Action::Continue { tid, signal: None });
            }
            self.threads.insert(tid, Thread::Running);
        }
        actions
    }

    fn on_memory(&mut self, tid: i32, bytes: Option<Vec<u8>>) -> Vec<Action> {
        match self.threads.remove(&tid) {
            Some(Thread::Emulating(emulating)) => {
                self.go_on_emulating(tid, emulating, |emulating, call| emulating.complete(call, bytes))
            }
            Some(Thread::ReadingSignalMask(stop)) => {
                let (next, actions) = self.on_signal_mask(stop, bytes);
                self.threads.insert(tid, next);
                self.schedule(actions)
            }
            other => self.put_back_unrequested(tid, other, "memory"),
        }
    }

    fn on_memory_written(&mut self, tid: i32, written: bool) -> Vec<Action> {
        match self.threads.remove(&tid) {
            Some(Thread::Emulating(emulating)) => {
                self.go_on_emulating(tid, emulating, |emulating, call| emulating.written(call, written))
            }
            other => self.put_back_unrequested(tid, other, "a memory write's result"),
        }
    }

    /// Keeps thread `tid` as it was when `received` arrives without a request.
    fn put_back_unrequested(&mut self, tid: i32, thread: Option<Thread>, received: &str) -> Vec<Action> {
        warn!(tid, "{received} received while none was requested");
        if let Some(thread) = thread {
            self.threads.insert(tid, thread);
        }
        Vec::new()
    }

    /// Moves thread `tid` on after a memory read or write for the instruction it carries out.
    /// `step` takes in the result.
    fn go_on_emulating(
        &mut self,
        tid: i32,
        emulating: emulation::Emulating,
        step: impl FnOnce(emulation::Emulating, &mut Call) -> emulation::Next,
    ) -> Vec<Action> {
        let Some(call) = self.call.as_mut() else {
            self.threads.insert(tid, Thread::Running);
            return vec![Action::Continue { tid, signal: None }];
        };
        match step(emulating, call) {
            emulation::Next::Done(actions) => {
                self.threads.insert(tid, Thread::Running);
                actions
            }
            emulation::Next::Wait(emulating, actions) => {
                self.threads.insert(tid, Thread::Emulating(emulating));
                actions
            }
            emulation::Next::Step { stop, disable } => {
                if disable {
                    warn!(tid, "reading traced memory to carry out an instruction failed; stepping it");
                    if let Some(call) = self.call.as_mut() {
                        call.emulation = false;
                    }
                }
                let (next, actions) = if self.uses_mprotect() { self.stop_the_world(stop) } else { self.start_access(stop, None) };
                self.threads.insert(tid, next);
                self.schedule(actions)
            }
        }
    }

    fn on_disposition(&mut self, tid: i32, disposition: Disposition) -> Vec<Action> {
        match self.threads.remove(&tid) {
            Some(Thread::FetchingDisposition(mut stop)) => {
                stop.disposition = disposition;
                let (next, actions) = self.on_running_signal(stop);
                self.threads.insert(tid, next);
                self.note_fatal_actions(&actions);
                self.schedule(actions)
            }
            Some(Thread::Stepping(step)) if step.awaits_disposition() => {
                let (next, actions) = match self.call.as_mut() {
                    Some(call) => access::on_disposition(call, step, disposition),
                    None => access::crash_after_call(step),
                };
                self.threads.insert(tid, next);
                self.note_fatal_actions(&actions);
                self.schedule(actions)
            }
            other => {
                warn!(tid, "disposition received while none was requested");
                if let Some(thread) = other {
                    self.threads.insert(tid, thread);
                }
                Vec::new()
            }
        }
    }

    fn on_vector_registers(&mut self, tid: i32, vectors: VectorRegisters) -> Vec<Action> {
        match self.threads.remove(&tid) {
            Some(Thread::FetchingVectors(stop, purpose)) => {
                let traced = self.call.as_ref().is_some_and(|call| is_traced_fault(call, &stop));
                let (next, actions) = match purpose {
                    VectorsFor::Emulation if traced => self.on_traced_fault(stop, Some(&vectors)),
                    VectorsFor::Emulation => (Thread::Running, vec![Action::Continue { tid, signal: None }]),
                    VectorsFor::Step => self.start_access(stop, Some(&vectors)),
                };
                self.threads.insert(tid, next);
                self.schedule(actions)
            }
            other => {
                warn!(tid, "vector registers received while none were requested");
                if let Some(thread) = other {
                    self.threads.insert(tid, thread);
                }
                Vec::new()
            }
        }
    }

    fn on_new_task(&mut self, parent: i32, tid: i32, kind: TaskKind) -> Vec<Action> {
        // A held parent stays stopped: the event is its response to the interrupt.
        let mut actions = match self.threads.get_mut(&parent) {
            Some(Thread::Held(held)) => {
                held.stopped = true;
                Vec::new()
            }
            // The event interrupts the step of its clone, fork or vfork: step on.
            Some(Thread::InSystemCall(_)) => vec![Action::Step { tid: parent, signal: None }],
            _ => vec![Action::Continue { tid: parent, signal: None }],
        };
        actions.extend(tasks::on_new_task(self, tid, kind));
        self.schedule(actions)
    }

    /// Returns true while a thread steps or waits to step with `mprotect`, when a new thread
    /// must stay stopped instead of running.
    pub(crate) fn world_stopped(&self) -> bool {
        self.uses_mprotect() && self.threads.values().any(is_busy)
    }

    /// Resumes a thread after a stop that is not a signal delivery. A step in flight is
    /// repeated, because a free run would execute code with the instruction's pages open.
    fn on_other_stop(&mut self, tid: i32, regs: Option<crate::regs::Registers>) -> Vec<Action> {
        if self.tasks.is_new_process(tid) || !self.threads.contains_key(&tid) {
            return tasks::on_task_stop(self, tid, regs);
        }
        if self.tasks.take_announced_thread(tid) {
            // The first stop of a thread its parent announced: it can be configured now.
            let mut actions = self.watch_system_calls(tid);
            let fixed = regs.as_ref().and_then(dispatch::without_step_flag);
            actions.extend(fixed.map(|regs| Action::SetRegisters { tid, regs }));
            actions.extend(self.on_other_stop(tid, fixed.or(regs)));
            return actions;
        }
        match self.threads.remove(&tid) {
            Some(Thread::Stepping(step)) => {
                self.threads.insert(tid, Thread::Stepping(step));
                vec![Action::Step { tid, signal: None }]
            }
            Some(Thread::InSystemCall(step)) => {
                self.threads.insert(tid, Thread::InSystemCall(step));
                vec![Action::Step { tid, signal: None }]
            }
            Some(Thread::Held(mut held)) => {
                held.stopped = true;
                self.threads.insert(tid, Thread::Held(held));
                self.schedule(Vec::new())
            }
            Some(Thread::Waiting(stop)) => {
                self.threads.insert(tid, Thread::Waiting(stop));
                Vec::new()
            }
            Some(Thread::FetchingDisposition(stop)) => {
                self.threads.insert(tid, Thread::FetchingDisposition(stop));
                Vec::new()
            }
            Some(Thread::Emulating(emulating)) => {
                self.threads.insert(tid, Thread::Emulating(emulating));
                Vec::new()
            }
            Some(Thread::ReadingSignalMask(stop)) => {
                self.threads.insert(tid, Thread::ReadingSignalMask(stop));
                Vec::new()
            }
            // A pending fault is dropped: the thread re-executes its instruction and faults again.
            // Threads held for that fault are scheduled anew.
            Some(Thread::FetchingVectors(..) | Thread::Running) | None => {
                self.threads.insert(tid, Thread::Running);
                self.schedule(vec![Action::Continue { tid, signal: None }])
            }
        }
    }

    fn on_task_exited(&mut self, tid: i32) -> Vec<Action> {
        self.tasks.forget(tid);
        self.sigsys_blocked.remove(&tid);
        if tid != self.program {
            self.slots.remove(&tid);
        }
        if let Some(Thread::Stepping(_)) = self.threads.remove(&tid) {
            // NOTE: with mprotect the pages this thread opened stay open for the other threads
            // until the call ends; with protection keys nothing stays open.
            warn!(tid, "a thread exited while stepping an access");
        }
        if self.awaiting_message.is_some_and(|(waiting, _)| waiting == tid) {
            self.awaiting_message = None;
        }
        self.schedule(Vec::new())
    }

    fn on_exit(&mut self, status: ExitStatus) -> Vec<Action> {
        let mut actions = Vec::new();
        // A board call that ended but whose trace the program never returned to its caller.
        if let Some((number, trace, pages)) = self.ended_quietly.take() {
            if number > self.board_received && self.lifecycle != Lifecycle::Dying {
                actions.push(Action::Report(Box::new(Report::DiedDuringCall { status, trace, pages })));
            }
        }
        if let Some(call) = self.call.take() {
            if self.lifecycle != Lifecycle::Dying {
                let pages = call.pages.runs().to_vec();
                actions.push(Action::Report(Box::new(Report::DiedDuringCall { status, trace: call.trace, pages })));
            }
            self.undelivered = None;
        }
        actions.extend(self.finish_if_no_acknowledgement(status));
        actions
    }

    /// Finishes, unless the last trace may not have reached the program: then the core reads
    /// the program's remaining messages for the acknowledgement first.
    fn finish_if_no_acknowledgement(&mut self, status: ExitStatus) -> Vec<Action> {
        if self.undelivered.is_some() && !matches!(self.lifecycle, Lifecycle::Ending(_)) {
            self.lifecycle = Lifecycle::Ending(status);
            return vec![Action::PollMessage];
        }
        self.finish(status)
    }

    fn finish(&mut self, status: ExitStatus) -> Vec<Action> {
        let mut actions = Vec::new();
        let exit_code = match (status, self.exit_code) {
            (ExitStatus::Exited(0), Some(code)) => code,
            _ => status.shell_code(),
        };
        self.lifecycle = Lifecycle::Finished;
        actions.push(Action::Finish { exit_code });
        actions
    }

    fn is_protocol_signal(&self, info: &SigInfo) -> bool {
        info.signo == PROTOCOL_SIGNAL && info.code == SI_QUEUE && info.value == PROTOCOL_COOKIE && info.pid == self.program
    }
}

/// Returns true for the entry of the child's end marker: `getppid(PROTOCOL_COOKIE, tid)`.
fn is_end_marker(tid: i32, regs: &crate::regs::Registers) -> bool {
    regs.orig_rax == SYS_GETPPID && regs.rdi == PROTOCOL_COOKIE && regs.rsi == tid as u64
}

fn start_call(request: StartRequest) -> Result<Call, String> {
    let pages = PageSet::new(&request.pages, request.page_size).map_err(|error| error.to_string())?;
    match request.protection {
        Protection::Mprotect { syscall_gadget: 0, .. } => return Err("the system-call gadget address is null".to_string()),
        Protection::ProtectionKey { key } if !(1..16).contains(&key) => {
            return Err(format!("protection key {key} is not one of 1 to 15"));
        }
        _ => {}
    }
    Ok(Call {
        pages,
        protection: request.protection,
        trace: CallTrace::default(),
        emulation: request.emulate,
        dispatch_off: false,
        board: None,
        journal: Vec::new(),
        published_complete: true,
    })
}

/// Returns true for a thread that steps, or is about to, with pages it opens with `mprotect`.
fn is_busy(thread: &Thread) -> bool {
    matches!(thread, Thread::Stepping(_) | Thread::Waiting(_) | Thread::FetchingVectors(..))
}

/// Returns true for a kernel-raised SIGSEGV or SIGBUS whose address lies on a traced page.
fn is_traced_fault(call: &Call, stop: &SignalStop) -> bool {
    let fault = stop.info.signo == SIGSEGV || stop.info.signo == SIGBUS;
    fault && stop.info.code > 0 && call.pages.contains(stop.info.addr)
}

/// Returns true for a signal that ends the program when its disposition is the default.
fn is_fault_signal(stop: &SignalStop) -> bool {
    matches!(stop.info.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP | SIGABRT)
}

/// A kernel-raised fault the program has no handler for, so delivering it ends the program.
pub(crate) fn is_fatal_fault(stop: &SignalStop) -> bool {
    let fault = matches!(stop.info.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP | SIGABRT);
    fault && stop.disposition == Disposition::Default
}

pub(crate) fn crash_report(stop: &SignalStop, call: Option<&Call>) -> Report {
    Report::Crash(Crash {
        info: stop.info.clone(),
        regs: stop.regs,
        instruction: crate::decode::disassemble_x86_64(&stop.code, stop.regs.rip),
        trace: call.map(|call| call.trace.clone()),
        pages: call.map(|call| call.pages.runs().to_vec()).unwrap_or_default(),
    })
}
