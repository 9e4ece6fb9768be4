//! What the core asks the driver to do.

use serde::{Deserialize, Serialize};

use super::event::SigInfo;
use super::report::Report;
use crate::messages::SupervisorMessage;
use crate::regs::Registers;

/// One step for the driver to carry out, in the order the core returned them.
///
/// The enum is exhaustive on purpose: a new variant must break the driver's build until the
/// driver executes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Overwrite the stopped thread's general-purpose registers.
    SetRegisters(Registers),
    /// Write `bytes` into the traced process at `addr`, whatever the page's protection.
    #[allow(missing_docs)]
    WriteMemory { addr: u64, bytes: Vec<u8> },
    /// Resume the stopped thread for one instruction, delivering `signal` if given.
    #[allow(missing_docs)]
    Step { signal: Option<SigInfo> },
    /// Make `signal` pending for the thread again, as the kernel would on delivery. Signals
    /// the kernel raised (and `tgkill`s) cannot be re-queued with their original siginfo, so
    /// those arrive as a `tgkill` of the same number.
    QueueSignal(SigInfo),
    /// Resume the stopped thread, delivering `signal` if given.
    #[allow(missing_docs)]
    Continue { signal: Option<SigInfo> },
    /// Read the stopped thread's vector and opmask registers and feed them back as
    /// [`super::ExecEvent::VectorRegisters`].
    ReadVectorRegisters,
    /// Receive the next message the child sent over the IPC channel and feed it back as
    /// [`super::ExecEvent::Message`] (or [`super::ExecEvent::MessageLost`]).
    ReceiveMessage,
    /// Send a message to the child over the IPC channel.
    Reply(SupervisorMessage),
    /// Hand a diagnosis to the embedder (crash, death mid-call, protocol breach).
    Report(Report),
    /// Kill the traced process with SIGKILL.
    Kill,
    /// The traced process is gone: stop supervising and exit with this status.
    #[allow(missing_docs)]
    Finish { exit_code: i32 },
}
