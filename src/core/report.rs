//! Diagnoses the core hands to the embedder through [`super::Action::Report`].

use serde::{Deserialize, Serialize};

use super::event::SigInfo;
use crate::event::{CallTrace, PageRange};
use crate::regs::Registers;

/// Something the embedder should hear about that the traced program cannot be told.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Report {
    /// A fault the program does not handle: the program is about to die of it.
    Crash(Crash),
    /// The program exited or was killed while a traced call was running.
    #[allow(missing_docs)]
    DiedDuringCall { status: ExitStatus, trace: CallTrace, pages: Vec<PageRange> },
    /// The traced program or the OS broke the protocol; the program is killed.
    #[allow(missing_docs)]
    ProtocolError { message: String, trace: Option<CallTrace> },
}

/// A fatal fault: where it happened and what was traced before it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crash {
    /// The fault's signal information (`addr` is the faulting data address).
    pub info: SigInfo,
    /// Registers at the faulting instruction.
    pub regs: Registers,
    /// The faulting instruction in Intel syntax, when it could be decoded.
    pub instruction: Option<String>,
    /// The accesses traced so far when the crash happened inside a traced call.
    pub trace: Option<CallTrace>,
    /// The pages of that call (empty outside a call).
    pub pages: Vec<PageRange>,
}

/// How the traced program ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    #[allow(missing_docs)]
    Killed { signal: i32, core_dumped: bool },
}

impl ExitStatus {
    /// Returns the shell's convention for this status: the exit status, or 128 plus the signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Exited(status) => status,
            ExitStatus::Killed { signal, .. } => 128 + signal,
        }
    }
}
