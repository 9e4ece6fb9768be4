//! `ffitrace call LIBRARY SYMBOL [ARG]... [--json]`: calls one native function with traced
//! buffers and reports every access it made to them (see `ffitrace call --help`).
//!
//! The order of the steps matters: arguments are checked and buffers are allocated and
//! filled before `ffitrace::init` forks, so both the supervisor (which explains crashes) and
//! the traced process know where the buffers are. The library is loaded only after the fork,
//! in the traced process, so its initialisers never run in the supervisor.

/// Writes one line to stderr like `eprintln!`, but a closed or failing stderr is ignored
/// instead of panicking, so the exit status stays the documented one.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod args;
mod buffers;
mod cli;
mod crash;
mod elf;
mod hexmap;
mod json;
mod native;
mod output;
mod signals;
mod table;

use std::io::IsTerminal;

use ffitrace::{PageRange, TraceOutcome};

use crate::buffers::Buffer;
use crate::cli::{CallArgs, EXIT_USAGE};
use crate::output::{Findings, Style};

/// Exit status when tracing fails or the output cannot be written.
const EXIT_FAILURE: i32 = 1;
/// Exit status when the call returned but some of its instructions could not be decoded.
const EXIT_INCOMPLETE: i32 = 3;

fn main() {
    init_logging();
    std::process::exit(run());
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FFITRACE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colored = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colored).try_init();
}

fn run() -> i32 {
    let call = match cli::parse() {
        Ok(call) => call,
        Err(code) => return code,
    };
    let page_size = ffitrace::page_size() as u64;
    let read_file = |path: &str| std::fs::read(path).map_err(|error| error.to_string());
    let plan = match args::plan(&call.args, page_size, read_file) {
        Ok(plan) => plan,
        Err(error) => {
            tell!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let buffers = match buffers::allocate(&plan, page_size) {
        Ok(buffers) => buffers,
        Err(error) => {
            tell!("error: cannot allocate {error}");
            return EXIT_FAILURE;
        }
    };
    let style = style(call.json);

    let page_protection = match std::env::var("FFITRACE_PROTECTION") {
        Ok(text) => match text.parse() {
            Ok(protection) => protection,
            Err(error) => {
                tell!("error: FFITRACE_PROTECTION: {error}");
                return EXIT_USAGE;
            }
        },
        Err(_) => ffitrace::PageProtection::Auto,
    };
    if call.json {
        // JSON Lines on stdout must stay parseable whatever the native code prints.
        if let Err(error) = output::keep_stdout_for_report() {
            tell!("error: cannot set up standard output: {error}");
            return EXIT_FAILURE;
        }
    }
    let report = crash::handler(buffers.clone(), style, page_size);
    let (emulate_simple_accesses, stopless_calls) = match (switch("FFITRACE_EMULATE"), switch("FFITRACE_STOPLESS")) {
        (Ok(emulate), Ok(stopless)) => (emulate, stopless),
        (Err(error), _) | (_, Err(error)) => {
            tell!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let options = ffitrace::Options { report, page_protection, emulate_simple_accesses, stopless_calls, ..Default::default() };
    // SAFETY: nothing in this program has started a thread yet.
    if let Err(error) = unsafe { ffitrace::init(options) } {
        tell!("error: cannot trace the call: {error}");
        return EXIT_FAILURE;
    }
    let function = match native::resolve(&call.library, &call.symbol) {
        Ok(function) => function,
        Err(error) => {
            tell!("error: {error}");
            return EXIT_USAGE;
        }
    };
    let registers = buffers::registers(&plan.values, &buffers);
    // Rust's handler for SIGSEGV and SIGBUS reports any fault on a guard page as this
    // program's own stack overflow and aborts. The native code's faults, a C stack overflow
    // included, must reach the supervisor's crash report as what they are.
    // SAFETY: restoring the default disposition installs no handler code.
    unsafe {
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
        libc::signal(libc::SIGBUS, libc::SIG_DFL);
    }
    call_and_report(&call, function, registers, &buffers, style)
}

/// Makes the traced call and prints what it did; returns the exit status.
fn call_and_report(
    call: &CallArgs,
    function: native::NativeFn,
    [a, b, c, d, e, f]: [u64; 6],
    buffers: &[Buffer],
    style: Style,
) -> i32 {
    let pages: Vec<PageRange> = buffers.iter().map(|buffer| buffer.pages).collect();
    let (value, trace) = if pages.is_empty() {
        // Without buffers there is nothing to trace and no access to report.
        (function(a, b, c, d, e, f), ffitrace::CallTrace::default())
    } else {
        match ffitrace::trace_call(&pages, || function(a, b, c, d, e, f)) {
            Ok(traced) => match traced.outcome {
                TraceOutcome::Traced(trace) => (traced.value, trace),
                TraceOutcome::Untraced(reason) => {
                    tell!("error: {} ran untraced: {reason}", call.symbol);
                    return EXIT_FAILURE;
                }
                TraceOutcome::Lost(error) => {
                    tell!("error: {} returned {:#x} but its trace was lost: {error}", call.symbol, traced.value);
                    return EXIT_FAILURE;
                }
            },
            Err(error) => {
                tell!("error: cannot trace {}: {error}", call.symbol);
                return EXIT_FAILURE;
            }
        }
    };

    // What the native code printed through C streams comes out now, before the report, and not
    // after it at exit, as it would when standard output is a pipe or a file.
    // SAFETY: fflush(NULL) flushes every open output stream of the C library.
    unsafe { libc::fflush(std::ptr::null_mut()) };
    let contents = buffers.iter().map(Buffer::contents).collect();
    let findings = Findings { buffers, accesses: &trace.accesses, contents, returned: Some(value) };
    match output::print(&mut output::report_writer(), style, &findings) {
        // The reader closed the pipe (`| head`): it has all it wants, as with other tools.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(error) => {
            tell!("error: cannot write the report: {error}");
            return EXIT_FAILURE;
        }
        Ok(()) => {}
    }
    output::warn_unsupported(&trace.unsupported);
    output::warn_system_calls(&trace.system_calls);
    if trace.is_complete() {
        0
    } else {
        EXIT_INCOMPLETE
    }
}

/// JSON when asked for; otherwise text, coloured on a terminal unless NO_COLOR is set.
fn style(json: bool) -> Style {
    if json {
        return Style::Json;
    }
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    Style::Text { color: !no_color && std::io::stdout().is_terminal() }
}

/// Reads an on/off environment variable in any letter case, on when unset or empty.
fn switch(name: &str) -> Result<bool, String> {
    let value = std::env::var(name).unwrap_or_default().to_ascii_lowercase();
    match value.as_str() {
        "" | "1" | "on" | "yes" | "true" => Ok(true),
        "0" | "off" | "no" | "false" => Ok(false),
        other => Err(format!("{name}: '{other}' is not one of 0, off, no, false, 1, on, yes, true")),
    }
}
