//! Tests of the checkpoint batch and table: RocksDB's own record encoding,
//! runs where the last wins, a table against the batch of the same runs,
//! and a table ingested at open after a crash.

use super::*;

/// A new database with column families `cfs` in a temporary directory.
fn db_with(cfs: &[&str]) -> (tempfile::TempDir, DB) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = DB::open_cf(&opts, dir.path(), cfs).expect("open");
    (dir, db)
}

/// The encoded records are RocksDB's own: the bytes `put_cf` and
/// `delete_cf` give, for keys and values around a varint's one-byte
/// limit, in the default column family (id 0) and another.
#[test]
fn encoded_records_are_rocksdbs_own() {
    let (_dir, db) = db_with(&["a", "b"]);
    let long = vec![7u8; 300];
    let entries: Vec<(&[u8], Option<&[u8]>)> = vec![
        (b"", Some(b"")),
        (b"k1", None),
        (&long[..127], Some(&long[..128])),
        (&long[..128], Some(&long[..300])),
        (&long[..129], None),
    ];
    for name in ["default", "a", "b"] {
        let cf = db.cf_handle(name).expect("column family");
        let mut theirs = WriteBatch::default();
        for &(k, v) in &entries {
            match v {
                Some(v) => theirs.put_cf(cf, k, v),
                None => theirs.delete_cf(cf, k),
            }
        }
        let mut ours = Encoded::default();
        for &(k, v) in &entries {
            ours.push(column_family_id(cf), k, v);
        }
        assert_eq!(ours.into_batch().data(), theirs.data(), "column family {name}");
    }
    assert_eq!(column_family_id(db.cf_handle("default").expect("default")), 0);
    assert_ne!(column_family_id(db.cf_handle("a").expect("a")), 0);
}

/// Runs appended one after another: a later run's value of a key wins
/// in the database, as in the changelog.
#[test]
fn a_later_run_wins() {
    let (_dir, db) = db_with(&["s"]);
    let cf = db.cf_handle("s").expect("s");
    let id = column_family_id(cf);
    let mut encoded = Encoded::default();
    let run = |entries: &[(&'static [u8], Option<&'static [u8]>)]| entries.to_vec();
    let first =
        encoded.append_sorted(id, run(&[(b"b", Some(b"1")), (b"a", Some(b"1")), (b"c", Some(b"1"))]).into_iter());
    let second = encoded.append_sorted(id, run(&[(b"c", None), (b"a", Some(b"2")), (b"a", Some(b"3"))]).into_iter());
    assert_eq!((first.keys_written, first.keys_deleted, second.keys_written, second.keys_deleted), (3, 0, 1, 1));
    let Stage::Batch(batch) = Staged::from_encoded(encoded, CommitStats::default()).stage else {
        unreachable!("from_encoded builds a batch")
    };
    db.write(batch).expect("write");
    let got: Vec<Option<Vec<u8>>> = [&b"a"[..], b"b", b"c"].iter().map(|k| db.get_cf(cf, k).expect("get")).collect();
    assert_eq!(got, vec![Some(b"3".to_vec()), Some(b"1".to_vec()), None]);
}

type Run = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Seven runs over 600 keys, most of them in several runs, with deletes,
/// keys around the 16-byte prefix and keys sharing one.
fn overlapping_runs() -> Vec<Run> {
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..7)
        .map(|run| {
            (0..300 * (run + 1))
                .map(|_| {
                    let r = next();
                    // 600 keys: most come in several runs.
                    let id = (r % 600).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    let len = 14 + (id % 6) as usize;
                    let key = (0..len).map(|j| [0u8, 1, 255][((id >> (j * 2 + 8)) % 3) as usize]).collect();
                    let value = (r % 5 != 0).then(|| r.to_le_bytes()[..(r % 9) as usize].to_vec());
                    (key, value)
                })
                // Keys whose 16-byte prefixes tie, in each run.
                .chain(
                    [&b"ab"[..], b"ab\0", b"ab\0\0", b"0123456789abcdef", b"0123456789abcdef\0", b"0123456789abcdefg"]
                        .into_iter()
                        .skip(run % 3)
                        .map(|k| (k.to_vec(), Some(vec![run as u8]))),
                )
                .collect()
        })
        .collect()
}

fn entries(run: &Run) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    run.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
}

type Pairs = Vec<(Box<[u8]>, Box<[u8]>)>;

fn all(db: &DB, cf: &rocksdb::ColumnFamily) -> Pairs {
    db.iterator_cf(cf, rocksdb::IteratorMode::Start).map(|r| r.expect("read")).collect()
}

/// What the batch of `runs` leaves in a new database.
fn batch_of(runs: &[Run]) -> Pairs {
    let (_dir, db) = db_with(&["s"]);
    let cf = db.cf_handle("s").expect("s");
    let mut encoded = Encoded::default();
    for run in runs {
        encoded.append_sorted(column_family_id(cf), entries(run));
    }
    db.write(encoded.into_batch()).expect("write");
    let pairs = all(&db, cf);
    assert!(pairs.len() > 300, "{} keys", pairs.len());
    pairs
}

/// A table file's smallest and largest key.
type KeyRange = (Vec<u8>, Vec<u8>);

/// What a table's files, ingested in one call, leave in a new database,
/// and the key ranges of the files there.
fn ingested_in_order(table: &Table) -> (Pairs, Vec<KeyRange>) {
    let (_dir, db) = db_with(&["s"]);
    let cf = db.cf_handle("s").expect("s");
    db.ingest_external_file_cf(cf, table.files.clone()).expect("ingest");
    let live = db.live_files().expect("live files");
    let ranges = live.into_iter().filter_map(|f| Some((f.start_key?, f.end_key?))).collect();
    (all(&db, cf), ranges)
}

/// A table holds what the batch of the same runs leaves in the database,
/// built as one file and as several, in parallel, whose key ranges do not
/// overlap (RocksDB would ingest overlapping ones, the later winning).
#[test]
fn a_table_holds_what_the_batch_leaves() {
    let runs = overlapping_runs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut encoded = Encoded::default();
    for run in &runs {
        encoded.append_sorted(1, entries(run));
    }
    let from_batch = batch_of(&runs);
    for parts in 1..=4 {
        let table = Table::build(&encoded, 0, dir.path(), parts).expect("table");
        assert_eq!(table.files.len(), parts, "600 keys split {parts} ways");
        let (pairs, mut ranges) = ingested_in_order(&table);
        assert_eq!(pairs, from_batch, "{parts} parts");
        ranges.sort();
        assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "{parts} parts overlap: {ranges:?}");
    }
}

/// Runs staged with tables built ahead of the cut (each time the runs
/// not yet in one hold 1,000 records), then a last run added at the cut:
/// the checkpoint's table is those tables and one of the runs after them,
/// whose files, ingested in order, leave what the batch of all the runs
/// leaves. Without tables ahead, the same records that are too few for a
/// table stay a batch.
#[test]
fn tables_built_ahead_and_the_rest_hold_what_the_batch_leaves() {
    let runs = overlapping_runs();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut staging = Staging::new(1, dir.path(), 100_000);
    staging.ahead_entries = 1_000;
    for run in &runs[..6] {
        staging.append_sorted(entries(run));
    }
    let mut pending = staging.take();
    assert!(pending.tables.len() >= 2, "{} tables ahead", pending.tables.len());
    assert!((1..6).contains(&pending.covered_runs), "{} runs in tables ahead", pending.covered_runs);
    pending.append_sorted(1, entries(&runs[6]));
    let Stage::Table(table) = Staged::for_store(pending, CommitStats::default(), dir.path(), 100_000).stage else {
        panic!("a checkpoint with tables built ahead is a table")
    };
    let (pairs, _) = ingested_in_order(&table);
    assert_eq!(pairs, batch_of(&runs));
    let staging = Staging::new(1, dir.path(), 100_000);
    for run in &runs {
        staging.append_sorted(entries(run));
    }
    let pending = staging.take();
    assert!(pending.tables.is_empty());
    let staged = Staged::for_store(pending, CommitStats::default(), dir.path(), 100_000);
    assert!(matches!(staged.stage, Stage::Batch(_)), "too few records for a table");
}

/// Where no table can be built (a file stands where the tables'
/// directory would be), staging tries ahead once, and the checkpoint falls
/// back to a batch of all the records, which leaves what the runs leave.
#[test]
fn without_tables_a_checkpoint_is_a_batch_of_every_record() {
    let runs = overlapping_runs();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(tables_dir(dir.path()), b"not a directory").expect("write");
    let mut staging = Staging::new(1, dir.path(), 100_000);
    staging.ahead_entries = 1_000;
    for run in &runs {
        staging.append_sorted(entries(run));
    }
    let pending = staging.take();
    assert!(pending.tables.is_empty() && pending.ahead_failed);
    let Stage::Batch(batch) = Staged::for_store(pending, CommitStats::default(), dir.path(), 1_000).stage else {
        panic!("no table can be built")
    };
    let (_db_dir, db) = db_with(&["s"]);
    let cf = db.cf_handle("s").expect("s");
    assert_eq!(column_family_id(cf), 1);
    db.write(batch).expect("write");
    assert_eq!(all(&db, cf), batch_of(&runs));
}

/// Where the process died after a checkpoint's pending record named its table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Crash {
    BeforeTheIngest,
    /// The ingest is in the store, but its file not yet removed from the
    /// tables directory (RocksDB removes it after the commit).
    BeforeTheTableIsRemoved,
    AfterTheIngest,
}

/// The process died after a checkpoint's pending record named its table:
/// before the ingest, after the ingest's commit but before RocksDB removed
/// the file, and after both but before the record became the live one.
/// Each time a reader sees a record with its own entries (the last live
/// one before the ingest, the pending one after), and the next open
/// completes the checkpoint without ingesting the table twice (an open
/// after that finds nothing to do). A table no record names is removed.
#[test]
fn an_open_ingests_the_table_a_written_record_names() {
    use crate::state::TaskStore;
    let keys: Vec<Vec<u8>> = (0..TABLE_ENTRIES).map(|i| format!("k{i:07}").into_bytes()).collect();
    let crashes = [Crash::BeforeTheIngest, Crash::BeforeTheTableIsRemoved, Crash::AfterTheIngest];
    for (crash, parts) in crashes.into_iter().flat_map(|c| [(c, 1), (c, 3)]) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut s, _) = TaskStore::open(dir.path(), false).expect("open");
        s.put(b"k0000000", b"old").expect("put");
        s.commit(&Checkpoint::new(1, Default::default(), String::new()), b"one").expect("commit");
        let mut encoded = Encoded::default();
        encoded.append_sorted(s.staging.cf(), keys.iter().map(|k| (k.as_slice(), Some(&b"v"[..]))));
        let mut table = Table::build(&encoded, 0, dir.path(), parts).expect("table");
        assert_eq!(table.files.len(), parts);
        let meta = s.db.cf_handle(CF_META).expect("meta");
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_PENDING_CHECKPOINT, Checkpoint::new(2, Default::default(), String::new()).encode());
        batch.put_cf(meta, META_PENDING_SNAPSHOT, b"two");
        batch.put_cf(meta, META_TABLE, table.names());
        s.db.write(batch).expect("write");
        table.keep = true;
        if crash != Crash::BeforeTheIngest {
            // The ingest moves the files: a second link to each stands for
            // the files RocksDB has not removed yet.
            let links: Vec<_> = table.files.iter().map(|f| (f, f.with_extension("link"))).collect();
            for (file, link) in &links {
                std::fs::hard_link(file, link).expect("link");
            }
            ingest(&s.db, &table.files).expect("ingest");
            for (file, link) in &links {
                if crash == Crash::BeforeTheTableIsRemoved {
                    std::fs::rename(link, file).expect("rename");
                } else {
                    std::fs::remove_file(link).expect("remove");
                }
            }
        }
        drop(table);
        std::fs::write(tables_dir(dir.path()).join("never-written.sst"), b"x").expect("write");
        drop(s);
        let (restored, entries) = TaskStore::read_only(dir.path()).expect("read beside");
        let (number, snapshot, value) = match crash {
            Crash::BeforeTheIngest => (1, &b"one"[..], &b"old"[..]),
            _ => (2, &b"two"[..], &b"v"[..]),
        };
        assert_eq!(restored.checkpoint.map(|c| c.number), Some(number), "{crash:?}, {parts} parts");
        assert_eq!(
            (restored.snapshot.as_slice(), entries[0].1.as_slice()),
            (snapshot, value),
            "{crash:?}, {parts} parts"
        );
        for _ in 0..2 {
            let (s, r) = TaskStore::open(dir.path(), false).expect("reopen");
            // The table's files are the live ones of more than one entry.
            let live = s.db.live_files().expect("live files");
            let entries: u64 = live
                .iter()
                .filter(|f| f.column_family_name == CF_STATE && f.num_entries > 1)
                .map(|f| f.num_entries)
                .sum();
            assert_eq!(entries, TABLE_ENTRIES, "{crash:?}, {parts} parts: the table is in the store once");
            assert_eq!(r.checkpoint.map(|c| c.number), Some(2));
            assert_eq!(r.snapshot, b"two");
            assert_eq!(s.get(&keys[0]).expect("get"), Some(b"v".to_vec()));
            assert_eq!(s.get(keys.last().expect("keys")).expect("get"), Some(b"v".to_vec()));
            let meta = s.db.cf_handle(CF_META).expect("meta");
            for key in [META_TABLE, META_PENDING_CHECKPOINT, META_PENDING_SNAPSHOT] {
                assert_eq!(s.db.get_cf(meta, key).expect("get"), None);
            }
            let left: Vec<_> = std::fs::read_dir(tables_dir(dir.path())).expect("tables dir").collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
}

#[test]
fn key_order_is_slice_order_with_equal_keys_in_order() {
    // Lengths around the 16-byte prefix, zero bytes against the padding,
    // and duplicates.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut keys: Vec<Vec<u8>> = (0..4000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 20) as usize;
            (0..len).map(|j| [0u8, 1, 255][((x >> (j * 2)) % 3) as usize]).collect()
        })
        .collect();
    keys.extend(keys.clone());
    let entries: Vec<(&[u8], usize)> = keys.iter().enumerate().map(|(i, k)| (k.as_slice(), i)).collect();
    let mut expected = entries.clone();
    expected.sort_by(|a, b| a.0.cmp(b.0));
    let sorted: Vec<_> = key_order(&entries).into_iter().map(|i| entries[i]).collect();
    assert_eq!(sorted, expected);
}
