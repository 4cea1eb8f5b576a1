//! Host-managed state of one task: a write-back cache over a RocksDB that holds
//! only checkpointed state.
//!
//! Owns the task's RocksDB (`<state.dir>/<application.id>/task-<partition>/`)
//! and the dirty entries since the last checkpoint. Reads see the task's own
//! writes (the cache first). A checkpoint [`TaskStore::freeze`]s the cache:
//! its entries become a [`LocalCommit`] that another thread writes, with the
//! checkpoint record and the guest snapshot, in one `WriteBatch` (a large
//! one: the record, then its entries as ingested table files, which an open
//! finishes if a crash came between; see `batch`), while reads see them under
//! the new cache until [`TaskStore::release`]. So what RocksDB holds, once
//! open, always belongs to exactly one checkpoint. The changelog may get the
//! cache's entries earlier, in pieces ([`TaskStore::take_ahead`]), and their
//! part of the checkpoint's records is then sorted as they are sent. Under
//! `processing.guarantee = none` there is no cache: writes go straight through.
//! It does not decide *when* to checkpoint (that is `task`) nor talk to Kafka.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, FlushOptions, IteratorMode, Options};

use crate::checkpoint::Checkpoint;

mod batch;
mod cache;
mod prefetch;

pub use batch::Staged;
use batch::{Listed, Staging, column_family_id, finish_table, write_checkpoint};
use cache::Cache;
use prefetch::Prefetch;

const CF_STATE: &str = "state";
const CF_META: &str = "meta";
const META_CHECKPOINT: &[u8] = b"checkpoint";
const META_SNAPSHOT: &[u8] = b"snapshot";
/// The table files of a checkpoint whose entries may not be ingested yet, and
/// that checkpoint's record and snapshot, which become the live ones once
/// they are (see [`batch::write_checkpoint`]).
const META_TABLE: &[u8] = b"table";
const META_PENDING_CHECKPOINT: &[u8] = b"pending-checkpoint";
const META_PENDING_SNAPSHOT: &[u8] = b"pending-snapshot";

/// Bytes a cache entry costs beyond its key and value (for the size limit).
const ENTRY_OVERHEAD: usize = 48;

/// What one dirty entry counts against `statestore.cache.max.bytes`.
pub fn entry_bytes(key_len: usize, value_len: usize) -> usize {
    key_len + value_len + ENTRY_OVERHEAD
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot remove corrupt state store {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("state store {path}: {source}")]
    Rocks { path: PathBuf, source: rocksdb::Error },
    #[error("state store {path}: checkpoint record is unreadable: {message}")]
    CorruptCheckpoint { path: PathBuf, message: String },
    #[error("cannot read {file}: {source}")]
    File { file: PathBuf, source: std::io::Error },
}

impl StateError {
    /// Whether the store's files are damaged (so rebuilding it is the remedy),
    /// as opposed to unreachable, locked or full.
    pub fn is_corruption(&self) -> bool {
        match self {
            StateError::Rocks { source, .. } => source.kind() == rocksdb::ErrorKind::Corruption,
            StateError::CorruptCheckpoint { .. } => true,
            StateError::Remove { .. } | StateError::File { .. } => false,
        }
    }
}

/// The directory of task `partition`'s state under an application's state dir.
pub fn task_dir(app_state_dir: &Path, partition: i32) -> PathBuf {
    app_state_dir.join(format!("task-{partition}"))
}

/// State entries, `(key, value)`, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What a task's store held at its last checkpoint.
#[derive(Debug, Clone, Default)]
pub struct Restored {
    pub checkpoint: Option<Checkpoint>,
    pub snapshot: Vec<u8>,
}

/// Figures of one commit, for the checkpoint log line.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommitStats {
    pub keys_written: u64,
    pub keys_deleted: u64,
}

pub struct TaskStore {
    db: Arc<DB>,
    path: PathBuf,
    /// Dirty entries since the last checkpoint.
    cache: Cache,
    /// The entries of the checkpoint being written (see [`TaskStore::freeze`]).
    frozen: Option<Arc<Cache>>,
    /// The memory of the last checkpoint's entries, emptied, for the cache
    /// after the next freeze (see [`TaskStore::release`]).
    spare: Option<Cache>,
    /// Entries sent ahead to the changelog and then discarded, restated at
    /// their checkpointed values (see [`TaskStore::discard_since_cut`]).
    restate: Option<Cache>,
    /// The RocksDB records of the entries sent ahead since the last cut,
    /// built by the checkpointer as it sends them (see [`Ahead::stage`]).
    staging: Arc<Staging>,
    write_through: bool,
    /// Checkpoints of this many entries or more are written as a table (0: never).
    table_entries: u64,
    /// The RocksDB values of the batch's record keys, read ahead.
    prefetch: Prefetch,
    /// For a reader beside a running host: the checkpoint tables there were
    /// before it opened the store (see [`batch::pending_ingested`]).
    listed: Option<Listed>,
}

impl std::fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStore").field("path", &self.path).field("dirty", &self.cache.len()).finish()
    }
}

fn db_options() -> Options {
    let mut o = Options::default();
    o.create_if_missing(true);
    o.create_missing_column_families(true);
    // One DB per task: keep background threads and open files modest.
    o.set_max_background_jobs(2);
    o.set_max_open_files(256);
    o
}

/// Options of the state column family. A checkpoint writes its keys in
/// sorted runs, so each memtable insert lands just after the previous one.
/// One insertion hint for the whole memtable (a prefix of length 0) lets
/// the insert start there instead of at the skiplist's top. Measured on
/// 1M sorted 16-byte keys into a memtable already holding them: 230 ms
/// against 520 ms; into an empty one, no change; 500k random single puts,
/// no change (stop 16).
///
/// Data blocks carry a hash index beside their restart points, so a point
/// read finds its key in a block without a binary search (the state reader
/// spent ~34% of its time in that search). Measured in the per-key count
/// (4 alternating pairs, BENCHMARKS.md "eleventh"): the reader's CPU 1.25 s
/// against 1.39 s, records/s ahead in every pair. A checkpoint's own table
/// is built without it (see `batch`), which compaction adds. A restart
/// point every 4 keys instead of 16 shortens the scan after the restart
/// point is found, in a checkpoint's table too (BENCHMARKS.md, "twelfth").
/// A bloom filter beside it cut the reader's CPU by another 20% but moved
/// neither records/s nor the CPU per record (6 pairs), and was not kept.
fn state_cf_options() -> Result<Options, rocksdb::Error> {
    Options::get_options_from_string(
        &mut Options::default(),
        format!(
            "memtable_insert_with_hint_prefix_extractor=rocksdb.CappedPrefix.0;block_based_table_factory={{data_block_index_type=kDataBlockBinaryAndHash;data_block_hash_table_util_ratio=0.75;block_restart_interval={BLOCK_RESTART_INTERVAL}}}"
        ),
    )
}

/// Keys between restart points in the state's data blocks (RocksDB's default is 16).
const BLOCK_RESTART_INTERVAL: i32 = 4;

impl TaskStore {
    /// Opens (creating if missing) the store at `path` and reads its last checkpoint.
    pub fn open(path: &Path, write_through: bool) -> Result<(TaskStore, Restored), StateError> {
        let err = |source| StateError::Rocks { path: path.to_path_buf(), source };
        let cfs = [
            ColumnFamilyDescriptor::new(CF_STATE, state_cf_options().map_err(err)?),
            ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ];
        let db = DB::open_cf_descriptors(&db_options(), path, cfs).map_err(err)?;
        finish_table(&db, path)?;
        let store = TaskStore::on(db, path, write_through);
        let restored = store.read_checkpoint()?;
        Ok((store, restored))
    }

    /// Reads the checkpoint of the store at `path` without opening it for writing
    /// (works beside a running host).
    pub fn read_only(path: &Path) -> Result<(Restored, Entries), StateError> {
        let err = |source| StateError::Rocks { path: path.to_path_buf(), source };
        let cfs = DB::list_cf(&Options::default(), path).map_err(err)?;
        if ![CF_STATE, CF_META].iter().all(|n| cfs.iter().any(|c| c == n)) {
            // A store killed while it was being created: no checkpoint yet
            // (the next open creates its column families).
            return Ok((Restored::default(), Vec::new()));
        }
        let listed = Listed::now(path);
        let db = DB::open_cf_for_read_only(&Options::default(), path, [CF_STATE, CF_META], false).map_err(err)?;
        // Never written, so nothing to flush when it closes.
        let mut store = TaskStore::on(db, path, true);
        store.listed = Some(listed);
        let restored = store.read_checkpoint()?;
        let entries = store.scan_db(b"", 0)?;
        Ok((restored, entries))
    }

    /// The store over `db`, opened at `path`, with nothing dirty.
    fn on(db: DB, path: &Path, write_through: bool) -> TaskStore {
        let cf_state = column_family_id(db.cf_handle(CF_STATE).expect("column families are created at open"));
        TaskStore {
            db: Arc::new(db),
            path: path.to_path_buf(),
            cache: Cache::default(),
            frozen: None,
            spare: None,
            restate: None,
            staging: Arc::new(Staging::new(cf_state, path, batch::TABLE_ENTRIES)),
            write_through,
            table_entries: batch::TABLE_ENTRIES,
            prefetch: Prefetch::default(),
            listed: None,
        }
    }

    /// Writes checkpoints of `n` state entries or more as table files, built
    /// with the rest of the checkpoint and ingested (0: never). Until this is
    /// called: 100,000, the default of `statestore.checkpoint.table.entries`.
    /// Called before anything is staged (it starts the staging anew).
    pub fn set_table_entries(&mut self, n: u64) {
        self.table_entries = n;
        self.staging = Arc::new(Staging::new(self.staging.cf(), &self.path, n));
    }

    fn rocks(&self, source: rocksdb::Error) -> StateError {
        StateError::Rocks { path: self.path.clone(), source }
    }

    fn cf(&self, name: &str) -> &rocksdb::ColumnFamily {
        self.db.cf_handle(name).expect("column families are created at open")
    }

    /// Deletes the store at `path` (to rebuild it from the changelog).
    pub fn destroy(path: &Path) -> Result<(), StateError> {
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Remove { path: path.to_path_buf(), source }),
        }
    }

    /// The last checkpoint and snapshot RocksDB holds.
    /// A store read beside a running host, or after a crash, may hold a
    /// checkpoint whose table is ingested but whose record is still pending
    /// (see `batch::write_checkpoint`): that one is read then, as its
    /// entries are the ones RocksDB holds.
    pub fn read_checkpoint(&self) -> Result<Restored, StateError> {
        let meta = self.cf(CF_META);
        let get = |key| self.db.get_cf(meta, key).map_err(|e| self.rocks(e));
        let pending = batch::pending_ingested(&self.db, &self.path, self.listed.as_ref())?;
        let (record, snapshot) = match pending {
            true => {
                (META_PENDING_CHECKPOINT, get(META_PENDING_SNAPSHOT)?.map_or(META_SNAPSHOT, |_| META_PENDING_SNAPSHOT))
            }
            false => (META_CHECKPOINT, META_SNAPSHOT),
        };
        let Some(raw) = get(record)? else {
            return Ok(Restored::default());
        };
        let checkpoint = Checkpoint::decode(&raw)
            .map_err(|message| StateError::CorruptCheckpoint { path: self.path.clone(), message })?;
        let snapshot = get(snapshot)?.unwrap_or_default();
        Ok(Restored { checkpoint: Some(checkpoint), snapshot })
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.known(key) {
            return Ok(v.map(<[u8]>::to_vec));
        }
        self.db.get_cf(self.cf(CF_STATE), key).map_err(|e| self.rocks(e))
    }

    /// `key`'s value when it is known without asking RocksDB: written since
    /// the last checkpoint, or read ahead for the batch (`None`: not
    /// known). Counts as the guest's read of the batch's reads ahead.
    pub fn known(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.known_hashed(cache::hash(key), key)
    }

    /// [`TaskStore::known`] of `key`, whose [`TaskStore::hint`] gave `hash`.
    pub fn known_hashed(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        if let Some(v) = self.dirty(hash, key) {
            self.prefetch.shadowed(hash, key);
            return Some(v);
        }
        self.prefetch.get(hash, key)
    }

    /// `key` in the cache or the checkpoint being written (`Some(None)`: deleted there).
    fn dirty(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        self.cache.get_hashed(hash, key).or_else(|| self.frozen.as_ref().and_then(|f| f.get_hashed(hash, key)))
    }

    /// Asks the CPU to fetch what a [`TaskStore::known_hashed`] or
    /// [`TaskStore::write_hashed`] of `key` looks at first in the cache and
    /// the checkpoint being written, and returns the hash they take. Called
    /// for a batch's keys before they are read or written, it lets their
    /// memory misses overlap (see `cache`).
    pub fn hint(&self, key: &[u8]) -> u64 {
        let hash = cache::hash(key);
        self.cache.prefetch(hash);
        if let Some(frozen) = &self.frozen {
            frozen.prefetch(hash);
        }
        hash
    }

    /// A record with `key` joins the batch being collected: its state is
    /// read ahead, on the store's reader thread (see `prefetch` for when it
    /// is not). Under write-through there is nothing to read ahead of.
    pub fn read_ahead(&mut self, key: &[u8]) {
        if !self.write_through {
            self.prefetch.add(&self.db, key);
        }
    }

    /// The batch being collected is complete: the rest of its keys go to
    /// the reader. Returns the ticket for [`TaskStore::take_reads`] (`None`:
    /// not read ahead).
    pub fn seal_reads(&mut self) -> Option<u64> {
        self.prefetch.seal()
    }

    /// Before a sealed batch: waits for the reads of its `ticket`, which
    /// [`TaskStore::get`] answers from until [`TaskStore::end_prefetch`]
    /// (`None`: the batch was not read ahead, and is not read now either).
    /// Without `wait`, reads the reader has not finished are not waited
    /// for: [`TaskStore::prefetch`] then reads the batch's keys here. A
    /// checkpoint's cut processes its batches so: the reader may not get a
    /// core for milliseconds when the broker and librdkafka's threads have
    /// both (waits of 1–6 ms for it were seen while processing), and the
    /// cut should cost only its own work.
    pub fn take_reads(&mut self, ticket: Option<u64>, wait: bool) {
        self.prefetch.take(ticket, wait);
    }

    /// Before a batch that was not sealed ([`TaskStore::take_reads`]): reads the
    /// RocksDB values of its record `keys` that are not dirty, in one
    /// `MultiGet` here, for [`TaskStore::get`] to answer from. Nothing else
    /// may change the store until [`TaskStore::end_prefetch`] but `put` and
    /// `delete`. A failed read holds nothing: the guest's own `get` meets the error.
    pub fn prefetch<'a>(&mut self, keys: impl Iterator<Item = &'a [u8]>) {
        if self.prefetch.taken() || self.write_through || !self.prefetch.wanted() {
            return;
        }
        let keys: Vec<&[u8]> = keys.filter(|k| self.dirty(cache::hash(k), k).is_none()).collect();
        let cf = self.db.cf_handle(CF_STATE).expect("column families are created at open");
        self.prefetch.read_now(&self.db, cf, keys);
    }

    /// After the batch: forgets what [`TaskStore::prefetch`] read.
    pub fn end_prefetch(&mut self) {
        self.prefetch.end();
    }

    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), StateError> {
        self.write_hashed(cache::hash(key), key, Some(value))
    }

    pub fn delete(&mut self, key: &[u8]) -> Result<(), StateError> {
        self.write_hashed(cache::hash(key), key, None)
    }

    /// A `put` (`value` `None`: a `delete`) of `key`, whose
    /// [`TaskStore::hint`] gave `hash`.
    pub fn write_hashed(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) -> Result<(), StateError> {
        if self.write_through {
            let cf = self.cf(CF_STATE);
            let written = match value {
                Some(v) => self.db.put_cf(cf, key, v),
                None => self.db.delete_cf(cf, key),
            };
            return written.map_err(|e| self.rocks(e));
        }
        self.cache.insert_hashed(hash, key, value);
        Ok(())
    }

    /// Entries under `prefix` in key order, the cache merged over RocksDB.
    pub fn scan_prefix(&self, prefix: &[u8], limit: u32) -> Result<Entries, StateError> {
        let limit = if limit == 0 { usize::MAX } else { limit as usize };
        let mut dirty: Vec<(&[u8], Option<&[u8]>)> =
            self.cache.entries().filter(|(k, _)| k.starts_with(prefix)).collect();
        if let Some(frozen) = &self.frozen {
            dirty.extend(frozen.entries().filter(|(k, _)| k.starts_with(prefix) && !self.cache.contains(k)));
        }
        if dirty.is_empty() {
            return self.scan_db(prefix, limit);
        }
        dirty.sort_unstable_by(|a, b| a.0.cmp(b.0));
        let mut dirty = dirty.into_iter().peekable();
        let mut out = Vec::new();
        let cf = self.cf(CF_STATE);
        let mut clean = self
            .db
            .iterator_cf(cf, IteratorMode::From(prefix, Direction::Forward))
            .map_while(|r| r.ok().filter(|(k, _)| k.starts_with(prefix)));
        let mut next_clean = clean.next();
        while out.len() < limit {
            let take_dirty = match (dirty.peek(), &next_clean) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((dk, _)), Some((ck, _))) => *dk <= &ck[..],
            };
            if take_dirty {
                let Some((k, v)) = dirty.next() else { break };
                if next_clean.as_ref().is_some_and(|(ck, _)| &ck[..] == k) {
                    next_clean = clean.next(); // shadowed by the cache
                }
                if let Some(v) = v {
                    out.push((k.to_vec(), v.to_vec()));
                }
            } else if let Some((k, v)) = next_clean.take() {
                out.push((k.into_vec(), v.into_vec()));
                next_clean = clean.next();
            }
        }
        Ok(out)
    }

    fn scan_db(&self, prefix: &[u8], limit: usize) -> Result<Entries, StateError> {
        let limit = if limit == 0 { usize::MAX } else { limit };
        let mut out = Vec::new();
        for item in self.db.iterator_cf(self.cf(CF_STATE), IteratorMode::From(prefix, Direction::Forward)) {
            let (k, v) = item.map_err(|e| self.rocks(e))?;
            if !k.starts_with(prefix) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    /// Approximate bytes of dirty state since the last checkpoint.
    pub fn dirty_bytes(&self) -> usize {
        self.cache.bytes()
    }

    /// State changes to send to the changelog now, ahead of the checkpoint
    /// that will complete them: restatements after a discard (see
    /// [`TaskStore::discard_since_cut`]), else the entries written since the
    /// last call once they are `min_bytes` or more (`0`: never). Whatever
    /// this returns must be in the changelog before the next checkpoint's
    /// own records, and [`Ahead::stage`]d before its cut's
    /// [`LocalCommit::stage`].
    pub fn take_ahead(&mut self, min_bytes: usize) -> Option<Ahead> {
        let records = match self.restate.take() {
            Some(mut restate) => restate.take_unsent(),
            None if min_bytes > 0 && self.cache.unsent_bytes() >= min_bytes => self.cache.take_unsent(),
            None => return None,
        };
        Some(Ahead { records, staging: Arc::clone(&self.staging) })
    }

    /// Writes the dirty entries, `checkpoint` and `snapshot` in one atomic batch,
    /// then empties the cache (a checkpoint on the calling thread).
    #[cfg(test)]
    pub fn commit(&mut self, checkpoint: &Checkpoint, snapshot: &[u8]) -> Result<CommitStats, StateError> {
        let stats = self.freeze().write(checkpoint, snapshot, None)?;
        self.release();
        Ok(stats)
    }

    /// Starts a checkpoint: the dirty entries move out of the cache into the
    /// returned [`LocalCommit`], which reads still see (under the writes that
    /// follow) until [`TaskStore::release`]. One checkpoint at a time: the
    /// previous one must be released.
    pub fn freeze(&mut self) -> LocalCommit {
        assert!(self.frozen.is_none(), "{}: a checkpoint is still being written", self.path.display());
        let next = self.spare.take().unwrap_or_default();
        let delta = Arc::new(std::mem::replace(&mut self.cache, next));
        self.frozen = Some(Arc::clone(&delta));
        LocalCommit {
            db: Arc::clone(&self.db),
            path: self.path.clone(),
            delta,
            staging: Arc::clone(&self.staging),
            table_entries: self.table_entries,
        }
    }

    /// Ends a checkpoint whose [`LocalCommit`] was written (or abandoned):
    /// reads go to RocksDB again for its entries. Their memory, emptied,
    /// becomes the next interval's cache: a cache that starts empty grows by
    /// reallocating its arena and rehashing its table, and each interval
    /// touched fresh pages (page faults, rehashes and the copies were 3.5%
    /// of the processing thread in a per-key count). If the [`LocalCommit`]
    /// still holds them, the caller frees them, on another thread.
    pub fn release(&mut self) -> Released {
        self.prefetch.invalidate();
        match self.frozen.take().map(Arc::try_unwrap) {
            Some(Ok(mut entries)) => {
                entries.clear();
                self.spare = Some(entries);
                Released(None)
            }
            Some(Err(shared)) => Released(Some(shared)),
            None => Released(None),
        }
    }
    /// Applies a complete checkpoint read back from the changelog: its state
    /// entries, its snapshot (if the log still has it) and its record, in one
    /// batch. The cache must be empty (a store being restored).
    pub fn apply<'a>(
        &mut self,
        entries: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
        snapshot: Option<&[u8]>,
        checkpoint: &Checkpoint,
    ) -> Result<(), StateError> {
        debug_assert!(self.cache.is_empty());
        self.prefetch.invalidate();
        let staged = Staged::new(self.staging.cf(), entries, &self.path, self.table_entries);
        write_checkpoint(&self.db, &self.path, staged, snapshot, checkpoint).map(drop)
    }

    /// Forgets the dirty entries, frozen ones too, and what was sent ahead
    /// of them: rollback to the last checkpoint after an aborted transaction,
    /// which took what was sent ahead with it. A frozen checkpoint's writer
    /// must have finished. Pieces sent ahead that the checkpointer has yet to
    /// [`Ahead::stage`] go to a batch no checkpoint takes.
    pub fn discard(&mut self) {
        self.prefetch.invalidate();
        self.frozen = None;
        self.cache.clear();
        self.restate = None;
        self.staging = Arc::new(self.staging.renewed());
    }

    /// Forgets the entries written since the last cut and keeps the frozen
    /// ones, which the checkpointer may still be writing (a hot swap going
    /// back to the old module at the checkpoint it cut). Under
    /// write-through (`processing.guarantee = none`) there is nothing to forget.
    ///
    /// Entries already sent ahead to the changelog (see
    /// [`TaskStore::take_ahead`]) are there without a marker: the next
    /// checkpoint's marker would make them part of it. So each such key is
    /// restated, at the value it has now, to go to the changelog after them.
    pub fn discard_since_cut(&mut self) -> Result<(), StateError> {
        let mut sent: Vec<Vec<u8>> = self.cache.sent_keys().map(<[u8]>::to_vec).collect();
        self.prefetch.invalidate();
        self.cache.clear();
        if sent.is_empty() {
            return Ok(());
        }
        sent.sort_unstable();
        sent.dedup();
        let mut restate = self.restate.take().unwrap_or_default();
        for key in sent {
            restate.insert(&key, self.get(&key)?.as_deref());
        }
        self.restate = Some(restate);
        Ok(())
    }

    /// Writes the memtables to table files, so that the next open need not
    /// replay the write-ahead log.
    pub fn flush(&self) -> Result<(), StateError> {
        let cfs = [CF_STATE, CF_META].map(|n| self.cf(n));
        self.db.flush_cfs_opt(&cfs.iter().collect::<Vec<_>>(), &FlushOptions::default()).map_err(|e| self.rocks(e))
    }
}

impl Drop for TaskStore {
    /// A store closes with its checkpoints in table files: the next open
    /// need not replay them from the write-ahead log (measured: 2.3 s for a
    /// checkpoint of 1M keys).
    fn drop(&mut self) {
        self.prefetch.stop();
        if !self.write_through
            && Arc::strong_count(&self.db) == 1
            && let Err(e) = self.flush()
        {
            tracing::warn!("{e} (flushing on close; the next open replays the write-ahead log instead)");
        }
    }
}

/// State changes sent to the changelog ahead of their checkpoint.
pub struct Ahead {
    records: Vec<u8>,
    /// Where their RocksDB records go: their store's next checkpoint batch.
    staging: Arc<Staging>,
}

impl Ahead {
    /// The entries (`None`: deleted), in the order they must be sent.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        cache::records(&self.records)
    }

    /// Adds the entries, in key order, to the RocksDB batch of the
    /// checkpoint that will complete them, after what was added before: so
    /// the batch replays what the changelog gets, in its order. Every piece
    /// must be staged, in the order taken, before that checkpoint's
    /// [`LocalCommit::stage`]: the checkpointer does it as it sends them.
    pub fn stage(self) {
        self.staging.append_sorted(cache::records(&self.records));
    }
}

impl std::fmt::Debug for Ahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ahead({} bytes)", self.records.len())
    }
}

/// The entries of a written checkpoint, no longer read: dropping it frees them.
pub struct Released(#[allow(dead_code)] Option<Arc<Cache>>);

/// The local half of one checkpoint: its dirty entries, to be written to the
/// task's RocksDB with the checkpoint record and snapshot, on any thread.
pub struct LocalCommit {
    db: Arc<DB>,
    path: PathBuf,
    delta: Arc<Cache>,
    /// The RocksDB records of the entries sent ahead (see [`Ahead::stage`]).
    staging: Arc<Staging>,
    table_entries: u64,
}

impl std::fmt::Debug for LocalCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCommit").field("path", &self.path).field("entries", &self.delta.len()).finish()
    }
}

impl LocalCommit {
    /// How many state entries the checkpoint has.
    pub fn entries(&self) -> usize {
        self.delta.len()
    }

    /// What the checkpoint appends to the changelog: its state entries
    /// (`None`: deleted) not sent ahead of it (see [`TaskStore::take_ahead`]),
    /// one per key, in the cache's arena order.
    pub fn delta(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.delta.unsent_entries()
    }

    /// Builds the RocksDB batch of all the entries (on any thread: the
    /// checkpointer builds it while the changelog records are sent): the
    /// records of those sent ahead, staged as they were sent, then the rest
    /// in key order. Takes what was staged ahead, so it is built once.
    pub fn stage(&self) -> Staged {
        let mut pending = self.staging.take();
        pending.append_sorted(self.staging.cf(), self.delta.unsent_entries());
        let deleted = self.delta.deleted() as u64;
        let stats = CommitStats { keys_written: self.delta.len() as u64 - deleted, keys_deleted: deleted };
        Staged::for_store(pending, stats, &self.path, self.table_entries)
    }

    /// Writes the entries (`staged` by [`LocalCommit::stage`], or staged
    /// now), `checkpoint` and `snapshot` in one batch.
    pub fn write(
        &self,
        checkpoint: &Checkpoint,
        snapshot: &[u8],
        staged: Option<Staged>,
    ) -> Result<CommitStats, StateError> {
        let staged = staged.unwrap_or_else(|| self.stage());
        write_checkpoint(&self.db, &self.path, staged, Some(snapshot), checkpoint)
    }
}

#[cfg(test)]
mod tests;
