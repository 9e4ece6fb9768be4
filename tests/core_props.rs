//! Property tests of the supervisor core: no order of events makes it panic or break the
//! protocol's safety rules.
//!
//! The normal run tries 256 cases per property. For a long search, run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --test core_props
//! ```
//!
//! Two generators feed the core. `random_orders` draws events independently, mixed with
//! short runs in a child's order (start a call, one traced access) so that deep states are
//! reached too. The core therefore also sees events that no real driver would produce: a trap
//! with nothing being stepped, or a message the core did not request. `driver_orders` plays a
//! simulated child that responds to each action with a plausible next event, so long runs of the
//! protocol are covered.
//!
//! [`Checker`] simulates the child's page protection from the actions: a `SetRegisters` that
//! points the child at the `syscall` gadget with `rax` = 10 (`mprotect`) followed by a `Step`
//! runs `mprotect(rdi, rsi, rdx)`, which takes effect when the next step trap reports
//! `rax` = 0. It then checks, after every event:
//! - (a) no `Continue` while a traced page is open;
//! - (b) a `Step` while a traced page is open runs either the gadget or the faulting
//!   instruction, and the instruction only with its faulting page open;
//! - (c) `Exited` and `Killed` produce `Finish`, and every later event produces nothing;
//! - (d) `ReceiveMessage` only follows a protocol-signal stop, `ReadVectorRegisters` only a
//!   fault, and `Reply` only a message;
//! - (e) every `mprotect` the core runs covers traced pages of the running call only, with
//!   `PROT_NONE` or `PROT_READ | PROT_WRITE`;
//! - (f) every signal stop and other stop produces exactly one action that resumes or
//!   kills the child, or asks the driver for the data its handling needs next;
//! - (g) the `Continue` that ends a step delivers a signal held back during it (or the
//!   instruction's own fault). Only one: see `all_signals_held_during_step_delivered`.
//!
//! Rules (a), (b) and (g) stop applying once the core has emitted `Kill`. The kernel delivers
//! SIGKILL before the process returns to user mode, so the child runs no further instruction
//! and an open page can no longer be touched.

use std::collections::BTreeSet;
use std::fmt;

use ffitrace::core::{
    Action, Disposition, ExecEvent, Report, SigInfo, SignalStop, Supervisor, PROTOCOL_COOKIE, PROTOCOL_SIGNAL,
};
use ffitrace::decode::{decode_x86_64, Decoded};
use ffitrace::messages::{ChildMessage, StartReply, StartRequest, SupervisorMessage};
use ffitrace::regs::{Registers, VectorRegisters};
use ffitrace::PageRange;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;

const CHILD_PID: i32 = 4321;
const OTHER_PID: i32 = 999;
const PAGE_SIZE: u64 = 0x1000;
/// Traced pages in the valid start requests: A and B are adjacent, then one untraced page,
/// then C.
const PAGE_A: u64 = 0x7f00_0001_0000;
const PAGE_B: u64 = PAGE_A + PAGE_SIZE;
const PAGE_UNTRACED: u64 = PAGE_A + 2 * PAGE_SIZE;
const PAGE_C: u64 = PAGE_A + 3 * PAGE_SIZE;
const GADGET: u64 = 0x5555_5555_9000;
/// A second gadget address, so that a rejected second start differs from the running call.
const OTHER_GADGET: u64 = 0x5555_5555_8000;
const CODE: u64 = 0x5555_5555_a000;
const OTHER_CODE: u64 = 0x5555_5555_a100;
const PROTOCOL_STOP_RIP: u64 = 0x7fff_f7e4_2000;
const SYSCALL_LEN: u64 = 2;
const SYS_MPROTECT: u64 = 10;
const PROT_READ_WRITE: u64 = 3;

const SIGILL: i32 = 4;
const SIGTRAP: i32 = 5;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGFPE: i32 = 8;
const SIGKILL: i32 = 9;
const SIGSEGV: i32 = 11;
const SIGALRM: i32 = 14;
const SIGCHLD: i32 = 17;
const SI_QUEUE: i32 = -1;
const SI_USER: i32 = 0;
const SI_KERNEL: i32 = 0x80;
const SEGV_MAPERR: i32 = 1;
const SEGV_ACCERR: i32 = 2;
const TRAP_BRKPT: i32 = 1;
const TRAP_TRACE: i32 = 2;
const CLD_EXITED: i32 = 1;
const ENOMEM: u64 = 12;

/// An x86-64 instruction the tests fault with, as `objdump` disassembles its bytes.
#[derive(Clone, Copy, Debug)]
struct Instruction {
    bytes: &'static [u8],
    /// Bytes the instruction reads or writes from `rdi`.
    access_size: u64,
}

const INSTRUCTIONS: &[Instruction] = &[
    // mov eax, dword [rdi]
    Instruction { bytes: &[0x8b, 0x07], access_size: 4 },
    // mov dword [rdi], eax
    Instruction { bytes: &[0x89, 0x07], access_size: 4 },
    // add dword [rdi], eax
    Instruction { bytes: &[0x01, 0x07], access_size: 4 },
    // mov rax, qword [rdi]
    Instruction { bytes: &[0x48, 0x8b, 0x07], access_size: 8 },
    // mov byte [rdi], 0x2a
    Instruction { bytes: &[0xc6, 0x07, 0x2a], access_size: 1 },
    // movups xmm0, xmmword [rdi]
    Instruction { bytes: &[0x0f, 0x10, 0x07], access_size: 16 },
    // xchg qword [rdi], rax
    Instruction { bytes: &[0x48, 0x87, 0x07], access_size: 8 },
    // rep movsb with rcx = 1 and rsi = rdi: one byte read and written.
    Instruction { bytes: &[0xf3, 0xa4], access_size: 1 },
    // vpgatherdd ymm0, [rdi+ymm1*4], ymm2: with the vector registers of `gather_vectors`
    // (every index 0, every mask bit set) all eight elements load the dword at rdi.
    Instruction { bytes: &[0xc4, 0xe2, 0x6d, 0x90, 0x04, 0x8f], access_size: 4 },
    // xsave [rdi]: the decoder cannot size the area, so it predicts no access and the core
    // learns of each further page from a fault while stepping.
    Instruction { bytes: &[0x0f, 0xae, 0x27], access_size: 0x1000 },
];

/// `ud2`: faults with SIGILL, touches no memory.
const UD2: &[u8] = &[0x0f, 0x0b];
/// `vmaskmovps xmm0, xmm1, [rdi]`: loads the elements whose mask bit in xmm1 is set.
const VMASKMOVPS: &[u8] = &[0xc4, 0xe2, 0x71, 0x2c, 0x07];

/// Vector registers for the gather in [`INSTRUCTIONS`]: ymm1 (the indices) is zero and every
/// element of ymm2 (the mask) has its top bit set.
fn gather_vectors() -> VectorRegisters {
    let mask = [u64::MAX, u64::MAX, u64::MAX, u64::MAX, 0, 0, 0, 0];
    VectorRegisters { zmm: vec![[0; 8], [0; 8], mask], k: [0; 8] }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|value| value.parse().ok()).unwrap_or(256);
    // Failing inputs are not saved to a regressions file: a failure found here becomes an
    // ordinary test at the bottom of this file.
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// An address or register value, printed in hex in failure messages.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hex(u64);

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// Instruction bytes, printed as `objdump` does in failure messages.
#[derive(Clone, PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes: Vec<String> = self.0.iter().map(|byte| format!("{byte:02x}")).collect();
        write!(f, "[{}]", bytes.join(" "))
    }
}

/// The page lists a start request may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageChoice {
    /// Page A.
    OnePage,
    /// Pages A and B, one run.
    TwoAdjacent,
    /// Pages A and C, with an untraced page between.
    TwoApart,
    /// Pages A, B and C.
    ThreePages,
    /// No pages at all.
    Empty,
    /// A range that starts in the middle of a page.
    Unaligned,
    /// Two ranges sharing page B.
    Overlapping,
    /// A range that runs past the end of the address space.
    Wrapping,
    /// A page size of 3, which is not a power of two.
    BadPageSize,
    /// Page A, with a null gadget address.
    NullGadget,
}

impl PageChoice {
    fn request(self, gadget: u64) -> StartRequest {
        let page = |start| PageRange { start, len: PAGE_SIZE };
        let (pages, page_size, syscall_gadget) = match self {
            PageChoice::OnePage => (vec![page(PAGE_A)], PAGE_SIZE, gadget),
            PageChoice::TwoAdjacent => (vec![page(PAGE_A), page(PAGE_B)], PAGE_SIZE, gadget),
            PageChoice::TwoApart => (vec![page(PAGE_C), page(PAGE_A)], PAGE_SIZE, gadget),
            PageChoice::ThreePages => {
                (vec![PageRange { start: PAGE_A, len: 2 * PAGE_SIZE }, page(PAGE_C)], PAGE_SIZE, gadget)
            }
            PageChoice::Empty => (Vec::new(), PAGE_SIZE, gadget),
            PageChoice::Unaligned => (vec![page(PAGE_A + 0x800)], PAGE_SIZE, gadget),
            PageChoice::Overlapping => {
                (vec![PageRange { start: PAGE_A, len: 2 * PAGE_SIZE }, page(PAGE_B)], PAGE_SIZE, gadget)
            }
            PageChoice::Wrapping => {
                (vec![PageRange { start: u64::MAX - PAGE_SIZE + 1, len: 2 * PAGE_SIZE }], PAGE_SIZE, gadget)
            }
            PageChoice::BadPageSize => (vec![PageRange { start: 0x3000, len: 0x3000 }], 3, gadget),
            PageChoice::NullGadget => (vec![page(PAGE_A)], PAGE_SIZE, 0),
        };
        StartRequest { pages, page_size, syscall_gadget }
    }
}

/// How a SIGUSR1 stop relates to the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sigusr1 {
    /// Queued by the child with the protocol cookie: a real protocol stop.
    Protocol,
    /// Queued by the child with another value.
    WrongCookie,
    /// Queued with the cookie, but by another process.
    WrongPid,
    /// Sent with `kill` by the program itself.
    FromKill,
}

/// One event in a compact form that prints readably when a property fails.
#[derive(Clone, Debug, PartialEq)]
enum Recipe {
    Start(PageChoice, Hex),
    End,
    SetExitCode(i32),
    Sigusr1(Sigusr1),
    /// A fault-class signal at `rip` for the address `addr`. `rdi` and `rsi` contain the
    /// address the instruction accesses.
    Fault {
        signo: i32,
        code: i32,
        addr: Hex,
        rdi: Hex,
        rip: Hex,
        bytes: Bytes,
        disposition: Disposition,
    },
    /// The trap that ends a single-step. The program is taken to handle SIGTRAP, so a stray
    /// trap is not a crash. `Fault` covers a SIGTRAP at its default disposition.
    Trap {
        code: i32,
        rip: Hex,
        rax: Hex,
    },
    /// A signal unrelated to the protocol and to faults.
    Unrelated {
        signo: i32,
        code: i32,
        pid: i32,
    },
    /// The vector registers, as the driver reads them (see [`gather_vectors`]).
    VectorRegisters,
    MessageLost,
    OtherStop,
    Exited(i32),
    Killed(i32, bool),
}

impl Recipe {
    fn event(&self) -> ExecEvent {
        match self {
            Recipe::Start(pages, gadget) => ExecEvent::Message(ChildMessage::Start(pages.request(gadget.0))),
            Recipe::End => ExecEvent::Message(ChildMessage::End),
            Recipe::SetExitCode(code) => ExecEvent::Message(ChildMessage::SetExitCode(*code)),
            Recipe::Sigusr1(kind) => {
                let (code, pid, value) = match kind {
                    Sigusr1::Protocol => (SI_QUEUE, CHILD_PID, PROTOCOL_COOKIE),
                    Sigusr1::WrongCookie => (SI_QUEUE, CHILD_PID, 7),
                    Sigusr1::WrongPid => (SI_QUEUE, OTHER_PID, PROTOCOL_COOKIE),
                    Sigusr1::FromKill => (SI_USER, CHILD_PID, 0),
                };
                let info = SigInfo { pid, value, ..SigInfo::new(PROTOCOL_SIGNAL, code, 0) };
                signal_stop(info, registers_at(PROTOCOL_STOP_RIP), Vec::new(), Disposition::Caught)
            }
            Recipe::Fault { signo, code, addr, rdi, rip, bytes, disposition } => {
                let regs = Registers { rdi: rdi.0, rsi: rdi.0, rcx: 1, rax: 0x2a, ..registers_at(rip.0) };
                signal_stop(SigInfo::new(*signo, *code, addr.0), regs, bytes.0.clone(), *disposition)
            }
            Recipe::Trap { code, rip, rax } => {
                let regs = Registers { rax: rax.0, ..registers_at(rip.0) };
                signal_stop(SigInfo::new(SIGTRAP, *code, 0), regs, Vec::new(), Disposition::Caught)
            }
            Recipe::Unrelated { signo, code, pid } => {
                let info = SigInfo { pid: *pid, ..SigInfo::new(*signo, *code, 0) };
                signal_stop(info, registers_at(CODE), Vec::new(), Disposition::Caught)
            }
            Recipe::VectorRegisters => ExecEvent::VectorRegisters(gather_vectors()),
            Recipe::MessageLost => ExecEvent::MessageLost { reason: "the channel closed".to_string() },
            Recipe::OtherStop => ExecEvent::OtherStop,
            Recipe::Exited(status) => ExecEvent::Exited { status: *status },
            Recipe::Killed(signal, core_dumped) => ExecEvent::Killed { signal: *signal, core_dumped: *core_dumped },
        }
    }
}

fn signal_stop(info: SigInfo, regs: Registers, code: Vec<u8>, disposition: Disposition) -> ExecEvent {
    ExecEvent::Signal(SignalStop { info, regs, code, disposition })
}

fn registers_at(rip: u64) -> Registers {
    Registers { rip, rsp: 0x7fff_ffff_e000, eflags: 0x246, orig_rax: u64::MAX, ..Registers::default() }
}

fn is_protocol_stop(event: &ExecEvent) -> bool {
    let ExecEvent::Signal(stop) = event else { return false };
    stop.info.signo == PROTOCOL_SIGNAL
        && stop.info.code == SI_QUEUE
        && stop.info.value == PROTOCOL_COOKIE
        && stop.info.pid == CHILD_PID
}

fn is_step_trap(event: &ExecEvent) -> bool {
    let ExecEvent::Signal(stop) = event else { return false };
    stop.info.signo == SIGTRAP && matches!(stop.info.code, TRAP_BRKPT | TRAP_TRACE)
}

/// Returns true for a signal the kernel raises for the instruction the thread executes.
fn is_synchronous_fault(event: &ExecEvent) -> bool {
    let ExecEvent::Signal(stop) = event else { return false };
    matches!(stop.info.signo, SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP) && stop.info.code > 0
}

/// Returns true for the actions that end the handling of a stop: they resume or kill the
/// child, or request the data that handling needs next from the driver.
fn resumes_or_requests(action: &Action) -> bool {
    matches!(
        action,
        Action::Step { .. }
            | Action::Continue { .. }
            | Action::ReceiveMessage
            | Action::ReadVectorRegisters
            | Action::Kill
    )
}

/// Prints an action in one short line for failure messages.
fn describe(action: &Action) -> String {
    match action {
        Action::SetRegisters(regs) => format!(
            "SetRegisters(rip={:#x} rax={:#x} rdi={:#x} rsi={:#x} rdx={:#x})",
            regs.rip, regs.rax, regs.rdi, regs.rsi, regs.rdx
        ),
        Action::Step { signal } => format!("Step({:?})", signal.as_ref().map(|info| info.signo)),
        Action::Continue { signal } => format!("Continue({:?})", signal.as_ref().map(|info| info.signo)),
        Action::Reply(SupervisorMessage::StartReply(reply)) => format!("Reply({reply:?})"),
        Action::Reply(SupervisorMessage::Trace(trace)) => format!("Reply(Trace, {} accesses)", trace.accesses.len()),
        Action::Reply(message) => format!("Reply({message:?})"),
        Action::Report(Report::Crash(crash)) => format!("Report(Crash, signal {})", crash.info.signo),
        Action::Report(Report::DiedDuringCall { status, .. }) => format!("Report(DiedDuringCall, {status:?})"),
        Action::Report(Report::ProtocolError { message, .. }) => format!("Report(ProtocolError, {message:?})"),
        other => format!("{other:?}"),
    }
}

/// Feeds events to a core, simulates the child's page protection from the actions, and
/// checks the properties listed at the top of this file.
struct Checker {
    core: Supervisor,
    /// Every event so far with its actions, for failure messages.
    log: Vec<(Recipe, Vec<String>)>,
    /// The request of the last start message fed, which becomes the running call when the
    /// core replies `Started`.
    last_request: Option<StartRequest>,
    /// The running call's request.
    call: Option<StartRequest>,
    /// Start addresses of the traced pages the child currently has accessible.
    open_pages: BTreeSet<u64>,
    /// The child's registers: set by `SetRegisters`, moved by a step trap.
    child_regs: Option<Registers>,
    /// The `mprotect(start, len, prot)` that the step in flight runs through the gadget.
    pending_mprotect: Option<(u64, u64, u64)>,
    /// `rip` and address of the latest SIGSEGV or SIGBUS raised by the kernel.
    latest_fault: Option<(u64, u64)>,
    /// Signal numbers the core held back while stepping, not yet delivered.
    held_signals: Vec<i32>,
    killed: bool,
    finished: bool,
    coverage: Coverage,
}

/// How often a run reached each path of the protocol, to show that the generators reach
/// deep states and not only the first few events.
#[derive(Clone, Copy, Debug, Default)]
struct Coverage {
    /// `mprotect` calls through the gadget that opened pages.
    pages_opened: u32,
    /// Pages opened while others were already open: a fault the decoder did not predict.
    extra_pages_opened: u32,
    /// Steps of a faulting instruction with its page open.
    instructions_stepped: u32,
    /// Accesses in traces returned to the child.
    accesses_returned: u32,
    /// Signals delivered after a step, with the registers restored.
    deferred_signals_delivered: u32,
    vector_register_reads: u32,
    rejected_starts: u32,
    crash_reports: u32,
    protocol_error_reports: u32,
    died_during_call_reports: u32,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.pages_opened += other.pages_opened;
        self.extra_pages_opened += other.extra_pages_opened;
        self.instructions_stepped += other.instructions_stepped;
        self.accesses_returned += other.accesses_returned;
        self.deferred_signals_delivered += other.deferred_signals_delivered;
        self.vector_register_reads += other.vector_register_reads;
        self.rejected_starts += other.rejected_starts;
        self.crash_reports += other.crash_reports;
        self.protocol_error_reports += other.protocol_error_reports;
        self.died_during_call_reports += other.died_during_call_reports;
    }
}

impl Checker {
    fn new() -> Checker {
        Checker {
            core: Supervisor::new(CHILD_PID),
            log: Vec::new(),
            last_request: None,
            call: None,
            open_pages: BTreeSet::new(),
            child_regs: None,
            pending_mprotect: None,
            latest_fault: None,
            held_signals: Vec::new(),
            killed: false,
            finished: false,
            coverage: Coverage::default(),
        }
    }

    /// Returns a failure that lists every event so far with its actions.
    fn failure(&self, rule: &str) -> TestCaseError {
        let mut text = format!("{rule}\nevents and actions:\n");
        for (index, (recipe, actions)) in self.log.iter().enumerate() {
            text.push_str(&format!("  {index}: {recipe:?}\n      -> {}\n", actions.join(", ")));
        }
        TestCaseError::fail(text)
    }

    fn ensure(&self, condition: bool, rule: impl FnOnce() -> String) -> Result<(), TestCaseError> {
        if condition {
            Ok(())
        } else {
            Err(self.failure(&rule()))
        }
    }

    fn pages_open(&self) -> bool {
        !self.open_pages.is_empty()
    }

    fn feed(&mut self, recipe: &Recipe) -> Result<Vec<Action>, TestCaseError> {
        let event = recipe.event();
        self.observe_event(&event);

        let actions = self.core.handle_event(event.clone());
        self.log.push((recipe.clone(), actions.iter().map(describe).collect()));

        if self.finished {
            self.ensure(actions.is_empty(), || "(c) the core acted after Finish".to_string())?;
            return Ok(actions);
        }
        self.check_actions(&event, &actions)?;
        if let ExecEvent::Signal(stop) = &event {
            let deferred =
                actions == [Action::Step { signal: None }] && !is_step_trap(&event) && !is_synchronous_fault(&event);
            if deferred {
                self.held_signals.push(stop.info.signo);
            }
        }
        for (index, action) in actions.iter().enumerate() {
            let after_set_registers = index > 0 && matches!(actions[index - 1], Action::SetRegisters(_));
            if after_set_registers && matches!(action, Action::Continue { signal: Some(_) }) {
                self.coverage.deferred_signals_delivered += 1;
            }
            self.apply_action(action)?;
        }
        if matches!(event, ExecEvent::Exited { .. } | ExecEvent::Killed { .. }) {
            self.finished = true;
        }
        Ok(actions)
    }

    /// Updates the simulated child for what the event reports it did.
    fn observe_event(&mut self, event: &ExecEvent) {
        if let ExecEvent::Message(ChildMessage::Start(request)) = event {
            self.last_request = Some(request.clone());
        }
        let ExecEvent::Signal(stop) = event else { return };
        if is_step_trap(event) {
            if let Some((start, len, prot)) = self.pending_mprotect.take() {
                if stop.regs.rax == 0 {
                    self.apply_mprotect(start, len, prot);
                }
            }
            self.child_regs = Some(stop.regs);
        } else if is_synchronous_fault(event) {
            // The step in flight faulted, so the instruction did not complete.
            self.pending_mprotect = None;
            if matches!(stop.info.signo, SIGSEGV | SIGBUS) {
                self.latest_fault = Some((stop.regs.rip, stop.info.addr));
            }
        }
    }

    fn apply_mprotect(&mut self, start: u64, len: u64, prot: u64) {
        if prot != 0 {
            self.coverage.pages_opened += 1;
            if self.pages_open() {
                self.coverage.extra_pages_opened += 1;
            }
        }
        let mut page = start;
        while page < start.saturating_add(len) {
            if prot == 0 {
                self.open_pages.remove(&page);
            } else {
                self.open_pages.insert(page);
            }
            page += PAGE_SIZE;
        }
    }

    /// Checks the action list as a whole against the event that produced it.
    fn check_actions(&self, event: &ExecEvent, actions: &[Action]) -> Result<(), TestCaseError> {
        let exit = matches!(event, ExecEvent::Exited { .. } | ExecEvent::Killed { .. });
        let finishes = actions.iter().filter(|action| matches!(action, Action::Finish { .. })).count();
        self.ensure(finishes == usize::from(exit), || format!("(c) {finishes} Finish actions for {event:?}"))?;
        if exit {
            let last_is_finish = matches!(actions.last(), Some(Action::Finish { .. }));
            self.ensure(last_is_finish, || "(c) Finish is not the last action".to_string())?;
        }

        let receives = actions.iter().any(|action| matches!(action, Action::ReceiveMessage));
        self.ensure(!receives || is_protocol_stop(event), || "(d) ReceiveMessage without a protocol stop".to_string())?;
        let reads_vectors = actions.iter().any(|action| matches!(action, Action::ReadVectorRegisters));
        self.ensure(!reads_vectors || is_synchronous_fault(event), || {
            "(d) ReadVectorRegisters without a fault".to_string()
        })?;
        let replies = actions.iter().any(|action| matches!(action, Action::Reply(_)));
        let is_message = matches!(event, ExecEvent::Message(_));
        self.ensure(!replies || is_message, || "(d) Reply without a message".to_string())?;

        if matches!(event, ExecEvent::Signal(_) | ExecEvent::OtherStop) {
            let resumes = actions.iter().filter(|action| resumes_or_requests(action)).count();
            self.ensure(resumes == 1, || format!("(f) a stop handled with {resumes} actions that resume or request"))?;
        }
        Ok(())
    }

    /// Follows one action's effect on the simulated child and checks it.
    fn apply_action(&mut self, action: &Action) -> Result<(), TestCaseError> {
        match action {
            Action::SetRegisters(regs) => self.child_regs = Some(*regs),
            Action::Step { .. } => self.check_step()?,
            Action::Continue { signal } => {
                self.check_held_signal_delivered(signal.as_ref())?;
                self.pending_mprotect = None;
                let open = self.open_pages.iter().map(|page| Hex(*page)).collect::<Vec<_>>();
                self.ensure(self.killed || !self.pages_open(), || {
                    format!("(a) Continue with traced pages {open:?} open")
                })?;
            }
            Action::Kill => {
                self.killed = true;
                self.held_signals.clear();
            }
            Action::Reply(SupervisorMessage::StartReply(StartReply::Started)) => {
                self.call = self.last_request.clone();
            }
            Action::Reply(SupervisorMessage::StartReply(StartReply::Rejected(_))) => self.coverage.rejected_starts += 1,
            Action::Reply(SupervisorMessage::Trace(trace)) => {
                self.coverage.accesses_returned += trace.accesses.len() as u32;
                self.call = None;
            }
            Action::ReadVectorRegisters => self.coverage.vector_register_reads += 1,
            Action::Report(Report::Crash(_)) => self.coverage.crash_reports += 1,
            Action::Report(Report::ProtocolError { .. }) => self.coverage.protocol_error_reports += 1,
            Action::Report(Report::DiedDuringCall { .. }) => self.coverage.died_during_call_reports += 1,
            _ => {}
        }
        Ok(())
    }

    /// Checks that the `Continue` ending a step delivers a signal held back during it, or the
    /// fault of the instruction itself.
    fn check_held_signal_delivered(&mut self, signal: Option<&SigInfo>) -> Result<(), TestCaseError> {
        if self.held_signals.is_empty() || self.killed {
            return Ok(());
        }
        let held = std::mem::take(&mut self.held_signals);
        let delivered = signal.is_some_and(|info| held.contains(&info.signo) || info.code > 0);
        self.ensure(delivered, || format!("(g) signals {held:?} were held during a step and never delivered"))
    }

    fn check_step(&mut self) -> Result<(), TestCaseError> {
        let regs = self.child_regs.unwrap_or_default();
        let gadget = self.call.as_ref().map(|call| call.syscall_gadget);
        let at_gadget = gadget == Some(regs.rip) && regs.rax == SYS_MPROTECT;

        self.pending_mprotect = None;
        if at_gadget {
            self.check_mprotect(&regs)?;
            self.pending_mprotect = Some((regs.rdi, regs.rsi, regs.rdx));
            return Ok(());
        }
        if self.killed || !self.pages_open() {
            return Ok(());
        }
        let Some((fault_rip, fault_addr)) = self.latest_fault else {
            return Err(self.failure("(b) a Step with traced pages open, and no fault to step"));
        };
        self.ensure(regs.rip == fault_rip, || {
            format!("(b) a Step at {:#x} with traced pages open; the fault was at {fault_rip:#x}", regs.rip)
        })?;
        let fault_page = fault_addr & !(PAGE_SIZE - 1);
        self.ensure(self.open_pages.contains(&fault_page), || {
            format!("(b) the faulting instruction is stepped with its page {fault_page:#x} closed")
        })?;
        self.coverage.instructions_stepped += 1;
        Ok(())
    }

    fn check_mprotect(&self, regs: &Registers) -> Result<(), TestCaseError> {
        let (start, len, prot) = (regs.rdi, regs.rsi, regs.rdx);
        self.ensure(prot == 0 || prot == PROT_READ_WRITE, || format!("(e) mprotect with prot {prot:#x}"))?;
        let call = self.call.as_ref().expect("a gadget address implies a running call");
        // No valid request in these tests traces more than three pages.
        let whole_pages = len > 0 && len <= 3 * PAGE_SIZE && start % PAGE_SIZE == 0 && len % PAGE_SIZE == 0;
        let traced = whole_pages
            && start.checked_add(len).is_some_and(|end| {
                (start..end).step_by(PAGE_SIZE as usize).all(|page| call.pages.iter().any(|range| range.contains(page)))
            });
        self.ensure(traced, || format!("(e) mprotect({start:#x}, {len:#x}) is not on traced pages"))
    }
}

fn page_choice() -> impl Strategy<Value = PageChoice> {
    prop_oneof![
        4 => prop_oneof![
            Just(PageChoice::OnePage),
            Just(PageChoice::TwoAdjacent),
            Just(PageChoice::TwoApart),
            Just(PageChoice::ThreePages),
        ],
        1 => prop_oneof![
            Just(PageChoice::Empty),
            Just(PageChoice::Unaligned),
            Just(PageChoice::Overlapping),
            Just(PageChoice::Wrapping),
            Just(PageChoice::BadPageSize),
            Just(PageChoice::NullGadget),
        ],
    ]
}

fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => (prop_oneof![Just(PAGE_A), Just(PAGE_B), Just(PAGE_C)], 0..PAGE_SIZE).prop_map(|(page, offset)| page + offset),
        1 => Just(PAGE_B - 4),
        1 => (0..PAGE_SIZE).prop_map(|offset| PAGE_UNTRACED + offset),
        1 => Just(0),
        1 => any::<u64>(),
    ]
}

fn instruction_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::sample::select(INSTRUCTIONS).prop_map(|instruction| instruction.bytes.to_vec()),
        1 => Just(UD2.to_vec()),
        1 => Just(VMASKMOVPS.to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 0..16),
    ]
}

fn disposition() -> impl Strategy<Value = Disposition> {
    prop_oneof![1 => Just(Disposition::Default), 2 => Just(Disposition::Caught), 1 => Just(Disposition::Ignored)]
}

fn recipe() -> impl Strategy<Value = Recipe> {
    let gadget = prop_oneof![4 => Just(GADGET), 1 => Just(OTHER_GADGET)].prop_map(Hex);
    let rip = prop_oneof![3 => Just(CODE), 1 => Just(OTHER_CODE), 1 => Just(GADGET + SYSCALL_LEN)].prop_map(Hex);
    let trap_rax = prop_oneof![4 => Just(0), 1 => Just(ENOMEM.wrapping_neg()), 1 => any::<u64>()].prop_map(Hex);
    let segv = (
        prop_oneof![3 => Just(SIGSEGV), 1 => Just(SIGBUS)],
        prop_oneof![4 => Just(SEGV_ACCERR), 1 => Just(SEGV_MAPERR), 1 => Just(SI_USER), 1 => Just(SI_QUEUE)],
        address(),
        rip.clone(),
        instruction_bytes(),
        disposition(),
    )
        .prop_map(|(signo, code, addr, rip, bytes, disposition)| Recipe::Fault {
            signo,
            code,
            addr: Hex(addr),
            rdi: Hex(addr),
            rip,
            bytes: Bytes(bytes),
            disposition,
        });
    let other_fault = (
        prop_oneof![Just(SIGILL), Just(SIGFPE), Just(SIGTRAP), Just(SIGABRT)],
        prop_oneof![Just(1), Just(3), Just(4), Just(SI_KERNEL), Just(-6)],
        rip.clone(),
        disposition(),
    )
        .prop_map(|(signo, code, rip, disposition)| Recipe::Fault {
            signo,
            code,
            addr: rip,
            rdi: Hex(0),
            rip,
            bytes: Bytes(UD2.to_vec()),
            disposition,
        });
    let unrelated = prop_oneof![
        Just(Recipe::Unrelated { signo: SIGALRM, code: SI_KERNEL, pid: 0 }),
        Just(Recipe::Unrelated { signo: SIGCHLD, code: CLD_EXITED, pid: OTHER_PID }),
    ];

    prop_oneof![
        3 => (page_choice(), gadget).prop_map(|(pages, gadget)| Recipe::Start(pages, gadget)),
        2 => Just(Recipe::End),
        1 => (-2..300i32).prop_map(Recipe::SetExitCode),
        4 => prop_oneof![
            6 => Just(Sigusr1::Protocol),
            1 => Just(Sigusr1::WrongCookie),
            1 => Just(Sigusr1::WrongPid),
            1 => Just(Sigusr1::FromKill),
        ]
        .prop_map(Recipe::Sigusr1),
        6 => segv,
        1 => other_fault,
        8 => (prop_oneof![Just(TRAP_BRKPT), Just(TRAP_TRACE)], rip, trap_rax).prop_map(|(code, rip, rax)| Recipe::Trap { code, rip, rax }),
        2 => unrelated,
        1 => Just(Recipe::VectorRegisters),
        1 => Just(Recipe::MessageLost),
        1 => Just(Recipe::OtherStop),
        1 => (0..3i32).prop_map(Recipe::Exited),
        1 => (prop_oneof![Just(SIGKILL), Just(SIGSEGV), Just(SIGABRT)], any::<bool>()).prop_map(|(signal, dumped)| Recipe::Killed(signal, dumped)),
    ]
}

/// Generates a run of events in the order a child would produce them: starting a call,
/// ending it, or one traced access with its three step traps. [`recipes`] mixes these runs with single
/// events, so random orders still reach the deep states often.
fn fragment() -> impl Strategy<Value = Vec<Recipe>> {
    let start = (page_choice(), prop_oneof![4 => Just(GADGET), 1 => Just(OTHER_GADGET)])
        .prop_map(|(pages, gadget)| vec![Recipe::Sigusr1(Sigusr1::Protocol), Recipe::Start(pages, Hex(gadget))]);
    let end = Just(vec![Recipe::Sigusr1(Sigusr1::Protocol), Recipe::End]);
    let access = (address(), proptest::sample::select(INSTRUCTIONS), any::<u64>(), disposition()).prop_map(
        |(addr, instruction, value, disposition)| {
            let len = instruction.bytes.len() as u64;
            vec![
                Recipe::Fault {
                    signo: SIGSEGV,
                    code: SEGV_ACCERR,
                    addr: Hex(addr),
                    rdi: Hex(addr),
                    rip: Hex(CODE),
                    bytes: Bytes(instruction.bytes.to_vec()),
                    disposition,
                },
                Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) },
                Recipe::Trap { code: TRAP_TRACE, rip: Hex(CODE + len), rax: Hex(value) },
                Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) },
            ]
        },
    );
    prop_oneof![
        6 => recipe().prop_map(|recipe| vec![recipe]),
        2 => start,
        1 => end,
        3 => access,
    ]
}

/// Up to 60 events: single events of any kind mixed with the runs of [`fragment`].
fn recipes() -> impl Strategy<Value = Vec<Recipe>> {
    proptest::collection::vec(fragment(), 0..40).prop_map(|fragments| {
        let mut recipes: Vec<Recipe> = fragments.into_iter().flatten().collect();
        recipes.truncate(60);
        recipes
    })
}

/// Feeds every recipe in order and checks the actions returned for each.
fn run_random(recipes: &[Recipe]) -> Result<Coverage, TestCaseError> {
    let mut checker = Checker::new();
    for recipe in recipes {
        checker.feed(recipe)?;
    }
    Ok(checker.coverage)
}

/// A source of choices for the simulated child, read from bytes that proptest generates and
/// shrinks. Past the end of the bytes every choice is 0, the most ordinary one.
struct Choices {
    bytes: Vec<u8>,
    position: usize,
}

impl Choices {
    fn next(&mut self) -> u8 {
        let byte = self.bytes.get(self.position).copied().unwrap_or(0);
        self.position += 1;
        byte
    }

    /// Returns a number below `count`.
    fn below(&mut self, count: usize) -> usize {
        usize::from(self.next()) % count
    }

    /// Returns true with a probability of `percent` in 100 (0 always gives false).
    fn percent(&mut self, percent: u8) -> bool {
        let byte = self.next();
        u32::from(byte) * 100 < u32::from(percent) * 256
    }
}

/// A plausible traced program: it responds to each of the core's actions with the event a real
/// child would produce next, and keeps to the protocol itself.
struct SimulatedChild {
    choices: Choices,
    /// The message sent just before the latest protocol stop.
    sent: Option<Recipe>,
    /// The pages of the latest start request the core received.
    requested_pages: Option<Vec<PageRange>>,
    /// The pages of the call the child believes is running.
    call_pages: Option<Vec<PageRange>>,
    /// The traced access the child is making: its `rdi` and instruction.
    access: Option<(u64, &'static Instruction)>,
    /// The program's SIGSEGV disposition, fixed for the run.
    segv_disposition: Disposition,
}

impl SimulatedChild {
    /// Returns the event after the core's `actions`, or `None` once the child is gone.
    fn next(&mut self, checker: &Checker, actions: &[Action]) -> Result<Option<Recipe>, TestCaseError> {
        for action in actions {
            match action {
                Action::Reply(SupervisorMessage::StartReply(StartReply::Started)) => {
                    self.call_pages = self.requested_pages.take();
                }
                Action::Reply(SupervisorMessage::Trace(_)) => self.call_pages = None,
                _ => {}
            }
        }
        let last =
            actions.iter().rev().find(|action| resumes_or_requests(action) || matches!(action, Action::Finish { .. }));
        let recipe = match last {
            Some(Action::Finish { .. }) => return Ok(None),
            Some(Action::ReadVectorRegisters) => Recipe::VectorRegisters,
            Some(Action::Kill) => Recipe::Killed(SIGKILL, false),
            Some(Action::ReceiveMessage) => self.receive(),
            Some(Action::Step { .. }) => self.step(checker),
            Some(Action::Continue { signal }) => self.run(checker, signal.as_ref()),
            _ => return Err(checker.failure("the core left the stopped child without resuming it")),
        };
        Ok(Some(recipe))
    }

    fn receive(&mut self) -> Recipe {
        let Some(message) = self.sent.take() else { return Recipe::MessageLost };
        if self.choices.percent(3) {
            return Recipe::MessageLost;
        }
        if let Recipe::Start(choice, gadget) = &message {
            self.requested_pages = Some(choice.request(gadget.0).pages);
        }
        message
    }

    /// Returns the event after the child runs one instruction: the gadget's `syscall`, or the
    /// traced access.
    fn step(&mut self, checker: &Checker) -> Recipe {
        let regs = checker.child_regs.unwrap_or_default();
        if self.choices.percent(6) {
            return Recipe::Unrelated { signo: SIGALRM, code: SI_KERNEL, pid: 0 };
        }
        if self.choices.percent(2) {
            return Recipe::Killed(SIGKILL, false);
        }
        if self.choices.percent(2) {
            // A group-stop or ptrace event stop; the step has not run yet.
            return Recipe::OtherStop;
        }
        if regs.rip == GADGET {
            let rax = if self.choices.percent(3) { ENOMEM.wrapping_neg() } else { 0 };
            return Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(rax) };
        }
        let Some((rdi, instruction)) = self.access else {
            return Recipe::Trap { code: TRAP_TRACE, rip: Hex(regs.rip + 1), rax: Hex(regs.rax) };
        };
        if self.choices.percent(3) {
            // The instruction also touches an unmapped address.
            return self.fault(SEGV_MAPERR, 0, instruction);
        }
        if let Some(closed) = self.first_closed_page(checker, rdi, instruction) {
            return self.fault(SEGV_ACCERR, closed, instruction);
        }
        self.access = None;
        let len = instruction.bytes.len() as u64;
        Recipe::Trap { code: TRAP_TRACE, rip: Hex(CODE + len), rax: Hex(0x2a) }
    }

    /// Returns the first address of the access that lies on a traced page the child has
    /// closed.
    fn first_closed_page(&self, checker: &Checker, rdi: u64, instruction: &Instruction) -> Option<u64> {
        let pages = self.call_pages.as_ref()?;
        let end = rdi + instruction.access_size;
        let mut page = rdi & !(PAGE_SIZE - 1);
        while page < end {
            let traced = pages.iter().any(|range| range.contains(page));
            if traced && !checker.open_pages.contains(&page) {
                return Some(page.max(rdi));
            }
            page += PAGE_SIZE;
        }
        None
    }

    /// Builds a SIGSEGV at `addr` raised by the instruction at [`CODE`]. Its `rdi` is the
    /// start of the access in progress, or `addr` when there is none.
    fn fault(&self, code: i32, addr: u64, instruction: &Instruction) -> Recipe {
        let rdi = self.access.map_or(addr, |(rdi, _)| rdi);
        Recipe::Fault {
            signo: SIGSEGV,
            code,
            addr: Hex(addr),
            rdi: Hex(rdi),
            rip: Hex(CODE),
            bytes: Bytes(instruction.bytes.to_vec()),
            disposition: self.segv_disposition,
        }
    }

    /// Returns the child's next stop after it resumes and receives `signal`.
    fn run(&mut self, checker: &Checker, signal: Option<&SigInfo>) -> Recipe {
        if let Some(info) = signal.filter(|info| info.signo == SIGSEGV) {
            if self.segv_disposition == Disposition::Default {
                return Recipe::Killed(info.signo, true);
            }
            // The program's handler jumps out of the faulting code.
            self.access = None;
        }
        if let Some((rdi, instruction)) = self.access {
            // The access was not stepped: the instruction runs again and faults again.
            if let Some(closed) = self.first_closed_page(checker, rdi, instruction) {
                return self.fault(SEGV_ACCERR, closed, instruction);
            }
            self.access = None;
        }
        match self.choices.below(20) {
            0..=8 if self.call_pages.is_some() => self.traced_access(),
            0..=12 => self.send_message(),
            13 => self.fault(SEGV_MAPERR, 0, &INSTRUCTIONS[0]),
            14 => Recipe::Unrelated { signo: SIGALRM, code: SI_KERNEL, pid: 0 },
            15 => Recipe::Unrelated { signo: SIGCHLD, code: CLD_EXITED, pid: OTHER_PID },
            16 => Recipe::Sigusr1(Sigusr1::FromKill),
            17 => Recipe::OtherStop,
            18 => Recipe::Exited(i32::from(self.choices.next() % 3)),
            _ => self.send_message(),
        }
    }

    fn traced_access(&mut self) -> Recipe {
        let pages = self.call_pages.clone().unwrap_or_default();
        let range = pages[self.choices.below(pages.len())];
        let page = range.start + PAGE_SIZE * self.choices.below((range.len / PAGE_SIZE) as usize) as u64;
        let instruction = &INSTRUCTIONS[self.choices.below(INSTRUCTIONS.len())];
        let offset = match self.choices.below(4) {
            0 => 0,
            1 => PAGE_SIZE - 4,
            2 => 0x800,
            _ => u64::from(self.choices.next()) * 8,
        };
        self.access = Some((page + offset, instruction));
        self.fault(SEGV_ACCERR, page + offset, instruction)
    }

    fn send_message(&mut self) -> Recipe {
        let in_call = self.call_pages.is_some();
        let message = match self.choices.below(10) {
            0..=5 if in_call => Recipe::End,
            0..=5 => {
                let choices =
                    [PageChoice::OnePage, PageChoice::TwoAdjacent, PageChoice::TwoApart, PageChoice::ThreePages];
                Recipe::Start(choices[self.choices.below(choices.len())], Hex(GADGET))
            }
            6 => Recipe::Start(PageChoice::Unaligned, Hex(GADGET)),
            7 => Recipe::Start(PageChoice::OnePage, Hex(OTHER_GADGET)),
            8 => Recipe::End,
            _ => Recipe::SetExitCode(i32::from(self.choices.next())),
        };
        self.sent = Some(message);
        Recipe::Sigusr1(Sigusr1::Protocol)
    }
}

/// Plays the simulated child against the core for up to `max_events` events.
fn run_driver(bytes: Vec<u8>, max_events: usize) -> Result<Coverage, TestCaseError> {
    let mut choices = Choices { bytes, position: 0 };
    let segv_disposition = if choices.percent(50) { Disposition::Caught } else { Disposition::Default };
    let mut child =
        SimulatedChild { choices, sent: None, requested_pages: None, call_pages: None, access: None, segv_disposition };
    let mut checker = Checker::new();

    let mut recipe = child.send_message();
    for _ in 0..max_events {
        let actions = checker.feed(&recipe)?;
        match child.next(&checker, &actions)? {
            Some(next) => recipe = next,
            None => break,
        }
    }
    Ok(checker.coverage)
}

/// Sums the coverage of `cases` runs of `run` on values of `strategy` from a fixed seed.
fn total_coverage<S: Strategy>(
    strategy: S,
    cases: usize,
    run: impl Fn(S::Value) -> Result<Coverage, TestCaseError>,
) -> Coverage {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut total = Coverage::default();
    for _ in 0..cases {
        let value = strategy.new_tree(&mut runner).expect("the strategy generates a value").current();
        let coverage = run(value).unwrap_or_else(|failure| panic!("a property failed: {failure}"));
        total.add(&coverage);
    }
    total
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_orders(recipes in recipes()) {
        run_random(&recipes)?;
    }

    #[test]
    fn driver_orders(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        run_driver(bytes, 200)?;
    }
}

/// Returns true if the decoder requests the vector registers to decode the gather.
fn decoder_needs_vectors_for_gather() -> bool {
    let gather = INSTRUCTIONS.iter().find(|instruction| instruction.bytes[0] == 0xc4).expect("the gather is listed");
    let regs = Registers { rdi: PAGE_A, ..registers_at(CODE) };
    matches!(decode_x86_64(gather.bytes, &regs), Decoded::NeedsVectorRegisters)
}

#[test]
fn driver_orders_reach_every_path() {
    let coverage = total_coverage(proptest::collection::vec(any::<u8>(), 0..400), 256, |bytes| run_driver(bytes, 200));
    eprintln!("{coverage:#?}");
    assert!(coverage.pages_opened > 0, "no access opened its pages");
    assert!(coverage.extra_pages_opened > 0, "no unpredicted page was opened");
    assert!(coverage.instructions_stepped > 0, "no faulting instruction was stepped");
    assert!(coverage.accesses_returned > 0, "no trace returned an access");
    assert!(coverage.deferred_signals_delivered > 0, "no deferred signal was delivered");
    if decoder_needs_vectors_for_gather() {
        assert!(coverage.vector_register_reads > 0, "no vector registers were read");
    }
    assert!(coverage.rejected_starts > 0, "no start request was rejected");
    assert!(coverage.crash_reports > 0, "no crash was reported");
    assert!(coverage.protocol_error_reports > 0, "no protocol error was reported");
    assert!(coverage.died_during_call_reports > 0, "no death during a call was reported");
}

#[test]
fn random_orders_reach_stepping() {
    let coverage = total_coverage(recipes(), 256, |recipes| run_random(&recipes));
    eprintln!("{coverage:#?}");
    assert!(coverage.pages_opened > 0, "no access opened its pages");
    assert!(coverage.instructions_stepped > 0, "no faulting instruction was stepped");
    assert!(coverage.crash_reports > 0, "no crash was reported");
    assert!(coverage.protocol_error_reports > 0, "no protocol error was reported");
    assert!(coverage.died_during_call_reports > 0, "no death during a call was reported");
}

/// A stop that is not a signal delivery, arriving while the faulting instruction is being
/// stepped, must not resume the child freely: its page is open.
#[test]
fn other_stop_during_step_repeats_step() {
    let recipes = [
        Recipe::Sigusr1(Sigusr1::Protocol),
        Recipe::Start(PageChoice::OnePage, Hex(GADGET)),
        Recipe::Fault {
            signo: SIGSEGV,
            code: SEGV_ACCERR,
            addr: Hex(PAGE_A),
            rdi: Hex(PAGE_A),
            rip: Hex(CODE),
            bytes: Bytes(INSTRUCTIONS[0].bytes.to_vec()),
            disposition: Disposition::Default,
        },
        Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) },
        Recipe::OtherStop,
    ];
    let mut checker = Checker::new();
    for recipe in &recipes[..4] {
        checker.feed(recipe).unwrap_or_else(|failure| panic!("{failure}"));
    }
    let actions = checker.feed(&recipes[4]).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(actions, vec![Action::Step { signal: None }]);
}

/// Once the core has emitted `Finish`, no event makes it act again.
#[test]
fn events_after_finish_ignored() {
    let mut checker = Checker::new();
    checker.feed(&Recipe::Exited(0)).unwrap_or_else(|failure| panic!("{failure}"));
    for recipe in [Recipe::Sigusr1(Sigusr1::Protocol), Recipe::OtherStop, Recipe::Killed(SIGKILL, false)] {
        let actions = checker.feed(&recipe).unwrap_or_else(|failure| panic!("{failure}"));
        assert!(actions.is_empty(), "{recipe:?} produced {actions:?}");
    }
}

/// A signal stop while the core waits for vector registers drops the pending fault and is
/// handled as any stop inside the call. Vector registers arriving later are ignored, so the
/// child is never set back to the stale fault's registers.
#[test]
fn signal_while_fetching_vectors_drops_fault() {
    if !decoder_needs_vectors_for_gather() {
        return;
    }
    let gather = INSTRUCTIONS.iter().find(|instruction| instruction.bytes[0] == 0xc4).expect("the gather is listed");
    let fault = |addr: u64, bytes: &[u8], disposition| Recipe::Fault {
        signo: SIGSEGV,
        code: SEGV_ACCERR,
        addr: Hex(addr),
        rdi: Hex(addr),
        rip: Hex(CODE),
        bytes: Bytes(bytes.to_vec()),
        disposition,
    };
    let mut checker = Checker::new();
    let mut feed = |recipe: Recipe| checker.feed(&recipe).unwrap_or_else(|failure| panic!("{failure}"));
    feed(Recipe::Sigusr1(Sigusr1::Protocol));
    feed(Recipe::Start(PageChoice::TwoAdjacent, Hex(GADGET)));
    assert_eq!(feed(fault(PAGE_A, gather.bytes, Disposition::Caught)), vec![Action::ReadVectorRegisters]);

    let actions = feed(fault(PAGE_UNTRACED, INSTRUCTIONS[0].bytes, Disposition::Default));
    assert!(matches!(actions[0], Action::Report(Report::Crash(_))), "the untraced fault is a crash: {actions:?}");
    assert!(matches!(actions[1], Action::Continue { signal: Some(_) }), "the crash is delivered: {actions:?}");
    assert!(feed(Recipe::VectorRegisters).is_empty(), "late vector registers restarted the dropped fault");
}

/// Two different signals arriving while one instruction is stepped must both reach the
/// program: the first with the final `Continue`, the others queued to the thread again.
#[test]
fn all_signals_held_during_step_delivered() {
    let mut checker = Checker::new();
    let mut delivered = Vec::new();
    let recipes = [
        Recipe::Sigusr1(Sigusr1::Protocol),
        Recipe::Start(PageChoice::OnePage, Hex(GADGET)),
        Recipe::Fault {
            signo: SIGSEGV,
            code: SEGV_ACCERR,
            addr: Hex(PAGE_A),
            rdi: Hex(PAGE_A),
            rip: Hex(CODE),
            bytes: Bytes(INSTRUCTIONS[0].bytes.to_vec()),
            disposition: Disposition::Default,
        },
        Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) },
        Recipe::Unrelated { signo: SIGALRM, code: SI_KERNEL, pid: 0 },
        Recipe::Unrelated { signo: SIGCHLD, code: CLD_EXITED, pid: OTHER_PID },
        Recipe::Trap { code: TRAP_TRACE, rip: Hex(CODE + 2), rax: Hex(0) },
        Recipe::Trap { code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) },
        // The program runs on and stops again, giving the core a chance at another delivery.
        Recipe::OtherStop,
    ];
    for recipe in &recipes {
        for action in checker.feed(recipe).unwrap_or_else(|failure| panic!("{failure}")) {
            match action {
                Action::Step { signal: Some(info) }
                | Action::Continue { signal: Some(info) }
                | Action::QueueSignal(info) => delivered.push(info.signo),
                _ => {}
            }
        }
    }
    assert!(delivered.contains(&SIGALRM), "SIGALRM was not delivered: {delivered:?}");
    assert!(delivered.contains(&SIGCHLD), "SIGCHLD was not delivered: {delivered:?}");
}
