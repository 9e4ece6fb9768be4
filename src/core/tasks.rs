//! Threads and processes the traced program creates.
//!
//! Threads stay traced like the main thread. A process forked during a call has a copy of the
//! traced pages that still faults, so before it is detached the core makes its copy
//! accessible: with protection keys by opening the key in its PKRU, with `mprotect` by running
//! the gadget in it once per run of pages. A `vfork` child shares the program's memory, so
//! with `mprotect` its pages are left alone (opening them would open the program's).
//!
//! The kernel reports the creation at the parent (`NewTask`) and the new task's first stop
//! separately, in either order, so each side waits for the other here. A process is released
//! for the call that ran when the first of the two arrived, since the fork happened before
//! it: a call may end or start before the second one arrives.

use std::collections::BTreeMap;

use tracing::{debug, warn};

use super::{Action, Held, KeyRights, SigInfo, SignalStop, Supervisor, TaskKind, Thread, SIGTRAP};
use crate::event::PageRange;
use crate::messages::Protection;
use crate::regs::Registers;

const PROT_READ_WRITE: u64 = 0x1 | 0x2;

/// New tasks whose creation and first stop have not both been seen, and forked processes
/// being made ready to detach.
#[derive(Debug, Default)]
pub(crate) struct NewTasks {
    announced: BTreeMap<i32, (TaskKind, Option<ForkedCall>)>,
    stopped_early: BTreeMap<i32, (Option<Registers>, Option<ForkedCall>)>,
    releasing: BTreeMap<i32, Release>,
}

/// The call that ran when a new task was first reported, whose pages a forked process's copy
/// of memory has protected.
#[derive(Clone, Debug)]
struct ForkedCall {
    protection: Protection,
    runs: Vec<PageRange>,
}

fn running_call(supervisor: &Supervisor) -> Option<ForkedCall> {
    let call = supervisor.call.as_ref()?;
    Some(ForkedCall { protection: call.protection, runs: call.pages.runs().to_vec() })
}

/// A forked process whose copy of the pages is being opened with the `mprotect` gadget.
#[derive(Debug)]
struct Release {
    saved_regs: Registers,
    runs: Vec<PageRange>,
    next: usize,
    gadget: u64,
    signals: Vec<SigInfo>,
}

impl NewTasks {
    /// Returns true if `tid` is a process the program forked that is still traced.
    pub(crate) fn is_new_process(&self, tid: i32) -> bool {
        self.releasing.contains_key(&tid) || matches!(self.announced.get(&tid), Some((TaskKind::Fork | TaskKind::Vfork, _)))
    }

    /// Returns true, once, for a thread announced by its parent before its first stop.
    pub(crate) fn take_announced_thread(&mut self, tid: i32) -> bool {
        if matches!(self.announced.get(&tid), Some((TaskKind::Thread, _))) {
            self.announced.remove(&tid);
            return true;
        }
        false
    }

    pub(crate) fn forget(&mut self, tid: i32) {
        self.announced.remove(&tid);
        self.stopped_early.remove(&tid);
        self.releasing.remove(&tid);
    }
}

/// Handles the parent's report of a new task.
pub(super) fn on_new_task(supervisor: &mut Supervisor, tid: i32, kind: TaskKind) -> Vec<Action> {
    debug!(tid, ?kind, "new task");
    match supervisor.tasks.stopped_early.remove(&tid) {
        Some((regs, call)) => first_stop(supervisor, tid, kind, regs, call),
        None => {
            if kind == TaskKind::Thread {
                // While pages are open with mprotect, the thread is held from its first stop
                // on, and that stop is awaited like an interrupted thread's.
                let state = if supervisor.world_stopped() { Thread::Held(Held::default()) } else { Thread::Running };
                supervisor.threads.insert(tid, state);
            }
            let call = running_call(supervisor);
            supervisor.tasks.announced.insert(tid, (kind, call));
            Vec::new()
        }
    }
}

/// Handles a non-signal stop of a task the core does not know as a running thread.
pub(super) fn on_task_stop(supervisor: &mut Supervisor, tid: i32, regs: Option<Registers>) -> Vec<Action> {
    if supervisor.tasks.releasing.contains_key(&tid) {
        // A stop in the middle of the gadget step: repeat the step.
        return vec![Action::Step { tid, signal: None }];
    }
    match supervisor.tasks.announced.remove(&tid) {
        Some((kind, call)) => first_stop(supervisor, tid, kind, regs, call),
        None => {
            let call = running_call(supervisor);
            supervisor.tasks.stopped_early.insert(tid, (regs, call));
            Vec::new()
        }
    }
}

/// Handles a signal stop of a forked process that is still traced.
pub(super) fn on_process_signal(supervisor: &mut Supervisor, stop: SignalStop) -> Vec<Action> {
    let tid = stop.tid;
    let Some(mut release) = supervisor.tasks.releasing.remove(&tid) else {
        // Its first stop is a signal: release it and deliver the signal afterwards.
        let (kind, call) = match supervisor.tasks.announced.remove(&tid) {
            Some(announced) => announced,
            None => (TaskKind::Fork, running_call(supervisor)),
        };
        let mut actions = vec![Action::QueueSignal { tid, info: stop.info }];
        actions.extend(first_stop(supervisor, tid, kind, Some(stop.regs), call));
        return actions;
    };
    let step_trap = stop.info.signo == SIGTRAP && stop.info.code > 0 && stop.info.code <= 2;
    if !step_trap {
        release.signals.push(stop.info);
        supervisor.tasks.releasing.insert(tid, release);
        return vec![Action::Step { tid, signal: None }];
    }
    if stop.regs.rax != 0 {
        warn!(tid, errno = (stop.regs.rax as i64).wrapping_neg(), "mprotect in a forked process failed");
    }
    release.next += 1;
    if let Some(run) = release.runs.get(release.next).copied() {
        let actions = gadget(tid, &release, run);
        supervisor.tasks.releasing.insert(tid, release);
        return actions;
    }
    let mut actions = vec![Action::SetRegisters { tid, regs: release.saved_regs }];
    actions.extend(release.signals.into_iter().map(|info| Action::QueueSignal { tid, info }));
    actions.push(Action::Detach { tid });
    actions
}

/// Resumes a new thread, or releases a new process for `call` (the call that ran when it was
/// forked), once the task has stopped and its kind is known.
fn first_stop(
    supervisor: &mut Supervisor,
    tid: i32,
    kind: TaskKind,
    regs: Option<Registers>,
    call: Option<ForkedCall>,
) -> Vec<Action> {
    // A task made by a stepped `clone` or `fork` must not see the step's trap flag.
    let without_flag = regs.as_ref().and_then(super::dispatch::without_step_flag);
    let regs = without_flag.or(regs);
    let mut fixed: Vec<Action> = without_flag.map(|regs| Action::SetRegisters { tid, regs }).into_iter().collect();
    if kind == TaskKind::Thread {
        let mut actions = supervisor.watch_system_calls(tid);
        actions.append(&mut fixed);
        if supervisor.world_stopped() {
            supervisor.threads.insert(tid, Thread::Held(Held { stopped: true, ..Held::default() }));
            return actions;
        }
        supervisor.threads.insert(tid, Thread::Running);
        actions.push(Action::Continue { tid, signal: None });
        return actions;
    }
    let Some(call) = call else {
        fixed.push(Action::Detach { tid });
        return fixed;
    };
    match (call.protection, kind, regs) {
        (Protection::ProtectionKey { key }, _, _) => {
            fixed.extend([Action::SetKeyRights { tid, key, rights: KeyRights::ReadWrite }, Action::Detach { tid }]);
            fixed
        }
        (Protection::Mprotect { syscall_gadget, .. }, TaskKind::Fork, Some(saved_regs)) => {
            let release = Release { saved_regs, runs: call.runs, next: 0, gadget: syscall_gadget, signals: Vec::new() };
            let Some(run) = release.runs.first().copied() else {
                return vec![Action::Detach { tid }];
            };
            let actions = gadget(tid, &release, run);
            supervisor.tasks.releasing.insert(tid, release);
            actions
        }
        (Protection::Mprotect { .. }, TaskKind::Fork, None) => {
            warn!(tid, "forked process detached with its traced pages still protected: no registers");
            vec![Action::Detach { tid }]
        }
        // NOTE: a vfork child shares the program's pages, so with mprotect they stay
        // protected for it; it faults if it touches them before it execs.
        (Protection::Mprotect { .. }, _, _) => {
            fixed.push(Action::Detach { tid });
            fixed
        }
    }
}

fn gadget(tid: i32, release: &Release, run: PageRange) -> Vec<Action> {
    super::access::mprotect_step(tid, &release.saved_regs, release.gadget, run, PROT_READ_WRITE)
}
