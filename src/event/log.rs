//! The ordered accesses of one call, stored so that a `rep` string instruction costs one entry
//! however many elements it moves.
//!
//! A log contains single accesses and runs. A run is a pattern of one or two accesses repeated
//! with a fixed stride (`rep stosb` writes one byte per element, `rep movsb` reads one and
//! writes one). The supervisor records a `rep` block it carries out as one run. The log also
//! folds accesses that arrive one at a time into a run: five accesses that repeat a one-access
//! pattern, or three iterations of a two-access pattern. So a stepped `rep` block or a loop is
//! stored the same way. Iterating the log yields every access in the order the instructions
//! made them, so readers that want single accesses never see runs. Readers that mark byte
//! ranges can walk [`AccessLog::entries`] and handle a whole run at once.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::Access;

/// Runs of fewer accesses are stored as single accesses, because a run entry (64 bytes) only
/// saves memory and work when it replaces more than four 16-byte accesses.
const MIN_STORED_RUN_LEN: u64 = 5;

/// A pattern of one or two accesses made `count` times, every address moving by `stride`
/// bytes from one iteration to the next.
///
/// `rep movsb` over n bytes upwards from `rsi` to `rdi` is the pattern
/// `[read rsi 1 byte, write rdi 1 byte]` made n times with stride 1.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RunForm", into = "RunForm")]
pub struct AccessRun {
    pattern: [Access; 2],
    pattern_len: u8,
    count: u64,
    stride: i64,
}

impl AccessRun {
    /// Returns the run of `pattern` made `count` times, or `None` when the pattern does not
    /// have one or two accesses or `count` is zero.
    pub fn new(pattern: &[Access], count: u64, stride: i64) -> Option<AccessRun> {
        let (first, second) = match pattern {
            [only] => (*only, *only),
            [first, second] => (*first, *second),
            _ => return None,
        };
        (count > 0).then_some(AccessRun { pattern: [first, second], pattern_len: pattern.len() as u8, count, stride })
    }

    /// Returns the run of one access made once.
    pub fn single(access: Access) -> AccessRun {
        AccessRun { pattern: [access, access], pattern_len: 1, count: 1, stride: 0 }
    }

    /// Returns the accesses of the first iteration, in order.
    pub fn pattern(&self) -> &[Access] {
        &self.pattern[..usize::from(self.pattern_len)]
    }

    /// Returns the number of iterations.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Returns the distance in bytes between an access and the same access one iteration
    /// later, negative when the addresses descend.
    pub fn stride(&self) -> i64 {
        self.stride
    }

    /// Returns the number of accesses in the run: iterations times pattern length.
    pub fn len(&self) -> u64 {
        self.count.saturating_mul(u64::from(self.pattern_len))
    }

    /// Returns false: a run has at least one access.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Returns the access at `index` in the run's order, or `None` past its end.
    pub fn get(&self, index: u64) -> Option<Access> {
        if index >= self.len() {
            return None;
        }
        let width = u64::from(self.pattern_len);
        Some(self.at(index / width, (index % width) as usize))
    }

    /// Returns the pattern's access at `position` (0 or 1) moved to `iteration`, which may lie
    /// past the run's end.
    fn at(&self, iteration: u64, position: usize) -> Access {
        let mut access = self.pattern[position];
        access.addr = access.addr.wrapping_add((iteration as i64).wrapping_mul(self.stride) as u64);
        access
    }

    /// Returns the bytes that the pattern's access at `position` covers over all iterations, as
    /// `(start, end)`, or `None` when the pattern has no such access. With a stride larger than
    /// the access the range includes the gaps between accesses.
    pub fn extent(&self, position: usize) -> Option<(u64, u64)> {
        let first = *self.pattern().get(position)?;
        let last = self.get((self.count - 1) * u64::from(self.pattern_len) + position as u64)?;
        let (low, high) = if last.addr < first.addr { (last, first) } else { (first, last) };
        Some((low.addr, high.end()))
    }

    /// Returns an iterator over the run's accesses in order.
    pub fn iter(&self) -> impl Iterator<Item = Access> + '_ {
        (0..self.len()).filter_map(|index| self.get(index))
    }
}

impl fmt::Debug for AccessRun {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AccessRun")
            .field("pattern", &self.pattern())
            .field("count", &self.count)
            .field("stride", &self.stride)
            .finish()
    }
}

/// The serialised form of a run: the pattern as a list of one or two accesses.
#[derive(Serialize, Deserialize)]
struct RunForm {
    pattern: Vec<Access>,
    count: u64,
    stride: i64,
}

impl TryFrom<RunForm> for AccessRun {
    type Error = &'static str;

    fn try_from(form: RunForm) -> Result<AccessRun, &'static str> {
        AccessRun::new(&form.pattern, form.count, form.stride)
            .ok_or("a run needs a pattern of one or two accesses and a non-zero count")
    }
}

impl From<AccessRun> for RunForm {
    fn from(run: AccessRun) -> RunForm {
        RunForm { pattern: run.pattern().to_vec(), count: run.count, stride: run.stride }
    }
}

/// A run and the number of single accesses the log contains before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct PlacedRun {
    singles_before: u64,
    run: AccessRun,
}

/// One entry of an [`AccessLog`]: a single access or a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    /// An access stored on its own.
    Single(&'a Access),
    /// A pattern of accesses repeated with a fixed stride.
    Run(&'a AccessRun),
}

/// The accesses of a call in the order the instructions made them.
///
/// Single accesses cost 16 bytes each. A run costs one entry whatever its length, so a
/// `rep stosb` over a megabyte stays small.
///
/// Human-readable formats (JSON, YAML) show the log as one list of entries, where a run is a
/// map with `pattern`, `count` and `stride`. Binary formats store the single accesses and the
/// runs as two lists.
#[derive(Clone, Default)]
pub struct AccessLog {
    singles: Vec<Access>,
    runs: Vec<PlacedRun>,
}

impl AccessLog {
    /// Returns an empty log.
    pub fn new() -> AccessLog {
        AccessLog::default()
    }

    /// Appends one access, extending the run that ends the log or starting a run when it
    /// continues a pattern.
    pub fn push(&mut self, access: Access) {
        if self.extend_last_run(access) {
            return;
        }
        self.singles.push(access);
        self.fold_tail();
    }

    /// Appends every access of `run`. A run of a few accesses is stored as single accesses.
    pub fn push_run(&mut self, run: AccessRun) {
        if self.continue_last_run(&run) {
            return;
        }
        if run.len() < MIN_STORED_RUN_LEN {
            run.iter().for_each(|access| self.push(access));
        } else {
            self.runs.push(PlacedRun { singles_before: self.singles.len() as u64, run });
        }
    }

    /// Returns true if `run` goes on where the run that ends the log stops, as the parts of a
    /// long `rep` instruction do, and adds its iterations to that run.
    fn continue_last_run(&mut self, run: &AccessRun) -> bool {
        let singles = self.singles.len() as u64;
        let Some(last) = self.runs.last_mut() else { return false };
        let follows = last.singles_before == singles
            && last.run.pattern_len == run.pattern_len
            && last.run.stride == run.stride
            && (0..run.pattern_len as usize).all(|position| run.at(0, position) == last.run.at(last.run.count, position));
        match last.run.count.checked_add(run.count) {
            Some(count) if follows => {
                last.run.count = count;
                true
            }
            _ => false,
        }
    }

    /// Returns true if `access` completes the next iteration of the run that ends the log,
    /// which then counts it. With a two-access pattern the first access of an iteration waits
    /// as a single access until the second arrives.
    fn extend_last_run(&mut self, access: Access) -> bool {
        let singles = self.singles.len() as u64;
        let Some(last) = self.runs.last_mut() else { return false };
        let next = last.run.count;
        let after_run = singles - last.singles_before;
        match (last.run.pattern_len, after_run) {
            (1, 0) if access == last.run.at(next, 0) => {
                last.run.count += 1;
                true
            }
            (2, 1) if self.singles.last() == Some(&last.run.at(next, 0)) && access == last.run.at(next, 1) => {
                last.run.count += 1;
                self.singles.pop();
                true
            }
            _ => false,
        }
    }

    /// Replaces the single accesses that end the log with a run when they repeat a pattern
    /// `MIN_STORED_RUN_LEN` accesses long.
    fn fold_tail(&mut self) {
        let first_free = self.runs.last().map_or(0, |last| last.singles_before as usize);
        let tail = &self.singles[first_free..];
        let found = [1, 2].into_iter().find_map(|width| repeated_pattern(tail, width));
        if let Some((run, folded)) = found {
            self.singles.truncate(self.singles.len() - folded);
            self.runs.push(PlacedRun { singles_before: self.singles.len() as u64, run });
        }
    }

    /// Returns the number of accesses, counting every access of every run.
    pub fn len(&self) -> usize {
        let in_runs: u64 = self.runs.iter().map(|placed| placed.run.len()).sum();
        usize::try_from(in_runs).unwrap_or(usize::MAX).saturating_add(self.singles.len())
    }

    /// Returns true when the log contains no access.
    pub fn is_empty(&self) -> bool {
        self.singles.is_empty() && self.runs.is_empty()
    }

    /// Returns an iterator over every access in order, runs expanded.
    pub fn iter(&self) -> Iter<'_> {
        Iter { log: self, next_single: 0, next_run: 0, within_run: 0 }
    }

    /// Returns an iterator over the log's entries in order: single accesses and whole runs.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'_>> + '_ {
        let mut next_run = 0;
        let mut next_single = 0;
        std::iter::from_fn(move || {
            if let Some(placed) = self.runs.get(next_run) {
                if placed.singles_before == next_single as u64 {
                    next_run += 1;
                    return Some(Entry::Run(&placed.run));
                }
            }
            let single = self.singles.get(next_single)?;
            next_single += 1;
            Some(Entry::Single(single))
        })
    }

    /// Returns the accesses as a vector, runs expanded.
    pub fn to_vec(&self) -> Vec<Access> {
        self.iter().collect()
    }

    /// Returns the heap memory the log uses, in bytes.
    pub fn allocated_bytes(&self) -> usize {
        self.singles.capacity() * std::mem::size_of::<Access>() + self.runs.capacity() * std::mem::size_of::<PlacedRun>()
    }

    /// Frees the capacity the log does not use.
    pub fn shrink_to_fit(&mut self) {
        self.singles.shrink_to_fit();
        self.runs.shrink_to_fit();
    }
}

/// Returns the run that the last accesses of `tail` form with a pattern `width` accesses
/// long, and how many accesses it takes, when they repeat the pattern enough to be stored as a
/// run: every access the same size and kind as the one `width` before it, and every address
/// the same distance from it.
fn repeated_pattern(tail: &[Access], width: usize) -> Option<(AccessRun, usize)> {
    let iterations = (MIN_STORED_RUN_LEN as usize).div_ceil(width);
    let window_len = iterations * width;
    let window = tail.get(tail.len().checked_sub(window_len)?..)?;
    let stride = window[width].addr.wrapping_sub(window[0].addr) as i64;
    let repeats = window.windows(width + 1).all(|pair| {
        let (earlier, later) = (pair[0], pair[width]);
        earlier.size == later.size
            && earlier.kind == later.kind
            && later.addr.wrapping_sub(earlier.addr) as i64 == stride
    });
    let run = AccessRun::new(&window[..width], iterations as u64, stride)?;
    repeats.then_some((run, window_len))
}

/// One entry in the human-readable form of a log.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum ReadableEntry {
    Single(Access),
    Run(AccessRun),
}

/// The binary form of a log.
#[derive(Deserialize)]
struct CompactLog {
    singles: Vec<Access>,
    runs: Vec<PlacedRun>,
}

/// [`CompactLog`] borrowed, for serialising without a copy.
#[derive(Serialize)]
struct CompactLogRef<'a> {
    singles: &'a [Access],
    runs: &'a [PlacedRun],
}

impl Serialize for AccessLog {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_seq(self.entries().map(|entry| match entry {
                Entry::Single(access) => ReadableEntry::Single(*access),
                Entry::Run(run) => ReadableEntry::Run(*run),
            }))
        } else {
            CompactLogRef { singles: &self.singles, runs: &self.runs }.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<AccessLog, D::Error> {
        if deserializer.is_human_readable() {
            let mut log = AccessLog::new();
            for entry in Vec::<ReadableEntry>::deserialize(deserializer)? {
                match entry {
                    ReadableEntry::Single(access) => log.push(access),
                    ReadableEntry::Run(run) => {
                        log.runs.push(PlacedRun { singles_before: log.singles.len() as u64, run });
                    }
                }
            }
            return Ok(log);
        }
        let CompactLog { singles, runs } = CompactLog::deserialize(deserializer)?;
        let mut previous = 0;
        for placed in &runs {
            if placed.singles_before < previous || placed.singles_before > singles.len() as u64 {
                return Err(D::Error::custom("invalid access log: a run is out of order or placed past the single accesses"));
            }
            previous = placed.singles_before;
        }
        Ok(AccessLog { singles, runs })
    }
}

/// The iterator of [`AccessLog::iter`].
#[derive(Clone, Debug)]
pub struct Iter<'a> {
    log: &'a AccessLog,
    next_single: usize,
    next_run: usize,
    within_run: u64,
}

impl Iterator for Iter<'_> {
    type Item = Access;

    fn next(&mut self) -> Option<Access> {
        while let Some(placed) = self.log.runs.get(self.next_run) {
            if placed.singles_before != self.next_single as u64 {
                break;
            }
            if let Some(access) = placed.run.get(self.within_run) {
                self.within_run += 1;
                return Some(access);
            }
            self.next_run += 1;
            self.within_run = 0;
        }
        let access = *self.log.singles.get(self.next_single)?;
        self.next_single += 1;
        Some(access)
    }
}

impl<'a> IntoIterator for &'a AccessLog {
    type Item = Access;
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl Extend<Access> for AccessLog {
    fn extend<I: IntoIterator<Item = Access>>(&mut self, accesses: I) {
        accesses.into_iter().for_each(|access| self.push(access));
    }
}

impl<'a> Extend<&'a Access> for AccessLog {
    fn extend<I: IntoIterator<Item = &'a Access>>(&mut self, accesses: I) {
        accesses.into_iter().for_each(|access| self.push(*access));
    }
}

impl FromIterator<Access> for AccessLog {
    fn from_iter<I: IntoIterator<Item = Access>>(accesses: I) -> AccessLog {
        let mut log = AccessLog::new();
        log.extend(accesses);
        log
    }
}

impl From<Vec<Access>> for AccessLog {
    fn from(accesses: Vec<Access>) -> AccessLog {
        accesses.into_iter().collect()
    }
}

/// Two logs are equal when they hold the same accesses in the same order, however they are
/// stored.
impl PartialEq for AccessLog {
    fn eq(&self, other: &AccessLog) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for AccessLog {}

impl PartialEq<[Access]> for AccessLog {
    fn eq(&self, other: &[Access]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl PartialEq<Vec<Access>> for AccessLog {
    fn eq(&self, other: &Vec<Access>) -> bool {
        *self == other[..]
    }
}

impl fmt::Debug for AccessLog {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = formatter.debug_list();
        for entry in self.entries() {
            match entry {
                Entry::Single(access) => list.entry(access),
                Entry::Run(run) => list.entry(run),
            };
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AccessKind;

    fn access(addr: u64, size: u32, kind: AccessKind) -> Access {
        Access { addr, size, kind }
    }

    fn copy_run(count: u64) -> AccessRun {
        let pattern = [access(0x1000, 1, AccessKind::Read), access(0x2000, 1, AccessKind::Write)];
        AccessRun::new(&pattern, count, 1).expect("a two-access pattern and a non-zero count")
    }

    #[test]
    fn run_expands_in_pattern_order() {
        let run = copy_run(3);
        let expected = vec![
            access(0x1000, 1, AccessKind::Read),
            access(0x2000, 1, AccessKind::Write),
            access(0x1001, 1, AccessKind::Read),
            access(0x2001, 1, AccessKind::Write),
            access(0x1002, 1, AccessKind::Read),
            access(0x2002, 1, AccessKind::Write),
        ];
        assert_eq!(run.iter().collect::<Vec<_>>(), expected);
        assert_eq!(run.len(), 6);
        assert_eq!(run.get(6), None);
    }

    #[test]
    fn descending_run_extent() {
        let pattern = [access(0x1010, 8, AccessKind::Write)];
        let run = AccessRun::new(&pattern, 3, -8).expect("a valid run");
        assert_eq!(run.get(2), Some(access(0x1000, 8, AccessKind::Write)));
        assert_eq!(run.extent(0), Some((0x1000, 0x1018)));
        assert_eq!(run.extent(1), None);
    }

    #[test]
    fn run_rejects_empty_forms() {
        let one = [access(0, 1, AccessKind::Read)];
        assert!(AccessRun::new(&[], 1, 1).is_none());
        assert!(AccessRun::new(&one, 0, 1).is_none());
        assert!(AccessRun::new(&[one[0], one[0], one[0]], 1, 1).is_none());
    }

    #[test]
    fn log_keeps_order_around_runs() {
        let mut log = AccessLog::new();
        log.push(access(0x10, 4, AccessKind::Read));
        log.push_run(copy_run(3));
        log.push_run(copy_run(4));
        log.push(access(0x20, 4, AccessKind::Write));
        log.push_run(copy_run(5));

        let mut expected = vec![access(0x10, 4, AccessKind::Read)];
        expected.extend(copy_run(3).iter());
        expected.extend(copy_run(4).iter());
        expected.push(access(0x20, 4, AccessKind::Write));
        expected.extend(copy_run(5).iter());
        assert_eq!(log.to_vec(), expected);
        assert_eq!(log.len(), expected.len());
        assert_eq!(log, expected);
        assert_eq!(log.entries().count(), 5);
    }

    #[test]
    fn parts_of_one_run_become_one_entry() {
        let mut log = AccessLog::new();
        log.push_run(copy_run(3));
        let rest = [access(0x1003, 1, AccessKind::Read), access(0x2003, 1, AccessKind::Write)];
        log.push_run(AccessRun::new(&rest, 4, 1).expect("a valid run"));
        assert_eq!(log.entries().count(), 1);
        assert_eq!(log, copy_run(7).iter().collect::<Vec<_>>());
        // A run that starts elsewhere stays an entry of its own.
        log.push_run(copy_run(3));
        assert_eq!(log.entries().count(), 2);
    }

    #[test]
    fn short_run_stored_as_singles() {
        let mut log = AccessLog::new();
        log.push_run(copy_run(2));
        assert_eq!(log.entries().count(), 4);
        assert_eq!(log, copy_run(2).iter().collect::<Vec<_>>());
    }

    #[test]
    fn long_run_costs_one_entry() {
        let mut log = AccessLog::new();
        log.push_run(copy_run(1 << 20));
        assert_eq!(log.len(), 2 << 20);
        assert!(log.allocated_bytes() <= 1024, "{} bytes", log.allocated_bytes());
        assert_eq!(std::mem::size_of::<PlacedRun>(), 64);
    }

    #[test]
    fn equal_logs_compare_by_accesses() {
        let mut compact = AccessLog::new();
        compact.push_run(copy_run(8));
        let expanded: AccessLog = copy_run(8).iter().collect();
        assert_eq!(compact, expanded);
        assert_ne!(compact, AccessLog::new());
    }

    #[test]
    fn readable_form_lists_entries() {
        let mut log = AccessLog::new();
        log.push(access(0x10, 4, AccessKind::Read));
        log.push_run(AccessRun::new(&[access(0x20, 1, AccessKind::Write)], 6, 1).expect("a valid run"));
        let json = serde_json::to_string(&log).expect("a log serialises");
        let expected = r#"[{"addr":16,"size":4,"kind":"read"},{"pattern":[{"addr":32,"size":1,"kind":"write"}],"count":6,"stride":1}]"#;
        assert_eq!(json, expected);
        let invalid = r#"[{"pattern":[],"count":6,"stride":1}]"#;
        assert!(serde_json::from_str::<AccessLog>(invalid).is_err());
    }

    #[test]
    fn serde_round_trip_keeps_runs() {
        let mut log = AccessLog::new();
        log.push(access(0x10, 4, AccessKind::Read));
        log.push_run(copy_run(1000));
        let json = serde_json::to_string(&log).expect("a log serialises");
        let back: AccessLog = serde_json::from_str(&json).expect("and deserialises");
        assert_eq!(back, log);
        assert_eq!(back.entries().count(), 2);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn ipc_round_trip_keeps_runs() {
        let mut log = AccessLog::new();
        log.push(access(0x10, 4, AccessKind::Read));
        log.push_run(copy_run(1000));
        log.push(access(0x20, 4, AccessKind::Write));
        let (sender, receiver) = ipc_channel::ipc::channel::<AccessLog>().expect("a channel");
        sender.send(log.clone()).expect("the log is sent");
        let back = receiver.recv().expect("and received");
        assert_eq!(back, log);
        assert_eq!(back.entries().count(), 3);
    }

    #[test]
    fn pushes_fold_into_run() {
        let mut log = AccessLog::new();
        for index in 0..5u64 {
            log.push(access(0x1020 - 8 * index, 8, AccessKind::Write));
        }
        assert_eq!(log.entries().count(), 1);
        log.push(access(0x1020 - 8 * 5, 8, AccessKind::Write));
        assert_eq!(log.entries().count(), 1);
        assert_eq!(log.len(), 6);
        log.push(access(0x2000, 8, AccessKind::Write));
        assert_eq!(log.entries().count(), 2);
        let Some(Entry::Run(run)) = log.entries().next() else { panic!("the log starts with a run") };
        assert_eq!((run.count(), run.stride()), (6, -8));
    }

    #[test]
    fn pairs_fold_into_run() {
        let mut log = AccessLog::new();
        for index in 0..3u64 {
            log.push(access(0x1000 + index, 1, AccessKind::Read));
            log.push(access(0x2000 + index, 1, AccessKind::Write));
        }
        assert_eq!(log.entries().count(), 1);
        log.push(access(0x1003, 1, AccessKind::Read));
        assert_eq!(log.entries().count(), 2);
        log.push(access(0x2003, 1, AccessKind::Write));
        assert_eq!(log.entries().count(), 1);
        assert_eq!(log, copy_run(4).iter().collect::<Vec<_>>());
    }

    #[test]
    fn mixed_sizes_stay_single() {
        let mut log = AccessLog::new();
        for index in 0..5u64 {
            log.push(access(0x1000 + 8 * index, if index == 2 { 4 } else { 8 }, AccessKind::Read));
        }
        assert_eq!(log.entries().count(), 5);
    }

    proptest::proptest! {
        #[test]
        fn folding_keeps_every_access(
            segments in proptest::collection::vec(
                (0u64..3, 1u64..4, 1usize..3, 0u64..9, proptest::sample::select(vec![-8i64, -1, 0, 1, 4, 8]), proptest::bool::ANY),
                0..40,
            )
        ) {
            // Segments that repeat a pattern a few times, so that runs start, grow and break
            // off where one segment follows another.
            let mut accesses = Vec::new();
            for (base, size, width, count, stride, write) in segments {
                let kind = if write { AccessKind::Write } else { AccessKind::Read };
                for iteration in 0..count {
                    for position in 0..width as u64 {
                        let addr = (0x1000 * (base + 1) + 0x100 * position).wrapping_add((iteration as i64 * stride) as u64);
                        accesses.push(access(addr, size as u32, if position == 1 { AccessKind::Write } else { kind }));
                    }
                }
            }
            let mut log = AccessLog::new();
            for (index, access) in accesses.iter().enumerate() {
                log.push(*access);
                proptest::prop_assert_eq!(log.len(), index + 1);
            }
            proptest::prop_assert_eq!(log.to_vec(), accesses.clone());
            let mut from_entries = Vec::new();
            for entry in log.entries() {
                match entry {
                    Entry::Single(access) => from_entries.push(*access),
                    Entry::Run(run) => from_entries.extend(run.iter()),
                }
            }
            proptest::prop_assert_eq!(from_entries, accesses);
        }
    }
}
