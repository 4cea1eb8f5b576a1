//! Reading a batch's record keys from RocksDB ahead of the guest, in one
//! sorted `MultiGet`, on a thread of their own.
//!
//! Most keyed processors read the state of the record's own key (a count, an
//! aggregate, a deduplication); a key that is not dirty in this interval
//! then costs a RocksDB lookup, ~0.6 µs of the processing thread's ~2 µs per
//! record in the per-key count. So a task hands each record's key over as it
//! queues the record ([`Prefetch::add`]), and a full batch is *sealed*: its
//! keys go to the store's reader thread, which reads them in one sorted
//! `MultiGet` (sharing RocksDB's per-lookup work between them) while the
//! task goes on with the batches before it and collects the next. The guest
//! gets a sealed batch when two more have been sealed after it (the task's
//! `READ_AHEAD_BATCHES`); the batch's reads are then taken
//! ([`Prefetch::take`], with the ticket [`Prefetch::seal`] gave) and answer
//! the guest's `get`s of those keys. A batch's keys go in one hand-over:
//! handing them over in chunks of 32 woke the reader eight times a batch,
//! and each wake-up preempted the processing thread (19,000
//! context switches in 3 s, measured with `perf`'s `sched_switch`). With
//! one batch of slack the processing thread still waited for the reader at
//! ~770 of ~3,400 batches in 2 s (`sched_switch` again): on 2 cores shared
//! with the broker the reader does not always get a core in time.
//! Callers that seal nothing (the micro-benchmark, tests) read a batch's
//! keys in one `MultiGet` on their own thread instead (see
//! [`super::TaskStore::prefetch`]).
//!
//! The reads are a guess, so they are judged: a batch whose guest used fewer
//! than three quarters of them makes the next batches go without, 1, 2, 4 …
//! up to 1,024 batches before the next try (a stateless guest, or one that
//! keys its state otherwise, pays one try in 1,024 batches). At most
//! [`MAX_BYTES`] of reads are held (large values: the rest are read when
//! the guest asks), and about that much memory is kept between batches.
//!
//! A read is valid for the batch only, and only if nothing that stood in
//! front of RocksDB has gone since its batch's first key arrived. The
//! guest's own writes land in the cache, and a checkpoint being written
//! stays in the frozen cache until RocksDB has it; reads consult both
//! first. So RocksDB's value of a key that is in neither changes only when
//! one of them goes (the frozen cache released after its write, a restore's
//! write, a rollback), and each of those [`Prefetch::invalidate`]s the reads
//! under way, which are then dropped. All of that happens between batches,
//! on the processing thread, which takes the reads.

use std::cell::Cell;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;

use rocksdb::{ColumnFamily, DB};

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
    /// The batch being processed was sealed, and its reads (if any) taken.
    taken: bool,
    /// Reads the guest used in this batch (0 between batches).
    used: Cell<usize>,
    /// Batches to go without before the next try.
    skip: u32,
    /// What `skip` becomes after the next batch that does not use its reads.
    backoff: u32,
    /// The batch whose records are arriving.
    collect: Collect,
    /// Batches sealed and not yet taken, oldest first: (ticket, epoch at
    /// their first key).
    in_flight: VecDeque<(u64, u64)>,
    next_ticket: u64,
    /// Counts [`Prefetch::invalidate`]s.
    epoch: u64,
    /// Key buffers and caches to reuse.
    spare_keys: Vec<Vec<u8>>,
    spare_caches: Vec<Cache>,
    /// Started for the first batch that reads ahead.
    reader: Option<Reader>,
}

/// What is done with the keys of the batch whose records are arriving.
#[derive(Default)]
enum Collect {
    /// No key of it has arrived yet.
    #[default]
    Idle,
    /// Not read ahead (backing off, or the reader is gone).
    Skipped,
    Reading {
        /// Its keys, each as a little-endian `u32` length and its bytes.
        keys: Vec<u8>,
        /// [`Prefetch::epoch`] when its first key arrived.
        epoch: u64,
    },
}

impl Prefetch {
    /// Whether the next batch is read ahead (counts a batch skipped).
    pub(super) fn wanted(&mut self) -> bool {
        if self.skip > 0 {
            self.skip -= 1;
            return false;
        }
        true
    }

    /// A record of the arriving batch has `key`: it is read from `db` with
    /// the others, unless the batch goes without.
    pub(super) fn add(&mut self, db: &Arc<DB>, key: &[u8]) {
        if let Collect::Idle = self.collect {
            self.collect = match self.wanted() {
                true => {
                    self.reader.get_or_insert_with(|| Reader::start(Arc::clone(db)));
                    let keys = self.spare_keys.pop().unwrap_or_default();
                    Collect::Reading { keys, epoch: self.epoch }
                }
                false => Collect::Skipped,
            };
        }
        let Collect::Reading { keys, .. } = &mut self.collect else { return };
        let Ok(len) = u32::try_from(key.len()) else { return };
        keys.extend_from_slice(&len.to_le_bytes());
        keys.extend_from_slice(key);
    }

    fn send(&mut self, request: Request) -> bool {
        let sent = self.reader.as_ref().is_some_and(|r| r.requests.send(request).is_ok());
        if !sent {
            self.reader_gone();
        }
        sent
    }

    /// The reader thread is gone (it panicked, or could not start): what
    /// it was reading is lost, and batches go without for a while.
    fn reader_gone(&mut self) {
        self.reader = None;
        self.in_flight.clear();
        if let Collect::Reading { .. } = self.collect {
            self.collect = Collect::Skipped;
        }
        self.skip = MAX_BACKOFF;
    }

    /// The arriving batch is complete: its last keys go to the reader.
    /// Returns the ticket that takes its reads (`None`: not read ahead).
    pub(super) fn seal(&mut self) -> Option<u64> {
        let Collect::Reading { keys, epoch } = std::mem::take(&mut self.collect) else { return None };
        let values = self.spare_caches.pop().unwrap_or_default();
        if !self.send(Request { keys, values }) {
            return None;
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight.push_back((ticket, epoch));
        Some(ticket)
    }

    /// State in front of RocksDB went (see the module's text): reads taken
    /// before now may be older than RocksDB, so they are dropped.
    pub(super) fn invalidate(&mut self) {
        self.epoch += 1;
    }

    /// Before a sealed batch is processed: the reads of its `ticket` (once
    /// the reader has them all, if `wait`) answer [`Prefetch::get`] until
    /// [`Prefetch::end`]; without a ticket (not read ahead) there are none.
    /// Batches sealed before it and never taken (their processing failed,
    /// or they went without waiting) are dropped on the way. Without
    /// `wait`, reads the reader has not finished are left to it, and the
    /// batch is not taken: it reads its keys itself ([`Prefetch::read_now`]).
    pub(super) fn take(&mut self, ticket: Option<u64>, wait: bool) {
        self.taken = true;
        let Some(ticket) = ticket else { return };
        while let Some(&(t, epoch)) = self.in_flight.front() {
            if t > ticket {
                break;
            }
            let result = match self.reader.as_ref() {
                Some(r) if wait => r.results.recv().map_err(|_| TryRecvError::Disconnected),
                Some(r) => r.results.try_recv(),
                None => Err(TryRecvError::Disconnected),
            };
            let reads = match result {
                Ok(reads) => reads,
                Err(TryRecvError::Empty) => {
                    self.taken = false;
                    return;
                }
                Err(TryRecvError::Disconnected) => {
                    self.reader_gone();
                    return;
                }
            };
            self.in_flight.pop_front();
            let mut keys = reads.keys;
            keys.clear();
            self.spare_keys.push(keys);
            let mut values = reads.values;
            // Whether the reads went stale is known now: `invalidate` runs
            // on this thread, and only between batches.
            if t == ticket && epoch == self.epoch && !reads.failed {
                std::mem::swap(&mut self.values, &mut values);
            }
            self.recycle(values);
        }
    }

    /// Whether the batch being processed was sealed (its reads are taken).
    pub(super) fn taken(&self) -> bool {
        self.taken
    }

    /// Reads `keys` for the batch about to be processed, on this thread.
    pub(super) fn read_now(&mut self, db: &DB, cf: &ColumnFamily, keys: Vec<&[u8]>) {
        read_sorted(db, cf, keys, &mut self.values);
    }

    fn recycle(&mut self, mut values: Cache) {
        if values.capacity() <= KEEP_BYTES && self.spare_caches.len() < 2 {
            values.clear();
            self.spare_caches.push(values);
        }
    }

    /// A read of this batch: `None` if not read ahead, `Some(None)` if not in RocksDB.
    pub(super) fn get(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.values.is_empty() {
            return None;
        }
        let v = self.values.get_hashed(hash, key)?;
        self.used.set(self.used.get() + 1);
        Some(v)
    }

    /// The guest's `get` of `key` was answered by a dirty entry: a read of
    /// it counts as used (the reader cannot tell dirty keys, which the guest
    /// did want, from keys the guest does not read).
    pub(super) fn shadowed(&self, hash: u64, key: &[u8]) {
        if !self.values.is_empty() && self.values.get_hashed(hash, key).is_some() {
            self.used.set(self.used.get() + 1);
        }
    }

    /// Ends the batch: judges its reads and forgets them.
    pub(super) fn end(&mut self) {
        self.taken = false;
        let used = self.used.replace(0);
        if self.values.is_empty() {
            return;
        }
        if used * 4 >= self.values.len() * 3 {
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

    /// Stops the reader thread (it holds the database open).
    pub(super) fn stop(&mut self) {
        self.reader = None;
        self.in_flight.clear();
    }
}

/// Reads `keys` in one sorted `MultiGet` into `values` (empty), up to
/// [`MAX_BYTES`]. Returns whether the read succeeded; a failed one holds nothing.
fn read_sorted(db: &DB, cf: &ColumnFamily, mut keys: Vec<&[u8]>, values: &mut Cache) -> bool {
    keys.sort_unstable();
    keys.dedup();
    match db.batched_multi_get_cf(cf, &keys, true).into_iter().collect::<Result<Vec<_>, _>>() {
        Ok(read) => {
            hold(values, keys.into_iter().zip(read.iter().map(|v| v.as_deref())));
            true
        }
        Err(_) => false,
    }
}

/// Inserts `reads` (key, value) into `values` up to [`MAX_BYTES`].
fn hold<'a>(values: &mut Cache, reads: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>) {
    for (key, value) in reads {
        if values.bytes() >= MAX_BYTES {
            break;
        }
        values.insert(key, value);
    }
}

/// A batch's keys to read (see [`Collect::Reading`]), and the (empty)
/// cache to hold the reads.
struct Request {
    keys: Vec<u8>,
    values: Cache,
}

/// One batch's reads.
#[derive(Default)]
struct Reads {
    values: Cache,
    /// A read failed: the batch holds none.
    failed: bool,
    /// The key buffer, to reuse.
    keys: Vec<u8>,
}

/// The thread that reads a store's batches ahead.
struct Reader {
    requests: Sender<Request>,
    results: Receiver<Reads>,
    thread: Option<JoinHandle<()>>,
}

impl Reader {
    fn start(db: Arc<DB>) -> Reader {
        let (requests, rx) = channel();
        let (tx, results) = channel();
        let thread = std::thread::Builder::new()
            .name("state-reader".into())
            .spawn(move || read(&db, &rx, &tx))
            .map_err(|e| {
                tracing::warn!("cannot start a state reader thread ({e}); state is read as the processor asks")
            })
            .ok();
        Reader { requests, results, thread }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        let (closed, _) = channel();
        drop(std::mem::replace(&mut self.requests, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The reader thread: reads each batch's keys in one sorted `MultiGet`.
fn read(db: &DB, requests: &Receiver<Request>, results: &Sender<Reads>) {
    let Some(cf) = db.cf_handle(super::CF_STATE) else { return };
    while let Ok(Request { keys: buf, mut values }) = requests.recv() {
        let failed = !read_sorted(db, cf, batch_keys(&buf).collect(), &mut values);
        if results.send(Reads { values, failed, keys: buf }).is_err() {
            return;
        }
    }
}

/// The keys of a batch (see [`Collect::Reading`]).
fn batch_keys(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (len, rest) = buf.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (key, rest) = rest.split_at_checked(len)?;
        buf = rest;
        Some(key)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(p: &mut Prefetch, keys: &[&[u8]], used: &[&[u8]]) -> bool {
        if !p.wanted() {
            return false;
        }
        hold(&mut p.values, keys.iter().map(|k| (*k, Some(&b"v"[..]))));
        for k in used {
            assert_eq!(p.get(super::super::cache::hash(k), k), Some(Some(&b"v"[..])));
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
        assert_eq!(p.get(super::super::cache::hash(b"a"), b"a"), None, "a read is for its batch only");
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
        hold(&mut p.values, keys.iter().map(|k| (&k[..], Some(&quarter[..]))));
        assert!(p.get(super::super::cache::hash(&[3]), &[3]).is_some(), "held");
        assert_eq!(p.get(super::super::cache::hash(&[4]), &[4]), None, "beyond the limit: not held");
        assert!(p.values.bytes() >= MAX_BYTES);
        p.end();
        let kept = p.values.capacity();
        assert!(kept >= MAX_BYTES, "kept: {kept}");
        // The same again: no new memory.
        p.skip = 0;
        assert!(p.wanted());
        hold(&mut p.values, keys.iter().map(|k| (&k[..], Some(&quarter[..]))));
        p.end();
        assert_eq!(p.values.capacity(), kept, "reused");
        // One value above what is kept: freed after its batch.
        let huge = vec![7u8; KEEP_BYTES + 1];
        p.skip = 0;
        assert!(p.wanted());
        hold(&mut p.values, keys.iter().map(|k| (&k[..], Some(&huge[..]))));
        assert!(p.get(super::super::cache::hash(&[0]), &[0]).is_some(), "held");
        assert_eq!(p.get(super::super::cache::hash(&[1]), &[1]), None, "beyond the limit: not held");
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
