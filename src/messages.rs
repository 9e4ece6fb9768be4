//! Messages between the traced program (the child) and the supervisor, sent over ipc-channel.
//!
//! The child never relies on the supervisor reading its memory for these facts: it states the
//! pages, the page size and where its system-call gadget lives.

use serde::{Deserialize, Serialize};

use crate::event::{CallTrace, PageRange};

/// A request from the child. Each one is sent just before the child stops itself with the
/// protocol signal, so the supervisor receives it while the child is stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChildMessage {
    /// A traced call is about to start on these pages.
    Start(StartRequest),
    /// The traced call returned and the child made the pages accessible again.
    End,
    /// The supervisor should exit with this status when the program exits normally.
    SetExitCode(i32),
}

/// The pages of one traced call and the facts the supervisor needs to trace them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// Page-aligned, sorted, non-overlapping runs of pages to trace.
    pub pages: Vec<PageRange>,
    /// The child's page size in bytes.
    pub page_size: u64,
    /// Address of a `syscall` instruction in the child that the supervisor may point the
    /// child at to run `mprotect` on its behalf.
    pub syscall_gadget: u64,
}

/// A message from the supervisor to the child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorMessage {
    /// Sent once after fork: whether the supervisor attached with ptrace, or why not.
    Attached(Result<(), String>),
    /// The answer to [`ChildMessage::Start`].
    StartReply(StartReply),
    /// The answer to [`ChildMessage::End`]: the call's accesses in order.
    Trace(CallTrace),
    /// The request was rejected because it broke the protocol (for example `End` outside a call).
    Rejected(String),
}

/// The supervisor's answer to a start request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartReply {
    /// The supervisor is tracing the pages: the child may protect them and make the call.
    Started,
    /// The request was invalid; nothing is traced.
    Rejected(String),
}
