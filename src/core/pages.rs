//! The set of traced pages of one call, searchable in logarithmic time.

use crate::event::{Access, PageRange};

/// Sorted, non-overlapping, coalesced runs of traced pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageSet {
    runs: Vec<PageRange>,
    page_size: u64,
}

/// The reason a list of page ranges cannot be traced.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)]
pub enum PageSetError {
    #[error("page size {0} is not a power of two")]
    InvalidPageSize(u64),
    #[error("no pages to trace")]
    Empty,
    #[error("page range {start:#x}+{len:#x} is not page-aligned")]
    Unaligned { start: u64, len: u64 },
    #[error("page range {start:#x}+{len:#x} is empty or wraps around the address space")]
    InvalidLength { start: u64, len: u64 },
    #[error("page ranges {first:#x}+{first_len:#x} and {second:#x}+{second_len:#x} overlap")]
    Overlap { first: u64, first_len: u64, second: u64, second_len: u64 },
}

impl PageSet {
    /// Validates `ranges` (page-aligned, non-empty, no two overlapping or equal) and builds
    /// the set. Adjacent ranges are merged.
    pub fn new(ranges: &[PageRange], page_size: u64) -> Result<PageSet, PageSetError> {
        if page_size == 0 || !page_size.is_power_of_two() {
            return Err(PageSetError::InvalidPageSize(page_size));
        }
        if ranges.is_empty() {
            return Err(PageSetError::Empty);
        }
        let mask = page_size - 1;
        let mut sorted = ranges.to_vec();
        for range in &sorted {
            if range.start & mask != 0 || range.len & mask != 0 {
                return Err(PageSetError::Unaligned { start: range.start, len: range.len });
            }
            if range.len == 0 || range.start.checked_add(range.len).is_none() {
                return Err(PageSetError::InvalidLength { start: range.start, len: range.len });
            }
        }
        sorted.sort();

        let mut runs: Vec<PageRange> = Vec::with_capacity(sorted.len());
        for range in sorted {
            match runs.last_mut() {
                Some(last) if range.start < last.end() => {
                    return Err(PageSetError::Overlap {
                        first: last.start,
                        first_len: last.len,
                        second: range.start,
                        second_len: range.len,
                    });
                }
                Some(last) if range.start == last.end() => last.len += range.len,
                _ => runs.push(range),
            }
        }
        Ok(PageSet { runs, page_size })
    }

    /// Returns the page size the set was built with.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Returns the coalesced runs in address order.
    pub fn runs(&self) -> &[PageRange] {
        &self.runs
    }

    /// Returns true if `addr` lies on a traced page.
    pub fn contains(&self, addr: u64) -> bool {
        self.run_index(addr).is_some()
    }

    /// Returns true if any byte of the access lies on a traced page.
    pub fn touches(&self, access: &Access) -> bool {
        !self.traced_pages_of(access.addr, access.end()).is_empty()
    }

    /// Returns the traced pages among those that hold bytes of `start..end`, as coalesced
    /// page-aligned runs.
    pub fn traced_pages_of(&self, start: u64, end: u64) -> Vec<PageRange> {
        let mut found = Vec::new();
        if end <= start {
            return found;
        }
        let first_page = start & !(self.page_size - 1);
        // The runs are sorted, so the first candidate is the last run starting at or before
        // the first page, and the scan stops at the first run starting past `end`.
        let from = self.runs.partition_point(|run| run.end() <= first_page);
        for run in &self.runs[from..] {
            if run.start >= end {
                break;
            }
            let lo = run.start.max(first_page);
            let hi = run.end().min(round_up(end, self.page_size));
            if lo < hi {
                found.push(PageRange { start: lo, len: hi - lo });
            }
        }
        found
    }

    /// Returns the page that contains `addr`.
    pub fn page_of(&self, addr: u64) -> PageRange {
        PageRange { start: addr & !(self.page_size - 1), len: self.page_size }
    }

    /// Returns the bytes around `addr` that lie on the same side of the traced pages as
    /// `addr`: its traced run, or the gap between the traced runs before and after it (from
    /// 0 or up to `u64::MAX` at the ends).
    pub fn side_of(&self, addr: u64) -> (u64, u64) {
        let index = self.runs.partition_point(|run| run.end() <= addr);
        match self.runs.get(index) {
            Some(run) if run.contains(addr) => (run.start, run.end()),
            next => {
                let before = index.checked_sub(1).and_then(|before| self.runs.get(before)).map_or(0, PageRange::end);
                (before, next.map_or(u64::MAX, |run| run.start))
            }
        }
    }

    fn run_index(&self, addr: u64) -> Option<usize> {
        let index = self.runs.partition_point(|run| run.end() <= addr);
        self.runs.get(index).filter(|run| run.contains(addr)).map(|_| index)
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two), saturating at the top.
fn round_up(value: u64, align: u64) -> u64 {
    value.checked_add(align - 1).map_or(u64::MAX & !(align - 1), |v| v & !(align - 1))
}

/// Merges `extra` into the sorted, coalesced runs `runs`.
pub fn merge_runs(runs: &mut Vec<PageRange>, extra: &[PageRange]) {
    runs.extend_from_slice(extra);
    runs.sort();
    let mut merged: Vec<PageRange> = Vec::with_capacity(runs.len());
    for range in runs.drain(..) {
        match merged.last_mut() {
            Some(last) if range.start <= last.end() => {
                let end = last.end().max(range.end());
                last.len = end - last.start;
            }
            _ => merged.push(range),
        }
    }
    *runs = merged;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, pages: u64) -> PageRange {
        PageRange { start, len: pages * 4096 }
    }

    #[test]
    fn side_of_gives_run_or_gap() {
        let set = PageSet::new(&[range(0x3000, 2), range(0x8000, 1)], 4096).unwrap();
        assert_eq!(set.side_of(0x3abc), (0x3000, 0x5000));
        assert_eq!(set.side_of(0x5000), (0x5000, 0x8000));
        assert_eq!(set.side_of(0x1000), (0, 0x3000));
        assert_eq!(set.side_of(0x9000), (0x9000, u64::MAX));
    }

    #[test]
    fn adjacent_ranges_merge() {
        let set = PageSet::new(&[range(0x3000, 1), range(0x1000, 2)], 4096).unwrap();
        assert_eq!(set.runs(), &[range(0x1000, 3)]);
    }

    #[test]
    fn overlapping_and_duplicate_ranges_rejected() {
        let overlap = PageSet::new(&[range(0x1000, 2), range(0x2000, 1)], 4096);
        assert!(matches!(overlap, Err(PageSetError::Overlap { .. })));
        let duplicate = PageSet::new(&[range(0x1000, 1), range(0x1000, 1)], 4096);
        assert!(matches!(duplicate, Err(PageSetError::Overlap { .. })));
    }

    #[test]
    fn unaligned_and_empty_ranges_rejected() {
        let unaligned = PageSet::new(&[PageRange { start: 0x1001, len: 4096 }], 4096);
        assert!(matches!(unaligned, Err(PageSetError::Unaligned { .. })));
        let empty = PageSet::new(&[PageRange { start: 0x1000, len: 0 }], 4096);
        assert!(matches!(empty, Err(PageSetError::InvalidLength { .. })));
        assert_eq!(PageSet::new(&[], 4096), Err(PageSetError::Empty));
    }

    #[test]
    fn straddling_access_finds_both_pages() {
        let set = PageSet::new(&[range(0x1000, 1), range(0x3000, 1)], 4096).unwrap();
        assert_eq!(set.traced_pages_of(0x1ffc, 0x2004), vec![range(0x1000, 1)]);
        assert_eq!(set.traced_pages_of(0x2ffc, 0x3004), vec![range(0x3000, 1)]);
        assert_eq!(set.traced_pages_of(0x1ffc, 0x3004), vec![range(0x1000, 1), range(0x3000, 1)]);
        assert!(set.traced_pages_of(0x2000, 0x3000).is_empty());
        assert!(set.contains(0x3fff));
        assert!(!set.contains(0x4000));
    }
}
