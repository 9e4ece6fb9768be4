//! The ARG forms of `ffitrace call`, parsed and checked without touching memory.

use std::fmt;

/// The largest buffer a `buf:N` argument may ask for.
const MAX_BUFFER: u64 = 1 << 30;
/// The System V x86-64 ABI passes six integer arguments in registers.
pub const MAX_ARGS: usize = 6;

/// A place in a buffer: buffer `index`, `offset` bytes from its first byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufRef {
    pub index: usize,
    pub offset: i64,
}

/// Part of a buffer's initial contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Bytes(Vec<u8>),
    /// The 8 little-endian bytes of an address inside a buffer.
    Address(BufRef),
}

/// One buffer to allocate: `size` bytes starting `start` bytes into its first page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferSpec {
    pub size: u64,
    pub start: u64,
    pub fill: Vec<Piece>,
}

impl BufferSpec {
    /// Number of pages the buffer occupies; a zero-length buffer still gets one.
    pub fn pages(&self, page_size: u64) -> u64 {
        (self.start + self.size).div_ceil(page_size).max(1)
    }
}

/// One argument register's value: an integer, or a pointer into a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Value {
    Integer(u64),
    Pointer(BufRef),
}

/// The parsed ARGs: one value per argument and the buffers they create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub values: Vec<Value>,
    pub buffers: Vec<BufferSpec>,
}

/// An ARG that cannot be used, with the reason.
#[derive(Debug, PartialEq, Eq)]
pub struct ArgError {
    pub arg: String,
    pub reason: String,
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.arg.is_empty() {
            return f.write_str(&self.reason);
        }
        write!(f, "invalid argument '{}': {}", self.arg, self.reason)
    }
}

/// Parses every ARG, then checks the buffer references once all buffers are known.
/// `read_file` supplies the contents of `=@PATH` fills.
pub fn plan(
    args: &[String],
    page_size: u64,
    read_file: impl Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<Plan, ArgError> {
    if args.len() > MAX_ARGS {
        let reason = format!("too many arguments: {} given, a function takes at most {MAX_ARGS}", args.len());
        return Err(ArgError { arg: String::new(), reason });
    }
    let mut plan = Plan::default();
    // The argument that created each buffer, to name it when the buffer's fill is wrong.
    let mut creators = Vec::new();
    for arg in args {
        let fail = |reason: String| ArgError { arg: arg.clone(), reason };
        let before = plan.buffers.len();
        plan.values.push(parse_arg(arg, page_size, &read_file, &mut plan.buffers).map_err(fail)?);
        if plan.buffers.len() > before {
            creators.push(arg);
        }
    }

    let fail = |arg: &String, reason: String| ArgError { arg: arg.clone(), reason };
    for (arg, value) in args.iter().zip(&plan.values) {
        if let Value::Pointer(target) = value {
            check_ref(*target, &plan.buffers, page_size).map_err(|reason| fail(arg, reason))?;
        }
    }
    for (arg, buffer) in creators.iter().zip(&plan.buffers) {
        for piece in &buffer.fill {
            if let Piece::Address(target) = piece {
                check_ref(*target, &plan.buffers, page_size).map_err(|reason| fail(arg, reason))?;
            }
        }
    }
    Ok(plan)
}

fn parse_arg(
    arg: &str,
    page_size: u64,
    read_file: &impl Fn(&str) -> Result<Vec<u8>, String>,
    buffers: &mut Vec<BufferSpec>,
) -> Result<Value, String> {
    let spec = if let Some(rest) = arg.strip_prefix("buf:") {
        parse_buf(rest, page_size, read_file)?
    } else if let Some(text) = arg.strip_prefix("str:") {
        let mut bytes = text.as_bytes().to_vec();
        bytes.push(0);
        BufferSpec { size: bytes.len() as u64, start: 0, fill: vec![Piece::Bytes(bytes)] }
    } else if let Some(rest) = arg.strip_prefix('&') {
        return parse_ref(rest).map(Value::Pointer);
    } else {
        return parse_integer(arg).map(Value::Integer);
    };
    let index = buffers.len();
    buffers.push(spec);
    Ok(Value::Pointer(BufRef { index, offset: 0 }))
}

/// Parses `N[@OFF][=HEX|=@PATH]`, the part after `buf:`.
fn parse_buf(
    rest: &str,
    page_size: u64,
    read_file: &impl Fn(&str) -> Result<Vec<u8>, String>,
) -> Result<BufferSpec, String> {
    let (layout, fill) = match rest.split_once('=') {
        Some((layout, fill)) => (layout, Some(fill)),
        None => (rest, None),
    };
    let (size, start) = match layout.split_once('@') {
        Some((size, start)) => (size, Some(start)),
        None => (layout, None),
    };
    let size = parse_u64(size).ok_or_else(|| format!("buffer size '{size}' is not a number"))?;
    if size > MAX_BUFFER {
        return Err(format!("buffer size {size} is larger than the limit of {MAX_BUFFER} bytes (1 GiB)"));
    }
    let start = match start {
        Some(text) => parse_u64(text).ok_or_else(|| format!("page offset '{text}' is not a number"))?,
        None => 0,
    };
    if start >= page_size {
        return Err(format!("page offset {start} is not smaller than the page size {page_size}"));
    }
    let fill = match fill {
        None => Vec::new(),
        Some(fill) => match fill.strip_prefix('@') {
            Some(path) => vec![Piece::Bytes(read_file(path).map_err(|e| format!("cannot read '{path}': {e}"))?)],
            None => parse_hex(fill)?,
        },
    };
    let filled: u64 = fill.iter().map(|piece| piece_len(piece) as u64).sum();
    if filled > size {
        return Err(format!("the initial contents are {filled} bytes long, more than the buffer's {size}"));
    }
    Ok(BufferSpec { size, start, fill })
}

pub fn piece_len(piece: &Piece) -> usize {
    match piece {
        Piece::Bytes(bytes) => bytes.len(),
        Piece::Address(_) => 8,
    }
}

/// Parses hex digit pairs with `{&K}`, `{&K+OFF}` and `{&K-OFF}` placeholders among them.
fn parse_hex(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('{') {
            let (inner, next) = after.split_once('}').ok_or("'{' without a matching '}' in HEX")?;
            let target = inner.strip_prefix('&').ok_or_else(|| format!("'{{{inner}}}' is not of the form {{&K}}"))?;
            pieces.push(Piece::Address(parse_ref(target)?));
            rest = next;
            continue;
        }
        let run_len = rest.find('{').unwrap_or(rest.len());
        let (digits, next) = rest.split_at(run_len);
        pieces.push(Piece::Bytes(hex_bytes(digits)?));
        rest = next;
    }
    Ok(pieces)
}

fn hex_bytes(digits: &str) -> Result<Vec<u8>, String> {
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(format!("'{bad}' is not a hex digit"));
    }
    if digits.len() % 2 != 0 {
        return Err(format!("HEX has an odd number of digits ({})", digits.len()));
    }
    let nibble = |digit: u8| (digit as char).to_digit(16).map(|value| value as u8);
    let byte = |pair: &[u8]| match pair {
        [high, low] => Some(nibble(*high)? << 4 | nibble(*low)?),
        _ => None,
    };
    digits.as_bytes().chunks(2).map(byte).collect::<Option<Vec<u8>>>().ok_or_else(|| "HEX is malformed".to_string())
}

/// Parses `K`, `K+OFF` or `K-OFF`, the part after `&`.
fn parse_ref(text: &str) -> Result<BufRef, String> {
    let split = text.find(['+', '-']).unwrap_or(text.len());
    let (index, offset) = text.split_at(split);
    let index = index.parse::<usize>().map_err(|_| format!("buffer number '{index}' is not a number"))?;
    let offset = match offset.split_at_checked(1) {
        None | Some(("", _)) => 0,
        Some((sign, magnitude)) => {
            let magnitude = parse_u64(magnitude)
                .and_then(|m| i64::try_from(m).ok())
                .ok_or_else(|| format!("offset '{magnitude}' is not a number"))?;
            if sign == "-" {
                -magnitude
            } else {
                magnitude
            }
        }
    };
    Ok(BufRef { index, offset })
}

/// Checks that `target` names a buffer and points into its pages or just past them.
fn check_ref(target: BufRef, buffers: &[BufferSpec], page_size: u64) -> Result<(), String> {
    let Some(buffer) = buffers.get(target.index) else {
        return Err(format!("there is no buffer {} (buffers: {})", target.index, buffers.len()));
    };
    let lowest = -(buffer.start as i64);
    let highest = (buffer.pages(page_size) * page_size) as i64 + lowest;
    if target.offset < lowest || target.offset > highest {
        let reason = format!(
            "offset {} lies outside buffer {}'s pages (allowed: {lowest} to {highest})",
            target.offset, target.index
        );
        return Err(reason);
    }
    Ok(())
}

/// Parses `42`, `0x2a`, `-7` or `-0x2a` into a 64-bit register value.
fn parse_integer(text: &str) -> Result<u64, String> {
    let too_large = || format!("{text} does not fit in 64 bits");
    match text.strip_prefix('-') {
        Some(magnitude) => {
            let magnitude = parse_unsigned(magnitude)?.ok_or_else(too_large)?;
            if magnitude > 1 << 63 {
                return Err(too_large());
            }
            Ok(magnitude.wrapping_neg())
        }
        None => parse_unsigned(text)?.ok_or_else(too_large),
    }
}

/// Parses a decimal or `0x` hexadecimal unsigned 64-bit number, `None` when it is not one.
fn parse_u64(text: &str) -> Option<u64> {
    parse_unsigned(text).ok().flatten()
}

/// Parses a decimal or `0x` hexadecimal unsigned number: `Ok(None)` when its digits are valid
/// but it does not fit in 64 bits.
fn parse_unsigned(text: &str) -> Result<Option<u64>, String> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err("not an integer, buf:N, str:TEXT or &K".to_string());
    }
    Ok(u64::from_str_radix(digits, radix).ok())
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
