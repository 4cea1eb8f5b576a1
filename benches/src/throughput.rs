//! Records/s on a real broker, every row in one run against the same broker:
//! the plain rdkafka consume→produce loop (no WASM) is the yardstick.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmstream::{Progress, Shutdown, config, pipeline};

use crate::kafka::{Watermark, create_topic, produce};

#[derive(clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers (scripts/bench starts a broker).
    #[arg(long)]
    bootstrap: String,
    /// Input records of the plain loop and the map rows: enough for several
    /// commit intervals at 1000 ms.
    #[arg(long, default_value_t = 2_000_000)]
    records: usize,
    /// Input records (~100-byte sentences) of the word-count rows.
    #[arg(long, default_value_t = 300_000)]
    sentences: usize,
    /// Directory of the built guest components.
    #[arg(long, default_value = "target/guests/wasm32-wasip2/guest")]
    guests: std::path::PathBuf,
    /// Runs per row; the table shows the median (and the range).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Only these rows: plain, and `<map|wordcount>-<alos|eos>-<commit.interval.ms>`
    /// from the default list; ratios need their reference row.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_ROWS)]
    rows: Vec<String>,
}

const DEFAULT_ROWS: &str = "plain,map-alos-1000,wordcount-alos-1000,map-alos-100,map-eos-100,map-eos-1000,wordcount-alos-100,wordcount-eos-100,wordcount-eos-1000";

/// Median and range of a row's runs, in records/s, and the median wait
/// for the outputs to become visible.
struct Row {
    median: f64,
    min: f64,
    max: f64,
    visible_after: Duration,
}

fn row(args: &Args, name: &str, mut once: impl FnMut() -> anyhow::Result<Run>) -> anyhow::Result<Row> {
    if !args.rows.iter().any(|r| r == name) {
        return Ok(Row { median: f64::NAN, min: f64::NAN, max: f64::NAN, visible_after: Duration::ZERO });
    }
    eprintln!("bench: {name}");
    let mut runs = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat.max(1) {
        runs.push(once()?);
    }
    let mut visible: Vec<Duration> = runs.iter().map(|r| r.visible_after).collect();
    visible.sort();
    let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    Ok(Row {
        median: rates[rates.len() / 2],
        min: rates[0],
        max: rates[rates.len() - 1],
        visible_after: visible[visible.len() / 2],
    })
}

/// 16-byte key, 100-byte lower-case value.
fn kv(i: usize) -> (Vec<u8>, Vec<u8>) {
    (format!("key-{i:012}").into_bytes(), (0..100).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect())
}

/// A ~100-byte sentence over a 5,000-word vocabulary.
fn sentence(i: usize) -> (Vec<u8>, Vec<u8>) {
    let mut s = String::new();
    let mut x = (i as u64).wrapping_mul(0x9E3779B97F4A7C15) | 1;
    while s.len() < 95 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(&format!("w{} ", x % 5000));
    }
    (format!("key-{i:012}").into_bytes(), s.trim_end().as_bytes().to_vec())
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    format!("bench-{prefix}-{t}")
}

/// One run: records/s from the moment the run consumed its first record
/// (`started`) until it has processed every input (`processed`), which is
/// the throughput a steady stream would see (checkpoints and their commits
/// included, since they stall processing); then the wait until the output
/// topic shows `expected_outputs` records to a `read_committed` reader
/// (`visible_after`): about one `commit.interval.ms` under exactly_once, where
/// outputs become visible only when their transaction commits. Start-up
/// (group join, module compile) is not counted.
struct Run {
    rate: f64,
    visible_after: Duration,
}

fn measure(
    bootstrap: &str,
    out: &str,
    expected_outputs: i64,
    inputs: u64,
    processed: impl Fn() -> u64,
    run: impl FnOnce(Shutdown) -> anyhow::Result<()> + Send,
) -> anyhow::Result<Run> {
    let wm = Watermark::new(bootstrap, out)?;
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        // Named, so that a profile can tell the measured thread from set-up.
        let worker = std::thread::Builder::new().name("bench-run".into()).spawn_scoped(s, {
            let shutdown = shutdown.clone();
            move || run(shutdown)
        })?;
        let deadline = Instant::now() + Duration::from_secs(600);
        let wait = |done: &dyn Fn() -> bool, what: &str, step: Duration| -> anyhow::Result<Instant> {
            while !done() {
                if worker.is_finished() || Instant::now() > deadline {
                    anyhow::bail!("{out}: the run ended before {what} ({} of {inputs} inputs processed)", processed());
                }
                std::thread::sleep(step);
            }
            Ok(Instant::now())
        };
        let result = (|| {
            let t0 = wait(&|| processed() > 0, "its first record", Duration::from_micros(200))?;
            let t1 = wait(&|| processed() >= inputs, "processing every input", Duration::from_micros(500))?;
            let t2 = wait(&|| wm.high() >= expected_outputs, "every output was visible", Duration::from_millis(2))?;
            Ok(Run { rate: inputs as f64 / t1.duration_since(t0).as_secs_f64().max(1e-3), visible_after: t2 - t1 })
        })();
        shutdown.trigger();
        worker.join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
        result
    })
}

/// The yardstick: consume, copy, produce, with the host's producer settings.
fn plain_loop(
    bootstrap: &str,
    input: &str,
    output: &str,
    n: usize,
    shutdown: &Shutdown,
    consumed: &AtomicU64,
) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("plain"))
        .set("enable.auto.commit", "false")
        // The same fetch setting as the host: the yardstick is the best plain loop.
        .set("fetch.queue.backoff.ms", wasmstream::source::FETCH_QUEUE_BACKOFF_MS)
        .create()?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(input, 0, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let mut done = 0;
    while done < n && !shutdown.is_triggered() {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m?;
        let mut rec = BaseRecord::<[u8], [u8]>::to(output);
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, r)) => {
                    rec = r;
                    producer.poll(Duration::from_millis(1));
                }
            }
        }
        done += 1;
        consumed.store(done as u64, Ordering::Relaxed);
        if done % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

fn pipeline_config(
    args: &Args,
    module: &str,
    guarantee: &str,
    commit_interval_ms: u64,
    input: &str,
    output: &str,
    state: &std::path::Path,
) -> anyhow::Result<config::Config> {
    let text = format!(
        "application.id = {:?}\nbootstrap.servers = {:?}\nprocessing.guarantee = {:?}\ncommit.interval.ms = {}\nstate.dir = {:?}\n\
         [processor]\nmodule = {:?}\ninputs = [{input:?}]\noutputs = [{output:?}]\n",
        unique(module),
        args.bootstrap,
        guarantee,
        commit_interval_ms,
        state.display().to_string(),
        args.guests.join(format!("{module}.wasm")).display().to_string(),
    );
    Ok(config::parse(&text, None, std::path::Path::new(""), &[])?)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let (n, sentences) = (args.records, args.sentences);
    let b = args.bootstrap.as_str();
    let kv_in = unique("kv");
    let text_in = unique("text");
    create_topic(b, &kv_in, 1)?;
    create_topic(b, &text_in, 1)?;
    eprintln!("bench: producing {n} key/value records and {sentences} sentences");
    produce(b, &kv_in, (0..n).map(kv))?;
    produce(b, &text_in, (0..sentences).map(sentence))?;
    let words: i64 = (0..sentences).map(|i| String::from_utf8_lossy(&sentence(i).1).split(' ').count() as i64).sum();
    let state = tempfile::tempdir()?;

    let fresh_out = |name: &str| -> anyhow::Result<String> {
        let out = unique(name);
        create_topic(b, &out, 1)?;
        Ok(out)
    };
    let plain_once = || {
        let out = fresh_out("plain-out")?;
        let consumed = AtomicU64::new(0);
        measure(
            b,
            &out,
            n as i64,
            n as u64,
            || consumed.load(Ordering::Relaxed),
            |s| plain_loop(b, &kv_in, &out, n, &s, &consumed),
        )
    };
    // The broker's JIT warms up on the first workload: give it one, uncounted.
    eprintln!("bench: warm-up (a plain loop, not counted)");
    plain_once()?;
    let plain = row(args, "plain", plain_once)?;
    // Pipeline rows: (workload, guarantee, commit.interval.ms).
    let mut results: Vec<(String, Row)> = Vec::new();
    for name in DEFAULT_ROWS.split(',').skip(1) {
        let mut parts = name.split('-');
        let (Some(workload), Some(g), Some(ms)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let guarantee = if g == "eos" { "exactly_once" } else { "at_least_once" };
        let interval: u64 = ms.parse()?;
        let (module, input, inputs, outputs) = match workload {
            "map" => ("uppercase", &kv_in, n, n as i64),
            _ => ("wordcount", &text_in, sentences, words),
        };
        let r = row(args, name, || {
            let out = fresh_out(&format!("{name}-out"))?;
            let cfg = pipeline_config(args, module, guarantee, interval, input, &out, state.path())?;
            let progress = Progress::default();
            measure(
                b,
                &out,
                outputs,
                inputs as u64,
                || progress.records(),
                |s| pipeline::run_with_progress(&cfg, &s, &progress).map(drop).map_err(Into::into),
            )
        })?;
        results.push((name.to_string(), r));
    }

    println!(
        "\n{n} key/value records (plain, map) or {sentences} sentences (word count) per run, 1 partition, median of {} runs",
        args.repeat
    );
    println!(
        "records/s: first input to last input processed; visible: then until a read_committed reader sees every output"
    );
    println!("{:<54} {:>10} {:>21} {:>9} {:>10} {:>9}", "row", "records/s", "range", "vs plain", "eos/alos", "visible");
    let median = |name: &str| results.iter().find(|(n, _)| n == name).map_or(f64::NAN, |(_, r)| r.median);
    let line = |label: &str, r: &Row, eos_vs: f64| {
        let range = format!("{:.0}–{:.0}", r.min, r.max);
        let eos = if eos_vs.is_nan() { String::new() } else { format!("{eos_vs:.2}") };
        let visible = format!("+{} ms", r.visible_after.as_millis());
        println!("{label:<54} {:>10.0} {range:>21} {:>9.2} {eos:>10} {visible:>9}", r.median, r.median / plain.median);
    };
    line("plain rdkafka consume→produce loop (no WASM)", &plain, f64::NAN);
    for (name, r) in results.iter().filter(|(_, r)| !r.median.is_nan()) {
        let mut parts = name.split('-');
        let (workload, g, ms) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let what = if workload == "map" { "stateless WASM map" } else { "word count (~16 words/record)" };
        let label = format!("{what}, {}, {ms} ms", if g == "eos" { "exactly_once" } else { "at_least_once" });
        let eos_vs = if g == "eos" { r.median / median(&format!("{workload}-alos-{ms}")) } else { f64::NAN };
        line(&label, r, eos_vs);
    }
    Ok(())
}
