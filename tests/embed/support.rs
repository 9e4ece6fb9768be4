//! Buffers, fixtures and byte-range checks shared by the embedding tests.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::PathBuf;

use ffitrace::{AccessKind, CallTrace, PageRange, TraceOutcome};

pub type TestResult = Result<(), String>;

/// The compiled C fixtures, loaded with `dlopen`.
pub struct Fixtures {
    handle: *mut libc::c_void,
}

impl Fixtures {
    pub fn build() -> Result<Fixtures, String> {
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/interpreter_ops.c");
        let output = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interpreter_ops.so");
        let status = std::process::Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&output)
            .arg(source)
            .status()
            .map_err(|error| format!("running gcc failed: {error}"))?;
        if !status.success() {
            return Err(format!("gcc failed on {source}: {status}"));
        }
        let path = CString::new(output.as_os_str().as_encoded_bytes()).map_err(|error| error.to_string())?;
        // SAFETY: `path` is a NUL-terminated string; the fixture has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return Err(format!("dlopen of {} failed", output.display()));
        }
        Ok(Fixtures { handle })
    }

    /// Returns the fixture function `name`, which takes one pointer.
    pub fn function(&self, name: &str) -> Result<extern "C" fn(*mut u8), String> {
        let symbol = CString::new(name).map_err(|error| error.to_string())?;
        // SAFETY: `handle` came from dlopen and `symbol` is NUL-terminated.
        let address = unsafe { libc::dlsym(self.handle, symbol.as_ptr()) };
        if address.is_null() {
            return Err(format!("symbol {name} not found in the fixture"));
        }
        // SAFETY: every fixture function has the C signature `void f(T *)`.
        Ok(unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn(*mut u8)>(address) })
    }
}

/// A private anonymous mapping of whole pages, unmapped on drop.
pub struct Pages {
    pub base: *mut u8,
    pub len: usize,
}

impl Pages {
    pub fn new(count: usize) -> Pages {
        let len = count * ffitrace::page_size();
        // SAFETY: an anonymous mapping with no address hint touches no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap of {len} bytes failed");
        Pages { base: base.cast(), len }
    }

    pub fn range(&self) -> PageRange {
        PageRange { start: self.base as u64, len: self.len as u64 }
    }

    pub fn at(&self, offset: usize) -> *mut u8 {
        self.base.wrapping_add(offset)
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is live, readable and `len` bytes long.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `new` and nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Traces `call` on `pages` and returns its trace, or why there is none.
pub fn trace<R>(pages: &[&Pages], call: impl FnOnce() -> R) -> Result<(R, CallTrace), String> {
    let ranges: Vec<PageRange> = pages.iter().map(|pages| pages.range()).collect();
    let traced = ffitrace::trace_call(&ranges, call).map_err(|error| format!("trace_call failed: {error}"))?;
    match traced.outcome {
        TraceOutcome::Traced(trace) if trace.is_complete() => Ok((traced.value, trace)),
        TraceOutcome::Traced(trace) => Err(format!("unsupported instructions: {:?}", trace.unsupported)),
        other => Err(format!("call not traced: {other:?}")),
    }
}

/// Returns the offsets, relative to `pages`, of the bytes the trace read or wrote there.
pub fn bytes_touched(trace: &CallTrace, pages: &Pages, write: bool) -> BTreeSet<i64> {
    let base = pages.base as u64;
    let end = base + pages.len as u64;
    let mut touched = BTreeSet::new();
    for access in &trace.accesses {
        if access.kind.is_write() != write || !access.overlaps(base, end) {
            continue;
        }
        for addr in access.addr..access.end() {
            touched.insert(addr as i64 - base as i64);
        }
    }
    touched
}

pub fn range_set(ranges: &[(i64, i64)]) -> BTreeSet<i64> {
    ranges.iter().flat_map(|&(start, end)| start..end).collect()
}

/// Fails unless `actual` is exactly `expected`, naming the first differing offsets.
pub fn expect_bytes(what: &str, actual: &BTreeSet<i64>, expected: &BTreeSet<i64>) -> TestResult {
    if actual == expected {
        return Ok(());
    }
    let missing: Vec<_> = expected.difference(actual).take(8).collect();
    let extra: Vec<_> = actual.difference(expected).take(8).collect();
    Err(format!("{what}: missing offsets {missing:?}, unexpected offsets {extra:?}"))
}

/// Renders accesses relative to `pages` as `(kind, offset, size)` for exact comparisons.
pub fn relative(trace: &CallTrace, pages: &Pages) -> Vec<(AccessKind, i64, u32)> {
    let base = pages.base as i64;
    trace.accesses.iter().map(|access| (access.kind, access.addr as i64 - base, access.size)).collect()
}

pub fn expect_eq<T: PartialEq + std::fmt::Debug>(what: &str, actual: T, expected: T) -> TestResult {
    if actual == expected {
        Ok(())
    } else {
        Err(format!("{what}: expected {expected:?}, got {actual:?}"))
    }
}
