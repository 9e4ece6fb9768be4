//! Test-only fault injection, compiled only with the `fault-injection` cargo feature.
//!
//! `FFITRACE_INJECT=<when>:<n>:<fault>` makes the supervisor act once, the `n`th time (counting
//! from 1) it reaches the driver step `<when>`:
//!
//! - `before-action:<Action variant>`: just before the driver executes that action, for
//!   example `before-action:Step:3:kill-program`;
//! - `after-event:<ExecEvent variant>`: after the driver has executed every action the core
//!   returned for that event. `Exited` and `Killed` never get there, because their `Finish`
//!   action ends the supervisor.
//!
//! `<fault>` is one of:
//!
//! - `kill-program`: send SIGKILL to the traced program;
//! - `term-program`: send SIGTERM, whose default action ends the program;
//! - `exit-program`: send SIGUSR2. The supervisor cannot make the program call `exit`, so the
//!   test fixture installs a SIGUSR2 handler that calls `_exit(42)`;
//! - `kill-supervisor`: the supervisor calls `_exit(99)` on the spot and leaves the program to
//!   the kernel, which kills it through `PTRACE_O_EXITKILL` and `PR_SET_PDEATHSIG`.
//!
//! Before it acts, the supervisor prints `ffitrace: injected <fault> at <when>:<n>` on stderr.
//! The signals are not sent once the program has been reaped (at `Finish`, and at the report
//! of a death during a call), because its process id may then belong to another process.
//!
//! `FFITRACE_INJECT=list` injects nothing and prints `ffitrace: injection point <when>:<n>`
//! at every step instead, so a test can learn the points of a run.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::core::{Action, ExecEvent, Report};

const VARIABLE: &str = "FFITRACE_INJECT";
/// The status of the supervisor for `kill-supervisor`.
const SUPERVISOR_EXIT_STATUS: i32 = 99;
/// The status of the supervisor when `FFITRACE_INJECT` is invalid.
const INVALID_VALUE_STATUS: i32 = 2;

const ACTION_NAMES: &[&str] = &[
    "SetRegisters",
    "WriteMemory",
    "ZeroWords",
    "SetKeyRights",
    "SetVectorRegister",
    "Step",
    "QueueSignal",
    "Continue",
    "ContinueToSyscall",
    "Interrupt",
    "Detach",
    "ReadVectorRegisters",
    "ReadMemory",
    "ReadMemoryAsProgram",
    "WriteMemoryAsProgram",
    "ReadDisposition",
    "ReceiveMessage",
    "PollMessage",
    "Reply",
    "Report",
    "Kill",
    "Finish",
    "Publish",
    "SetSyscallSelector",
    "WatchSystemCalls",
    "BlockSignal",
];

const EVENT_NAMES: &[&str] = &[
    "Message",
    "MessageLost",
    "Signal",
    "VectorRegisters",
    "NewTask",
    "OtherStop",
    "Syscall",
    "Memory",
    "MemoryWritten",
    "Disposition",
    "TaskExited",
    "Exited",
    "Killed",
    "CallBoard",
];

/// The fault injected at the chosen step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    KillProgram,
    TermProgram,
    ExitProgram,
    KillSupervisor,
}

impl Fault {
    fn parse(text: &str) -> Option<Fault> {
        match text {
            "kill-program" => Some(Fault::KillProgram),
            "term-program" => Some(Fault::TermProgram),
            "exit-program" => Some(Fault::ExitProgram),
            "kill-supervisor" => Some(Fault::KillSupervisor),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Fault::KillProgram => "kill-program",
            Fault::TermProgram => "term-program",
            Fault::ExitProgram => "exit-program",
            Fault::KillSupervisor => "kill-supervisor",
        }
    }

    /// Returns the signal to send to the program, or `None` when the supervisor itself exits.
    fn signal(self) -> Option<i32> {
        match self {
            Fault::KillProgram => Some(libc::SIGKILL),
            Fault::TermProgram => Some(libc::SIGTERM),
            Fault::ExitProgram => Some(libc::SIGUSR2),
            Fault::KillSupervisor => None,
        }
    }
}

#[derive(Debug)]
enum Plan {
    Off,
    List,
    Once { phase: &'static str, step: &'static str, occurrence: u32, fault: Fault, done: bool },
}

/// The parsed variable and how often each step has been reached.
#[derive(Debug)]
struct Injector {
    plan: Plan,
    reached: BTreeMap<(&'static str, &'static str), u32>,
}

static INJECTOR: Mutex<Option<Injector>> = Mutex::new(None);

/// Counts the step and acts if it is the chosen one. `program_reaped` is true when the
/// program's process id may no longer be signalled.
fn reach(pid: i32, phase: &'static str, step: &'static str, program_reaped: bool) {
    let mut guard = INJECTOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let injector = guard.get_or_insert_with(|| Injector { plan: read_plan(), reached: BTreeMap::new() });
    if matches!(injector.plan, Plan::Off) {
        return;
    }
    let count = injector.reached.entry((phase, step)).or_insert(0);
    *count += 1;
    let count = *count;
    match &mut injector.plan {
        Plan::Off => {}
        Plan::List => eprintln!("ffitrace: injection point {phase}:{step}:{count}"),
        Plan::Once { phase: chosen_phase, step: chosen_step, occurrence, fault, done } => {
            let chosen = *chosen_phase == phase && *chosen_step == step && *occurrence == count;
            if !chosen || *done {
                return;
            }
            let signal = fault.signal();
            if signal.is_some() && program_reaped {
                return;
            }
            *done = true;
            eprintln!("ffitrace: injected {} at {phase}:{step}:{count}", fault.name());
            match signal {
                // SAFETY: kill takes no pointers. The program is not reaped yet, so `pid` is
                // still its process id.
                Some(signal) => unsafe {
                    libc::kill(pid, signal);
                },
                // SAFETY: _exit ends the process at once without running destructors, which is
                // the point: the supervisor vanishes as if it had crashed.
                None => unsafe { libc::_exit(SUPERVISOR_EXIT_STATUS) },
            }
        }
    }
}

/// Reads `FFITRACE_INJECT`. An invalid value ends the supervisor, so that a misspelt step
/// cannot make a test pass by never firing.
fn read_plan() -> Plan {
    let Ok(value) = std::env::var(VARIABLE) else {
        return Plan::Off;
    };
    if value == "list" {
        return Plan::List;
    }
    match parse_plan(&value) {
        Ok(plan) => plan,
        Err(reason) => {
            eprintln!("ffitrace: invalid {VARIABLE} value '{value}': {reason}");
            std::process::exit(INVALID_VALUE_STATUS);
        }
    }
}

fn parse_plan(value: &str) -> Result<Plan, String> {
    let fields: Vec<&str> = value.split(':').collect();
    let [phase, step, occurrence, fault] = fields[..] else {
        return Err(
            "expected 'list' or <when>:<n>:<fault>, where <when> is before-action:<Action> or after-event:<ExecEvent>"
                .to_string(),
        );
    };
    let (phase, names) = match phase {
        "before-action" => ("before-action", ACTION_NAMES),
        "after-event" => ("after-event", EVENT_NAMES),
        other => return Err(format!("invalid step kind '{other}': expected 'before-action' or 'after-event'")),
    };
    let step =
        names.iter().copied().find(|name| *name == step).ok_or_else(|| format!("unknown {phase} step '{step}'"))?;
    let occurrence = match occurrence.parse::<u32>() {
        Ok(number) if number >= 1 => number,
        _ => return Err(format!("invalid occurrence '{occurrence}': expected a number from 1")),
    };
    let fault = Fault::parse(fault).ok_or_else(|| {
        format!("invalid fault '{fault}': expected kill-program, term-program, exit-program or kill-supervisor")
    })?;
    Ok(Plan::Once { phase, step, occurrence, fault, done: false })
}

/// Counts the step before the driver executes `action` and injects the fault if it is the
/// chosen one.
pub(super) fn before_action(pid: i32, action: &Action) {
    let program_reaped = match action {
        Action::Finish { .. } => true,
        Action::Report(report) => matches!(**report, Report::DiedDuringCall { .. }),
        _ => false,
    };
    reach(pid, "before-action", action_name(action), program_reaped);
}

/// Counts the step after the driver has executed every action for the event named `name` (see
/// [`event_name`]) and injects the fault if it is the chosen one.
pub(super) fn after_event(pid: i32, name: &'static str, program_reaped: bool) {
    reach(pid, "after-event", name, program_reaped);
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::SetRegisters { .. } => "SetRegisters",
        Action::WriteMemory { .. } => "WriteMemory",
        Action::ZeroWords { .. } => "ZeroWords",
        Action::SetKeyRights { .. } => "SetKeyRights",
        Action::SetVectorRegister { .. } => "SetVectorRegister",
        Action::Step { .. } => "Step",
        Action::QueueSignal { .. } => "QueueSignal",
        Action::Continue { .. } => "Continue",
        Action::ContinueToSyscall { .. } => "ContinueToSyscall",
        Action::Interrupt { .. } => "Interrupt",
        Action::Detach { .. } => "Detach",
        Action::ReadVectorRegisters { .. } => "ReadVectorRegisters",
        Action::ReadMemory { .. } => "ReadMemory",
        Action::ReadMemoryAsProgram { .. } => "ReadMemoryAsProgram",
        Action::WriteMemoryAsProgram { .. } => "WriteMemoryAsProgram",
        Action::ReadDisposition { .. } => "ReadDisposition",
        Action::ReceiveMessage => "ReceiveMessage",
        Action::PollMessage => "PollMessage",
        Action::Reply(_) => "Reply",
        Action::Report(_) => "Report",
        Action::Kill => "Kill",
        Action::Finish { .. } => "Finish",
        Action::Publish { .. } => "Publish",
        Action::SetSyscallSelector { .. } => "SetSyscallSelector",
        Action::WatchSystemCalls { .. } => "WatchSystemCalls",
        Action::BlockSignal { .. } => "BlockSignal",
    }
}

/// Returns the variant name of `event`, taken before the core consumes it.
pub(super) fn event_name(event: &ExecEvent) -> &'static str {
    match event {
        ExecEvent::Message(_) => "Message",
        ExecEvent::MessageLost { .. } => "MessageLost",
        ExecEvent::Signal(_) => "Signal",
        ExecEvent::VectorRegisters { .. } => "VectorRegisters",
        ExecEvent::NewTask { .. } => "NewTask",
        ExecEvent::OtherStop { .. } => "OtherStop",
        ExecEvent::Syscall { .. } => "Syscall",
        ExecEvent::Memory { .. } => "Memory",
        ExecEvent::MemoryWritten { .. } => "MemoryWritten",
        ExecEvent::Disposition { .. } => "Disposition",
        ExecEvent::TaskExited { .. } => "TaskExited",
        ExecEvent::Exited { .. } => "Exited",
        ExecEvent::Killed { .. } => "Killed",
        ExecEvent::CallBoard(_) => "CallBoard",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_parses_each_field() {
        let plan = parse_plan("before-action:Step:3:kill-program").unwrap();
        let Plan::Once { phase, step, occurrence, fault, done } = plan else { panic!("expected a single injection") };
        assert_eq!((phase, step, occurrence, fault, done), ("before-action", "Step", 3, Fault::KillProgram, false));
        assert!(parse_plan("after-event:Signal:1:kill-supervisor").is_ok());
    }

    #[test]
    fn plan_rejects_invalid_values() {
        assert!(parse_plan("before-action:Step:3").is_err());
        assert!(parse_plan("before-action:Stepping:1:kill-program").is_err());
        assert!(parse_plan("after-event:Step:1:kill-program").is_err());
        assert!(parse_plan("before-action:Step:0:kill-program").is_err());
        assert!(parse_plan("before-action:Step:1:stop-program").is_err());
    }
}
