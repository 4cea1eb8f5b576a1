//! wasmstream: Kafka in, a WebAssembly component per partition, Kafka out,
//! with state and checkpoints owned by the host.
//!
//! Layout, in the order a record flows:
//! - [`config`]: the TOML file (Kafka Streams names), defaults, validation.
//! - [`source`]: the consumer, group membership, rebalances (tasks are created
//!   on assignment, seeked to their checkpoint).
//! - [`pipeline`]: the loop of one host: poll, process, checkpoint, stop.
//! - [`tasks`]: every task of a host and the checkpoint protocol across them.
//! - [`task`]: one per input partition: guest instance, position, checkpoint.
//! - [`checkpointer`]: the thread that finishes checkpoints off the loop.
//! - [`guest`]: wasmtime: the component, its bindings, limits, instances.
//! - [`compiled`]: compiled components cached on disk across restarts.
//! - [`state`]: write-back cache over RocksDB; atomic checkpoint commits.
//! - [`checkpoint`]: the checkpoint record and inspecting a state directory.
//! - [`changelog`]: the compacted changelog topic: format, creation, replay.
//! - [`sink`]: the producer and delivery tracking.
//! - [`demo`]: the word-count demo on an in-process broker.
//! - [`shutdown`]: the graceful stop signal.
//!
//! `main.rs` is a thin CLI over [`pipeline::run`].

pub mod admin;
pub mod changelog;
pub mod checkpoint;
pub mod checkpointer;
pub mod compiled;
pub mod config;
pub mod demo;
pub mod guest;
mod kafka;
pub mod pipeline;
mod sched;
pub mod shutdown;
pub mod sink;
pub mod source;
pub mod state;
pub mod swap;
pub mod task;
pub mod tasks;

pub use config::{Config, ProcessingGuarantee};
pub use pipeline::{PipelineError, Progress, RunSummary, run, run_with_progress};
pub use shutdown::Shutdown;
