//! A batch's writes, kept in the guest until the batch ends.

use super::State;

/// A batch's writes, kept in the guest until the batch ends: one `write-many`
/// host call per batch instead of one `put` per write. Reads look here first,
/// so a processor sees its own writes. Packed as `write-many` takes them
/// (`key-len:u32 key value-len:i32 value`, -1 a delete), found through an
/// open-addressing table of positions in that buffer; a value rewritten with
/// the same length (a counter, mostly) is rewritten in place, another gets a
/// new write after the old one (the host applies both, in order).
#[derive(Debug, Default)]
pub(crate) struct WriteBuffer {
    writes: Vec<u8>,
    /// Position of a key's latest write + 1 (0: empty), a power of two long.
    slots: Vec<u32>,
    /// Keys in `slots`.
    keys: usize,
}

/// FxHash's mixing, 8 bytes at a time (keys are short and the table small).
fn hash(key: &[u8]) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = key.len() as u64;
    let mut chunks = key.chunks_exact(8);
    for c in &mut chunks {
        h = (h.rotate_left(5) ^ u64::from_le_bytes(c.try_into().unwrap_or_default())).wrapping_mul(K);
    }
    let mut tail = [0u8; 8];
    tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
    // The multiplications carry a key's bits only upwards, and keys often
    // differ in their last bytes (the high ones): mix them down (MurmurHash3's
    // finaliser) before the table takes the low bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h as usize
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

impl WriteBuffer {
    /// The write of `key` at `at`: its key and value (`None`: a delete), and
    /// where the value's length is.
    fn write_at(&self, at: usize) -> (&[u8], Option<&[u8]>, usize) {
        let klen = u32_at(&self.writes, at) as usize;
        let key = &self.writes[at + 4..at + 4 + klen];
        let len_at = at + 4 + klen;
        let vlen = u32_at(&self.writes, len_at) as i32;
        let value = (vlen >= 0).then(|| &self.writes[len_at + 4..len_at + 4 + vlen as usize]);
        (key, value, len_at)
    }

    /// The slot of `key`: its write's, or the empty one where it would go.
    fn slot(&self, key: &[u8]) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = hash(key) & mask;
        loop {
            match self.slots[i] {
                0 => return i,
                p if self.write_at(p as usize - 1).0 == key => return i,
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// `None`: not written in this batch; `Some(None)`: deleted.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.keys == 0 {
            return None;
        }
        match self.slots[self.slot(key)] {
            0 => None,
            p => Some(self.write_at(p as usize - 1).1),
        }
    }

    /// Writes `key` (`value` `None`: deletes it).
    pub(crate) fn set(&mut self, key: &[u8], value: Option<&[u8]>) {
        if (self.keys + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let slot = self.slot(key);
        if let p @ 1.. = self.slots[slot] {
            let (_, old, len_at) = self.write_at(p as usize - 1);
            if let (Some(old), Some(new)) = (old, value)
                && old.len() == new.len()
            {
                self.writes[len_at + 4..len_at + 4 + new.len()].copy_from_slice(new);
                return;
            }
        } else {
            self.keys += 1;
        }
        self.slots[slot] = u32::try_from(self.writes.len() + 1).expect("a batch's writes exceed 4 GiB");
        crate::packed::push_write(&mut self.writes, key, value);
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(64);
        let old = core::mem::replace(&mut self.slots, vec![0; len]);
        for p in old.into_iter().filter(|&p| p != 0) {
            let slot = self.slot(self.write_at(p as usize - 1).0);
            self.slots[slot] = p;
        }
    }

    /// The writes, in order, for `write-many`; then the buffer is empty
    /// (keeping its memory).
    pub(crate) fn drain(&mut self, send: impl FnOnce(&[u8])) {
        if self.keys == 0 {
            return;
        }
        send(&self.writes);
        self.writes.clear();
        self.slots.fill(0);
        self.keys = 0;
    }
}

/// What a buffered state needs of the host beside [`State`]: the
/// `write-many` and `batch-values` imports.
pub(crate) trait Host: State {
    fn write_many(&mut self, writes: &[u8]);
    /// The values of the batch's record keys (the `batch-values` format).
    fn batch_values(&mut self, batch: &[u8]) -> Vec<u8>;
}

/// The values of a batch's record keys as the host had them when asked
/// (`batch-values`): what the host read ahead, given in one call instead of
/// one `get` each.
#[derive(Debug, Default)]
pub(crate) struct Provided {
    /// The host's buffer: `value-len:i32 value` per record.
    values: Vec<u8>,
    /// Per record: where its value starts in `values` and its length
    /// (-1: no value, -2: not known, ask the host).
    at: Vec<(u32, i32)>,
    loaded: bool,
}

impl Provided {
    fn load(&mut self, values: Vec<u8>) {
        self.at.clear();
        let at = &mut self.at;
        // A malformed buffer: the records past its error are not known
        // (their keys are asked for with `get`).
        let _ = crate::packed::read_batch_values(&values, |start, len| at.push((start as u32, len)));
        self.values = values;
        self.loaded = true;
    }

    /// Record `record`'s value: `None` when not known.
    fn value(&self, record: usize) -> Option<Option<&[u8]>> {
        match *self.at.get(record)? {
            (_, -1) => Some(None),
            (start, len) if len >= 0 => Some(Some(&self.values[start as usize..start as usize + len as usize])),
            _ => None,
        }
    }

    fn clear(&mut self) {
        self.loaded = false;
    }
}

/// The state of a batch's records in a component: writes wait in a
/// [`WriteBuffer`] until [`Buffered::flush`] sends them in one `write-many`
/// call; a record's `get` of its own key is answered from the values the
/// host gives for the whole batch in one `batch-values` call (asked for at
/// the first such `get`, so a processor that never reads its record's key
/// never asks).
pub(crate) struct Buffered<'a, H> {
    pub(crate) inner: H,
    pub(crate) buffer: &'a mut WriteBuffer,
    pub(crate) provided: &'a mut Provided,
    /// The packed input batch.
    pub(crate) batch: &'a [u8],
    /// The record being processed: its index and key.
    pub(crate) record: usize,
    pub(crate) key: Option<&'a [u8]>,
}

impl<'a, H: Host> Buffered<'a, H> {
    pub(crate) fn new(inner: H, buffer: &'a mut WriteBuffer, provided: &'a mut Provided, batch: &'a [u8]) -> Self {
        provided.clear();
        Buffered { inner, buffer, provided, batch, record: 0, key: None }
    }

    /// The batch moves on to record `record`, whose key is `key`.
    pub(crate) fn at_record(&mut self, record: usize, key: Option<&'a [u8]>) {
        self.record = record;
        self.key = key;
    }

    /// Sends the writes to the host; the values it gave are stale then.
    pub(crate) fn flush(&mut self) {
        let inner = &mut self.inner;
        self.buffer.drain(|w| inner.write_many(w));
        self.provided.clear();
    }
}

impl<H: Host> State for Buffered<'_, H> {
    fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(v) = self.buffer.get(key) {
            return v.map(<[u8]>::to_vec);
        }
        if self.key == Some(key) {
            if !self.provided.loaded {
                let values = self.inner.batch_values(self.batch);
                self.provided.load(values);
            }
            if let Some(v) = self.provided.value(self.record) {
                return v.map(<[u8]>::to_vec);
            }
        }
        self.inner.get(key)
    }

    fn put(&mut self, key: &[u8], value: &[u8]) {
        self.buffer.set(key, Some(value));
    }

    fn delete(&mut self, key: &[u8]) {
        self.buffer.set(key, None);
    }

    fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.flush();
        self.inner.scan_prefix(prefix, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryState;
    use crate::packed::{InputWriter, push_batch_value};

    /// The host, over a `MemoryState`: counts its calls; `batch_values`
    /// knows the keys in `known` only (the rest: -2, as when not read ahead).
    #[derive(Default)]
    struct TestHost {
        state: MemoryState,
        known: Vec<Vec<u8>>,
        gets: usize,
        write_calls: usize,
        value_calls: usize,
    }

    impl State for TestHost {
        fn get(&mut self, key: &[u8]) -> Option<Vec<u8>> {
            self.gets += 1;
            self.state.get(key)
        }
        fn put(&mut self, key: &[u8], value: &[u8]) {
            self.state.put(key, value)
        }
        fn delete(&mut self, key: &[u8]) {
            self.state.delete(key)
        }
        fn scan_prefix(&mut self, prefix: &[u8], limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
            self.state.scan_prefix(prefix, limit)
        }
    }

    impl Host for TestHost {
        fn write_many(&mut self, writes: &[u8]) {
            self.write_calls += 1;
            crate::packed::read_writes(writes, |k, v| match v {
                Some(v) => self.state.put(k, v),
                None => self.state.delete(k),
            })
            .expect("well-formed writes");
        }
        fn batch_values(&mut self, batch: &[u8]) -> Vec<u8> {
            self.value_calls += 1;
            let mut values = Vec::new();
            for r in crate::packed::InputBatch::read(batch).expect("batch").records() {
                let key = r.expect("record").key.expect("a key");
                let known = self.known.iter().any(|k| k == key);
                push_batch_value(&mut values, known.then(|| self.state.entries.get(key).map(Vec::as_slice)));
            }
            values
        }
    }

    fn batch(keys: &[&str]) -> InputWriter {
        let mut w = InputWriter::default();
        w.begin("in", 0);
        for (i, k) in keys.iter().enumerate() {
            w.push(i as i64, None, Some(k.as_bytes()), None, 0, core::iter::empty());
        }
        w
    }

    #[test]
    fn writes_wait_in_the_guest_read_their_own_values_and_go_in_one_call() {
        let (mut buffer, mut provided) = (WriteBuffer::default(), Provided::default());
        let mut host = TestHost::default();
        host.state.put(b"old", b"1");
        host.state.put(b"gone", b"x");
        let b = batch(&["r"]);
        let mut s = Buffered::new(host, &mut buffer, &mut provided, b.as_bytes());
        // Enough keys to grow the table twice; each read sees its write.
        for i in 0..200u32 {
            let key = format!("key-{i}");
            s.put(key.as_bytes(), &i.to_be_bytes());
            assert_eq!(s.get(key.as_bytes()), Some(i.to_be_bytes().to_vec()), "{key}");
        }
        // Rewritten with the same length (in place) and another length.
        s.put(b"key-7", b"SEVN");
        s.put(b"key-8", b"eight!");
        s.delete(b"gone");
        assert_eq!(s.get(b"key-7").as_deref(), Some(&b"SEVN"[..]));
        assert_eq!(s.get(b"key-8").as_deref(), Some(&b"eight!"[..]));
        assert_eq!(s.get(b"gone"), None, "a delete hides the stored value");
        assert_eq!(s.get(b"old").as_deref(), Some(&b"1"[..]), "an unwritten key is read through");
        assert_eq!(s.inner.write_calls, 0, "nothing reaches the host before the flush");
        assert_eq!(s.inner.state.get(b"key-1"), None);
        s.flush();
        s.flush();
        assert_eq!(s.inner.write_calls, 1, "one call for the batch, none for an empty buffer");
        let state = &s.inner.state;
        assert_eq!(state.entries.len(), 201, "200 keys and `old`: {:?}", state.entries.keys());
        assert_eq!(state.entries[&b"key-7"[..]], b"SEVN");
        assert_eq!(state.entries[&b"key-8"[..]], b"eight!");
        assert_eq!(state.entries[&b"key-199"[..]], 199u32.to_be_bytes());
        // The buffer is empty after a flush: reads go through again.
        s.inner.state.put(b"key-9", b"changed");
        assert_eq!(s.get(b"key-9").as_deref(), Some(&b"changed"[..]));
        assert_eq!(s.inner.value_calls, 0, "no record's own key was read");
    }

    #[test]
    fn a_scan_sees_the_writes_before_it() {
        let (mut buffer, mut provided) = (WriteBuffer::default(), Provided::default());
        let b = batch(&["r"]);
        let mut s = Buffered::new(TestHost::default(), &mut buffer, &mut provided, b.as_bytes());
        s.put(b"p/1", b"a");
        s.put(b"q/1", b"b");
        s.put(b"p/2", b"c");
        s.delete(b"p/1");
        assert_eq!(s.scan_prefix(b"p/", 0), vec![(b"p/2".to_vec(), b"c".to_vec())]);
        assert_eq!(s.inner.write_calls, 1);
    }

    #[test]
    fn a_records_own_key_is_read_from_the_batch_values() {
        let (mut buffer, mut provided) = (WriteBuffer::default(), Provided::default());
        let mut host = TestHost::default();
        host.state.put(b"a", b"1");
        host.state.put(b"c", b"3");
        // `c` is not known to the host's batch values: asked with `get`.
        host.known = vec![b"a".to_vec(), b"b".to_vec()];
        let b = batch(&["a", "b", "a", "c"]);
        let mut s = Buffered::new(host, &mut buffer, &mut provided, b.as_bytes());
        s.at_record(0, Some(b"a"));
        assert_eq!(s.get(b"a").as_deref(), Some(&b"1"[..]));
        s.put(b"a", b"2");
        s.at_record(1, Some(b"b"));
        assert_eq!(s.get(b"b"), None, "known to have no value");
        s.at_record(2, Some(b"a"));
        assert_eq!(s.get(b"a").as_deref(), Some(&b"2"[..]), "the batch's own write comes first");
        assert_eq!((s.inner.value_calls, s.inner.gets), (1, 0), "one call for the batch, no get");
        s.at_record(3, Some(b"c"));
        assert_eq!(s.get(b"c").as_deref(), Some(&b"3"[..]));
        assert_eq!(s.inner.gets, 1, "a value not known is asked for");
        assert_eq!(s.get(b"a").as_deref(), Some(&b"2"[..]), "another key than the record's");
        // A scan sends the writes: the values given before are stale then,
        // and the next read of a record's key asks for them again.
        s.inner.known.push(b"c".to_vec());
        s.put(b"c", b"4");
        s.scan_prefix(b"z", 0);
        assert_eq!(s.get(b"c").as_deref(), Some(&b"4"[..]));
        assert_eq!(s.inner.value_calls, 2);
        // A new batch starts without values.
        s.flush();
        let b2 = batch(&["a"]);
        let mut s2 = Buffered::new(core::mem::take(&mut s.inner), &mut *s.buffer, &mut *s.provided, b2.as_bytes());
        s2.at_record(0, Some(b"a"));
        assert_eq!(s2.get(b"a").as_deref(), Some(&b"2"[..]));
        assert_eq!(s2.inner.value_calls, 3);
    }
}
