//! glibc's string functions on traced buffers: the union of bytes read and written must be
//! exactly the bytes the function's contract names.

use ffitrace::{PageRange, TraceOutcome};

use super::support::{bytes_touched, expect_bytes, range_set, trace, Fixtures, Pages, TestResult};

pub fn memset_writes_exact_range(_: &Fixtures) -> TestResult {
    let buffer = Pages::new(1);
    let (_, trace) = trace(&[&buffer], || unsafe { libc::memset(buffer.at(3).cast(), 0x5a, 200) })?;

    expect_bytes("memset writes", &bytes_touched(&trace, &buffer, true), &range_set(&[(3, 203)]))?;
    expect_bytes("memset reads", &bytes_touched(&trace, &buffer, false), &range_set(&[]))?;
    let bytes = buffer.bytes();
    if bytes[2] != 0 || bytes[3..203].iter().any(|&b| b != 0x5a) || bytes[203] != 0 {
        return Err("memset did not set exactly bytes 3..203".to_string());
    }
    Ok(())
}

pub fn memcpy_reads_source_writes_destination(_: &Fixtures) -> TestResult {
    let source = Pages::new(1);
    let destination = Pages::new(1);
    let len = source.len;
    for (i, byte) in unsafe { std::slice::from_raw_parts_mut(source.base, len) }.iter_mut().enumerate() {
        *byte = (i * 7 + 1) as u8;
    }

    let (_, trace) = trace(&[&source, &destination], || unsafe {
        libc::memcpy(destination.base.cast(), source.base.cast(), len)
    })?;

    let whole = range_set(&[(0, len as i64)]);
    expect_bytes("memcpy source reads", &bytes_touched(&trace, &source, false), &whole)?;
    expect_bytes("memcpy source writes", &bytes_touched(&trace, &source, true), &range_set(&[]))?;
    expect_bytes("memcpy destination writes", &bytes_touched(&trace, &destination, true), &whole)?;
    expect_bytes("memcpy destination reads", &bytes_touched(&trace, &destination, false), &range_set(&[]))?;
    if destination.bytes() != source.bytes() {
        return Err("memcpy did not copy the source".to_string());
    }
    Ok(())
}

pub fn memcpy_straddles_pages(_: &Fixtures) -> TestResult {
    // 100 bytes from the end of one page to the start of the next: vector loads and stores
    // cross the page boundary, and each must be one access with both pages open.
    let source = Pages::new(2);
    let destination = Pages::new(2);
    let page = ffitrace::page_size() as i64;
    let (start, len) = (page - 37, 100usize);

    let (_, trace) = trace(&[&source, &destination], || unsafe {
        libc::memcpy(destination.at(start as usize).cast(), source.at(start as usize).cast(), len)
    })?;

    let copied = range_set(&[(start, start + len as i64)]);
    expect_bytes("source reads", &bytes_touched(&trace, &source, false), &copied)?;
    expect_bytes("destination writes", &bytes_touched(&trace, &destination, true), &copied)?;
    expect_bytes("destination reads", &bytes_touched(&trace, &destination, false), &range_set(&[]))?;
    Ok(())
}

pub fn memmove_overlapping(_: &Fixtures) -> TestResult {
    let buffer = Pages::new(1);
    for (i, byte) in unsafe { std::slice::from_raw_parts_mut(buffer.base, 300) }.iter_mut().enumerate() {
        *byte = i as u8;
    }

    let (_, trace) = trace(&[&buffer], || unsafe { libc::memmove(buffer.at(8).cast(), buffer.base.cast(), 250) })?;

    expect_bytes("memmove reads", &bytes_touched(&trace, &buffer, false), &range_set(&[(0, 250)]))?;
    expect_bytes("memmove writes", &bytes_touched(&trace, &buffer, true), &range_set(&[(8, 258)]))?;
    let moved: Vec<u8> = (0..250).map(|i| i as u8).collect();
    if buffer.bytes()[8..258] != moved[..] {
        return Err("memmove did not move the overlapping bytes".to_string());
    }
    Ok(())
}

pub fn strlen_reads_string(_: &Fixtures) -> TestResult {
    // The string ends 5 bytes before the end of its page and the next page is not traced, so
    // whatever vector width glibc picks, its loads stay on this page.
    let buffer = Pages::new(1);
    let text = b"hello, tracer";
    let start = buffer.len - text.len() - 1 - 5;
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr(), buffer.at(start), text.len()) };

    let (length, trace) = trace(&[&buffer], || unsafe { libc::strlen(buffer.at(start).cast()) })?;

    if length != text.len() {
        return Err(format!("strlen returned {length}, expected {}", text.len()));
    }
    let reads = bytes_touched(&trace, &buffer, false);
    let string = range_set(&[(start as i64, (start + text.len() + 1) as i64)]);
    if !string.is_subset(&reads) {
        return Err(format!("strlen reads {:?} miss part of the string {start}..", reads.iter().take(4).collect::<Vec<_>>()));
    }
    // glibc reads whole aligned vectors, so bytes around the string may be read too, but never
    // beyond the 64-byte-aligned blocks that hold the string.
    let lowest = (start as i64) & !63;
    let highest = ((start + text.len() + 1) as i64 + 63) & !63;
    if reads.iter().any(|&offset| offset < lowest || offset >= highest) {
        return Err(format!("strlen read outside {lowest}..{highest}: {reads:?}"));
    }
    expect_bytes("strlen writes", &bytes_touched(&trace, &buffer, true), &range_set(&[]))
}

/// 24 KiB blocks (glibc's `rep stosb` and `rep movsb` sizes) over six pages of which only the
/// middle two are traced: exactly those two pages' bytes are recorded, and every byte of the
/// blocks ends up right.
pub fn partly_traced_blocks(_: &Fixtures) -> TestResult {
    let block = Pages::new(6);
    let other = Pages::new(6);
    let page = ffitrace::page_size();
    let middle = PageRange { start: block.base as u64 + 2 * page as u64, len: 2 * page as u64 };
    let traced_part = range_set(&[(2 * page as i64, 4 * page as i64)]);
    let run = |call: &dyn Fn()| -> Result<ffitrace::CallTrace, String> {
        let traced = ffitrace::trace_call(&[middle], call).map_err(|error| format!("trace_call failed: {error}"))?;
        match traced.outcome {
            TraceOutcome::Traced(trace) if trace.is_complete() => Ok(trace),
            other => Err(format!("call not traced completely: {other:?}")),
        }
    };

    let trace = run(&|| unsafe {
        libc::memset(block.base.cast(), 0x5a, block.len);
    })?;
    expect_bytes("memset writes", &bytes_touched(&trace, &block, true), &traced_part)?;
    expect_bytes("memset reads", &bytes_touched(&trace, &block, false), &range_set(&[]))?;
    if block.bytes().iter().any(|&byte| byte != 0x5a) {
        return Err("memset left bytes unset".to_string());
    }

    // SAFETY: both mappings are live, six pages each, and do not overlap.
    unsafe { std::slice::from_raw_parts_mut(other.base, other.len) }
        .iter_mut()
        .enumerate()
        .for_each(|(index, byte)| *byte = (index * 13 + 7) as u8);
    let trace = run(&|| unsafe {
        libc::memcpy(block.base.cast(), other.base.cast(), block.len);
    })?;
    expect_bytes("memcpy into the block writes", &bytes_touched(&trace, &block, true), &traced_part)?;
    expect_bytes("memcpy into the block reads", &bytes_touched(&trace, &block, false), &range_set(&[]))?;
    if block.bytes() != other.bytes() {
        return Err("memcpy into the block copied wrong bytes".to_string());
    }

    // SAFETY: as above.
    unsafe { std::slice::from_raw_parts_mut(other.base, other.len) }.fill(0);
    let trace = run(&|| unsafe {
        libc::memcpy(other.base.cast(), block.base.cast(), block.len);
    })?;
    expect_bytes("memcpy out of the block reads", &bytes_touched(&trace, &block, false), &traced_part)?;
    expect_bytes("memcpy out of the block writes", &bytes_touched(&trace, &block, true), &range_set(&[]))?;
    if block.bytes() != other.bytes() {
        return Err("memcpy out of the block copied wrong bytes".to_string());
    }
    Ok(())
}
