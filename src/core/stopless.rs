//! Calls announced on the call board, which start and end without a stop, and the system
//! calls their threads make.
//!
//! The program writes a call's pages to the board, sets every thread's system-call selector
//! to block, and calls the native code. The core learns of the call from the driver, which
//! looks at the board before it feeds each stop ([`ExecEvent::CallBoard`]), so a call whose
//! pages are never touched costs no stop at all. The accesses the core records are published
//! back to the board ([`Action::Publish`]) before the thread that made them runs again.
//!
//! With the selectors blocking, the kernel turns each system call of a thread into SIGSYS
//! (syscall user dispatch) before running it. At that stop the core checks the call's
//! arguments as it would at a system-call entry stop, unblocks that thread's selector, moves
//! the thread back onto its `syscall` instruction and steps it; at the trap after it blocks
//! the selector again. A system call thus costs two stops, as with `PTRACE_SYSCALL`, and
//! outside system calls nothing stops.
//!
//! [`ExecEvent::CallBoard`]: super::ExecEvent::CallBoard

use tracing::{debug, warn};

use super::event::BoardCall;
use super::{start_call, Action, Held, SignalStop, Supervisor, Thread, SIGTRAP};
use crate::regs::Registers;

/// SIGSYS on x86-64 Linux.
pub(crate) const SIGSYS: i32 = 31;
/// `si_code` of a SIGSYS that syscall user dispatch raised.
const SYS_USER_DISPATCH: i32 = 2;
/// Length of the `syscall` instruction, which the kernel has already passed at the SIGSYS.
const SYSCALL_LEN: u64 = 2;
/// The trap flag in RFLAGS, which single-stepping sets.
const TRAP_FLAG: u64 = 0x100;
/// Thread slots on the call board; slot 0 is the program's main thread.
const SLOTS: u16 = 4096;

/// The x86-64 numbers of the system calls after which r11 does not hold the saved flags:
/// `rt_sigreturn` restores the interrupted context, `execve` and `execveat` start a program.
const SYS_RT_SIGRETURN: u64 = 15;
const SYS_EXECVE: u64 = 59;
const SYS_EXECVEAT: u64 = 322;

/// A system call being stepped with its thread's selector open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SystemCallStep {
    /// The thread's slot on the call board.
    slot: u16,
    /// The thread's flags before the step.
    flags: u64,
    /// The system call's number.
    number: u64,
}

/// Returns true for a SIGSYS that syscall user dispatch raised in place of a system call.
pub(super) fn is_dispatched_syscall(stop: &SignalStop) -> bool {
    stop.info.signo == SIGSYS && stop.info.code == SYS_USER_DISPATCH
}

impl Supervisor {
    /// Follows the board: ends the call the core follows when it returned or another one
    /// started, and starts the one the board announces.
    pub(super) fn on_board(&mut self, board: BoardCall) -> Vec<Action> {
        if let Some(call) = self.call.as_ref() {
            match call.board {
                Some(number) if number == board.call && board.active => return Vec::new(),
                Some(_) => {
                    // Its trace stays at hand in case the program asks for it.
                    self.ended_quietly = self.finish_call();
                }
                None => {
                    warn!(call = board.call, "the board announces a call while a signalled call runs");
                    return Vec::new();
                }
            }
        }
        if !board.active {
            return Vec::new();
        }
        match start_call(board.request) {
            Ok(mut call) => {
                debug!(tid = board.tid, call = board.call, pages = call.pages.runs().len(), "traced call starts");
                call.board = Some(board.call);
                self.ended_quietly = None;
                self.call = Some(call);
            }
            Err(reason) => warn!(call = board.call, %reason, "the board announces a call that cannot be traced"),
        }
        Vec::new()
    }

    /// Gives new thread `tid` a board slot and turns dispatch on for it, its selector blocking
    /// when a board call runs. With every slot taken, that thread's system calls are not
    /// checked.
    pub(super) fn watch_system_calls(&mut self, tid: i32) -> Vec<Action> {
        let taken: std::collections::BTreeSet<u16> = self.slots.values().copied().collect();
        let Some(slot) = (1..SLOTS).find(|slot| !taken.contains(slot)) else {
            warn!(tid, "no system-call selector left for this thread: its system calls in calls are not checked");
            return Vec::new();
        };
        self.slots.insert(tid, slot);
        let mut actions = vec![Action::WatchSystemCalls { tid, slot }];
        if self.call.as_ref().is_some_and(|call| call.board.is_some()) {
            actions.push(Action::SetSyscallSelector { slot, block: true });
        }
        actions
    }

    /// Handles a system call the thread's selector blocked: checks it, then steps it with the
    /// selector open. Outside a board call the selector is only stale: it is opened and the
    /// system call runs.
    pub(super) fn on_dispatched_syscall(&mut self, stop: SignalStop) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let Some(&slot) = self.slots.get(&tid) else {
            // Only threads the core gave a slot have dispatch turned on.
            warn!(tid, "SIGSYS from syscall user dispatch in a thread without a slot");
            return (Thread::Running, vec![Action::Continue { tid, signal: Some(stop.info) }]);
        };
        // The kernel left the number in rax and rip after the `syscall` instruction.
        let number = stop.regs.rax;
        let entry = Registers { orig_rax: number, ..stop.regs };
        let again = Registers { rax: number, orig_rax: number, rip: stop.regs.rip.wrapping_sub(SYSCALL_LEN), ..stop.regs };
        let mut actions = vec![Action::SetSyscallSelector { slot, block: false }, Action::SetRegisters { tid, regs: again }];
        if !self.call.as_ref().is_some_and(|call| call.board.is_some()) {
            actions.push(Action::Continue { tid, signal: None });
            return (Thread::Running, actions);
        }
        self.check_syscall_entry(tid, &entry);
        actions.push(Action::Step { tid, signal: None });
        (Thread::InSystemCall(SystemCallStep { slot, flags: stop.regs.eflags, number }), actions)
    }

    /// Handles a signal stop of a thread that steps a system call: the trap after it blocks
    /// the selector again; another signal is delivered with the step going on.
    pub(super) fn on_system_call_signal(&mut self, step: SystemCallStep, stop: SignalStop) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let slot = step.slot;
        if stop.info.signo != SIGTRAP || stop.info.code <= 0 {
            return (Thread::InSystemCall(step), vec![Action::Step { tid, signal: Some(stop.info) }]);
        }
        let mut actions = Vec::new();
        // `syscall` saves the flags in r11, the step's trap flag among them. After the calls
        // that load other registers, r11 is the program's own value and stays.
        let saved_flags = !matches!(step.number, SYS_RT_SIGRETURN | SYS_EXECVE | SYS_EXECVEAT);
        if saved_flags && stop.regs.r11 & TRAP_FLAG != 0 && step.flags & TRAP_FLAG == 0 {
            let regs = Registers { r11: stop.regs.r11 & !TRAP_FLAG, ..stop.regs };
            actions.push(Action::SetRegisters { tid, regs });
        }
        if self.call.as_ref().is_some_and(|call| call.board.is_some()) {
            actions.push(Action::SetSyscallSelector { slot, block: true });
        }
        if self.world_stopped() {
            return (Thread::Held(Held { stopped: true, ..Held::default() }), actions);
        }
        actions.push(Action::Continue { tid, signal: None });
        (Thread::Running, actions)
    }

    /// Prepends the accesses recorded since the last event to `actions`, so they reach the
    /// board before any thread runs on.
    pub(super) fn publish(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        let Some(call) = self.call.as_mut() else { return actions };
        let Some(number) = call.board else { return actions };
        let complete = call.trace.is_complete();
        if call.journal.is_empty() && complete == call.published_complete {
            return actions;
        }
        call.published_complete = complete;
        let records = std::mem::take(&mut call.journal);
        actions.insert(0, Action::Publish { call: number, records, complete });
        actions
    }
}
