//! The embedding API on platforms without a ptrace driver: calls run untraced.

use crate::error::{InitError, TraceError};
use crate::event::PageRange;
use crate::{Options, TraceOutcome, Traced};

const UNSUPPORTED: &str = "tracing is not supported on this platform (only Linux x86-64)";

/// Reports that tracing is unavailable; the program goes on untraced.
///
/// # Safety
/// No requirement on this platform; the signature matches the Linux x86-64 one.
pub unsafe fn init(_options: Options) -> Result<(), InitError> {
    Err(InitError::UnsupportedPlatform)
}

/// Returns why calls run untraced on this platform.
pub fn tracing_status() -> Result<(), String> {
    Err(UNSUPPORTED.to_string())
}

/// Returns the size of a page in bytes.
pub fn page_size() -> usize {
    4096
}

/// Rejected: there is no supervisor on this platform.
pub fn set_exit_code(_code: i32) -> Result<(), TraceError> {
    Err(TraceError::Rejected(UNSUPPORTED.to_string()))
}

/// Runs `call` untraced and reports that in the outcome.
pub fn trace_call<R>(_pages: &[PageRange], call: impl FnOnce() -> R) -> Result<Traced<R>, TraceError> {
    Ok(Traced { value: call(), outcome: TraceOutcome::Untraced(UNSUPPORTED.to_string()) })
}

pub(crate) fn read_process_memory(_pid: i32, _addr: u64, _len: usize) -> Option<Vec<u8>> {
    None
}
