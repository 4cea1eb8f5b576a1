//! The hot swap across every task of the host (see [`crate::swap`]): at a
//! record boundary, a checkpoint, then each task onto the new module; the new
//! module's first batch is a trial, and a failure at any step puts every task
//! back on the old module at that checkpoint.
//!
//! Why the trial is one batch: the first batch the new module processes, on
//! whichever task gets records first, sends nothing and moves nothing if it
//! fails, and no other task has processed anything yet, so going back
//! repeats and loses nothing under every guarantee. A batch it fails later is
//! an ordinary processor failure.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;

use super::{Reason, Tasks};
use crate::guest::Module;
use crate::pipeline::PipelineError;
use crate::source::SourceContext;
use crate::swap::{self, SwapOutcome, SwapRecord, SwapRequest, TRIAL_WAIT, ms};
use crate::task::short;

/// A swap whose new module has not processed its first batch yet.
pub(crate) struct Probation {
    old: Module,
    /// Each task's snapshot from the old module, at the swap's checkpoint.
    snapshots: BTreeMap<i32, Vec<u8>>,
    request: SwapRequest,
    stall: Duration,
    checkpoint: Duration,
    paused: Vec<(i32, Duration)>,
    since: Instant,
}

impl Tasks {
    /// Swaps every task onto `request.module` here, between two records: a
    /// checkpoint of the dirty tasks, then per task the old instance's
    /// snapshot, a new instance, `init` and `restore(snapshot, old module)`.
    /// If any step fails, every task goes back to the old module and the
    /// request is answered; otherwise the new module is on trial until its
    /// first batch ([`Tasks::confirm_swap`], [`Tasks::roll_back_swap`]).
    pub(crate) fn swap(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        request: SwapRequest,
    ) -> Result<(), PipelineError> {
        // Records fetched before the swap are processed by the old module
        // (processing, not a pause).
        self.flush_batches(consumer)?;
        let started = Instant::now();
        let old = self.env.module.clone();
        let new = request.module.clone();
        tracing::info!(
            "hot swap: {} (sha256 {}) replaces {} (sha256 {}) on {} task(s), at the next record boundary",
            request.source.display(),
            short(&new.digest),
            old.path.display(),
            short(&old.digest),
            self.by_partition.len()
        );
        self.checkpoint(consumer, Reason::Swap, None)?;
        let checkpoint = started.elapsed();
        let mut snapshots = BTreeMap::new();
        let mut paused = Vec::with_capacity(self.by_partition.len());
        let mut failure = None;
        for (p, mut task) in std::mem::take(&mut self.by_partition) {
            if failure.is_some() {
                self.by_partition.insert(p, task);
                continue;
            }
            let t0 = Instant::now();
            let snapshot = task.snapshot()?;
            let (task, r) = task.change_module(&self.env, &old, &new, &snapshot)?;
            paused.push((p, t0.elapsed()));
            self.by_partition.insert(p, task);
            match r {
                Ok(()) => drop(snapshots.insert(p, snapshot)),
                Err(e) => failure = Some(format!("task {p}: {e}")),
            }
        }
        if let Some(reason) = failure {
            for (p, snapshot) in &snapshots {
                let Some(task) = self.by_partition.remove(p) else { continue };
                let task = task.return_to(&self.env, &old, snapshot, &old.digest)?;
                self.by_partition.insert(*p, task);
            }
            answer(request, SwapOutcome::RolledBack { module: old.path.display().to_string(), reason });
            return Ok(());
        }
        self.env.module = new;
        let stall = started.elapsed();
        tracing::info!(
            "hot swap: every task runs {} now; processing paused {:.1} ms in all: the checkpoint {:.1} ms, then per task {}; its first batch is a trial",
            short(&self.env.module.digest),
            ms(stall),
            ms(checkpoint),
            show_paused(&paused)
        );
        self.probation = Some(Probation { old, snapshots, request, stall, checkpoint, paused, since: Instant::now() });
        Ok(())
    }

    /// Whether a swap waits for its trial batch longer than [`TRIAL_WAIT`]:
    /// then it is reported complete, untried.
    pub(crate) fn check_swap_trial(&mut self) {
        if self.probation.as_ref().is_some_and(|p| p.since.elapsed() >= TRIAL_WAIT) {
            self.confirm_swap(false);
        }
    }

    /// The new module processed a batch (`tried`), or had none to process in
    /// [`TRIAL_WAIT`]: the swap is complete, and recorded for restarts.
    pub(crate) fn confirm_swap(&mut self, tried: bool) {
        let Some(p) = self.probation.take() else { return };
        for task in self.by_partition.values_mut() {
            task.end_trial();
        }
        let module = &self.env.module;
        let record = SwapRecord {
            module: p.request.stored.clone(),
            digest: module.digest.clone(),
            source: p.request.source.clone(),
            replaces: p.request.replaces.clone(),
            swapped_at_ms: swap::now_ms(),
        };
        let warning = swap::record(&self.env.app_state_dir, &record).err().map(|e| {
            format!("{e}; a restart would run processor.module again, restoring the new module's checkpoints into it")
        });
        let tried_note = if tried { "" } else { " (no record arrived to try it on)" };
        match &warning {
            None => tracing::info!(
                "hot swap completed{tried_note}: {} runs on every task, and after a restart too",
                p.request.source.display()
            ),
            Some(w) => tracing::warn!("hot swap completed{tried_note}, but {w}"),
        }
        let compile_ms = ms(p.request.compile);
        answer(
            p.request,
            SwapOutcome::Completed {
                module: record.source.display().to_string(),
                digest: record.digest,
                compile_ms,
                stall_ms: ms(p.stall),
                checkpoint_ms: ms(p.checkpoint),
                paused_ms: p.paused.iter().map(|(t, d)| (*t, ms(*d))).collect(),
                tried,
                warning,
            },
        );
    }

    /// The host is stopping with the new module still on trial: the swap
    /// is answered as rolled back (nothing was recorded, so a restart runs
    /// the old module from the swap's checkpoint).
    pub(crate) fn abandon_swap(&mut self) {
        let Some(p) = self.probation.take() else { return };
        let module = p.old.path.display().to_string();
        let reason = "the host stopped before the new module processed a record".to_string();
        answer(p.request, SwapOutcome::RolledBack { module, reason });
    }

    /// The new module failed its trial batch: every task goes back to the old
    /// module at the swap's checkpoint (nothing was sent or moved since).
    pub(crate) fn roll_back_swap(&mut self, reason: String) -> Result<(), PipelineError> {
        let Some(p) = self.probation.take() else { return Ok(()) };
        let new = std::mem::replace(&mut self.env.module, p.old);
        for (partition, mut task) in std::mem::take(&mut self.by_partition) {
            let task = match p.snapshots.get(&partition) {
                Some(snapshot) => task.return_to(&self.env, &self.env.module, snapshot, &self.env.module.digest)?,
                // Assigned during the trial: opened on the new module from its checkpoint.
                None => {
                    let (snapshot, written_by) = task.last_checkpoint(&new)?;
                    task.return_to(&self.env, &self.env.module, &snapshot, &written_by)?
                }
            };
            self.by_partition.insert(partition, task);
        }
        answer(p.request, SwapOutcome::RolledBack { module: self.env.module.path.display().to_string(), reason });
        Ok(())
    }
}

/// Logs and sends a swap's outcome (the requester may have given up).
fn answer(request: SwapRequest, outcome: SwapOutcome) {
    if let SwapOutcome::RolledBack { module, reason } = &outcome {
        tracing::warn!("hot swap rolled back: every task runs {module} again, at the swap's checkpoint. {reason}");
    }
    let _ = request.reply.send(outcome);
}

fn show_paused(paused: &[(i32, Duration)]) -> String {
    let parts: Vec<String> = paused.iter().map(|(p, d)| format!("task {p} {:.2} ms", ms(*d))).collect();
    if parts.is_empty() { "no tasks".into() } else { parts.join(", ") }
}
