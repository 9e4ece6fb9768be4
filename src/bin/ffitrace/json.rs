//! The JSON Lines output: one line per access, then one per buffer, then the return value.

use std::io::{self, Write};

use ffitrace::AccessKind;
use serde::Serialize;

use crate::output::{kind_name, Findings};

#[derive(Serialize)]
struct AccessLine {
    kind: &'static str,
    addr: String,
    size: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    certain: Option<bool>,
    buffer: Option<usize>,
    offset: Option<i64>,
}

#[derive(Serialize)]
struct BufferLine {
    kind: &'static str,
    index: usize,
    addr: String,
    size: u64,
    /// NOTE: null only when the process died during the call and its memory is gone.
    bytes: Option<String>,
}

#[derive(Serialize)]
struct ReturnLine {
    kind: &'static str,
    value: u64,
}

/// Writes the findings as JSON Lines; the return line only when the function returned.
pub fn print(out: &mut impl Write, findings: &Findings) -> io::Result<()> {
    for access in findings.accesses {
        let place = findings.place(&access);
        let certain = match access.kind {
            AccessKind::Read => None,
            AccessKind::Write => Some(true),
            AccessKind::PossibleWrite => Some(false),
        };
        let line = AccessLine {
            kind: kind_name(access.kind),
            addr: format!("{:#x}", access.addr),
            size: access.size,
            certain,
            buffer: place.map(|(index, _)| index),
            offset: place.map(|(_, offset)| offset),
        };
        write_line(out, &line)?;
    }
    for (index, (buffer, contents)) in findings.buffers.iter().zip(&findings.contents).enumerate() {
        let line = BufferLine {
            kind: "buffer",
            index,
            addr: format!("{:#x}", buffer.addr),
            size: buffer.size,
            bytes: contents.as_deref().map(hex),
        };
        write_line(out, &line)?;
    }
    if let Some(value) = findings.returned {
        write_line(out, &ReturnLine { kind: "return", value })?;
    }
    Ok(())
}

fn write_line(out: &mut impl Write, line: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, line)?;
    out.write_all(b"\n")
}

/// Encodes `bytes` as lowercase hex digits, two per byte.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)] as char);
        text.push(DIGITS[usize::from(byte & 0xf)] as char);
    }
    text
}
