//! Public, serde-serialisable types that describe what native code did.

use serde::{Deserialize, Serialize};

mod log;

pub use log::{AccessLog, AccessRun, Entry, Iter};

/// Whether an access read or wrote memory, and how sure the tracer is of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessKind {
    /// The instruction loaded these bytes.
    Read,
    /// The instruction stored to these bytes.
    Write,
    /// The instruction may have stored to these bytes (a masked or conditional store whose
    /// outcome the tracer could not settle).
    PossibleWrite,
}

impl AccessKind {
    /// Returns true for [`AccessKind::Write`] and [`AccessKind::PossibleWrite`].
    pub fn is_write(self) -> bool {
        !matches!(self, AccessKind::Read)
    }
}

/// One memory access made by one instruction: `size` bytes starting at `addr`.
///
/// `addr` is the access's effective address, so an access that straddles two pages is one
/// event at its true start whichever page faulted. Sixteen bytes per event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Access {
    /// First byte accessed, in the traced process's address space.
    pub addr: u64,
    /// Number of bytes accessed.
    pub size: u32,
    /// Read, write or possible write.
    pub kind: AccessKind,
}

impl Access {
    /// Returns the address one past the last byte accessed.
    pub fn end(&self) -> u64 {
        self.addr.saturating_add(u64::from(self.size))
    }

    /// Returns true if the access touches any byte of `start..end`.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.addr < end && start < self.end()
    }
}

/// A run of whole pages handed to the tracer: `len` bytes from `start`, both page-aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PageRange {
    /// First byte of the first page.
    pub start: u64,
    /// Length in bytes, a non-zero multiple of the page size.
    pub len: u64,
}

impl PageRange {
    /// Returns the address one past the last page.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }

    /// Returns true if `addr` lies on one of these pages.
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end()
    }
}

/// An instruction that faulted on a traced page but that the decoder could not model.
///
/// The tracer still runs the instruction, so the program goes on, but reports no access for
/// it: the trace of that call is incomplete.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnsupportedInstruction {
    /// Address of the instruction.
    pub addr: u64,
    /// The instruction in Intel syntax, or its bytes in hex when it could not be decoded.
    pub text: String,
    /// The reason the decoder gave up.
    pub reason: String,
}

/// Everything the tracer learned about one traced call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallTrace {
    /// The accesses to traced pages, in the order the instructions ran.
    pub accesses: AccessLog,
    /// Instructions that touched traced pages but whose accesses are unknown.
    pub unsupported: Vec<UnsupportedInstruction>,
    /// System calls the native code made on traced pages, whose effect the trace misses.
    #[serde(default)]
    pub system_calls: Vec<SystemCallOnTracedPages>,
}

impl CallTrace {
    /// Returns true when every instruction that touched a traced page was decoded and no
    /// system call touched the traced pages.
    pub fn is_complete(&self) -> bool {
        self.unsupported.is_empty() && self.system_calls.is_empty()
    }
}

/// A system call made during a traced call whose arguments name traced pages.
///
/// Changing or removing the pages' mapping (`mprotect`, `munmap`, `mremap`, `mmap` over them,
/// `pkey_mprotect`) can end their tracing. Other system calls given a pointer into traced pages
/// have the kernel access them: it respects the protection and fails with `EFAULT`, and the
/// trace does not record the kernel's accesses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemCallOnTracedPages {
    /// Address of the instruction after the `syscall` instruction.
    pub addr: u64,
    /// The Linux x86-64 system call number.
    pub number: u64,
    /// The system call's name, or `syscall N` when it is not known here.
    pub name: String,
    /// The six argument registers (rdi, rsi, rdx, r10, r8, r9).
    pub args: [u64; 6],
    /// The call's consequence for the trace.
    pub effect: String,
}
