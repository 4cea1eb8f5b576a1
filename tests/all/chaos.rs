//! SIGKILL at random moments under `at_least_once`, on a real broker:
//! nothing is lost (I2), and after every kill each task's checkpointed state
//! and guest snapshot are exactly what the input before its offset produces (I1),
//! with state changes sent to the changelog ahead of their checkpoints.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;

#[test]
fn sigkill_at_random_moments_loses_nothing_and_restores_exact_prefix() {
    // Every batch's state changes go to the changelog ahead of their
    // checkpoint, so a kill often leaves them there without a marker.
    kill_and_check("chaos", "commit.interval.ms = 200\nstatestore.changelog.ahead.bytes = 1");
}

/// The same with every checkpoint written to RocksDB as a table file and
/// ingested (`statestore.checkpoint.table.entries`, by default only for
/// checkpoints of 100,000 entries or more), so kills land while tables are
/// built, between a checkpoint's record and its table's ingest, and after.
#[test]
fn sigkill_while_checkpoints_are_ingested_tables_loses_nothing() {
    kill_and_check(
        "chaostables",
        "commit.interval.ms = 200\nstatestore.changelog.ahead.bytes = 1\nstatestore.checkpoint.table.entries = 1",
    );
}

/// Kills a word count at random moments (`extra`: its config beyond the
/// defaults), checking each time that the checkpoints match the input
/// before them (I1); then lets a last run drain the input and checks that
/// every count was output (I2) and the checkpoints cover the whole input.
fn kill_and_check(name: &str, extra: &str) {
    let app = App::new(name, 3, &guest("wordcount"), extra);
    // Input keeps arriving while the host is killed and restarted.
    let feeder = Feeder::start(&app.input, 100, 1000);
    let mut seen_offsets = BTreeSet::new();
    kill_at_random_moments(&app, 6, |i, run_for| {
        let offsets = assert_checkpoints_match_input(&app, &read_all(&app.input));
        eprintln!("kill {i} after {run_for:?}: checkpointed offsets {offsets:?}");
        seen_offsets.insert(offsets);
    });
    let batches = feeder.stop();
    let input = read_all(&app.input);
    assert_eq!(input.len() as u64, batches * 100);
    assert!(seen_offsets.len() >= 3, "the kills should land at different points of progress: {seen_offsets:?}");

    // A last run drains the input; then everything is checked.
    let host = app.start();
    let expected = expected_counts(&input, &BTreeMap::new());
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let outputs = loop {
        let outputs = read_all(&app.output);
        let latest = latest_counts(&outputs);
        if expected.iter().all(|(k, n)| latest.get(k) == Some(n)) || std::time::Instant::now() > deadline {
            break outputs;
        }
    };
    wait_until_checkpointed_to_end(&app, &input, Duration::from_secs(60));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");

    // I2: every count of every (partition, word) was output at least once.
    let mut seen: BTreeMap<(i32, String), BTreeSet<u64>> = BTreeMap::new();
    for r in &outputs {
        seen.entry((source_partition(r), r.key.clone())).or_default().insert(r.value.parse().expect("count"));
    }
    for (k, n) in &expected {
        let want: BTreeSet<u64> = (1..=*n).collect();
        assert_eq!(seen.get(k), Some(&want), "outputs of {k:?}");
    }
    // I1 after the final, graceful stop: the checkpoints cover the whole input.
    assert_state_matches_all_input(&app);
}

/// The highest count seen per (partition, word).
fn latest_counts(outputs: &[Rec]) -> BTreeMap<(i32, String), u64> {
    let mut latest = BTreeMap::new();
    for r in outputs {
        let n: u64 = r.value.parse().expect("count");
        let e = latest.entry((source_partition(r), r.key.clone())).or_insert(0);
        *e = (*e).max(n);
    }
    latest
}
