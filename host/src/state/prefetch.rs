//! Reading a batch's record keys from RocksDB in one `MultiGet` before the
//! guest processes the batch.
//!
//! Most keyed processors read the state of the record's own key (a count, an
//! aggregate, a deduplication); a key that is not dirty in this interval
//! then costs a RocksDB `Get` on the processing thread. One batched
//! `MultiGet` of the batch's keys, sorted, shares RocksDB's per-lookup work
//! (the version, the file picked, the block found) between them.
//!
//! The reads are a guess, so they are judged: a batch whose guest used fewer
//! than three quarters of them makes the next batches go without, 1, 2, 4 …
//! up to 1,024 batches before the next try (a stateless guest, or one that
//! keys its state otherwise, pays one try in 1,024 batches). At most
//! [`MAX_BYTES`] of reads are held (large values: the rest are read when
//! the guest asks), and about that much memory is kept between batches.
//!
//! A read is valid for the batch only. It is taken for keys that are neither
//! dirty nor in the checkpoint being written: RocksDB's value of such a key
//! changes only when a later checkpoint is written, after the batch. The
//! guest's own writes land in the cache, which reads consult first.

use std::cell::Cell;

use super::cache::Cache;

/// Batches without prefetching, at most, after a batch that did not use its reads.
const MAX_BACKOFF: u32 = 1024;

/// Bytes of reads held, at most (as [`super::entry_bytes`] counts them): the
/// reads beyond are dropped, and their keys read when the guest asks.
pub(super) const MAX_BYTES: usize = 1 << 20;

/// Memory kept between batches, at most: reads up to [`MAX_BYTES`] fit in
/// it (the arena grows by doubling), so only a batch that held one value
/// larger than that frees its memory, and a run of batches near the limit
/// does not allocate again each time.
const KEEP_BYTES: usize = 4 * MAX_BYTES;

#[derive(Default)]
pub(super) struct Prefetch {
    /// The reads of the batch being processed (`None`: not in RocksDB);
    /// empty between batches.
    values: Cache,
    /// Reads the guest used in this batch.
    used: Cell<usize>,
    /// Batches to go without before the next try.
    skip: u32,
    /// What `skip` becomes after the next batch that does not use its reads.
    backoff: u32,
}

impl Prefetch {
    /// Whether to prefetch for the next batch (counts a batch skipped).
    pub(super) fn wanted(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// Holds `reads` (key, value) for the batch about to be processed, up
    /// to [`MAX_BYTES`].
    pub(super) fn hold<'a>(&mut self, reads: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
        for (key, value) in reads {
            if self.values.bytes() >= MAX_BYTES {
                break;
            }
            self.values.insert(key, value);
        }
        self.used.set(0);
    }

    /// A read of this batch: `None` if not read ahead, `Some(None)` if not in RocksDB.
    pub(super) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.values.is_empty() {
            return None;
        }
        let v = self.values.get(key)?;
        self.used.set(self.used.get() + 1);
        Some(v)
    }

    /// Ends the batch: judges its reads and forgets them.
    pub(super) fn end(&mut self) {
        if self.values.is_empty() {
            return;
        }
        if self.used.get() * 4 >= self.values.len() * 3 {
            self.backoff = 1;
        } else {
            self.skip = self.backoff.max(1);
            self.backoff = (self.skip * 2).min(MAX_BACKOFF);
        }
        if self.values.capacity() > KEEP_BYTES {
            self.values = Cache::default();
        } else {
            self.values.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(p: &mut Prefetch, keys: &[&[u8]], used: &[&[u8]]) -> bool {
        if !p.wanted() {
            return false;
        }
        p.hold(keys.iter().map(|k| (*k, Some(&b"v"[..]))));
        for k in used {
            assert_eq!(p.get(k), Some(Some(&b"v"[..])));
        }
        p.end();
        true
    }

    /// Unused reads back off 1, 2, 4 … batches; used ones keep prefetching;
    /// nothing read ahead answers after its batch.
    #[test]
    fn unused_reads_back_off_and_used_ones_keep_going() {
        let mut p = Prefetch::default();
        let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        // Used: every batch prefetches.
        for _ in 0..3 {
            assert!(batch(&mut p, &keys, &keys));
        }
        assert_eq!(p.get(b"a"), None, "a read is for its batch only");
        // Half used: below three quarters, so 1 batch skipped, then 2, then 4.
        let mut pattern = Vec::new();
        for _ in 0..10 {
            pattern.push(batch(&mut p, &keys, &keys[..2]));
        }
        assert_eq!(pattern, [true, false, true, false, false, true, false, false, false, false]);
        // Used again: the backoff starts over.
        while !batch(&mut p, &keys, &keys) {}
        assert!(batch(&mut p, &keys, &keys[..3]), "three quarters used is enough");
        assert!(batch(&mut p, &keys, &[]));
        assert!(!batch(&mut p, &keys, &keys), "one batch skipped after the backoff reset");
    }

    /// Large values: the reads stop at the limit (a key not held is read
    /// when asked for); the memory of reads up to the limit is kept for the
    /// next batch, and a value larger than the memory kept is freed.
    #[test]
    fn reads_are_held_up_to_a_limit() {
        let mut p = Prefetch::default();
        let keys: Vec<[u8; 1]> = (0..8u8).map(|i| [i]).collect();
        let quarter = vec![7u8; MAX_BYTES / 4];
        assert!(p.wanted());
        p.hold(keys.iter().map(|k| (&k[..], Some(&quarter[..]))));
        assert!(p.get(&[3]).is_some(), "held");
        assert_eq!(p.get(&[4]), None, "beyond the limit: not held");
        assert!(p.values.bytes() >= MAX_BYTES);
        p.end();
        let kept = p.values.capacity();
        assert!(kept >= MAX_BYTES, "kept: {kept}");
        // The same again: no new memory.
        p.skip = 0;
        assert!(p.wanted());
        p.hold(keys.iter().map(|k| (&k[..], Some(&quarter[..]))));
        p.end();
        assert_eq!(p.values.capacity(), kept, "reused");
        // One value above what is kept: freed after its batch.
        let huge = vec![7u8; KEEP_BYTES + 1];
        p.skip = 0;
        assert!(p.wanted());
        p.hold(keys.iter().map(|k| (&k[..], Some(&huge[..]))));
        assert!(p.get(&[0]).is_some(), "held");
        assert_eq!(p.get(&[1]), None, "beyond the limit: not held");
        p.end();
        assert_eq!(p.values.capacity(), 0, "freed");
    }

    #[test]
    fn the_backoff_stops_at_its_maximum() {
        let mut p = Prefetch::default();
        let mut tries = Vec::new();
        for i in 0..20_000 {
            if batch(&mut p, &[b"a"], &[]) {
                tries.push(i);
            }
        }
        let gaps: Vec<_> = tries.windows(2).map(|w| w[1] - w[0]).collect();
        assert_eq!(gaps[..4], [2, 3, 5, 9]);
        assert!(gaps.iter().all(|&g| g <= MAX_BACKOFF as usize + 1));
        assert_eq!(gaps.last(), Some(&(MAX_BACKOFF as usize + 1)));
    }
}
