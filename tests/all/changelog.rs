//! The changelog makes state independent of the local disk: a lost state
//! directory is rebuilt from it, and a torn checkpoint at its end is never
//! applied.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::support::*;

#[test]
fn lost_state_directory_is_rebuilt_from_changelog_and_counts_are_exact() {
    // State changes go to the changelog ahead of their checkpoints too.
    let app =
        App::new("lostdisk", 2, &guest("wordcount"), "commit.interval.ms = 300\nstatestore.changelog.ahead.bytes = 1");
    let first = sentences(200, 20);
    run_batch(&app, &first, &first);
    std::fs::remove_dir_all(app.app_state_dir()).expect("delete the state directory");

    let second = sentences(200, 21);
    let all = [first, second.clone()].concat();
    let (outputs, log) = run_batch(&app, &second, &all);
    assert!(log.contains("applied"), "the restore must come from the changelog:\n{log}");
    let input = read_all(&app.input);
    assert_each_count_exactly_once(&outputs, &expected_counts(&input, &BTreeMap::new()));
    assert_state_matches_all_input(&app);
}

#[test]
fn torn_checkpoint_at_changelog_end_restores_previous_complete_one() {
    let app = App::new("torn", 2, &guest("wordcount"), "commit.interval.ms = 300");
    let first = sentences(150, 22);
    run_batch(&app, &first, &first);

    // A checkpoint that never finished: state records and a snapshot, no marker.
    let changelog = wasmstream::changelog::topic_name(&app.id);
    let p: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("producer");
    for partition in 0..app.partitions {
        for word in ["the", "stream", "torn"] {
            let key = wasmstream::changelog::state_key(&[b"w/", word.as_bytes()].concat());
            let value = 999_999u64.to_be_bytes();
            p.send(BaseRecord::to(&changelog).partition(partition).key(&key).payload(&value[..])).expect("send");
        }
        let snapshot = 424_242u64.to_be_bytes();
        let key = wasmstream::changelog::snapshot_key();
        p.send(BaseRecord::to(&changelog).partition(partition).key(&key).payload(&snapshot[..])).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");

    // Without local state the host rebuilds from the changelog alone; with it,
    // it replays from its recorded offset: both must ignore the torn tail.
    std::fs::remove_dir_all(app.app_state_dir()).expect("delete the state directory");
    let second = sentences(150, 23);
    let all = [first, second.clone()].concat();
    let (outputs, log) = run_batch(&app, &second, &all);
    assert!(log.contains("ends in an incomplete checkpoint"), "{log}");
    let input = read_all(&app.input);
    assert_each_count_exactly_once(&outputs, &expected_counts(&input, &BTreeMap::new()));
    assert_state_matches_all_input(&app);

    // And once more from the changelog alone, now that it holds the torn tail,
    // its restatement and later checkpoints.
    std::fs::remove_dir_all(app.app_state_dir()).expect("delete the state directory");
    let host = app.start();
    std::thread::sleep(Duration::from_secs(3));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_state_matches_all_input(&app);
}

#[test]
fn corrupt_local_store_is_rebuilt_from_changelog_and_counts_are_exact() {
    let app = App::new("corrupt", 2, &guest("wordcount"), "commit.interval.ms = 300");
    let first = sentences(150, 24);
    run_batch(&app, &first, &first);
    // RocksDB's CURRENT names the live manifest; garbage there is corruption.
    let current = wasmstream::state::task_dir(&app.app_state_dir(), 0).join("CURRENT");
    std::fs::write(&current, b"garbage").expect("corrupt CURRENT");

    let second = sentences(150, 25);
    let all = [first, second.clone()].concat();
    let (outputs, log) = run_batch(&app, &second, &all);
    assert!(log.contains("task 0:") && log.contains("rebuilding it from the changelog"), "{log}");
    let input = read_all(&app.input);
    assert_each_count_exactly_once(&outputs, &expected_counts(&input, &BTreeMap::new()));
    assert_state_matches_all_input(&app);
}
