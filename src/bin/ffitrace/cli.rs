//! The command line: clap definitions, the help text and one-line error messages.

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

/// Exit status for a bad command line, an unknown library or an unknown symbol.
pub const EXIT_USAGE: i32 = 2;

const CALL_HELP: &str = "\
ARG forms (at most six, one per argument register, in order):
  42, -7, 0x2a         a 64-bit integer; negative values are passed in two's complement
  buf:N                a pointer to a fresh traced buffer of N bytes, zero-filled.
                       N may be 0: the buffer then gets one traced page of its own, so any
                       access through the pointer is still recorded (at offset 0 or beyond)
  buf:N=HEX            the same, its first bytes set from HEX (pairs of hex digits);
                       {&K}, {&K+OFF} or {&K-OFF} inside HEX stands for the address of
                       buffer K (plus or minus OFF) as 8 little-endian bytes
  buf:N@OFF            the buffer starts OFF bytes into its first page (OFF < page size),
                       so it can straddle a page boundary; combines with =HEX and =@PATH
  buf:N=@PATH          the buffer's first bytes are the contents of the file PATH
  str:TEXT             a traced NUL-terminated copy of TEXT (a buffer of len(TEXT)+1 bytes)
  &K, &K+OFF, &K-OFF   a pointer into buffer K, OFF bytes from its first byte; it must
                       point into buffer K's pages or just past them

Buffers are numbered from 0 in argument order, buf: and str: alike; a buffer may name a
later one. Each buffer gets ceil((OFF+N)/page size) pages of private anonymous memory, with
an inaccessible guard page on either side, so an overrun crashes instead of reaching
another buffer. N is at most 1 GiB.

Output: a table of the accesses in the order they happened, a map of every buffer's bytes
(r read, w written, b both, . untouched), then the return value (rax). With --json, JSON
Lines instead: one line per access, one per buffer with its contents, then the return value.

Exit status:
  0      the call returned and every access was traced
  1      tracing failed (ptrace not permitted, trace lost, output not writable)
  2      bad command line, or the library or the symbol could not be loaded
  3      the call returned, but the trace is incomplete: some instructions could not
         be decoded, or a system call used or remapped the traced pages (both are
         listed on stderr)
  128+S  the native code died of signal S (139 for SIGSEGV); the accesses traced
         before it are still printed, and after a fault or abort() the buffers'
         contents too
  other  the native code exited with that status during the call (status 0 becomes 1)

Environment:
  FFITRACE_LOG   log filter for messages on stderr (default: warn), e.g. debug
  FFITRACE_PROTECTION
                 how traced pages fault: 'auto' (a protection key where the CPU
                 has them, else mprotect; the default), 'mprotect', or
                 'zeroed-stack' (the benchmarks' slow comparison protocol)
  FFITRACE_EMULATE
                 '0' (or 'off', 'no', 'false') single-steps every access instead of
                 carrying out simple loads and stores, stos and rep movs in the
                 supervisor (same results, slower); '1', 'on', 'yes', 'true' or
                 unset carries them out
  FFITRACE_STOPLESS
                 '0' (or 'off', 'no', 'false') makes the call stop at its start
                 and end, as on kernels without syscall user dispatch; on by
                 default (same results, the call costs two stops fewer)
  NO_COLOR       when set and non-empty, the byte map uses letters even on a terminal

Signals:
  SIGTERM, SIGHUP, SIGUSR1 and SIGUSR2 sent to this process are passed on to the
  native code's process. SIGINT and SIGQUIT sent to this process alone are ignored:
  Ctrl-C on a terminal reaches both processes, and the native code's process decides.";

/// Records which bytes of its buffers a native function reads and writes.
#[derive(Debug, Parser)]
#[command(name = "ffitrace", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Calls SYMBOL from LIBRARY once with traced buffers and reports every access to them.
    #[command(after_long_help = CALL_HELP)]
    Call(CallArgs),
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// Print JSON Lines instead of the readable report.
    #[arg(long)]
    pub json: bool,
    /// Path of a shared object, or a soname such as libc.so.6.
    pub library: String,
    /// Name of an exported function taking up to six integer or pointer arguments.
    pub symbol: String,
    /// The function's arguments, at most six; `ffitrace call --help` lists their forms.
    #[arg(value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
}

/// Parses the command line, or returns the exit status to leave with right away.
pub fn parse() -> Result<CallArgs, i32> {
    match Cli::try_parse() {
        Ok(Cli { command: Command::Call(mut call) }) => {
            // A value that may start with '-' swallows a later --json; no ARG form is
            // spelled --json, so taking it back out is unambiguous.
            let before = call.args.len();
            call.args.retain(|arg| arg != "--json");
            call.json |= call.args.len() != before;
            Ok(call)
        }
        Err(error) if !error.use_stderr() => {
            // --help and --version print to stdout and succeed.
            let _ = error.print();
            Err(0)
        }
        Err(error) if error.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            tell!("error: no command given; usage: ffitrace call LIBRARY SYMBOL [ARG]... [--json] (see 'ffitrace --help')");
            Err(EXIT_USAGE)
        }
        Err(error) => {
            let about_call = !matches!(error.kind(), ErrorKind::InvalidSubcommand | ErrorKind::MissingSubcommand);
            let help = if about_call { "ffitrace call --help" } else { "ffitrace --help" };
            tell!("{}", one_line(&error.to_string(), help));
            Err(EXIT_USAGE)
        }
    }
}

/// Joins the first paragraph of a clap message into one line that points at `help`.
fn one_line(message: &str, help: &str) -> String {
    let paragraph: Vec<&str> = message.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
    format!("{} (see '{help}')", paragraph.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(words: &[&str]) -> CallArgs {
        let Cli { command: Command::Call(call) } = Cli::try_parse_from(words).unwrap();
        call
    }

    #[test]
    fn hyphen_values_are_args() {
        let parsed = call(&["ffitrace", "call", "lib", "sym", "-7", "-0x10", "buf:4"]);
        assert_eq!(parsed.args, ["-7", "-0x10", "buf:4"]);
        assert!(!parsed.json);
    }

    #[test]
    fn json_before_the_positionals() {
        let parsed = call(&["ffitrace", "call", "--json", "lib", "sym", "1"]);
        assert!(parsed.json);
        assert_eq!(parsed.args, ["1"]);
    }

    #[test]
    fn clap_message_becomes_one_line() {
        let message = "error: the following required arguments were not provided:\n  <SYMBOL>\n\nUsage: x\n";
        assert_eq!(
            one_line(message, "ffitrace call --help"),
            "error: the following required arguments were not provided: <SYMBOL> (see 'ffitrace call --help')"
        );
    }
}
