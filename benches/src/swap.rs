//! Hot-swap pause: a word-count pipeline on a real broker, input arriving
//! all the while, swapped through its admin endpoint (as `wasmstream swap`
//! does) between copies of the same component that differ only in a custom
//! section, so each is a new module (a new digest) with the same snapshot
//! format. Per swap the host reports how long each task paused (snapshot,
//! instantiate, `init`, `restore`) and how long processing stalled in all
//! (the swap's checkpoint included; under exactly-once, its transaction
//! commit); compile time, which runs beside processing, is reported apart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmstream::{Progress, Shutdown, pipeline};

use crate::kafka::create_topic;
use crate::throughput::{parse_config, sentence, unique};

#[derive(clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    bootstrap: String,
    /// Swaps per guarantee.
    #[arg(long, default_value_t = 40)]
    swaps: usize,
    /// Input partitions (tasks).
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// 10 swaps per guarantee.
    #[arg(long)]
    quick: bool,
    /// Directory of the built guest components (`scripts/build-guests`).
    #[arg(long, default_value = "target/guests/wasm32-wasip2/guest")]
    guests: std::path::PathBuf,
}

/// The per-task pause goal (issue 6), milliseconds at p99.
const GOAL_MS: f64 = 5.0;

pub fn run(args: &Args) -> anyhow::Result<()> {
    let swaps = if args.quick { 10 } else { args.swaps };
    let original = args.guests.join("wordcount.wasm");
    let bytes = std::fs::read(&original)
        .map_err(|e| anyhow::anyhow!("{}: {e} (build it with scripts/build-guests)", original.display()))?;
    let dir = tempfile::tempdir()?;
    // Module i: the word count with a custom section naming i.
    let variants: Vec<std::path::PathBuf> = (0..=swaps)
        .map(|i| {
            let path = dir.path().join(format!("wordcount-{i}.wasm"));
            std::fs::write(&path, with_custom_section(&bytes, "wasmstream-bench-variant", i.to_string().as_bytes()))?;
            Ok(path)
        })
        .collect::<std::io::Result<_>>()?;
    println!(
        "hot swap: word count, {} partitions, input arriving throughout, {swaps} swaps per guarantee (goal: per-task pause <= {GOAL_MS} ms at p99)",
        args.partitions
    );
    println!(
        "{:<15} {:>6} {:>12} {:>12} {:>12} {:>13} {:>13} {:>16} {:>11}",
        "guarantee",
        "swaps",
        "task p50 ms",
        "task p99 ms",
        "task max ms",
        "stall p50 ms",
        "stall p99 ms",
        "of it ckpt p50",
        "compile ms"
    );
    for guarantee in ["at_least_once", "exactly_once"] {
        let r = measure(args, guarantee, &variants, dir.path())?;
        let (mut tasks, mut stalls) = (r.tasks, r.stalls);
        tasks.sort_by(f64::total_cmp);
        stalls.sort_by(f64::total_cmp);
        let compile = r.compile.iter().sum::<f64>() / r.compile.len().max(1) as f64;
        let mut checkpoints = r.checkpoints;
        checkpoints.sort_by(f64::total_cmp);
        println!(
            "{:<15} {:>6} {:>12.2} {:>12.2} {:>12.2} {:>13.2} {:>13.2} {:>16.2} {:>11.0}{}",
            guarantee,
            r.compile.len(),
            pct(&tasks, 0.50),
            pct(&tasks, 0.99),
            tasks.last().copied().unwrap_or(0.0),
            pct(&stalls, 0.50),
            pct(&stalls, 0.99),
            pct(&checkpoints, 0.50),
            compile,
            if pct(&tasks, 0.99) <= GOAL_MS { "  goal met" } else { "  goal NOT met" }
        );
    }
    crate::kafka::delete_own_topics(&args.bootstrap, &[])
}

struct Measured {
    tasks: Vec<f64>,
    stalls: Vec<f64>,
    checkpoints: Vec<f64>,
    compile: Vec<f64>,
}

fn measure(
    args: &Args,
    guarantee: &str,
    variants: &[std::path::PathBuf],
    dir: &std::path::Path,
) -> anyhow::Result<Measured> {
    let input = unique(&format!("swap-{guarantee}-in"));
    let output = unique(&format!("swap-{guarantee}-out"));
    create_topic(&args.bootstrap, &input, args.partitions)?;
    create_topic(&args.bootstrap, &output, 1)?;
    let state = dir.join(format!("state-{guarantee}"));
    let text = format!(
        "application.id = {:?}\nbootstrap.servers = {:?}\nprocessing.guarantee = {guarantee:?}\ncommit.interval.ms = 1000\nstate.dir = {:?}\n\
         [processor]\nmodule = {:?}\ninputs = [{input:?}]\noutputs = [{output:?}]\n",
        unique("swap"),
        args.bootstrap,
        state.display().to_string(),
        variants[0].display().to_string(),
    );
    let config = parse_config(&text)?;
    let shutdown = Shutdown::new();
    let progress = Arc::new(Progress::default());
    let host = {
        let (config, shutdown, progress) = (config.clone(), shutdown.clone(), progress.clone());
        std::thread::spawn(move || pipeline::run_with_progress(&config, &shutdown, &progress))
    };
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (bootstrap, input, feeding) = (args.bootstrap.clone(), input.clone(), feeding.clone());
        std::thread::spawn(move || feed(&bootstrap, &input, &feeding))
    };
    let result = (|| {
        // Every task running and processing before the first swap.
        let addr_file = config.app_state_dir().join(wasmstream::admin::ADDR_FILE);
        let deadline = Instant::now() + Duration::from_secs(120);
        while progress.records() < 10_000 || !addr_file.is_file() {
            anyhow::ensure!(!host.is_finished(), "the pipeline stopped");
            anyhow::ensure!(Instant::now() < deadline, "the pipeline processed too little in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
        let addr = wasmstream::admin::find(&config)?;
        let mut m = Measured { tasks: Vec::new(), stalls: Vec::new(), checkpoints: Vec::new(), compile: Vec::new() };
        for module in &variants[1..] {
            let body = serde_json::json!({ "module": module });
            let (_, answer) =
                wasmstream::admin::request(&addr, "POST", "/swap", Some(&body), Duration::from_secs(120))?;
            anyhow::ensure!(answer["outcome"] == "completed", "swap to {} failed: {answer}", module.display());
            for p in answer["paused_ms"].as_array().into_iter().flatten() {
                m.tasks.push(p[1].as_f64().unwrap_or(0.0));
            }
            m.stalls.push(answer["stall_ms"].as_f64().unwrap_or(0.0));
            m.checkpoints.push(answer["checkpoint_ms"].as_f64().unwrap_or(0.0));
            m.compile.push(answer["compile_ms"].as_f64().unwrap_or(0.0));
        }
        Ok(m)
    })();
    feeding.store(false, Ordering::Release);
    shutdown.trigger();
    let _ = feeder.join();
    host.join().map_err(|_| anyhow::anyhow!("the pipeline panicked"))??;
    result
}

/// Produces sentences until `feeding` is cleared, at most ~20,000/s.
fn feed(bootstrap: &str, topic: &str, feeding: &AtomicBool) -> anyhow::Result<()> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer =
        rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).set("linger.ms", "5").create()?;
    let mut i = 0;
    while feeding.load(Ordering::Acquire) {
        for _ in 0..200 {
            let (k, v) = sentence(i);
            i += 1;
            let _ = p.send(BaseRecord::to(topic).key(&k).payload(&v));
        }
        p.poll(Duration::from_millis(10));
    }
    p.flush(Duration::from_secs(30))?;
    Ok(())
}

/// `bytes` (a component or module) with a custom section appended: the same
/// code, another digest.
fn with_custom_section(bytes: &[u8], name: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = leb(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(payload);
    let mut out = bytes.to_vec();
    out.push(0);
    out.extend(leb(body.len()));
    out.extend(body);
    out
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// The `q` quantile of sorted values (nearest rank).
fn pct(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}
