//! What every integration test needs: a real Kafka broker, the guest
//! components, topics, an app config, the `wasmstream` binary as a process,
//! and readers for topics and checkpoints.
//!
//! The broker: `WASMSTREAM_TEST_BOOTSTRAP=host:port` names a running one (CI
//! and `scripts/test` start one); otherwise the first test to need it starts
//! one with `tests/kafka/kafka.sh` and a watchdog stops it when this process
//! exits. Nothing is skipped: if no broker can be had, the tests fail and say why.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("host/ is in the workspace").to_path_buf()
}

/// The bootstrap address of the test broker.
pub fn bootstrap() -> &'static str {
    static BROKER: OnceLock<String> = OnceLock::new();
    BROKER.get_or_init(|| {
        if let Ok(b) = std::env::var("WASMSTREAM_TEST_BOOTSTRAP") {
            return b;
        }
        let script = workspace().join("tests/kafka/kafka.sh");
        let dir = workspace().join(format!("target/test-kafka-{}", std::process::id()));
        let out = Command::new("bash").arg(&script).arg("start").arg(&dir).output().expect("run kafka.sh");
        assert!(
            out.status.success(),
            "cannot start the test Kafka broker with {} start {}: {}\n\
             The tests need a real broker: Java 17+ and Maven (to fetch the jars), \
             or WASMSTREAM_TEST_BOOTSTRAP=host:port of a running one.",
            script.display(),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        // Stop the broker when this test process is gone, however it ends. The
        // watchdog outlives us on purpose, so it is never waited for.
        let watchdog = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; bash '{s}' stop '{d}'; rm -rf '{d}'",
            pid = std::process::id(),
            s = script.display(),
            d = dir.display()
        );
        #[allow(clippy::zombie_processes)]
        Command::new("bash")
            .arg("-c")
            .arg(watchdog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the broker watchdog");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The path of a guest component built from `examples/<name>`, or of
/// another language's `examples/<language>/<name>` as `<name>-<language>`
/// (all are built once per test run, with the same command as
/// `scripts/build-guests --all`).
pub fn guest(name: &str) -> PathBuf {
    static BUILT: Mutex<bool> = Mutex::new(false);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let ws = workspace();
    if !*built {
        let out =
            Command::new("bash").arg(ws.join("scripts/build-guests")).arg("--all").output().expect("run build-guests");
        assert!(
            out.status.success(),
            "building the guest components failed (scripts/build-guests --all):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        *built = true;
    }
    let path = ws.join(format!("target/guests/wasm32-wasip2/guest/{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A name no other test (or earlier run against the same broker) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("{prefix}-{t}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

pub fn create_topic(name: &str, partitions: i32) {
    create_topic_with(name, partitions, &[]);
}

/// Creates a topic with topic-level configs (e.g. `max.message.bytes`).
pub fn create_topic_with(name: &str, partitions: i32, configs: &[(&str, &str)]) {
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).create().expect("admin client");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let res = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)))))
        .expect("create_topics");
    for r in res {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// Produces `(key, value)` records and waits until all are acknowledged.
pub fn produce(topic: &str, records: &[(String, String)]) {
    produce_bytes(topic, records.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())));
}

/// [`produce`] for keys and values that need not be UTF-8.
pub fn produce_bytes<'a>(topic: &str, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
    produce_to(topic, None, records);
}

/// [`produce_bytes`], to one partition (`None`: the key decides).
pub fn produce_to<'a>(topic: &str, partition: Option<i32>, records: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
    let p: BaseProducer =
        ClientConfig::new().set("bootstrap.servers", bootstrap()).set("linger.ms", "2").create().expect("producer");
    for (k, v) in records {
        let mut rec = BaseRecord::to(topic).key(k).payload(v);
        if let Some(partition) = partition {
            rec = rec.partition(partition);
        }
        loop {
            match p.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    p.poll(Duration::from_millis(10));
                }
            }
        }
    }
    p.flush(Duration::from_secs(30)).expect("flush");
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: String,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

/// Reads a whole topic from the beginning (read_committed) until at least
/// `at_least` records have arrived and then `settle` passes with no more, or
/// `timeout` passes.
pub fn read_topic(topic: &str, at_least: usize, settle: Duration, timeout: Duration) -> Vec<Rec> {
    let mut out = Vec::new();
    let reader = Reader::new(topic, "read_committed");
    let deadline = Instant::now() + timeout;
    let mut last = Instant::now();
    while Instant::now() < deadline {
        if out.len() >= at_least && last.elapsed() >= settle {
            break;
        }
        if let Some(r) = reader.next(Duration::from_millis(100)) {
            out.push(r);
            last = Instant::now();
        }
    }
    out
}

/// Reads everything a topic holds now, read_committed: up to each
/// partition's high watermark (or until nothing arrives for a second, for
/// transaction markers and aborted records at the end).
pub fn read_all(topic: &str) -> Vec<Rec> {
    read_all_with(topic, "read_committed")
}

/// [`read_all`] with this `isolation.level`.
pub fn read_all_with(topic: &str, isolation: &str) -> Vec<Rec> {
    let reader = Reader::new(topic, isolation);
    let mut ends: BTreeMap<i32, i64> = reader.partitions.iter().map(|p| (*p, reader.high(*p))).collect();
    ends.retain(|_, h| *h > 0);
    let mut out = Vec::new();
    // A loaded machine may take a while to deliver the first record; after
    // that, records of a partition arrive back to back.
    let started = Instant::now();
    let mut last: Option<Instant> = None;
    while !ends.is_empty() {
        match last {
            None if started.elapsed() > Duration::from_secs(60) => panic!("{topic}: nothing arrived in 60 s"),
            Some(t) if t.elapsed() > Duration::from_secs(3) => break,
            _ => {}
        }
        if let Some(r) = reader.next(Duration::from_millis(100)) {
            if ends.get(&r.partition).is_some_and(|h| r.offset + 1 >= *h) {
                ends.remove(&r.partition);
            }
            out.push(r);
            last = Some(Instant::now());
        }
        // Transaction markers are not delivered: the position tells when a
        // partition's end is a marker.
        if let Ok(positions) = reader.consumer.position() {
            for e in positions.elements() {
                if let Offset::Offset(o) = e.offset()
                    && ends.get(&e.partition()).is_some_and(|h| o >= *h)
                {
                    ends.remove(&e.partition());
                }
            }
        }
    }
    out
}

/// A reader of every partition of a topic, from the beginning.
struct Reader {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

impl Reader {
    fn new(topic: &str, isolation: &str) -> Reader {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", isolation)
            .create()
            .expect("consumer");
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10)).expect("metadata");
        let partitions: Vec<i32> = md.topics()[0].partitions().iter().map(|p| p.id()).collect();
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition_offset(topic, *p, Offset::Beginning).expect("tpl");
        }
        consumer.assign(&tpl).expect("assign");
        Reader { consumer, topic: topic.to_string(), partitions }
    }

    fn high(&self, partition: i32) -> i64 {
        self.consumer.fetch_watermarks(&self.topic, partition, Duration::from_secs(10)).expect("watermarks").1
    }

    fn next(&self, timeout: Duration) -> Option<Rec> {
        use rdkafka::message::Headers;
        let m = self.consumer.poll(timeout)?.ok()?;
        let s = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
        let headers =
            m.headers().map(|h| h.iter().map(|h| (h.key.to_string(), s(h.value))).collect()).unwrap_or_default();
        Some(Rec { partition: m.partition(), offset: m.offset(), key: s(m.key()), value: s(m.payload()), headers })
    }
}

/// An application under test: topics, state dir and config file.
pub struct App {
    pub id: String,
    pub input: String,
    pub output: String,
    pub partitions: i32,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl App {
    /// Creates the topics and writes a config for `module` with `settings`
    /// (TOML lines for the top level, e.g. `commit.interval.ms = 200`).
    pub fn new(name: &str, partitions: i32, module: &Path, settings: &str) -> App {
        App::with_output(name, partitions, module, settings, 1, &[])
    }

    /// [`App::new`] with an output topic of `output_partitions` partitions
    /// and these topic configs.
    pub fn with_output(
        name: &str,
        partitions: i32,
        module: &Path,
        settings: &str,
        output_partitions: i32,
        output_config: &[(&str, &str)],
    ) -> App {
        let id = unique(name);
        let input = format!("{id}-in");
        let output = format!("{id}-out");
        create_topic(&input, partitions);
        create_topic_with(&output, output_partitions, output_config);
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("wasmstream.toml");
        let text = format!(
            r#"application.id = "{id}"
bootstrap.servers = "{}"
state.dir = "{}"
{settings}

[processor]
module = "{}"
inputs = ["{input}"]
outputs = ["{output}"]

[kafka.consumer]
# A restarted host takes its partitions back at once instead of waiting for
# the killed member's session to time out.
"group.instance.id" = "{id}-host"
"#,
            bootstrap(),
            dir.path().join("state").display(),
            module.display()
        );
        std::fs::write(&config, text).expect("write config");
        App { id, input, output, partitions, dir, config }
    }

    pub fn app_state_dir(&self) -> PathBuf {
        self.dir.path().join("state").join(&self.id)
    }

    pub fn start(&self) -> HostProcess {
        HostProcess::start(&self.config, &self.dir.path().join(format!("host-{}.log", unique("run"))))
    }

    /// Every task's checkpoint, read from the state directory.
    pub fn checkpoints(&self) -> Vec<wasmstream::checkpoint::TaskCheckpoint> {
        wasmstream::checkpoint::inspect(&self.app_state_dir()).expect("inspect checkpoints")
    }
}

/// The `wasmstream run` binary as a child process; its stderr goes to a file.
pub struct HostProcess {
    child: Child,
    pub log: PathBuf,
}

impl HostProcess {
    pub fn start(config: &Path, log: &Path) -> HostProcess {
        let file = std::fs::File::create(log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_wasmstream"))
            .arg("run")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start wasmstream");
        HostProcess { child, log: log.to_path_buf() }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().expect("kill");
        assert!(ok.success(), "kill -{sig} failed");
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) -> (ExitStatus, String) {
        self.signal("TERM");
        let status = self.wait(Duration::from_secs(60));
        (status, self.log_text())
    }

    pub fn sigkill(mut self) -> String {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        self.log_text()
    }

    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("wasmstream did not exit within {timeout:?}; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for HostProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic sentences over a small vocabulary, so words repeat a lot.
pub fn sentences(n: usize, seed: u64) -> Vec<(String, String)> {
    const WORDS: &[&str] = &[
        "the",
        "stream",
        "of",
        "records",
        "flows",
        "through",
        "a",
        "component",
        "state",
        "is",
        "kept",
        "by",
        "host",
        "and",
        "checkpoint",
        "ties",
        "offsets",
        "to",
        "snapshot",
        "kafka",
        "wasm",
        "count",
    ];
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|i| {
            let len = 3 + (next() % 8) as usize;
            let s: Vec<&str> = (0..len).map(|_| WORDS[(next() % WORDS.len() as u64) as usize]).collect();
            (format!("k{seed}-{i}"), s.join(" "))
        })
        .collect()
}

/// The number of words the word-count processor finds in these records.
pub fn word_total(records: &[(String, String)]) -> usize {
    records.iter().map(|(_, v)| wordcount::words(v).count()).sum()
}

/// Per input partition, per word: the count after the input records of that
/// partition with offset < `upto[partition]` (all of them if absent).
pub fn expected_counts(input: &[Rec], upto: &BTreeMap<i32, i64>) -> BTreeMap<(i32, String), u64> {
    let mut counts = BTreeMap::new();
    for r in input {
        if upto.get(&r.partition).is_some_and(|&o| r.offset >= o) {
            continue;
        }
        for w in wordcount::words(&r.value) {
            *counts.entry((r.partition, w)).or_insert(0) += 1;
        }
    }
    counts
}

/// The input partition the word-count example names in its output header.
pub fn source_partition(r: &Rec) -> i32 {
    r.headers
        .iter()
        .find(|(k, _)| k == "source-partition")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("output without a source-partition header: {r:?}"))
}

/// The state of a word-count task as (word → count).
pub fn wordcount_state(t: &wasmstream::checkpoint::TaskCheckpoint) -> BTreeMap<String, u64> {
    t.state
        .iter()
        .map(|(k, v)| {
            let word = String::from_utf8_lossy(k.strip_prefix(b"w/").expect("word keys")).into_owned();
            (word, u64::from_be_bytes(v.as_slice().try_into().expect("8-byte counts")))
        })
        .collect()
}

/// The word-count snapshot: records processed.
pub fn wordcount_snapshot(t: &wasmstream::checkpoint::TaskCheckpoint) -> u64 {
    u64::from_be_bytes(t.snapshot.as_slice().try_into().expect("8-byte snapshot"))
}

/// The outputs grouped as (input partition, word) → counts in arrival order.
pub fn sequences(outputs: &[Rec]) -> BTreeMap<(i32, String), Vec<u64>> {
    let mut seqs: BTreeMap<(i32, String), Vec<u64>> = BTreeMap::new();
    for r in outputs {
        let count = r.value.parse().unwrap_or_else(|_| panic!("count is not a number: {r:?}"));
        seqs.entry((source_partition(r), r.key.clone())).or_default().push(count);
    }
    seqs
}

/// Every (partition, word) was counted exactly 1, 2, ..., n, once each, in order.
pub fn assert_each_count_exactly_once(outputs: &[Rec], expected: &BTreeMap<(i32, String), u64>) {
    let seqs = sequences(outputs);
    assert_eq!(seqs.keys().collect::<BTreeSet<_>>(), expected.keys().collect::<BTreeSet<_>>());
    for (k, n) in expected {
        let want: Vec<u64> = (1..=*n).collect();
        assert_eq!(seqs[k], want, "counts of {k:?}");
    }
}

/// Produces `batch`, runs the host until the output holds one record per word
/// of everything produced so far (`all`), stops it with SIGTERM and checks it
/// exited 0. Returns the whole output topic and the host's log.
pub fn run_batch(app: &App, batch: &[(String, String)], all: &[(String, String)]) -> (Vec<Rec>, String) {
    produce(&app.input, batch);
    let host = app.start();
    let outputs = read_topic(&app.output, word_total(all), Duration::from_millis(1500), Duration::from_secs(120));
    let (status, log) = host.stop();
    assert!(status.success(), "graceful stop must exit 0: {status}\n{log}");
    assert_eq!(outputs.len(), word_total(all), "one output per word occurrence, none twice\n{log}");
    (outputs, log)
}

/// Checks I1 on every task checkpoint found: its state and snapshot are
/// exactly what the input before its checkpointed offset produces. Returns
/// the checkpointed offsets.
pub fn assert_checkpoints_match_input(app: &App, input: &[Rec]) -> BTreeMap<i32, i64> {
    let mut offsets = BTreeMap::new();
    for t in app.checkpoints() {
        let Some(c) = &t.checkpoint else { continue };
        let end = c.offsets[&app.input];
        let expected: BTreeMap<String, u64> = expected_counts(input, &BTreeMap::from([(t.partition, end)]))
            .into_iter()
            .filter(|((p, _), _)| *p == t.partition)
            .map(|((_, w), n)| (w, n))
            .collect();
        assert_eq!(
            wordcount_state(&t),
            expected,
            "task {} state at checkpoint {} (offset {end})",
            t.partition,
            c.number
        );
        assert_eq!(wordcount_snapshot(&t), end as u64, "task {} snapshot = records before offset {end}", t.partition);
        offsets.insert(t.partition, end);
    }
    offsets
}

/// Every task's checkpoint covers the whole input, with matching state and
/// snapshot.
pub fn assert_state_matches_all_input(app: &App) {
    let input = read_all(&app.input);
    let offsets = assert_checkpoints_match_input(app, &input);
    for p in 0..app.partitions {
        let n = input.iter().filter(|r| r.partition == p).count() as i64;
        assert_eq!(offsets.get(&p), Some(&n), "task {p} checkpointed at its end of input");
    }
}

/// Input that keeps arriving (batches of `batch` sentences every 100 ms)
/// until [`Feeder::stop`].
pub struct Feeder {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Feeder {
    pub fn start(topic: &str, batch: usize, seed: u64) -> Feeder {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (topic, stop) = (topic.to_string(), stop.clone());
            std::thread::spawn(move || {
                let mut batches = 0u64;
                while !stop.load(Ordering::Acquire) {
                    produce(&topic, &sentences(batch, seed + batches));
                    batches += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                batches
            })
        };
        Feeder { stop, thread }
    }

    /// Stops producing; returns the number of batches produced.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("feeder thread")
    }
}

/// Starts the host and SIGKILLs it after a random 500..2500 ms, `kills`
/// times; `after_kill` runs after each (round, time it ran).
pub fn kill_at_random_moments(app: &App, kills: usize, mut after_kill: impl FnMut(usize, Duration)) {
    use rand::Rng;
    let mut rng = rand::rng();
    for i in 0..kills {
        let mut host = app.start();
        let run_for = Duration::from_millis(rng.random_range(500..2500));
        std::thread::sleep(run_for);
        assert!(host.is_running(), "host exited early in round {i}:\n{}", host.log_text());
        host.sigkill();
        after_kill(i, run_for);
    }
}

/// Waits (up to `timeout`) until every task of the running host has
/// checkpointed the whole input: outputs alone do not tell, since a killed
/// run may have produced them before its last checkpoint.
pub fn wait_until_checkpointed_to_end(app: &App, input: &[Rec], timeout: Duration) {
    let ends: BTreeMap<i32, i64> =
        (0..app.partitions).map(|p| (p, input.iter().filter(|r| r.partition == p).count() as i64)).collect();
    let deadline = Instant::now() + timeout;
    loop {
        // Read beside the running host: a read-only open can race a write and
        // fail; the next round tries again.
        let tasks = wasmstream::checkpoint::inspect(&app.app_state_dir()).unwrap_or_default();
        let at: BTreeMap<i32, i64> = tasks
            .iter()
            .filter_map(|t| Some((t.partition, *t.checkpoint.as_ref()?.offsets.get(&app.input)?)))
            .collect();
        if at == ends {
            return;
        }
        assert!(Instant::now() < deadline, "tasks checkpointed at {at:?}, input ends at {ends:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
