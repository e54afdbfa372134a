//! The same-node retry window: `(patientId, eventId)` → the id of the
//! first acknowledged record of that event, for the last
//! [`RETRY_WINDOW_EVENTS`] or so events with an eventId this node
//! acknowledged.
//!
//! A device that retries after a lost 201 gets the same `id` as the first
//! time, and nothing is written again, as long as its retry reaches the
//! node that took the first copy and that node still remembers the pair.
//! Everywhere else (another node, an evicted pair, a restart: the window
//! lives in memory only) the retry is written as a new record, and the
//! unique `{patientId, eventId}` index in MongoDB keeps the first document.
//! The window is a shortcut in front of that rule, never the rule itself,
//! so it may forget: a miss costs one more WAL record, never a second
//! document.
//!
//! # Lifecycle of an entry
//! - Filled once the record is durable: after the fsync, when its 201 is
//!   written ([`Pending::acknowledged`]). A pair already there keeps its
//!   first id.
//! - Consulted before a usage with an eventId is staged
//!   ([`RetryWindow::first_id`]). Two copies in flight at once both miss
//!   and are both written; MongoDB's index then stores one.
//! - Evicted first in, first out, per shard.
//!
//! # Cost
//! The pairs are spread over [`RETRY_WINDOW_SHARDS`] shards by a keyed
//! hash, each a `parking_lot::Mutex` held for one lookup or one insert, so
//! the workers rarely meet on one. Slots are preallocated (their pages are
//! touched as they fill) and hold the key bytes themselves, so neither
//! path allocates, and a hit is confirmed byte for byte: a hash collision
//! can only cost a miss. A usage without an eventId never comes here.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use parking_lot::Mutex;

use crate::limits::{
    BUF_BYTES_KEPT_MAX, EVENT_ID_BYTES_MAX, PATIENT_ID_BYTES_MAX, RETRY_WINDOW_EVENTS,
    RETRY_WINDOW_SHARDS,
};
use crate::wal::Id;

/// The key bytes a slot holds: the stored patientId, then the eventId.
const KEY_BYTES_MAX: usize = PATIENT_ID_BYTES_MAX + EVENT_ID_BYTES_MAX;

/// One remembered event.
struct Slot {
    /// The pair's hash, to unlink the slot from the index on eviction.
    hash: u64,
    /// The first acknowledged record's id.
    id: Id,
    /// `key[..patient_len]` is the patientId, then `event_len` bytes of
    /// eventId.
    patient_len: u8,
    event_len: u8,
    key: [u8; KEY_BYTES_MAX],
}

impl Slot {
    fn holds(&self, patient: &[u8], event: &[u8]) -> bool {
        let p = usize::from(self.patient_len);
        let e = usize::from(self.event_len);
        &self.key[..p] == patient && &self.key[p..p + e] == event
    }

    fn fill(&mut self, hash: u64, patient: &[u8], event: &[u8], id: Id) {
        self.hash = hash;
        self.id = id;
        // Ingest bounds both, and the u8 lengths hold those bounds.
        self.patient_len = patient.len() as u8;
        self.event_len = event.len() as u8;
        self.key[..patient.len()].copy_from_slice(patient);
        self.key[patient.len()..patient.len() + event.len()].copy_from_slice(event);
    }
}

/// One shard: a ring of slots, oldest overwritten first, and an index
/// from hash to slot.
struct Shard {
    slots: Vec<Slot>,
    /// Where the next pair goes once `slots` is full.
    next: usize,
    index: HashMap<u64, usize>,
}

impl Shard {
    fn new(capacity: usize) -> Shard {
        Shard {
            slots: Vec::with_capacity(capacity),
            next: 0,
            // Twice the pairs: evictions leave tombstones, and hashbrown
            // then rehashes in place, without allocating, only while the
            // pairs fill at most half of what it was sized for.
            index: HashMap::with_capacity(2 * capacity),
        }
    }

    fn get(&self, hash: u64, patient: &[u8], event: &[u8]) -> Option<Id> {
        let slot = &self.slots[*self.index.get(&hash)?];
        slot.holds(patient, event).then_some(slot.id)
    }

    fn insert(&mut self, hash: u64, patient: &[u8], event: &[u8], id: Id, capacity: usize) {
        if self.get(hash, patient, event).is_some() {
            return;
        }
        let at = if self.slots.len() < capacity {
            self.slots.push(Slot {
                hash: 0,
                id,
                patient_len: 0,
                event_len: 0,
                key: [0; KEY_BYTES_MAX],
            });
            self.slots.len() - 1
        } else {
            let at = self.next;
            self.next = (at + 1) % capacity;
            let old = self.slots[at].hash;
            // A colliding newer pair may have taken the index entry over.
            if self.index.get(&old) == Some(&at) {
                self.index.remove(&old);
            }
            at
        };
        self.slots[at].fill(hash, patient, event, id);
        self.index.insert(hash, at);
    }
}

/// The window; one per process, shared by every connection.
pub struct RetryWindow {
    hasher: RandomState,
    shards: Box<[Mutex<Shard>]>,
    /// Pairs each shard holds before it evicts.
    shard_capacity: usize,
}

impl Default for RetryWindow {
    fn default() -> Self {
        RetryWindow::new(RETRY_WINDOW_EVENTS)
    }
}

impl RetryWindow {
    /// A window of about `events` pairs (rounded down to a multiple of the
    /// shard count, at least one per shard). Production uses
    /// [`RETRY_WINDOW_EVENTS`]; tests pass small sizes to see eviction.
    pub fn new(events: usize) -> RetryWindow {
        let shard_capacity = (events / RETRY_WINDOW_SHARDS).max(1);
        RetryWindow {
            hasher: RandomState::new(),
            shards: (0..RETRY_WINDOW_SHARDS)
                .map(|_| Mutex::new(Shard::new(shard_capacity)))
                .collect(),
            shard_capacity,
        }
    }

    fn shard(&self, patient: &[u8], event: &[u8]) -> (u64, &Mutex<Shard>) {
        let hash = self.hasher.hash_one((patient, event));
        // The index uses the whole hash; the shard, its top bits.
        let shard = (hash >> 32) as usize % self.shards.len();
        (hash, &self.shards[shard])
    }

    /// The id the first acknowledged record of this event got, if the
    /// window still holds the pair.
    pub fn first_id(&self, patient: &[u8], event: &[u8]) -> Option<Id> {
        let (hash, shard) = self.shard(patient, event);
        shard.lock().get(hash, patient, event)
    }

    /// Remembers that the event's record was acknowledged as `id`, unless
    /// the pair is already known (its first id stays).
    pub fn remember(&self, patient: &[u8], event: &[u8], id: Id) {
        assert!(
            patient.len() <= PATIENT_ID_BYTES_MAX && event.len() <= EVENT_ID_BYTES_MAX,
            "ingest bounds patientId and eventId"
        );
        let (hash, shard) = self.shard(patient, event);
        shard
            .lock()
            .insert(hash, patient, event, id, self.shard_capacity);
    }
}

/// The events with an eventId among a connection's staged usages, until
/// their commit answers: then [`Pending::acknowledged`] puts them into the
/// window. The bytes are reused from round to round.
#[derive(Default)]
pub struct Pending {
    /// Per event: its index among the staged records (u32), then a u8
    /// length and the bytes of the patientId, then of the eventId.
    bytes: Vec<u8>,
}

impl Pending {
    /// Notes that staged record `index` is this event.
    pub fn push(&mut self, index: usize, patient: &[u8], event: &[u8]) {
        // Ingest bounds both keys, and a round stages at most
        // PIPELINE_REQUESTS_MAX records.
        self.bytes.extend_from_slice(&(index as u32).to_le_bytes());
        self.bytes.push(patient.len() as u8);
        self.bytes.extend_from_slice(patient);
        self.bytes.push(event.len() as u8);
        self.bytes.extend_from_slice(event);
    }

    /// The staged records were acknowledged, numbered from `first_id`:
    /// the window learns their events.
    pub fn acknowledged(&mut self, window: &RetryWindow, first_id: Id) {
        let mut rest = &self.bytes[..];
        while let [i0, i1, i2, i3, p_len, after @ ..] = rest {
            let index = u32::from_le_bytes([*i0, *i1, *i2, *i3]);
            let (patient, after) = after.split_at(usize::from(*p_len));
            let Some((e_len, after)) = after.split_first() else {
                break;
            };
            let (event, after) = after.split_at(usize::from(*e_len));
            window.remember(patient, event, first_id.plus(u64::from(index)));
            rest = after;
        }
        self.clear();
    }

    /// Forgets the noted events: their records were not acknowledged.
    pub fn clear(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > BUF_BYTES_KEPT_MAX {
            self.bytes = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: usize) -> Vec<u8> {
        format!("evt-{i}").into_bytes()
    }

    #[test]
    fn a_remembered_pair_answers_its_first_id_and_only_for_that_patient() {
        let w = RetryWindow::new(RETRY_WINDOW_SHARDS);
        assert_eq!(w.first_id(b"p", b"e"), None);
        w.remember(b"p", b"e", Id::from_raw(7));
        w.remember(b"p", b"e", Id::from_raw(9));
        assert_eq!(w.first_id(b"p", b"e"), Some(Id::from_raw(7)));
        assert_eq!(w.first_id(b"q", b"e"), None);
        assert_eq!(w.first_id(b"p", b"f"), None);
        // The split between the two fields is part of the key.
        w.remember(b"ab", b"c", Id::from_raw(1));
        assert_eq!(w.first_id(b"a", b"bc"), None);
    }

    #[test]
    fn keys_at_their_bounds_fit() {
        let w = RetryWindow::new(RETRY_WINDOW_SHARDS);
        let p = vec![b'p'; PATIENT_ID_BYTES_MAX];
        let e = vec![b'e'; EVENT_ID_BYTES_MAX];
        w.remember(&p, &e, Id::from_raw(3));
        assert_eq!(w.first_id(&p, &e), Some(Id::from_raw(3)));
    }

    #[test]
    fn the_window_forgets_the_oldest_pairs_and_never_holds_more_than_its_size() {
        let size = 4 * RETRY_WINDOW_SHARDS;
        let w = RetryWindow::new(size);
        let n = 20 * size;
        for i in 0..n {
            w.remember(b"p", &event(i), Id::from_raw(i as u64 + 1));
        }
        let held: Vec<usize> = (0..n)
            .filter(|&i| w.first_id(b"p", &event(i)).is_some())
            .collect();
        assert!(
            w.first_id(b"p", &event(0)).is_none(),
            "the first pair was evicted"
        );
        assert_eq!(
            w.first_id(b"p", &event(n - 1)),
            Some(Id::from_raw(n as u64)),
            "the newest pair is held, with its id"
        );
        assert_eq!(held.len(), size, "every shard is full");
        for i in held {
            assert_eq!(
                w.first_id(b"p", &event(i)),
                Some(Id::from_raw(i as u64 + 1))
            );
        }
    }

    #[test]
    fn pending_events_are_remembered_under_their_own_ids_once_acknowledged() {
        // Two slots a shard: the two pairs held at once may hash to one
        // shard (1 run in 64), and neither may evict the other.
        let w = RetryWindow::new(2 * RETRY_WINDOW_SHARDS);
        let mut pending = Pending::default();
        pending.push(0, b"p", b"a");
        pending.push(
            2,
            &[b'p'; PATIENT_ID_BYTES_MAX],
            &[b'e'; EVENT_ID_BYTES_MAX],
        );
        pending.acknowledged(&w, Id::from_raw(10));
        assert_eq!(w.first_id(b"p", b"a"), Some(Id::from_raw(10)));
        assert_eq!(
            w.first_id(&[b'p'; PATIENT_ID_BYTES_MAX], &[b'e'; EVENT_ID_BYTES_MAX]),
            Some(Id::from_raw(12))
        );
        pending.push(0, b"p", b"b");
        pending.clear();
        pending.acknowledged(&w, Id::from_raw(20));
        assert_eq!(
            w.first_id(b"p", b"b"),
            None,
            "a refused commit teaches nothing"
        );
    }

    #[test]
    fn a_slot_is_the_size_the_limits_module_states() {
        assert_eq!(std::mem::size_of::<Slot>(), 216);
    }

    #[test]
    fn neither_the_slots_nor_the_index_grow_however_many_pairs_pass() {
        let per_shard = 64;
        let w = RetryWindow::new(per_shard * RETRY_WINDOW_SHARDS);
        let sized: Vec<usize> = w.shards.iter().map(|s| s.lock().index.capacity()).collect();
        for i in 0..200 * per_shard * RETRY_WINDOW_SHARDS {
            w.remember(b"p", &event(i), Id::from_raw(1));
        }
        for (shard, index_capacity) in w.shards.iter().zip(sized) {
            let s = shard.lock();
            assert_eq!((s.slots.len(), s.slots.capacity()), (per_shard, per_shard));
            // Tombstones lower what capacity() reports; growing raises it.
            assert!(s.index.capacity() <= index_capacity, "the index grew");
        }
    }
}
