//! The `wasmstream` command: a thin CLI over the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use wasmstream::{Shutdown, admin, checkpoint, config, demo, pipeline};

#[derive(Parser)]
#[command(
    name = "wasmstream",
    version,
    about = "Runs stream processors compiled to WebAssembly components between Kafka topics, with checkpointed state."
)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or tracing directives
    /// such as `info,wasmstream::state=debug`. RUST_LOG is used if set.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the application described by a config file until SIGINT or SIGTERM,
    /// which take a final checkpoint and exit 0.
    Run {
        /// The TOML config file (see `wasmstream config-keys`).
        #[arg(long, short)]
        config: PathBuf,
        /// Override or add a config key, e.g. `--set commit.interval.ms=1000`
        /// or `--set kafka.linger.ms=10`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Check a config file and its module without connecting to Kafka.
    Check {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Run the word-count example on an in-process Kafka broker: feeds sample
    /// text, prints the counts and checkpoints, stops cleanly, restarts from
    /// the checkpoint with more text. Needs no external services.
    Demo {
        /// The word-count component (built by `scripts/build-guests`).
        #[arg(long, default_value = demo::DEFAULT_MODULE)]
        module: PathBuf,
    },
    /// Replace the processor of a running host (`wasmstream run` with the same
    /// config) without stopping it: the new module is compiled while the
    /// pipeline runs; at the next record boundary every task checkpoints and
    /// hands its snapshot to the new module's `restore`. If anything fails,
    /// up to and including the new module's first batch, every task goes on
    /// with the old module from that checkpoint. Exits 0 once every task runs
    /// the new module, 1 with the reason otherwise. A restart keeps the new
    /// module until processor.module changes.
    Swap {
        /// The config file of the running host (its state.dir and
        /// application.id say where it listens).
        #[arg(long, short)]
        config: PathBuf,
        /// Override a config key, as for `run`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// The new processor component (.wasm).
        #[arg(long, short)]
        module: PathBuf,
        /// How long to wait for the outcome, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Show what a running host (`wasmstream run` with the same config) is
    /// doing: its module, tasks, records, checkpoints and last hot swap.
    Status {
        /// The config file of the running host.
        #[arg(long, short)]
        config: PathBuf,
        /// Override a config key, as for `run`. Repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Inspect checkpoints.
    Checkpoint {
        #[command(subcommand)]
        command: CheckpointCommand,
    },
    /// List every config key, its default and its meaning.
    ConfigKeys,
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Print each task's last checkpoint under the application's state dir:
    /// number, input offsets, module digest, keys, snapshot size.
    Inspect {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let result = match cli.command {
        Command::Run { config, overrides } => run(&config, &overrides),
        Command::Check { config, overrides } => check(&config, &overrides),
        Command::Swap { config, overrides, module, timeout } => swap(&config, &overrides, &module, timeout),
        Command::Status { config, overrides } => status(&config, &overrides),
        Command::Demo { module } => demo::run(&module).map_err(anyhow::Error::from),
        Command::Checkpoint { command: CheckpointCommand::Inspect { config, overrides } } => {
            inspect(&config, &overrides)
        }
        Command::ConfigKeys => {
            print!("{}", config::describe_keys());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, causes included (once: most messages already name theirs).
            let mut line = e.to_string();
            for cause in e.chain().skip(1) {
                let cause = cause.to_string();
                if !line.contains(&cause) {
                    line.push_str(": ");
                    line.push_str(&cause);
                }
            }
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let filter = std::env::var("RUST_LOG").ok().unwrap_or_else(|| level.to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

fn run(path: &std::path::Path, overrides: &[String]) -> anyhow::Result<()> {
    let config = config::load(path, overrides)?;
    let shutdown = Shutdown::new();
    let worker = {
        let shutdown = shutdown.clone();
        std::thread::Builder::new()
            .name("wasmstream-tasks".into())
            .spawn(move || pipeline::run(&config, &shutdown))
            .context("cannot start the processing thread")?
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(wait_for_stop(&shutdown, &worker))?;
    let summary = worker.join().map_err(|_| anyhow::anyhow!("the processing thread panicked"))??;
    tracing::debug!("{summary:?}");
    Ok(())
}

/// Triggers `shutdown` on the first SIGINT/SIGTERM; a second one exits at once.
async fn wait_for_stop(
    shutdown: &Shutdown,
    worker: &std::thread::JoinHandle<Result<wasmstream::RunSummary, wasmstream::PipelineError>>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = tick.tick() => {
                if worker.is_finished() { return Ok(()); }
                continue;
            }
        }
        if shutdown.is_triggered() {
            eprintln!("second signal: exiting without a final checkpoint");
            std::process::exit(130);
        }
        tracing::info!("signal received: stopping gracefully (send it again to exit at once)");
        shutdown.trigger();
    }
}

fn check(path: &std::path::Path, overrides: &[String]) -> anyhow::Result<()> {
    let config = config::load(path, overrides)?;
    let engine = wasmstream::guest::engine()?;
    let cache = config.compile_cache();
    let module = wasmstream::guest::Module::load(
        &engine,
        &config.processor.module,
        config.processor.max_memory_bytes,
        Some(&cache),
    )?;
    println!(
        "{}: OK; application.id = {}, processing.guarantee = {}, module {} (sha256 {}) implements {}",
        config.origin(),
        config.application_id,
        config.processing_guarantee,
        module.path.display(),
        module.digest,
        module.world()
    );
    Ok(())
}

fn swap(path: &std::path::Path, overrides: &[String], module: &std::path::Path, timeout: u64) -> anyhow::Result<()> {
    let config = config::load(path, overrides)?;
    let module = std::fs::canonicalize(module).with_context(|| format!("cannot read module {}", module.display()))?;
    let addr = admin::find(&config)?;
    eprintln!("asking the host at {addr} to swap in {} ...", module.display());
    let body = serde_json::json!({ "module": module });
    let (_, answer) =
        admin::request(&addr, "POST", "/swap", Some(&body), std::time::Duration::from_secs(timeout.max(1)))?;
    let text = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    match text("outcome").as_str() {
        "completed" => {
            let paused: Vec<String> = answer["paused_ms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| format!("task {} {:.2} ms", p[0], p[1].as_f64().unwrap_or(0.0)))
                .collect();
            println!(
                "swapped: every task runs {} (sha256 {}); compiled in {:.0} ms while processing went on; processing paused {:.1} ms in all ({})",
                text("module"),
                text("digest"),
                answer["compile_ms"].as_f64().unwrap_or(0.0),
                answer["stall_ms"].as_f64().unwrap_or(0.0),
                paused.join(", ")
            );
            if answer["tried"].as_bool() == Some(false) {
                println!("note: no record arrived to try the new module on before this answer");
            }
            if let Some(w) = answer["warning"].as_str() {
                println!("warning: {w}");
            }
            Ok(())
        }
        "rolled_back" => anyhow::bail!("rolled back: every task runs {} again. {}", text("module"), text("reason")),
        "refused" => anyhow::bail!("refused: {}", text("reason")),
        _ => anyhow::bail!("unexpected answer from the host: {answer}"),
    }
}

fn status(path: &std::path::Path, overrides: &[String]) -> anyhow::Result<()> {
    let config = config::load(path, overrides)?;
    let addr = admin::find(&config)?;
    let (_, answer) = admin::request(&addr, "GET", "/status", None, std::time::Duration::from_secs(10))?;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(())
}

fn inspect(path: &std::path::Path, overrides: &[String]) -> anyhow::Result<()> {
    let config = config::load(path, overrides)?;
    let dir = config.app_state_dir();
    let tasks = checkpoint::inspect(&dir)?;
    if tasks.is_empty() {
        println!("no task state under {}", dir.display());
    }
    for t in tasks {
        match t.checkpoint {
            None => println!("task {}: no checkpoint", t.partition),
            Some(c) => println!(
                "task {}: checkpoint {} at {}; changelog offset {}; module {}; {} keys; snapshot {} B; taken at {} ms since epoch",
                t.partition,
                c.number,
                wasmstream::task::show_offsets(&c.offsets),
                c.changelog_offset.map_or_else(|| "none".to_string(), |o| o.to_string()),
                c.module_digest,
                t.state.len(),
                t.snapshot.len(),
                c.taken_at_ms
            ),
        }
    }
    Ok(())
}
