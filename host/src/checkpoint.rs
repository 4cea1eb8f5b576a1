//! The checkpoint record: what one task's durable state belongs to.
//!
//! A checkpoint ties together, atomically, the next input offset of each input
//! topic of the task's partition, the state written up to it, the guest's
//! snapshot bytes and the module that produced them. This module owns the
//! record's format and the inspection of a state directory; writing it is
//! `state::TaskStore::commit`, deciding when is `task`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::state::{StateError, TaskStore};

/// Format version of [`Checkpoint`], stored in it.
const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version of this record.
    pub format: u32,
    /// 1 for a task's first checkpoint, +1 for each after it.
    pub number: u64,
    /// Input topic → next offset to consume on the task's partition.
    pub offsets: BTreeMap<String, i64>,
    /// SHA-256 of the module that produced the state and snapshot (hex).
    pub module_digest: String,
    /// Milliseconds since the Unix epoch when the checkpoint was taken.
    pub taken_at_ms: u64,
    /// Offset of this checkpoint's marker in the task's changelog partition
    /// (`None` in the marker itself, and without a changelog).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changelog_offset: Option<i64>,
}

impl Checkpoint {
    pub fn new(number: u64, offsets: BTreeMap<String, i64>, module_digest: String) -> Self {
        let taken_at_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Checkpoint { format: FORMAT, number, offsets, module_digest, taken_at_ms, changelog_offset: None }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a checkpoint always serialises")
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let c: Checkpoint = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if c.format != FORMAT {
            return Err(format!("checkpoint format {} is not {FORMAT}, the one this host reads", c.format));
        }
        Ok(c)
    }
}

/// One task's checkpoint as found in a state directory.
#[derive(Debug, Clone)]
pub struct TaskCheckpoint {
    pub partition: i32,
    pub checkpoint: Option<Checkpoint>,
    pub snapshot: Vec<u8>,
    /// Every state entry at the checkpoint, in key order.
    pub state: crate::state::Entries,
}

/// Reads every task's checkpoint under an application's state directory
/// (`<state.dir>/<application.id>`), in partition order. Safe beside a running
/// host: RocksDB is opened read-only.
pub fn inspect(app_state_dir: &Path) -> Result<Vec<TaskCheckpoint>, StateError> {
    let mut tasks = Vec::new();
    let Ok(entries) = std::fs::read_dir(app_state_dir) else { return Ok(tasks) };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(partition) = name.to_str().and_then(|n| n.strip_prefix("task-")).and_then(|p| p.parse().ok()) else {
            continue;
        };
        let (restored, state) = TaskStore::read_only(&entry.path())?;
        tasks.push(TaskCheckpoint { partition, checkpoint: restored.checkpoint, snapshot: restored.snapshot, state });
    }
    tasks.sort_by_key(|t| t.partition);
    Ok(tasks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_other_formats() {
        let c = Checkpoint::new(3, BTreeMap::from([("in".to_string(), 42)]), "ab".into());
        assert_eq!(Checkpoint::decode(&c.encode()), Ok(c.clone()));
        let other = Checkpoint { format: 99, ..c };
        assert!(Checkpoint::decode(&other.encode()).is_err_and(|e| e.contains("format 99")));
        assert!(Checkpoint::decode(b"{").is_err());
    }
}
