//! Property tests of the supervisor core: no order of events makes it panic or break the
//! protocol's safety rules.
//!
//! The normal run tries 256 cases per property. For a long search, run:
//!
//! ```text
//! PROPTEST_CASES=100000 cargo test --release --test core_props
//! ```
//!
//! The traced program has up to three threads (the main thread, whose id is the process id,
//! and two more) and may fork. Calls use either `mprotect` or a protection key.
//!
//! Two generators feed the core. `random_orders` draws events independently, mixed with short
//! runs in a program's order (start a call, one traced access, two threads' accesses
//! interleaved, a new thread or process) so that deep states are reached too. The core
//! therefore also receives events that no real driver would produce: a trap with nothing being
//! stepped, or a message the core did not request. Only events the kernel itself never
//! reports are left out, such as a second stop of a thread that has not been resumed (see
//! `run_random`). `driver_orders` plays a simulated program whose tasks respond to each action
//! with a plausible next event, one task at a time in a random order, so long runs of the
//! protocol are covered.
//!
//! [`Checker`] simulates the page protection from the actions. With `mprotect` the protection
//! is the process's: a `SetRegisters` that points a thread at the `syscall` gadget with
//! `rax` = 10 (`mprotect`) followed by a `Step` runs `mprotect(rdi, rsi, rdx)`, which takes
//! effect when that thread's next step trap reports `rax` = 0. With a protection key it is
//! each thread's: `SetKeyRights` sets that thread's PKRU rights for the key. Below, `Continue`
//! stands for `ContinueToSyscall` too. The checker checks, after every event:
//! - (a) no thread runs with traced pages open to it: no `Continue` of a thread whose rights
//!   for the key are not `NoAccess`; with `mprotect`, no `Continue` while a traced page is
//!   open, and every other thread is stopped when a thread opens pages or steps with them open;
//! - (b) a `Step` of a thread with traced pages open to it runs either the gadget or that
//!   thread's faulting instruction, and the instruction only with its faulting page open; with
//!   `mprotect`, no two threads step at the same time;
//! - (c) `Exited` and `Killed` produce `Finish`, and every later event produces nothing;
//! - (d) `ReceiveMessage` only follows a protocol-signal stop, `ReadVectorRegisters` only a
//!   fault of that thread (at once, or when a held thread starts its access), `ReadMemory`
//!   only a fault of that thread, `ReadDisposition` only a stop of that thread for that
//!   signal, and `Reply` only a message; one event gets at most one such request, because the
//!   driver feeds back one event;
//! - (e) every `mprotect` the core runs covers traced pages of the running call only (in a
//!   forked process, of the call it was forked in), with `PROT_NONE`, `PROT_READ` or
//!   `PROT_READ | PROT_WRITE` (only the last in a forked process), and no `PROT_NONE` runs once
//!   the call has ended, when the child has made its pages accessible again; every
//!   `SetKeyRights` opens the key of that call and closes the key it opened;
//! - (f) every stop of a task produces at most one action that resumes or kills it, or asks
//!   for the data its handling needs next. A stop may get none only while another thread
//!   steps, fetches its vector registers, owes a stop after `Interrupt` or has been announced
//!   and not stopped yet, or for a new task whose `NewTask` has not arrived, so no thread is
//!   left stopped for good;
//! - (g) the `Continue` that ends a thread's step delivers a signal held back during it (or
//!   the instruction's own fault), or queues it again. Only one is checked: see
//!   `all_signals_held_during_step_delivered`;
//! - (h) a task the core pointed at the gadget gets other registers back before it is
//!   continued or detached;
//! - (i) `Detach` names only a process the program forked, and `Interrupt` only a running
//!   thread or one announced and not stopped yet;
//! - (j) a process forked during a call (the call running when the process or its parent
//!   first reported it) is detached only with its copy of the traced pages accessible: with a
//!   protection key once its rights are `ReadWrite`, with `mprotect` and `fork` once the gadget
//!   has opened every traced page in it. A `vfork` child shares the program's pages and gets
//!   nothing. A process whose first stop came without registers cannot run the gadget, and
//!   one whose `mprotect` failed is detached as it is.
//!
//! Rules (a), (b), (f), (g), (h), (i) and (j), and the part of (e) about `PROT_NONE` after the
//! call, stop applying once the core has emitted `Kill`. The kernel delivers SIGKILL before the
//! process returns to user mode, so the program runs no further instruction and an open page
//! can no longer be touched. With `mprotect`, rules (a) and (b) also stop applying for the
//! rest of a call in which a thread ended while it stepped with pages open: a thread that is
//! stopped or single-stepping ends only when the whole program does (another thread's
//! `exit_group` or `execve`, or a fatal signal), so no code runs on those pages any more.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

use ffitrace::core::{
    Action, Disposition, ExecEvent, KeyRights, Report, SigInfo, SignalStop, Supervisor, SyscallPhase, TaskKind,
    PROTOCOL_COOKIE, PROTOCOL_SIGNAL, SYS_GETPPID,
};
use ffitrace::decode::{decode_x86_64, Decoded};
use ffitrace::messages::{ChildMessage, Protection, StartReply, StartRequest, SupervisorMessage};
use ffitrace::regs::{Registers, VectorRegisters};
use ffitrace::PageRange;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestCaseError;

/// The program's process id, which is also the id of its main thread.
const CHILD_PID: i32 = 4321;
const MAIN: i32 = CHILD_PID;
const THREAD_2: i32 = 4322;
const THREAD_3: i32 = 4323;
/// The threads the generators use, the main thread first.
const THREADS: [i32; 3] = [MAIN, THREAD_2, THREAD_3];
/// The first id the simulated program gives a forked process. The random generator uses
/// only this one.
const FORKED: i32 = 4400;
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
/// The protection key of the valid start requests.
const KEY: u32 = 1;
const CODE: u64 = 0x5555_5555_a000;
const OTHER_CODE: u64 = 0x5555_5555_a100;
const PROTOCOL_STOP_RIP: u64 = 0x7fff_f7e4_2000;
/// Where a new task makes its first stop: just after the `clone` or `fork` system call.
const CLONE_RETURN_RIP: u64 = 0x7fff_f7e5_1000;
const SYSCALL_LEN: u64 = 2;
const SYS_WRITE: u64 = 1;
const SYS_MPROTECT: u64 = 10;
const SYS_GETPID: u64 = 39;
const PROT_NONE: u64 = 0;
const PROT_READ: u64 = 1;
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
/// `si_code` of a SIGSEGV on a page whose protection key the thread's PKRU denies.
const SEGV_PKUERR: i32 = 4;
const TRAP_BRKPT: i32 = 1;
const TRAP_TRACE: i32 = 2;
const CLD_EXITED: i32 = 1;
const ENOMEM: u64 = 12;

/// Whether an instruction writes the bytes it accesses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writes {
    Never,
    Always,
    /// Only the bytes its mask selects, which the decoder cannot see: a possible write.
    Masked,
}

/// An x86-64 instruction the tests fault with, as `objdump` disassembles its bytes.
#[derive(Clone, Copy, Debug)]
struct Instruction {
    bytes: &'static [u8],
    /// Bytes the instruction reads or writes from `rdi`.
    access_size: u64,
    writes: Writes,
}

const INSTRUCTIONS: &[Instruction] = &[
    // mov eax, dword [rdi]
    Instruction { bytes: &[0x8b, 0x07], access_size: 4, writes: Writes::Never },
    // mov dword [rdi], eax
    Instruction { bytes: &[0x89, 0x07], access_size: 4, writes: Writes::Always },
    // add dword [rdi], eax
    Instruction { bytes: &[0x01, 0x07], access_size: 4, writes: Writes::Always },
    // mov rax, qword [rdi]
    Instruction { bytes: &[0x48, 0x8b, 0x07], access_size: 8, writes: Writes::Never },
    // mov byte [rdi], 0x2a
    Instruction { bytes: &[0xc6, 0x07, 0x2a], access_size: 1, writes: Writes::Always },
    // movups xmm0, xmmword [rdi]
    Instruction { bytes: &[0x0f, 0x10, 0x07], access_size: 16, writes: Writes::Never },
    // xchg qword [rdi], rax
    Instruction { bytes: &[0x48, 0x87, 0x07], access_size: 8, writes: Writes::Always },
    // rep movsb with rcx = 1 and rsi = rdi: one byte read and written.
    Instruction { bytes: &[0xf3, 0xa4], access_size: 1, writes: Writes::Always },
    // vpgatherdd ymm0, [rdi+ymm1*4], ymm2: with the vector registers of `gather_vectors`
    // (every index 0, every mask bit set) all eight elements load the dword at rdi.
    Instruction { bytes: &[0xc4, 0xe2, 0x6d, 0x90, 0x04, 0x8f], access_size: 4, writes: Writes::Never },
    // xsave [rdi]: the decoder cannot size the area, so it predicts no access and the core
    // learns of each further page from a fault while stepping.
    Instruction { bytes: &[0x0f, 0xae, 0x27], access_size: 0x1000, writes: Writes::Always },
    // maskmovq mm0, mm1: a byte-masked store to [rdi], so the core first steps it with its
    // pages read-only.
    Instruction { bytes: &[0x0f, 0xf7, 0xc1], access_size: 8, writes: Writes::Masked },
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
}

/// The protection a start request names, printed short in failure messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protect {
    /// `mprotect` through the gadget at this address (0 is invalid).
    Gadget(Hex),
    /// This protection key (only 1 to 15 are valid).
    Key(u32),
}

impl Protect {
    fn protection(self) -> Protection {
        match self {
            Protect::Gadget(gadget) => Protection::Mprotect { syscall_gadget: gadget.0, zeroed_stack: None },
            Protect::Key(key) => Protection::ProtectionKey { key },
        }
    }
}

/// Whether a start request lets the supervisor carry out simple accesses itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accesses {
    Stepped,
    Emulated,
}

impl PageChoice {
    fn request(self, protect: Protect, accesses: Accesses) -> StartRequest {
        let page = |start| PageRange { start, len: PAGE_SIZE };
        let (pages, page_size) = match self {
            PageChoice::OnePage => (vec![page(PAGE_A)], PAGE_SIZE),
            PageChoice::TwoAdjacent => (vec![page(PAGE_A), page(PAGE_B)], PAGE_SIZE),
            PageChoice::TwoApart => (vec![page(PAGE_C), page(PAGE_A)], PAGE_SIZE),
            PageChoice::ThreePages => (vec![PageRange { start: PAGE_A, len: 2 * PAGE_SIZE }, page(PAGE_C)], PAGE_SIZE),
            PageChoice::Empty => (Vec::new(), PAGE_SIZE),
            PageChoice::Unaligned => (vec![page(PAGE_A + 0x800)], PAGE_SIZE),
            PageChoice::Overlapping => (vec![PageRange { start: PAGE_A, len: 2 * PAGE_SIZE }, page(PAGE_B)], PAGE_SIZE),
            PageChoice::Wrapping => {
                (vec![PageRange { start: u64::MAX - PAGE_SIZE + 1, len: 2 * PAGE_SIZE }], PAGE_SIZE)
            }
            PageChoice::BadPageSize => (vec![PageRange { start: 0x3000, len: 0x3000 }], 3),
        };
        StartRequest { pages, page_size, protection: protect.protection(), emulate: accesses == Accesses::Emulated }
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
    Start(PageChoice, Protect, Accesses),
    End,
    /// The entry stop of thread `tid`'s end marker, `getppid(PROTOCOL_COOKIE, marked_tid)`;
    /// only a thread's own id makes it the marker.
    EndMarker { tid: i32, marked_tid: i32 },
    SetExitCode(i32),
    /// The child's acknowledgement of the trace it received, sent without a stop.
    TraceReceived,
    /// A SIGUSR1 stop of this thread.
    Sigusr1(i32, Sigusr1),
    /// A fault-class signal of thread `tid` at `rip` for the address `addr`. `rdi` and `rsi`
    /// contain the address the instruction accesses.
    Fault {
        tid: i32,
        signo: i32,
        code: i32,
        addr: Hex,
        rdi: Hex,
        rip: Hex,
        bytes: Bytes,
        disposition: Disposition,
    },
    /// The trap that ends a single-step of `tid`. The program is taken to handle SIGTRAP, so
    /// a stray trap is not a crash. `Fault` covers a SIGTRAP at its default disposition.
    Trap {
        tid: i32,
        code: i32,
        rip: Hex,
        rax: Hex,
    },
    /// A signal unrelated to the protocol and to faults.
    Unrelated {
        tid: i32,
        signo: i32,
        code: i32,
        pid: i32,
    },
    /// The vector registers of this thread, as the driver reads them (see [`gather_vectors`]).
    VectorRegisters(i32),
    /// The program's disposition for the signal of this thread's latest stop.
    Disposition(i32, Disposition),
    /// This many bytes of memory, read for this thread, or `None` when the read failed.
    Memory(i32, Option<usize>),
    /// Whether thread `tid`'s write off the traced pages went through.
    MemoryWritten(i32, bool),
    MessageLost,
    /// A stop of this task that is not a signal delivery, with its `rip` when readable.
    OtherStop(i32, Option<Hex>),
    /// A system-call stop of thread `tid` for the call `number`, whose first two arguments
    /// are `fd` and `buf` (as for `write`).
    Syscall {
        tid: i32,
        phase: SyscallPhase,
        number: u64,
        buf: Hex,
    },
    NewTask {
        parent: i32,
        tid: i32,
        kind: TaskKind,
    },
    TaskExited(i32),
    Exited(i32),
    Killed(i32, bool),
}

impl Recipe {
    fn event(&self) -> ExecEvent {
        match self {
            Recipe::Start(pages, protect, accesses) => {
                ExecEvent::Message(ChildMessage::Start(pages.request(*protect, *accesses)))
            }
            Recipe::End => ExecEvent::Message(ChildMessage::End),
            Recipe::SetExitCode(code) => ExecEvent::Message(ChildMessage::SetExitCode(*code)),
            Recipe::TraceReceived => ExecEvent::Message(ChildMessage::TraceReceived),
            Recipe::Sigusr1(tid, kind) => {
                let (code, pid, value) = match kind {
                    Sigusr1::Protocol => (SI_QUEUE, CHILD_PID, PROTOCOL_COOKIE),
                    Sigusr1::WrongCookie => (SI_QUEUE, CHILD_PID, 7),
                    Sigusr1::WrongPid => (SI_QUEUE, OTHER_PID, PROTOCOL_COOKIE),
                    Sigusr1::FromKill => (SI_USER, CHILD_PID, 0),
                };
                let info = SigInfo { pid, value, ..SigInfo::new(PROTOCOL_SIGNAL, code, 0) };
                signal_stop(*tid, info, registers_at(PROTOCOL_STOP_RIP), Vec::new(), Disposition::Caught)
            }
            Recipe::Fault { tid, signo, code, addr, rdi, rip, bytes, disposition } => {
                let regs = Registers { rdi: rdi.0, rsi: rdi.0, rcx: 1, rax: 0x2a, ..registers_at(rip.0) };
                signal_stop(*tid, SigInfo::new(*signo, *code, addr.0), regs, bytes.0.clone(), *disposition)
            }
            Recipe::Trap { tid, code, rip, rax } => {
                let regs = Registers { rax: rax.0, ..registers_at(rip.0) };
                signal_stop(*tid, SigInfo::new(SIGTRAP, *code, 0), regs, Vec::new(), Disposition::Caught)
            }
            Recipe::Unrelated { tid, signo, code, pid } => {
                let info = SigInfo { pid: *pid, ..SigInfo::new(*signo, *code, 0) };
                signal_stop(*tid, info, registers_at(CODE), Vec::new(), Disposition::Caught)
            }
            Recipe::VectorRegisters(tid) => ExecEvent::VectorRegisters { tid: *tid, vectors: gather_vectors() },
            Recipe::Disposition(tid, disposition) => ExecEvent::Disposition { tid: *tid, disposition: *disposition },
            Recipe::Memory(tid, len) => ExecEvent::Memory { tid: *tid, bytes: len.map(|len| vec![0x5a; len]) },
            Recipe::MemoryWritten(tid, written) => ExecEvent::MemoryWritten { tid: *tid, written: *written },
            Recipe::MessageLost => ExecEvent::MessageLost { reason: "the channel closed".to_string() },
            Recipe::OtherStop(tid, rip) => ExecEvent::OtherStop { tid: *tid, regs: rip.map(|rip| registers_at(rip.0)) },
            Recipe::EndMarker { tid, marked_tid } => {
                let regs = Registers { orig_rax: SYS_GETPPID, rdi: PROTOCOL_COOKIE, rsi: *marked_tid as u64, ..registers_at(CODE) };
                ExecEvent::Syscall { tid: *tid, regs, phase: SyscallPhase::Entry, compat: false }
            }
            Recipe::Syscall { tid, phase, number, buf } => {
                let regs = Registers { orig_rax: *number, rdi: 1, rsi: buf.0, rdx: 8, ..registers_at(CODE) };
                ExecEvent::Syscall { tid: *tid, regs, phase: *phase, compat: false }
            }
            Recipe::NewTask { parent, tid, kind } => ExecEvent::NewTask { parent: *parent, tid: *tid, kind: *kind },
            Recipe::TaskExited(tid) => ExecEvent::TaskExited { tid: *tid },
            Recipe::Exited(status) => ExecEvent::Exited { status: *status },
            Recipe::Killed(signal, core_dumped) => ExecEvent::Killed { signal: *signal, core_dumped: *core_dumped },
        }
    }

    /// Returns the task whose stop this event reports, if it is a stop.
    fn stopped_task(&self) -> Option<i32> {
        match self {
            Recipe::Sigusr1(tid, _)
            | Recipe::Fault { tid, .. }
            | Recipe::Trap { tid, .. }
            | Recipe::Unrelated { tid, .. }
            | Recipe::OtherStop(tid, _)
            | Recipe::EndMarker { tid, .. }
            | Recipe::Syscall { tid, .. } => Some(*tid),
            Recipe::NewTask { parent, .. } => Some(*parent),
            _ => None,
        }
    }
}

/// Returns true for the entry stop of a thread's own end marker.
fn is_end_marker(event: &ExecEvent) -> bool {
    matches!(event, ExecEvent::Syscall { tid, regs, phase: SyscallPhase::Entry, compat: false }
        if regs.orig_rax == SYS_GETPPID && regs.rdi == PROTOCOL_COOKIE && regs.rsi == *tid as u64)
}

fn signal_stop(tid: i32, info: SigInfo, regs: Registers, code: Vec<u8>, disposition: Disposition) -> ExecEvent {
    ExecEvent::Signal(SignalStop { tid, info, regs, code, disposition })
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

/// Returns the task an action names, if any.
fn action_task(action: &Action) -> Option<i32> {
    match action {
        Action::SetRegisters { tid, .. }
        | Action::WriteMemory { tid, .. }
        | Action::ZeroWords { tid, .. }
        | Action::SetKeyRights { tid, .. }
        | Action::SetVectorRegister { tid, .. }
        | Action::Step { tid, .. }
        | Action::QueueSignal { tid, .. }
        | Action::Continue { tid, .. }
        | Action::ContinueToSyscall { tid, .. }
        | Action::Interrupt { tid }
        | Action::Detach { tid }
        | Action::ReadVectorRegisters { tid }
        | Action::ReadMemory { tid, .. }
        | Action::ReadMemoryAsProgram { tid, .. }
        | Action::WriteMemoryAsProgram { tid, .. }
        | Action::ReadDisposition { tid, .. }
        | Action::WatchSystemCalls { tid, .. }
        | Action::BlockSignal { tid, .. } => Some(*tid),
        Action::ReceiveMessage
        | Action::Publish { .. }
        | Action::SetSyscallSelector { .. }
        | Action::PollMessage
        | Action::Reply(_)
        | Action::Report(_)
        | Action::Kill
        | Action::Finish { .. } => None,
    }
}

/// Returns true for the actions that end the handling of a stop of `tid`: they resume or kill
/// it, or request the data that handling needs next from the driver.
fn resumes_or_requests(action: &Action, tid: i32) -> bool {
    match action {
        Action::Step { .. }
        | Action::Continue { .. }
        | Action::ContinueToSyscall { .. }
        | Action::Detach { .. }
        | Action::ReadVectorRegisters { .. }
        | Action::ReadMemory { .. }
        | Action::ReadMemoryAsProgram { .. }
        | Action::WriteMemoryAsProgram { .. }
        | Action::ReadDisposition { .. } => action_task(action) == Some(tid),
        Action::ReceiveMessage | Action::Kill => true,
        _ => false,
    }
}

/// Returns true for the actions that make the driver feed back an event at once.
fn requests_event(action: &Action) -> bool {
    matches!(
        action,
        Action::ReceiveMessage
            | Action::PollMessage
            | Action::ReadVectorRegisters { .. }
            | Action::ReadMemory { .. }
            | Action::ReadMemoryAsProgram { .. }
            | Action::WriteMemoryAsProgram { .. }
            | Action::ReadDisposition { .. }
    )
}

/// Prints an action in one short line for failure messages.
fn describe(action: &Action) -> String {
    let signo = |signal: &Option<SigInfo>| signal.as_ref().map(|info| info.signo);
    match action {
        Action::SetRegisters { tid, regs } => format!(
            "SetRegisters({tid}, rip={:#x} rax={:#x} rdi={:#x} rsi={:#x} rdx={:#x})",
            regs.rip, regs.rax, regs.rdi, regs.rsi, regs.rdx
        ),
        Action::Step { tid, signal } => format!("Step({tid}, {:?})", signo(signal)),
        Action::Continue { tid, signal } => format!("Continue({tid}, {:?})", signo(signal)),
        Action::ContinueToSyscall { tid, signal } => format!("ContinueToSyscall({tid}, {:?})", signo(signal)),
        Action::QueueSignal { tid, info } => format!("QueueSignal({tid}, {})", info.signo),
        Action::SetKeyRights { tid, key, rights } => format!("SetKeyRights({tid}, key {key}, {rights:?})"),
        Action::WriteMemory { tid, addr, bytes } => format!("WriteMemory({tid}, {addr:#x}, {} bytes)", bytes.len()),
        Action::Reply(SupervisorMessage::StartReply(reply)) => format!("Reply({reply:?})"),
        Action::Reply(SupervisorMessage::Trace(trace)) => format!("Reply(Trace, {} accesses)", trace.accesses.len()),
        Action::Reply(message) => format!("Reply({message:?})"),
        Action::Report(report) => match &**report {
            Report::Crash(crash) => format!("Report(Crash, signal {})", crash.info.signo),
            Report::DiedDuringCall { status, .. } => format!("Report(DiedDuringCall, {status:?})"),
            Report::ProtocolError { message, .. } => format!("Report(ProtocolError, {message:?})"),
        },
        other => format!("{other:?}"),
    }
}

/// The checker's model of one task of the program.
#[derive(Debug)]
struct TaskModel {
    /// The task's registers: from its step traps and faults, then from `SetRegisters`.
    regs: Option<Registers>,
    /// The `mprotect(start, len, prot)` that the step in flight runs through the gadget.
    pending_mprotect: Option<(u64, u64, u64)>,
    /// `rip` and address of the latest SIGSEGV or SIGBUS the kernel raised in it.
    latest_fault: Option<(u64, u64)>,
    /// Signal numbers the core held back while it stepped, not yet delivered.
    held_signals: Vec<i32>,
    /// Its PKRU rights for the key of `open_key`.
    rights: KeyRights,
    /// The key the core last opened to it.
    open_key: Option<u32>,
    /// The last `SetRegisters` pointed it at the gadget.
    at_gadget: bool,
    /// Resumed with `Continue`, and no stop reported since.
    running: bool,
    /// Resumed with `Step`, and no stop reported since.
    stepping: bool,
    /// Stopped, and the core has not acted on it since.
    parked: bool,
    /// Sent `Interrupt`, and no stop reported since.
    interrupted: bool,
    /// Asked for with `ReadVectorRegisters`, and they have not arrived yet.
    fetching_vectors: bool,
    /// The core requested the disposition of its signal, which has not arrived yet. The core
    /// resumes the thread once it does.
    fetching_disposition: bool,
    /// The core requested memory to carry out its faulting instruction, which has not
    /// arrived yet.
    fetching_memory: bool,
    /// Announced by `NewTask` before its first stop: it runs no code before the core resumes
    /// it, but the stop is coming.
    unborn: bool,
}

impl TaskModel {
    /// Returns true while the thread steps or is about to, or a stop of it is coming. A thread
    /// whose stepped instruction crashed reads its disposition before the pages close.
    fn busy(&self) -> bool {
        self.stepping || self.interrupted || self.fetching_vectors || self.fetching_disposition || self.unborn
    }
}

impl TaskModel {
    fn new(running: bool) -> TaskModel {
        TaskModel {
            regs: None,
            pending_mprotect: None,
            latest_fault: None,
            held_signals: Vec::new(),
            rights: KeyRights::NoAccess,
            open_key: None,
            at_gadget: false,
            running,
            stepping: false,
            parked: false,
            interrupted: false,
            fetching_vectors: false,
            fetching_disposition: false,
            fetching_memory: false,
            unborn: false,
        }
    }
}

/// Feeds events to a core, simulates the program's page protection from the actions, and
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
    /// The protection of the running call, or of the last one once it has ended: a thread
    /// that was stepping when the call ended still finishes its step with it.
    protection: Option<Protection>,
    /// The program's traced pages that `mprotect` made accessible, by start address, with
    /// their protection.
    open_pages: BTreeMap<u64, u64>,
    /// Every task that has reported an event, the main thread from the start.
    tasks: BTreeMap<i32, TaskModel>,
    /// The processes the program forked, by kind.
    processes: BTreeMap<i32, TaskKind>,
    /// The protection and traced pages of the call that ran when each task was first reported,
    /// `None` outside a call. A process forked then has its copy of those pages protected.
    first_call: BTreeMap<i32, Option<(Protection, Vec<PageRange>)>>,
    /// The pages the gadget has opened in each forked process.
    process_open_pages: BTreeMap<i32, BTreeSet<u64>>,
    /// Forked processes whose first stop came without registers, so the gadget cannot run in
    /// them, or in which an `mprotect` through the gadget failed.
    processes_left_protected: BTreeSet<i32>,
    /// The main thread and every task a `NewTask` reported.
    announced: BTreeSet<i32>,
    /// Processes the core detached, which report nothing more.
    detached: BTreeSet<i32>,
    /// With `mprotect`, a thread ended while it stepped with pages open (see the file's
    /// documentation).
    pages_abandoned: bool,
    /// The program has ended, and the core reads its remaining messages before it finishes.
    ending: bool,
    /// The last trace was sent and its `TraceReceived` has not been read.
    trace_unacknowledged: bool,
    killed: bool,
    finished: bool,
    coverage: Coverage,
}

/// How often a run reached each path of the protocol, to show that the generators reach
/// deep states and not only the first few events.
#[derive(Clone, Copy, Debug, Default)]
struct Coverage {
    /// `mprotect` calls through the gadget that opened pages of the program.
    pages_opened: u32,
    /// Pages opened while others were already open: a fault the decoder did not predict.
    extra_pages_opened: u32,
    /// Steps of a faulting instruction with its page open by `mprotect`.
    instructions_stepped: u32,
    /// Steps of a faulting instruction with the protection key open to its thread.
    key_steps: u32,
    /// Key steps while the key is open to another thread too.
    concurrent_key_steps: u32,
    /// Accesses in traces returned to the child.
    accesses_returned: u32,
    /// Signals delivered after a step, with the registers restored.
    deferred_signals_delivered: u32,
    vector_register_reads: u32,
    disposition_reads: u32,
    /// Reads and writes of the program's memory, which carry out an access in the supervisor.
    memory_reads: u32,
    memory_writes: u32,
    rejected_starts: u32,
    crash_reports: u32,
    protocol_error_reports: u32,
    died_during_call_reports: u32,
    /// Stops left without an action while another thread stepped or was being stopped.
    holds: u32,
    /// Threads left stopped earlier and then resumed for another task's event.
    releases: u32,
    interrupts: u32,
    threads_created: u32,
    /// Forked processes detached.
    processes_detached: u32,
    /// `mprotect` calls through the gadget in a forked process.
    process_pages_opened: u32,
    /// Reads of the messages of a program that ended with its last trace unacknowledged.
    message_polls: u32,
    /// Calls ended by the end marker system call rather than by the End message.
    marker_ends: u32,
}

impl Coverage {
    fn add(&mut self, other: &Coverage) {
        self.pages_opened += other.pages_opened;
        self.extra_pages_opened += other.extra_pages_opened;
        self.instructions_stepped += other.instructions_stepped;
        self.key_steps += other.key_steps;
        self.concurrent_key_steps += other.concurrent_key_steps;
        self.accesses_returned += other.accesses_returned;
        self.deferred_signals_delivered += other.deferred_signals_delivered;
        self.vector_register_reads += other.vector_register_reads;
        self.disposition_reads += other.disposition_reads;
        self.memory_reads += other.memory_reads;
        self.memory_writes += other.memory_writes;
        self.rejected_starts += other.rejected_starts;
        self.crash_reports += other.crash_reports;
        self.protocol_error_reports += other.protocol_error_reports;
        self.died_during_call_reports += other.died_during_call_reports;
        self.holds += other.holds;
        self.releases += other.releases;
        self.interrupts += other.interrupts;
        self.threads_created += other.threads_created;
        self.processes_detached += other.processes_detached;
        self.marker_ends += other.marker_ends;
        self.process_pages_opened += other.process_pages_opened;
        self.message_polls += other.message_polls;
    }
}

impl Checker {
    fn new() -> Checker {
        let mut tasks = BTreeMap::new();
        tasks.insert(MAIN, TaskModel::new(true));
        Checker {
            core: Supervisor::new(CHILD_PID),
            log: Vec::new(),
            last_request: None,
            call: None,
            protection: None,
            open_pages: BTreeMap::new(),
            tasks,
            processes: BTreeMap::new(),
            first_call: BTreeMap::new(),
            process_open_pages: BTreeMap::new(),
            processes_left_protected: BTreeSet::new(),
            announced: BTreeSet::from([MAIN]),
            detached: BTreeSet::new(),
            pages_abandoned: false,
            ending: false,
            trace_unacknowledged: false,
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

    fn task(&mut self, tid: i32) -> &mut TaskModel {
        self.tasks.entry(tid).or_insert_with(|| TaskModel::new(false))
    }

    /// Returns true for a task whose memory is the program's: a thread, or a vfork child.
    fn shares_program_memory(&self, tid: i32) -> bool {
        self.processes.get(&tid) != Some(&TaskKind::Fork)
    }

    /// Returns true for a thread of the program.
    fn is_thread(&self, tid: i32) -> bool {
        !self.processes.contains_key(&tid)
    }

    fn uses_mprotect(&self) -> bool {
        matches!(self.protection, Some(Protection::Mprotect { .. }))
    }

    /// Returns the gadget address the core may point `tid` at: that of the latest call, or
    /// for a forked process that of the call it was forked in.
    fn gadget(&self, tid: i32) -> Option<u64> {
        let protection = if self.processes.contains_key(&tid) {
            self.first_call.get(&tid).and_then(Option::as_ref).map(|(protection, _)| *protection)
        } else {
            self.protection
        };
        match protection {
            Some(Protection::Mprotect { syscall_gadget, .. }) => Some(syscall_gadget),
            _ => None,
        }
    }

    /// Returns true while `mprotect` keeps traced pages of the program open and the rules
    /// about them apply.
    fn program_pages_open(&self) -> bool {
        !self.open_pages.is_empty() && !self.pages_abandoned && !self.killed
    }

    /// Returns true for a task that has reported a stop and not been resumed since.
    fn is_stopped(&self, tid: i32) -> bool {
        self.tasks.get(&tid).is_some_and(|task| !task.running && !task.stepping && !task.unborn)
    }

    /// Returns the rights of `tid` for the key, `NoAccess` for a task never seen.
    fn rights(&self, tid: i32) -> KeyRights {
        self.tasks.get(&tid).map_or(KeyRights::NoAccess, |task| task.rights)
    }

    /// Returns the threads other than `tid` for which `condition` holds.
    fn other_threads(&self, tid: i32, condition: impl Fn(&TaskModel) -> bool) -> Vec<i32> {
        self.tasks
            .iter()
            .filter(|(&other, task)| other != tid && self.is_thread(other) && condition(task))
            .map(|(&other, _)| other)
            .collect()
    }

    fn feed(&mut self, recipe: &Recipe) -> Result<Vec<Action>, TestCaseError> {
        let event = recipe.event();
        // The thread whose requested data this event carries: it stays stopped until the core
        // acts on it.
        let answered = match recipe {
            Recipe::VectorRegisters(tid) => self.tasks.get(tid).filter(|task| task.fetching_vectors).map(|_| *tid),
            Recipe::Disposition(tid, _) => self.tasks.get(tid).filter(|task| task.fetching_disposition).map(|_| *tid),
            Recipe::Memory(tid, _) | Recipe::MemoryWritten(tid, _) => {
                self.tasks.get(tid).filter(|task| task.fetching_memory).map(|_| *tid)
            }
            _ => None,
        };
        self.observe_event(&event);

        let actions = self.core.handle_event(event.clone());
        self.log.push((recipe.clone(), actions.iter().map(describe).collect()));

        if self.finished {
            self.ensure(actions.is_empty(), || "(c) the core acted after Finish".to_string())?;
            return Ok(actions);
        }
        self.check_actions(recipe, &event, &actions)?;
        if is_end_marker(&event) && actions.iter().any(|action| matches!(action, Action::Reply(SupervisorMessage::Trace(_)))) {
            self.coverage.marker_ends += 1;
        }
        if let ExecEvent::Signal(stop) = &event {
            let deferred = actions == [Action::Step { tid: stop.tid, signal: None }]
                && !is_step_trap(&event)
                && !is_synchronous_fault(&event);
            if deferred {
                self.task(stop.tid).held_signals.push(stop.info.signo);
            }
        }
        for (index, action) in actions.iter().enumerate() {
            let after_set_registers = index > 0 && matches!(actions[index - 1], Action::SetRegisters { .. });
            let delivers = matches!(
                action,
                Action::Continue { signal: Some(_), .. } | Action::ContinueToSyscall { signal: Some(_), .. }
            );
            if after_set_registers && delivers {
                self.coverage.deferred_signals_delivered += 1;
            }
            self.apply_action(recipe, &actions, action)?;
        }
        self.note_parked(recipe, answered, &actions);
        self.check_no_thread_left_stopped()?;
        if matches!(event, ExecEvent::Exited { .. } | ExecEvent::Killed { .. }) {
            self.ending = true;
        }
        if matches!(event, ExecEvent::Message(ChildMessage::TraceReceived)) {
            self.trace_unacknowledged = false;
        }
        if actions.iter().any(|action| matches!(action, Action::Finish { .. })) {
            self.finished = true;
        }
        Ok(actions)
    }

    /// Updates the simulated program for what the event reports it did.
    fn observe_event(&mut self, event: &ExecEvent) {
        match event {
            ExecEvent::Message(ChildMessage::Start(request)) => self.last_request = Some(request.clone()),
            ExecEvent::Signal(stop) => self.observe_signal(stop, is_step_trap(event), is_synchronous_fault(event)),
            ExecEvent::OtherStop { tid, regs } => {
                if !self.tasks.contains_key(tid) || self.tasks.get(tid).is_some_and(|task| task.unborn) {
                    self.note_first_report(*tid);
                    if regs.is_none() {
                        self.processes_left_protected.insert(*tid);
                    }
                }
                let task = self.task(*tid);
                task.running = false;
                task.stepping = false;
                task.interrupted = false;
                task.fetching_vectors = false;
                task.unborn = false;
            }
            ExecEvent::Syscall { tid, .. } => {
                let task = self.task(*tid);
                task.running = false;
                task.stepping = false;
                task.interrupted = false;
                task.fetching_vectors = false;
                task.unborn = false;
            }
            ExecEvent::VectorRegisters { tid, .. } => {
                if let Some(task) = self.tasks.get_mut(tid) {
                    task.fetching_vectors = false;
                }
            }
            ExecEvent::Disposition { tid, .. } => {
                if let Some(task) = self.tasks.get_mut(tid) {
                    task.fetching_disposition = false;
                }
            }
            ExecEvent::Memory { tid, .. } | ExecEvent::MemoryWritten { tid, .. } => {
                if let Some(task) = self.tasks.get_mut(tid) {
                    task.fetching_memory = false;
                }
            }
            ExecEvent::NewTask { parent, tid, kind } => {
                let parent = self.task(*parent);
                parent.running = false;
                parent.stepping = false;
                if !self.tasks.contains_key(tid) {
                    self.note_first_report(*tid);
                    let mut task = TaskModel::new(false);
                    task.unborn = true;
                    self.tasks.insert(*tid, task);
                }
                self.announced.insert(*tid);
                self.detached.remove(tid);
                if *kind == TaskKind::Thread {
                    self.coverage.threads_created += 1;
                } else {
                    self.processes.insert(*tid, *kind);
                }
            }
            ExecEvent::TaskExited { tid } => {
                let stepping = self.tasks.get(tid).is_some_and(|task| task.stepping);
                if self.uses_mprotect() && stepping && self.shares_program_memory(*tid) && !self.open_pages.is_empty() {
                    self.pages_abandoned = true;
                }
                self.forget(*tid);
            }
            _ => {}
        }
    }

    fn observe_signal(&mut self, stop: &SignalStop, step_trap: bool, synchronous_fault: bool) {
        let shares_memory = self.shares_program_memory(stop.tid);
        let task = self.task(stop.tid);
        task.running = false;
        task.stepping = false;
        task.interrupted = false;
        task.fetching_vectors = false;
        task.unborn = false;

        let mut mprotect = None;
        let mut mprotect_failed = false;
        if step_trap {
            if let Some(pending) = task.pending_mprotect.take() {
                if stop.regs.rax == 0 {
                    mprotect = Some(pending);
                } else {
                    mprotect_failed = true;
                }
            }
            task.regs = Some(stop.regs);
        } else if synchronous_fault {
            // The step in flight faulted, so the instruction did not complete.
            task.pending_mprotect = None;
            task.regs = Some(stop.regs);
            if matches!(stop.info.signo, SIGSEGV | SIGBUS) {
                task.latest_fault = Some((stop.regs.rip, stop.info.addr));
            }
        }

        if mprotect_failed && !shares_memory {
            self.processes_left_protected.insert(stop.tid);
        }
        if let Some((start, len, prot)) = mprotect {
            if shares_memory {
                self.apply_mprotect(start, len, prot);
            } else {
                self.coverage.process_pages_opened += 1;
                let opened = self.process_open_pages.entry(stop.tid).or_default();
                opened.extend((start..start.saturating_add(len)).step_by(PAGE_SIZE as usize));
            }
        }
    }

    /// Forgets a task that has ended or been detached; the kernel may reuse its id.
    fn forget(&mut self, tid: i32) {
        self.tasks.remove(&tid);
        self.processes.remove(&tid);
        self.announced.remove(&tid);
        self.first_call.remove(&tid);
        self.process_open_pages.remove(&tid);
        self.processes_left_protected.remove(&tid);
    }

    /// Records the call running when task `tid` is first reported, the first time only.
    fn note_first_report(&mut self, tid: i32) {
        let call = self.call.as_ref().map(|call| (call.protection, call.pages.clone()));
        self.first_call.entry(tid).or_insert(call);
    }

    /// (j): checks that the process `tid` is detached with its copy of the traced pages
    /// accessible.
    fn check_process_released(&self, tid: i32) -> Result<(), TestCaseError> {
        if self.killed || self.processes_left_protected.contains(&tid) {
            return Ok(());
        }
        let Some(Some((protection, pages))) = self.first_call.get(&tid) else { return Ok(()) };
        match (protection, self.processes.get(&tid)) {
            (Protection::ProtectionKey { key }, _) => {
                let task = self.tasks.get(&tid);
                let open = task.is_some_and(|task| task.rights == KeyRights::ReadWrite && task.open_key == Some(*key));
                self.ensure(open, || format!("(j) {tid} is detached with key {key} closed in its copy of the pages"))
            }
            (Protection::Mprotect { .. }, Some(TaskKind::Fork)) => {
                let opened = self.process_open_pages.get(&tid);
                let closed: Vec<Hex> = pages
                    .iter()
                    .flat_map(|range| (range.start..range.start + range.len).step_by(PAGE_SIZE as usize))
                    .filter(|page| !opened.is_some_and(|opened| opened.contains(page)))
                    .map(Hex)
                    .collect();
                self.ensure(closed.is_empty(), || {
                    format!("(j) {tid} is detached with its copy of {closed:?} protected")
                })
            }
            // A vfork child shares the program's pages, so they stay as the call needs them.
            _ => Ok(()),
        }
    }

    fn apply_mprotect(&mut self, start: u64, len: u64, prot: u64) {
        if prot != PROT_NONE {
            self.coverage.pages_opened += 1;
            if !self.open_pages.is_empty() {
                self.coverage.extra_pages_opened += 1;
            }
        }
        let mut page = start;
        while page < start.saturating_add(len) {
            if prot == PROT_NONE {
                self.open_pages.remove(&page);
            } else {
                self.open_pages.insert(page, prot);
            }
            page += PAGE_SIZE;
        }
    }

    /// Checks the action list as a whole against the event that produced it.
    fn check_actions(&self, recipe: &Recipe, event: &ExecEvent, actions: &[Action]) -> Result<(), TestCaseError> {
        self.check_ending(event, actions)?;

        let receives = actions.iter().any(|action| matches!(action, Action::ReceiveMessage));
        let reads_on = matches!(event, ExecEvent::Message(ChildMessage::TraceReceived));
        self.ensure(!receives || is_protocol_stop(event) || reads_on, || {
            "(d) ReceiveMessage without a protocol stop".to_string()
        })?;
        for action in actions {
            let Action::ReadVectorRegisters { tid } = action else { continue };
            let own_fault = is_synchronous_fault(event) && recipe.stopped_task() == Some(*tid);
            let held = self.tasks.get(tid).is_some_and(|task| task.parked);
            self.ensure(own_fault || held, || format!("(d) ReadVectorRegisters({tid}) without a fault of {tid}"))?;
        }
        for action in actions {
            let (Action::ReadMemory { tid, .. } | Action::ReadMemoryAsProgram { tid, .. }) = action else { continue };
            let own_fault = is_synchronous_fault(event) && recipe.stopped_task() == Some(*tid);
            self.ensure(own_fault, || format!("(d) ReadMemory({tid}) without a fault of {tid}"))?;
        }
        for action in actions {
            let Action::ReadDisposition { tid, signal } = action else { continue };
            let own_signal = matches!(event, ExecEvent::Signal(stop) if stop.tid == *tid && stop.info.signo == *signal);
            self.ensure(own_signal, || format!("(d) ReadDisposition({tid}, {signal}) without a stop of {tid} for it"))?;
        }
        let requests = actions.iter().filter(|action| requests_event(action)).count();
        self.ensure(requests <= 1, || format!("(d) {requests} requests for one event, and the driver feeds back one"))?;
        let replies = actions.iter().any(|action| matches!(action, Action::Reply(_)));
        let is_message = matches!(event, ExecEvent::Message(_));
        let trace_only = actions.iter().all(|action| !matches!(action, Action::Reply(message) if !matches!(message, SupervisorMessage::Trace(_))));
        let replies_to_marker = is_end_marker(event) && trace_only;
        self.ensure(!replies || is_message || replies_to_marker, || "(d) Reply without a message or end marker".to_string())?;

        let handled = match recipe {
            Recipe::VectorRegisters(tid)
            | Recipe::Disposition(tid, _)
            | Recipe::Memory(tid, _)
            | Recipe::MemoryWritten(tid, _) => Some(*tid),
            other => other.stopped_task(),
        };
        if let Some(tid) = handled {
            let resumes = actions.iter().filter(|action| resumes_or_requests(action, tid)).count();
            self.ensure(resumes <= 1, || {
                format!("(f) a stop of {tid} handled with {resumes} actions that resume or request")
            })?;
        }
        Ok(())
    }

    /// (c): checks that the program's end produces `Finish`, after reading its remaining
    /// messages with `PollMessage` while its last trace is unacknowledged, and that a trace
    /// the program never acknowledged is reported.
    fn check_ending(&self, event: &ExecEvent, actions: &[Action]) -> Result<(), TestCaseError> {
        let exit = matches!(event, ExecEvent::Exited { .. } | ExecEvent::Killed { .. });
        let message = matches!(event, ExecEvent::Message(_) | ExecEvent::MessageLost { .. });
        let finishes = actions.iter().filter(|action| matches!(action, Action::Finish { .. })).count();
        let polls = actions.iter().filter(|action| matches!(action, Action::PollMessage)).count();
        let ends = exit || (self.ending && message);
        self.ensure(finishes + polls == usize::from(ends), || {
            format!("(c) {finishes} Finish and {polls} PollMessage actions for {event:?}")
        })?;
        if !ends {
            return Ok(());
        }
        let last_ends = matches!(actions.last(), Some(Action::Finish { .. } | Action::PollMessage));
        self.ensure(last_ends, || "(c) Finish or PollMessage is not the last action".to_string())?;
        let unacknowledged =
            self.trace_unacknowledged && !matches!(event, ExecEvent::Message(ChildMessage::TraceReceived));
        if polls == 1 {
            return self.ensure(unacknowledged, || "(c) PollMessage with the last trace acknowledged".to_string());
        }
        if self.ending && matches!(event, ExecEvent::MessageLost { .. }) && unacknowledged {
            let reported = actions.iter().any(|action| matches!(action, Action::Report(report) if matches!(**report, Report::DiedDuringCall { .. })));
            self.ensure(reported, || "(c) the unacknowledged trace was not reported".to_string())?;
        }
        Ok(())
    }

    /// Follows one action's effect on the simulated program and checks it.
    fn apply_action(&mut self, recipe: &Recipe, actions: &[Action], action: &Action) -> Result<(), TestCaseError> {
        if let Some(tid) = action_task(action) {
            let resumes = matches!(
                action,
                Action::Step { .. }
                    | Action::Continue { .. }
                    | Action::ContinueToSyscall { .. }
                    | Action::Detach { .. }
                    | Action::ReadVectorRegisters { .. }
                    | Action::ReadDisposition { .. }
            );
            let was_parked = self.tasks.get(&tid).is_some_and(|task| task.parked);
            if resumes && was_parked && recipe.stopped_task() != Some(tid) {
                self.coverage.releases += 1;
            }
        }
        match action {
            Action::SetRegisters { tid, regs } => {
                let at_gadget = self.gadget(*tid) == Some(regs.rip) && regs.rax == SYS_MPROTECT;
                let task = self.task(*tid);
                task.regs = Some(*regs);
                task.at_gadget = at_gadget;
            }
            Action::SetKeyRights { tid, key, rights } => self.set_key_rights(*tid, *key, *rights)?,
            Action::Step { tid, .. } => {
                self.check_step(*tid)?;
                let task = self.task(*tid);
                task.stepping = true;
                task.running = false;
                task.parked = false;
            }
            Action::Continue { tid, signal } | Action::ContinueToSyscall { tid, signal } => {
                self.check_continue(*tid, signal.as_ref(), actions)?;
                let task = self.task(*tid);
                task.running = true;
                task.stepping = false;
                task.parked = false;
                task.pending_mprotect = None;
            }
            Action::Detach { tid } => {
                let process = self.killed || self.processes.contains_key(tid);
                self.ensure(process, || format!("(i) Detach of {tid}, which is not a forked process"))?;
                self.check_process_released(*tid)?;
                let at_gadget = self.tasks.get(tid).is_some_and(|task| task.at_gadget);
                self.ensure(self.killed || !at_gadget, || format!("(h) Detach of {tid} at the gadget's registers"))?;
                self.coverage.processes_detached += 1;
                self.forget(*tid);
                self.detached.insert(*tid);
            }
            Action::Interrupt { tid } => {
                let running = self.tasks.get(tid).is_some_and(|task| task.running || task.unborn);
                let expected = self.killed || (running && self.is_thread(*tid));
                self.ensure(expected, || format!("(i) Interrupt of {tid}, which is not running"))?;
                self.coverage.interrupts += 1;
                self.task(*tid).interrupted = true;
            }
            Action::Kill => {
                self.killed = true;
                for task in self.tasks.values_mut() {
                    task.held_signals.clear();
                }
            }
            Action::Reply(SupervisorMessage::StartReply(StartReply::Started)) => {
                // The child protects the pages of the new call before it makes the call.
                self.call = self.last_request.clone();
                self.protection = self.call.as_ref().map(|call| call.protection);
                self.open_pages.clear();
                self.pages_abandoned = false;
            }
            Action::Reply(SupervisorMessage::StartReply(StartReply::Rejected(_))) => self.coverage.rejected_starts += 1,
            Action::Reply(SupervisorMessage::Trace(trace)) => {
                self.coverage.accesses_returned += trace.accesses.len() as u32;
                self.trace_unacknowledged = true;
                let closing: Vec<i32> = self
                    .tasks
                    .iter()
                    .filter(|(_, task)| matches!(task.pending_mprotect, Some((_, _, PROT_NONE))))
                    .map(|(&tid, _)| tid)
                    .collect();
                self.ensure(self.killed || closing.is_empty(), || {
                    format!("(e) the call ends while {closing:?} still run mprotect(PROT_NONE) on its pages")
                })?;
                // The child makes the pages accessible again after the call.
                self.call = None;
                self.open_pages.clear();
                self.pages_abandoned = false;
            }
            Action::ReadVectorRegisters { tid } => {
                self.coverage.vector_register_reads += 1;
                let task = self.task(*tid);
                task.parked = false;
                task.fetching_vectors = true;
            }
            Action::ReadMemory { tid, .. } | Action::ReadMemoryAsProgram { tid, .. } | Action::WriteMemoryAsProgram { tid, .. } => {
                self.coverage.memory_reads += 1;
                let task = self.task(*tid);
                task.parked = false;
                task.fetching_memory = true;
            }
            Action::WriteMemory { .. } => self.coverage.memory_writes += 1,
            Action::ReadDisposition { tid, .. } => {
                self.coverage.disposition_reads += 1;
                let task = self.task(*tid);
                task.parked = false;
                task.fetching_disposition = true;
            }
            Action::PollMessage => self.coverage.message_polls += 1,
            Action::Report(report) => match **report {
                Report::Crash(_) => self.coverage.crash_reports += 1,
                Report::ProtocolError { .. } => self.coverage.protocol_error_reports += 1,
                Report::DiedDuringCall { .. } => self.coverage.died_during_call_reports += 1,
            },
            _ => {}
        }
        Ok(())
    }

    /// Checks that rights are opened for the running call's key (for a forked process, the key
    /// of the call it was forked in) and closed for the key they were opened for. The two can
    /// differ, because a call may start while a thread still steps for the previous one.
    fn set_key_rights(&mut self, tid: i32, key: u32, rights: KeyRights) -> Result<(), TestCaseError> {
        let protection = if self.processes.contains_key(&tid) {
            self.first_call.get(&tid).and_then(Option::as_ref).map(|(protection, _)| *protection)
        } else {
            self.call.as_ref().map(|call| call.protection)
        };
        let call_key = match protection {
            Some(Protection::ProtectionKey { key }) => Some(key),
            _ => None,
        };
        let open_key = self.tasks.get(&tid).and_then(|task| task.open_key);
        let expected = if rights == KeyRights::NoAccess { open_key.or(call_key) } else { call_key };
        self.ensure(expected == Some(key), || {
            format!("(e) SetKeyRights({tid}, {rights:?}) for key {key}; expected key {expected:?}")
        })?;
        let task = self.task(tid);
        task.rights = rights;
        task.open_key = Some(key);
        Ok(())
    }

    fn check_continue(&mut self, tid: i32, signal: Option<&SigInfo>, actions: &[Action]) -> Result<(), TestCaseError> {
        self.check_held_signal_delivered(tid, signal, actions)?;
        if self.killed {
            return Ok(());
        }
        let at_gadget = self.tasks.get(&tid).is_some_and(|task| task.at_gadget);
        self.ensure(!at_gadget, || format!("(h) Continue of {tid} at the gadget's registers"))?;
        let rights = self.rights(tid);
        self.ensure(rights == KeyRights::NoAccess, || format!("(a) Continue of {tid} with key rights {rights:?}"))?;
        if self.shares_program_memory(tid) && self.program_pages_open() {
            let open: Vec<Hex> = self.open_pages.keys().map(|page| Hex(*page)).collect();
            return Err(self.failure(&format!("(a) Continue of {tid} with traced pages {open:?} open")));
        }
        Ok(())
    }

    /// Checks that the `Continue` ending a step of `tid` delivers a signal held back during
    /// it, or the fault of the instruction itself, or that the action list queues it again.
    fn check_held_signal_delivered(
        &mut self,
        tid: i32,
        signal: Option<&SigInfo>,
        actions: &[Action],
    ) -> Result<(), TestCaseError> {
        let killed = self.killed;
        let Some(task) = self.tasks.get_mut(&tid) else { return Ok(()) };
        if task.held_signals.is_empty() || killed {
            return Ok(());
        }
        let held = std::mem::take(&mut task.held_signals);
        let queued = actions.iter().any(|action| {
            matches!(action, Action::QueueSignal { tid: queued, info } if *queued == tid && held.contains(&info.signo))
        });
        let delivered = queued || signal.is_some_and(|info| held.contains(&info.signo) || info.code > 0);
        self.ensure(delivered, || format!("(g) signals {held:?} were held during a step of {tid} and never delivered"))
    }

    fn check_step(&mut self, tid: i32) -> Result<(), TestCaseError> {
        let regs = self.tasks.get(&tid).and_then(|task| task.regs).unwrap_or_default();
        let at_gadget = self.gadget(tid) == Some(regs.rip) && regs.rax == SYS_MPROTECT;
        let shares_memory = self.shares_program_memory(tid);
        self.task(tid).pending_mprotect = None;

        if at_gadget {
            self.check_mprotect(tid, &regs)?;
            self.task(tid).pending_mprotect = Some((regs.rdi, regs.rsi, regs.rdx));
            if shares_memory && !self.killed {
                self.check_alone(tid, regs.rdx != PROT_NONE)?;
            }
            return Ok(());
        }
        if self.killed || !shares_memory {
            return Ok(());
        }
        if self.program_pages_open() {
            self.check_alone(tid, true)?;
            let fault_page = self.check_faulting_instruction(tid, &regs)?;
            self.ensure(self.open_pages.contains_key(&fault_page), || {
                format!("(b) the faulting instruction of {tid} is stepped with its page {fault_page:#x} closed")
            })?;
            self.coverage.instructions_stepped += 1;
        }
        if self.rights(tid) != KeyRights::NoAccess {
            self.check_faulting_instruction(tid, &regs)?;
            self.coverage.key_steps += 1;
            let others = self.other_threads(tid, |task| task.rights != KeyRights::NoAccess);
            if !others.is_empty() {
                self.coverage.concurrent_key_steps += 1;
            }
        }
        Ok(())
    }

    /// Checks that the thread `tid` steps its latest fault's instruction, and returns the
    /// page of that fault.
    fn check_faulting_instruction(&self, tid: i32, regs: &Registers) -> Result<u64, TestCaseError> {
        let latest_fault = self.tasks.get(&tid).and_then(|task| task.latest_fault);
        let Some((fault_rip, fault_addr)) = latest_fault else {
            return Err(
                self.failure(&format!("(b) a Step of {tid} with traced pages open to it, and no fault to step"))
            );
        };
        self.ensure(regs.rip == fault_rip, || {
            format!(
                "(b) a Step of {tid} at {:#x} with traced pages open to it; its fault was at {fault_rip:#x}",
                regs.rip
            )
        })?;
        Ok(fault_addr & !(PAGE_SIZE - 1))
    }

    /// With `mprotect`, checks that no other thread steps while `tid` does and, if `tid` runs
    /// with pages open, that every other thread is stopped.
    fn check_alone(&self, tid: i32, opens_pages: bool) -> Result<(), TestCaseError> {
        if !self.uses_mprotect() || self.pages_abandoned {
            return Ok(());
        }
        let stepping = self.other_threads(tid, |task| task.stepping);
        self.ensure(stepping.is_empty(), || format!("(b) {tid} steps while {stepping:?} step too, with mprotect"))?;
        if opens_pages {
            let running = self.other_threads(tid, |task| task.running);
            self.ensure(running.is_empty(), || {
                format!("(a) {tid} steps with traced pages open while {running:?} run, with mprotect")
            })?;
        }
        Ok(())
    }

    fn check_mprotect(&self, tid: i32, regs: &Registers) -> Result<(), TestCaseError> {
        let (start, len, prot) = (regs.rdi, regs.rsi, regs.rdx);
        let process = !self.shares_program_memory(tid);
        let allowed =
            if process { prot == PROT_READ_WRITE } else { matches!(prot, PROT_NONE | PROT_READ | PROT_READ_WRITE) };
        self.ensure(allowed, || format!("(e) mprotect with prot {prot:#x} in {tid}"))?;
        let pages = if process {
            self.first_call.get(&tid).and_then(Option::as_ref).map(|(_, pages)| pages)
        } else {
            self.call.as_ref().map(|call| &call.pages)
        };
        let Some(pages) = pages else {
            // A thread that was stepping when the call ended may repeat its step.
            return self.ensure(prot != PROT_NONE || self.killed, || {
                format!("(e) mprotect({start:#x}, {len:#x}, PROT_NONE) in {tid} after the call ended")
            });
        };
        // No valid request in these tests traces more than three pages.
        let whole_pages = len > 0 && len <= 3 * PAGE_SIZE && start % PAGE_SIZE == 0 && len % PAGE_SIZE == 0;
        let traced = whole_pages
            && start.checked_add(len).is_some_and(|end| {
                (start..end).step_by(PAGE_SIZE as usize).all(|page| pages.iter().any(|range| range.contains(page)))
            });
        self.ensure(traced, || format!("(e) mprotect({start:#x}, {len:#x}) in {tid} is not on traced pages"))
    }

    /// Marks as parked the task whose stop, or requested data, got no action for it.
    fn note_parked(&mut self, recipe: &Recipe, answered: Option<i32>, actions: &[Action]) {
        let Some(tid) = recipe.stopped_task().or(answered) else { return };
        if !self.tasks.contains_key(&tid) || actions.iter().any(|action| resumes_or_requests(action, tid)) {
            return;
        }
        let busy = !self.other_threads(tid, TaskModel::busy).is_empty();
        if busy {
            self.coverage.holds += 1;
        }
        self.task(tid).parked = true;
    }

    /// (f): a stopped thread may wait for another thread's step, vector registers or stop,
    /// for its own `NewTask`, or for the disposition the core asked for, but no longer.
    fn check_no_thread_left_stopped(&self) -> Result<(), TestCaseError> {
        if self.killed {
            return Ok(());
        }
        for (&tid, task) in &self.tasks {
            if !task.parked || !self.announced.contains(&tid) || task.fetching_disposition {
                continue;
            }
            let busy = self.other_threads(tid, TaskModel::busy);
            self.ensure(!busy.is_empty(), || {
                format!("(f) {tid} is left stopped while no other thread steps, is about to, or owes a stop")
            })?;
        }
        Ok(())
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
        ],
    ]
}

fn protect() -> impl Strategy<Value = Protect> {
    prop_oneof![
        8 => Just(Protect::Gadget(Hex(GADGET))),
        2 => Just(Protect::Gadget(Hex(OTHER_GADGET))),
        1 => Just(Protect::Gadget(Hex(0))),
        8 => Just(Protect::Key(KEY)),
        1 => prop_oneof![Just(Protect::Key(0)), Just(Protect::Key(16))],
    ]
}

fn accesses() -> impl Strategy<Value = Accesses> {
    prop_oneof![2 => Just(Accesses::Stepped), 1 => Just(Accesses::Emulated)]
}

fn thread() -> impl Strategy<Value = i32> {
    prop_oneof![3 => Just(MAIN), 2 => Just(THREAD_2), 1 => Just(THREAD_3)]
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

/// Generates a disposition as the driver reads it from `/proc`, which never gives `Unknown`.
fn known_disposition() -> impl Strategy<Value = Disposition> {
    prop_oneof![1 => Just(Disposition::Default), 2 => Just(Disposition::Caught), 1 => Just(Disposition::Ignored)]
}

/// Generates the disposition of a signal stop, which the driver leaves `Unknown` for the core
/// to request.
fn disposition() -> impl Strategy<Value = Disposition> {
    prop_oneof![2 => known_disposition(), 1 => Just(Disposition::Unknown)]
}

/// Builds a SIGSEGV on a traced page, as `mprotect` (`SEGV_ACCERR`) or a protection key
/// (`SEGV_PKUERR`) raises it.
fn traced_fault(tid: i32, addr: u64, bytes: &[u8], code: i32, disposition: Disposition) -> Recipe {
    Recipe::Fault {
        tid,
        signo: SIGSEGV,
        code,
        addr: Hex(addr),
        rdi: Hex(addr),
        rip: Hex(CODE),
        bytes: Bytes(bytes.to_vec()),
        disposition,
    }
}

fn gadget_trap(tid: i32) -> Recipe {
    Recipe::Trap { tid, code: TRAP_BRKPT, rip: Hex(GADGET + SYSCALL_LEN), rax: Hex(0) }
}

fn instruction_trap(tid: i32, instruction: &Instruction, rax: u64) -> Recipe {
    let len = instruction.bytes.len() as u64;
    Recipe::Trap { tid, code: TRAP_TRACE, rip: Hex(CODE + len), rax: Hex(rax) }
}

fn recipe() -> impl Strategy<Value = Recipe> {
    let rip = prop_oneof![
        3 => Just(CODE),
        1 => Just(OTHER_CODE),
        1 => Just(GADGET),
        1 => Just(GADGET + SYSCALL_LEN),
    ]
    .prop_map(Hex);
    let trap_rax = prop_oneof![4 => Just(0), 1 => Just(ENOMEM.wrapping_neg()), 1 => any::<u64>()].prop_map(Hex);
    let segv = (
        thread(),
        prop_oneof![3 => Just(SIGSEGV), 1 => Just(SIGBUS)],
        prop_oneof![
            4 => Just(SEGV_ACCERR),
            2 => Just(SEGV_PKUERR),
            1 => Just(SEGV_MAPERR),
            1 => Just(SI_USER),
            1 => Just(SI_QUEUE),
        ],
        address(),
        rip.clone(),
        instruction_bytes(),
        disposition(),
    )
        .prop_map(|(tid, signo, code, addr, rip, bytes, disposition)| Recipe::Fault {
            tid,
            signo,
            code,
            addr: Hex(addr),
            rdi: Hex(addr),
            rip,
            bytes: Bytes(bytes),
            disposition,
        });
    let other_fault = (
        thread(),
        prop_oneof![Just(SIGILL), Just(SIGFPE), Just(SIGTRAP), Just(SIGABRT)],
        prop_oneof![Just(1), Just(3), Just(4), Just(SI_KERNEL), Just(-6)],
        rip.clone(),
        disposition(),
    )
        .prop_map(|(tid, signo, code, rip, disposition)| Recipe::Fault {
            tid,
            signo,
            code,
            addr: rip,
            rdi: Hex(0),
            rip,
            bytes: Bytes(UD2.to_vec()),
            disposition,
        });
    let unrelated = (thread(), prop_oneof![Just((SIGALRM, SI_KERNEL, 0)), Just((SIGCHLD, CLD_EXITED, OTHER_PID))])
        .prop_map(|(tid, (signo, code, pid))| Recipe::Unrelated { tid, signo, code, pid });
    let any_task = prop_oneof![6 => thread(), 1 => Just(FORKED)];
    let trap = (any_task.clone(), prop_oneof![Just(TRAP_BRKPT), Just(TRAP_TRACE)], rip, trap_rax)
        .prop_map(|(tid, code, rip, rax)| Recipe::Trap { tid, code, rip, rax });
    let new_task = prop_oneof![
        (prop_oneof![Just(THREAD_2), Just(THREAD_3)]).prop_map(|tid| (tid, TaskKind::Thread)),
        prop_oneof![Just(TaskKind::Fork), Just(TaskKind::Vfork)].prop_map(|kind| (FORKED, kind)),
    ];
    let sigusr1 = prop_oneof![
        6 => Just(Sigusr1::Protocol),
        1 => Just(Sigusr1::WrongCookie),
        1 => Just(Sigusr1::WrongPid),
        1 => Just(Sigusr1::FromKill),
    ];

    prop_oneof![
        3 => (page_choice(), protect(), accesses()).prop_map(|(pages, protect, accesses)| Recipe::Start(pages, protect, accesses)),
        2 => Just(Recipe::End),
        1 => (-2..300i32).prop_map(Recipe::SetExitCode),
        1 => Just(Recipe::TraceReceived),
        4 => (thread(), sigusr1).prop_map(|(tid, kind)| Recipe::Sigusr1(tid, kind)),
        6 => segv,
        1 => other_fault,
        8 => trap,
        2 => unrelated,
        1 => thread().prop_map(Recipe::VectorRegisters),
        1 => (thread(), known_disposition()).prop_map(|(tid, disposition)| Recipe::Disposition(tid, disposition)),
        1 => (thread(), prop_oneof![Just(None), Just(Some(1)), Just(Some(4)), Just(Some(8))])
            .prop_map(|(tid, len)| Recipe::Memory(tid, len)),
        1 => Just(Recipe::MessageLost),
        2 => (any_task.clone(), prop_oneof![Just(None), Just(Some(Hex(CLONE_RETURN_RIP)))])
            .prop_map(|(tid, rip)| Recipe::OtherStop(tid, rip)),
        2 => (prop_oneof![Just(MAIN), Just(THREAD_2)], new_task)
            .prop_map(|(parent, (tid, kind))| Recipe::NewTask { parent, tid, kind }),
        1 => prop_oneof![Just(THREAD_2), Just(THREAD_3), Just(FORKED)].prop_map(Recipe::TaskExited),
        1 => (
            thread(),
            prop_oneof![Just(SyscallPhase::Entry), Just(SyscallPhase::Exit)],
            prop_oneof![Just(SYS_WRITE), Just(SYS_GETPID)],
            address(),
        )
            .prop_map(|(tid, phase, number, buf)| Recipe::Syscall { tid, phase, number, buf: Hex(buf) }),
        2 => (thread(), prop_oneof![3 => Just(None), 1 => thread().prop_map(Some)])
            .prop_map(|(tid, other)| Recipe::EndMarker { tid, marked_tid: other.unwrap_or(tid) }),
        1 => (0..3i32).prop_map(Recipe::Exited),
        1 => (prop_oneof![Just(SIGKILL), Just(SIGSEGV), Just(SIGABRT)], any::<bool>()).prop_map(|(signal, dumped)| Recipe::Killed(signal, dumped)),
    ]
}

/// Generates one traced access by `tid` with the step traps each protection produces.
fn access_fragment() -> impl Strategy<Value = Vec<Recipe>> {
    (thread(), address(), proptest::sample::select(INSTRUCTIONS), any::<u64>(), disposition(), any::<bool>()).prop_map(
        |(tid, addr, instruction, value, disposition, key)| {
            if key {
                vec![
                    traced_fault(tid, addr, instruction.bytes, SEGV_PKUERR, disposition),
                    instruction_trap(tid, &instruction, value),
                ]
            } else {
                vec![
                    traced_fault(tid, addr, instruction.bytes, SEGV_ACCERR, disposition),
                    gadget_trap(tid),
                    instruction_trap(tid, &instruction, value),
                    gadget_trap(tid),
                ]
            }
        },
    )
}

/// Generates two threads faulting on traced pages before either access has finished, half of
/// the time in a call started for them. With a protection key the two traps follow in either
/// order. With `mprotect` the second thread's fault comes while the first one is opening its
/// pages, and half of the time the second thread, interrupted, reports a stop in place of a
/// fault.
fn concurrent_fragment() -> impl Strategy<Value = Vec<Recipe>> {
    let threads = proptest::sample::subsequence(THREADS.to_vec(), 2).prop_shuffle();
    let instruction = proptest::sample::select(INSTRUCTIONS);
    let accesses = (threads, address(), address(), instruction.clone(), instruction, any::<bool>(), any::<bool>());
    (accesses, any::<bool>()).prop_map(|((threads, first_addr, second_addr, first, second, key, swap), start)| {
        let (a, b) = (threads[0], threads[1]);
        let mut recipes = Vec::new();
        if start {
            let protect = if key { Protect::Key(KEY) } else { Protect::Gadget(Hex(GADGET)) };
            let start = Recipe::Start(PageChoice::ThreePages, protect, Accesses::Stepped);
            recipes.extend([Recipe::Sigusr1(MAIN, Sigusr1::Protocol), start]);
        }
        if key {
            let mut traps = vec![instruction_trap(a, &first, 1), instruction_trap(b, &second, 2)];
            if swap {
                traps.reverse();
            }
            recipes.extend([
                traced_fault(a, first_addr, first.bytes, SEGV_PKUERR, Disposition::Default),
                traced_fault(b, second_addr, second.bytes, SEGV_PKUERR, Disposition::Default),
            ]);
            recipes.extend(traps);
            return recipes;
        }
        let second_stop = if swap {
            Recipe::OtherStop(b, None)
        } else {
            traced_fault(b, second_addr, second.bytes, SEGV_ACCERR, Disposition::Default)
        };
        recipes.extend([
            traced_fault(a, first_addr, first.bytes, SEGV_ACCERR, Disposition::Default),
            second_stop,
            gadget_trap(a),
            instruction_trap(a, &first, 1),
            gadget_trap(a),
            gadget_trap(b),
            instruction_trap(b, &second, 2),
            gadget_trap(b),
        ]);
        recipes
    })
}

/// Generates a new thread or process: its creation and its first stop, in either order, and
/// for a forked process the gadget steps that open its copy of the pages.
fn new_task_fragment() -> impl Strategy<Value = Vec<Recipe>> {
    let task = prop_oneof![
        2 => prop_oneof![Just(THREAD_2), Just(THREAD_3)].prop_map(|tid| (tid, TaskKind::Thread)),
        1 => prop_oneof![Just(TaskKind::Fork), Just(TaskKind::Vfork)].prop_map(|kind| (FORKED, kind)),
    ];
    (prop_oneof![Just(MAIN), Just(THREAD_2)], task, any::<bool>()).prop_map(|(parent, (tid, kind), stop_first)| {
        let mut recipes =
            vec![Recipe::NewTask { parent, tid, kind }, Recipe::OtherStop(tid, Some(Hex(CLONE_RETURN_RIP)))];
        if stop_first {
            recipes.reverse();
        }
        if kind == TaskKind::Fork {
            recipes.extend([gadget_trap(tid), gadget_trap(tid)]);
        }
        recipes
    })
}

/// Generates a run of events in the order a program would produce them: starting a call,
/// ending it, traced accesses, a new task. [`recipes`] mixes these runs with single events,
/// so random orders still reach the deep states often.
fn fragment() -> impl Strategy<Value = Vec<Recipe>> {
    let start = (thread(), page_choice(), protect(), accesses()).prop_map(|(tid, pages, protect, accesses)| {
        vec![Recipe::Sigusr1(tid, Sigusr1::Protocol), Recipe::Start(pages, protect, accesses)]
    });
    let end = thread().prop_map(|tid| vec![Recipe::Sigusr1(tid, Sigusr1::Protocol), Recipe::End]);
    prop_oneof![
        6 => recipe().prop_map(|recipe| vec![recipe]),
        2 => start,
        1 => end,
        3 => access_fragment(),
        3 => concurrent_fragment(),
        1 => new_task_fragment(),
    ]
}

/// Generates the creation of the threads other than the main one, each reported in either
/// order, so that the events of those threads count (see [`run_random`]).
fn thread_setup() -> impl Strategy<Value = Vec<Recipe>> {
    (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(second, third, second_first, third_first)| {
            let mut recipes = Vec::new();
            for (tid, created, stop_first) in [(THREAD_2, second, second_first), (THREAD_3, third, third_first)] {
                if !created {
                    continue;
                }
                let mut pair = [
                    Recipe::NewTask { parent: MAIN, tid, kind: TaskKind::Thread },
                    Recipe::OtherStop(tid, Some(Hex(CLONE_RETURN_RIP))),
                ];
                if stop_first {
                    pair.reverse();
                }
                recipes.extend(pair);
            }
            recipes
        },
    )
}

/// Generates up to 64 events: the creation of threads, then single events of any kind mixed
/// with the runs of [`fragment`].
///
/// A `NewTask` for a task that is already alive is dropped: the kernel never reuses the id of
/// a task that has not ended, so the core may take such an event as a new task.
fn recipes() -> impl Strategy<Value = Vec<Recipe>> {
    (thread_setup(), proptest::collection::vec(fragment(), 0..40)).prop_map(|(setup, fragments)| {
        let mut alive = BTreeSet::from([MAIN]);
        let mut recipes = Vec::new();
        for recipe in setup.into_iter().chain(fragments.into_iter().flatten()) {
            match &recipe {
                Recipe::NewTask { tid, .. } if alive.contains(tid) => continue,
                Recipe::NewTask { tid, .. } => {
                    alive.insert(*tid);
                }
                Recipe::TaskExited(tid) => {
                    alive.remove(tid);
                }
                other => {
                    if let Some(tid) = other.stopped_task() {
                        alive.insert(tid);
                    }
                }
            }
            recipes.push(recipe);
        }
        recipes.truncate(64);
        recipes
    })
}

/// Returns true for a message or the loss of one.
fn is_message(recipe: &Recipe) -> bool {
    matches!(
        recipe,
        Recipe::Start(..) | Recipe::End | Recipe::SetExitCode(_) | Recipe::TraceReceived | Recipe::MessageLost
    )
}

/// Feeds the recipes in order and checks the actions returned for each. A recipe no driver
/// could report is left out:
/// - an event of a process the core has detached;
/// - a signal or system-call stop of a task never seen, or a `NewTask` from one, because a new
///   task first reports its first stop or is announced;
/// - a stop of a task that has stopped and not been resumed since, because a task reports one
///   stop at a time;
/// - a `NewTask` or system-call stop of a task that single-steps, because it runs one memory
///   access or the gadget's `mprotect`, and single-stepping turns system-call stops off;
/// - a fault of a task that single-steps at another instruction than the one it steps;
/// - any event but the requested data right after the core requested a message, vector
///   registers or a disposition, because the driver feeds back that data first;
/// - anything but a message once the program has ended.
fn run_random(recipes: &[Recipe]) -> Result<Coverage, TestCaseError> {
    let mut checker = Checker::new();
    // The latest request the core made, until the event that carries the requested data.
    let mut requested: Option<Action> = None;
    for recipe in recipes {
        let answers = match (&requested, recipe) {
            (None, _) => true,
            (Some(Action::ReceiveMessage | Action::PollMessage), message) => is_message(message),
            (Some(Action::ReadVectorRegisters { tid }), Recipe::VectorRegisters(answered)) => tid == answered,
            (Some(Action::ReadDisposition { tid, .. }), Recipe::Disposition(answered, _)) => tid == answered,
            (
                Some(Action::ReadMemory { tid, .. } | Action::ReadMemoryAsProgram { tid, .. }),
                Recipe::Memory(answered, _),
            ) => tid == answered,
            (Some(Action::WriteMemoryAsProgram { tid, .. }), Recipe::MemoryWritten(answered, _)) => tid == answered,
            _ => false,
        };
        let detached = match recipe {
            Recipe::TaskExited(tid) | Recipe::VectorRegisters(tid) => checker.detached.contains(tid),
            Recipe::NewTask { .. } => false,
            other => other.stopped_task().is_some_and(|tid| checker.detached.contains(&tid)),
        };
        let stopped = recipe.stopped_task().is_some_and(|tid| checker.is_stopped(tid));
        let unseen = match recipe {
            Recipe::OtherStop(..) => false,
            other => other.stopped_task().is_some_and(|tid| !checker.tasks.contains_key(&tid)),
        };
        let stepping_elsewhere = match recipe {
            Recipe::NewTask { parent: tid, .. } | Recipe::Syscall { tid, .. } | Recipe::EndMarker { tid, .. } => {
                checker.tasks.get(tid).is_some_and(|task| task.stepping)
            }
            Recipe::Fault { tid, code, rip, .. } if *code > 0 => checker
                .tasks
                .get(tid)
                .is_some_and(|task| task.stepping && task.regs.is_some_and(|regs| regs.rip != rip.0)),
            _ => false,
        };
        // Once the program has ended, only its remaining messages can come.
        let after_end = checker.ending && !is_message(recipe);
        if answers && !detached && !stopped && !unseen && !stepping_elsewhere && !after_end {
            let actions = checker.feed(recipe)?;
            requested = actions.iter().find(|action| requests_event(action)).cloned();
        }
    }
    Ok(checker.coverage)
}

/// A source of choices for the simulated program, read from bytes that proptest generates and
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

/// What a simulated task is doing, as far as the core's actions decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimState {
    /// Stopped at its latest event until the core resumes it.
    Stopped,
    /// Resumed for one instruction.
    Stepping,
    /// Resumed freely.
    Running,
}

/// A traced access a simulated thread is making.
#[derive(Clone, Copy, Debug)]
struct SimAccess {
    rdi: u64,
    instruction: &'static Instruction,
    /// For a masked store: whether its mask selects any byte.
    writes: bool,
}

/// One task of the simulated program.
#[derive(Debug)]
struct SimTask {
    kind: TaskKind,
    state: SimState,
    /// The signal the core delivered when it last resumed the task.
    signal: Option<SigInfo>,
    access: Option<SimAccess>,
    /// The event this task reports before anything it does itself: a new task's first stop,
    /// or the `NewTask` a parent reports after its child's first stop.
    forced: Option<Recipe>,
    /// The core sent `Interrupt`, and the task has not stopped for it yet.
    interrupted: bool,
    /// The core resumed it with `ContinueToSyscall`, so it stops at system calls.
    syscall_stops: bool,
    /// The system call whose entry it stopped at, so its exit stop comes next.
    in_syscall: Option<(u64, u64)>,
}

impl SimTask {
    fn new(kind: TaskKind, state: SimState) -> SimTask {
        SimTask {
            kind,
            state,
            signal: None,
            access: None,
            forced: None,
            interrupted: false,
            syscall_stops: false,
            in_syscall: None,
        }
    }
}

/// A plausible traced program: it responds to the core's actions with the event a real
/// program would produce next, one task at a time, and keeps to the protocol itself.
struct SimulatedProgram {
    choices: Choices,
    /// The messages the program has sent and the core has not read, oldest first.
    channel: VecDeque<Recipe>,
    /// The latest start request the core received.
    requested: Option<StartRequest>,
    /// The call the program believes is running.
    call: Option<StartRequest>,
    /// The program's SIGSEGV disposition, fixed for the run.
    segv_disposition: Disposition,
    tasks: BTreeMap<i32, SimTask>,
    next_process: i32,
}

impl SimulatedProgram {
    fn new(mut choices: Choices) -> SimulatedProgram {
        let segv_disposition = if choices.percent(50) { Disposition::Caught } else { Disposition::Default };
        let tasks = BTreeMap::from([(MAIN, SimTask::new(TaskKind::Thread, SimState::Running))]);
        SimulatedProgram {
            choices,
            channel: VecDeque::new(),
            requested: None,
            call: None,
            segv_disposition,
            tasks,
            next_process: FORKED,
        }
    }

    /// Returns the event after the core's `actions`, or `None` once the program is gone.
    fn next(&mut self, checker: &Checker, actions: &[Action]) -> Result<Option<Recipe>, TestCaseError> {
        let mut immediate = None;
        let mut killed = false;
        for action in actions {
            match action {
                Action::Finish { .. } => return Ok(None),
                Action::Kill => killed = true,
                Action::ReceiveMessage | Action::PollMessage => immediate = Some(self.receive()),
                Action::ReadVectorRegisters { tid } => immediate = Some(Recipe::VectorRegisters(*tid)),
                Action::ReadMemory { tid, len, .. } | Action::ReadMemoryAsProgram { tid, len, .. } => {
                    let readable = !self.choices.percent(3);
                    immediate = Some(Recipe::Memory(*tid, readable.then_some(*len)));
                }
                Action::WriteMemoryAsProgram { tid, .. } => {
                    immediate = Some(Recipe::MemoryWritten(*tid, !self.choices.percent(3)));
                }
                Action::ReadDisposition { tid, signal } => {
                    let disposition = if *signal == SIGSEGV { self.segv_disposition } else { Disposition::Caught };
                    immediate = Some(Recipe::Disposition(*tid, disposition));
                }
                Action::Reply(SupervisorMessage::StartReply(StartReply::Started)) => self.call = self.requested.take(),
                Action::Reply(SupervisorMessage::Trace(_)) => {
                    self.call = None;
                    // The child acknowledges the trace once it has read it, unless it dies first.
                    if !self.choices.percent(10) {
                        self.channel.push_back(Recipe::TraceReceived);
                    }
                }
                Action::Step { tid, signal } => self.resume(*tid, SimState::Stepping, signal, false),
                Action::Continue { tid, signal } => self.resume(*tid, SimState::Running, signal, false),
                Action::ContinueToSyscall { tid, signal } => self.resume(*tid, SimState::Running, signal, true),
                Action::Detach { tid } => {
                    self.tasks.remove(tid);
                }
                Action::Interrupt { tid } => {
                    if let Some(task) = self.tasks.get_mut(tid).filter(|task| task.state == SimState::Running) {
                        task.interrupted = true;
                    }
                }
                _ => {}
            }
        }
        if let Some(recipe) = immediate {
            return Ok(Some(recipe));
        }
        if killed {
            return Ok(Some(Recipe::Killed(SIGKILL, false)));
        }

        let active: Vec<i32> =
            self.tasks.iter().filter(|(_, task)| task.state != SimState::Stopped).map(|(&tid, _)| tid).collect();
        if active.is_empty() {
            return Err(checker.failure("(f) every task of the program is stopped and the core resumes none"));
        }
        let tid = active[self.choices.below(active.len())];
        let recipe = self.task_event(checker, tid);
        if let Some(task) = self.tasks.get_mut(&tid) {
            if recipe.stopped_task() == Some(tid) {
                task.state = SimState::Stopped;
            }
        }
        Ok(Some(recipe))
    }

    fn resume(&mut self, tid: i32, state: SimState, signal: &Option<SigInfo>, syscall_stops: bool) {
        if let Some(task) = self.tasks.get_mut(&tid) {
            task.state = state;
            task.signal = signal.clone();
            task.syscall_stops = syscall_stops;
            if !syscall_stops {
                task.in_syscall = None;
            }
        }
    }

    fn receive(&mut self) -> Recipe {
        let Some(message) = self.channel.pop_front() else { return Recipe::MessageLost };
        if self.choices.percent(3) {
            return Recipe::MessageLost;
        }
        if let Recipe::Start(choice, protect, accesses) = &message {
            self.requested = Some(choice.request(*protect, *accesses));
        }
        message
    }

    /// Returns the next event of the active task `tid`.
    fn task_event(&mut self, checker: &Checker, tid: i32) -> Recipe {
        let task = self.tasks.get_mut(&tid).expect("an active task is listed");
        if let Some(forced) = task.forced.take() {
            return forced;
        }
        match (task.state, task.kind) {
            (SimState::Stepping, _) => self.step(checker, tid),
            (_, TaskKind::Thread) => self.run(checker, tid),
            // A forked process resumed freely runs to its end.
            _ => {
                self.tasks.remove(&tid);
                Recipe::TaskExited(tid)
            }
        }
    }

    /// Returns the event after task `tid` runs one instruction: the gadget's `syscall`, or the
    /// traced access.
    fn step(&mut self, checker: &Checker, tid: i32) -> Recipe {
        let regs = checker.tasks.get(&tid).and_then(|task| task.regs).unwrap_or_default();
        if self.choices.percent(6) {
            return Recipe::Unrelated { tid, signo: SIGALRM, code: SI_KERNEL, pid: 0 };
        }
        if self.choices.percent(2) {
            return Recipe::Killed(SIGKILL, false);
        }
        if self.choices.percent(2) {
            // A group-stop or ptrace event stop; the step has not run yet.
            return Recipe::OtherStop(tid, Some(Hex(regs.rip)));
        }
        if checker.gadget(tid) == Some(regs.rip) && regs.rax == SYS_MPROTECT {
            let rax = if self.choices.percent(3) { ENOMEM.wrapping_neg() } else { 0 };
            return Recipe::Trap { tid, code: TRAP_BRKPT, rip: Hex(regs.rip + SYSCALL_LEN), rax: Hex(rax) };
        }
        let Some(access) = self.tasks.get(&tid).and_then(|task| task.access) else {
            return Recipe::Trap { tid, code: TRAP_TRACE, rip: Hex(regs.rip + 1), rax: Hex(regs.rax) };
        };
        if self.choices.percent(3) {
            // The instruction also touches an unmapped address.
            return self.fault(tid, SEGV_MAPERR, 0);
        }
        if let Some(closed) = self.first_closed_page(checker, tid, &access) {
            let code = self.denied_code();
            return self.fault(tid, code, closed);
        }
        self.set_access(tid, None);
        instruction_trap(tid, access.instruction, 0x2a)
    }

    /// Returns the first address of the access that lies on a traced page closed to `tid`,
    /// for the kind of access it makes.
    fn first_closed_page(&self, checker: &Checker, tid: i32, access: &SimAccess) -> Option<u64> {
        let call = self.call.as_ref()?;
        let end = access.rdi + access.instruction.access_size;
        let mut page = access.rdi & !(PAGE_SIZE - 1);
        while page < end {
            let traced = call.pages.iter().any(|range| range.contains(page));
            let open = match call.protection {
                Protection::Mprotect { .. } => match checker.open_pages.get(&page) {
                    Some(&prot) => !access.writes || prot == PROT_READ_WRITE,
                    None => false,
                },
                Protection::ProtectionKey { .. } => match checker.rights(tid) {
                    KeyRights::ReadWrite => true,
                    KeyRights::ReadOnly => !access.writes,
                    KeyRights::NoAccess => false,
                },
            };
            if traced && !open {
                return Some(page.max(access.rdi));
            }
            page += PAGE_SIZE;
        }
        None
    }

    /// Returns the `si_code` of a fault on a traced page under the running call's protection.
    fn denied_code(&self) -> i32 {
        match self.call.as_ref().map(|call| call.protection) {
            Some(Protection::ProtectionKey { .. }) => SEGV_PKUERR,
            _ => SEGV_ACCERR,
        }
    }

    fn set_access(&mut self, tid: i32, access: Option<SimAccess>) {
        if let Some(task) = self.tasks.get_mut(&tid) {
            task.access = access;
        }
    }

    /// Builds a SIGSEGV of `tid` at `addr` raised by the instruction at [`CODE`]. Its `rdi`
    /// is the start of the access in progress, or `addr` when there is none.
    fn fault(&self, tid: i32, code: i32, addr: u64) -> Recipe {
        let access = self.tasks.get(&tid).and_then(|task| task.access);
        let rdi = access.map_or(addr, |access| access.rdi);
        let bytes = access.map_or(INSTRUCTIONS[0].bytes, |access| access.instruction.bytes);
        Recipe::Fault {
            tid,
            signo: SIGSEGV,
            code,
            addr: Hex(addr),
            rdi: Hex(rdi),
            rip: Hex(CODE),
            bytes: Bytes(bytes.to_vec()),
            // The driver leaves the disposition for the core to request.
            disposition: Disposition::Unknown,
        }
    }

    /// Returns the next stop of thread `tid`, which runs after receiving its latest signal.
    fn run(&mut self, checker: &Checker, tid: i32) -> Recipe {
        let task = self.tasks.get_mut(&tid).expect("a running thread is listed");
        if task.interrupted && !self.choices.percent(20) {
            task.interrupted = false;
            return Recipe::OtherStop(tid, None);
        }
        if let Some(info) = task.signal.take().filter(|info| info.signo == SIGSEGV) {
            if self.segv_disposition == Disposition::Default {
                return Recipe::Killed(info.signo, true);
            }
            // The program's handler jumps out of the faulting code.
            task.access = None;
        }
        if let Some(access) = task.access {
            // The access was not stepped: the instruction runs again and faults again.
            if let Some(closed) = self.first_closed_page(checker, tid, &access) {
                let code = self.denied_code();
                return self.fault(tid, code, closed);
            }
            self.set_access(tid, None);
        }
        if let Some(recipe) = self.system_call(tid) {
            return recipe;
        }
        match self.choices.below(24) {
            0..=8 if self.call.is_some() => self.traced_access(tid),
            0..=11 => self.send_message(tid),
            12 => {
                let fault = SimAccess { rdi: 0, instruction: &INSTRUCTIONS[0], writes: false };
                self.set_access(tid, Some(fault));
                let recipe = self.fault(tid, SEGV_MAPERR, 0);
                self.set_access(tid, None);
                recipe
            }
            13 => Recipe::Unrelated { tid, signo: SIGALRM, code: SI_KERNEL, pid: 0 },
            14 => Recipe::Unrelated { tid, signo: SIGCHLD, code: CLD_EXITED, pid: OTHER_PID },
            15 => Recipe::Sigusr1(tid, Sigusr1::FromKill),
            16 => Recipe::OtherStop(tid, None),
            17 if tid == MAIN => Recipe::Exited(i32::from(self.choices.next() % 3)),
            17 => {
                self.tasks.remove(&tid);
                Recipe::TaskExited(tid)
            }
            18 | 19 => self.spawn(tid, TaskKind::Thread),
            20 => {
                let kind = if self.choices.percent(30) { TaskKind::Vfork } else { TaskKind::Fork };
                self.spawn(tid, kind)
            }
            _ => self.send_message(tid),
        }
    }

    /// Returns the system-call stop of `tid`, if it stops at system calls and makes one now:
    /// `write` from a traced page or elsewhere, or `getpid`.
    fn system_call(&mut self, tid: i32) -> Option<Recipe> {
        let task = self.tasks.get_mut(&tid)?;
        if let Some((number, buf)) = task.in_syscall.take() {
            return Some(Recipe::Syscall { tid, phase: SyscallPhase::Exit, number, buf: Hex(buf) });
        }
        if !task.syscall_stops || !self.choices.percent(10) {
            return None;
        }
        let (number, buf) = match self.choices.below(3) {
            0 => (SYS_WRITE, PAGE_A + 0x10),
            1 => (SYS_WRITE, PAGE_UNTRACED),
            _ => (SYS_GETPID, 0),
        };
        let task = self.tasks.get_mut(&tid)?;
        task.in_syscall = Some((number, buf));
        Some(Recipe::Syscall { tid, phase: SyscallPhase::Entry, number, buf: Hex(buf) })
    }

    /// Plays thread `parent` creating a task of `kind`. The kernel reports the creation at
    /// the parent and the new task's first stop in either order.
    fn spawn(&mut self, parent: i32, kind: TaskKind) -> Recipe {
        let tid = if kind == TaskKind::Thread {
            match THREADS.iter().find(|tid| !self.tasks.contains_key(tid)) {
                Some(&tid) => tid,
                None => return self.send_message(parent),
            }
        } else {
            self.next_process += 1;
            self.next_process - 1
        };
        let first_stop = Recipe::OtherStop(tid, Some(Hex(CLONE_RETURN_RIP)));
        let announcement = Recipe::NewTask { parent, tid, kind };
        if self.choices.percent(50) {
            let mut task = SimTask::new(kind, SimState::Running);
            task.forced = Some(first_stop);
            self.tasks.insert(tid, task);
            announcement
        } else {
            self.tasks.insert(tid, SimTask::new(kind, SimState::Stopped));
            if let Some(parent) = self.tasks.get_mut(&parent) {
                parent.forced = Some(announcement);
            }
            first_stop
        }
    }

    fn traced_access(&mut self, tid: i32) -> Recipe {
        let pages = self.call.as_ref().map(|call| call.pages.clone()).unwrap_or_default();
        let range = pages[self.choices.below(pages.len())];
        let page = range.start + PAGE_SIZE * self.choices.below((range.len / PAGE_SIZE) as usize) as u64;
        let instruction = &INSTRUCTIONS[self.choices.below(INSTRUCTIONS.len())];
        let offset = match self.choices.below(4) {
            0 => 0,
            1 => PAGE_SIZE - 4,
            2 => 0x800,
            _ => u64::from(self.choices.next()) * 8,
        };
        let writes = match instruction.writes {
            Writes::Never => false,
            Writes::Always => true,
            Writes::Masked => self.choices.percent(50),
        };
        self.set_access(tid, Some(SimAccess { rdi: page + offset, instruction, writes }));
        let code = self.denied_code();
        self.fault(tid, code, page + offset)
    }

    fn send_message(&mut self, tid: i32) -> Recipe {
        let in_call = self.call.is_some();
        let protect = if self.choices.percent(50) { Protect::Key(KEY) } else { Protect::Gadget(Hex(GADGET)) };
        let accesses = if self.choices.percent(30) { Accesses::Emulated } else { Accesses::Stepped };
        let message = match self.choices.below(10) {
            // The child's usual end: the marker system call, with no message and no signal.
            0..=3 if in_call => return Recipe::EndMarker { tid, marked_tid: tid },
            4..=5 if in_call => Recipe::End,
            0..=5 => {
                let choices =
                    [PageChoice::OnePage, PageChoice::TwoAdjacent, PageChoice::TwoApart, PageChoice::ThreePages];
                Recipe::Start(choices[self.choices.below(choices.len())], protect, accesses)
            }
            6 => Recipe::Start(PageChoice::Unaligned, protect, accesses),
            7 => Recipe::Start(PageChoice::OnePage, Protect::Gadget(Hex(OTHER_GADGET)), accesses),
            8 => Recipe::End,
            _ => Recipe::SetExitCode(i32::from(self.choices.next())),
        };
        self.channel.push_back(message);
        Recipe::Sigusr1(tid, Sigusr1::Protocol)
    }
}

/// Plays the simulated program against the core for up to `max_events` events.
fn run_driver(bytes: Vec<u8>, max_events: usize) -> Result<Coverage, TestCaseError> {
    let mut program = SimulatedProgram::new(Choices { bytes, position: 0 });
    let mut checker = Checker::new();

    let mut recipe = program.send_message(MAIN);
    if let Some(main) = program.tasks.get_mut(&MAIN) {
        main.state = SimState::Stopped;
    }
    for _ in 0..max_events {
        let actions = checker.feed(&recipe)?;
        match program.next(&checker, &actions)? {
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
    fn driver_orders(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        run_driver(bytes, 300)?;
    }
}

/// Returns the gather in [`INSTRUCTIONS`].
fn gather_instruction() -> &'static Instruction {
    INSTRUCTIONS.iter().find(|instruction| instruction.bytes[0] == 0xc4).expect("the gather is listed")
}

/// Returns true if the decoder requests the vector registers to decode the gather.
fn decoder_needs_vectors_for_gather() -> bool {
    let gather = gather_instruction();
    let regs = Registers { rdi: PAGE_A, ..registers_at(CODE) };
    matches!(decode_x86_64(gather.bytes, &regs), Decoded::NeedsVectorRegisters)
}

#[test]
fn driver_orders_reach_every_path() {
    let coverage = total_coverage(proptest::collection::vec(any::<u8>(), 0..600), 256, |bytes| run_driver(bytes, 300));
    eprintln!("{coverage:#?}");
    assert!(coverage.pages_opened > 0, "no access opened its pages");
    assert!(coverage.extra_pages_opened > 0, "no unpredicted page was opened");
    assert!(coverage.instructions_stepped > 0, "no faulting instruction was stepped with mprotect");
    assert!(coverage.key_steps > 0, "no faulting instruction was stepped with a protection key");
    assert!(coverage.concurrent_key_steps > 0, "no two threads had the key open at once");
    assert!(coverage.accesses_returned > 0, "no trace returned an access");
    assert!(coverage.deferred_signals_delivered > 0, "no deferred signal was delivered");
    if decoder_needs_vectors_for_gather() {
        assert!(coverage.vector_register_reads > 0, "no vector registers were read");
    }
    assert!(coverage.rejected_starts > 0, "no start request was rejected");
    assert!(coverage.crash_reports > 0, "no crash was reported");
    assert!(coverage.protocol_error_reports > 0, "no protocol error was reported");
    assert!(coverage.died_during_call_reports > 0, "no death during a call was reported");
    assert!(coverage.holds > 0, "no thread was held while another stepped");
    assert!(coverage.releases > 0, "no held thread was released");
    assert!(coverage.threads_created > 0, "no thread was created");
    assert!(coverage.processes_detached > 0, "no forked process was detached");
    assert!(coverage.process_pages_opened > 0, "no forked process had its pages opened");
    assert!(coverage.message_polls > 0, "no program ended with its last trace unacknowledged");
    assert!(coverage.marker_ends > 0, "no call ended with the end marker");
    assert!(coverage.memory_reads > 0, "no access was carried out by reading memory");
    assert!(coverage.memory_writes > 0, "no access was carried out by writing memory");
}

#[test]
fn random_orders_reach_stepping() {
    let coverage = total_coverage(recipes(), 256, |recipes| run_random(&recipes));
    eprintln!("{coverage:#?}");
    assert!(coverage.pages_opened > 0, "no access opened its pages");
    assert!(coverage.instructions_stepped > 0, "no faulting instruction was stepped with mprotect");
    assert!(coverage.key_steps > 0, "no faulting instruction was stepped with a protection key");
    assert!(coverage.concurrent_key_steps > 0, "no two threads had the key open at once");
    assert!(coverage.holds > 0, "no thread was held while another stepped");
    assert!(coverage.releases > 0, "no held thread was released");
    assert!(coverage.crash_reports > 0, "no crash was reported");
    assert!(coverage.protocol_error_reports > 0, "no protocol error was reported");
    assert!(coverage.died_during_call_reports > 0, "no death during a call was reported");
}

/// Feeds `recipes` to a fresh checker, panicking with the checker's report if a property
/// fails, and returns the actions of each.
fn feed_all(checker: &mut Checker, recipes: &[Recipe]) -> Vec<Vec<Action>> {
    recipes.iter().map(|recipe| checker.feed(recipe).unwrap_or_else(|failure| panic!("{failure}"))).collect()
}

/// The events that start a call on page A with `protect`, from the main thread.
fn start_on_page_a(protect: Protect) -> [Recipe; 2] {
    [Recipe::Sigusr1(MAIN, Sigusr1::Protocol), Recipe::Start(PageChoice::OnePage, protect, Accesses::Stepped)]
}

/// A stop that is not a signal delivery, arriving while the faulting instruction is being
/// stepped, must not resume the child freely: its page is open.
#[test]
fn other_stop_during_step_repeats_step() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[traced_fault(MAIN, PAGE_A, INSTRUCTIONS[0].bytes, SEGV_ACCERR, Disposition::Default)]);
    feed_all(&mut checker, &[gadget_trap(MAIN)]);
    let actions = feed_all(&mut checker, &[Recipe::OtherStop(MAIN, None)]);
    assert_eq!(actions[0], vec![Action::Step { tid: MAIN, signal: None }]);
}

/// The same with a protection key: the thread's key rights are open while it steps.
#[test]
fn other_stop_during_key_step_repeats_step() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &start_on_page_a(Protect::Key(KEY)));
    feed_all(&mut checker, &[traced_fault(MAIN, PAGE_A, INSTRUCTIONS[0].bytes, SEGV_PKUERR, Disposition::Default)]);
    let actions = feed_all(&mut checker, &[Recipe::OtherStop(MAIN, None)]);
    assert_eq!(actions[0], vec![Action::Step { tid: MAIN, signal: None }]);
}

/// Once the core has emitted `Finish`, no event makes it act again.
#[test]
fn events_after_finish_ignored() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &[Recipe::Exited(0)]);
    let later = [
        Recipe::Sigusr1(MAIN, Sigusr1::Protocol),
        Recipe::OtherStop(MAIN, None),
        Recipe::NewTask { parent: MAIN, tid: THREAD_2, kind: TaskKind::Thread },
        Recipe::TaskExited(THREAD_2),
        Recipe::Killed(SIGKILL, false),
    ];
    for recipe in later {
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
    let gather = gather_instruction();
    let mut checker = Checker::new();
    feed_all(&mut checker, &[Recipe::Sigusr1(MAIN, Sigusr1::Protocol)]);
    feed_all(&mut checker, &[Recipe::Start(PageChoice::TwoAdjacent, Protect::Gadget(Hex(GADGET)), Accesses::Stepped)]);
    let actions = feed_all(&mut checker, &[traced_fault(MAIN, PAGE_A, gather.bytes, SEGV_ACCERR, Disposition::Caught)]);
    assert_eq!(actions[0], vec![Action::ReadVectorRegisters { tid: MAIN }]);

    let untraced = traced_fault(MAIN, PAGE_UNTRACED, INSTRUCTIONS[0].bytes, SEGV_ACCERR, Disposition::Default);
    let actions = feed_all(&mut checker, &[untraced]).remove(0);
    assert!(matches!(&actions[0], Action::Report(report) if matches!(**report, Report::Crash(_))), "the untraced fault is a crash: {actions:?}");
    let delivered = matches!(
        actions[1],
        Action::Continue { signal: Some(_), .. } | Action::ContinueToSyscall { signal: Some(_), .. }
    );
    assert!(delivered, "the crash is delivered: {actions:?}");
    let late = feed_all(&mut checker, &[Recipe::VectorRegisters(MAIN)]);
    assert!(late[0].is_empty(), "late vector registers restarted the dropped fault");
}

/// Two different signals arriving while one instruction is stepped must both reach the
/// program: the first with the final `Continue`, the others queued to the thread again.
#[test]
fn all_signals_held_during_step_delivered() {
    let mut checker = Checker::new();
    let mut recipes = start_on_page_a(Protect::Gadget(Hex(GADGET))).to_vec();
    recipes.extend([
        traced_fault(MAIN, PAGE_A, INSTRUCTIONS[0].bytes, SEGV_ACCERR, Disposition::Default),
        gadget_trap(MAIN),
        Recipe::Unrelated { tid: MAIN, signo: SIGALRM, code: SI_KERNEL, pid: 0 },
        Recipe::Unrelated { tid: MAIN, signo: SIGCHLD, code: CLD_EXITED, pid: OTHER_PID },
        instruction_trap(MAIN, &INSTRUCTIONS[0], 0),
        gadget_trap(MAIN),
        // The program runs on and stops again, giving the core a chance at another delivery.
        Recipe::OtherStop(MAIN, None),
    ]);
    let mut delivered = Vec::new();
    for action in feed_all(&mut checker, &recipes).into_iter().flatten() {
        match action {
            Action::Step { signal: Some(info), .. }
            | Action::Continue { signal: Some(info), .. }
            | Action::ContinueToSyscall { signal: Some(info), .. }
            | Action::QueueSignal { info, .. } => delivered.push(info.signo),
            _ => {}
        }
    }
    assert!(delivered.contains(&SIGALRM), "SIGALRM was not delivered: {delivered:?}");
    assert!(delivered.contains(&SIGCHLD), "SIGCHLD was not delivered: {delivered:?}");
}

/// Returns the events that create the threads 4322 and 4323, each announced before its first
/// stop.
fn spawn_threads() -> Vec<Recipe> {
    let mut recipes = Vec::new();
    for tid in [THREAD_2, THREAD_3] {
        recipes.push(Recipe::NewTask { parent: MAIN, tid, kind: TaskKind::Thread });
        recipes.push(Recipe::OtherStop(tid, Some(Hex(CLONE_RETURN_RIP))));
    }
    recipes
}

/// Builds the fault of `mov eax, dword [rdi]` in `tid` on a traced page at `addr`.
fn load_fault(tid: i32, addr: u64, code: i32) -> Recipe {
    traced_fault(tid, addr, INSTRUCTIONS[0].bytes, code, Disposition::Unknown)
}

/// With `mprotect`, a held thread whose access needs its vector registers starts that access
/// with every other thread kept stopped: fetching the registers counts as stepping.
#[test]
fn vector_fetch_keeps_threads_stopped() {
    if !decoder_needs_vectors_for_gather() {
        return;
    }
    let gather = gather_instruction();
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads()[..2]);
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[load_fault(MAIN, PAGE_A, SEGV_ACCERR)]);
    feed_all(&mut checker, &[traced_fault(THREAD_2, PAGE_A + 0x40, gather.bytes, SEGV_ACCERR, Disposition::Unknown)]);
    feed_all(&mut checker, &[gadget_trap(MAIN), instruction_trap(MAIN, &INSTRUCTIONS[0], 1), gadget_trap(MAIN)]);
    let actions = feed_all(&mut checker, &[Recipe::OtherStop(MAIN, None)]).remove(0);
    assert_eq!(actions, vec![Action::ReadVectorRegisters { tid: THREAD_2 }]);
    feed_all(&mut checker, &[Recipe::VectorRegisters(THREAD_2)]);
}

/// A thread stepping with its key open when another thread ends the call gets the key closed
/// before it resumes: the child keeps the key for later calls.
#[test]
fn key_closed_when_call_ends_during_step() {
    let store = &INSTRUCTIONS[1];
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads()[..2]);
    feed_all(&mut checker, &start_on_page_a(Protect::Key(KEY)));
    feed_all(&mut checker, &[traced_fault(THREAD_2, PAGE_A, store.bytes, SEGV_PKUERR, Disposition::Unknown)]);
    feed_all(&mut checker, &[Recipe::Sigusr1(MAIN, Sigusr1::Protocol), Recipe::End]);
    let actions = feed_all(&mut checker, &[instruction_trap(THREAD_2, store, 0)]).remove(0);
    let closed = Action::SetKeyRights { tid: THREAD_2, key: KEY, rights: KeyRights::NoAccess };
    assert_eq!(actions, vec![closed, Action::Continue { tid: THREAD_2, signal: None }]);
}

/// A step that began in a call that has ended is finished without that call, even when a new
/// call has started. Its fault on a page the new call protects restarts the instruction
/// instead of reaching the program as a SIGSEGV.
#[test]
fn step_of_ended_call_restarts_after_new_start() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads()[..2]);
    feed_all(&mut checker, &start_on_page_a(Protect::Key(KEY)));
    feed_all(&mut checker, &[load_fault(THREAD_2, PAGE_A, SEGV_PKUERR)]);
    feed_all(&mut checker, &[Recipe::Sigusr1(MAIN, Sigusr1::Protocol), Recipe::End]);
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    let actions = feed_all(&mut checker, &[load_fault(THREAD_2, PAGE_A, SEGV_ACCERR)]).remove(0);
    let closed = Action::SetKeyRights { tid: THREAD_2, key: KEY, rights: KeyRights::NoAccess };
    assert_eq!(actions, vec![closed, Action::ContinueToSyscall { tid: THREAD_2, signal: None }]);
}

/// With `mprotect`, a thread whose parent reports its creation as the stop for an interrupt
/// is kept stopped from its first stop on, and the pages open only after that stop.
#[test]
fn thread_created_while_stopping_stays_stopped() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads()[..2]);
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[load_fault(MAIN, PAGE_A, SEGV_ACCERR)]);
    let created =
        feed_all(&mut checker, &[Recipe::NewTask { parent: THREAD_2, tid: THREAD_3, kind: TaskKind::Thread }]);
    assert!(created[0].is_empty(), "the pages opened before the new thread stopped: {:?}", created[0]);
    feed_all(&mut checker, &[Recipe::OtherStop(THREAD_3, Some(Hex(CLONE_RETURN_RIP)))]);
    feed_all(&mut checker, &[gadget_trap(MAIN), instruction_trap(MAIN, &INSTRUCTIONS[0], 1), gadget_trap(MAIN)]);
}

/// With `mprotect`, when the thread waiting for the others to stop ends, the next held fault
/// still waits for a thread that was interrupted and has not stopped yet.
#[test]
fn interrupted_thread_awaited_after_waiting_thread_exits() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads());
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[load_fault(THREAD_3, PAGE_A, SEGV_ACCERR)]);
    feed_all(&mut checker, &[load_fault(MAIN, PAGE_A, SEGV_ACCERR)]);
    let exited = feed_all(&mut checker, &[Recipe::TaskExited(THREAD_3)]).remove(0);
    assert!(!exited.iter().any(|action| matches!(action, Action::Step { .. })), "stepped too early: {exited:?}");
    feed_all(&mut checker, &[Recipe::OtherStop(THREAD_2, None), gadget_trap(MAIN)]);
}

/// A process forked during a call whose first stop comes after the call ended still has its
/// copy of the pages protected: it is released for the call it was forked in.
#[test]
fn fork_released_for_its_call_after_end() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[Recipe::NewTask { parent: MAIN, tid: FORKED, kind: TaskKind::Fork }]);
    feed_all(&mut checker, &[Recipe::Sigusr1(MAIN, Sigusr1::Protocol), Recipe::End]);
    let first_stop = feed_all(&mut checker, &[Recipe::OtherStop(FORKED, Some(Hex(CLONE_RETURN_RIP)))]).remove(0);
    assert!(matches!(first_stop.last(), Some(Action::Step { tid: FORKED, .. })), "no gadget step: {first_stop:?}");
    feed_all(&mut checker, &[gadget_trap(FORKED)]);
}

/// A fault held under one call is not started under a later call that does not trace its
/// page: the instruction runs again instead. A step of an earlier call with a protection key
/// keeps the fault held while another thread ends the call and starts two more.
#[test]
fn held_fault_of_ended_call_runs_again() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &spawn_threads());
    feed_all(&mut checker, &start_on_page_a(Protect::Key(KEY)));
    feed_all(&mut checker, &[load_fault(MAIN, PAGE_A, SEGV_PKUERR)]);
    feed_all(&mut checker, &[Recipe::Sigusr1(THREAD_3, Sigusr1::Protocol), Recipe::End]);
    let start_two = Recipe::Start(PageChoice::TwoApart, Protect::Gadget(Hex(GADGET)), Accesses::Stepped);
    feed_all(&mut checker, &[Recipe::Sigusr1(THREAD_3, Sigusr1::Protocol), start_two]);
    let held = feed_all(&mut checker, &[load_fault(THREAD_2, PAGE_C, SEGV_ACCERR)]).remove(0);
    assert!(held.is_empty(), "the fault was not held: {held:?}");
    feed_all(&mut checker, &[Recipe::Sigusr1(THREAD_3, Sigusr1::Protocol), Recipe::End]);
    let start_one = Recipe::Start(PageChoice::OnePage, Protect::Gadget(Hex(GADGET)), Accesses::Stepped);
    feed_all(&mut checker, &[Recipe::Sigusr1(THREAD_3, Sigusr1::Protocol), start_one]);
    feed_all(&mut checker, &[instruction_trap(MAIN, &INSTRUCTIONS[0], 1)]);
    let stopped = feed_all(&mut checker, &[Recipe::OtherStop(MAIN, None), Recipe::OtherStop(THREAD_3, None)]);
    let resumed = stopped.concat();
    assert!(
        resumed.contains(&Action::ContinueToSyscall { tid: THREAD_2, signal: None }),
        "the held instruction does not run again: {resumed:?}"
    );
}

/// A system-call stop can follow only `ContinueToSyscall`; should one come for a thread that
/// steps with its page open, the step is repeated.
#[test]
fn system_call_stop_while_stepping_repeats_step() {
    let mut checker = Checker::new();
    feed_all(&mut checker, &start_on_page_a(Protect::Gadget(Hex(GADGET))));
    feed_all(&mut checker, &[load_fault(MAIN, PAGE_A, SEGV_ACCERR), gadget_trap(MAIN)]);
    let stop = Recipe::Syscall { tid: MAIN, phase: SyscallPhase::Entry, number: SYS_GETPID, buf: Hex(0) };
    let actions = feed_all(&mut checker, &[stop]).remove(0);
    assert_eq!(actions, vec![Action::Step { tid: MAIN, signal: None }]);
}

/// Memory the core did not request leaves the thread as it was: its next stop resumes it.
#[test]
fn unrequested_memory_keeps_thread() {
    let mut checker = Checker::new();
    let ignored = feed_all(&mut checker, &[Recipe::Memory(MAIN, None)]).remove(0);
    assert!(ignored.is_empty(), "unrequested memory produced {ignored:?}");
    let actions = feed_all(&mut checker, &[Recipe::OtherStop(MAIN, None)]).remove(0);
    assert_eq!(actions, vec![Action::Continue { tid: MAIN, signal: None }]);
}
