//! The word count in every guest language: component size, compile time
//! (and a load from the compile cache), cold instantiate, and sentences/s
//! through the component alone (no Kafka) and, with `--bootstrap`, through
//! the whole pipeline on a broker (at_least_once, commit.interval.ms 1000,
//! about 3 s of input for each language).

use std::time::{Duration, Instant};

use wasmstream::compiled::CompileCache;
use wasmstream::guest::Module;
use wasmstream::state::TaskStore;
use wasmstream::{Progress, Shutdown, pipeline};
use wasmstream_sdk::packed::InputWriter;

use crate::kafka::{create_topic, produce};
use crate::throughput::{parse_config, sentence, unique};

#[derive(clap::Args)]
pub struct Args {
    /// Kafka bootstrap servers: also run each word count as a pipeline.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Sentences (~100 bytes, ~16 words) per measurement.
    #[arg(long, default_value_t = 20_000)]
    sentences: usize,
    /// A short run: 2,000 sentences through each component alone, no pipeline.
    #[arg(long)]
    quick: bool,
    /// Directory of the built guest components (`scripts/build-guests --all`).
    #[arg(long, default_value = "target/guests/wasm32-wasip2/guest")]
    guests: std::path::PathBuf,
}

/// (language, word-count component).
const LANGUAGES: &[(&str, &str)] = &[
    ("Rust (SDK)", "wordcount"),
    ("Python (componentize-py)", "wordcount-python"),
    ("JavaScript (componentize-js)", "wordcount-js"),
    ("C (wit-bindgen, clang)", "wordcount-c"),
    ("Go (standard Go, wasip1)", "wordcount-go"),
];

pub fn run(args: &Args) -> anyhow::Result<()> {
    let sentences = if args.quick { 2_000 } else { args.sentences };
    let bootstrap = args.bootstrap.as_ref().filter(|_| !args.quick);
    let engine = wasmstream::guest::engine()?;
    let dir = tempfile::tempdir()?;
    let inputs: Vec<(Vec<u8>, Vec<u8>)> = (0..sentences).map(sentence).collect();
    let per_batch = wasmstream::task::MAX_BATCH_RECORDS as usize;
    let batches: Vec<InputWriter> = inputs
        .chunks(per_batch)
        .enumerate()
        .map(|(b, chunk)| {
            let mut w = InputWriter::default();
            w.begin("in", 0);
            for (i, (k, v)) in chunk.iter().enumerate() {
                w.push((b * per_batch + i) as i64, Some(0), Some(k), Some(v), 0, std::iter::empty());
            }
            w
        })
        .collect();
    println!("word count per guest language, {} sentences of ~100 bytes (~16 words) per measurement", sentences);
    println!(
        "{:<30} {:>9} {:>11} {:>12} {:>13} {:>15} {:>15}",
        "language", "size MB", "compile ms", "cached ms", "instantiate", "sentences/s", "pipeline /s"
    );
    let mut warm = false;
    for (language, name) in LANGUAGES {
        let path = args.guests.join(format!("{name}.wasm"));
        let size = std::fs::metadata(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e} (build it with scripts/build-guests --all)", path.display()))?
            .len();
        let t = Instant::now();
        let module = Module::load(&engine, &path, 1 << 30, None)?;
        let compile = t.elapsed();
        let cache = CompileCache::new(dir.path().join(format!("compiled-{name}")));
        Module::load(&engine, &path, 1 << 30, Some(&cache))?;
        let t = Instant::now();
        let cached = Module::load(&engine, &path, 1 << 30, Some(&cache))?;
        let cached_ms = t.elapsed();
        anyhow::ensure!(cached.origin == wasmstream::compiled::Origin::Cached, "{name}: not read from the cache");
        // Cold instantiate: a fresh instance and its `init`, the store opened before.
        let mut times = Vec::new();
        for i in 0..5 {
            let (store, _) = TaskStore::open(&dir.path().join(format!("{name}-inst-{i}")), false)?;
            let t = Instant::now();
            let inst = module.instantiate(store, "bench".into(), &[])?;
            times.push(t.elapsed());
            drop(inst);
        }
        times.sort();
        let instantiate = times[times.len() / 2];
        // The component alone, with its state on RocksDB.
        let (store, _) = TaskStore::open(&dir.path().join(format!("{name}-run")), false)?;
        let mut inst = module.instantiate(store, "bench".into(), &[])?;
        let mut outputs = Vec::new();
        let t = Instant::now();
        for b in &batches {
            let failure = inst.process_batch(b.as_bytes(), &mut outputs)?;
            anyhow::ensure!(failure.is_none(), "{name} rejected a sentence: {failure:?}");
        }
        let alone = sentences as f64 / t.elapsed().as_secs_f64();
        // About 3 s of input at the component's own speed (5,000 to 200,000
        // sentences), after one uncounted run that warms the broker up.
        let pipeline = match bootstrap {
            Some(b) => {
                let n = ((alone * 3.0) as usize).clamp(5_000, 200_000);
                let inputs: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(sentence).collect();
                if !std::mem::replace(&mut warm, true) {
                    pipeline_rate(b, &module, &path, name, &inputs, dir.path())?;
                }
                format!("{:.0}", pipeline_rate(b, &module, &path, name, &inputs, dir.path())?)
            }
            None => "–".into(),
        };
        println!(
            "{language:<30} {:>9.1} {:>11.0} {:>12.1} {:>10.2} ms {alone:>15.0} {pipeline:>15}",
            size as f64 / 1e6,
            compile.as_secs_f64() * 1e3,
            cached_ms.as_secs_f64() * 1e3,
            instantiate.as_secs_f64() * 1e3,
        );
    }
    println!(
        "compile: Module::load without a cache; cached: from <state.dir>/@compiled; instantiate: instance + init \
         (median of 5); sentences/s: the component alone, RocksDB state; pipeline: the host on the broker, 1 partition, \
         at_least_once, 1000 ms, ~3 s of input"
    );
    bootstrap.map_or(Ok(()), |b| crate::kafka::delete_own_topics(b, &[]))
}

/// Sentences/s of the word count as a pipeline: first input to last processed.
fn pipeline_rate(
    bootstrap: &str,
    module: &Module,
    path: &std::path::Path,
    name: &str,
    inputs: &[(Vec<u8>, Vec<u8>)],
    state: &std::path::Path,
) -> anyhow::Result<f64> {
    let input = unique(&format!("lang-{name}-in"));
    let output = unique(&format!("lang-{name}-out"));
    create_topic(bootstrap, &input, 1)?;
    create_topic(bootstrap, &output, 1)?;
    produce(bootstrap, &input, inputs.iter().cloned())?;
    let cfg = parse_config(&format!(
        "application.id = {:?}\nbootstrap.servers = {bootstrap:?}\ncommit.interval.ms = 1000\nstate.dir = {:?}\n\
         [processor]\nmodule = {:?}\ninputs = [{input:?}]\noutputs = [{output:?}]\n",
        unique(name),
        state.display().to_string(),
        std::path::absolute(path)?.display().to_string(),
    ))?;
    let progress = Progress::default();
    let shutdown = Shutdown::new();
    let n = inputs.len() as u64;
    std::thread::scope(|s| {
        let worker = s.spawn(|| pipeline::run_with_module(&cfg, module.clone(), &shutdown, &progress));
        let deadline = Instant::now() + Duration::from_secs(600);
        let wait = |done: &dyn Fn() -> bool| -> anyhow::Result<Instant> {
            while !done() {
                anyhow::ensure!(!worker.is_finished() && Instant::now() < deadline, "{name}: the pipeline ended early");
                std::thread::sleep(Duration::from_micros(500));
            }
            Ok(Instant::now())
        };
        let result = (|| {
            let t0 = wait(&|| progress.records() > 0)?;
            let t1 = wait(&|| progress.records() >= n)?;
            Ok(n as f64 / t1.duration_since(t0).as_secs_f64().max(1e-3))
        })();
        shutdown.trigger();
        worker.join().map_err(|_| anyhow::anyhow!("benchmark thread panicked"))??;
        result
    })
}
