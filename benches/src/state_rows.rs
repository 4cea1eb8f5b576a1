//! The state rows: a 1M-key checkpoint taken while processing, a restart on
//! local state and a rebuild from the changelog.

use std::time::{Duration, Instant};

use wasmstream::guest::Module;
use wasmstream::{Progress, Shutdown, pipeline};

use crate::kafka::{create_topic, produce};
use crate::throughput::{Args, KEYS, config_text, kv, parse_config, unique};

/// The state rows, on their own input: 1,200,000 key/value records (the
/// first 1,000,000 of distinct keys). The per-key count runs over it with a
/// long interval and a cache that fills at exactly 1,000,000 dirty keys, so
/// one checkpoint of all of them is taken while processing, and the last
/// 200,000 records are processed while it is written: its total time (cut
/// to RocksDB) and the processing stall are measured by the host. Then the
/// host restarts on its local state, then again with the state directory
/// deleted (rebuilt from the changelog). Each restart gets one new record
/// and is timed to its first processed record.
pub(crate) struct StateRun {
    pub(crate) checkpoint_keys: u64,
    pub(crate) checkpoint: Duration,
    /// From the cut until the checkpoint's changelog records were all
    /// queued, until its RocksDB records (a table, for 1M keys) were built
    /// beside them, and until the changelog had acknowledged them with the
    /// marker; the RocksDB write takes the rest.
    pub(crate) queued: Duration,
    pub(crate) built: Duration,
    pub(crate) acknowledged: Duration,
    pub(crate) stall: Duration,
    pub(crate) restart: Duration,
    pub(crate) rebuild: Duration,
}

pub(crate) fn state_run(
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
    let module = Module::load(engine, &cfg.processor.module, cfg.processor.max_memory_bytes, None)?;
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
    let phase =
        |d: Option<Duration>| d.ok_or_else(|| anyhow::anyhow!("the at-least-once checkpoint reported no phases"));
    Ok(StateRun {
        checkpoint_keys: largest.keys,
        checkpoint: largest.total,
        queued: phase(largest.queued)?,
        built: phase(largest.built)?,
        acknowledged: phase(largest.acknowledged)?,
        stall: largest.stall,
        restart,
        rebuild,
    })
}
