//! Records/s on a real broker, every row in one run against the same broker:
//! the plain rdkafka consume→produce loop (no WASM) is the yardstick.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};

use wasmstream::guest::Module;
use wasmstream::{Progress, Shutdown, config, pipeline};

use crate::kafka::{Watermark, create_topic, produce};

#[derive(clap::Args, Clone)]
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
    /// Only these rows: plain, and `<workload>-<alos|eos>-<commit.interval.ms>`
    /// from the default list (workloads: map, native, count, wordcount,
    /// kstreams); a ratio needs both of its rows.
    #[arg(long, value_delimiter = ',', default_value = ALL_ROWS)]
    rows: Vec<String>,
    /// How long the memory row (`rss-8p`) runs.
    #[arg(long, default_value_t = 600)]
    rss_seconds: u64,
    /// Records/s fed to the memory row, over its 8 partitions.
    #[arg(long, default_value_t = 20_000)]
    rss_rate: u64,
    /// A short run (about 2 minutes on 2 cores): 300,000 records, 30,000
    /// sentences, one run per row, the 1000 ms rows and a 30 s memory row.
    #[arg(long)]
    quick: bool,
}

/// Every row, in the order they run; `plain` first (the others' yardstick).
const ALL_ROWS: &str = "plain,map-alos-1000,native-alos-1000,count-alos-1000,map-eos-1000,count-eos-1000,\
     wordcount-alos-1000,wordcount-eos-1000,kstreams-alos-1000,kstreams-eos-1000,map-alos-100,map-eos-100,\
     wordcount-alos-100,wordcount-eos-100,state-1m,rss-8p";

/// Median and range of a row's runs, in records/s, and the median wait
/// for the outputs to become visible.
struct Row {
    median: f64,
    min: f64,
    max: f64,
    visible_after: Duration,
}

/// The median, range and median visibility wait of a row's runs.
fn summarize(runs: &[Run]) -> Row {
    if runs.is_empty() {
        return Row { median: f64::NAN, min: f64::NAN, max: f64::NAN, visible_after: Duration::ZERO };
    }
    let mut visible: Vec<Duration> = runs.iter().map(|r| r.visible_after).collect();
    visible.sort();
    let mut rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
    rates.sort_by(f64::total_cmp);
    Row {
        median: rates[rates.len() / 2],
        min: rates[0],
        max: rates[rates.len() - 1],
        visible_after: visible[visible.len() / 2],
    }
}

/// Distinct keys of the key/value input (the per-key count's state size).
const KEYS: usize = 1_000_000;

/// 16-byte key (one of [`KEYS`]), 100-byte lower-case value.
fn kv(i: usize) -> (Vec<u8>, Vec<u8>) {
    (format!("key-{:012}", i % KEYS).into_bytes(), (0..100).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect())
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
pub struct Run {
    pub rate: f64,
    pub visible_after: Duration,
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

fn parse_config(text: &str) -> anyhow::Result<config::Config> {
    Ok(config::parse(text, None, std::path::Path::new(""), &[])?)
}

/// The config file of a benchmark pipeline.
fn config_text(
    args: &Args,
    module: &str,
    guarantee: &str,
    commit_interval_ms: u64,
    input: &str,
    output: &str,
    state: &std::path::Path,
) -> String {
    format!(
        "application.id = {:?}\nbootstrap.servers = {:?}\nprocessing.guarantee = {:?}\ncommit.interval.ms = {}\nstate.dir = {:?}\n\
         [processor]\nmodule = {:?}\ninputs = [{input:?}]\noutputs = [{output:?}]\n",
        unique(module),
        args.bootstrap,
        guarantee,
        commit_interval_ms,
        state.display().to_string(),
        // Absolute: a config file's relative paths are relative to the file.
        std::path::absolute(args.guests.join(format!("{module}.wasm"))).unwrap_or_default().display().to_string(),
    )
}

/// One pipeline row: `<workload>-<alos|eos>-<commit.interval.ms>`.
struct Spec<'a> {
    workload: &'a str,
    eos: bool,
    interval_ms: u64,
}

fn spec(name: &str) -> Option<Spec<'_>> {
    let mut parts = name.split('-');
    let (workload, g, ms) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Spec { workload, eos: g == "eos", interval_ms: ms.parse().ok()? })
}

fn label(s: &Spec<'_>) -> String {
    let what = match s.workload {
        "map" => "stateless WASM map",
        "native" => "the same map compiled into the host",
        "count" => "per-key count (1M keys, RocksDB state)",
        "wordcount" => "word count (~16 words/record)",
        "state" => "per-key count, 1M keys: restart and rebuild",
        _ => "Kafka Streams word count (reference)",
    };
    format!("{what}, {}, {} ms", if s.eos { "exactly_once" } else { "at_least_once" }, s.interval_ms)
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut args = args.clone();
    if args.quick {
        args.records = 300_000;
        args.sentences = 30_000;
        args.repeat = 1;
        args.rows.retain(|r| r == "plain" || r == "rss-8p" || r.ends_with("-1000"));
        args.rss_seconds = args.rss_seconds.min(30);
    }
    let args = &args;
    let (n, sentences) = (args.records, args.sentences);
    let b = args.bootstrap.as_str();
    let kv_in = unique("kv");
    let text_in = unique("text");
    create_topic(b, &kv_in, 1)?;
    create_topic(b, &text_in, 1)?;
    eprintln!("bench: producing {n} key/value records and {sentences} sentences");
    produce(b, &kv_in, (0..n).map(kv))?;
    produce(b, &text_in, (0..sentences).map(sentence))?;
    // Every word's final count, which both word counts' outputs must end with.
    let mut counts: std::collections::HashMap<Vec<u8>, u64> = std::collections::HashMap::new();
    for i in 0..sentences {
        for w in sentence(i).1.split(|&c| c == b' ') {
            *counts.entry(w.to_vec()).or_default() += 1;
        }
    }
    let words: i64 = counts.values().sum::<u64>() as i64;
    let check_counts = |out: &str| -> anyhow::Result<()> {
        let last = crate::kafka::last_values(b, out, words as usize)?;
        let wrong =
            counts.iter().filter(|(w, c)| last.get(*w).map(|v| v.as_slice()) != Some(c.to_string().as_bytes())).count();
        anyhow::ensure!(
            wrong == 0 && last.len() == counts.len(),
            "{out}: {wrong} of {} words end with a wrong count",
            counts.len()
        );
        Ok(())
    };
    let state = tempfile::tempdir()?;
    let engine = wasmstream::guest::engine()?;

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
    // One run of a pipeline row; `check`: verify a word count's final counts
    // (ours and Kafka Streams' must both be exact).
    let pipeline_once = |name: &str, check: bool| -> anyhow::Result<Run> {
        let sp = spec(name).ok_or_else(|| anyhow::anyhow!("unknown row {name}"))?;
        let guarantee = if sp.eos { "exactly_once" } else { "at_least_once" };
        let (module, input, inputs, outputs) = match sp.workload {
            "map" | "native" => ("uppercase", &kv_in, n, n as i64),
            "count" => ("count", &kv_in, n, n as i64),
            _ => ("wordcount", &text_in, sentences, words),
        };
        let check = check && matches!(sp.workload, "wordcount" | "kstreams");
        let out = fresh_out(&format!("{name}-out"))?;
        let run = if sp.workload == "kstreams" {
            let g = if sp.eos { "exactly_once_v2" } else { "at_least_once" };
            crate::kstreams::run(b, input, &out, g, sp.interval_ms, inputs as u64, outputs)?
        } else {
            let cfg = parse_config(&config_text(args, module, guarantee, sp.interval_ms, input, &out, state.path()))?;
            let module = match sp.workload {
                "native" => Module::native::<uppercase::Uppercase>(&engine, "uppercase"),
                _ => Module::load(&engine, &cfg.processor.module, cfg.processor.max_memory_bytes)?,
            };
            let progress = Progress::default();
            measure(
                b,
                &out,
                outputs,
                inputs as u64,
                || progress.records(),
                |s| pipeline::run_with_module(&cfg, module, &s, &progress).map(drop).map_err(Into::into),
            )?
        };
        if check {
            check_counts(&out)?;
        }
        Ok(run)
    };
    // The broker's JIT warms up on the first workload: give it one, uncounted.
    eprintln!("bench: warm-up (a plain loop, not counted)");
    plain_once()?;
    // Rounds: every selected row once per round, so that a drift of the
    // machine or the broker over the run weighs on every row alike.
    let selected: Vec<&str> = ALL_ROWS.split(',').filter(|r| args.rows.iter().any(|a| a == r)).collect();
    let mut runs: Vec<Vec<Run>> = selected.iter().map(|_| Vec::new()).collect();
    let mut state_runs: Vec<StateRun> = Vec::new();
    let mut rss_runs: Vec<RssRun> = Vec::new();
    for round in 0..args.repeat.max(1) {
        for (i, name) in selected.iter().enumerate() {
            eprintln!("bench: round {} of {}: {name}", round + 1, args.repeat.max(1));
            if *name == "state-1m" {
                state_runs.push(state_run(args, b, &engine, state.path())?);
                continue;
            }
            if *name == "rss-8p" {
                // Minutes long and not a ratio: one run is enough.
                if round == 0 {
                    rss_runs.push(rss_run(args, b, state.path())?);
                }
                continue;
            }
            let run = if *name == "plain" { plain_once()? } else { pipeline_once(name, round == 0)? };
            runs[i].push(run);
        }
    }
    let plain = selected.iter().position(|r| *r == "plain").map_or_else(|| summarize(&[]), |i| summarize(&runs[i]));
    let results: Vec<(String, Row)> = selected
        .iter()
        .zip(&runs)
        .filter(|(n, _)| **n != "plain")
        .map(|(n, r)| (n.to_string(), summarize(r)))
        .collect();

    println!(
        "\n{n} key/value records (plain, map, count) or {sentences} sentences (word count) per run, 1 partition, median of {} rounds (each round runs every row once)",
        args.repeat
    );
    println!(
        "records/s: first input to last input processed; visible: then until a read_committed reader sees every output"
    );
    println!("{:<64} {:>10} {:>21} {:>9} {:>9}", "row", "records/s", "range", "vs plain", "visible");
    let median = |name: &str| results.iter().find(|(n, _)| n == name).map_or(f64::NAN, |(_, r)| r.median);
    let line = |label: &str, r: &Row| {
        let range = format!("{:.0}–{:.0}", r.min, r.max);
        let visible = format!("+{} ms", r.visible_after.as_millis());
        println!("{label:<64} {:>10.0} {range:>21} {:>9.2} {visible:>9}", r.median, r.median / plain.median);
    };
    line("plain rdkafka consume→produce loop (no WASM)", &plain);
    for (name, r) in results.iter().filter(|(_, r)| !r.median.is_nan()) {
        if let Some(sp) = spec(name) {
            line(&label(&sp), r);
        }
    }

    // The goals of the per-record path, from the rows above.
    let ratio = |a: &str, b: &str| if a == "plain" { plain.median } else { median(a) } / if b == "plain" { plain.median } else { median(b) };
    let goals: [(&str, f64, f64); 8] = [
        ("stateless WASM map / plain loop (1000 ms)", ratio("map-alos-1000", "plain"), 0.8),
        ("per-key count, 1M keys, at_least_once / plain loop", ratio("count-alos-1000", "plain"), 0.5),
        ("exactly_once / at_least_once, map, 1000 ms", ratio("map-eos-1000", "map-alos-1000"), 0.9),
        ("exactly_once / at_least_once, word count, 1000 ms", ratio("wordcount-eos-1000", "wordcount-alos-1000"), 0.9),
        ("exactly_once / at_least_once, per-key count, 1000 ms", ratio("count-eos-1000", "count-alos-1000"), 0.9),
        ("WASM map / the same map compiled into the host", ratio("map-alos-1000", "native-alos-1000"), 0.9),
        (
            "word count: wasmstream / Kafka Streams, at_least_once",
            ratio("wordcount-alos-1000", "kstreams-alos-1000"),
            3.0,
        ),
        ("word count: wasmstream / Kafka Streams, exactly_once", ratio("wordcount-eos-1000", "kstreams-eos-1000"), 3.0),
    ];
    println!("\n{:<64} {:>10} {:>8} {:>8}", "goal", "measured", "goal", "");
    let verdict = |value: f64, met: bool| {
        if value.is_nan() {
            "not run"
        } else if met {
            "met"
        } else {
            "NOT met"
        }
    };
    for (what, value, goal) in goals {
        println!("{what:<64} {value:>10.3} {:>8} {:>8}", format!("≥ {goal}"), verdict(value, value >= goal));
    }
    // The state rows: medians over the rounds.
    let median_of = |f: &dyn Fn(&StateRun) -> Duration| {
        let mut v: Vec<Duration> = state_runs.iter().map(f).collect();
        v.sort();
        v.get(v.len() / 2).map_or(f64::NAN, Duration::as_secs_f64)
    };
    let checkpoint_ms = median_of(&|r| r.checkpoint) * 1000.0;
    let stall_ms = median_of(&|r| r.stall) * 1000.0;
    if let Some(r) = state_runs.iter().find(|r| r.checkpoint_keys != KEYS as u64) {
        anyhow::bail!("the state run's checkpoint held {} keys instead of {KEYS}", r.checkpoint_keys);
    }
    let restart_s = median_of(&|r| r.restart);
    let rebuild = KEYS as f64 / median_of(&|r| r.rebuild);
    let state_goals: [(&str, f64, &str, bool); 4] = [
        ("checkpoint of 1M dirty keys, total (ms)", checkpoint_ms, "≤ 200", checkpoint_ms <= 200.0),
        ("  processing stall during it (ms)", stall_ms, "≤ 5", stall_ms <= 5.0),
        ("restart with local state (1M keys) to first processed record (s)", restart_s, "≤ 1", restart_s <= 1.0),
        ("rebuild from the changelog to first processed record (keys/s)", rebuild, "≥ 500000", rebuild >= 500_000.0),
    ];
    for (what, value, goal, met) in state_goals {
        println!("{what:<64} {value:>10.3} {goal:>8} {:>8}", verdict(value, met));
    }
    for r in &rss_runs {
        let growth = r.last_mib - r.first_mib;
        println!(
            "{:<64} {:>10.1} {:>8} {:>8}",
            format!("host RSS, 8 partitions, WASM map, {} s at {}/s (MiB, peak)", r.seconds, r.rate),
            r.peak_mib,
            "≤ 100",
            verdict(r.peak_mib, r.peak_mib <= 100.0)
        );
        // Flat: the last minute's RSS within 5% of the first minute's.
        let flat = growth.abs() <= 0.05 * r.first_mib;
        println!(
            "{:<64} {:>10.1} {:>8} {:>8}",
            format!("  growth, second {}-s window to the last (MiB)", r.window),
            growth,
            "flat",
            verdict(growth, flat)
        );
    }
    println!("plain loop (the yardstick): {:.0} records/s", plain.median);
    if results.iter().any(|(n, r)| (n.starts_with("wordcount") || n.starts_with("kstreams")) && !r.median.is_nan()) {
        println!(
            "word counts checked: every word's final count in each word-count row's output equals its occurrences in the input"
        );
    }
    Ok(())
}

/// The state rows, on their own input: 1,200,000 key/value records (the
/// first 1,000,000 of distinct keys). The per-key count runs over it with a
/// long interval and a cache that fills at exactly 1,000,000 dirty keys, so
/// one checkpoint of all of them is taken while processing, and the last
/// 200,000 records are processed while it is written: its total time (cut
/// to RocksDB) and the processing stall are measured by the host. Then the
/// host restarts on its local state, then again with the state directory
/// deleted (rebuilt from the changelog). Each restart gets one new record
/// and is timed to its first processed record.
struct StateRun {
    checkpoint_keys: u64,
    checkpoint: Duration,
    stall: Duration,
    restart: Duration,
    rebuild: Duration,
}

fn state_run(
    args: &Args,
    bootstrap: &str,
    engine: &wasmtime::Engine,
    dir: &std::path::Path,
) -> anyhow::Result<StateRun> {
    let n = KEYS + KEYS / 5;
    let input = unique("state-in");
    let out = unique("state-out");
    create_topic(bootstrap, &input, 1)?;
    create_topic(bootstrap, &out, 1)?;
    produce(bootstrap, &input, (0..n).map(kv))?;
    let mut cfg = parse_config(&config_text(args, "count", "at_least_once", 600_000, &input, &out, dir))?;
    // The count's values are u64s: the cache is full at the 1,000,000th key.
    cfg.cache_max_bytes = (KEYS * wasmstream::state::entry_bytes(kv(0).0.len(), 8)) as u64 - 1;
    let module = Module::load(engine, &cfg.processor.module, cfg.processor.max_memory_bytes)?;
    // Runs the host until `until` holds, then stops it; returns how long
    // `until` took from the start, and the run's progress.
    let run = |until: &dyn Fn(&Progress) -> bool| -> anyhow::Result<(Duration, Progress)> {
        let progress = Progress::default();
        let shutdown = Shutdown::new();
        let started = Instant::now();
        let reached = std::thread::scope(|s| {
            let worker = s.spawn(|| pipeline::run_with_module(&cfg, module.clone(), &shutdown, &progress));
            let deadline = started + Duration::from_secs(600);
            while !until(&progress) {
                anyhow::ensure!(!worker.is_finished() && Instant::now() < deadline, "the state run ended early");
                std::thread::sleep(Duration::from_micros(500));
            }
            let reached = started.elapsed();
            shutdown.trigger();
            worker.join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
            Ok(reached)
        })?;
        Ok((reached, progress))
    };
    let (_, progress) = run(&|p| p.records() >= n as u64)?;
    let largest = progress.largest_checkpoint();
    produce(bootstrap, &input, std::iter::once(kv(n)))?;
    let (restart, _) = run(&|p| p.records() > 0)?;
    std::fs::remove_dir_all(cfg.app_state_dir())?;
    produce(bootstrap, &input, std::iter::once(kv(n + 1)))?;
    let (rebuild, _) = run(&|p| p.records() > 0)?;
    Ok(StateRun { checkpoint_keys: largest.keys, checkpoint: largest.total, stall: largest.stall, restart, rebuild })
}

/// The memory row: the `wasmstream` binary (a child process, as users run
/// it) on an 8-partition input fed at a steady rate, its resident set
/// sampled every second from /proc.
struct RssRun {
    seconds: u64,
    rate: u64,
    /// The window the first and last figures average over.
    window: u64,
    peak_mib: f64,
    first_mib: f64,
    last_mib: f64,
}

fn rss_run(args: &Args, bootstrap: &str, dir: &std::path::Path) -> anyhow::Result<RssRun> {
    use std::sync::atomic::AtomicBool;
    let input = unique("rss-in");
    let out = unique("rss-out");
    create_topic(bootstrap, &input, 8)?;
    create_topic(bootstrap, &out, 8)?;
    let file = dir.join(format!("{}.toml", unique("rss")));
    std::fs::write(&file, config_text(args, "uppercase", "at_least_once", 30_000, &input, &out, dir))?;
    let binary = std::env::current_exe()?.with_file_name("wasmstream");
    anyhow::ensure!(
        binary.exists(),
        "{} is missing: build it with `cargo build --release -p wasmstream`",
        binary.display()
    );
    let log = dir.join(format!("{}.log", unique("rss")));
    let mut child = std::process::Command::new(&binary)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?.try_clone()?)
        .spawn()?;
    let pid = child.id();
    let rss_mib = || -> anyhow::Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no VmRSS in /proc/{pid}/status"))?;
        Ok(kb / 1024.0)
    };
    let stop = AtomicBool::new(false);
    let seconds = args.rss_seconds.max(10);
    let rate = args.rss_rate.max(1);
    let samples = std::thread::scope(|s| -> anyhow::Result<Vec<f64>> {
        // The feeder: `rate` records/s in 10 ms steps, round-robin over the partitions.
        let feeder = s.spawn(|| -> anyhow::Result<u64> {
            let producer: BaseProducer =
                ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create()?;
            let started = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    let (k, v) = kv(sent as usize);
                    let record = BaseRecord::to(&input).key(&k).payload(&v).partition((sent % 8) as i32);
                    if producer.send(record).is_err() {
                        producer.poll(Duration::from_millis(5));
                        continue;
                    }
                    sent += 1;
                }
                producer.poll(Duration::from_millis(10));
            }
            producer.flush(Duration::from_secs(30))?;
            Ok(sent)
        });
        let started = Instant::now();
        let mut samples = Vec::new();
        while started.elapsed() < Duration::from_secs(seconds) {
            std::thread::sleep(Duration::from_secs(1));
            if let Some(status) = child.try_wait()? {
                stop.store(true, Ordering::Relaxed);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                anyhow::bail!(
                    "wasmstream exited early ({status}); the end of its log:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            samples.push(rss_mib()?);
        }
        stop.store(true, Ordering::Relaxed);
        let sent = feeder.join().map_err(|_| anyhow::anyhow!("feeder panicked"))??;
        // It kept up: every record fed is output (the map emits one each).
        let outputs = Watermark::new(bootstrap, &out)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let output = || (0..8).map(|p| outputs.high_of(p)).sum::<i64>() as u64;
        while output() < sent {
            anyhow::ensure!(
                Instant::now() < deadline,
                "wasmstream output {} of {sent} records; log: {}",
                output(),
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("bench: rss-8p: fed {sent} records in {seconds} s, all of them output");
        Ok(samples)
    })?;
    // A graceful stop: SIGTERM, then its final checkpoint.
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "wasmstream exited with {status}; its log: {}", log.display());
    // The first window is start-up (module compile, group join): the
    // comparison starts after it.
    let window = (seconds / 10).clamp(5, 60) as usize;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok(RssRun {
        seconds,
        rate,
        window: window as u64,
        peak_mib: samples.iter().copied().fold(0.0, f64::max),
        first_mib: mean(&samples[window.min(samples.len())..(2 * window).min(samples.len())]),
        last_mib: mean(&samples[samples.len().saturating_sub(window)..]),
    })
}
