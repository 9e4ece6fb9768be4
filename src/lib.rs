//! ffitrace tells a program exactly which bytes native code read and wrote in its memory.
//!
//! At start-up [`init`] forks once. The parent becomes a ptrace supervisor and the child goes on
//! as the program. [`trace_call`] runs a closure (typically one FFI call) with a set of pages
//! made inaccessible: every access to them faults, the supervisor decodes the faulting
//! instruction, records its address, size and kind, lets that one instruction run with the
//! pages open, and closes them again. When the closure returns, the child receives the ordered
//! list of accesses.
//!
//! ```no_run
//! use ffitrace::{PageRange, TraceOutcome};
//!
//! // SAFETY: called first thing in `main`, while the process has a single thread.
//! if let Err(error) = unsafe { ffitrace::init(ffitrace::Options::default()) } {
//!     eprintln!("tracing is off: {error}");
//! }
//! let page_size = ffitrace::page_size();
//! let layout = std::alloc::Layout::from_size_align(page_size, page_size).unwrap();
//! // SAFETY: the layout has a non-zero size.
//! let buffer = unsafe { std::alloc::alloc_zeroed(layout) };
//! let pages = [PageRange { start: buffer as u64, len: page_size as u64 }];
//! let traced = ffitrace::trace_call(&pages, || unsafe { libc::memset(buffer.cast(), 7, 16) })
//!     .expect("the pages are valid");
//! if let TraceOutcome::Traced(trace) = traced.outcome {
//!     for access in &trace.accesses {
//!         println!("{:?} {:#x} {} bytes", access.kind, access.addr, access.size);
//!     }
//! }
//! ```
//!
//! # Layout
//! - [`core`]: the side-effect-free protocol state machine ([`core::Supervisor`]).
//! - [`decode`]: the pure instruction decoder.
//! - `driver` (Linux x86-64 only): turns `waitpid`/ptrace into [`core::ExecEvent`]s and
//!   executes [`core::Action`]s.
//! - [`messages`]: what the child and the supervisor send each other over ipc-channel.
//!
//! # Panics
//! No input from the traced process, the OS or the caller makes this crate panic. A panic
//! means a broken internal invariant and is a bug.
#![warn(missing_docs)]

pub mod core;
pub mod decode;
mod error;
pub mod event;
pub mod messages;
pub mod regs;

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod board;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod child;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod driver;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
#[path = "child_unsupported.rs"]
mod child;

pub use crate::core::{Crash, ExitStatus, Report};
pub use child::{init, page_size, set_exit_code, trace_call, tracing_status};
pub use error::{InitError, TraceError};
pub use event::{Access, AccessKind, AccessLog, AccessRun, CallTrace, PageRange, SystemCallOnTracedPages, UnsupportedInstruction};

/// The supervisor process as a report callback sees it: the traced program is stopped (or
/// already gone) while the callback runs.
#[derive(Clone, Copy, Debug)]
pub struct ProcessView {
    /// Process id of the traced program.
    pub pid: i32,
}

impl ProcessView {
    /// Reads `len` bytes of the traced program's memory at `addr`, whatever the pages'
    /// protection. Returns `None` if the memory cannot be read (for example because the
    /// program has already exited).
    pub fn read_memory(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        child::read_process_memory(self.pid, addr, len)
    }
}

/// The function the supervisor calls with each [`Report`].
pub type ReportHandler = Box<dyn FnMut(&Report, &ProcessView) + Send>;

/// Settings for [`init`].
pub struct Options {
    /// Called in the supervisor process for crashes, deaths during a traced call and protocol
    /// errors. The default logs the report at error level with `tracing`.
    pub report: ReportHandler,
    /// How long either process waits for the other's protocol message before it concludes the
    /// peer is gone or broken.
    pub message_timeout: std::time::Duration,
    /// The mechanism that makes traced pages fault.
    pub page_protection: PageProtection,
    /// Let the supervisor carry out general-register loads and stores, `stos` and `rep movs`
    /// on traced pages itself, which costs one ptrace stop instead of single-stepping them.
    /// The recorded accesses are the same either way.
    pub emulate_simple_accesses: bool,
    /// Start and end calls through memory shared with the supervisor, so that a call costs no
    /// stop beyond its accesses and one per system call. Needs syscall user dispatch (Linux
    /// 5.11; 6.4 to check the system calls of threads other than the main thread). Without
    /// it, or when this is false, each call stops twice more, at its start and at its end,
    /// and each system call stops twice.
    pub stopless_calls: bool,
}

/// The mechanism that makes traced pages fault during a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PageProtection {
    /// A memory protection key where the CPU and kernel have them (x86 PKU), otherwise
    /// `mprotect`. With a key, the supervisor opens the pages for the one thread that steps an
    /// access, so other threads never run with them open, and each access costs two stops
    /// instead of four.
    #[default]
    Auto,
    /// Always `mprotect` (`PROT_NONE`), which works on every x86-64 CPU.
    Mprotect,
    /// `mprotect`, plus zeroing a 1024-byte callback stack word by word before each
    /// `mprotect`, as a tracer that runs helper code in the child on such a stack does. Only
    /// for comparing costs in the benchmarks.
    ComparisonZeroedStack,
}

impl std::str::FromStr for PageProtection {
    type Err = String;

    /// Parses `auto`, `mprotect` or `zeroed-stack`.
    fn from_str(text: &str) -> Result<PageProtection, String> {
        match text {
            "auto" => Ok(PageProtection::Auto),
            "mprotect" => Ok(PageProtection::Mprotect),
            "zeroed-stack" => Ok(PageProtection::ComparisonZeroedStack),
            other => Err(format!("invalid page protection '{other}': expected 'auto', 'mprotect' or 'zeroed-stack'")),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            report: Box::new(|report, view| tracing::error!(pid = view.pid, ?report, "ffitrace report")),
            message_timeout: std::time::Duration::from_secs(30),
            page_protection: PageProtection::Auto,
            emulate_simple_accesses: true,
            stopless_calls: true,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("message_timeout", &self.message_timeout)
            .field("page_protection", &self.page_protection)
            .field("emulate_simple_accesses", &self.emulate_simple_accesses)
            .field("stopless_calls", &self.stopless_calls)
            .finish_non_exhaustive()
    }
}

/// The value a traced closure returned, with what the tracer learned about it.
#[derive(Debug)]
pub struct Traced<R> {
    /// What the closure returned.
    pub value: R,
    /// The accesses, or why there are none.
    pub outcome: TraceOutcome,
}

/// Whether a call was traced.
#[derive(Debug)]
pub enum TraceOutcome {
    /// The call was traced; these are its accesses.
    Traced(CallTrace),
    /// Tracing is off in this process (see [`tracing_status`]); the call ran untraced.
    Untraced(String),
    /// The call ran, but the supervisor's trace could not be received.
    Lost(TraceError),
}
