//! What an interpreter meets when it lends memory to C: exact access lists from fixtures.

use ffitrace::AccessKind::{Read, Write};

use super::support::{bytes_touched, expect_bytes, expect_eq, range_set, relative, trace, Fixtures, Pages, TestResult};

pub fn increment_int_read_then_write(fixtures: &Fixtures) -> TestResult {
    let increment = fixtures.function("increment_int")?;
    let buffer = Pages::new(1);
    unsafe { buffer.base.cast::<i32>().write(41) };

    let (_, trace) = trace(&[&buffer], || increment(buffer.base))?;

    expect_eq("accesses", relative(&trace, &buffer), vec![(Read, 0, 4), (Write, 0, 4)])?;
    expect_eq("value", unsafe { buffer.base.cast::<i32>().read() }, 42)
}

pub fn write_two_of_three_bytes(fixtures: &Fixtures) -> TestResult {
    let write_two = fixtures.function("write_two_bytes")?;
    let buffer = Pages::new(1);
    let start = 100;

    let (_, trace) = trace(&[&buffer], || write_two(buffer.at(start)))?;

    let written = bytes_touched(&trace, &buffer, true);
    expect_bytes("writes", &written, &range_set(&[(100, 102)]))?;
    expect_bytes("reads", &bytes_touched(&trace, &buffer, false), &range_set(&[]))?;
    expect_eq("bytes", &buffer.bytes()[100..103], &[0xaa, 0xbb, 0][..])
}

pub fn swap_pointer_pair(fixtures: &Fixtures) -> TestResult {
    let swap = fixtures.function("swap_pair")?;
    let buffer = Pages::new(1);
    let slots = buffer.base.cast::<u64>();
    unsafe {
        slots.write(0x1111_2222_3333_4444);
        slots.add(1).write(0x5555_6666_7777_8888);
    }

    let (_, trace) = trace(&[&buffer], || swap(buffer.base))?;

    let both_slots = range_set(&[(0, 16)]);
    expect_bytes("reads", &bytes_touched(&trace, &buffer, false), &both_slots)?;
    expect_bytes("writes", &bytes_touched(&trace, &buffer, true), &both_slots)?;
    let first_write = trace.accesses.iter().position(|access| access.kind == Write);
    let last_read = trace.accesses.to_vec().iter().rposition(|access| access.kind == Read);
    if let (Some(write), Some(read)) = (first_write, last_read) {
        if read > write {
            return Err(format!("a read follows the first write: {:?}", relative(&trace, &buffer)));
        }
    }
    expect_eq("slots", unsafe { (slots.read(), slots.add(1).read()) }, (0x5555_6666_7777_8888, 0x1111_2222_3333_4444))
}

pub fn untouched_pages_record_nothing(_: &Fixtures) -> TestResult {
    let traced = Pages::new(4);
    let other = Pages::new(1);

    let (_, trace) = trace(&[&traced], || unsafe { libc::memset(other.base.cast(), 1, other.len) })?;

    expect_eq("accesses", trace.accesses.len(), 0)?;
    expect_eq("other page", other.bytes()[other.len - 1], 1)
}

pub fn calls_in_sequence_are_separate(fixtures: &Fixtures) -> TestResult {
    let increment = fixtures.function("increment_int")?;
    let buffer = Pages::new(1);

    let (_, first) = trace(&[&buffer], || increment(buffer.base))?;
    let (_, second) = trace(&[&buffer], || increment(buffer.at(8)))?;

    expect_eq("first call", relative(&first, &buffer), vec![(Read, 0, 4), (Write, 0, 4)])?;
    expect_eq("second call", relative(&second, &buffer), vec![(Read, 8, 4), (Write, 8, 4)])?;
    expect_eq("values", unsafe { (buffer.base.cast::<i32>().read(), buffer.at(8).cast::<i32>().read()) }, (1, 1))
}
