//! The processing loop of one host: poll, process, checkpoint, stop.
//!
//! Owns the order of things, which is where the guarantees come from:
//! outputs are acknowledged before a checkpoint is written (at-least-once);
//! the checkpoint is written before the offsets are committed to Kafka (so a
//! restart never skips input); a graceful stop checkpoints every task before
//! leaving; a failure checkpoints nothing, so a restart replays the interval.
//! It runs on one thread; signals reach it through [`Shutdown`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::changelog;
use crate::config::{Config, ProcessingGuarantee};
use crate::guest::{self, GuestError, Module};
use crate::shutdown::Shutdown;
use crate::sink::{Sink, SinkError};
use crate::source::{self, SourceContext};
use crate::task::{ChangelogEnv, CheckpointReport, PendingCheckpoint, Task, TaskEnv, TaskError, short, show_offsets};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("{what} failed: {source}")]
    Kafka { what: &'static str, source: KafkaError },
    #[error("{role} topic `{topic}` does not exist on {bootstrap}; create it first")]
    MissingTopic { role: &'static str, topic: String, bootstrap: String },
    #[error("input topics must have the same number of partitions (task N reads partition N of each): {0:?}")]
    NotCoPartitioned(Vec<(String, usize)>),
    #[error("cannot create the state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Task(Box<TaskError>),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Changelog(#[from] changelog::ChangelogError),
    #[error(
        "the transaction failed {times} times in a row, each time rolled back to the last checkpoint; stopping. Last failure: {cause}"
    )]
    RolledBack { times: u32, cause: Box<SinkError> },
    #[error(
        "this host was fenced: another instance of application `{application_id}` took over its partitions or its transactional id; stopping without a checkpoint: {cause}"
    )]
    Fenced { application_id: String, cause: String },
}

impl From<TaskError> for PipelineError {
    fn from(e: TaskError) -> Self {
        PipelineError::Task(Box::new(e))
    }
}

/// How a run ended.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub records: u64,
    pub checkpoints: u64,
}

/// Live figures of a running pipeline, for whoever watches it (the demo,
/// benchmarks, later an admin endpoint). Updated every few dozen records and
/// whenever the loop is idle, so it lags by at most a poll interval.
#[derive(Debug, Default)]
pub struct Progress {
    records: AtomicU64,
    checkpoints: AtomicU64,
}

impl Progress {
    /// Records processed by this run.
    pub fn records(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }

    /// Checkpoint rounds taken by this run.
    pub fn checkpoints(&self) -> u64 {
        self.checkpoints.load(Ordering::Acquire)
    }

    fn publish(&self, tasks: &Tasks) {
        self.records.store(tasks.records, Ordering::Release);
        self.checkpoints.store(tasks.checkpoints, Ordering::Release);
    }
}

/// Why a checkpoint is taken (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Interval,
    CacheFull,
    Revoke,
    Shutdown,
}

/// Every task of this host, and what they share.
pub struct Tasks {
    env: TaskEnv,
    sink: Sink,
    guarantee: ProcessingGuarantee,
    cache_max_bytes: usize,
    by_partition: BTreeMap<i32, Task>,
    /// A failure inside a rebalance callback, reported by the loop.
    fatal: Option<PipelineError>,
    /// A task's dirty state outgrew `statestore.cache.max.bytes`.
    cache_full: bool,
    /// Exactly-once rollbacks since the last committed transaction.
    rollbacks: u32,
    records: u64,
    checkpoints: u64,
    summary: Summary,
}

impl Tasks {
    fn new(env: TaskEnv, sink: Sink, config: &Config) -> Self {
        Tasks {
            env,
            sink,
            guarantee: config.processing_guarantee,
            cache_max_bytes: usize::try_from(config.cache_max_bytes).unwrap_or(usize::MAX),
            by_partition: BTreeMap::new(),
            fatal: None,
            cache_full: false,
            rollbacks: 0,
            records: 0,
            checkpoints: 0,
            summary: Summary::new(),
        }
    }

    /// Records a failure from a callback; the loop stops on it.
    pub fn fail(&mut self, e: PipelineError) {
        tracing::error!("{e}");
        self.fatal.get_or_insert(e);
    }

    /// Creates the task of `partition` (restoring its checkpoint) and returns the
    /// offsets its inputs resume from.
    pub fn assign(&mut self, partition: i32) -> Result<BTreeMap<String, i64>, PipelineError> {
        if self.fatal.is_some() {
            return Ok(BTreeMap::new());
        }
        if let Some(task) = self.by_partition.get(&partition) {
            return Ok(task.positions().clone());
        }
        let task = Task::open(&self.env, partition, &mut self.sink)?;
        let positions = task.positions().clone();
        self.by_partition.insert(partition, task);
        Ok(positions)
    }

    /// Checkpoints and drops the tasks of revoked partitions.
    pub fn revoke(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        partitions: &BTreeSet<i32>,
    ) -> Result<(), PipelineError> {
        if self.fatal.is_none() {
            self.checkpoint(consumer, Reason::Revoke, Some(partitions))?;
        }
        self.by_partition.retain(|p, _| !partitions.contains(p));
        Ok(())
    }

    /// Hands one record to its task's batch (which may process the batch).
    fn enqueue(
        &mut self,
        msg: &BorrowedMessage<'_>,
        consumer: &BaseConsumer<SourceContext>,
    ) -> Result<(), PipelineError> {
        let partition = msg.partition();
        let Some(task) = self.by_partition.get_mut(&partition) else {
            // Fetched before a revoke took effect: the next owner processes it.
            return Ok(());
        };
        let r = task.enqueue(msg, &mut self.sink);
        self.processed(partition, r, consumer)
    }

    /// Whether any task has records waiting for the guest.
    fn has_batches(&self) -> bool {
        self.by_partition.values().any(Task::has_batch)
    }

    /// Processes every task's waiting batch.
    fn flush_batches(&mut self, consumer: &BaseConsumer<SourceContext>) -> Result<(), PipelineError> {
        let waiting: Vec<i32> = self.by_partition.iter().filter(|(_, t)| t.has_batch()).map(|(p, _)| *p).collect();
        for p in waiting {
            let Some(task) = self.by_partition.get_mut(&p) else { continue };
            let r = task.flush(&mut self.sink);
            self.processed(p, r, consumer)?;
        }
        Ok(())
    }

    /// Bookkeeping after a task processed `r` records.
    fn processed(
        &mut self,
        partition: i32,
        r: Result<u64, TaskError>,
        consumer: &BaseConsumer<SourceContext>,
    ) -> Result<(), PipelineError> {
        let n = match r {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // Under exactly-once a failed send poisons only the transaction.
            Err(TaskError::Sink(e)) if self.guarantee == ProcessingGuarantee::ExactlyOnce && !e.is_fatal() => {
                return self.rollback(consumer, e);
            }
            Err(e) => return Err(e.into()),
        };
        self.records += n;
        let Some(task) = self.by_partition.get_mut(&partition) else { return Ok(()) };
        match self.guarantee {
            ProcessingGuarantee::None => {
                for (topic, next) in task.positions() {
                    // librdkafka stores `offset + 1`: the next record to read.
                    consumer
                        .store_offset(topic, partition, next - 1)
                        .map_err(|source| PipelineError::Kafka { what: "storing the consumed offset", source })?;
                }
            }
            _ => {
                if task.dirty_state_bytes() > self.cache_max_bytes {
                    self.cache_full = true;
                }
            }
        }
        Ok(())
    }

    /// Checkpoints the dirty tasks (of `only`, if given; under exactly-once
    /// always all, as one transaction spans them).
    fn checkpoint(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        reason: Reason,
        only: Option<&BTreeSet<i32>>,
    ) -> Result<(), PipelineError> {
        // What was fetched before the checkpoint is processed before it.
        self.flush_batches(consumer)?;
        self.cache_full = false;
        let only = if self.guarantee == ProcessingGuarantee::ExactlyOnce { None } else { only };
        let selected = |p: &i32| only.is_none_or(|o| o.contains(p));
        let dirty: Vec<i32> =
            self.by_partition.iter().filter(|(p, t)| selected(p) && t.is_dirty()).map(|(p, _)| *p).collect();
        if dirty.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let reports = match self.guarantee {
            ProcessingGuarantee::None => {
                self.sink.flush()?;
                for t in self.by_partition.values_mut() {
                    t.mark_clean();
                }
                return Ok(());
            }
            ProcessingGuarantee::AtLeastOnce => self.checkpoint_at_least_once(consumer, &dirty, reason)?,
            ProcessingGuarantee::ExactlyOnce => match self.checkpoint_exactly_once(consumer, &dirty)? {
                Some(reports) => reports,
                None => return Ok(()), // rolled back
            },
        };
        self.checkpoints += 1;
        self.summary.add(&reports, self.records, started.elapsed(), reason);
        Ok(())
    }

    /// At-least-once: outputs acknowledged, then the changelog appended and
    /// acknowledged, then RocksDB, then the advisory group commit.
    fn checkpoint_at_least_once(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        dirty: &[i32],
        reason: Reason,
    ) -> Result<Vec<CheckpointReport>, PipelineError> {
        // Before any changelog record: a checkpoint the changelog holds
        // complete must never stand for outputs that were not delivered.
        self.sink.flush()?;
        let mut pending = Vec::with_capacity(dirty.len());
        for p in dirty {
            let task = self.by_partition.get_mut(p).expect("dirty tasks exist");
            pending.push((
                *p,
                task.prepare_checkpoint(&self.env.module.digest, self.env.changelog.as_ref(), &mut self.sink)?,
            ));
        }
        self.sink.flush()?;
        let reports = self.commit_local(pending)?;
        // Advisory copy of the checkpointed offsets; the final one is waited for.
        let mode = if reason == Reason::Shutdown { CommitMode::Sync } else { CommitMode::Async };
        if let Err(e) = consumer.commit(&offsets(&reports), mode) {
            tracing::warn!("committing checkpointed offsets to the group failed (they are safe locally): {e}");
        }
        Ok(reports)
    }

    /// Exactly-once: the changelog records and the input offsets join the
    /// interval's transaction; once it commits, RocksDB. A transaction that
    /// fails is aborted and every task rolled back (`None`).
    fn checkpoint_exactly_once(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        dirty: &[i32],
    ) -> Result<Option<Vec<CheckpointReport>>, PipelineError> {
        let mut pending = Vec::with_capacity(dirty.len());
        let mut tpl = TopicPartitionList::new();
        let mut sent = Ok(());
        for p in dirty {
            let task = self.by_partition.get_mut(p).expect("dirty tasks exist");
            for (topic, offset) in task.positions() {
                let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(*offset));
            }
            match task.prepare_checkpoint(&self.env.module.digest, self.env.changelog.as_ref(), &mut self.sink) {
                Ok(pc) => pending.push((*p, pc)),
                Err(TaskError::Sink(e)) => {
                    sent = Err(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        let committed = sent.and_then(|()| {
            let group = consumer.group_metadata().ok_or(SinkError::Transaction {
                what: "reading the consumer group metadata",
                source: KafkaError::NoMessageReceived,
            })?;
            self.sink.commit_transaction(&tpl, &group)
        });
        match committed {
            Ok(()) => {
                self.rollbacks = 0;
                Ok(Some(self.commit_local(pending)?))
            }
            Err(e) if !e.is_fatal() => {
                self.rollback(consumer, e)?;
                Ok(None)
            }
            Err(e) if e.is_fenced() => {
                Err(PipelineError::Fenced { application_id: self.env.application_id.clone(), cause: e.to_string() })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The second half of every dirty task's checkpoint: RocksDB.
    fn commit_local(&mut self, pending: Vec<(i32, PendingCheckpoint)>) -> Result<Vec<CheckpointReport>, PipelineError> {
        let mut reports = Vec::with_capacity(pending.len());
        for (p, pc) in pending {
            let marker = self.sink.marker_offset(p);
            let task = self.by_partition.get_mut(&p).expect("dirty tasks exist");
            let report = task.commit_checkpoint(pc, marker)?;
            tracing::debug!(
                "task {p}: checkpoint {} at {}: {} keys written, {} deleted, snapshot {} B, changelog offset {marker:?}",
                report.number,
                show_offsets(&report.offsets),
                report.stats.keys_written,
                report.stats.keys_deleted,
                report.snapshot_bytes
            );
            reports.push(report);
        }
        Ok(reports)
    }

    /// Exactly-once: aborts the open transaction and puts every task back at
    /// its last checkpoint (fresh instance, restored snapshot, inputs seeked).
    /// A failure that repeats (the same record failing again) stops the host
    /// after [`MAX_ROLLBACKS`] rollbacks in a row instead of looping.
    fn rollback(&mut self, consumer: &BaseConsumer<SourceContext>, cause: SinkError) -> Result<(), PipelineError> {
        self.sink.abort_transaction()?;
        self.rollbacks += 1;
        if self.rollbacks >= MAX_ROLLBACKS {
            return Err(PipelineError::RolledBack { times: self.rollbacks, cause: Box::new(cause) });
        }
        tracing::warn!(
            "transaction failed ({cause}); aborted it and rolling every task back to its last checkpoint ({} of {MAX_ROLLBACKS} in a row)",
            self.rollbacks
        );
        for (p, task) in std::mem::take(&mut self.by_partition) {
            let task = task.reopen(&self.env)?;
            for (topic, offset) in task.positions() {
                consumer.seek(topic, p, Offset::Offset(*offset), Duration::from_secs(10)).map_err(|source| {
                    // A consumer fenced out of its group can no longer seek:
                    // that, not the seek, is what to report.
                    match consumer.client().fatal_error() {
                        Some((_, cause)) => {
                            PipelineError::Fenced { application_id: self.env.application_id.clone(), cause }
                        }
                        None => PipelineError::Kafka { what: "seeking back to the checkpoint", source },
                    }
                })?;
            }
            self.by_partition.insert(p, task);
        }
        Ok(())
    }

    /// Drops every task without a checkpoint (after a failure): their dirty
    /// state is discarded and a restart replays from the last checkpoint.
    fn abandon(&mut self) {
        self.by_partition.clear();
    }
}

/// The checkpointed offsets of these reports, for the group.
fn offsets(reports: &[CheckpointReport]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for r in reports {
        for (topic, offset) in &r.offsets {
            let _ = tpl.add_partition_offset(topic, r.partition, Offset::Offset(*offset));
        }
    }
    tpl
}

/// Aggregates checkpoints into info-level lines: one per checkpoint when the
/// interval is long, at most one every few seconds when it is short.
struct Summary {
    /// When the last line was written; `None` before the first one.
    last_line: Option<Instant>,
    started: Instant,
    last_records: u64,
    rounds: u64,
    keys: u64,
    snapshot_bytes: usize,
    busiest: Duration,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(5);

impl Summary {
    fn new() -> Self {
        Summary {
            last_line: None,
            started: Instant::now(),
            last_records: 0,
            rounds: 0,
            keys: 0,
            snapshot_bytes: 0,
            busiest: Duration::ZERO,
        }
    }

    fn add(&mut self, reports: &[CheckpointReport], records: u64, took: Duration, reason: Reason) {
        self.rounds += 1;
        self.keys += reports.iter().map(|r| r.stats.keys_written + r.stats.keys_deleted).sum::<u64>();
        self.snapshot_bytes = reports.iter().map(|r| r.snapshot_bytes).sum();
        self.busiest = self.busiest.max(took);
        let elapsed = self.last_line.unwrap_or(self.started).elapsed();
        let recent = self.last_line.is_some_and(|t| t.elapsed() < SUMMARY_EVERY);
        if recent && matches!(reason, Reason::Interval | Reason::CacheFull) {
            return;
        }
        let offsets: Vec<String> =
            reports.iter().map(|r| format!("task {}: {}", r.partition, show_offsets(&r.offsets))).collect();
        let numbers: BTreeSet<u64> = reports.iter().map(|r| r.number).collect();
        let rate = (records - self.last_records) as f64 / elapsed.as_secs_f64().max(1e-3);
        let label = match reason {
            Reason::Shutdown => "final checkpoint",
            Reason::Revoke => "checkpoint before revoke",
            Reason::CacheFull => "checkpoint (statestore.cache.max.bytes reached)",
            Reason::Interval => "checkpoint",
        };
        let rounds =
            if self.rounds > 1 { format!(" ({} checkpoints since the last line)", self.rounds) } else { String::new() };
        tracing::info!(
            "{label} {}{rounds}: {}; {} keys written, snapshots {} B, took {} ms; {records} records processed ({rate:.0}/s)",
            numbers.iter().map(u64::to_string).collect::<Vec<_>>().join("/"),
            offsets.join("; "),
            self.keys,
            self.snapshot_bytes,
            self.busiest.as_millis(),
        );
        *self = Summary { last_records: records, last_line: Some(Instant::now()), ..Summary::new() };
    }
}

/// Exactly-once rollbacks in a row after which the host stops.
pub const MAX_ROLLBACKS: u32 = 3;

/// How long one `poll` may block; also the latency of noticing a stop.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Records between looks at the clock on the hot path.
const CLOCK_EVERY: u32 = 64;

/// Runs the application until `shutdown` is triggered or a failure.
pub fn run(config: &Config, shutdown: &Shutdown) -> Result<RunSummary, PipelineError> {
    run_with_progress(config, shutdown, &Progress::default())
}

/// The file under the application's state directory holding this host's
/// instance id (part of its `transactional.id`).
const INSTANCE_ID_FILE: &str = "instance.id";

/// This state directory's instance id, created on first use.
fn instance_id(dir: &std::path::Path) -> Result<String, PipelineError> {
    let path = dir.join(INSTANCE_ID_FILE);
    let io = |source| PipelineError::StateDir { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    use sha2::Digest as _;
    let seed = format!("{:?}{}{:?}", std::time::SystemTime::now(), std::process::id(), dir);
    let id: String = sha2::Sha256::digest(seed.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &id).map_err(io)?;
    Ok(id)
}

/// [`run`], publishing live figures to `progress`.
pub fn run_with_progress(
    config: &Config,
    shutdown: &Shutdown,
    progress: &Progress,
) -> Result<RunSummary, PipelineError> {
    // Everything that can be wrong with the module is found before anything
    // is written or joined.
    let engine = guest::engine()?;
    let compile_started = Instant::now();
    let module = Module::load(&engine, &config.processor.module, config.processor.max_memory_bytes)?;
    tracing::info!(
        "loaded {} (sha256 {}) in {} ms",
        module.path.display(),
        short(&module.digest),
        compile_started.elapsed().as_millis()
    );
    run_with_module(config, module, shutdown, progress)
}

/// [`run_with_progress`] with a module loaded already (`config.processor.module`
/// is not read): a component, or a processor compiled into the host
/// ([`Module::native`], for benchmarks).
pub fn run_with_module(
    config: &Config,
    module: Module,
    shutdown: &Shutdown,
    progress: &Progress,
) -> Result<RunSummary, PipelineError> {
    let topics = source::check_topics(config)?;
    let checkpointed = config.processing_guarantee != ProcessingGuarantee::None;
    if checkpointed {
        changelog::ensure_topic(config, topics.partitions, topics.changelog)?;
    }
    let dir = config.app_state_dir();
    std::fs::create_dir_all(&dir).map_err(|source| PipelineError::StateDir { path: dir.clone(), source })?;
    // One transactional producer per host, its id stable across restarts of
    // this state directory, so that a restart fences what a crash left open.
    let transactional_id = match config.processing_guarantee {
        ProcessingGuarantee::ExactlyOnce => Some(format!("{}-{}", config.application_id, instance_id(&dir)?)),
        _ => None,
    };
    let sink = Sink::new(config, transactional_id.as_deref())?;
    let env = TaskEnv {
        module,
        app_state_dir: dir.clone(),
        guest_config: config.processor.config.clone(),
        guarantee: config.processing_guarantee,
        application_id: config.application_id.clone(),
        changelog: checkpointed.then(|| ChangelogEnv {
            topic: changelog::topic_name(&config.application_id),
            reader: changelog::reader_config(config),
        }),
    };
    let consumer = source::consumer(config, Tasks::new(env, sink, config))?;
    let inputs: Vec<&str> = config.processor.inputs.iter().map(String::as_str).collect();
    consumer
        .subscribe(&inputs)
        .map_err(|source| PipelineError::Kafka { what: "subscribing to the input topics", source })?;
    let partitions = topics.partitions;
    tracing::info!(
        "{} running: {} ({partitions} partitions) -> {}, processing.guarantee = {}, commit.interval.ms = {}, state in {}",
        config.application_id,
        config.processor.inputs.join(", "),
        config.processor.outputs.join(", "),
        config.processing_guarantee,
        config.commit_interval.as_millis(),
        dir.display()
    );

    let result = process_until_stopped(&consumer, config, shutdown, progress);
    let mut tasks = consumer.context().tasks();
    progress.publish(&tasks);
    let summary = RunSummary { records: tasks.records, checkpoints: tasks.checkpoints };
    match result {
        Ok(()) => {
            tracing::info!(
                "stopped cleanly: {} records processed, {} checkpoints",
                summary.records,
                summary.checkpoints
            );
            // The tasks are clean: leaving the group below revokes without work.
            drop(tasks);
            Ok(summary)
        }
        Err(e) => {
            tasks.abandon();
            Err(e)
        }
    }
}

fn process_until_stopped(
    consumer: &BaseConsumer<SourceContext>,
    config: &Config,
    shutdown: &Shutdown,
    progress: &Progress,
) -> Result<(), PipelineError> {
    let ctx = consumer.context();
    let mut next_checkpoint = Instant::now() + config.commit_interval;
    let mut until_clock = CLOCK_EVERY;
    // Records wait in their task's batch while the consumer has more at hand;
    // the batch goes to the guest when full or when the consumer has none.
    let mut batched = false;
    while !shutdown.is_triggered() {
        // The rebalance callback runs inside `poll` and takes the tasks' lock:
        // it must not be held here.
        let polled = consumer.poll(if batched { Duration::ZERO } else { POLL_TIMEOUT });
        let mut tasks = ctx.tasks();
        if let Some(e) = tasks.fatal.take() {
            return Err(e);
        }
        let idle = match polled {
            None => true,
            Some(Ok(msg)) => {
                tasks.enqueue(&msg, consumer)?;
                false
            }
            Some(Err(e)) => {
                consumer_error(e, config)?;
                true
            }
        };
        if idle {
            tasks.flush_batches(consumer)?;
        }
        batched = tasks.has_batches();
        until_clock -= 1;
        if idle || until_clock == 0 || tasks.cache_full {
            until_clock = CLOCK_EVERY;
            tasks.sink.poll();
            progress.publish(&tasks);
            let now = Instant::now();
            if now >= next_checkpoint || tasks.cache_full {
                let reason = if tasks.cache_full { Reason::CacheFull } else { Reason::Interval };
                tasks.checkpoint(consumer, reason, None)?;
                next_checkpoint = Instant::now() + config.commit_interval;
            }
        }
    }
    let mut tasks = ctx.tasks();
    tasks.flush_batches(consumer)?;
    if tasks.by_partition.values().any(Task::is_dirty) {
        tracing::info!("stopping: taking a final checkpoint");
        tasks.checkpoint(consumer, Reason::Shutdown, None)?;
    } else {
        tracing::info!("stopping: every task is at its last checkpoint already");
    }
    if config.processing_guarantee == ProcessingGuarantee::None
        && let Err(e) = consumer.commit_consumer_state(CommitMode::Sync)
    {
        // Nothing consumed since the last auto-commit is the usual cause.
        tracing::debug!("final offset commit: {e}");
    }
    Ok(())
}

/// Errors `poll` reports: fatal when they mean the pipeline cannot work.
fn consumer_error(e: KafkaError, config: &Config) -> Result<(), PipelineError> {
    match e.rdkafka_error_code() {
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic) => {
            Err(PipelineError::Kafka { what: "consuming the input topics", source: e })
        }
        Some(
            RDKafkaErrorCode::Fenced
            | RDKafkaErrorCode::FencedInstanceId
            | RDKafkaErrorCode::FencedMemberEpoch
            | RDKafkaErrorCode::Fatal,
        ) => Err(PipelineError::Fenced { application_id: config.application_id.clone(), cause: e.to_string() }),
        _ => {
            tracing::warn!("consumer ({}): {e}", config.bootstrap_servers);
            Ok(())
        }
    }
}
