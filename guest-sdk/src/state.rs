//! The task's host-managed key-value state.

use std::collections::BTreeMap;

/// Key-value state of one task. In a component this is the host's store
/// (write-back cache over RocksDB, made durable at checkpoints); natively it is
/// a [`MemoryState`].
pub trait State {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>>;
    fn put(&mut self, key: &[u8], value: &[u8]);
    fn delete(&mut self, key: &[u8]);
    /// Entries whose key starts with `prefix`, in key order; at most `limit`
    /// (0: all).
    fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)>;
}

impl dyn State + '_ {
    /// Reads a counter stored by [`put_u64`](Self::put_u64) (8 bytes, big-endian).
    /// A value of another length reads as `None`.
    pub fn get_u64(&mut self, key: &[u8]) -> Option<u64> {
        let v = self.get(key)?;
        Some(u64::from_be_bytes(v.as_slice().try_into().ok()?))
    }

    /// Stores a counter as 8 bytes, big-endian (so keys sort and hosts can read it).
    pub fn put_u64(&mut self, key: &[u8], value: u64) {
        self.put(key, &value.to_be_bytes());
    }
}

/// An in-memory [`State`] for native unit tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryState {
    pub entries: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl State for MemoryState {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.entries.insert(key.to_vec(), value.to_vec());
    }

    fn delete(&mut self, key: &[u8]) {
        self.entries.remove(key);
    }

    fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        let it = self
            .entries
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()));
        match limit {
            0 => it.collect(),
            n => it.take(n as usize).collect(),
        }
    }
}
