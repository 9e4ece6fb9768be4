//! The readable report's byte maps: each buffer's bytes after the call, 16 to a row, each
//! marked read, written, both or untouched.

use std::io::{self, Write};

use crate::output::Findings;

const READ: u8 = 1;
const WRITTEN: u8 = 2;
const ROW: usize = 16;

const GREEN: &str = "\x1b[32m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// Writes a legend and then one map per buffer.
pub fn print_maps(out: &mut impl Write, findings: &Findings, color: bool) -> io::Result<()> {
    if findings.buffers.is_empty() {
        return Ok(());
    }
    if color {
        writeln!(
            out,
            "byte maps: {GREEN}read{RESET}, {RED}written{RESET}, {YELLOW}both{RESET}, {DIM}untouched{RESET}"
        )?;
    } else {
        writeln!(out, "byte maps: r read, w written, b read and written, . untouched")?;
    }
    for index in 0..findings.buffers.len() {
        print_map(out, findings, index, color)?;
    }
    Ok(())
}

fn print_map(out: &mut impl Write, findings: &Findings, index: usize, color: bool) -> io::Result<()> {
    let buffer = findings.buffers[index];
    let marks = marks(findings, index);
    let read = marks.iter().filter(|mark| *mark & READ != 0).count();
    let written = marks.iter().filter(|mark| *mark & WRITTEN != 0).count();
    let size = crate::output::byte_count(buffer.size);
    writeln!(out, "buffer {index}: {size} at {:#x}, {read} read, {written} written", buffer.addr)?;

    let outside = outside_accesses(findings, index);
    if outside > 0 {
        let (noun, verb) = if outside == 1 { ("access", "reaches") } else { ("accesses", "reach") };
        writeln!(out, "  {outside} {noun} {verb} past the buffer's bytes onto its pages; the table lists them")?;
    }
    let contents = findings.contents.get(index).and_then(|contents| contents.as_deref());
    if contents.is_none() {
        writeln!(out, "  (its contents could not be read: '??' stands for each byte)")?;
    }

    let mut previous: Option<(&[u8], Option<&[u8]>)> = None;
    let mut skipping = false;
    let rows = marks.len().div_ceil(ROW);
    // Every offset has as many hex digits as the last one, at least four, so columns line up.
    let last_offset = marks.len().saturating_sub(1);
    let digits = (format!("{last_offset:x}").len()).max(4);
    for row in 0..rows {
        let span = row * ROW..((row + 1) * ROW).min(marks.len());
        let row_bytes = contents.and_then(|bytes| bytes.get(span.clone()));
        let current = (&marks[span.clone()], row_bytes);
        // Identical rows collapse into one '*', as in hexdump; the last row always shows.
        if previous == Some(current) && row + 1 < rows {
            if !skipping {
                writeln!(out, "  *")?;
            }
            skipping = true;
            continue;
        }
        skipping = false;
        previous = Some(current);
        writeln!(out, "  0x{:0digits$x}  {}", span.start, render_row(current.0, current.1, color))?;
    }
    writeln!(out)
}

/// Renders one row: each byte as two hex digits with its marker, then the printable characters.
fn render_row(marks: &[u8], bytes: Option<&[u8]>, color: bool) -> String {
    let mut cells = Vec::with_capacity(ROW);
    let mut text = String::new();
    for (column, mark) in marks.iter().enumerate() {
        let byte = bytes.and_then(|bytes| bytes.get(column)).copied();
        let digits = byte.map_or_else(|| "??".to_string(), |byte| format!("{byte:02x}"));
        cells.push(if color { colored(&digits, *mark) } else { format!("{digits}{}", letter(*mark)) });
        text.push(match byte {
            Some(byte) if byte.is_ascii_graphic() || byte == b' ' => byte as char,
            _ => '.',
        });
    }
    let width = if color { 3 } else { 4 };
    let padding = " ".repeat((ROW - marks.len()) * width);
    format!("{}{padding}  |{text}|", cells.join(" "))
}

fn letter(mark: u8) -> char {
    match mark {
        READ => 'r',
        WRITTEN => 'w',
        0 => '.',
        _ => 'b',
    }
}

fn colored(digits: &str, mark: u8) -> String {
    let color = match mark {
        READ => GREEN,
        WRITTEN => RED,
        0 => DIM,
        _ => YELLOW,
    };
    format!("{color}{digits}{RESET}")
}

/// Returns the read and written flags of each byte of buffer `index`.
fn marks(findings: &Findings, index: usize) -> Vec<u8> {
    let buffer = findings.buffers[index];
    let mut marks = vec![0u8; buffer.size as usize];
    for access in findings.accesses {
        let start = access.addr.max(buffer.addr);
        let end = access.end().min(buffer.addr + buffer.size);
        let flag = if access.kind.is_write() { WRITTEN } else { READ };
        for offset in start.saturating_sub(buffer.addr)..end.saturating_sub(buffer.addr) {
            marks[offset as usize] |= flag;
        }
    }
    marks
}

/// Counts the accesses attributed to buffer `index` that touch bytes outside it.
fn outside_accesses(findings: &Findings, index: usize) -> usize {
    let size = findings.buffers[index].size as i64;
    let outside = |access: &ffitrace::Access| match findings.place(access) {
        Some((at, offset)) => at == index && (offset < 0 || offset + i64::from(access.size) > size),
        None => false,
    };
    findings.accesses.iter().filter(outside).count()
}
