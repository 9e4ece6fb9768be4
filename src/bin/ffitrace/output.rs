//! The output of `ffitrace call` about one call, in its two formats.

use std::io::{self, Write};

use ffitrace::{Access, AccessKind, AccessLog, SystemCallOnTracedPages, UnsupportedInstruction};

use crate::buffers::{locate, Buffer};

/// The format of stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// JSON Lines, as scripts read them.
    Json,
    /// A readable report; `color` marks bytes with ANSI colours instead of letters.
    Text { color: bool },
}

/// Everything known about a call, whether it returned or not.
#[derive(Debug)]
pub struct Findings<'a> {
    pub buffers: &'a [Buffer],
    pub accesses: &'a AccessLog,
    /// Each buffer's bytes after the call, `None` where they could not be read.
    pub contents: Vec<Option<Vec<u8>>>,
    /// The function's return value, `None` when it did not return.
    pub returned: Option<u64>,
}

impl Findings<'_> {
    /// Returns the buffer whose pages contain the access's first byte, and the offset from its start.
    pub fn place(&self, access: &Access) -> Option<(usize, i64)> {
        locate(self.buffers, access.addr)
    }
}

/// The descriptor the report is written to when the native code's standard output was moved
/// out of its way.
static REPORT_FD: std::sync::OnceLock<std::os::fd::RawFd> = std::sync::OnceLock::new();

/// Keeps standard output for the report alone: the report goes to a copy of descriptor 1, and
/// descriptor 1 becomes a copy of standard error, so whatever the native code prints goes to
/// stderr. Call it before `ffitrace::init`, so the supervisor inherits both. Returns the
/// `dup`/`dup2` error, if one failed; then nothing changed.
pub fn keep_stdout_for_report() -> io::Result<()> {
    io::stdout().flush()?;
    // SAFETY: dup and dup2 take descriptor numbers; 1 and 2 are open in any process started
    // normally, and a failure is returned before anything changed.
    let saved = unsafe { libc::dup(1) };
    if saved < 0 {
        return Err(io::Error::last_os_error());
    }
    if unsafe { libc::dup2(2, 1) } < 0 {
        let error = io::Error::last_os_error();
        unsafe { libc::close(saved) };
        return Err(error);
    }
    let _ = REPORT_FD.set(saved);
    Ok(())
}

/// Returns a writer to where the report goes: the descriptor kept by
/// [`keep_stdout_for_report`], or standard output.
pub fn report_writer() -> Box<dyn Write> {
    use std::os::fd::FromRawFd;
    match REPORT_FD.get() {
        // SAFETY: the descriptor stays open for the life of the process, and ManuallyDrop keeps
        // this File from closing it.
        Some(&fd) => Box::new(io::BufWriter::new(ReportFile(std::mem::ManuallyDrop::new(unsafe {
            std::fs::File::from_raw_fd(fd)
        })))),
        None => Box::new(io::BufWriter::new(io::stdout().lock())),
    }
}

/// A borrowed report descriptor.
struct ReportFile(std::mem::ManuallyDrop<std::fs::File>);

impl Write for ReportFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.write(bytes)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Prints `findings` to `out` in `style`.
pub fn print(out: &mut impl Write, style: Style, findings: &Findings) -> io::Result<()> {
    match style {
        Style::Json => crate::json::print(out, findings)?,
        Style::Text { color } => {
            crate::table::print_accesses(out, findings)?;
            crate::hexmap::print_maps(out, findings, color)?;
            if let Some(value) = findings.returned {
                crate::table::print_return(out, value)?;
            }
        }
    }
    out.flush()
}

/// Tells on stderr which instructions the tracer could not decode.
pub fn warn_unsupported(unsupported: &[UnsupportedInstruction]) {
    for instruction in unsupported {
        tell!(
            "ffitrace: could not decode the instruction at {:#x} ({}): {}; its accesses are missing",
            instruction.addr, instruction.text, instruction.reason
        );
    }
}

/// Prints on stderr which system calls named traced pages during the call. A call repeated
/// in a row with the same arguments from the same place is printed once, with its count.
pub fn warn_system_calls(system_calls: &[SystemCallOnTracedPages]) {
    for group in system_calls.chunk_by(|first, second| first == second) {
        let call = &group[0];
        let args: Vec<String> = call.args.iter().map(|arg| format!("{arg:#x}")).collect();
        let repeats = if group.len() > 1 { format!(" ({} times in a row)", group.len()) } else { String::new() };
        tell!(
            "ffitrace: the native code called {}({}) at {:#x}{repeats}, which {}",
            call.name,
            args.join(", "),
            call.addr,
            call.effect
        );
    }
}

/// Formats a byte count as "1 byte" or "N bytes".
pub fn byte_count(count: u64) -> String {
    if count == 1 {
        "1 byte".to_string()
    } else {
        format!("{count} bytes")
    }
}

/// Returns the name of `kind` in the JSON output.
pub fn kind_name(kind: AccessKind) -> &'static str {
    match kind {
        AccessKind::Read => "read",
        AccessKind::Write | AccessKind::PossibleWrite => "write",
    }
}
