//! The call board: memory shared by the program and the supervisor, through which a call
//! starts and ends without stopping the program.
//!
//! `init` maps it before it forks, so it lies at the same address in both processes. The
//! program writes the running call (its number, thread and pages) and the system-call
//! selectors. The supervisor reads them when a stop needs them and appends the accesses it
//! records, which the program reads when the call returns. Neither side waits for the
//! other: the supervisor reads the board only while a thread of the program is stopped, and
//! the program reads the accesses only after the stop that recorded them has ended.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use crate::core::{BoardCall, Recorded};
use crate::event::{Access, AccessKind, AccessLog, AccessRun, CallTrace, PageRange};
use crate::messages::{Protection, StartRequest};

/// System-call selectors: one byte per thread slot, read by the kernel at each system call of
/// a thread whose syscall user dispatch points at it.
pub(crate) const SELECTOR_SLOTS: usize = 4096;
/// The maximum number of page runs a call can announce on the board. A call with more uses
/// the protocol signal.
pub(crate) const MAX_RUNS: usize = 4096;
/// `SYSCALL_DISPATCH_FILTER_ALLOW`: the thread's system calls run.
pub(crate) const SELECTOR_ALLOW: u8 = 0;
/// `SYSCALL_DISPATCH_FILTER_BLOCK`: the thread's system calls raise SIGSYS instead.
pub(crate) const SELECTOR_BLOCK: u8 = 1;

const HEADER_WORDS: usize = 32;
const SELECTORS_AT: usize = 4096;
const RUNS_AT: usize = SELECTORS_AT + SELECTOR_SLOTS;
const RECORDS_AT: usize = RUNS_AT + MAX_RUNS * 16;
const BOARD_BYTES: usize = 8 << 20;

/// Header words. The program writes the call's facts first, `CALL` next and `ACTIVE` last; the
/// supervisor writes the records first and `PUBLISHED_LEN` last.
mod word {
    pub const CALL: usize = 0;
    pub const ACTIVE: usize = 1;
    pub const TID: usize = 2;
    pub const PAGE_SIZE: usize = 3;
    pub const PROTECTION: usize = 4;
    pub const PROTECTION_VALUE: usize = 5;
    pub const EMULATE: usize = 6;
    pub const RUNS: usize = 7;
    pub const EXEMPT_START: usize = 8;
    pub const EXEMPT_LEN: usize = 9;
    /// The number of the last call whose trace the program took.
    pub const RECEIVED: usize = 10;
    pub const PUBLISHED_CALL: usize = 16;
    pub const PUBLISHED_LEN: usize = 17;
    pub const COMPLETE: usize = 18;
    pub const HIGHEST_SLOT: usize = 19;
}

const SINGLE_BYTES: usize = 16;
const RUN_BYTES: usize = 64;
const TAG_SINGLE: u8 = 1;
const TAG_RUN: u8 = 2;

/// The shared mapping. Both processes keep it for their whole life.
pub(crate) struct Board {
    base: *mut u8,
}

// SAFETY: every access to the mapping goes through atomics or through byte copies of areas
// that the protocol gives to one writer at a time.
unsafe impl Send for Board {}
// SAFETY: as for Send.
unsafe impl Sync for Board {}

/// The result the program reads from the board after its call.
pub(crate) enum Published {
    /// The supervisor recorded everything the call did: here it is.
    Complete(CallTrace),
    /// The trace contains more than the board carries (a note, an unsupported instruction,
    /// or too many records), so the program requests it from the supervisor.
    AskSupervisor,
}

impl Board {
    /// Maps a zeroed board shared with processes forked later.
    pub(crate) fn create() -> std::io::Result<Board> {
        // SAFETY: a fresh anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                BOARD_BYTES,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Board { base: base.cast() })
    }

    /// Keeps processes the program forks from sharing the board.
    pub(crate) fn keep_from_forks(&self) {
        // SAFETY: the range is this board's own mapping.
        unsafe { libc::madvise(self.base.cast(), BOARD_BYTES, libc::MADV_DONTFORK) };
    }

    fn word(&self, index: usize) -> &AtomicU64 {
        debug_assert!(index < HEADER_WORDS);
        // SAFETY: the header lies at the start of the mapping, 8-byte aligned.
        unsafe { &*self.base.cast::<AtomicU64>().add(index) }
    }

    fn selector(&self, slot: usize) -> &AtomicU8 {
        // SAFETY: callers pass slot < SELECTOR_SLOTS; the selectors lie inside the mapping.
        unsafe { &*self.base.add(SELECTORS_AT + slot).cast::<AtomicU8>() }
    }

    /// Returns the address of a thread slot's selector, which is the same in both processes.
    pub(crate) fn selector_address(&self, slot: u16) -> Option<u64> {
        (usize::from(slot) < SELECTOR_SLOTS).then(|| self.base as u64 + (SELECTORS_AT + usize::from(slot)) as u64)
    }

    /// Sets one thread slot's selector.
    pub(crate) fn set_selector(&self, slot: u16, block: bool) -> Result<(), String> {
        if usize::from(slot) >= SELECTOR_SLOTS {
            return Err(format!("no selector for slot {slot}"));
        }
        self.selector(usize::from(slot)).store(if block { SELECTOR_BLOCK } else { SELECTOR_ALLOW }, Ordering::SeqCst);
        Ok(())
    }

    /// Sets the selector of every thread slot in use.
    fn set_selectors(&self, value: u8) {
        let highest = (self.word(word::HIGHEST_SLOT).load(Ordering::Acquire) as usize).min(SELECTOR_SLOTS - 1);
        for slot in 0..=highest {
            self.selector(slot).store(value, Ordering::Relaxed);
        }
    }

    /// Counts `slot` among the slots in use, whose selectors the program sets.
    pub(crate) fn use_slot(&self, slot: u16) {
        self.word(word::HIGHEST_SLOT).fetch_max(u64::from(slot), Ordering::AcqRel);
    }

    // The program's side.

    /// Announces call number `call` of thread `tid` and blocks every thread's system calls.
    /// Returns false, announcing nothing, when the request has too many runs for the board.
    /// `exempt` is the code range that syscall user dispatch lets through.
    pub(crate) fn begin(&self, call: u64, tid: i32, request: &StartRequest, exempt: (u64, u64)) -> bool {
        if request.pages.len() > MAX_RUNS {
            return false;
        }
        let (kind, value) = match request.protection {
            Protection::Mprotect { zeroed_stack: Some(_), .. } => return false,
            Protection::Mprotect { syscall_gadget, zeroed_stack: None } => (0, syscall_gadget),
            Protection::ProtectionKey { key } => (1, u64::from(key)),
        };
        for (index, run) in request.pages.iter().enumerate() {
            // SAFETY: index < MAX_RUNS, so both words lie in the runs area.
            unsafe {
                let at = self.base.add(RUNS_AT + index * 16).cast::<u64>();
                at.write(run.start);
                at.add(1).write(run.len);
            }
        }
        self.word(word::TID).store(tid as u64, Ordering::Relaxed);
        self.word(word::PAGE_SIZE).store(request.page_size, Ordering::Relaxed);
        self.word(word::PROTECTION).store(kind, Ordering::Relaxed);
        self.word(word::PROTECTION_VALUE).store(value, Ordering::Relaxed);
        self.word(word::EMULATE).store(u64::from(request.emulate), Ordering::Relaxed);
        self.word(word::RUNS).store(request.pages.len() as u64, Ordering::Relaxed);
        self.word(word::EXEMPT_START).store(exempt.0, Ordering::Relaxed);
        self.word(word::EXEMPT_LEN).store(exempt.1, Ordering::Relaxed);
        self.word(word::CALL).store(call, Ordering::Release);
        self.word(word::ACTIVE).store(1, Ordering::Release);
        self.set_selectors(SELECTOR_BLOCK);
        std::sync::atomic::fence(Ordering::SeqCst);
        true
    }

    /// Records that the program took the trace of call number `call` and returns it to the
    /// caller: until then the supervisor reports that trace if the program dies.
    pub(crate) fn received(&self, call: u64) {
        self.word(word::RECEIVED).store(call, Ordering::Release);
    }

    /// Lets every thread's system calls run again and marks the call ended.
    pub(crate) fn end(&self) {
        self.set_selectors(SELECTOR_ALLOW);
        self.word(word::ACTIVE).store(0, Ordering::Release);
    }

    /// Returns the trace the supervisor published for call number `call`.
    pub(crate) fn published(&self, call: u64) -> Published {
        if self.word(word::PUBLISHED_CALL).load(Ordering::Acquire) != call {
            // The supervisor never needed to look at this call: nothing faulted.
            return Published::Complete(CallTrace::default());
        }
        let len = self.word(word::PUBLISHED_LEN).load(Ordering::Acquire) as usize;
        if self.word(word::COMPLETE).load(Ordering::Acquire) != 1 || len > BOARD_BYTES - RECORDS_AT {
            return Published::AskSupervisor;
        }
        // SAFETY: the supervisor wrote `len` bytes of records before publishing `len`.
        let bytes = unsafe { std::slice::from_raw_parts(self.base.add(RECORDS_AT), len) };
        match decode_records(bytes) {
            Some(accesses) => Published::Complete(CallTrace { accesses, ..CallTrace::default() }),
            None => Published::AskSupervisor,
        }
    }

    // The supervisor's side.

    /// Returns the board's call when its number, its activity or the last call received
    /// differs from `last`, which is updated.
    pub(crate) fn poll(&self, last: &mut (u64, bool, u64)) -> Option<BoardCall> {
        loop {
            let call = self.word(word::CALL).load(Ordering::Acquire);
            let active = self.word(word::ACTIVE).load(Ordering::Acquire) == 1;
            let received = self.word(word::RECEIVED).load(Ordering::Acquire);
            if call == 0 || (call, active, received) == *last {
                return None;
            }
            let request = self.read_request();
            // The program may have started its next call while the request was read.
            if self.word(word::CALL).load(Ordering::Acquire) != call {
                continue;
            }
            *last = (call, active, received);
            let tid = self.word(word::TID).load(Ordering::Relaxed) as i32;
            let exempt = PageRange {
                start: self.word(word::EXEMPT_START).load(Ordering::Relaxed),
                len: self.word(word::EXEMPT_LEN).load(Ordering::Relaxed),
            };
            return Some(BoardCall { call, active, tid, request, exempt, received });
        }
    }

    fn read_request(&self) -> StartRequest {
        let runs = (self.word(word::RUNS).load(Ordering::Relaxed) as usize).min(MAX_RUNS);
        let pages = (0..runs)
            .map(|index| {
                // SAFETY: index < MAX_RUNS, so both words lie in the runs area.
                unsafe {
                    let at = self.base.add(RUNS_AT + index * 16).cast::<u64>();
                    PageRange { start: at.read_volatile(), len: at.add(1).read_volatile() }
                }
            })
            .collect();
        let value = self.word(word::PROTECTION_VALUE).load(Ordering::Relaxed);
        let protection = match self.word(word::PROTECTION).load(Ordering::Relaxed) {
            1 => Protection::ProtectionKey { key: value as u32 },
            _ => Protection::Mprotect { syscall_gadget: value, zeroed_stack: None },
        };
        StartRequest {
            pages,
            page_size: self.word(word::PAGE_SIZE).load(Ordering::Relaxed),
            protection,
            emulate: self.word(word::EMULATE).load(Ordering::Relaxed) == 1,
        }
    }

    /// Appends `records` to the published trace of call number `call`, starting it afresh for
    /// a new call, and stores whether the trace is complete.
    pub(crate) fn publish(&self, call: u64, records: &[Recorded], complete: bool) {
        let mut len = 0;
        if self.word(word::PUBLISHED_CALL).load(Ordering::Relaxed) == call {
            len = self.word(word::PUBLISHED_LEN).load(Ordering::Relaxed) as usize;
        } else {
            // No reader of the old call remains: it finished reading before this call began,
            // because the program runs its calls one at a time.
            self.word(word::PUBLISHED_LEN).store(0, Ordering::Release);
            self.word(word::COMPLETE).store(1, Ordering::Release);
            self.word(word::PUBLISHED_CALL).store(call, Ordering::Release);
        }
        let capacity = BOARD_BYTES - RECORDS_AT;
        let mut complete = complete && self.word(word::COMPLETE).load(Ordering::Relaxed) == 1;
        for record in records {
            let bytes = encode_record(record);
            if len + bytes.len() > capacity {
                complete = false;
                break;
            }
            // SAFETY: the record fits in the records area, which only the supervisor writes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(RECORDS_AT + len), bytes.len()) };
            len += bytes.len();
        }
        self.word(word::COMPLETE).store(u64::from(complete), Ordering::Release);
        self.word(word::PUBLISHED_LEN).store(len as u64, Ordering::Release);
    }
}

fn kind_byte(kind: AccessKind) -> u8 {
    match kind {
        AccessKind::Read => 0,
        AccessKind::Write => 1,
        AccessKind::PossibleWrite => 2,
    }
}

fn kind_from(byte: u8) -> Option<AccessKind> {
    match byte {
        0 => Some(AccessKind::Read),
        1 => Some(AccessKind::Write),
        2 => Some(AccessKind::PossibleWrite),
        _ => None,
    }
}

/// Writes one access as 16 bytes: address, size, kind, tag.
fn encode_access(access: &Access, tag: u8, out: &mut [u8]) {
    out[..8].copy_from_slice(&access.addr.to_le_bytes());
    out[8..12].copy_from_slice(&access.size.to_le_bytes());
    out[12] = kind_byte(access.kind);
    out[13] = tag;
}

fn decode_access(bytes: &[u8]) -> Option<Access> {
    let addr = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let size = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?);
    Some(Access { addr, size, kind: kind_from(*bytes.get(12)?)? })
}

/// Encodes one record: a single access in 16 bytes, a run in 64 (its pattern as two
/// accesses, then count, stride and pattern length).
fn encode_record(record: &Recorded) -> Vec<u8> {
    match record {
        Recorded::Access(access) => {
            let mut out = vec![0; SINGLE_BYTES];
            encode_access(access, TAG_SINGLE, &mut out);
            out
        }
        Recorded::Run(run) => {
            let mut out = vec![0; RUN_BYTES];
            let pattern = run.pattern();
            encode_access(&pattern[0], TAG_RUN, &mut out[..16]);
            encode_access(pattern.last().unwrap_or(&pattern[0]), 0, &mut out[16..32]);
            out[32..40].copy_from_slice(&run.count().to_le_bytes());
            out[40..48].copy_from_slice(&run.stride().to_le_bytes());
            out[48] = pattern.len() as u8;
            out
        }
    }
}

/// Rebuilds the log from its records by pushing them in the order the supervisor did, so
/// the log folds into the same runs.
fn decode_records(mut bytes: &[u8]) -> Option<AccessLog> {
    let mut log = AccessLog::new();
    while !bytes.is_empty() {
        match *bytes.get(13)? {
            TAG_SINGLE => {
                log.push(decode_access(bytes)?);
                bytes = &bytes[SINGLE_BYTES..];
            }
            TAG_RUN => {
                let record = bytes.get(..RUN_BYTES)?;
                let first = decode_access(record)?;
                let second = decode_access(&record[16..32])?;
                let count = u64::from_le_bytes(record[32..40].try_into().ok()?);
                let stride = i64::from_le_bytes(record[40..48].try_into().ok()?);
                let pattern: &[Access] = if record[48] == 2 { &[first, second] } else { &[first] };
                log.push_run(AccessRun::new(pattern, count, stride)?);
                bytes = &bytes[RUN_BYTES..];
            }
            _ => return None,
        }
    }
    Some(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_rebuild_the_same_log() {
        let read = |addr| Access { addr, size: 8, kind: AccessKind::Read };
        let write = Access { addr: 0x2000, size: 1, kind: AccessKind::PossibleWrite };
        let run = AccessRun::new(&[read(0x3000), write], 100, -8).unwrap();
        let records: Vec<Recorded> =
            (0..7).map(|i| Recorded::Access(read(0x1000 + 8 * i))).chain([Recorded::Run(run)]).collect();
        let mut expected = AccessLog::new();
        let mut bytes = Vec::new();
        for record in &records {
            match record {
                Recorded::Access(access) => expected.push(*access),
                Recorded::Run(run) => expected.push_run(*run),
            }
            bytes.extend(encode_record(record));
        }
        let log = decode_records(&bytes).unwrap();
        assert_eq!(log.to_vec(), expected.to_vec());
        assert_eq!(log.entries().count(), expected.entries().count());
        assert_eq!(log.len(), 7 + 200);
    }

    #[test]
    fn decode_rejects_bad_records() {
        let mut bytes = encode_record(&Recorded::Access(Access { addr: 1, size: 1, kind: AccessKind::Read }));
        bytes[13] = 9;
        assert!(decode_records(&bytes).is_none());
        assert!(decode_records(&bytes[..10]).is_none());
    }
}
