//! One task per input partition: its processor instance, its state, its
//! position, and the checkpoint that ties them together.
//!
//! Owns the per-record path (fill the input record, call the guest, route and
//! send the outputs, advance the position) and the checkpoint of one task
//! (snapshot the guest, commit state + snapshot + offsets in one batch). It
//! does not poll Kafka, decide when the interval is up, or wait for output
//! acknowledgements: `pipeline` does, and calls [`Task::checkpoint`] only
//! after the sink is flushed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Headers};

use crate::checkpoint::Checkpoint;
use crate::config::ProcessingGuarantee;
use crate::guest::{GuestError, Header, InputRecord, Instance, Module};
use crate::sink::{Sink, SinkError};
use crate::state::{CommitStats, StateError, TaskStore, task_dir};

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {partition}: {source}")]
    State { partition: i32, source: StateError },
    #[error("task {partition}: restoring the checkpoint failed: {source}")]
    Restore { partition: i32, source: GuestError },
    #[error("task {partition}: {source}")]
    Guest { partition: i32, source: GuestError },
    #[error("record {topic}/{partition}@{offset}: processor {source}")]
    Record { topic: String, partition: i32, offset: i64, source: GuestError },
    #[error("record {topic}/{partition}@{offset}: processor returned an output for topic `{target}`, which is not among processor.outputs {outputs:?}")]
    UnknownOutput { topic: String, partition: i32, offset: i64, target: String, outputs: Vec<String> },
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// What a task needs from its host, shared by every task.
#[derive(Debug)]
pub struct TaskEnv {
    pub module: Module,
    pub app_state_dir: std::path::PathBuf,
    pub guest_config: Vec<(String, String)>,
    pub guarantee: ProcessingGuarantee,
    pub application_id: String,
}

/// One checkpoint of one task, for the log lines.
#[derive(Debug, Clone)]
pub struct CheckpointReport {
    pub partition: i32,
    pub number: u64,
    pub offsets: BTreeMap<String, i64>,
    pub stats: CommitStats,
    pub snapshot_bytes: usize,
}

pub struct Task {
    pub partition: i32,
    instance: Instance,
    /// Input topic → next offset to process.
    positions: BTreeMap<String, i64>,
    /// Number of the last checkpoint (0: none yet).
    checkpoint_number: u64,
    /// Records processed since the last checkpoint.
    pending: u64,
    /// The input record handed to the guest, reused so that its buffers are
    /// allocated once, not per record.
    scratch: InputRecord,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task").field("partition", &self.partition).field("positions", &self.positions).finish()
    }
}

impl Task {
    /// Opens the task's store, instantiates the processor and restores the last
    /// checkpoint. Returns the task and the offsets to seek the inputs to.
    pub fn open(env: &TaskEnv, partition: i32) -> Result<Task, TaskError> {
        let started = Instant::now();
        let dir = task_dir(&env.app_state_dir, partition);
        // Under `none` there is no checkpoint protocol: state is written through
        // and the group's committed offsets say where to resume.
        let checkpointed = env.guarantee != ProcessingGuarantee::None;
        let (store, mut restored) =
            TaskStore::open(&dir, !checkpointed).map_err(|source| TaskError::State { partition, source })?;
        if !checkpointed {
            restored = Default::default();
        }
        let label: Arc<str> = format!("{}/task-{partition}", env.application_id).into();
        let mut instance = env
            .module
            .instantiate(store, label, &env.guest_config)
            .map_err(|source| TaskError::Guest { partition, source })?;
        let (positions, checkpoint_number) = match &restored.checkpoint {
            Some(c) => {
                instance.restore(&restored.snapshot).map_err(|source| TaskError::Restore { partition, source })?;
                if c.module_digest != env.module.digest {
                    tracing::warn!(
                        "task {partition}: checkpoint {} was written by module {}, restoring into {}",
                        c.number,
                        short(&c.module_digest),
                        short(&env.module.digest)
                    );
                }
                tracing::info!(
                    "task {partition}: restored checkpoint {} (offsets {}, snapshot {} B) in {} ms",
                    c.number,
                    show_offsets(&c.offsets),
                    restored.snapshot.len(),
                    started.elapsed().as_millis()
                );
                (c.offsets.clone(), c.number)
            }
            None => {
                tracing::info!("task {partition}: no checkpoint in {}, starting fresh", dir.display());
                (BTreeMap::new(), 0)
            }
        };
        Ok(Task {
            partition,
            instance,
            positions,
            checkpoint_number,
            pending: 0,
            scratch: InputRecord {
                topic: String::new(),
                partition,
                offset: 0,
                timestamp: None,
                key: None,
                value: None,
                headers: Vec::new(),
            },
        })
    }

    /// The offsets the task resumes from (input topics it has a checkpoint for).
    pub fn positions(&self) -> &BTreeMap<String, i64> {
        &self.positions
    }

    /// Whether anything happened since the last checkpoint.
    pub fn is_dirty(&self) -> bool {
        self.pending > 0
    }

    /// Bytes of state written since the last checkpoint.
    pub fn dirty_state_bytes(&mut self) -> usize {
        self.instance.store().dirty_bytes()
    }

    /// Runs the processor on one record and sends its outputs. Records before
    /// the task's position (a replay after a seek) are skipped.
    pub fn process(&mut self, msg: &BorrowedMessage<'_>, sink: &Sink) -> Result<bool, TaskError> {
        let topic = msg.topic();
        let offset = msg.offset();
        if self.positions.get(topic).is_some_and(|&next| offset < next) {
            return Ok(false);
        }
        fill(&mut self.scratch, msg);
        let outputs = self.instance.process(&self.scratch).map_err(|source| TaskError::Record {
            topic: topic.to_string(),
            partition: self.partition,
            offset,
            source,
        })?;
        let input_ts = self.scratch.timestamp;
        for out in &outputs {
            let Some(target) = sink.route(out) else {
                return Err(TaskError::UnknownOutput {
                    topic: topic.to_string(),
                    partition: self.partition,
                    offset,
                    target: out.topic.clone().unwrap_or_default(),
                    outputs: sink.outputs().to_vec(),
                });
            };
            sink.send(target, out, input_ts)?;
        }
        match self.positions.get_mut(topic) {
            Some(p) => *p = offset + 1,
            None => drop(self.positions.insert(topic.to_string(), offset + 1)),
        }
        self.pending += 1;
        Ok(true)
    }

    /// Takes a checkpoint: the guest's snapshot, the dirty state and the
    /// positions, in one atomic write. The caller has made sure every output
    /// sent so far is acknowledged.
    pub fn checkpoint(&mut self, module_digest: &str) -> Result<CheckpointReport, TaskError> {
        let partition = self.partition;
        let snapshot = self.instance.snapshot().map_err(|source| TaskError::Guest { partition, source })?;
        let number = self.checkpoint_number + 1;
        let checkpoint = Checkpoint::new(number, self.positions.clone(), module_digest.to_string());
        let stats = self
            .instance
            .store()
            .commit(&checkpoint, &snapshot)
            .map_err(|source| TaskError::State { partition, source })?;
        self.checkpoint_number = number;
        self.pending = 0;
        Ok(CheckpointReport { partition, number, offsets: checkpoint.offsets, stats, snapshot_bytes: snapshot.len() })
    }

    /// Under `processing.guarantee = none`: forget the interval's bookkeeping
    /// (state was written through already).
    pub fn mark_clean(&mut self) {
        self.pending = 0;
    }
}

/// Copies a Kafka message into the reused input record, reusing its buffers.
fn fill(rec: &mut InputRecord, msg: &BorrowedMessage<'_>) {
    if rec.topic != msg.topic() {
        rec.topic.clear();
        rec.topic.push_str(msg.topic());
    }
    rec.offset = msg.offset();
    rec.timestamp = msg.timestamp().to_millis();
    copy_into(&mut rec.key, msg.key());
    copy_into(&mut rec.value, msg.payload());
    rec.headers.clear();
    if let Some(headers) = msg.headers() {
        for h in headers.iter() {
            rec.headers.push(Header { key: h.key.to_string(), value: h.value.map(<[u8]>::to_vec) });
        }
    }
}

fn copy_into(dst: &mut Option<Vec<u8>>, src: Option<&[u8]>) {
    match (dst.as_mut(), src) {
        (Some(d), Some(s)) => {
            d.clear();
            d.extend_from_slice(s);
        }
        (None, Some(s)) => *dst = Some(s.to_vec()),
        (_, None) => *dst = None,
    }
}

/// The first 12 hex digits of a digest, for log lines.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

pub fn show_offsets(offsets: &BTreeMap<String, i64>) -> String {
    let parts: Vec<String> = offsets.iter().map(|(t, o)| format!("{t}@{o}")).collect();
    if parts.is_empty() { "none".into() } else { parts.join(", ") }
}
