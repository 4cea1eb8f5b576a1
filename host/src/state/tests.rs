//! Tests of the task store: what RocksDB holds against the write-back cache,
//! changes sent ahead and their restatement, prefix scans, write-through,
//! the cache's size, and reading a store beside a running host.

use super::*;

fn ckpt(n: u64) -> Checkpoint {
    Checkpoint::new(n, Default::default(), String::new())
}

/// A store with `a` = 1 checkpointed, then `a` = 2 and `b` = 2 written.
fn checkpointed_then_dirty() -> (tempfile::TempDir, TaskStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    s.put(b"a", b"1").expect("put");
    s.commit(&ckpt(1), b"").expect("commit");
    s.put(b"a", b"2").expect("put");
    s.put(b"b", b"2").expect("put");
    (dir, s)
}

/// Changes sent ahead and then discarded come back as restatements of
/// the checkpointed values (a tombstone for a key never checkpointed),
/// once, before anything else the store sends ahead.
#[test]
fn discarding_changes_sent_ahead_restates_them() {
    let (_dir, mut s) = checkpointed_then_dirty();
    assert!(s.take_ahead(1_000_000).is_none(), "below the threshold");
    let ahead = s.take_ahead(1).expect("sent ahead");
    let sent: Vec<_> = ahead.entries().collect();
    assert_eq!(sent, vec![(&b"a"[..], Some(&b"2"[..])), (&b"b"[..], Some(&b"2"[..]))]);
    ahead.stage();
    s.put(b"c", b"2").expect("put");
    s.discard_since_cut().expect("discard");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    let restated = s.take_ahead(0).expect("restatements");
    let entries: Vec<_> = restated.entries().collect();
    assert_eq!(entries, vec![(&b"a"[..], Some(&b"1"[..])), (&b"b"[..], None)]);
    restated.stage();
    assert!(s.take_ahead(0).is_none(), "restated once");
    // A checkpoint's changelog records are what was not sent ahead; its
    // RocksDB batch, every entry: what was staged as it was sent (the
    // restatements included), then the rest.
    s.put(b"d", b"1").expect("put");
    s.put(b"f", b"1").expect("put");
    s.take_ahead(1).expect("sent ahead").stage();
    s.put(b"d", b"2").expect("put");
    s.put(b"e", b"1").expect("put");
    let local = s.freeze();
    let delta: Vec<_> = local.delta().collect();
    assert_eq!(delta, vec![(&b"d"[..], Some(&b"2"[..])), (&b"e"[..], Some(&b"1"[..]))]);
    assert_eq!(local.entries(), 3);
    let stats = local.write(&ckpt(2), b"", None).expect("write");
    assert_eq!((stats.keys_written, stats.keys_deleted), (3, 0));
    s.release();
    let read = |k: &[u8]| s.get(k).expect("get");
    assert_eq!(
        [read(b"a"), read(b"b"), read(b"c"), read(b"d"), read(b"e"), read(b"f")],
        [Some(b"1".to_vec()), None, None, Some(b"2".to_vec()), Some(b"1".to_vec()), Some(b"1".to_vec())]
    );
}

/// A rollback after an aborted transaction: what was sent ahead went
/// with it, and a piece the checkpointer stages after the rollback is
/// in no later checkpoint.
#[test]
fn discarding_everything_forgets_what_was_sent_ahead() {
    let (_dir, mut s) = checkpointed_then_dirty();
    s.take_ahead(1).expect("sent ahead").stage();
    s.put(b"c", b"2").expect("put");
    let late = s.take_ahead(1).expect("sent ahead");
    s.discard();
    late.stage();
    assert!(s.take_ahead(0).is_none(), "nothing to restate: the transaction took it");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    s.put(b"d", b"3").expect("put");
    s.commit(&ckpt(2), b"").expect("commit");
    let read = |k: &[u8]| s.get(k).expect("get");
    assert_eq!(
        [read(b"a"), read(b"b"), read(b"c"), read(b"d")],
        [Some(b"1".to_vec()), None, None, Some(b"3".to_vec())]
    );
}

/// A store killed between its creation and its column families' has
/// no checkpoint to show; a missing one is an error naming its path.
#[test]
fn reading_a_store_without_its_column_families_finds_no_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(DB::open_default(dir.path()).expect("create"));
    let (restored, entries) = TaskStore::read_only(dir.path()).expect("read");
    assert!(restored.checkpoint.is_none() && entries.is_empty());
    let missing = dir.path().join("task-9");
    let e = TaskStore::read_only(&missing).expect_err("no store");
    assert!(e.to_string().contains("task-9"), "{e}");
}

/// The state column family is opened with the memtable insertion hint
/// (RocksDB records each column family's options in its OPTIONS file).
#[test]
fn the_state_column_family_inserts_with_a_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(TaskStore::open(dir.path(), false).expect("open"));
    let options = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("OPTIONS-")))
        .map(|p| std::fs::read_to_string(p).expect("read OPTIONS"))
        .expect("an OPTIONS file");
    let section = |cf: &str| {
        let start = options.find(&format!("[CFOptions \"{cf}\"]")).expect(cf);
        let rest = &options[start + 1..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_string()
    };
    let hint = "memtable_insert_with_hint_prefix_extractor=rocksdb.CappedPrefix.0";
    assert!(section(CF_STATE).contains(hint), "{}", section(CF_STATE));
    assert!(!section(CF_META).contains(hint));
}

#[test]
fn reads_see_own_writes_but_rocksdb_holds_only_checkpointed_state() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, r) = TaskStore::open(dir.path(), false).expect("open");
    assert!(r.checkpoint.is_none());
    s.put(b"a", b"1").expect("put");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
    drop(s); // crash before a checkpoint
    let (mut s, r) = TaskStore::open(dir.path(), false).expect("reopen");
    assert!(r.checkpoint.is_none());
    assert_eq!(s.get(b"a").expect("get"), None);
    s.put(b"a", b"2").expect("put");
    s.commit(&ckpt(1), b"snap").expect("commit");
    s.delete(b"a").expect("delete");
    assert_eq!(s.get(b"a").expect("get"), None);
    drop(s);
    let (s, r) = TaskStore::open(dir.path(), false).expect("reopen");
    assert_eq!(r.checkpoint.map(|c| c.number), Some(1));
    assert_eq!(r.snapshot, b"snap");
    assert_eq!(s.get(b"a").expect("get"), Some(b"2".to_vec()));
}

#[test]
fn scan_prefix_merges_cache_over_db_in_key_order_with_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    for k in ["p/1", "p/3", "p/5", "q/1"] {
        s.put(k.as_bytes(), b"db").expect("put");
    }
    s.commit(&ckpt(1), b"").expect("commit");
    s.put(b"p/2", b"c").expect("put");
    s.put(b"p/3", b"c").expect("put");
    s.delete(b"p/5").expect("delete");
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
fn apply_keeps_the_last_of_equal_keys_and_frozen_entries_stay_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    let log: [(&[u8], Option<&[u8]>); 4] = [(b"b", Some(b"1")), (b"a", Some(b"1")), (b"b", None), (b"a", Some(b"2"))];
    s.apply(log.into_iter(), None, &ckpt(1)).expect("apply");
    assert_eq!(s.get(b"a").expect("get"), Some(b"2".to_vec()));
    assert_eq!(s.get(b"b").expect("get"), None);
    // A checkpoint being written: its entries are read under newer writes.
    s.put(b"a", b"3").expect("put");
    s.put(b"c", b"3").expect("put");
    let local = s.freeze();
    s.put(b"c", b"4").expect("put");
    assert_eq!(s.get(b"a").expect("get"), Some(b"3".to_vec()));
    assert_eq!(s.get(b"c").expect("get"), Some(b"4".to_vec()));
    let keys = |s: &TaskStore| s.scan_prefix(b"", 0).expect("scan");
    assert_eq!(keys(&s), [(b"a".to_vec(), b"3".to_vec()), (b"c".to_vec(), b"4".to_vec())]);
    let stats = local.write(&ckpt(2), b"", Some(local.stage())).expect("write");
    assert_eq!((stats.keys_written, stats.keys_deleted), (2, 0));
    s.release();
    assert_eq!(s.get(b"a").expect("get"), Some(b"3".to_vec()));
    assert_eq!(s.get(b"c").expect("get"), Some(b"4".to_vec()));
    s.discard();
    assert_eq!(s.get(b"c").expect("get"), Some(b"3".to_vec()));
}

/// A batch's gets are answered from what was read ahead for it, under the
/// guest's own writes and the checkpoint being written, and only until the
/// batch ends. (RocksDB is changed behind the store's back here to tell a
/// read ahead from a read now.)
#[test]
fn a_batch_reads_its_keys_ahead_and_forgets_them_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    for k in [b"a", b"b", b"c"] {
        s.put(k, b"1").expect("put");
    }
    s.commit(&ckpt(1), b"").expect("commit");
    s.put(b"c", b"2").expect("put");
    let local = s.freeze();
    let behind = |s: &TaskStore, k: &[u8]| s.db.put_cf(s.cf(CF_STATE), k, b"9").expect("put behind");

    s.prefetch([&b"b"[..], b"a", b"c", b"a", b"absent"].into_iter());
    for k in [b"a", b"b", b"c"] {
        behind(&s, k);
    }
    s.put(b"b", b"3").expect("put");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()), "read ahead");
    assert_eq!(s.get(b"b").expect("get"), Some(b"3".to_vec()), "own write");
    assert_eq!(s.get(b"c").expect("get"), Some(b"2".to_vec()), "the checkpoint being written");
    assert_eq!(s.get(b"absent").expect("get"), None);
    s.end_prefetch();
    assert_eq!(s.get(b"a").expect("get"), Some(b"9".to_vec()), "forgotten after the batch");
    drop(local);

    // Under write-through (no cache), nothing is read ahead.
    drop(s);
    let (mut s, _) = TaskStore::open(dir.path(), true).expect("reopen");
    s.prefetch([&b"a"[..]].into_iter());
    s.put(b"a", b"4").expect("put");
    assert_eq!(s.get(b"a").expect("get"), Some(b"4".to_vec()));
    s.end_prefetch();
}

/// The same through the reader thread: the keys given as records arrive
/// are read there, and a sealed batch's reads answer its gets once taken
/// (RocksDB is changed behind the store's back only after the take: the
/// reader reads at any time between the seal and the take).
/// A release between the seal and the take (RocksDB may have changed under
/// the frozen entries that went) drops them; so does a later ticket's take
/// (the batch was never processed). A store whose reader ran closes whole:
/// the reopen finds RocksDB unlocked.
#[test]
fn the_reader_thread_reads_a_sealed_batch_and_drops_stale_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    for k in [b"a", b"b"] {
        s.put(k, b"1").expect("put");
    }
    s.commit(&ckpt(1), b"").expect("commit");
    let behind = |s: &TaskStore, k: &[u8], v: &[u8]| s.db.put_cf(s.cf(CF_STATE), k, v).expect("put behind");
    let read_ahead = |s: &mut TaskStore, keys: &[&[u8]]| {
        for k in keys {
            s.read_ahead(k);
        }
        s.seal_reads().expect("read ahead")
    };

    let ticket = read_ahead(&mut s, &[b"a", b"b", b"absent"]);
    s.take_reads(Some(ticket), true);
    behind(&s, b"a", b"9");
    s.prefetch([&b"a"[..]].into_iter()); // taken already: reads nothing now
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()), "read ahead");
    assert_eq!(s.get(b"b").expect("get"), Some(b"1".to_vec()));
    assert_eq!(s.get(b"absent").expect("get"), None);
    s.end_prefetch();
    assert_eq!(s.get(b"a").expect("get"), Some(b"9".to_vec()), "forgotten after the batch");

    // Stale: a release between the seal and the take.
    let ticket = read_ahead(&mut s, &[b"a"]);
    // Time for the reader to read "a" before it changes (the stale read
    // this is about).
    std::thread::sleep(std::time::Duration::from_millis(100));
    drop(s.freeze());
    behind(&s, b"a", b"8");
    drop(s.release());
    s.take_reads(Some(ticket), true);
    assert_eq!(s.get(b"a").expect("get"), Some(b"8".to_vec()), "dropped: read now");
    s.end_prefetch();

    // A batch never taken is dropped on the way to the next one's.
    let skipped = read_ahead(&mut s, &[b"b"]);
    let ticket = read_ahead(&mut s, &[b"a"]);
    assert!(skipped < ticket);
    s.take_reads(Some(ticket), true);
    behind(&s, b"a", b"7");
    behind(&s, b"b", b"7");
    assert_eq!(s.get(b"a").expect("get"), Some(b"8".to_vec()), "its own read ahead");
    assert_eq!(s.get(b"b").expect("get"), Some(b"7".to_vec()), "not the skipped batch's");
    s.end_prefetch();

    // Reads answered by the guest's own writes count as used: a batch whose
    // keys are mostly dirty keeps reading ahead.
    for k in [b"x", b"y", b"z"] {
        s.put(k, b"1").expect("put");
    }
    let ticket = read_ahead(&mut s, &[b"a", b"x", b"y", b"z"]);
    s.take_reads(Some(ticket), true);
    for k in [b"a", b"x", b"y", b"z"] {
        s.get(k).expect("get");
    }
    s.end_prefetch();
    s.read_ahead(b"a");
    assert!(s.seal_reads().is_some(), "the next batch reads ahead too");

    // A sealed batch without reads ahead (backing off) is not read now either.
    s.take_reads(None, true);
    s.prefetch([&b"a"[..]].into_iter());
    behind(&s, b"a", b"6");
    assert_eq!(s.get(b"a").expect("get"), Some(b"6".to_vec()), "read when asked");
    s.end_prefetch();

    // Not waiting (a checkpoint's cut): the reads if the reader has them,
    // else the batch reads its keys now; either way it sees RocksDB as it
    // was before it, and a later take drains what was left to the reader.
    for i in 0..50 {
        let ticket = read_ahead(&mut s, &[b"a"]);
        if i % 10 == 0 {
            // Time for the reader to finish (the reads are taken then).
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        s.take_reads(Some(ticket), false);
        s.prefetch([&b"a"[..]].into_iter());
        behind(&s, b"a", b"5");
        assert_eq!(s.get(b"a").expect("get"), Some(b"6".to_vec()), "as it was before the batch");
        s.end_prefetch();
        behind(&s, b"a", b"6");
    }
    let ticket = read_ahead(&mut s, &[b"b"]);
    s.take_reads(Some(ticket), true);
    behind(&s, b"b", b"4");
    assert_eq!(s.get(b"b").expect("get"), Some(b"7".to_vec()), "its own read ahead");
    s.end_prefetch();

    drop(s);
    TaskStore::open(dir.path(), false).expect("reopen: the reader thread let go of RocksDB");
}

#[test]
fn write_through_writes_immediately() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), true).expect("open");
    s.put(b"a", b"1").expect("put");
    drop(s);
    let (s, _) = TaskStore::open(dir.path(), true).expect("reopen");
    assert_eq!(s.get(b"a").expect("get"), Some(b"1".to_vec()));
}

#[test]
fn dirty_bytes_tracks_overwrites() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    s.put(b"k", &[0; 100]).expect("put");
    let one = s.dirty_bytes();
    s.put(b"k", &[0; 100]).expect("put");
    assert_eq!(s.dirty_bytes(), one);
    s.commit(&ckpt(1), b"").expect("commit");
    assert_eq!(s.dirty_bytes(), 0);
}

/// A checkpoint of `TABLE_ENTRIES` entries or more goes in as a table file,
/// not through the memtable: the pieces sent ahead and the rest merge with
/// the latest value of a key winning, a delete removes a checkpointed key,
/// and no table file is left behind.
#[test]
fn a_large_checkpoint_is_ingested_as_a_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
    s.put(b"gone", b"1").expect("put");
    s.put(b"kept", b"1").expect("put");
    s.commit(&ckpt(1), b"").expect("commit");
    let n = batch::TABLE_ENTRIES as usize;
    let key = |i: usize| format!("k{i:07}").into_bytes();
    for i in 0..n {
        s.put(&key(i), b"a").expect("put");
    }
    s.put(b"kept", b"2").expect("put");
    s.take_ahead(1).expect("sent ahead").stage();
    for i in (0..n).step_by(2) {
        s.put(&key(i), b"b").expect("put");
    }
    s.delete(b"gone").expect("delete");
    let stats = s.commit(&ckpt(2), b"snap").expect("commit");
    assert_eq!((stats.keys_written, stats.keys_deleted), (n as u64 + 1, 1));
    let in_memtable =
        s.db.property_int_value_cf(s.cf(CF_STATE), "rocksdb.num-entries-active-mem-table").expect("property");
    assert!(in_memtable.expect("a count") < n as u64, "{in_memtable:?} entries went through the memtable");
    let left: Vec<_> = std::fs::read_dir(batch::tables_dir(dir.path())).expect("tables dir").collect();
    assert!(left.is_empty(), "{left:?}");
    drop(s);
    let (s, r) = TaskStore::open(dir.path(), false).expect("reopen");
    assert_eq!(r.checkpoint.map(|c| c.number), Some(2));
    assert_eq!(r.snapshot, b"snap");
    assert_eq!(s.get(&key(0)).expect("get"), Some(b"b".to_vec()));
    assert_eq!(s.get(&key(1)).expect("get"), Some(b"a".to_vec()));
    assert_eq!(s.get(&key(n - 2)).expect("get"), Some(b"b".to_vec()));
    assert_eq!(s.get(&key(n - 1)).expect("get"), Some(b"a".to_vec()));
    assert_eq!(s.get(b"kept").expect("get"), Some(b"2".to_vec()));
    assert_eq!(s.get(b"gone").expect("get"), None);
    assert_eq!(s.scan_prefix(b"k", 0).expect("scan").len(), n + 1);
}
