//! What the core asks the driver to do.

use serde::{Deserialize, Serialize};

use super::event::SigInfo;
use super::report::Report;
use crate::event::{Access, AccessRun};
use crate::messages::SupervisorMessage;
use crate::regs::Registers;

/// One step for the driver to carry out, in the order the core returned them.
///
/// The enum is exhaustive on purpose: a new variant must break the driver's build until the
/// driver executes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Action {
    /// Overwrite the stopped thread's general-purpose registers.
    SetRegisters { tid: i32, regs: Registers },
    /// Write `bytes` into the process of thread `tid` at `addr`, whatever the page's protection.
    WriteMemory { tid: i32, addr: u64, bytes: Vec<u8> },
    /// Write `count` zero words at `addr` one `PTRACE_POKEDATA` at a time (the benchmarks'
    /// comparison protocol only).
    ZeroWords { tid: i32, addr: u64, count: u32 },
    /// Overwrite the low `bytes.len()` bytes (at most 64) of the stopped thread's vector
    /// register `register` (`xmm`/`ymm`/`zmmN`), keeping the bytes above.
    SetVectorRegister { tid: i32, register: u8, bytes: Vec<u8> },
    /// Set the stopped thread's PKRU rights for protection key `key`.
    SetKeyRights { tid: i32, key: u32, rights: KeyRights },
    /// Resume the stopped thread for one instruction, delivering `signal` if given.
    Step { tid: i32, signal: Option<SigInfo> },
    /// Make `signal` pending for the thread again, as the kernel would on delivery. Signals
    /// the kernel raised (and `tgkill`s) cannot be re-queued with their original siginfo, so
    /// those arrive as a `tgkill` of the same number.
    QueueSignal { tid: i32, info: SigInfo },
    /// Resume the stopped thread, delivering `signal` if given.
    Continue { tid: i32, signal: Option<SigInfo> },
    /// Like `Continue`, but the thread also stops at its next system-call entry or exit
    /// (`PTRACE_SYSCALL`). The core resumes this way during traced calls.
    ContinueToSyscall { tid: i32, signal: Option<SigInfo> },
    /// Stop the running thread (`PTRACE_INTERRUPT`); it reports a stop later.
    Interrupt { tid: i32 },
    /// Stop tracing the stopped task (a process the program forked), which then runs freely.
    Detach { tid: i32 },
    /// Read the stopped thread's vector and opmask registers and feed them back as
    /// [`super::ExecEvent::VectorRegisters`].
    ReadVectorRegisters { tid: i32 },
    /// Read `len` bytes of the process of thread `tid` at `addr`, whatever the protection,
    /// and feed them back as [`super::ExecEvent::Memory`].
    ReadMemory { tid: i32, addr: u64, len: usize },
    /// Like `ReadMemory`, but only where the program itself may read, as for memory off the
    /// traced pages: `None` comes back where it would fault.
    ReadMemoryAsProgram { tid: i32, addr: u64, len: usize },
    /// Write `bytes` at `addr` only where the program itself may write, and feed back whether
    /// all of them were written as [`super::ExecEvent::MemoryWritten`].
    WriteMemoryAsProgram { tid: i32, addr: u64, bytes: Vec<u8> },
    /// Read what the program does with `signal` and feed it back as
    /// [`super::ExecEvent::Disposition`].
    ReadDisposition { tid: i32, signal: i32 },
    /// Receive the next message the child sent over the IPC channel and feed it back as
    /// [`super::ExecEvent::Message`] (or [`super::ExecEvent::MessageLost`]).
    ReceiveMessage,
    /// Like `ReceiveMessage`, for a message that, if it exists, was sent already: wait only
    /// briefly. Used after the program ended.
    PollMessage,
    /// Send a message to the child over the IPC channel.
    Reply(SupervisorMessage),
    /// Hand a diagnosis to the embedder (crash, death mid-call, protocol breach).
    Report(Box<Report>),
    /// Kill the traced program with SIGKILL.
    Kill,
    /// The traced program is gone: stop supervising and exit with this status.
    Finish { exit_code: i32 },
    /// Append `records` to the trace of board call number `call` on the call board, and store
    /// whether the trace is complete with them (no note, no unsupported instruction).
    Publish { call: u64, records: Vec<Recorded>, complete: bool },
    /// Set the system-call selector of thread slot `slot` on the call board: blocked system
    /// calls raise SIGSYS (syscall user dispatch) instead of running.
    SetSyscallSelector { slot: u16, block: bool },
    /// Turn on syscall user dispatch for the stopped thread, with the selector of `slot`.
    WatchSystemCalls { tid: i32, slot: u16 },
    /// Add `signal` to the stopped thread's blocked signals (`PTRACE_SETSIGMASK`).
    BlockSignal { tid: i32, signal: i32 },
}

/// One recording step of a trace, as the program replays it from the call board: the
/// accesses pushed one at a time and the runs pushed whole, in order, fold into the same log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    /// One access.
    Access(Access),
    /// A run of accesses recorded at once (a `rep` block).
    Run(AccessRun),
}

/// A thread's access rights to the pages of one protection key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyRights {
    /// Any access faults.
    NoAccess,
    /// Reads succeed, writes fault.
    ReadOnly,
    /// Reads and writes succeed.
    ReadWrite,
}
