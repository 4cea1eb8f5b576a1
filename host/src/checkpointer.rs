//! The thread that finishes checkpoints, so that processing does not wait
//! for them.
//!
//! The processing thread cuts a round of checkpoints (one [`CheckpointJob`]
//! per dirty task) and hands it over here. Under at-least-once this thread
//! sends each task's state delta to the changelog, waits until every output
//! sent before the cut is acknowledged, sends the snapshots and markers,
//! waits for those, and writes each checkpoint to RocksDB: the order of the
//! synchronous protocol, only elsewhere. Under exactly-once the processing
//! thread has committed the round's transaction already and only the RocksDB
//! writes are left. One round at a time: the next cut waits for this one.
//! It knows nothing of the consumer or the loop; `tasks` collects results.

use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::Instant;

use crate::changelog::STATE_KEY_PREFIX;
use crate::sink::{ChangelogSend, ChangelogWriter, Cut, SinkError};
use crate::state::{Ahead, Released};
use crate::task::{CheckpointJob, CheckpointReport, TaskError};

/// What is left of a round of checkpoints after its cut.
#[derive(Debug)]
pub enum Round {
    /// At-least-once: the changelog and RocksDB.
    AtLeastOnce { cut: Cut, changelog: String, jobs: Vec<CheckpointJob> },
    /// Exactly-once, its transaction committed: RocksDB, with each marker's offset.
    Committed { jobs: Vec<(CheckpointJob, Option<i64>)> },
}

/// A finished round: its checkpoints, when it finished, and (at-least-once)
/// when its phases on this thread ended.
pub type Finished = (Result<Vec<CheckpointReport>, TaskError>, Instant, Option<Phases>);

/// When an at-least-once round's changelog records were all queued, when
/// its RocksDB records were built beside them (a large round's; a small
/// one's are built at the write), and when the changelog had acknowledged
/// them with the marker; the RocksDB write follows the later of the last two.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    pub queued: Instant,
    pub built: Option<Instant>,
    pub acknowledged: Instant,
}

enum Work {
    Finish(Round),
    /// A task's state changes to send to the changelog ahead of the round
    /// that will complete them (see [`crate::state::TaskStore::take_ahead`]).
    Ahead {
        changelog: String,
        partition: i32,
        ahead: Ahead,
    },
    /// State changes sent ahead by the processing thread, in the open
    /// transaction (exactly-once): their RocksDB records only.
    Stage(Ahead),
    /// Entries of written checkpoints to free (off the processing thread:
    /// measured ~4% of its time at 300k keys per second).
    Free(Vec<Released>),
}

pub struct Checkpointer {
    work: Sender<Work>,
    finished: Receiver<Finished>,
    in_flight: bool,
}

impl Checkpointer {
    /// Starts the thread; `writer` writes the changelog on the host's producer.
    pub fn start(writer: ChangelogWriter) -> Checkpointer {
        let (work, to_do) = channel::<Work>();
        let (done, finished) = channel();
        std::thread::Builder::new()
            .name("checkpointer".into())
            .spawn(move || {
                crate::sched::background_helper();
                let mut writer = writer;
                // Changes sent ahead that librdkafka refused: the next round fails with it.
                let mut refused: Option<SinkError> = None;
                // Ends when the host drops its end of the channel.
                for w in to_do {
                    match w {
                        Work::Ahead { changelog, partition, ahead } => {
                            if refused.is_none() {
                                refused = writer
                                    .send_changelog_entries(&changelog, partition, STATE_KEY_PREFIX, ahead.entries())
                                    .err();
                            }
                            // Their RocksDB records too, between rounds: the
                            // round that completes them has little left to build.
                            ahead.stage();
                        }
                        Work::Finish(round) => {
                            let mut phases = None;
                            let result = match refused.take() {
                                Some(e) => Err(TaskError::Sink(e)),
                                None => finish(&mut writer, round, &mut phases),
                            };
                            if done.send((result, Instant::now(), phases)).is_err() {
                                break;
                            }
                        }
                        Work::Stage(ahead) => ahead.stage(),
                        Work::Free(released) => drop(released),
                    }
                }
            })
            .expect("spawning the checkpoint thread");
        Checkpointer { work, finished, in_flight: false }
    }

    /// Hands a cut round over. The previous one must have been collected.
    pub fn submit(&mut self, round: Round) {
        assert!(!self.in_flight, "one round of checkpoints at a time");
        // If the thread is gone, `collect` reports it.
        let _ = self.work.send(Work::Finish(round));
        self.in_flight = true;
    }

    /// Sends `ahead`, state changes of task `partition`, to `changelog` ahead
    /// of the round that will complete them: before any round submitted later.
    pub fn send_ahead(&self, changelog: &str, partition: i32, ahead: Ahead) {
        // If the thread is gone, `collect` reports it.
        let _ = self.work.send(Work::Ahead { changelog: changelog.to_string(), partition, ahead });
    }

    /// Builds the RocksDB records of `ahead`, sent to the changelog by the
    /// caller, for the round that will complete them: before any round
    /// submitted later.
    pub fn stage_ahead(&self, ahead: Ahead) {
        let _ = self.work.send(Work::Stage(ahead));
    }

    /// Frees `released` on the checkpoint thread (here if it is gone).
    pub fn free(&self, released: Vec<Released>) {
        let _ = self.work.send(Work::Free(released));
    }

    /// The round in flight, once it is finished (waiting for it if `block`).
    pub fn collect(&mut self, block: bool) -> Option<Finished> {
        if !self.in_flight {
            return None;
        }
        let finished = if block {
            self.finished.recv().ok()
        } else {
            match self.finished.try_recv() {
                Ok(f) => Some(f),
                Err(TryRecvError::Empty) => return None,
                Err(TryRecvError::Disconnected) => None,
            }
        };
        self.in_flight = false;
        // The thread is gone only if it panicked: a checkpoint that failed.
        Some(finished.unwrap_or_else(|| (Err(TaskError::CheckpointThread), Instant::now(), None)))
    }
}

/// State entries in a round from which its RocksDB batches are built on a
/// thread of their own while the changelog is sent.
const STAGE_APART: usize = 50_000;

/// Sends a round's changelog records: each task's delta, then, once every
/// output sent before `cut` is acknowledged, the snapshots and markers; and
/// waits for them. Returns when the records were queued, how long the
/// outputs took from `started`, and when the changelog acknowledged them.
fn log(
    writer: &mut ChangelogWriter,
    cut: Cut,
    changelog: &str,
    jobs: &[CheckpointJob],
) -> Result<(Instant, std::time::Duration, Instant), TaskError> {
    let started = Instant::now();
    jobs.iter().try_for_each(|job| job.send_delta(writer, changelog))?;
    let queued = Instant::now();
    // A marker must never stand for outputs that were not delivered.
    writer.wait_outputs(cut)?;
    let outputs = started.elapsed();
    for job in jobs {
        job.send_marker(writer, changelog)?;
    }
    writer.wait_changelog()?;
    Ok((queued, outputs, Instant::now()))
}

fn finish(
    writer: &mut ChangelogWriter,
    round: Round,
    phases: &mut Option<Phases>,
) -> Result<Vec<CheckpointReport>, TaskError> {
    match round {
        Round::AtLeastOnce { cut, changelog, jobs } => {
            let started = Instant::now();
            // A delta without its marker is a torn checkpoint, which a restore
            // ignores and repairs: it may go before the outputs are in. The
            // RocksDB records of a large round (a batch, or a table: see
            // `state::batch`) are finished beside the changelog's, on another
            // thread; a small one's at the write. Most of them were sorted
            // as their entries were sent ahead (`Work::Ahead`), and built
            // into tables of 250,000 entries as they went: left are the
            // entries not sent ahead and those after the last such table (a
            // 1M-key checkpoint: ~100-130 ms for its last table, against
            // 250–400 ms to build a batch here and 200–300 ms more to write it).
            let large = jobs.iter().map(CheckpointJob::entries).sum::<usize>() >= STAGE_APART;
            let (logged, staged) = std::thread::scope(|s| {
                let staging = large.then(|| {
                    std::thread::Builder::new().name("checkpoint-batch".into()).spawn_scoped(s, || {
                        crate::sched::background_helper();
                        let staged = jobs.iter().map(CheckpointJob::stage).collect::<Vec<_>>();
                        (staged, Instant::now())
                    })
                });
                let logged = log(writer, cut, &changelog, &jobs);
                // If the thread cannot be had, the batches are built at the write.
                (logged, staging.and_then(Result::ok).and_then(|t| t.join().ok()))
            });
            let (queued, outputs, acknowledged) = logged?;
            let (staged, built) = staged.unzip();
            *phases = Some(Phases { queued, built, acknowledged });
            let mut staged = staged.map(Vec::into_iter);
            let reports = jobs
                .into_iter()
                .map(|job| {
                    let marker = writer.marker_offset(job.partition);
                    job.write(marker, staged.as_mut().and_then(Iterator::next))
                })
                .collect();
            tracing::debug!(
                "checkpoint round finished in {} ms: changelog sent after {} ms, outputs acknowledged after {}, changelog after {}, RocksDB records built after {}",
                started.elapsed().as_millis(),
                (queued - started).as_millis(),
                outputs.as_millis(),
                (acknowledged - started).as_millis(),
                built.map_or("-".to_string(), |b| (b - started).as_millis().to_string())
            );
            reports
        }
        Round::Committed { jobs } => jobs.into_iter().map(|(job, marker)| job.write(marker, None)).collect(),
    }
}
