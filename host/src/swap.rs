//! Hot swap: what travels between whoever asks for one (the admin endpoint,
//! [`crate::admin`]) and the processing loop, and what survives a restart.
//!
//! A request carries a module compiled off the processing path. The loop
//! takes it at a record boundary ([`crate::tasks::Tasks::swap`]): a
//! checkpoint, then each task's old snapshot restored into an instance of the
//! new module; the new module's first batch is a trial. The outcome goes back
//! on the request's channel. A swap that completed is recorded in the
//! application's state directory (`swapped-module.json`, with a copy of the
//! module under `modules/`), so that a restart runs the new module while the
//! config still names the one it replaced.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::guest::Module;

/// A module compiled for a swap, on its way to the processing loop.
pub struct SwapRequest {
    pub module: Module,
    /// Where the module was read from (for messages and the record).
    pub source: PathBuf,
    /// Its copy under the state directory, which a restart loads.
    pub stored: PathBuf,
    /// How long compiling it took (off the processing path).
    pub compile: Duration,
    /// SHA-256 of `processor.module` as configured, which a recorded swap
    /// replaces on restarts.
    pub replaces: String,
    pub requested: Instant,
    pub reply: mpsc::Sender<SwapOutcome>,
}

/// How a swap ended.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum SwapOutcome {
    /// Every task runs the new module.
    Completed {
        module: String,
        digest: String,
        compile_ms: f64,
        /// The swap's whole stall of processing: its checkpoint and every task's pause.
        stall_ms: f64,
        /// The part of it the checkpoint took (waiting for the one before it
        /// to be written, the cut; under exactly-once, the transaction commit).
        checkpoint_ms: f64,
        /// Per task: snapshot, instantiate, `init` and `restore` of the new module.
        paused_ms: Vec<(i32, f64)>,
        /// Whether the new module processed a record before this was reported
        /// (no input arrived in [`TRIAL_WAIT`] otherwise).
        tried: bool,
        /// Why a restart would not run the new module, if it would not.
        warning: Option<String>,
    },
    /// Every task runs the old module, at the checkpoint the swap took.
    RolledBack { module: String, reason: String },
    /// Nothing was done.
    Refused { reason: String },
}

impl SwapOutcome {
    pub fn is_completed(&self) -> bool {
        matches!(self, SwapOutcome::Completed { .. })
    }
}

/// How long a swap waits for a record to try the new module on before it
/// reports completion without one.
pub const TRIAL_WAIT: Duration = Duration::from_secs(10);

/// Where a swap request waits for the processing loop, which looks at it
/// every few dozen records.
#[derive(Default)]
pub struct SwapInbox {
    waiting: AtomicBool,
    request: Mutex<Option<SwapRequest>>,
    /// A swap is between its request and its outcome (one at a time).
    busy: AtomicBool,
}

impl std::fmt::Debug for SwapInbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwapInbox").field("busy", &self.busy.load(Ordering::Relaxed)).finish()
    }
}

impl SwapInbox {
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// Claims the one swap slot; `false` if a swap is under way.
    pub fn begin(&self) -> bool {
        !self.busy.swap(true, Ordering::AcqRel)
    }

    /// Releases the slot [`SwapInbox::begin`] claimed.
    pub fn end(&self) {
        self.busy.store(false, Ordering::Release);
    }

    pub fn submit(&self, request: SwapRequest) {
        *self.request.lock().unwrap_or_else(|p| p.into_inner()) = Some(request);
        self.waiting.store(true, Ordering::Release);
    }

    /// The waiting request, if any (cheap when there is none).
    pub fn take(&self) -> Option<SwapRequest> {
        if !self.waiting.load(Ordering::Acquire) {
            return None;
        }
        self.waiting.store(false, Ordering::Release);
        self.request.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// The file recording a completed swap, under the application's state directory.
pub const RECORD_FILE: &str = "swapped-module.json";
/// Where swapped-in modules are copied, under the application's state directory.
const MODULES_DIR: &str = "modules";

/// A completed swap, as recorded for restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwapRecord {
    /// The module's copy, which a restart loads.
    pub module: PathBuf,
    pub digest: String,
    /// The file it was swapped in from.
    pub source: PathBuf,
    /// SHA-256 of `processor.module` when the swap was made: while the
    /// config's module is still this one, the swapped-in module replaces it.
    pub replaces: String,
    pub swapped_at_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SwapFileError {
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
}

/// Copies a module's bytes under the state directory (once per digest).
pub fn store_module(app_state_dir: &Path, digest: &str, bytes: &[u8]) -> Result<PathBuf, SwapFileError> {
    let dir = app_state_dir.join(MODULES_DIR);
    let path = dir.join(format!("{digest}.wasm"));
    if path.is_file() {
        return Ok(path);
    }
    let write = |source| SwapFileError::Write { path: path.clone(), source };
    std::fs::create_dir_all(&dir).map_err(write)?;
    let tmp = dir.join(format!(".{digest}.wasm.tmp"));
    std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)).map_err(write)?;
    Ok(path)
}

/// Records a completed swap (atomically), or forgets the record when the
/// swap went back to the configured module itself.
pub fn record(app_state_dir: &Path, record: &SwapRecord) -> Result<(), SwapFileError> {
    let path = app_state_dir.join(RECORD_FILE);
    let write = |source| SwapFileError::Write { path: path.clone(), source };
    if record.digest == record.replaces {
        return forget(app_state_dir);
    }
    let tmp = app_state_dir.join(format!(".{RECORD_FILE}.tmp"));
    let json = serde_json::to_vec_pretty(record).expect("a swap record serialises");
    std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path)).map_err(write)?;
    prune_modules(app_state_dir, Some(&record.module));
    Ok(())
}

/// Removes the stored modules other than `keep` (best effort: a leftover
/// file costs only disk).
fn prune_modules(app_state_dir: &Path, keep: Option<&Path>) {
    let Ok(entries) = std::fs::read_dir(app_state_dir.join(MODULES_DIR)) else { return };
    for entry in entries.flatten() {
        if keep != Some(entry.path().as_path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The recorded swap, if there is one.
pub fn recorded(app_state_dir: &Path) -> Result<Option<SwapRecord>, SwapFileError> {
    let path = app_state_dir.join(RECORD_FILE);
    let read = |message: String| SwapFileError::Read { path: path.clone(), message };
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| read(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read(e.to_string())),
    }
}

/// Forgets the recorded swap.
pub fn forget(app_state_dir: &Path) -> Result<(), SwapFileError> {
    let path = app_state_dir.join(RECORD_FILE);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(SwapFileError::Write { path, source: e }),
        _ => {
            prune_modules(app_state_dir, None);
            Ok(())
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A duration in milliseconds, to the microsecond.
pub fn ms(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_swap_back_to_the_configured_module_forgets_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        assert_eq!(recorded(dir.path()).ok(), Some(None));
        let stored = store_module(dir.path(), "bb", b"module").expect("stored");
        assert_eq!(std::fs::read(&stored).ok(), Some(b"module".to_vec()));
        let r = SwapRecord {
            module: stored,
            digest: "bb".into(),
            source: "/x/v2.wasm".into(),
            replaces: "aa".into(),
            swapped_at_ms: 1,
        };
        record(dir.path(), &r).expect("recorded");
        assert_eq!(recorded(dir.path()).ok(), Some(Some(r.clone())));
        let other = store_module(dir.path(), "cc", b"other").expect("stored");
        record(dir.path(), &r).expect("recorded");
        assert!(!other.exists(), "a module no record names is removed");
        record(dir.path(), &SwapRecord { digest: "aa".into(), ..r.clone() }).expect("forgotten");
        assert_eq!(recorded(dir.path()).ok(), Some(None));
        assert!(!r.module.exists(), "forgetting the record removes its module");
    }
}
