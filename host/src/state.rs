//! Host-managed state of one task: a write-back cache over a RocksDB that holds
//! only checkpointed state.
//!
//! Owns the task's RocksDB (`<state.dir>/<application.id>/task-<partition>/`)
//! and the dirty entries since the last checkpoint. Reads see the task's own
//! writes (the cache first); [`TaskStore::commit`] writes the dirty entries, the
//! checkpoint record and the guest snapshot in one `WriteBatch`, so what RocksDB
//! holds always belongs to exactly one checkpoint. Under
//! `processing.guarantee = none` there is no cache: writes go straight through.
//! It does not decide *when* to checkpoint (that is `task`) nor talk to Kafka.

use std::collections::HashMap;

/// The write-back cache's map: foldhash, not SipHash (the cache is hashed
/// twice per state update; callgrind: SipHash was ~370 instructions of it).
type Cache = HashMap<Vec<u8>, Option<Vec<u8>>, foldhash::fast::RandomState>;
use std::path::{Path, PathBuf};

use rocksdb::{ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch};

use crate::checkpoint::Checkpoint;

const CF_STATE: &str = "state";
const CF_META: &str = "meta";
const META_CHECKPOINT: &[u8] = b"checkpoint";
const META_SNAPSHOT: &[u8] = b"snapshot";

/// Bytes a cache entry costs beyond its key and value (for the size limit).
const ENTRY_OVERHEAD: usize = 48;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot remove corrupt state store {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("state store {path}: {source}")]
    Rocks { path: PathBuf, source: rocksdb::Error },
    #[error("state store {path}: checkpoint record is unreadable: {message}")]
    CorruptCheckpoint { path: PathBuf, message: String },
}

impl StateError {
    /// Whether the store's files are damaged (so rebuilding it is the remedy),
    /// as opposed to unreachable, locked or full.
    pub fn is_corruption(&self) -> bool {
        match self {
            StateError::Rocks { source, .. } => source.kind() == rocksdb::ErrorKind::Corruption,
            StateError::CorruptCheckpoint { .. } => true,
            StateError::Remove { .. } => false,
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
    db: DB,
    path: PathBuf,
    /// Dirty entries since the last checkpoint; `None` is a delete.
    cache: Cache,
    cache_bytes: usize,
    write_through: bool,
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

impl TaskStore {
    /// Opens (creating if missing) the store at `path` and reads its last checkpoint.
    pub fn open(path: &Path, write_through: bool) -> Result<(TaskStore, Restored), StateError> {
        let err = |source| StateError::Rocks { path: path.to_path_buf(), source };
        let cfs = [CF_STATE, CF_META].map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
        let db = DB::open_cf_descriptors(&db_options(), path, cfs).map_err(err)?;
        let store = TaskStore { db, path: path.to_path_buf(), cache: Cache::default(), cache_bytes: 0, write_through };
        let restored = store.read_checkpoint()?;
        Ok((store, restored))
    }

    /// Reads the checkpoint of the store at `path` without opening it for writing
    /// (works beside a running host).
    pub fn read_only(path: &Path) -> Result<(Restored, Entries), StateError> {
        let err = |source| StateError::Rocks { path: path.to_path_buf(), source };
        let db = DB::open_cf_for_read_only(&Options::default(), path, [CF_STATE, CF_META], false).map_err(err)?;
        let store =
            TaskStore { db, path: path.to_path_buf(), cache: Cache::default(), cache_bytes: 0, write_through: false };
        let restored = store.read_checkpoint()?;
        let entries = store.scan_db(b"", 0)?;
        Ok((restored, entries))
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
    pub fn read_checkpoint(&self) -> Result<Restored, StateError> {
        let meta = self.cf(CF_META);
        let Some(raw) = self.db.get_cf(meta, META_CHECKPOINT).map_err(|e| self.rocks(e))? else {
            return Ok(Restored::default());
        };
        let checkpoint = Checkpoint::decode(&raw)
            .map_err(|message| StateError::CorruptCheckpoint { path: self.path.clone(), message })?;
        let snapshot = self.db.get_cf(meta, META_SNAPSHOT).map_err(|e| self.rocks(e))?.unwrap_or_default();
        Ok(Restored { checkpoint: Some(checkpoint), snapshot })
    }

    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(v) = self.cache.get(key) {
            return Ok(v.clone());
        }
        self.db.get_cf(self.cf(CF_STATE), key).map_err(|e| self.rocks(e))
    }

    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), StateError> {
        if self.write_through {
            return self.db.put_cf(self.cf(CF_STATE), key, value).map_err(|e| self.rocks(e));
        }
        self.cache_insert(key, Some(value));
        Ok(())
    }

    pub fn delete(&mut self, key: Vec<u8>) -> Result<(), StateError> {
        if self.write_through {
            return self.db.delete_cf(self.cf(CF_STATE), key).map_err(|e| self.rocks(e));
        }
        self.cache_insert(key, None);
        Ok(())
    }

    fn cache_insert(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let size = |klen: usize, v: &Option<Vec<u8>>| klen + v.as_ref().map_or(0, Vec::len) + ENTRY_OVERHEAD;
        let klen = key.len();
        self.cache_bytes += size(klen, &value);
        if let Some(old) = self.cache.insert(key, value) {
            self.cache_bytes -= size(klen, &old);
        }
    }

    /// Entries under `prefix` in key order, the cache merged over RocksDB.
    pub fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Result<Entries, StateError> {
        let limit = if limit == 0 { usize::MAX } else { limit as usize };
        let mut dirty: Vec<(&Vec<u8>, &Option<Vec<u8>>)> =
            self.cache.iter().filter(|(k, _)| k.starts_with(prefix)).collect();
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
                (Some((dk, _)), Some((ck, _))) => dk.as_slice() <= &ck[..],
            };
            if take_dirty {
                let Some((k, v)) = dirty.next() else { break };
                if next_clean.as_ref().is_some_and(|(ck, _)| &ck[..] == k.as_slice()) {
                    next_clean = clean.next(); // shadowed by the cache
                }
                if let Some(v) = v {
                    out.push((k.clone(), v.clone()));
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
        self.cache_bytes
    }

    /// Writes the dirty entries, `checkpoint` and `snapshot` in one atomic batch,
    /// then empties the cache.
    pub fn commit(&mut self, checkpoint: &Checkpoint, snapshot: &[u8]) -> Result<CommitStats, StateError> {
        let mut batch = WriteBatch::default();
        let mut stats = CommitStats::default();
        let state = self.cf(CF_STATE);
        for (k, v) in &self.cache {
            match v {
                Some(v) => {
                    batch.put_cf(state, k, v);
                    stats.keys_written += 1;
                }
                None => {
                    batch.delete_cf(state, k);
                    stats.keys_deleted += 1;
                }
            }
        }
        let meta = self.cf(CF_META);
        batch.put_cf(meta, META_CHECKPOINT, checkpoint.encode());
        batch.put_cf(meta, META_SNAPSHOT, snapshot);
        self.db.write(batch).map_err(|e| self.rocks(e))?;
        self.cache.clear();
        self.cache_bytes = 0;
        Ok(stats)
    }

    /// The dirty entries since the last checkpoint (`None`: deleted), in no
    /// particular order: what a checkpoint appends to the changelog.
    pub fn delta(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.cache.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// Applies a complete checkpoint read back from the changelog: its state
    /// entries, its snapshot (if the log still has it) and its record, in one
    /// batch. The cache must be empty (a store being restored).
    pub fn apply(
        &mut self,
        entries: &[(Vec<u8>, Option<Vec<u8>>)],
        snapshot: Option<&[u8]>,
        checkpoint: &Checkpoint,
    ) -> Result<(), StateError> {
        debug_assert!(self.cache.is_empty());
        let mut batch = WriteBatch::default();
        let state = self.cf(CF_STATE);
        for (k, v) in entries {
            match v {
                Some(v) => batch.put_cf(state, k, v),
                None => batch.delete_cf(state, k),
            }
        }
        let meta = self.cf(CF_META);
        batch.put_cf(meta, META_CHECKPOINT, checkpoint.encode());
        if let Some(s) = snapshot {
            batch.put_cf(meta, META_SNAPSHOT, s);
        }
        self.db.write(batch).map_err(|e| self.rocks(e))
    }

    /// Forgets the dirty entries (rollback to the last checkpoint).
    pub fn discard(&mut self) {
        self.cache.clear();
        self.cache_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(n: u64) -> Checkpoint {
        Checkpoint::new(n, Default::default(), String::new())
    }

    #[test]
    fn reads_see_own_writes_but_rocksdb_holds_only_checkpointed_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, r) = TaskStore::open(dir.path(), false).expect("open");
        assert!(r.checkpoint.is_none());
        s.put(b"a".to_vec(), b"1".to_vec()).expect("put");
        assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
        drop(s); // crash before a checkpoint
        let (mut s, r) = TaskStore::open(dir.path(), false).expect("reopen");
        assert!(r.checkpoint.is_none());
        assert_eq!(s.get(b"a").expect("get"), None);
        s.put(b"a".to_vec(), b"2".to_vec()).expect("put");
        s.commit(&ckpt(1), b"snap").expect("commit");
        s.delete(b"a".to_vec()).expect("delete");
        assert_eq!(s.get(b"a").expect("get"), None);
        drop(s);
        let (mut s, r) = TaskStore::open(dir.path(), false).expect("reopen");
        assert_eq!(r.checkpoint.map(|c| c.number), Some(1));
        assert_eq!(r.snapshot, b"snap");
        assert_eq!(s.get(b"a").expect("get"), Some(b"2".to_vec()));
    }

    #[test]
    fn scan_prefix_merges_cache_over_db_in_key_order_with_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
        for k in ["p/1", "p/3", "p/5", "q/1"] {
            s.put(k.into(), b"db".to_vec()).expect("put");
        }
        s.commit(&ckpt(1), b"").expect("commit");
        s.put(b"p/2".to_vec(), b"c".to_vec()).expect("put");
        s.put(b"p/3".to_vec(), b"c".to_vec()).expect("put");
        s.delete(b"p/5".to_vec()).expect("delete");
        let all: Vec<(String, String)> = s
            .scan_prefix(b"p/", 0)
            .expect("scan")
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).into(), String::from_utf8_lossy(&v).into()))
            .collect();
        assert_eq!(all, [("p/1", "db"), ("p/2", "c"), ("p/3", "c")].map(|(a, b)| (a.to_string(), b.to_string())));
        assert_eq!(s.scan_prefix(b"p/", 2).expect("scan").len(), 2);
    }

    #[test]
    fn write_through_writes_immediately() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = TaskStore::open(dir.path(), true).expect("open");
        s.put(b"a".to_vec(), b"1".to_vec()).expect("put");
        drop(s);
        let (mut s, _) = TaskStore::open(dir.path(), true).expect("reopen");
        assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    }

    #[test]
    fn dirty_bytes_tracks_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
        s.put(b"k".to_vec(), vec![0; 100]).expect("put");
        let one = s.dirty_bytes();
        s.put(b"k".to_vec(), vec![0; 100]).expect("put");
        assert_eq!(s.dirty_bytes(), one);
        s.commit(&ckpt(1), b"").expect("commit");
        assert_eq!(s.dirty_bytes(), 0);
    }
}
