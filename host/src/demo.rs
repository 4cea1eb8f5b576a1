//! `wasmstream demo`: the word-count pipeline on an in-process Kafka broker
//! (librdkafka's mock cluster), so that a newcomer sees the whole thing work
//! with nothing else installed: sample text in, running counts out, periodic
//! checkpoints, a clean stop, and a restart that resumes from the checkpoint.
//! Uses only the public pipeline API, as an embedding application would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use crate::{PipelineError, Progress, Shutdown, config, pipeline};

/// Where `scripts/build-guests` puts the word-count component.
pub const DEFAULT_MODULE: &str = "target/guests/wasm32-wasip2/guest/wordcount.wasm";

const INPUT: &str = "sentences";
const OUTPUT: &str = "word-counts";

const FIRST_RUN: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "a stream is a river of records and the host is the riverbank",
    "state lives in the host so the processor can forget",
    "the checkpoint ties offsets state and snapshot together",
    "any language that compiles to a component can count words",
    "the fox and the dog count words too",
];

const SECOND_RUN: &[&str] = &[
    "after a restart the host resumes from the checkpoint",
    "nothing is lost and nothing is counted twice",
    "the quick fox is still counting",
];

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "the word-count component {0} does not exist; build it with `scripts/build-guests` (or run `scripts/demo`)"
    )]
    NoModule(PathBuf),
    #[error("in-process broker: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Pipeline(Box<PipelineError>),
    #[error("the pipeline thread panicked")]
    Panicked,
    #[error(
        "{wrong} of {words} words ended with a count other than their occurrences in the sentences, e.g. {example}"
    )]
    WrongCounts { wrong: usize, words: usize, example: String },
}

impl From<PipelineError> for DemoError {
    fn from(e: PipelineError) -> Self {
        DemoError::Pipeline(Box::new(e))
    }
}

const APPLICATION_ID: &str = "demo-wordcount";

pub fn run(module: &Path) -> Result<(), DemoError> {
    if !module.is_file() {
        return Err(DemoError::NoModule(module.to_path_buf()));
    }
    let module = std::fs::canonicalize(module).unwrap_or_else(|_| module.to_path_buf());
    let cluster = MockCluster::new(1)?;
    let bootstrap = cluster.bootstrap_servers();
    cluster.create_topic(INPUT, 2, 1)?;
    cluster.create_topic(OUTPUT, 1, 1)?;
    // The mock cluster answers no CreateTopics: the changelog topic the host
    // would create (one partition per input partition) is made here.
    cluster.create_topic(&crate::changelog::topic_name(APPLICATION_ID), 2, 1)?;
    let state_dir = std::env::temp_dir().join(format!("wasmstream-demo-{}", std::process::id()));
    let text = format!(
        r#"
application.id = "{APPLICATION_ID}"
bootstrap.servers = "{bootstrap}"
commit.interval.ms = 1000
state.dir = "{}"

[processor]
module = "{}"
inputs = ["{INPUT}"]
outputs = ["{OUTPUT}"]

[kafka.consumer]
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000
"#,
        state_dir.display(),
        module.display()
    );
    let config = config::parse(&text, None, Path::new(""), &[])?;

    println!("wasmstream demo: word count on an in-process Kafka broker at {bootstrap}");
    println!("  module {}", module.display());
    println!("  state  {}\n", state_dir.display());

    let counts = Arc::new(Mutex::new(BTreeMap::<(String, String), u64>::new()));
    let received = Arc::new(AtomicU64::new(0));
    let stop_printer = Arc::new(AtomicBool::new(false));
    let printer = {
        let (bootstrap, counts, received, stop) =
            (bootstrap.clone(), counts.clone(), received.clone(), stop_printer.clone());
        std::thread::spawn(move || print_outputs(&bootstrap, &counts, &received, &stop))
    };

    println!("== run 1: {} sentences into `{INPUT}`", FIRST_RUN.len());
    produce(&bootstrap, FIRST_RUN, 0)?;
    run_until_done(&config, FIRST_RUN.len() as u64, &received)?;

    println!("\n== run 2: {} more sentences, then the same pipeline restarts from its checkpoint", SECOND_RUN.len());
    produce(&bootstrap, SECOND_RUN, FIRST_RUN.len())?;
    run_until_done(&config, SECOND_RUN.len() as u64, &received)?;

    stop_printer.store(true, Ordering::Release);
    let _ = printer.join();
    // One count per word: the sum over the tasks (input partitions) that saw it.
    let mut totals = BTreeMap::<String, u64>::new();
    for ((_, word), n) in counts.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        *totals.entry(word.clone()).or_default() += n;
    }
    let mut top: Vec<(&String, &u64)> = totals.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "\n== final counts, summed over the tasks (top 10 of {} words, {} count updates received):",
        totals.len(),
        received.load(Ordering::Acquire)
    );
    for (w, c) in top.into_iter().take(10) {
        println!("  {w:<12} {c}");
    }
    let _ = std::fs::remove_dir_all(&state_dir);
    // Checked, not claimed: every word's count is its occurrences in both runs.
    let mut expected = BTreeMap::<String, u64>::new();
    for sentence in FIRST_RUN.iter().chain(SECOND_RUN) {
        for w in words(sentence) {
            *expected.entry(w).or_default() += 1;
        }
    }
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(w, n)| totals.get(*w) != Some(n))
        .map(|(w, n)| format!("`{w}`: {} instead of {n}", totals.get(w).copied().unwrap_or(0)))
        .collect();
    if let Some(example) = wrong.first() {
        return Err(DemoError::WrongCounts { wrong: wrong.len(), words: expected.len(), example: example.clone() });
    }
    println!(
        "\nDone: both runs stopped cleanly; run 2 resumed at the checkpoint, and all {} words' counts equal their occurrences in the sentences: none was counted twice or lost.",
        expected.len()
    );
    Ok(())
}

fn produce(bootstrap: &str, lines: &[&str], first_key: usize) -> Result<(), DemoError> {
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
    for (i, line) in lines.iter().enumerate() {
        let key = format!("line-{}", first_key + i);
        producer.send(BaseRecord::to(INPUT).key(&key).payload(*line)).map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(())
}

/// Runs the pipeline until it has processed `records` records and their
/// outputs have been printed, then stops it gracefully.
/// The words of a sentence as `examples/wordcount` splits them.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| !w.is_empty())
}

fn run_until_done(config: &config::Config, records: u64, received: &AtomicU64) -> Result<(), DemoError> {
    let shutdown = Shutdown::new();
    let progress = Arc::new(Progress::default());
    let worker = {
        let (config, shutdown, progress) = (config.clone(), shutdown.clone(), progress.clone());
        std::thread::spawn(move || pipeline::run_with_progress(&config, &shutdown, &progress))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !worker.is_finished() && Instant::now() < deadline && progress.records() < records {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let a periodic checkpoint happen and the printer catch up before stopping.
    std::thread::sleep(Duration::from_millis(1200));
    loop {
        let printed = received.load(Ordering::Acquire);
        std::thread::sleep(Duration::from_millis(300));
        if received.load(Ordering::Acquire) == printed || Instant::now() > deadline {
            break;
        }
    }
    shutdown.trigger();
    worker.join().map_err(|_| DemoError::Panicked)??;
    println!("  (this run processed {} records)", progress.records());
    Ok(())
}

/// Prints the outputs as they arrive and keeps the latest count per
/// (source partition, word): the example counts per task.
fn print_outputs(
    bootstrap: &str,
    counts: &Mutex<BTreeMap<(String, String), u64>>,
    received: &AtomicU64,
    stop: &AtomicBool,
) {
    let consumer: BaseConsumer = match ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "demo-printer")
        .set("enable.auto.commit", "false")
        .create()
    {
        Ok(c) => c,
        Err(e) => return eprintln!("demo: cannot read `{OUTPUT}`: {e}"),
    };
    let mut tpl = TopicPartitionList::new();
    let _ = tpl.add_partition_offset(OUTPUT, 0, Offset::Beginning);
    if let Err(e) = consumer.assign(&tpl) {
        return eprintln!("demo: cannot read `{OUTPUT}`: {e}");
    }
    let mut line = String::new();
    while !stop.load(Ordering::Acquire) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let word = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
                let count = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
                line.push_str(&format!("{word}→{count} "));
                let partition = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "source-partition").and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                if let Ok(n) = count.parse() {
                    counts.lock().unwrap_or_else(|p| p.into_inner()).insert((partition, word), n);
                }
                received.fetch_add(1, Ordering::AcqRel);
                if line.len() > 90 {
                    println!("  {OUTPUT}: {}", line.trim_end());
                    line.clear();
                }
            }
            _ if !line.is_empty() => {
                println!("  {OUTPUT}: {}", line.trim_end());
                line.clear();
            }
            _ => {}
        }
    }
}
