//! The supervisor's protocol as a side-effect-free state machine.
//!
//! [`Supervisor::handle_event`] takes one [`ExecEvent`] and returns the [`Action`]s the driver
//! must carry out, in order, before it waits for the next event. The core makes no system
//! call, reads no clock and holds no global: registers, signal information, instruction bytes
//! and the page size all arrive as event data. No input makes it panic; an event that makes no
//! sense in the current state is logged and answered with the action that keeps the traced
//! program alive and the pages protected.
//!
//! # The protocol, as the child and the supervisor run it
//!
//! 1. The child sends [`ChildMessage::Start`] with the pages to trace, then stops itself with
//!    the protocol signal ([`PROTOCOL_SIGNAL`] queued with [`PROTOCOL_COOKIE`]).
//! 2. At that stop the core asks for the message, answers [`StartReply`] and resumes the
//!    child, which protects the pages (`PROT_NONE`) and calls the native code.
//! 3. Each access to a traced page faults. The core decodes the instruction, opens the pages it
//!    touches by pointing the child at its `syscall` gadget with `mprotect` arguments and
//!    single-stepping it, restores the registers and single-steps the instruction, closes the
//!    pages the same way, restores the registers after the instruction and resumes.
//! 4. After the call the child makes the pages accessible again, sends [`ChildMessage::End`]
//!    and stops with the protocol signal; the core sends back the [`CallTrace`].
//!
//! Signals that arrive while an access is being stepped are held back and delivered once the
//! pages are closed again, so a signal handler never runs with a traced page open.
#![forbid(unsafe_code)]

mod access;
mod action;
mod event;
mod pages;
mod report;

pub use action::Action;
pub use event::{Disposition, ExecEvent, SigInfo, SignalStop};
pub use pages::{PageSet, PageSetError};
pub use report::{Crash, ExitStatus, Report};

use access::AccessStep;
use tracing::{debug, trace, warn};

use crate::event::CallTrace;
use crate::messages::{ChildMessage, StartReply, StartRequest, SupervisorMessage};
use crate::regs::VectorRegisters;

/// The signal the child raises to stop itself at a protocol step (SIGUSR1 on Linux).
pub const PROTOCOL_SIGNAL: i32 = 10;
/// The `si_value` that marks a queued [`PROTOCOL_SIGNAL`] as the protocol's, so a SIGUSR1
/// that the traced program raises for its own reasons is delivered to it untouched.
pub const PROTOCOL_COOKIE: u64 = 0x6666_6974_7261_6365;
/// `si_code` of a signal queued with `sigqueue`/`rt_sigqueueinfo`.
const SI_QUEUE: i32 = -1;

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
    state: State,
    child_pid: i32,
    exit_code: Option<i32>,
}

#[derive(Debug)]
pub(crate) enum State {
    /// The child runs outside a traced call.
    Idle,
    /// The child stopped with the protocol signal; its message is being received.
    AwaitingMessage { call: Option<Call> },
    /// The child runs a traced call with its pages protected.
    Tracing(Call),
    /// A fault on a traced page waits for the vector registers its decoding needs.
    FetchingVectors(Call, SignalStop),
    /// One faulting instruction is being stepped with its pages open.
    Stepping(Call, AccessStep),
    /// A fatal fault was reported and the program is about to die of it.
    Dying,
    /// The child is gone.
    Finished,
}

/// One traced call in progress.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) pages: PageSet,
    pub(crate) syscall_gadget: u64,
    pub(crate) trace: CallTrace,
}

impl Supervisor {
    /// Creates the core for a child with this process id; it starts outside any call.
    pub fn new(child_pid: i32) -> Supervisor {
        Supervisor { state: State::Idle, child_pid, exit_code: None }
    }

    /// Returns true while a traced call is running.
    pub fn in_call(&self) -> bool {
        matches!(
            self.state,
            State::Tracing(_)
                | State::Stepping(..)
                | State::FetchingVectors(..)
                | State::AwaitingMessage { call: Some(_) }
        )
    }

    /// Returns true once the child is gone and no further event is expected.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
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
        let state = std::mem::replace(&mut self.state, State::Finished);
        let before = state.name();
        let (next, actions) = match event {
            ExecEvent::Message(message) => self.on_message(state, message),
            ExecEvent::MessageLost { reason } => on_message_lost(state, reason),
            ExecEvent::Signal(stop) => self.on_signal(state, stop),
            ExecEvent::VectorRegisters(vectors) => on_vector_registers(state, vectors),
            ExecEvent::OtherStop => on_other_stop(state),
            ExecEvent::Exited { status } => self.on_exit(state, ExitStatus::Exited(status)),
            ExecEvent::Killed { signal, core_dumped } => {
                self.on_exit(state, ExitStatus::Killed { signal, core_dumped })
            }
        };
        if next.name() != before {
            debug!(from = before, to = next.name(), "state change");
        }
        self.state = next;
        for action in &actions {
            trace!(?action, "action");
        }
        actions
    }

    fn on_message(&mut self, state: State, message: ChildMessage) -> (State, Vec<Action>) {
        let State::AwaitingMessage { call } = state else {
            warn!(?message, "message received while none was requested");
            return (state, Vec::new());
        };
        let resume = Action::Continue { signal: None };
        match (message, call) {
            (ChildMessage::Start(request), None) => match start_call(request) {
                Ok(call) => {
                    let reply = Action::Reply(SupervisorMessage::StartReply(StartReply::Started));
                    (State::Tracing(call), vec![resume, reply])
                }
                Err(reason) => {
                    let reply = SupervisorMessage::StartReply(StartReply::Rejected(reason));
                    (State::Idle, vec![resume, Action::Reply(reply)])
                }
            },
            (ChildMessage::Start(_), Some(call)) => {
                let reason = "a traced call is already running".to_string();
                let reply = SupervisorMessage::StartReply(StartReply::Rejected(reason));
                (State::Tracing(call), vec![resume, Action::Reply(reply)])
            }
            (ChildMessage::End, Some(call)) => {
                let reply = Action::Reply(SupervisorMessage::Trace(call.trace));
                (State::Idle, vec![resume, reply])
            }
            (ChildMessage::End, None) => {
                let reason = "no traced call is running".to_string();
                let reply = Action::Reply(SupervisorMessage::Rejected(reason));
                (State::Idle, vec![resume, reply])
            }
            (ChildMessage::SetExitCode(code), call) => {
                self.exit_code = Some(code);
                (call.map_or(State::Idle, State::Tracing), vec![resume])
            }
        }
    }

    fn on_signal(&mut self, state: State, stop: SignalStop) -> (State, Vec<Action>) {
        match state {
            State::Idle => self.on_signal_outside_call(stop),
            State::Tracing(call) => self.on_signal_in_call(call, stop),
            State::Stepping(call, step) => access::on_signal(call, step, stop),
            State::FetchingVectors(call, _) => {
                // The driver feeds the vector registers right after reading them, so this stop
                // should not happen. The pending fault is dropped because its instruction
                // faults again once the child runs, and this stop is handled as any in the call.
                warn!(signal = stop.info.signo, "signal stop while waiting for vector registers");
                self.on_signal_in_call(call, stop)
            }
            State::AwaitingMessage { .. } | State::Dying | State::Finished => {
                warn!(state = state.name(), signal = stop.info.signo, "unexpected signal stop");
                (state, vec![Action::Continue { signal: Some(stop.info) }])
            }
        }
    }

    fn on_signal_outside_call(&self, stop: SignalStop) -> (State, Vec<Action>) {
        if self.is_protocol_signal(&stop.info) {
            return (State::AwaitingMessage { call: None }, vec![Action::ReceiveMessage]);
        }
        if is_fatal_fault(&stop) {
            let report = crash_report(&stop, None);
            let actions = vec![Action::Report(report), Action::Continue { signal: Some(stop.info) }];
            return (State::Dying, actions);
        }
        (State::Idle, vec![Action::Continue { signal: Some(stop.info) }])
    }

    fn on_signal_in_call(&self, call: Call, stop: SignalStop) -> (State, Vec<Action>) {
        if self.is_protocol_signal(&stop.info) {
            return (State::AwaitingMessage { call: Some(call) }, vec![Action::ReceiveMessage]);
        }
        if is_traced_fault(&call, &stop) {
            return access::start(call, stop, None);
        }
        if is_fatal_fault(&stop) {
            let report = crash_report(&stop, Some(&call));
            let actions = vec![Action::Report(report), Action::Continue { signal: Some(stop.info) }];
            return (State::Dying, actions);
        }
        (State::Tracing(call), vec![Action::Continue { signal: Some(stop.info) }])
    }

    fn on_exit(&mut self, state: State, status: ExitStatus) -> (State, Vec<Action>) {
        let mut actions = Vec::new();
        let call = match state {
            State::Tracing(call) | State::Stepping(call, _) | State::FetchingVectors(call, _) => Some(call),
            State::AwaitingMessage { call } => call,
            State::Idle | State::Dying | State::Finished => None,
        };
        if let Some(call) = call {
            let pages = call.pages.runs().to_vec();
            actions.push(Action::Report(Report::DiedDuringCall { status, trace: call.trace, pages }));
        }
        let exit_code = match (status, self.exit_code) {
            (ExitStatus::Exited(0), Some(code)) => code,
            _ => status.shell_code(),
        };
        actions.push(Action::Finish { exit_code });
        (State::Finished, actions)
    }

    fn is_protocol_signal(&self, info: &SigInfo) -> bool {
        info.signo == PROTOCOL_SIGNAL
            && info.code == SI_QUEUE
            && info.value == PROTOCOL_COOKIE
            && info.pid == self.child_pid
    }
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::AwaitingMessage { .. } => "awaiting-message",
            State::Tracing(_) => "tracing",
            State::FetchingVectors(..) => "fetching-vectors",
            State::Stepping(..) => "stepping",
            State::Dying => "dying",
            State::Finished => "finished",
        }
    }
}

fn on_vector_registers(state: State, vectors: VectorRegisters) -> (State, Vec<Action>) {
    match state {
        State::FetchingVectors(call, stop) => access::start(call, stop, Some(&vectors)),
        other => {
            warn!(state = other.name(), "vector registers received while none were requested");
            (other, Vec::new())
        }
    }
}

/// Resumes the child after a stop that is not a signal delivery. A step in flight is
/// repeated, because a free run would execute code with the instruction's pages open.
/// A pending fault that waits for vector registers is dropped, since the child re-executes
/// its instruction and faults again once it runs.
fn on_other_stop(state: State) -> (State, Vec<Action>) {
    match state {
        State::Stepping(..) => (state, vec![Action::Step { signal: None }]),
        State::FetchingVectors(call, _) => (State::Tracing(call), vec![Action::Continue { signal: None }]),
        other => (other, vec![Action::Continue { signal: None }]),
    }
}

fn on_message_lost(state: State, reason: String) -> (State, Vec<Action>) {
    let trace = match state {
        State::AwaitingMessage { call } => call.map(|call| call.trace),
        other => {
            warn!(state = other.name(), %reason, "message lost while none was requested");
            return (other, Vec::new());
        }
    };
    let message = format!("the traced program stopped for a protocol message but sent none: {reason}");
    (State::Dying, vec![Action::Report(Report::ProtocolError { message, trace }), Action::Kill])
}

fn start_call(request: StartRequest) -> Result<Call, String> {
    let pages = PageSet::new(&request.pages, request.page_size).map_err(|error| error.to_string())?;
    if request.syscall_gadget == 0 {
        return Err("the system-call gadget address is null".to_string());
    }
    Ok(Call { pages, syscall_gadget: request.syscall_gadget, trace: CallTrace::default() })
}

/// A kernel-raised SIGSEGV or SIGBUS whose address lies on a traced page.
fn is_traced_fault(call: &Call, stop: &SignalStop) -> bool {
    let fault = stop.info.signo == SIGSEGV || stop.info.signo == SIGBUS;
    fault && stop.info.code > 0 && call.pages.contains(stop.info.addr)
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

pub(crate) use self::State as CoreState;
