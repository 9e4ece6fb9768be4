//! Errors of the embedding API, sorted by who is at fault.

use crate::core::PageSetError;

/// Why [`crate::init`] could not start tracing. The program goes on untraced after any of them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// [`crate::init`] was called more than once.
    #[error("ffitrace::init was already called in this process")]
    AlreadyInitialized,
    /// This platform has no ptrace driver.
    #[error("tracing is not supported on this platform (only Linux x86-64)")]
    UnsupportedPlatform,
    /// The kernel refused to let the supervisor trace the program.
    #[error("ptrace is not permitted: {0}")]
    PtraceDenied(String),
    /// A system call needed to set up tracing failed.
    #[error("{call} failed: {errno}")]
    #[allow(missing_docs)]
    Os { call: &'static str, errno: std::io::Error },
    /// The IPC channel between the two processes failed.
    #[error("IPC with the supervisor failed: {0}")]
    Ipc(String),
}

/// Why [`crate::trace_call`] did not trace a call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The caller passed pages that cannot be traced; nothing was protected.
    #[error("invalid pages: {0}")]
    InvalidPages(#[from] PageSetError),
    /// A page range is not mapped in this process; nothing was protected.
    #[error("page range {start:#x}+{len:#x} is not mapped")]
    #[allow(missing_docs)]
    Unmapped { start: u64, len: u64 },
    /// The supervisor rejected the request.
    #[error("the supervisor rejected the call: {0}")]
    Rejected(String),
    /// A traced call is already running on this thread.
    #[error("a traced call is already running")]
    Nested,
    /// A system call of the protocol failed.
    #[error("{call} failed: {errno}")]
    #[allow(missing_docs)]
    Os { call: &'static str, errno: std::io::Error },
    /// The IPC channel to the supervisor failed or timed out.
    #[error("IPC with the supervisor failed: {0}")]
    Ipc(String),
}
