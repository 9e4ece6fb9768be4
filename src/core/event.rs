//! What the driver tells the core: stops, exits and messages of the traced program.

use serde::{Deserialize, Serialize};

use crate::event::PageRange;
use crate::messages::{ChildMessage, StartRequest};
use crate::regs::{Registers, VectorRegisters};

/// One thing that happened to the traced program, as observed by the driver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExecEvent {
    /// The child's message that [`super::Action::ReceiveMessage`] asked for.
    Message(ChildMessage),
    /// [`super::Action::ReceiveMessage`] found no message: the channel closed or timed out.
    #[allow(missing_docs)]
    MessageLost { reason: String },
    /// A thread stopped because a signal is about to be delivered to it (a
    /// signal-delivery-stop), including the traps of single-steps.
    Signal(SignalStop),
    /// A stopped thread's vector registers, which [`super::Action::ReadVectorRegisters`]
    /// asked for.
    #[allow(missing_docs)]
    VectorRegisters { tid: i32, vectors: VectorRegisters },
    /// Thread `parent` created `tid` (a thread or a process), which is now traced too. `parent`
    /// is stopped at the event; `tid` reports its own first stop separately, before or after.
    #[allow(missing_docs)]
    NewTask { parent: i32, tid: i32, kind: TaskKind },
    /// A ptrace stop that is not a signal delivery: group-stop, `PTRACE_EVENT_STOP` (a new
    /// task's first stop among them), exec. `regs` are the thread's registers, when readable.
    #[allow(missing_docs)]
    OtherStop { tid: i32, regs: Option<Registers> },
    /// A thread stopped at the entry to or the exit from a system call, which happens only
    /// after [`super::Action::ContinueToSyscall`]. `compat` marks a 32-bit system call
    /// (`int 0x80`), whose numbers differ from the x86-64 ones.
    #[allow(missing_docs)]
    Syscall {
        tid: i32,
        regs: Registers,
        phase: SyscallPhase,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        compat: bool,
    },
    /// The memory [`super::Action::ReadMemory`] or [`super::Action::ReadMemoryAsProgram`]
    /// asked for, or `None` if it could not be read.
    #[allow(missing_docs)]
    Memory { tid: i32, bytes: Option<Vec<u8>> },
    /// Whether every byte of a [`super::Action::WriteMemoryAsProgram`] was written.
    #[allow(missing_docs)]
    MemoryWritten { tid: i32, written: bool },
    /// The disposition [`super::Action::ReadDisposition`] asked for.
    #[allow(missing_docs)]
    Disposition { tid: i32, disposition: Disposition },
    /// A traced task other than the program's main thread ended.
    #[allow(missing_docs)]
    TaskExited { tid: i32 },
    /// The traced program exited with this status.
    #[allow(missing_docs)]
    Exited { status: i32 },
    /// The traced program was killed by this signal.
    #[allow(missing_docs)]
    Killed { signal: i32, core_dumped: bool },
    /// The call on the call board changed since the driver last looked: a call started or
    /// ended without stopping. The driver looks before it feeds each stop.
    CallBoard(BoardCall),
}

/// The call the program announced on the call board.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoardCall {
    /// The call's number, counted by the program from 1.
    pub call: u64,
    /// True from the start of the call until it returned.
    pub active: bool,
    /// The thread that makes the call.
    pub tid: i32,
    /// The call's pages and how they are protected.
    pub request: StartRequest,
    /// The program's code that syscall user dispatch lets through: the `syscall` gadget, then
    /// room for the trampolines the core writes.
    pub exempt: PageRange,
    /// The number of the last call whose trace the program took and returned to its caller.
    #[serde(default)]
    pub received: u64,
}

/// Whether a system-call stop is at the call's entry or its exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyscallPhase {
    /// Before the kernel runs the call: `orig_rax` is the number, the arguments are in place.
    Entry,
    /// After the call: `rax` is its result.
    Exit,
}

/// The kind of task a `clone`, `fork` or `vfork` made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskKind {
    /// A thread of the traced program.
    Thread,
    /// A new process with a copy of the program's memory.
    Fork,
    /// A new process that shares the program's memory until it execs or exits.
    Vfork,
}

/// The facts the driver gathers at a signal-delivery-stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalStop {
    /// The stopped thread.
    pub tid: i32,
    /// The pending signal's `siginfo_t`.
    pub info: SigInfo,
    /// The thread's registers at the stop.
    pub regs: Registers,
    /// Up to 15 instruction bytes read at `regs.rip` (fewer where the code ends at an
    /// unreadable page, none when it could not be read).
    pub code: Vec<u8>,
    /// What the program does with this signal when it is delivered.
    pub disposition: Disposition,
}

/// A process's disposition for one signal, from `/proc/PID/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disposition {
    /// SIG_DFL: for a fault this ends the program.
    Default,
    /// SIG_IGN.
    Ignored,
    /// A handler is installed.
    Caught,
    /// Not read yet: the core requests it with [`super::Action::ReadDisposition`] when needed.
    Unknown,
}

/// The fields of a `siginfo_t` that the core reads, plus the whole structure so a delayed
/// signal can be re-delivered unchanged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigInfo {
    /// `si_signo`.
    pub signo: i32,
    /// `si_code`: positive when the kernel raised the signal, negative or zero from a process.
    pub code: i32,
    /// `si_addr` for faults (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP), otherwise 0.
    pub addr: u64,
    /// `si_pid` for signals sent by a process, otherwise 0.
    pub pid: i32,
    /// `si_value` (as a pointer) for queued signals, otherwise 0.
    pub value: u64,
    /// The raw 128-byte `siginfo_t`.
    pub raw: [u64; 16],
}

impl SigInfo {
    /// Builds a siginfo from its decoded fields, with the raw bytes zeroed (for tests).
    pub fn new(signo: i32, code: i32, addr: u64) -> SigInfo {
        SigInfo { signo, code, addr, pid: 0, value: 0, raw: [0; 16] }
    }
}
