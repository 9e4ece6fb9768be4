//! The readable report's table of accesses and its return-value line.

use std::io::{self, Write};

use ffitrace::event::Entry;
use ffitrace::{Access, AccessKind};

use crate::output::{byte_count, Findings};

/// Writes one row per access, in the order the accesses happened. A run of accesses that a
/// `rep` string instruction repeated is shown as its first iteration and a line saying how
/// it repeats.
pub fn print_accesses(out: &mut impl Write, findings: &Findings) -> io::Result<()> {
    let count = findings.accesses.len();
    if count == 0 {
        return writeln!(out, "no accesses to the buffers\n");
    }
    writeln!(out, "{count} access{}:", if count == 1 { "" } else { "es" })?;
    writeln!(out, "{:>6}  {:<6}  {:>6}  {:>8}  {:>6}  address", "#", "kind", "buffer", "offset", "size")?;
    let mut number = 0u64;
    let mut possible_write = false;
    for entry in findings.accesses.entries() {
        match entry {
            Entry::Single(access) => {
                print_row(out, findings, number, access)?;
                possible_write |= access.kind == AccessKind::PossibleWrite;
                number += 1;
            }
            Entry::Run(run) => {
                for (offset, access) in run.pattern().iter().enumerate() {
                    print_row(out, findings, number + offset as u64, access)?;
                    possible_write |= access.kind == AccessKind::PossibleWrite;
                }
                let last = number + run.len() - 1;
                let step = run.stride();
                let rows = match run.pattern().len() {
                    1 => format!("#{number} repeats"),
                    width => format!("#{number} to #{} repeat", number + width as u64 - 1),
                };
                let moves = match step {
                    0 => "at the same address".to_string(),
                    _ => format!("each time {} {}", byte_count(step.unsigned_abs()), if step < 0 { "lower" } else { "higher" }),
                };
                writeln!(out, "{:>6}  ... {rows} {} times in all, {moves}, to #{last}", "", run.count())?;
                number = last + 1;
            }
        }
    }
    if possible_write {
        writeln!(out, "write? marks a masked or conditional store that may not have written.")?;
    }
    writeln!(out)
}

fn print_row(out: &mut impl Write, findings: &Findings, number: u64, access: &Access) -> io::Result<()> {
    let (buffer, offset) = match findings.place(access) {
        Some((index, offset)) => (index.to_string(), offset.to_string()),
        None => ("-".to_string(), "-".to_string()),
    };
    let kind = match access.kind {
        AccessKind::Read => "read",
        AccessKind::Write => "write",
        AccessKind::PossibleWrite => "write?",
    };
    writeln!(out, "{number:>6}  {kind:<6}  {buffer:>6}  {offset:>8}  {:>6}  {:#x}", access.size, access.addr)
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
