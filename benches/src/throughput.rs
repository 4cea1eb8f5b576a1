//! Records/s on a real broker, every row in one run against the same broker:
//! the plain rdkafka consume→produce loop (no WASM) is the yardstick.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use wasmstream::{Shutdown, config, pipeline};

use crate::kafka::{Watermark, create_topic, produce};

#[derive(clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers (scripts/bench starts a broker).
    #[arg(long)]
    bootstrap: String,
    /// Input records per row.
    #[arg(long, default_value_t = 300_000)]
    records: usize,
    /// processing.guarantee of the pipeline rows.
    #[arg(long, default_value = "at_least_once")]
    guarantee: String,
    /// commit.interval.ms of the pipeline rows.
    #[arg(long, default_value_t = 1000)]
    commit_interval_ms: u64,
    /// Directory of the built guest components.
    #[arg(long, default_value = "target/guests/wasm32-wasip2/guest")]
    guests: std::path::PathBuf,
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

/// Input records/s between the first output and the `expected_outputs`-th.
fn measure(bootstrap: &str, out: &str, expected_outputs: i64, inputs: usize, run: impl FnOnce(Shutdown) -> anyhow::Result<()> + Send) -> anyhow::Result<f64> {
    let wm = Watermark::new(bootstrap, out)?;
    let shutdown = Shutdown::new();
    std::thread::scope(|s| {
        let worker = s.spawn({
            let shutdown = shutdown.clone();
            move || run(shutdown)
        });
        let deadline = Instant::now() + Duration::from_secs(600);
        let mut first: Option<(Instant, i64)> = None;
        let result = loop {
            let h = wm.high();
            let now = Instant::now();
            if h > 0 && first.is_none() {
                first = Some((now, h));
            }
            if h >= expected_outputs {
                let (t0, h0) = first.unwrap_or((now, 0));
                let secs = now.duration_since(t0).as_secs_f64().max(1e-3);
                // Outputs per input are constant per row: scale to input records.
                let done_inputs = inputs as f64 * (h - h0) as f64 / h as f64;
                break Ok(done_inputs / secs);
            }
            if now > deadline || worker.is_finished() {
                break Err(anyhow::anyhow!("{out}: {h} of {expected_outputs} outputs before the run ended"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        shutdown.trigger();
        worker.join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
        result
    })
}

/// The yardstick: consume, copy, produce, with the host's producer settings.
fn plain_loop(bootstrap: &str, input: &str, output: &str, n: usize, shutdown: &Shutdown) -> anyhow::Result<()> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique("plain"))
        .set("enable.auto.commit", "false")
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
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
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
        if done % 64 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(Duration::from_secs(60))?;
    Ok(())
}

fn pipeline_config(args: &Args, module: &str, input: &str, output: &str, state: &std::path::Path) -> anyhow::Result<config::Config> {
    let text = format!(
        "application.id = {:?}\nbootstrap.servers = {:?}\nprocessing.guarantee = {:?}\ncommit.interval.ms = {}\nstate.dir = {:?}\n\
         [processor]\nmodule = {:?}\ninputs = [{input:?}]\noutputs = [{output:?}]\n",
        unique(module),
        args.bootstrap,
        args.guarantee,
        args.commit_interval_ms,
        state.display().to_string(),
        args.guests.join(format!("{module}.wasm")).display().to_string(),
    );
    Ok(config::parse(&text, None, std::path::Path::new(""), &[])?)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let n = args.records;
    let b = args.bootstrap.as_str();
    let kv_in = unique("kv");
    let text_in = unique("text");
    create_topic(b, &kv_in, 1)?;
    create_topic(b, &text_in, 1)?;
    eprintln!("bench: producing {n} key/value records and {n} sentences");
    produce(b, &kv_in, (0..n).map(kv))?;
    produce(b, &text_in, (0..n).map(sentence))?;
    let words: i64 = (0..n).map(|i| String::from_utf8_lossy(&sentence(i).1).split(' ').count() as i64).sum();
    let state = tempfile::tempdir()?;

    let out = unique("plain-out");
    create_topic(b, &out, 1)?;
    eprintln!("bench: plain rdkafka loop");
    let plain = measure(b, &out, n as i64, n, |s| plain_loop(b, &kv_in, &out, n, &s))?;

    let out = unique("map-out");
    create_topic(b, &out, 1)?;
    eprintln!("bench: stateless WASM map");
    let cfg = pipeline_config(args, "uppercase", &kv_in, &out, state.path())?;
    let map = measure(b, &out, n as i64, n, |s| pipeline::run(&cfg, &s).map(drop).map_err(Into::into))?;

    let out = unique("wc-out");
    create_topic(b, &out, 1)?;
    eprintln!("bench: word count");
    let cfg = pipeline_config(args, "wordcount", &text_in, &out, state.path())?;
    let wc = measure(b, &out, words, n, |s| pipeline::run(&cfg, &s).map(drop).map_err(Into::into))?;

    println!(
        "\n{n} input records per row, 1 partition, processing.guarantee = {}, commit.interval.ms = {}",
        args.guarantee, args.commit_interval_ms
    );
    println!("{:<44} {:>12} {:>10}", "row", "records/s", "vs plain");
    println!("{:<44} {:>12.0} {:>10.2}", "plain rdkafka consume→produce loop (no WASM)", plain, 1.0);
    println!("{:<44} {:>12.0} {:>10.2}", "stateless WASM map (uppercase)", map, map / plain);
    println!("{:<44} {:>12.0} {:>10.2}", "word count (RocksDB state, ~16 words/record)", wc, wc / plain);
    Ok(())
}
