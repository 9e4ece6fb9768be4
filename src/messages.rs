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
    /// The child received the trace of its last call. Sent without stopping: the supervisor
    /// reads it with the next message, or when the program ends, to learn whether that trace
    /// still has to be reported.
    TraceReceived,
}

/// The pages of one traced call and the facts the supervisor needs to trace them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRequest {
    /// Page-aligned, sorted, non-overlapping runs of pages to trace.
    pub pages: Vec<PageRange>,
    /// The child's page size in bytes.
    pub page_size: u64,
    /// The way the child made the pages fault, which decides how the supervisor opens them.
    pub protection: Protection,
    /// Whether the supervisor may carry out simple loads and stores itself instead of
    /// stepping them.
    #[serde(default)]
    pub emulate: bool,
}

/// The mechanism that keeps traced pages from being accessed during a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub enum Protection {
    /// The pages are `PROT_NONE`. The supervisor opens them with `mprotect`, run in the child
    /// by pointing a stopped thread at the `syscall` instruction at `syscall_gadget`.
    /// `zeroed_stack` is set only by the comparison protocol of the benchmarks: the supervisor
    /// then zeroes those 1024 bytes word by word before each `mprotect`, as a tracer that runs
    /// helper code on a callback stack would.
    Mprotect { syscall_gadget: u64, zeroed_stack: Option<u64> },
    /// The pages carry this memory protection key, which every thread's PKRU register denies.
    /// The supervisor opens them for one thread by changing only that thread's PKRU.
    ProtectionKey { key: u32 },
}

/// A message from the supervisor to the child.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorMessage {
    /// Sent once after fork: whether the supervisor attached with ptrace, or why not.
    Attached(Result<(), String>),
    /// The reply to [`ChildMessage::Start`].
    StartReply(StartReply),
    /// The reply to [`ChildMessage::End`]: the call's accesses in order.
    Trace(CallTrace),
    /// The request was rejected because it broke the protocol (for example `End` outside a call).
    Rejected(String),
}

/// The supervisor's reply to a start request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartReply {
    /// The supervisor is tracing the pages: the child may protect them and make the call.
    Started,
    /// The request was invalid; nothing is traced.
    Rejected(String),
}
