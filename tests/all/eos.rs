//! `processing.guarantee = exactly_once` on a real broker: SIGKILL at random
//! moments at least ten times while input keeps arriving; a read_committed
//! reader sees every count update exactly once, and the final state is exact
//! (I3). Aborted transactions are shown to be invisible to that reader.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use crate::support::*;

/// Records of an aborted transaction on `topic`: a read_committed reader must
/// never see them.
fn produce_aborted(topic: &str, marker: &str) {
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", unique("aborter"))
        .create()
        .expect("transactional producer");
    p.init_transactions(Duration::from_secs(30)).expect("init_transactions");
    p.begin_transaction().expect("begin");
    for _ in 0..5 {
        p.send(BaseRecord::to(topic).key(marker).payload("1")).expect("send");
    }
    p.flush(Duration::from_secs(30)).expect("flush");
    p.abort_transaction(Duration::from_secs(30)).expect("abort");
}

/// Every record of a topic, read_uncommitted (aborted ones included).
fn read_uncommitted_count(topic: &str) -> usize {
    read_all_with(topic, "read_uncommitted").len()
}

#[test]
fn exactly_once_survives_ten_sigkills_with_every_output_once_to_read_committed() {
    // Every flush's state changes go ahead of the commit, in its transaction.
    let app = App::new(
        "eos",
        3,
        &guest("wordcount"),
        "processing.guarantee = \"exactly_once\"\nstatestore.changelog.ahead.bytes = 1",
    );
    let feeder = Feeder::start(&app.input, 50, 5000);
    kill_at_random_moments(&app, 10, |i, run_for| eprintln!("eos kill {i} after {run_for:?}"));
    feeder.stop();

    // The verifying reader must not see an aborted transaction's records.
    produce_aborted(&app.output, "aborted-marker");

    let input = read_all(&app.input);
    let expected = expected_counts(&input, &BTreeMap::new());
    let host = app.start();
    let deadline = Instant::now() + Duration::from_secs(180);
    let outputs = loop {
        let outputs = read_all(&app.output);
        let done = expected.iter().all(|(k, n)| sequences(&outputs).get(k).and_then(|s| s.last()) == Some(n));
        if done || Instant::now() > deadline {
            break outputs;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    wait_until_checkpointed_to_end(&app, &input, Duration::from_secs(60));
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");

    assert!(outputs.iter().all(|r| r.key != "aborted-marker"), "an aborted transaction's records were visible");
    assert_each_count_exactly_once(&outputs, &expected);
    // The aborted records are in the log: a read_uncommitted reader sees
    // them (with those a kill left in an open transaction, when one did).
    let uncommitted = read_uncommitted_count(&app.output);
    eprintln!("output: {} records read_committed, {uncommitted} read_uncommitted", outputs.len());
    assert!(uncommitted >= outputs.len() + 5, "the aborted records are in the log, only hidden");
    // Final state and snapshot of every task are exactly the input's.
    assert_state_matches_all_input(&app);
}

#[test]
fn zombie_host_is_fenced_and_stops_while_its_successor_keeps_exactly_once() {
    let app = App::new("zombie", 2, &guest("wordcount"), "processing.guarantee = \"exactly_once\"");
    let first = sentences(100, 30);
    produce(&app.input, &first);
    let mut zombie = app.start();
    let seen = read_topic(&app.output, word_total(&first), Duration::from_millis(500), Duration::from_secs(60));
    assert_eq!(seen.len(), word_total(&first), "the first host processes the first batch");
    // Frozen, it still believes it owns its partitions.
    zombie.signal("STOP");

    // Its successor: the same application and group member, its own state
    // directory (so it rebuilds from the changelog) and transactional id.
    let text = std::fs::read_to_string(&app.config).expect("config");
    let state = app.dir.path().join("state");
    let successor_state = app.dir.path().join("successor-state");
    let successor_config = app.dir.path().join("successor.toml");
    let replaced = text.replace(&state.display().to_string(), &successor_state.display().to_string());
    std::fs::write(&successor_config, replaced).expect("write config");
    let second = sentences(100, 31);
    produce(&app.input, &second);
    let successor = HostProcess::start(&successor_config, &app.dir.path().join("successor.log"));

    let input = read_all(&app.input);
    let expected = expected_counts(&input, &BTreeMap::new());
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        let outputs = read_all(&app.output);
        if expected.iter().all(|(k, n)| sequences(&outputs).get(k).and_then(|s| s.last()) == Some(n)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // Woken up, the zombie must notice it was fenced and stop, writing nothing.
    zombie.signal("CONT");
    let status = zombie.wait(Duration::from_secs(90));
    let zombie_log = zombie.log_text();
    assert!(!status.success(), "a fenced host must exit non-zero:\n{zombie_log}");
    assert!(zombie_log.contains("this host was fenced"), "{zombie_log}");
    eprintln!("zombie: {}", zombie_log.lines().rfind(|l| l.contains("fenced")).unwrap_or_default());

    let (status, log) = successor.stop();
    assert!(status.success(), "{status}\n{log}");
    assert_each_count_exactly_once(&read_all(&app.output), &expected);
}

#[test]
fn exactly_once_rolls_back_a_failed_transaction_and_stops_when_it_keeps_failing() {
    // The output topic refuses records over 2,000 bytes: the upper-cased copy
    // of a 5,000-byte value is never delivered, however often it is retried.
    let app = App::with_output(
        "rollback",
        1,
        &guest("uppercase"),
        "processing.guarantee = \"exactly_once\"",
        1,
        &[("max.message.bytes", "2000")],
    );
    let good = |range: std::ops::Range<usize>| -> Vec<(String, String)> {
        range.map(|i| (format!("k{i}"), format!("good {i}"))).collect()
    };
    produce(&app.input, &good(0..50));
    let mut host = app.start();
    let first = read_topic(&app.output, 50, Duration::from_millis(500), Duration::from_secs(60));
    assert_eq!(first.len(), 50, "{}", host.log_text());

    produce(&app.input, &[("big".to_string(), "x".repeat(5000))]);
    produce(&app.input, &good(50..60));
    let status = host.wait(Duration::from_secs(120));
    let log = host.log_text();
    assert!(!status.success(), "{log}");
    assert!(log.contains("rolling every task back to its last checkpoint (1 of 3 in a row)"), "{log}");
    assert!(log.contains("the transaction failed 3 times in a row"), "{log}");
    let error = log.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("Message size too large"), "the error names the cause: {error}");
    for line in log.lines().filter(|l| l.contains("rolling every task back") || l.starts_with("error:")) {
        eprintln!("rollback test host: {line}");
    }

    // What read_committed readers see: the first 50 outputs, once each; nothing
    // of the transactions that were rolled back.
    let outputs = read_all(&app.output);
    let keys: Vec<&str> = outputs.iter().map(|r| r.key.as_str()).collect();
    let want: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();
    assert_eq!(keys, want.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(outputs.iter().all(|r| r.value.starts_with("GOOD ")));
}
