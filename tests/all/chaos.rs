//! SIGKILL at random moments under `at_least_once`, on a real broker:
//! nothing is lost (I2), and after every kill each task's checkpointed state
//! and guest snapshot are exactly what the input before its offset produces (I1).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng;

use crate::support::*;

/// Checks I1 on every task checkpoint found; returns the checkpointed offsets.
fn assert_checkpoints_match_input(app: &App, input: &[Rec]) -> BTreeMap<i32, i64> {
    let mut offsets = BTreeMap::new();
    for t in app.checkpoints() {
        let Some(c) = &t.checkpoint else { continue };
        let end = c.offsets[&app.input];
        let expected: BTreeMap<String, u64> = expected_counts(input, &BTreeMap::from([(t.partition, end)]))
            .into_iter()
            .filter(|((p, _), _)| *p == t.partition)
            .map(|((_, w), n)| (w, n))
            .collect();
        assert_eq!(wordcount_state(&t), expected, "task {} state at checkpoint {} (offset {end})", t.partition, c.number);
        assert_eq!(wordcount_snapshot(&t), end as u64, "task {} snapshot = records before offset {end}", t.partition);
        offsets.insert(t.partition, end);
    }
    offsets
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_restores_exact_prefix() {
    let app = App::new("chaos", 3, &guest("wordcount"), "commit.interval.ms = 200");
    // Input keeps arriving while the host is killed and restarted.
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (topic, stop) = (app.input.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batches = 0u64;
            while !stop.load(Ordering::Acquire) {
                produce(&topic, &sentences(100, 1000 + batches));
                batches += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            batches
        })
    };
    let mut rng = rand::rng();
    let mut seen_offsets = BTreeSet::new();
    const KILLS: usize = 6;
    for i in 0..KILLS {
        let mut host = app.start();
        let run_for = Duration::from_millis(rng.random_range(300..2500));
        std::thread::sleep(run_for);
        assert!(host.is_running(), "host exited early in round {i}:\n{}", host.log_text());
        host.sigkill();
        let input = read_all(&app.input);
        let offsets = assert_checkpoints_match_input(&app, &input);
        eprintln!("kill {i} after {run_for:?}: checkpointed offsets {offsets:?}");
        seen_offsets.insert(offsets);
    }
    stop.store(true, Ordering::Release);
    let batches = producer.join().expect("producer thread");
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
    let offsets = assert_checkpoints_match_input(&app, &input);
    for p in 0..app.partitions {
        let n = input.iter().filter(|r| r.partition == p).count() as i64;
        assert_eq!(offsets.get(&p), Some(&n), "task {p} checkpointed at its end of input");
    }
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
