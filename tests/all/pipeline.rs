//! The word-count pipeline end to end on a real broker: exact counts, a
//! graceful stop and restart that repeats nothing (I4), and `none`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::support::*;

#[test]
fn wordcount_end_to_end_counts_are_exact() {
    let app = App::new("e2e", 3, &guest("wordcount"), "commit.interval.ms = 500");
    let input = sentences(400, 1);
    let (outputs, log) = run_batch(&app, &input, &input);
    let in_records = read_all(&app.input);
    assert!(in_records.iter().map(|r| r.partition).collect::<BTreeSet<_>>().len() > 1, "input spread over partitions");
    assert_each_count_exactly_once(&outputs, &expected_counts(&in_records, &BTreeMap::new()));
    assert!(log.contains("stopped cleanly"), "{log}");
}

#[test]
fn graceful_stop_and_restart_resumes_at_checkpoint_and_processes_nothing_twice() {
    wordcount_across_a_graceful_restart("restart", &guest("wordcount"));
}

/// A word count (any language's: they share the output and the snapshot)
/// on 2 partitions, stopped gracefully after a first batch and restarted for
/// a second: exact counts, nothing processed twice, a restart from the
/// checkpoint and the compile cache.
pub fn wordcount_across_a_graceful_restart(name: &str, module: &std::path::Path) {
    // A long interval: only the checkpoint taken at the graceful stop counts.
    let app = App::new(name, 2, module, "commit.interval.ms = 600000");
    let first = sentences(150, 2);
    let (_, log) = run_batch(&app, &first, &first);
    assert!(log.contains("final checkpoint"), "{log}");
    assert!(log.contains("(compiled, now in the compile cache)"), "{log}");

    // The checkpoint covers exactly the first batch, and its state and snapshot match it.
    let in_first = read_all(&app.input);
    let ends: BTreeMap<i32, i64> = app
        .checkpoints()
        .iter()
        .map(|t| (t.partition, t.checkpoint.as_ref().map_or(0, |c| c.offsets[&app.input])))
        .collect();
    let per_partition = |p: i32| in_first.iter().filter(|r| r.partition == p).count() as i64;
    for (p, end) in &ends {
        assert_eq!(*end, per_partition(*p), "task {p} checkpointed at the end of its input");
    }

    let second = sentences(150, 3);
    let all = [first, second.clone()].concat();
    let (outputs, log) = run_batch(&app, &second, &all);
    assert!(log.contains("restored checkpoint"), "{log}");
    assert!(log.contains("(from the compile cache)"), "a restart does not compile the module again\n{log}");
    let in_all = read_all(&app.input);
    assert_each_count_exactly_once(&outputs, &expected_counts(&in_all, &BTreeMap::new()));
    for t in app.checkpoints() {
        assert_eq!(wordcount_snapshot(&t), in_all.iter().filter(|r| r.partition == t.partition).count() as u64);
    }
}

/// The per-key count (`examples/count`) reads each record's key from the
/// values the host gives for the whole batch (`batch-values`: read ahead on
/// the store's reader thread, or written earlier, or in the checkpoint being
/// written) and sends its writes once per batch (`write-many`). 50 keys, so
/// a batch of 256 records holds each key several times (its own writes come
/// first); checkpoints every 200 ms and a restart put the counts in RocksDB
/// and the frozen checkpoint in between. Every count from 1 to the key's
/// total must come out exactly once.
#[test]
fn the_per_key_count_counts_exactly_through_batch_values_and_a_restart() {
    let app = App::new("count", 2, &guest("count"), "commit.interval.ms = 200");
    let keys = 50;
    let records = |from: usize, n: usize| -> Vec<(String, String)> {
        (from..from + n).map(|i| (format!("key-{:03}", i % keys), "x".to_string())).collect()
    };
    let mut outputs = Vec::new();
    for (from, n) in [(0, 6000), (6000, 4000)] {
        produce(&app.input, &records(from, n));
        let host = app.start();
        let out = read_topic(&app.output, from + n, Duration::from_millis(1500), Duration::from_secs(120));
        let (status, log) = host.stop();
        assert!(status.success(), "graceful stop must exit 0: {status}\n{log}");
        assert_eq!(out.len(), from + n, "one output per input, none twice\n{log}");
        outputs = out;
    }
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in &outputs {
        counts.entry(r.key.clone()).or_default().push(r.value.parse().expect("a count"));
    }
    assert_eq!(counts.len(), keys);
    for (key, mut seen) in counts {
        seen.sort_unstable();
        assert_eq!(seen, (1..=200).collect::<Vec<u64>>(), "{key}: each count once");
    }
}

#[test]
fn processing_guarantee_none_runs_and_restarts_from_committed_offsets() {
    let app = App::new("none", 2, &guest("wordcount"), "processing.guarantee = \"none\"");
    let first = sentences(100, 4);
    run_batch(&app, &first, &first);
    let second = sentences(100, 5);
    let all = [first, second.clone()].concat();
    let (outputs, _) = run_batch(&app, &second, &all);
    // State was written through and the offsets committed at the stop: the
    // restart continued where the first run ended.
    let in_all = read_all(&app.input);
    assert_each_count_exactly_once(&outputs, &expected_counts(&in_all, &BTreeMap::new()));
    assert!(app.checkpoints().iter().all(|t| t.checkpoint.is_none()), "none writes no checkpoint");
}

#[test]
fn keyed_outputs_are_partitioned_like_a_java_producer() {
    // Kafka Streams and the Java producer put a keyed record on partition
    // toPositive(murmur2(key)) % partitions; a topic joined with one they
    // wrote must agree, key by key.
    let app = App::with_output("partitioner", 2, &guest("wordcount"), "", 5, &[]);
    let input = sentences(100, 6);
    let (outputs, _) = run_batch(&app, &input, &input);
    assert!(!outputs.is_empty());
    let used: BTreeSet<i32> = outputs.iter().map(|r| r.partition).collect();
    assert!(used.len() > 1, "outputs spread over the 5 partitions: {used:?}");
    for r in &outputs {
        let expected = (java_murmur2(r.key.as_bytes()) & 0x7fff_ffff) % 5;
        assert_eq!(r.partition, expected, "output key {:?}", r.key);
    }
}

/// `org.apache.kafka.common.utils.Utils.murmur2`.
fn java_murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]).wrapping_mul(M);
        k ^= k >> 24;
        h = h.wrapping_mul(M) ^ k.wrapping_mul(M);
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, b) in tail.iter().enumerate() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[test]
fn java_murmur2_matches_the_java_client() {
    // Values printed by kafka-clients 4.1.1's Utils.murmur2.
    for (key, hash) in [("21", -973932308), ("foobar", -790332482), ("abc", 479470107), ("wasmstream", -61493339)] {
        assert_eq!(java_murmur2(key.as_bytes()), hash, "{key}");
    }
}
