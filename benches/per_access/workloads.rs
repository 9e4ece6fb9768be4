//! The workloads: their buffers, the native call each one makes, and the check of the buffers
//! afterwards. The C driver in `benches/fixtures/driver.c` builds the same buffers and makes
//! the same calls for valgrind.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use ffitrace::PageRange;

/// Load/store pairs of the isolated workloads: 2 000 accesses.
pub const ISOLATED_PAIRS: usize = 1000;
/// Slots the isolated workloads visit, and arithmetic rounds after each access (about 300
/// cycles on a 3 GHz core).
const SLOTS: usize = 64;
const ROUNDS: u32 = 64;
/// Pages mapped and traced by the `pages10k` workload.
const SPREAD_PAGES: usize = 10_000;
const PAGE: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Workload {
    /// 8-byte loads and stores on one traced page, with register arithmetic between them.
    Isolated,
    /// The isolated workload with 10 000 pages traced; the slots lie on 8 of them.
    Pages10k,
    /// glibc `memset` of SIZE bytes.
    Memset,
    /// glibc `memcpy` of SIZE bytes; source and destination are both traced.
    Memcpy,
    /// glibc `strlen` of a SIZE-byte buffer holding a string of SIZE - 1 bytes.
    Strlen,
    /// glibc `qsort` of SIZE ints.
    Qsort,
}

pub const ALL: [Workload; 6] =
    [Workload::Isolated, Workload::Pages10k, Workload::Memset, Workload::Memcpy, Workload::Strlen, Workload::Qsort];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Isolated => "isolated",
            Workload::Pages10k => "pages10k",
            Workload::Memset => "memset",
            Workload::Memcpy => "memcpy",
            Workload::Strlen => "strlen",
            Workload::Qsort => "qsort",
        }
    }

    pub fn from_name(name: &str) -> Option<Workload> {
        ALL.into_iter().find(|workload| workload.name() == name)
    }

    /// Returns the workload's full size: load/store pairs, bytes or ints (see the variants).
    pub fn full_size(self) -> usize {
        match self {
            Workload::Isolated | Workload::Pages10k => ISOLATED_PAIRS,
            Workload::Memset | Workload::Memcpy => 64 * 1024,
            Workload::Strlen => 4096,
            Workload::Qsort => 10_000,
        }
    }

    /// Whether the workload's instructions and addresses are the same whatever its loads
    /// return, so that the floor, which skips them, runs the same path as a real trace.
    pub fn floor_follows_path(self) -> bool {
        matches!(self, Workload::Isolated | Workload::Pages10k | Workload::Memset | Workload::Memcpy)
    }

    /// Describes `size` in the workload's unit.
    pub fn describe(self, size: usize) -> String {
        match self {
            Workload::Isolated => format!("{} accesses, 1 page", 2 * size),
            Workload::Pages10k => format!("{} accesses, {SPREAD_PAGES} pages", 2 * size),
            Workload::Memset | Workload::Memcpy => format!("{} KiB", size / 1024),
            Workload::Strlen => format!("{size} B"),
            Workload::Qsort => format!("{size} ints"),
        }
    }
}

/// The compiled fixtures: the shared library for the Rust side and the driver program.
pub struct Fixtures {
    pub library: PathBuf,
    pub driver: PathBuf,
}

impl Fixtures {
    pub fn directory() -> PathBuf {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("per_access")
    }

    pub fn paths() -> Fixtures {
        let directory = Fixtures::directory();
        Fixtures { library: directory.join("libworkloads.so"), driver: directory.join("driver") }
    }

    /// Compiles both fixtures with `gcc -O2`.
    pub fn build() -> Result<Fixtures, String> {
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/fixtures");
        let fixtures = Fixtures::paths();
        std::fs::create_dir_all(Fixtures::directory()).map_err(|error| error.to_string())?;
        let workloads = sources.join("workloads.c");
        gcc(&["-O2", "-shared", "-fPIC", "-o"], &fixtures.library, &[&workloads])?;
        gcc(&["-O2", "-o"], &fixtures.driver, &[&sources.join("driver.c"), &workloads])?;
        Ok(fixtures)
    }
}

fn gcc(flags: &[&str], output: &Path, sources: &[&Path]) -> Result<(), String> {
    let status = std::process::Command::new("gcc")
        .args(flags)
        .arg(output)
        .args(sources)
        .status()
        .map_err(|error| format!("running gcc failed: {error}"))?;
    if !status.success() {
        return Err(format!("gcc failed building {}: {status}", output.display()));
    }
    Ok(())
}

type IsolatedFn = unsafe extern "C" fn(*const *mut u64, usize, usize, u32) -> u64;
type QsortFn = unsafe extern "C" fn(*mut i32, usize);

/// The fixture functions, loaded with `dlopen`.
pub struct Library {
    isolated: IsolatedFn,
    qsort: QsortFn,
}

impl Library {
    pub fn load(path: &Path) -> Result<Library, String> {
        let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|error| error.to_string())?;
        // SAFETY: `path` is NUL-terminated; the fixture has no constructors.
        let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW) };
        if handle.is_null() {
            return Err(format!("dlopen of {path:?} failed"));
        }
        let symbol = |name: &str| -> Result<*mut libc::c_void, String> {
            let name = CString::new(name).map_err(|error| error.to_string())?;
            // SAFETY: `handle` came from dlopen and `name` is NUL-terminated.
            let address = unsafe { libc::dlsym(handle, name.as_ptr()) };
            if address.is_null() {
                return Err(format!("symbol {name:?} not found in the fixture"));
            }
            Ok(address)
        };
        // SAFETY: the symbols are the C functions declared in workloads.c with these signatures.
        unsafe {
            Ok(Library {
                isolated: std::mem::transmute::<*mut libc::c_void, IsolatedFn>(symbol("bench_isolated")?),
                qsort: std::mem::transmute::<*mut libc::c_void, QsortFn>(symbol("bench_qsort")?),
            })
        }
    }
}

/// A private anonymous mapping of whole pages, unmapped on drop.
pub struct Pages {
    pub base: *mut u8,
    pub len: usize,
}

impl Pages {
    fn new(len: usize) -> Pages {
        let len = len.div_ceil(PAGE) * PAGE;
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

    fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is live, readable while no call runs, and `len` bytes long.
        unsafe { std::slice::from_raw_parts(self.base, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the mapping was created by `new` and nothing refers to it any more.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// Returns the offset of slot `index` of the isolated workloads: 64 bytes apart on one page, or
/// spread over 8 pages of the 10 000 (the same layout as `slot_offset` in driver.c).
fn slot_offset(index: usize, spread: bool) -> usize {
    if spread {
        (index % 8) * 1249 * PAGE + (index / 8) * 64
    } else {
        index * 64
    }
}

/// Returns the slot that pair number `pair` visits (`slot_of` in workloads.c).
fn slot_of(pair: usize) -> usize {
    (pair * 7) % SLOTS
}

/// One workload's buffers, ready for calls.
pub struct Setup {
    pub workload: Workload,
    pub size: usize,
    /// The traced buffers: one, or source and destination for memcpy.
    pub buffers: Vec<Pages>,
    slots: Vec<*mut u64>,
    /// The values qsort starts from, restored before each call.
    unsorted: Vec<i32>,
    /// Calls made so far, for the checks that count them.
    calls: u64,
    /// Sum of the calls' return values (strlen's lengths).
    returned: u64,
}

impl Setup {
    pub fn new(workload: Workload, size: usize) -> Setup {
        let mut setup =
            Setup { workload, size, buffers: Vec::new(), slots: Vec::new(), unsorted: Vec::new(), calls: 0, returned: 0 };
        match workload {
            Workload::Isolated | Workload::Pages10k => {
                let spread = workload == Workload::Pages10k;
                let pages = Pages::new(if spread { SPREAD_PAGES * PAGE } else { PAGE });
                // Touch every page now, so the first call does not pay for page faults.
                for page in 0..pages.len / PAGE {
                    // SAFETY: the offset lies inside the mapping.
                    unsafe { pages.base.add(page * PAGE).write_volatile(0) };
                }
                setup.slots = (0..SLOTS).map(|index| pages.base.wrapping_add(slot_offset(index, spread)).cast()).collect();
                setup.buffers.push(pages);
            }
            Workload::Memset => setup.buffers.push(Pages::new(size)),
            Workload::Memcpy => {
                let mut source = Pages::new(size);
                for (index, byte) in source.bytes_mut().iter_mut().enumerate() {
                    *byte = (index * 7 + 1) as u8;
                }
                setup.buffers.push(source);
                setup.buffers.push(Pages::new(size));
            }
            Workload::Strlen => {
                let mut pages = Pages::new(size);
                let bytes = pages.bytes_mut();
                bytes[..size - 1].fill(b'a');
                bytes[size - 1..].fill(0);
                setup.buffers.push(pages);
            }
            Workload::Qsort => {
                setup.unsorted = (0..size).map(|index| ((index as u64 * 2_654_435_761) % 1_000_003) as i32).collect();
                setup.buffers.push(Pages::new(size * 4));
            }
        }
        setup
    }

    pub fn ranges(&self) -> Vec<PageRange> {
        self.buffers.iter().map(Pages::range).collect()
    }

    /// Restores what a call consumes. Runs before each call, outside the timed section.
    pub fn prepare(&mut self) {
        if self.workload == Workload::Qsort {
            let values = self.buffers[0].base.cast::<i32>();
            // SAFETY: the buffer has room for `size` ints and no call runs now.
            unsafe { std::ptr::copy_nonoverlapping(self.unsorted.as_ptr(), values, self.size) };
        }
    }

    /// Makes the workload's native call once.
    pub fn call(&mut self, library: &Library) {
        let first = self.buffers[0].base;
        // SAFETY: every pointer refers to a live buffer of the sizes `new` mapped.
        let returned = unsafe {
            match self.workload {
                Workload::Isolated | Workload::Pages10k => {
                    (library.isolated)(self.slots.as_ptr(), SLOTS, self.size, ROUNDS) & 1
                }
                Workload::Memset => {
                    libc::memset(first.cast(), 0x5a, self.size);
                    0
                }
                Workload::Memcpy => {
                    libc::memcpy(self.buffers[1].base.cast(), first.cast(), self.size);
                    0
                }
                Workload::Strlen => libc::strlen(first.cast()) as u64,
                Workload::Qsort => {
                    (library.qsort)(first.cast(), self.size);
                    0
                }
            }
        };
        self.calls += 1;
        if self.workload == Workload::Strlen {
            self.returned += returned;
        }
    }

    /// Checks the buffers after all calls, so that a skipped access cannot go unnoticed.
    pub fn check(&self) -> Result<(), String> {
        let first = self.buffers[0].bytes();
        match self.workload {
            Workload::Isolated | Workload::Pages10k => {
                let mut visits = [0u64; SLOTS];
                for pair in 0..self.size {
                    visits[slot_of(pair)] += 1;
                }
                for (index, &slot) in self.slots.iter().enumerate() {
                    // SAFETY: the slot lies in the live buffer and no call runs now.
                    let value = unsafe { slot.read_volatile() };
                    if value != self.calls * visits[index] {
                        return Err(format!("slot {index} holds {value}, expected {}", self.calls * visits[index]));
                    }
                }
            }
            Workload::Memset => {
                if let Some(offset) = first[..self.size].iter().position(|&byte| byte != 0x5a) {
                    return Err(format!("memset left byte {offset} unset"));
                }
            }
            Workload::Memcpy => {
                if first[..self.size] != self.buffers[1].bytes()[..self.size] {
                    return Err("memcpy did not copy the source".to_string());
                }
            }
            Workload::Strlen => {
                if self.returned != self.calls * (self.size as u64 - 1) {
                    return Err(format!("strlen returned {} in {} calls", self.returned, self.calls));
                }
            }
            Workload::Qsort => {
                let mut expected = self.unsorted.clone();
                expected.sort_unstable();
                // SAFETY: the buffer contains `size` ints and no call runs now.
                let sorted = unsafe { std::slice::from_raw_parts(self.buffers[0].base.cast::<i32>(), self.size) };
                if sorted != expected.as_slice() {
                    return Err("qsort did not sort the values".to_string());
                }
            }
        }
        Ok(())
    }
}
