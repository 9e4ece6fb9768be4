//! System calls that syscall user dispatch blocks during a board call.
//!
//! While a board call runs, every thread's selector blocks, so the kernel turns each system
//! call into SIGSYS (`si_code` `SYS_USER_DISPATCH`) before running it, with rip after the
//! `syscall` instruction and the number back in rax. At that stop the core checks the
//! arguments as it would at a system-call entry stop, then lets the call run from the
//! program's exempt code, the range dispatch always lets through:
//!
//! - **A trampoline** per `syscall` site: `syscall; mov rcx, SITE; jmp rcx`, where `SITE` is
//!   the address after the site's own `syscall`. The core writes it once into the exempt
//!   code and points the thread at it. A system call then costs one stop and the selector
//!   stays blocking. The registers afterwards are those of the native call: rcx contains the
//!   return address and r11 the flags. A new thread or process returns from `clone` or `fork` in the trampoline too
//!   and jumps to the same site. A signal handler that interrupts the call returns into it.
//! - **A step**, when the exempt code is full or the call was made with `int 0x80`: the core
//!   opens the thread's selector, moves it back onto its instruction and single-steps it,
//!   then blocks the selector again and clears the trap flag that `syscall` saved in r11,
//!   also in a new task a stepped `clone` or `fork` made. Two stops per system call. A thread in this state keeps running while another thread
//!   has pages open with `mprotect`, so its system call may reach them.
//!
//! Outside board calls a SIGSYS of this kind is the core's only when it re-blocked that
//! thread's selector just as the program ended the call; it then opens the selector and lets
//! the call run again. Any other such SIGSYS comes from the program's own use of syscall user
//! dispatch and is delivered to it.

use tracing::warn;

use super::{Action, Disposition, Held, SignalStop, Supervisor, Thread, SIGTRAP, TRAP_BRKPT, TRAP_TRACE};
use crate::regs::Registers;

/// SIGSYS on x86-64 Linux.
pub(crate) const SIGSYS: i32 = 31;
/// `si_code` of a SIGSYS that syscall user dispatch raised.
const SYS_USER_DISPATCH: i32 = 2;
/// `AUDIT_ARCH_X86_64`, the `si_arch` of a 64-bit system call.
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// Length of `syscall` and of `int 0x80`, which the kernel has already passed at the SIGSYS.
const SYSCALL_LEN: u64 = 2;
/// The trap flag in RFLAGS, which single-stepping sets.
const TRAP_FLAG: u64 = 0x100;
/// `si_code` of the SIGTRAP that reports a signal handler's frame set up during a step.
const TRAP_HANDLER_ENTERED: i32 = SIGTRAP;
/// The x86-64 numbers of the system calls after which r11 does not hold the saved flags:
/// `rt_sigreturn` restores the interrupted context, `execve` and `execveat` start a program.
const SYS_RT_SIGRETURN: u64 = 15;
/// The x86-64 numbers of `rt_sigaction` and `rt_sigprocmask`.
const SYS_RT_SIGACTION: u64 = 13;
const SYS_RT_SIGPROCMASK: u64 = 14;
/// `rt_sigprocmask`'s `how`, and the bytes of the signal set it reads.
const SIG_BLOCK: u64 = 0;
const SIG_UNBLOCK: u64 = 1;
const SIG_SETMASK: u64 = 2;
const SIGSET_LEN: usize = 8;
const SYS_EXECVE: u64 = 59;
const SYS_EXECVEAT: u64 = 322;
/// Bytes per trampoline; the first one follows the gadget.
const TRAMPOLINE_LEN: u64 = 16;

/// A system call being stepped with its thread's selector open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SystemCallStep {
    /// The thread's slot on the call board.
    slot: u16,
    /// The thread's flags before the step.
    flags: u64,
    /// The system call's number.
    number: u64,
    /// Made with `syscall` (64-bit), which saves the flags in r11, not with `int 0x80`.
    native: bool,
}

/// The trampolines written so far, by the address after the `syscall` site they return to.
#[derive(Debug, Default)]
pub(crate) struct Trampolines {
    by_site: std::collections::BTreeMap<u64, u64>,
    /// The same, by trampoline address.
    by_address: std::collections::BTreeMap<u64, u64>,
    /// The exempt code has no room left; logged once.
    full: bool,
    /// The site of each thread's last system call that the core ran again outside a call,
    /// with the number of the last board call then.
    reruns: std::collections::BTreeMap<i32, (u64, u64)>,
}

impl Trampolines {
    /// Returns the registers of a thread stopped in a trampoline as they would be at the
    /// native `syscall`: before it (rip on the site's own instruction), or after it (rip at
    /// the site, with rcx pointing there). A signal handler then gets the native context, and
    /// a system call the signal interrupted is restarted from the site's own instruction.
    pub(super) fn leave(&self, regs: &Registers) -> Option<Registers> {
        let (&address, &site) = self.by_address.range(..=regs.rip).next_back()?;
        match regs.rip - address {
            // A signal that was due at the SIGSYS stop comes before the `syscall` runs.
            0 => Some(Registers { rip: site.wrapping_sub(SYSCALL_LEN), ..*regs }),
            // Past `syscall` (2 bytes), up to and including `jmp rcx` at 12.
            2..=12 => Some(Registers { rip: site, rcx: site, ..*regs }),
            _ => None,
        }
    }
}

/// Returns true for a SIGSYS that syscall user dispatch raised in place of a system call.
pub(super) fn is_dispatched_syscall(stop: &SignalStop) -> bool {
    stop.info.signo == SIGSYS && stop.info.code == SYS_USER_DISPATCH
}

/// Returns the `si_arch` of a SIGSYS: the 32-bit word at byte 28 of the `siginfo_t`.
fn syscall_arch(stop: &SignalStop) -> u32 {
    (stop.info.raw[3] >> 32) as u32
}

/// Returns the registers that run the blocked system call again from its own instruction.
fn rewound(regs: &Registers) -> Registers {
    Registers { orig_rax: regs.rax, rip: regs.rip.wrapping_sub(SYSCALL_LEN), ..*regs }
}

/// Handles a dispatched SIGSYS of a thread the core holds stopped: the system call runs
/// again from its instruction once the thread is released, and raises SIGSYS anew.
pub(super) fn hold_dispatched_syscall(held: &mut Held, stop: &SignalStop) -> Vec<Action> {
    held.stopped = true;
    vec![Action::SetRegisters { tid: stop.tid, regs: rewound(&stop.regs) }]
}

/// Returns the registers of a new task without the trap flag in r11, where its parent's
/// `clone` or `fork` was stepped: `syscall` saved the step's trap flag there, and the new task
/// returns from the same instruction. `None` when r11 has no trap flag the task's flags lack.
pub(super) fn without_step_flag(regs: &Registers) -> Option<Registers> {
    (regs.r11 & TRAP_FLAG != 0 && regs.eflags & TRAP_FLAG == 0).then_some(Registers { r11: regs.r11 & !TRAP_FLAG, ..*regs })
}

/// Returns the code of the trampoline for the `syscall` site that returns to `site`.
fn trampoline_code(site: u64) -> Vec<u8> {
    let mut code = vec![0x0f, 0x05, 0x48, 0xb9];
    code.extend_from_slice(&site.to_le_bytes());
    code.extend_from_slice(&[0xff, 0xe1, 0xcc, 0xcc]);
    code
}

impl Supervisor {
    /// Handles a system call that a selector blocked.
    pub(super) fn on_dispatched_syscall(&mut self, stop: SignalStop) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let site = stop.regs.rip;
        // The same thread and site again with no board call since the core ran the call
        // again: a selector other than the core's blocks it.
        let repeated = self.trampolines.reruns.remove(&tid) == Some((site, self.last_board_call));
        // Delivered from a trampoline, it shows the program the native context.
        let mut deliver: Vec<Action> =
            self.trampolines.leave(&stop.regs).map(|regs| Action::SetRegisters { tid, regs }).into_iter().collect();
        deliver.push(Action::Continue { tid, signal: Some(stop.info.clone()) });
        let (Some(&slot), Some(exempt)) = (self.slots.get(&tid), self.exempt) else {
            // Without board calls every such SIGSYS is the program's own.
            return (Thread::Running, deliver);
        };
        if exempt.contains(site.wrapping_sub(1)) {
            // The core's own code is exempt from its dispatch: the program's dispatch blocked it.
            return (Thread::Running, deliver);
        }
        let in_board_call = self.call.as_ref().is_some_and(|call| call.board.is_some());
        if self.call.as_ref().is_some_and(|call| call.dispatch_off) {
            return (Thread::Running, deliver);
        }
        if !in_board_call {
            // A system call of the core's dispatch that stopped just as the program ended the
            // call, or whose selector the core re-blocked too late, runs again. With SIGSYS
            // at its default the program cannot be using dispatch itself.
            let ours = !repeated && (self.maybe_stale.remove(&slot) || stop.disposition == Disposition::Default);
            if !ours && !repeated && stop.disposition == Disposition::Unknown {
                return (Thread::FetchingDisposition(stop), vec![Action::ReadDisposition { tid, signal: SIGSYS }]);
            }
            if !ours {
                return (Thread::Running, deliver);
            }
            self.trampolines.reruns.insert(tid, (site, self.last_board_call));
            let actions = vec![
                Action::SetSyscallSelector { slot, block: false },
                Action::SetRegisters { tid, regs: rewound(&stop.regs) },
                Action::Continue { tid, signal: None },
            ];
            return (Thread::Running, actions);
        }

        let native = syscall_arch(&stop) == AUDIT_ARCH_X86_64;
        let mut actions = Vec::new();
        if native {
            // NOTE: 32-bit system calls (int 0x80) have other numbers, which are not checked.
            self.check_syscall_entry(tid, &Registers { orig_rax: stop.regs.rax, ..stop.regs });
            if stop.regs.rax == SYS_RT_SIGACTION && stop.regs.rdi == SIGSYS as u64 && stop.regs.rsi != 0 {
                actions.extend(self.turn_dispatch_off(tid));
            }
            // The SIGSYS of this stop unblocked SIGSYS if the thread had blocked it.
            if self.sigsys_blocked.contains(&tid) {
                actions.push(Action::BlockSignal { tid, signal: SIGSYS });
            }
            if stop.regs.rax == SYS_RT_SIGPROCMASK && stop.regs.rsi != 0 {
                let read = Action::ReadMemory { tid, addr: stop.regs.rsi, len: SIGSET_LEN };
                actions.push(read);
                return (Thread::ReadingSignalMask(stop), actions);
            }
        }
        self.run_blocked_syscall(stop, slot, exempt, native, actions)
    }

    /// Follows the thread's SIGSYS block through the `rt_sigprocmask` it stopped at, given the
    /// signal set it passes, then runs that system call.
    pub(super) fn on_signal_mask(&mut self, stop: SignalStop, set: Option<Vec<u8>>) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let sigsys = set.as_deref().and_then(|bytes| bytes.get(..8)).map(|bytes| {
            let set = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
            set & (1 << (SIGSYS - 1)) != 0
        });
        match (stop.regs.rdi, sigsys) {
            (SIG_BLOCK, Some(true)) | (SIG_SETMASK, Some(true)) => {
                self.sigsys_blocked.insert(tid);
            }
            (SIG_UNBLOCK, Some(true)) | (SIG_SETMASK, Some(false)) => {
                self.sigsys_blocked.remove(&tid);
            }
            _ => {}
        }
        match (self.slots.get(&tid).copied(), self.exempt) {
            (Some(slot), Some(exempt)) => self.run_blocked_syscall(stop, slot, exempt, true, Vec::new()),
            _ => (Thread::Running, vec![Action::SetRegisters { tid, regs: rewound(&stop.regs) }, Action::Continue { tid, signal: None }]),
        }
    }

    /// Runs a checked system call from its site's trampoline, or steps it.
    fn run_blocked_syscall(
        &mut self,
        stop: SignalStop,
        slot: u16,
        exempt: crate::event::PageRange,
        native: bool,
        mut actions: Vec<Action>,
    ) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let site = stop.regs.rip;
        let trampoline = if native { self.trampoline(exempt, site) } else { None };
        match trampoline {
            Some((address, code)) => {
                actions.extend(code.map(|bytes| Action::WriteMemory { tid, addr: address, bytes }));
                let regs = Registers { rip: address, ..stop.regs };
                actions.push(Action::SetRegisters { tid, regs });
                actions.push(Action::Continue { tid, signal: None });
                (Thread::Running, actions)
            }
            None => {
                actions.extend([
                    Action::SetSyscallSelector { slot, block: false },
                    Action::SetRegisters { tid, regs: rewound(&stop.regs) },
                    Action::Step { tid, signal: None },
                ]);
                let step = SystemCallStep { slot, flags: stop.regs.eflags, number: stop.regs.rax, native };
                (Thread::InSystemCall(step), actions)
            }
        }
    }

    /// Opens every selector for the rest of the call, because the native code is about to
    /// set a SIGSYS disposition. The kernel would reset that handler or ignore the first time
    /// it forced a SIGSYS while SIGSYS is blocked, and the program may use syscall user
    /// dispatch itself.
    fn turn_dispatch_off(&mut self, tid: i32) -> Vec<Action> {
        let Some(call) = self.call.as_mut() else { return Vec::new() };
        call.dispatch_off = true;
        warn!(tid, "the native code sets a SIGSYS disposition: system calls for the rest of this call are not checked");
        self.slots.values().map(|&slot| Action::SetSyscallSelector { slot, block: false }).collect()
    }

    /// Returns the trampoline for the `syscall` site that returns to `site`, with its code
    /// when it still has to be written, or `None` when the exempt code is full.
    fn trampoline(&mut self, exempt: crate::event::PageRange, site: u64) -> Option<(u64, Option<Vec<u8>>)> {
        if let Some(&address) = self.trampolines.by_site.get(&site) {
            return Some((address, None));
        }
        let index = self.trampolines.by_site.len() as u64 + 1;
        let address = exempt.start.checked_add(index.checked_mul(TRAMPOLINE_LEN)?)?;
        if address.checked_add(TRAMPOLINE_LEN)? > exempt.end() {
            if !self.trampolines.full {
                warn!(site, "no room for more system-call trampolines: system calls from new sites are stepped");
                self.trampolines.full = true;
            }
            return None;
        }
        self.trampolines.by_site.insert(site, address);
        self.trampolines.by_address.insert(address, site);
        Some((address, Some(trampoline_code(site))))
    }

    /// Handles a signal stop of a thread that steps a system call: the trap after it blocks
    /// the selector again. A signal that arrived meanwhile is delivered with the step going
    /// on, and the trap that reports its handler's frame is stepped past.
    pub(super) fn on_system_call_signal(&mut self, step: SystemCallStep, stop: SignalStop) -> (Thread, Vec<Action>) {
        let tid = stop.tid;
        let slot = step.slot;
        let is_trap = stop.info.signo == SIGTRAP && stop.info.code > 0;
        if is_trap && stop.info.code == TRAP_HANDLER_ENTERED {
            return (Thread::InSystemCall(step), vec![Action::Step { tid, signal: None }]);
        }
        if !is_trap || !matches!(stop.info.code, TRAP_TRACE | TRAP_BRKPT) {
            return (Thread::InSystemCall(step), vec![Action::Step { tid, signal: Some(stop.info) }]);
        }
        let mut actions = Vec::new();
        // `syscall` saves the flags in r11, the step's trap flag among them. After the calls
        // that load other registers, r11 is the program's own value and stays.
        let saved_flags = step.native && !matches!(step.number, SYS_RT_SIGRETURN | SYS_EXECVE | SYS_EXECVEAT);
        if saved_flags && stop.regs.r11 & TRAP_FLAG != 0 && step.flags & TRAP_FLAG == 0 {
            let regs = Registers { r11: stop.regs.r11 & !TRAP_FLAG, ..stop.regs };
            actions.push(Action::SetRegisters { tid, regs });
        }
        if self.call.as_ref().is_some_and(|call| call.board.is_some() && !call.dispatch_off) {
            actions.push(Action::SetSyscallSelector { slot, block: true });
            // The program may be ending the call and opening every selector right now.
            self.maybe_stale.insert(slot);
        }
        if self.world_stopped() {
            return (Thread::Held(Held { stopped: true, ..Held::default() }), actions);
        }
        actions.push(Action::Continue { tid, signal: None });
        (Thread::Running, actions)
    }
}
