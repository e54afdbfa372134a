//! The operations a run is made of, and the model: what the log owes
//! MongoDB, what it must never hand over again, and the id floor.

use std::collections::HashSet;

use busyapi::wal::Id;
use busyapi::wal::segment::HEADER_BYTES;
use proptest::collection::vec;
use proptest::prelude::*;

/// What a torn commit leaves after its last written byte.
#[derive(Debug, Clone)]
pub enum Tail {
    Nothing,
    /// Blocks the file system allocated but never filled.
    Zeros(usize),
    /// Bytes from anywhere.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
pub enum Op {
    /// Submissions of this many records each, queued together and waited
    /// for: they share group commits.
    Append(Vec<u32>),
    /// The process dies while a commit of `records` records is being
    /// written: the first `keep` bytes (modulo the frame) reach the file,
    /// then `tail`. None of them was acknowledged.
    Crash {
        records: u32,
        keep: usize,
        tail: Tail,
    },
    /// One bit of one intact record flips (picked modulo what exists).
    FlipRecord { pick: usize, byte: usize, bit: u8 },
    /// One bit of one segment header flips.
    FlipHeader { pick: usize, byte: usize, bit: u8 },
    /// A segment loses everything from a byte on (picked modulo its length).
    Cut { pick: usize, keep: usize },
    /// The flusher delivers everything committed, stores the checkpoint and
    /// releases the segments it passed.
    Deliver,
    /// An operator deletes every segment file that owes MongoDB nothing,
    /// the newest too.
    DropDelivered,
    /// A clean stop and start.
    Reopen,
}

pub fn op() -> impl Strategy<Value = Op> {
    let tail = prop_oneof![
        Just(Tail::Nothing),
        (1usize..4096).prop_map(Tail::Zeros),
        vec(any::<u8>(), 1..64).prop_map(Tail::Garbage),
    ];
    prop_oneof![
        6 => vec(1u32..=4, 1..=6).prop_map(Op::Append),
        2 => (1u32..=4, any::<usize>(), tail)
            .prop_map(|(records, keep, tail)| Op::Crash { records, keep, tail }),
        2 => (any::<usize>(), any::<usize>(), 0u8..8)
            .prop_map(|(pick, byte, bit)| Op::FlipRecord { pick, byte, bit }),
        1 => (any::<usize>(), 0..HEADER_BYTES as usize, 0u8..8)
            .prop_map(|(pick, byte, bit)| Op::FlipHeader { pick, byte, bit }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(pick, keep)| Op::Cut { pick, keep }),
        2 => Just(Op::Deliver),
        1 => Just(Op::DropDelivered),
        1 => Just(Op::Reopen),
    ]
}

/// A record as the model knows it; the patient id is unique to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub id: Id,
    pub patient: String,
}

#[derive(Default)]
pub struct Model {
    /// What the log owes MongoDB, in id order.
    pub owed: Vec<Rec>,
    /// Records that must never be read back again: destroyed by damage, or
    /// never written whole by a torn commit.
    pub gone: HashSet<String>,
    pub delivered: HashSet<String>,
    delivered_id_max: Id,
    /// Makes patient ids unique.
    next_patient: u64,
}

impl Model {
    pub fn patient(&mut self, prefix: &str) -> String {
        self.next_patient += 1;
        format!("{prefix}{}", self.next_patient)
    }

    /// Ids handed out from now on must be above this.
    pub fn id_floor(&self) -> Id {
        self.owed
            .last()
            .map_or(Id::MIN, |r| r.id)
            .max(self.delivered_id_max)
    }

    pub fn acknowledged(&mut self, recs: Vec<Rec>) {
        let floor = self.id_floor();
        for (i, r) in recs.iter().enumerate() {
            assert!(
                r.id > floor,
                "id {} handed out again (an existing or delivered record has {floor})",
                r.id
            );
            assert!(i == 0 || recs[i - 1].id < r.id, "ids of one append grow");
        }
        self.owed.extend(recs);
    }

    /// Damage destroyed these records, if the log still owed them.
    pub fn destroyed(&mut self, patients: &[String]) {
        self.owed.retain(|r| !patients.contains(&r.patient));
        self.gone.extend(
            patients
                .iter()
                .filter(|p| !self.delivered.contains(*p))
                .cloned(),
        );
    }

    /// The reader handed over `got`: it must be exactly what is owed.
    pub fn check(&self, got: &[Rec], when: &str) {
        for r in got {
            assert!(!self.gone.contains(&r.patient), "{when}: {r:?} came back");
            assert!(
                !self.delivered.contains(&r.patient),
                "{when}: {r:?} was delivered already"
            );
        }
        assert_eq!(got, self.owed, "{when}: the log holds what it owes");
    }

    pub fn deliver(&mut self) {
        for r in self.owed.drain(..) {
            self.delivered_id_max = self.delivered_id_max.max(r.id);
            self.delivered.insert(r.patient);
        }
    }
}
