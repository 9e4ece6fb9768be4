//! The readable report's table of accesses and its return-value line.

use std::io::{self, Write};

use ffitrace::AccessKind;

use crate::output::Findings;

/// Writes one row per access, in the order the accesses happened.
pub fn print_accesses(out: &mut impl Write, findings: &Findings) -> io::Result<()> {
    let count = findings.accesses.len();
    if count == 0 {
        return writeln!(out, "no accesses to the buffers\n");
    }
    writeln!(out, "{count} access{}:", if count == 1 { "" } else { "es" })?;
    writeln!(out, "{:>6}  {:<6}  {:>6}  {:>8}  {:>6}  address", "#", "kind", "buffer", "offset", "size")?;
    for (number, access) in findings.accesses.iter().enumerate() {
        let (buffer, offset) = match findings.place(access) {
            Some((index, offset)) => (index.to_string(), offset.to_string()),
            None => ("-".to_string(), "-".to_string()),
        };
        let kind = match access.kind {
            AccessKind::Read => "read",
            AccessKind::Write => "write",
            AccessKind::PossibleWrite => "write?",
        };
        writeln!(out, "{number:>6}  {kind:<6}  {buffer:>6}  {offset:>8}  {:>6}  {:#x}", access.size, access.addr)?;
    }
    if findings.accesses.iter().any(|access| access.kind == AccessKind::PossibleWrite) {
        writeln!(out, "write? marks a masked or conditional store that may not have written.")?;
    }
    writeln!(out)
}

/// Writes the return value in hex and in decimal, and signed when its top bit is set.
pub fn print_return(out: &mut impl Write, value: u64) -> io::Result<()> {
    let signed = value as i64;
    if signed < 0 {
        writeln!(out, "returned {value:#x} ({value}, or {signed} as a signed integer)")
    } else {
        writeln!(out, "returned {value:#x} ({value})")
    }
}
