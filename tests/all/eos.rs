//! `processing.guarantee = exactly_once` on a real broker: SIGKILL at random
//! moments at least ten times while input keeps arriving; a read_committed
//! reader sees every count update exactly once, and the final state is exact
//! (I3). Aborted transactions are shown to be invisible to that reader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::Rng;
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
    let app = App::new("eos", 3, &guest("wordcount"), "processing.guarantee = \"exactly_once\"");
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (topic, stop) = (app.input.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut batches = 0u64;
            while !stop.load(Ordering::Acquire) {
                produce(&topic, &sentences(50, 5000 + batches));
                batches += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            batches
        })
    };
    let mut rng = rand::rng();
    const KILLS: usize = 10;
    for i in 0..KILLS {
        let mut host = app.start();
        let run_for = Duration::from_millis(rng.random_range(500..2500));
        std::thread::sleep(run_for);
        assert!(host.is_running(), "host exited early in round {i}:\n{}", host.log_text());
        host.sigkill();
        eprintln!("eos kill {i} after {run_for:?}");
    }
    stop.store(true, Ordering::Release);
    producer.join().expect("producer thread");

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
    let (status, log) = host.stop();
    assert!(status.success(), "{status}\n{log}");

    assert!(outputs.iter().all(|r| r.key != "aborted-marker"), "an aborted transaction's records were visible");
    assert_each_count_exactly_once(&outputs, &expected);
    // The kills left aborted transactions behind: a read_uncommitted reader
    // sees more than the read_committed one did.
    let uncommitted = read_uncommitted_count(&app.output);
    eprintln!("output: {} records read_committed, {uncommitted} read_uncommitted", outputs.len());
    assert!(uncommitted >= outputs.len() + 5, "the test's own aborted records at least");
    // Final state and snapshot of every task are exactly the input's.
    for t in app.checkpoints() {
        let want: BTreeMap<String, u64> =
            expected.iter().filter(|((p, _), _)| *p == t.partition).map(|((_, w), n)| (w.clone(), *n)).collect();
        assert_eq!(wordcount_state(&t), want, "task {} state", t.partition);
        let records = input.iter().filter(|r| r.partition == t.partition).count() as u64;
        assert_eq!(wordcount_snapshot(&t), records, "task {} snapshot", t.partition);
    }
}
