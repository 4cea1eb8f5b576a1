//! The write-back cache's storage: one interval's dirty entries in one
//! append-only byte arena, found through a hash table of arena positions.
//!
//! A put appends a record `[key len][value room][value len][key][value]`
//! (three little-endian `u32`s) or, when the key is there already and the
//! new value fits the record's room, rewrites the value in place (a counter
//! never grows its record), unless the record was copied out to be sent to
//! the changelog ahead of the checkpoint ([`Cache::take_unsent`]). A value
//! that outgrows its room gets a new record with twice the room and the old
//! one is marked stale, so a value that keeps growing leaves stale records
//! smaller, in all, than its newest record's room.
//!
//! The table is open addressing with linear probing over 16-byte slots
//! (each entry's hash with its position, so a lookup compares key bytes only
//! on a full hash match), at most half full. A lookup of a key that is not
//! there usually reads one cache line, and the insert that follows it writes
//! that same line. With a million keys the table is far larger than the CPU's
//! caches, so callers with many keys at hand hash them first and
//! [`Cache::prefetch`] their slots, and the misses overlap instead of
//! coming one after the other. Before, the table was hashbrown's, whose
//! control bytes and slots lie apart: a miss read one line and the insert
//! wrote another, cold one (see BENCHMARKS.md, "eleventh").
//!
//! Before that, the cache was a `HashMap<Vec<u8>, Option<Vec<u8>>>`: two heap
//! allocations per dirty key, freed on the checkpoint thread, and a
//! checkpoint's entries scattered over the heap for its changelog records and
//! RocksDB batch to chase (see BENCHMARKS.md). [`Cache::entries`] now reads
//! them in arena order.

use std::hash::BuildHasher;
use std::sync::LazyLock;

/// The value length of a deleted entry.
const DELETED: u32 = u32::MAX;
/// Flag in the key length of a record a later one replaced.
const STALE: u32 = 1 << 31;
const HEADER: usize = 12;

/// A table slot: an entry's hash and its record's position + 1 (0: empty).
#[derive(Clone, Copy, Default)]
struct Slot {
    hash: u64,
    at: usize,
}

/// The hash of every cache's keys: seeded at random once per process, so
/// that keys from Kafka cannot be chosen to collide, and the same in every
/// cache, so that one hash finds a key in a task's cache and in the
/// checkpoint being written.
static HASHER: LazyLock<foldhash::fast::RandomState> = LazyLock::new(Default::default);

/// `key`'s hash, for [`Cache::prefetch`], [`Cache::get_hashed`] and [`Cache::insert_hashed`].
pub fn hash(key: &[u8]) -> u64 {
    HASHER.hash_one(key)
}

fn u32_at(arena: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([arena[at], arena[at + 1], arena[at + 2], arena[at + 3]])
}

fn set_u32(arena: &mut [u8], at: usize, v: u32) {
    arena[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The key of the record at `at`.
fn key_at(arena: &[u8], at: usize) -> &[u8] {
    let len = (u32_at(arena, at) & !STALE) as usize;
    &arena[at + HEADER..at + HEADER + len]
}

/// The value of the record at `at` (`None`: deleted).
fn value_at(arena: &[u8], at: usize) -> Option<&[u8]> {
    let key_len = (u32_at(arena, at) & !STALE) as usize;
    let len = u32_at(arena, at + 8);
    let start = at + HEADER + key_len;
    (len != DELETED).then(|| &arena[start..start + len as usize])
}

/// The length of a key or value as the record stores it. Keys and values
/// come from Kafka records and guest memory (a 32-bit address space), so
/// they are far below the limit.
fn len32(n: usize, what: &str) -> u32 {
    u32::try_from(n).ok().filter(|&n| n < STALE).unwrap_or_else(|| panic!("a state {what} of {n} bytes"))
}

#[derive(Default)]
pub struct Cache {
    arena: Vec<u8>,
    /// A power of two long (or empty), at most half full.
    slots: Vec<Slot>,
    /// Entries in `slots`.
    len: usize,
    /// What the live entries count against `statestore.cache.max.bytes`
    /// ([`super::entry_bytes`] each).
    bytes: usize,
    /// The arena up to here was copied out for the changelog ahead of the
    /// checkpoint ([`Cache::take_unsent`]): its records are never rewritten
    /// in place, so a later value always lands after it.
    sent: usize,
    /// Live entries that are deletes.
    deleted: usize,
}

impl Cache {
    /// Entries (keys) held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// What the cache counts against its limit: the live entries'
    /// [`super::entry_bytes`], or the arena if stale records made it larger.
    pub fn bytes(&self) -> usize {
        self.bytes.max(self.arena.len())
    }

    /// The slot of the entry with `hash` and `key` (`Ok`), or the empty
    /// slot where it would go (`Err`). The table must not be empty.
    fn find(&self, hash: u64, key: &[u8]) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let slot = self.slots[i];
            if slot.at == 0 {
                return Err(i);
            }
            if slot.hash == hash && key_at(&self.arena, slot.at - 1) == key {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Asks the CPU to fetch the slot where a key with `hash` is looked for
    /// first, ahead of a [`Cache::get_hashed`] or [`Cache::insert_hashed`].
    pub fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.slots.len().wrapping_sub(1)) {
            prefetch(slot);
        }
    }

    /// `None`: not in the cache; `Some(None)`: deleted in it.
    pub fn get(&self, key: &[u8]) -> Option<Option<&[u8]>> {
        self.get_hashed(hash(key), key)
    }

    /// [`Cache::get`] of `key`, whose [`hash`] is `hash`.
    pub fn get_hashed(&self, hash: u64, key: &[u8]) -> Option<Option<&[u8]>> {
        if self.len == 0 {
            return None;
        }
        let i = self.find(hash, key).ok()?;
        Some(value_at(&self.arena, self.slots[i].at - 1))
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key` to `value` (`None`: deleted).
    pub fn insert(&mut self, key: &[u8], value: Option<&[u8]>) {
        self.insert_hashed(hash(key), key, value)
    }

    /// [`Cache::insert`] of `key`, whose [`hash`] is `hash`.
    pub fn insert_hashed(&mut self, hash: u64, key: &[u8], value: Option<&[u8]>) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let new_len = value.map_or(0, <[u8]>::len);
        match self.find(hash, key) {
            Ok(i) => {
                let arena = &mut self.arena;
                let at = self.slots[i].at - 1;
                let old = value_at(arena, at);
                self.deleted -= usize::from(old.is_none());
                self.bytes -= super::entry_bytes(key.len(), old.map_or(0, <[u8]>::len));
                let room = u32_at(arena, at + 4) as usize;
                if new_len <= room && at >= self.sent {
                    let start = at + HEADER + key.len();
                    if let Some(v) = value {
                        arena[start..start + v.len()].copy_from_slice(v);
                    }
                    set_u32(arena, at + 8, value.map_or(DELETED, |v| v.len() as u32));
                } else {
                    set_u32(arena, at, len32(key.len(), "key") | STALE);
                    let room = if new_len > room { new_len.max(2 * room) } else { room };
                    self.slots[i].at = append(arena, key, value, room) + 1;
                }
            }
            Err(i) => {
                let at = append(&mut self.arena, key, value, new_len);
                self.slots[i] = Slot { hash, at: at + 1 };
                self.len += 1;
            }
        }
        self.bytes += super::entry_bytes(key.len(), new_len);
        self.deleted += usize::from(value.is_none());
    }

    /// Doubles the table (to 64 slots, from empty), moving the entries by
    /// their stored hashes.
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(64);
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); len]);
        let mask = len - 1;
        for slot in old.into_iter().filter(|s| s.at != 0) {
            let mut i = slot.hash as usize & mask;
            while self.slots[i].at != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }

    /// Entries that are deletes.
    pub fn deleted(&self) -> usize {
        self.deleted
    }

    /// The entries (`None`: deleted), in arena order: the order they were
    /// first written, except that an entry whose value outgrew its record
    /// comes where its newest record is.
    pub fn entries(&self) -> Entries<'_> {
        Entries { arena: &self.arena, at: 0 }
    }

    /// Arena bytes written since the last [`Cache::take_unsent`].
    pub fn unsent_bytes(&self) -> usize {
        self.arena.len() - self.sent
    }

    /// A copy of the records written since the last call, for the changelog
    /// ahead of the checkpoint: later writes to their keys go after them.
    pub fn take_unsent(&mut self) -> Vec<u8> {
        let unsent = self.arena[self.sent..].to_vec();
        self.sent = self.arena.len();
        unsent
    }

    /// The entries not yet taken by [`Cache::take_unsent`], in arena order:
    /// with what was taken, in order, the latest value of every entry.
    pub fn unsent_entries(&self) -> Entries<'_> {
        Entries { arena: &self.arena, at: self.sent }
    }

    /// The keys of the records taken by [`Cache::take_unsent`] (a key may
    /// come more than once).
    pub fn sent_keys(&self) -> impl Iterator<Item = &[u8]> {
        let mut at = 0;
        std::iter::from_fn(move || {
            (at < self.sent).then(|| {
                let key = key_at(&self.arena, at);
                at = next_record(&self.arena, at);
                key
            })
        })
    }

    /// The arena's allocated bytes.
    pub fn capacity(&self) -> usize {
        self.arena.capacity()
    }

    /// Forgets every entry (keeping the memory).
    pub fn clear(&mut self) {
        self.arena.clear();
        self.slots.fill(Slot::default());
        self.len = 0;
        self.bytes = 0;
        self.sent = 0;
        self.deleted = 0;
    }
}

/// A hint to the CPU to bring `slot`'s cache line in; no effect on the program.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
fn prefetch(slot: &Slot) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: SSE is in every x86_64 CPU, and a prefetch neither faults nor
    // changes memory (the address is a live reference besides).
    unsafe { _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(slot).cast::<i8>()) }
}

#[cfg(not(target_arch = "x86_64"))]
fn prefetch(_: &Slot) {}

/// The position of the record after the one at `at`.
fn next_record(arena: &[u8], at: usize) -> usize {
    at + HEADER + (u32_at(arena, at) & !STALE) as usize + u32_at(arena, at + 4) as usize
}

/// The live records of `records`, bytes taken by [`Cache::take_unsent`].
pub fn records(records: &[u8]) -> Entries<'_> {
    Entries { arena: records, at: 0 }
}

/// Appends a record with `room` bytes for its value and returns its position.
fn append(arena: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>, room: usize) -> usize {
    let at = arena.len();
    let value = value.map(|v| (v, len32(v.len(), "value")));
    arena.extend_from_slice(&len32(key.len(), "key").to_le_bytes());
    arena.extend_from_slice(&len32(room, "value").to_le_bytes());
    arena.extend_from_slice(&value.map_or(DELETED, |(_, n)| n).to_le_bytes());
    arena.extend_from_slice(key);
    let v = value.map_or(&[][..], |(v, _)| v);
    arena.extend_from_slice(v);
    arena.resize(arena.len() + room - v.len(), 0);
    at
}

/// The live records of an arena, in arena order.
pub struct Entries<'a> {
    arena: &'a [u8],
    at: usize,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a [u8], Option<&'a [u8]>);

    fn next(&mut self) -> Option<Self::Item> {
        while self.at < self.arena.len() {
            let at = self.at;
            self.at = next_record(self.arena, at);
            if u32_at(self.arena, at) & STALE == 0 {
                return Some((key_at(self.arena, at), value_at(self.arena, at)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A pseudo-random sequence (xorshift64) from `seed`.
    fn xorshift(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// From `r`: one of `keys` keys and a value shorter than `longest` bytes,
    /// or a delete (one in seven).
    fn random_write(r: u64, keys: u64, longest: u64) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = format!("k{}", r % keys).into_bytes();
        (key, (!r.is_multiple_of(7)).then(|| vec![(r >> 8) as u8; ((r >> 16) % longest) as usize]))
    }

    /// Random puts, overwrites (shorter, equal, longer values) and deletes
    /// against a `HashMap`: lookups, the entries and the byte count agree.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut cache = Cache::default();
        let mut model: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..20_000 {
            let r = next();
            let (key, value) = random_write(r, 500, 40);
            cache.insert(&key, value.as_deref());
            model.insert(key, value);
            let probe = format!("k{}", next() % 600).into_bytes();
            assert_eq!(cache.get(&probe), model.get(&probe).map(|v| v.as_deref()));
        }
        assert_eq!(cache.len(), model.len());
        let mut entries: Vec<(Vec<u8>, Option<Vec<u8>>)> =
            cache.entries().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect();
        entries.sort();
        let mut expected: Vec<_> = model.clone().into_iter().collect();
        expected.sort();
        assert_eq!(entries, expected);
        let bytes: usize =
            model.iter().map(|(k, v)| super::super::entry_bytes(k.len(), v.as_ref().map_or(0, Vec::len))).sum();
        assert_eq!(cache.bytes, bytes);
        assert_eq!(cache.deleted(), model.values().filter(|v| v.is_none()).count());
        cache.clear();
        assert_eq!((cache.len(), cache.bytes(), cache.entries().count()), (0, 0, 0));
        // The emptied table keeps its slots and finds nothing it held.
        let (key, _) = model.iter().next().expect("the model holds entries");
        assert_eq!(cache.get(key), None);
        cache.prefetch(hash(key));
        cache.insert_hashed(hash(key), key, Some(b"again"));
        assert_eq!(cache.get(key), Some(Some(&b"again"[..])));
        assert_eq!(cache.len(), 1);
    }

    /// Random writes with the records taken now and then for the changelog:
    /// the taken records, in order, then the entries not taken, applied last
    /// wins, give every entry's latest value.
    #[test]
    fn taken_records_then_the_rest_replay_to_the_latest_values() {
        let mut cache = Cache::default();
        let mut model: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut taken: Vec<Vec<u8>> = Vec::new();
        let mut next = xorshift(0x2545_F491_4F6C_DD1D);
        for i in 0..20_000 {
            let r = next();
            let (key, value) = random_write(r, 300, 12);
            cache.insert(&key, value.as_deref());
            model.insert(key, value);
            if i % 997 == 0 {
                taken.push(cache.take_unsent());
                assert_eq!(cache.unsent_bytes(), 0);
            }
        }
        let mut replayed: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let chunks = taken.iter().flat_map(|t| records(t)).chain(cache.unsent_entries());
        for (k, v) in chunks {
            replayed.insert(k.to_vec(), v.map(<[u8]>::to_vec));
        }
        assert_eq!(replayed, model);
        let sent: std::collections::HashSet<&[u8]> = cache.sent_keys().collect();
        let expected: std::collections::HashSet<&[u8]> =
            taken.iter().flat_map(|t| records(t)).map(|(k, _)| k).collect();
        assert!(expected.is_subset(&sent));
    }

    /// A value rewritten 4,000 times, one byte longer each time: the stale
    /// records it leaves stay within a small multiple of its size, and what
    /// the cache counts against its limit covers the arena.
    #[test]
    fn a_growing_value_leaves_bounded_stale_records() {
        let mut cache = Cache::default();
        let mut value = Vec::new();
        for i in 0..4000u32 {
            value.push(i as u8);
            cache.insert(b"list", Some(&value));
            cache.insert(format!("other{}", i % 3).as_bytes(), Some(b"x"));
        }
        assert_eq!(cache.get(b"list"), Some(Some(&value[..])));
        assert_eq!(cache.entries().count(), 4);
        assert!(
            cache.arena.len() < 5 * value.len(),
            "arena {} bytes for a {}-byte value",
            cache.arena.len(),
            value.len()
        );
        assert!(cache.bytes() >= cache.arena.len());
    }
}
