//! `wasmstream-bench`: the benchmark command (not a test).
//!
//! - `pipeline`: records/s on a real Kafka broker for a plain rdkafka
//!   consume→produce loop with no WASM (the physical limit here), the
//!   stateless WASM map (`examples/uppercase`), the per-key count and the
//!   word count (`examples/wordcount`) beside Kafka Streams', in one run,
//!   with the ratios to the plain loop (`throughput`); the state rows
//!   (`state_rows`) and the memory row (`memory`).
//! - `micro`: the guest call alone, no Kafka: ns per record through the
//!   product's own path, and one call per record vs. one call per batch of 64.
//! - `languages`: the word count in every guest language: size, compile,
//!   instantiate, sentences/s alone and (with `--bootstrap`) as a pipeline.
//! - `swap`: hot swaps of a running word count: the pause per task and the
//!   whole stall of processing per swap.
//!
//! `scripts/bench` builds everything in release mode, starts a broker and runs both.

mod kafka;
mod kstreams;
mod languages;
mod memory;
mod micro;
mod state_rows;
mod swap;
mod throughput;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wasmstream-bench",
    about = "wasmstream benchmarks: throughput on a real broker, and the guest call alone"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Records/s on a real broker: plain loop, stateless WASM map, word count.
    Pipeline(throughput::Args),
    /// The guest call alone (no Kafka): per record vs. per batch of 64.
    Micro(micro::Args),
    /// The word count in every guest language: size, compile, instantiate, speed.
    Languages(languages::Args),
    /// Hot swap under load: per-task pause and whole stall per swap.
    Swap(swap::Args),
}

fn main() -> anyhow::Result<()> {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Pipeline(a) => throughput::run(&a),
        Command::Micro(a) => micro::run(&a),
        Command::Languages(a) => languages::run(&a),
        Command::Swap(a) => swap::run(&a),
    }
}
