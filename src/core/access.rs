//! Stepping one faulting instruction: open its traced pages, step it, close them, resume.
//!
//! With protection keys the pages are opened for the faulting thread alone, by its PKRU:
//!
//! ```text
//! fault ─► SetKeyRights(read-write) + Step ─► trap (the instruction ran)
//!       ─► SetKeyRights(no access) + Continue
//! ```
//!
//! With `mprotect` the child runs the system call itself, from its `syscall` gadget:
//!
//! ```text
//! fault ─► for each run: SetRegisters(gadget: mprotect(run, RW)) + Step ─► trap
//!       ─► SetRegisters(fault registers) + Step ─► trap (the instruction ran)
//!       ─► for each run: SetRegisters(gadget: mprotect(run, NONE)) + Step ─► trap
//!       ─► SetRegisters(registers after the instruction) + Continue
//! ```
//!
//! An instruction whose write depends on data (a possible write) is first stepped with its
//! pages open read-only. If it completes, it wrote nothing and its possible writes are dropped;
//! if it faults on one of those pages, it writes: the pages are reopened read-write, the
//! instruction restarts (faults are precise, so nothing of it has happened yet) and its
//! possible writes are recorded as certain.

use super::pages::merge_runs;
use super::{Action, Call, Disposition, KeyRights, Report, SigInfo, SignalStop, Thread};
use super::{SIGBUS, SIGFPE, SIGILL, SIGSEGV, SIGTRAP, TRAP_BRKPT, TRAP_TRACE};
use crate::decode::{decode_x86_64, decode_x86_64_with_vectors, Decoded};
use crate::event::{Access, AccessKind, PageRange, UnsupportedInstruction};
use crate::messages::Protection;
use crate::regs::{Registers, VectorRegisters};

/// Linux x86-64 system call number of `mprotect`.
const SYS_MPROTECT: u64 = 10;
const PROT_NONE: u64 = 0;
const PROT_READ: u64 = 0x1;
const PROT_READ_WRITE: u64 = 0x1 | 0x2;
/// How often one instruction may fault on a traced page that was not opened for it before the
/// core gives up on it. Each retry opens one more page, and an instruction reaches at most a
/// few (a `movs` that straddles pages at both ends touches four).
const MAX_EXTRA_PAGES: u8 = 8;
/// Words of the comparison protocol's callback stack zeroed before each open and close:
/// 1024 bytes.
const ZEROED_STACK_WORDS: u32 = 128;

/// The state of one faulting instruction while it is being stepped.
#[derive(Debug)]
pub(crate) struct AccessStep {
    tid: i32,
    protection: Protection,
    /// Registers at the fault: the instruction restarts from them.
    fault_regs: Registers,
    /// The accesses to record once the instruction has run.
    accesses: Vec<Access>,
    /// The traced pages the instruction needs open (with `mprotect` only).
    runs: Vec<PageRange>,
    phase: Phase,
    /// Registers after the instruction ran (or the fault registers, when it crashed).
    resume_regs: Registers,
    /// Signals that arrived while pages were open, to deliver after they are closed.
    deferred: Vec<SigInfo>,
    extra_pages: u8,
    /// The pages are opened read-only to learn whether a possible write happens.
    probing_write: bool,
    /// Width of the flags image the instruction pushes (`pushf`/`pushfq`), which the step's
    /// trap flag would otherwise leak into.
    pushed_flags: Option<usize>,
    /// The call the instruction faulted in has ended, so the step records nothing, even if
    /// another call has started since.
    call_ended: bool,
    /// The fault of the stepped instruction itself, while the program's disposition for its
    /// signal is read: it decides whether the fault is reported as a crash.
    crash: Option<SignalStop>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Opening `runs[index]` with `mprotect`.
    Opening(usize),
    /// The instruction itself is being stepped.
    Instruction,
    /// Closing `runs[index]` with `mprotect`.
    Closing(usize),
}

/// The outcome of decoding a fault.
pub(super) enum Started {
    /// The pages are being opened; execute these actions.
    Stepping(AccessStep, Vec<Action>),
    /// The decoder needs the thread's vector registers first.
    NeedsVectors(SignalStop),
}

/// Decodes a fault on a traced page and starts opening the pages it needs.
pub(super) fn start(call: &mut Call, stop: SignalStop, vectors: Option<&VectorRegisters>) -> Started {
    let decoded = match vectors {
        Some(vectors) => decode_x86_64_with_vectors(&stop.code, &stop.regs, vectors),
        None => decode_x86_64(&stop.code, &stop.regs),
    };
    let mut runs = vec![call.pages.page_of(stop.info.addr)];
    let accesses = match decoded {
        Decoded::Instruction(instruction) => {
            let traced: Vec<Access> =
                instruction.accesses.into_iter().filter(|access| call.pages.touches(access)).collect();
            if traced.is_empty() {
                call.trace.unsupported.push(UnsupportedInstruction {
                    addr: stop.regs.rip,
                    text: instruction.text,
                    reason: format!("decoded no access to the faulting address {:#x}", stop.info.addr),
                });
            }
            for access in &traced {
                merge_runs(&mut runs, &call.pages.traced_pages_of(access.addr, access.end()));
            }
            traced
        }
        Decoded::Unsupported(unsupported) => {
            call.trace.unsupported.push(unsupported);
            Vec::new()
        }
        Decoded::NeedsVectorRegisters if vectors.is_none() => return Started::NeedsVectors(stop),
        Decoded::NeedsVectorRegisters => {
            call.trace.unsupported.push(UnsupportedInstruction {
                addr: stop.regs.rip,
                text: crate::decode::disassemble_x86_64(&stop.code, stop.regs.rip).unwrap_or_default(),
                reason: "the decoder asked for vector registers twice".to_string(),
            });
            Vec::new()
        }
    };

    let has_possible_write = accesses.iter().any(|access| access.kind == AccessKind::PossibleWrite);
    let has_write = accesses.iter().any(|access| access.kind == AccessKind::Write);
    let mut step = AccessStep {
        tid: stop.tid,
        protection: call.protection,
        fault_regs: stop.regs,
        accesses,
        runs,
        phase: Phase::Opening(0),
        resume_regs: stop.regs,
        deferred: Vec::new(),
        extra_pages: 0,
        probing_write: has_possible_write && !has_write,
        pushed_flags: pushed_flags_width(&stop.code),
        call_ended: false,
        crash: None,
    };
    let actions = step.open();
    Started::Stepping(step, actions)
}

/// Handles a signal stop of a thread that is stepping an instruction.
pub(super) fn on_signal(call: &mut Call, mut step: AccessStep, stop: SignalStop) -> (Thread, Vec<Action>) {
    let tid = step.tid;
    if is_step_trap(&stop.info) {
        return on_trap(call, step, stop.regs);
    }

    let synchronous_fault = matches!(stop.info.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP) && stop.info.code > 0;
    if !synchronous_fault {
        // An asynchronous signal: hold it back and repeat the step it interrupted.
        step.deferred.push(stop.info);
        return (Thread::Stepping(step), vec![Action::Step { tid, signal: None }]);
    }

    let on_traced_page = call.pages.contains(stop.info.addr);
    let on_open_page = match step.protection {
        Protection::Mprotect { .. } => step.runs.iter().any(|run| run.contains(stop.info.addr)),
        Protection::ProtectionKey { .. } => on_traced_page,
    };
    if step.phase == Phase::Instruction && step.probing_write && on_open_page {
        // The read-only probe faulted on an open page, so the instruction writes: reopen
        // the pages read-write and step it again from the fault registers.
        step.probing_write = false;
        for access in &mut step.accesses {
            if access.kind == AccessKind::PossibleWrite {
                access.kind = AccessKind::Write;
            }
        }
        let actions = step.open();
        return (Thread::Stepping(step), actions);
    }
    let mprotect = matches!(step.protection, Protection::Mprotect { .. });
    if step.phase == Phase::Instruction && mprotect && on_traced_page && step.extra_pages < MAX_EXTRA_PAGES {
        // The instruction needs a traced page the decoder did not predict: open it and retry.
        step.extra_pages += 1;
        step.fault_regs = stop.regs;
        let index = step.runs.len();
        step.runs.push(call.pages.page_of(stop.info.addr));
        step.phase = Phase::Opening(index);
        let actions = step.gadget_actions(index, step.open_protection());
        return (Thread::Stepping(step), actions);
    }

    if step.phase == Phase::Instruction {
        if stop.disposition == Disposition::Unknown {
            // Whether this crash ends the program decides whether it is reported.
            let signal = stop.info.signo;
            step.crash = Some(stop);
            return (Thread::Stepping(step), vec![Action::ReadDisposition { tid, signal }]);
        }
        return crash(call, step, stop);
    }

    // The gadget faulted: the child's state is not what the protocol expects.
    let message = format!(
        "signal {} (code {}) at {:#x} while running the mprotect gadget",
        stop.info.signo, stop.info.code, stop.regs.rip
    );
    protocol_failure(call, message)
}

/// Continues a crash of the stepped instruction once the program's disposition for its
/// signal is known. A disposition the step did not request leaves the step as it is.
pub(super) fn on_disposition(call: &mut Call, mut step: AccessStep, disposition: Disposition) -> (Thread, Vec<Action>) {
    match step.crash.take() {
        Some(mut stop) => {
            stop.disposition = disposition;
            crash(call, step, stop)
        }
        None => (Thread::Stepping(step), Vec::new()),
    }
}

/// Closes the pages after the stepped instruction itself crashed, then delivers the fault at
/// it, with a crash report first when the fault ends the program. A divide error comes after
/// the operand was read, so those reads happened.
fn crash(call: &mut Call, mut step: AccessStep, stop: SignalStop) -> (Thread, Vec<Action>) {
    if stop.info.signo == SIGFPE {
        call.record(step.accesses.iter().copied().filter(|access| access.kind == AccessKind::Read));
    }
    let crash = super::is_fatal_fault(&stop).then(|| super::crash_report(&stop, Some(call)));
    step.resume_regs = stop.regs;
    step.deferred.insert(0, stop.info);
    let (next, closing) = step.close();
    let mut actions: Vec<Action> = crash.into_iter().map(|report| Action::Report(Box::new(report))).collect();
    actions.extend(closing);
    (next, actions)
}

/// Handles a crash whose disposition was being read when no call is traced any more. The
/// instruction restarts, as after any fault once the call ended.
pub(super) fn crash_after_call(mut step: AccessStep) -> (Thread, Vec<Action>) {
    match step.crash.take() {
        Some(stop) => on_signal_after_call(step, stop),
        None => (Thread::Stepping(step), Vec::new()),
    }
}

/// Handles a stop of a thread whose call ended while it was stepping: it is let finish its
/// step, recording nothing, then resumed as after any step. Its key is closed, because the
/// child keeps the key for later calls, and a thread left at the gadget gets its own
/// registers back.
pub(super) fn on_signal_after_call(mut step: AccessStep, stop: SignalStop) -> (Thread, Vec<Action>) {
    let tid = step.tid;
    let trap = is_step_trap(&stop.info);
    let synchronous_fault = matches!(stop.info.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP) && stop.info.code > 0;
    if !trap && !synchronous_fault {
        step.deferred.push(stop.info);
        return (Thread::Stepping(step), vec![Action::Step { tid, signal: None }]);
    }
    step.accesses.clear();
    let mut actions = Vec::new();
    step.resume_regs = match step.phase {
        // The gadget ran (or faulted): the instruction runs again, on pages the child has made
        // accessible or that a new call traces.
        Phase::Opening(_) => step.fault_regs,
        Phase::Instruction if trap => {
            actions.extend(step.flags_image_fix(&stop.regs));
            stop.regs
        }
        // The instruction faulted, so it restarts: a crash faults again and is handled as any
        // fault, and a fault on pages a new call protects starts an access of that call.
        Phase::Instruction => stop.regs,
        Phase::Closing(_) => step.resume_regs,
    };
    if let Protection::ProtectionKey { key } = step.protection {
        actions.push(Action::SetKeyRights { tid, key, rights: KeyRights::NoAccess });
    }
    let restore_registers = matches!(step.protection, Protection::Mprotect { .. });
    actions.extend(step.resume_actions(restore_registers));
    (Thread::Running, actions)
}

/// Returns true for the trap that ends a single-step: `TRAP_TRACE`, or `TRAP_BRKPT` after stepping over a
/// `syscall` instruction (Linux reports that step from the system-call exit path).
fn is_step_trap(info: &SigInfo) -> bool {
    info.signo == SIGTRAP && (info.code == TRAP_TRACE || info.code == TRAP_BRKPT)
}

fn on_trap(call: &mut Call, mut step: AccessStep, regs: Registers) -> (Thread, Vec<Action>) {
    match step.phase {
        Phase::Opening(index) | Phase::Closing(index) if regs.rax != 0 => {
            let run = step.runs.get(index).copied().unwrap_or(PageRange { start: 0, len: 0 });
            let errno = (regs.rax as i64).wrapping_neg();
            let message = format!("mprotect({:#x}, {:#x}) failed in the child with errno {errno}", run.start, run.len);
            protocol_failure(call, message)
        }
        Phase::Opening(index) if index + 1 < step.runs.len() => {
            step.phase = Phase::Opening(index + 1);
            let actions = step.gadget_actions(index + 1, step.open_protection());
            (Thread::Stepping(step), actions)
        }
        Phase::Opening(_) => {
            step.phase = Phase::Instruction;
            let actions = vec![Action::SetRegisters { tid: step.tid, regs: step.fault_regs }, Action::Step { tid: step.tid, signal: None }];
            (Thread::Stepping(step), actions)
        }
        Phase::Instruction => {
            if step.probing_write {
                // The instruction ran with its pages read-only, so it wrote none of them.
                step.accesses.retain(|access| access.kind != AccessKind::PossibleWrite);
            }
            call.record(step.accesses.drain(..));
            step.resume_regs = regs;
            let fix_flags = step.flags_image_fix(&regs);
            let (next, mut actions) = step.close();
            actions.splice(0..0, fix_flags);
            (next, actions)
        }
        Phase::Closing(index) if index + 1 < step.runs.len() => {
            step.phase = Phase::Closing(index + 1);
            let actions = step.gadget_actions(index + 1, PROT_NONE);
            (Thread::Stepping(step), actions)
        }
        Phase::Closing(_) => step.resume(),
    }
}

/// Returns the width of the image a `pushf` (0x66 prefix, 2 bytes) or `pushfq` (8 bytes)
/// instruction at the start of `code` pushes, or `None` for any other instruction.
fn pushed_flags_width(code: &[u8]) -> Option<usize> {
    let mut width = 8;
    for &byte in code.iter().take(15) {
        match byte {
            0x66 => width = 2,
            // Segment, lock and repeat prefixes, and REX, do not change pushf.
            0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0xf0 | 0xf2 | 0xf3 | 0x40..=0x4f => {}
            0x9c => return Some(width),
            _ => return None,
        }
    }
    None
}

fn protocol_failure(call: &mut Call, message: String) -> (Thread, Vec<Action>) {
    let report = Report::ProtocolError { message, trace: Some(call.trace.clone()) };
    (Thread::Running, vec![Action::Report(Box::new(report)), Action::Kill])
}

impl AccessStep {
    /// Marks the step as belonging to a call that has ended.
    pub(super) fn end_call(&mut self) {
        self.call_ended = true;
    }

    pub(super) fn call_ended(&self) -> bool {
        self.call_ended
    }

    /// True while the program's disposition for the stepped instruction's crash is read.
    pub(super) fn awaits_disposition(&self) -> bool {
        self.crash.is_some()
    }

    /// Opens the pages for the instruction and steps towards it.
    fn open(&mut self) -> Vec<Action> {
        match self.protection {
            Protection::Mprotect { .. } => {
                self.phase = Phase::Opening(0);
                self.gadget_actions(0, self.open_protection())
            }
            Protection::ProtectionKey { key } => {
                self.phase = Phase::Instruction;
                let rights = if self.probing_write { KeyRights::ReadOnly } else { KeyRights::ReadWrite };
                vec![Action::SetKeyRights { tid: self.tid, key, rights }, Action::Step { tid: self.tid, signal: None }]
            }
        }
    }

    /// Closes the pages after the instruction (or its crash). With a protection key that is
    /// one action and the thread resumes at once.
    fn close(mut self) -> (Thread, Vec<Action>) {
        match self.protection {
            Protection::Mprotect { .. } => {
                self.phase = Phase::Closing(0);
                let actions = self.gadget_actions(0, PROT_NONE);
                (Thread::Stepping(self), actions)
            }
            Protection::ProtectionKey { key } => {
                let mut actions = vec![Action::SetKeyRights { tid: self.tid, key, rights: KeyRights::NoAccess }];
                actions.extend(self.resume_actions(false));
                (Thread::Running, actions)
            }
        }
    }

    /// Restores the registers and resumes the thread.
    fn resume(mut self) -> (Thread, Vec<Action>) {
        let actions = self.resume_actions(true);
        (Thread::Running, actions)
    }

    /// The first held-back signal is delivered by the resume itself; the others are queued to
    /// the thread again first, so the kernel delivers them next and each one stops the thread
    /// like any signal.
    fn resume_actions(&mut self, restore_registers: bool) -> Vec<Action> {
        let tid = self.tid;
        let signal = if self.deferred.is_empty() { None } else { Some(self.deferred.remove(0)) };
        let mut actions = Vec::new();
        if restore_registers {
            actions.push(Action::SetRegisters { tid, regs: self.resume_regs });
        }
        actions.extend(self.deferred.drain(..).map(|info| Action::QueueSignal { tid, info }));
        actions.push(Action::Continue { tid, signal });
        actions
    }

    /// Rewrites the flags image a stepped `pushf`/`pushfq` stored, which has the trap flag of
    /// the single-step set, with the image the program would have pushed: its own flags with
    /// RF and VM cleared, as the CPU stores them.
    fn flags_image_fix(&self, after: &Registers) -> Vec<Action> {
        let Some(width) = self.pushed_flags else {
            return Vec::new();
        };
        let image = self.fault_regs.eflags & 0x00fc_ffff;
        let bytes = image.to_le_bytes()[..width].to_vec();
        vec![Action::WriteMemory { tid: self.tid, addr: after.rsp, bytes }]
    }

    /// Returns the protection the pages are opened with: read-only while probing for a write.
    fn open_protection(&self) -> u64 {
        if self.probing_write {
            PROT_READ
        } else {
            PROT_READ_WRITE
        }
    }

    /// Points the thread at the `syscall` gadget to run `mprotect(runs[index], prot)` and
    /// steps it.
    fn gadget_actions(&self, index: usize, prot: u64) -> Vec<Action> {
        let Protection::Mprotect { syscall_gadget, zeroed_stack } = self.protection else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if let (Some(addr), 0) = (zeroed_stack, index) {
            actions.push(Action::ZeroWords { tid: self.tid, addr, count: ZEROED_STACK_WORDS });
        }
        let run = self.runs.get(index).copied().unwrap_or(PageRange { start: 0, len: 0 });
        actions.extend(mprotect_step(self.tid, &self.fault_regs, syscall_gadget, run, prot));
        actions
    }
}

/// Points thread `tid`, stopped with registers `base`, at the `syscall` gadget to run
/// `mprotect(run, prot)`, and steps it. `orig_rax` is -1 so no system-call restart applies.
pub(super) fn mprotect_step(tid: i32, base: &Registers, gadget: u64, run: PageRange, prot: u64) -> Vec<Action> {
    let regs = Registers {
        rip: gadget,
        rax: SYS_MPROTECT,
        rdi: run.start,
        rsi: run.len,
        rdx: prot,
        orig_rax: u64::MAX,
        ..*base
    };
    vec![Action::SetRegisters { tid, regs }, Action::Step { tid, signal: None }]
}
