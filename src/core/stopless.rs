//! Calls announced on the call board, which start and end without a stop.
//!
//! The program writes a call's pages to the board, sets every thread's system-call selector
//! to block, and calls the native code. The core learns of the call from the driver, which
//! looks at the board before it feeds each stop ([`ExecEvent::CallBoard`]), so a call whose
//! pages are never touched costs no stop at all. The accesses the core records are published
//! back to the board ([`Action::Publish`]) before the thread that made them runs again.
//!
//! With the selectors blocking, the kernel turns each system call of a thread into SIGSYS
//! (syscall user dispatch) before running it; [`super::dispatch`] handles those.
//!
//! [`ExecEvent::CallBoard`]: super::ExecEvent::CallBoard

use tracing::{debug, warn};

use super::event::BoardCall;
use super::{start_call, Action, Supervisor};

/// Thread slots on the call board; slot 0 is the program's main thread.
const SLOTS: u16 = 4096;

impl Supervisor {
    /// Follows the board: ends the call the core follows when it returned or another one
    /// started, and starts the one the board announces.
    pub(super) fn on_board(&mut self, board: BoardCall) -> Vec<Action> {
        self.last_board_call = board.call;
        self.board_received = board.received;
        if let Some(call) = self.call.as_ref() {
            match call.board {
                Some(number) if number == board.call && board.active => return Vec::new(),
                Some(number) => {
                    // Its trace is kept in case the program requests it or dies first.
                    self.ended_quietly = self.finish_call().map(|(trace, pages)| (number, trace, pages));
                    // Masks change unseen between calls.
                    self.sigsys_blocked.clear();
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
                self.exempt = Some(board.exempt);
                // The program rewrites every selector at the start and end of this call.
                self.maybe_stale.clear();
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
        let used_slots: std::collections::BTreeSet<u16> = self.slots.values().copied().collect();
        let Some(slot) = (1..SLOTS).find(|slot| !used_slots.contains(slot)) else {
            warn!(tid, "no system-call selector left for this thread: its system calls in calls are not checked");
            return Vec::new();
        };
        self.slots.insert(tid, slot);
        let mut actions = vec![Action::WatchSystemCalls { tid, slot }];
        if self.call.as_ref().is_some_and(|call| call.board.is_some() && !call.dispatch_off) {
            actions.push(Action::SetSyscallSelector { slot, block: true });
            // The program may have ended the call and opened the selectors already.
            self.maybe_stale.insert(slot);
        }
        actions
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
