//! The WAL against a model, driven by proptest.
//!
//! The real code runs: [`wal::open`] (recovery and the id floor), the
//! group-commit writer ([`writer::spawn`], [`Lanes::submit`], replies on
//! may's channel, which works from plain threads), the flusher's reader
//! ([`WalReader`]), [`checkpoint::store`] and [`WalShared::release_before`].
//! Between runs the test damages the files the way crashes and disks do: a
//! commit torn mid-write, a flipped bit in a record or a header, a segment
//! cut short.
//!
//! The model is a list of the records the log owes MongoDB, in id order: what
//! was acknowledged, plus whatever a torn commit wrote whole (recovery must
//! keep every intact record). Damage takes records off the list; delivery
//! moves them to the delivered set. After every reopen, and at every
//! delivery, what the reader hands over must be exactly that list. A record
//! that damage destroyed, that was delivered, or that a torn commit never
//! wrote whole, never comes back. Every id handed out is above every id of a
//! record that still exists or was delivered, so no two of those ever share
//! an id. (The id of a record that a truncation removed from the very end of
//! the log may be handed out again: no byte of it is left to tell recovery
//! it existed. Ids that damaged-but-present bytes could hold are skipped.)

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use busyapi::ingest::{PatientId, Usage};
use busyapi::limits::{SEQ_BITS, SEQ_MAX};
use busyapi::wal::checkpoint::{self, Checkpoint};
use busyapi::wal::reader::WalReader;
use busyapi::wal::record::{self, Decoded};
use busyapi::wal::segment::{self, HEADER_BYTES};
use busyapi::wal::{self, Lanes, Reply, Submission, WalShared, writer};
use proptest::collection::vec;
use proptest::prelude::*;

/// A node id other than 0, so the id's node bits are exercised too.
const NODE_ID: u32 = 3;
/// Lanes of the writer: two, like the two cores this runs on.
const LANES: usize = 2;
/// Reader calls needed to read the whole log, at most: one per segment and
/// one to find the end. Each reopen adds one segment.
const READ_CALLS_MAX: usize = 1_000;

/// What a torn commit leaves after its last written byte.
#[derive(Debug, Clone)]
enum Tail {
    Nothing,
    /// Blocks the file system allocated but never filled.
    Zeros(usize),
    /// Bytes from anywhere.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Op {
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

fn op() -> impl Strategy<Value = Op> {
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
struct Rec {
    id: u64,
    patient: String,
}

#[derive(Default)]
struct Model {
    /// What the log owes MongoDB, in id order.
    owed: Vec<Rec>,
    /// Records that must never be read back again: destroyed by damage, or
    /// never written whole by a torn commit.
    gone: HashSet<String>,
    delivered: HashSet<String>,
    delivered_id_max: u64,
    /// Makes patient ids unique.
    next_patient: u64,
}

impl Model {
    fn patient(&mut self, prefix: &str) -> String {
        self.next_patient += 1;
        format!("{prefix}{}", self.next_patient)
    }

    /// Ids handed out from now on must be above this.
    fn id_floor(&self) -> u64 {
        self.owed
            .last()
            .map_or(0, |r| r.id)
            .max(self.delivered_id_max)
    }

    fn acknowledged(&mut self, recs: Vec<Rec>) {
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
    fn destroyed(&mut self, patients: &[String]) {
        self.owed.retain(|r| !patients.contains(&r.patient));
        self.gone.extend(
            patients
                .iter()
                .filter(|p| !self.delivered.contains(*p))
                .cloned(),
        );
    }

    /// The reader handed over `got`: it must be exactly what is owed.
    fn check(&self, got: &[Rec], when: &str) {
        for r in got {
            assert!(!self.gone.contains(&r.patient), "{when}: {r:?} came back");
            assert!(
                !self.delivered.contains(&r.patient),
                "{when}: {r:?} was delivered already"
            );
        }
        assert_eq!(got, self.owed, "{when}: the log holds what it owes");
    }

    fn deliver(&mut self) {
        for r in self.owed.drain(..) {
            self.delivered_id_max = self.delivered_id_max.max(r.id);
            self.delivered.insert(r.patient);
        }
    }
}

/// An open WAL with its writer running.
struct Wal {
    dir: PathBuf,
    shared: Arc<WalShared>,
    lanes: Arc<Lanes>,
    writer: Option<JoinHandle<()>>,
    /// Where delivery resumes.
    ckpt: Checkpoint,
}

impl Wal {
    fn open(dir: &Path) -> Wal {
        let opened = wal::open(dir, NODE_ID, busyapi::limits::SEGMENT_BYTES_MIN)
            .expect("recovery never refuses to start");
        let lanes = Lanes::new(LANES);
        let writer =
            writer::spawn(lanes.clone(), opened.shared.clone(), opened.active).expect("writer");
        Wal {
            dir: dir.to_path_buf(),
            shared: opened.shared,
            lanes,
            writer: Some(writer),
            ckpt: opened.resume,
        }
    }

    fn close(&mut self) {
        self.lanes.stop();
        if let Some(w) = self.writer.take() {
            w.join().expect("the writer exits cleanly");
        }
    }

    /// Queues every submission, then waits for each acknowledgement.
    fn append(&self, counts: &[u32], model: &mut Model) -> Vec<Rec> {
        let mut waiting = Vec::new();
        for (lane, &count) in counts.iter().enumerate() {
            let patients: Vec<String> = (0..count).map(|_| model.patient("a")).collect();
            let mut staged = Vec::new();
            for p in &patients {
                record::stage(&usage(p), 1, &mut staged);
            }
            let (reply, rx) = may::sync::mpsc::channel::<Reply>();
            let sub = Submission {
                staged,
                count,
                reply,
            };
            if self.lanes.submit(lane, sub).is_err() {
                panic!("a lane of {} refused a submission", LANES);
            }
            waiting.push((patients, rx));
        }
        let mut recs = Vec::new();
        for (patients, rx) in waiting {
            let first = rx.recv().expect("a reply").first_id.expect("a commit");
            recs.extend(patients.into_iter().enumerate().map(|(i, patient)| Rec {
                id: first + i as u64,
                patient,
            }));
        }
        recs.sort_by_key(|r| r.id);
        recs
    }

    /// Reads everything committed from the checkpoint on, the way the
    /// flusher does; returns it and the checkpoint just past it.
    fn read_owed(&self) -> (Vec<Rec>, Checkpoint) {
        let mut reader = WalReader::new(self.shared.clone(), self.ckpt);
        let mut got = Vec::new();
        for _ in 0..READ_CALLS_MAX {
            let out = reader
                .read(usize::MAX, Duration::ZERO, |r| {
                    got.push(Rec {
                        id: r.id,
                        patient: r.patient_id.to_owned(),
                    })
                })
                .expect("read the log");
            if out.segment_done {
                reader.next_segment();
            } else if out.records == 0 {
                let (segment_no, offset) = reader.position();
                let last_seq = got
                    .iter()
                    .map(|r: &Rec| r.id & SEQ_MAX)
                    .fold(self.ckpt.last_seq, u64::max);
                let next = Checkpoint {
                    segment_no,
                    offset,
                    last_seq,
                };
                return (got, next);
            }
        }
        panic!("the reader did not reach the end of the log");
    }

    fn deliver(&mut self) -> Vec<Rec> {
        let (got, next) = self.read_owed();
        checkpoint::store(&self.dir, &next).expect("store the checkpoint");
        self.shared
            .release_before(next.segment_no)
            .expect("release delivered segments");
        self.ckpt = next;
        got
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

fn usage(patient: &str) -> Usage<'_> {
    Usage {
        patient_id: PatientId::Text(patient),
        timestamp_ms: 7,
        medication: "Albuterol",
    }
}

/// The intact records of a segment file as (byte range, patient id), found
/// the way recovery finds them.
fn record_spans(bytes: &[u8]) -> Vec<(Range<usize>, String)> {
    let mut spans = Vec::new();
    let (mut pos, mut last) = (HEADER_BYTES as usize, 0);
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Decoded::Record(r, n) if r.id > last => {
                spans.push((pos..pos + n, r.patient_id.to_owned()));
                last = r.id;
                pos += n;
            }
            _ => match record::resync(&bytes[pos..], last) {
                Some(skip) => pos += skip,
                None => break,
            },
        }
    }
    spans
}

fn segments(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    segment::list(dir)
        .expect("list segments")
        .into_iter()
        .map(|no| (no, fs::read(segment::path_of(dir, no)).expect("read")))
        .collect()
}

fn write_segment(dir: &Path, no: u64, bytes: &[u8]) {
    fs::write(segment::path_of(dir, no), bytes).expect("rewrite a segment");
}

/// The id the writer would have given its next record.
fn next_id(wal: &Wal) -> u64 {
    let last = wal.shared.last_id();
    if last != 0 {
        return last + 1;
    }
    let (_, active) = segments(&wal.dir).pop().expect("the active segment");
    let base_seq = u64::from_le_bytes(active[24..32].try_into().expect("8 bytes"));
    (u64::from(NODE_ID) << SEQ_BITS) | base_seq
}

/// A commit of `records` records torn after `keep` bytes (modulo its
/// length). Returns the records it wrote whole, and the patients of those it
/// did not.
fn crash(
    wal: &Wal,
    model: &mut Model,
    records: u32,
    keep: usize,
    tail: &Tail,
) -> (Vec<Rec>, Vec<String>) {
    let first = next_id(wal);
    let mut framed = Vec::new();
    let mut recs = Vec::new();
    let mut ends = Vec::new();
    for i in 0..u64::from(records) {
        let patient = model.patient("c");
        let mut staged = Vec::new();
        record::stage(&usage(&patient), 1, &mut staged);
        record::frame_staged(&staged, first + i, &mut framed);
        ends.push(framed.len());
        recs.push(Rec {
            id: first + i,
            patient,
        });
    }
    let keep = keep % (framed.len() + 1);
    let mut torn = framed[..keep].to_vec();
    match tail {
        Tail::Nothing => {}
        Tail::Zeros(n) => torn.resize(torn.len() + n, 0),
        Tail::Garbage(g) => torn.extend_from_slice(g),
    }
    let (no, _) = segments(&wal.dir).pop().expect("the active segment");
    OpenOptions::new()
        .append(true)
        .open(segment::path_of(&wal.dir, no))
        .and_then(|mut f| f.write_all(&torn))
        .expect("append the torn commit");
    let whole = ends.iter().take_while(|&&end| end <= keep).count();
    let lost = recs.split_off(whole);
    (recs, lost.into_iter().map(|r| r.patient).collect())
}

/// Applies a damaging op to the closed log; returns the patients whose
/// records it destroyed.
fn damage(dir: &Path, op: &Op) -> Vec<String> {
    let segs = segments(dir);
    match *op {
        Op::FlipRecord { pick, byte, bit } => {
            let all: Vec<_> = segs
                .iter()
                .flat_map(|(no, bytes)| record_spans(bytes).into_iter().map(move |s| (*no, s)))
                .collect();
            let Some((no, (span, patient))) = all.get(pick % all.len().max(1)).cloned() else {
                return Vec::new();
            };
            let (_, bytes) = segs.iter().find(|(n, _)| *n == no).expect("segment");
            let mut bytes = bytes.clone();
            bytes[span.start + byte % span.len()] ^= 1 << bit;
            write_segment(dir, no, &bytes);
            vec![patient]
        }
        Op::FlipHeader { pick, byte, bit } => {
            let (no, bytes) = &segs[pick % segs.len()];
            let mut bytes = bytes.clone();
            bytes[byte] ^= 1 << bit;
            write_segment(dir, *no, &bytes);
            // A damaged header is rebuilt and the records behind it kept;
            // a flip in the padding after the CRC is not even damage.
            Vec::new()
        }
        Op::Cut { pick, keep } => {
            let (no, bytes) = &segs[pick % segs.len()];
            let keep = keep % (bytes.len() + 1);
            write_segment(dir, *no, &bytes[..keep]);
            record_spans(bytes)
                .into_iter()
                .filter(|(span, _)| keep < HEADER_BYTES as usize || span.end > keep)
                .map(|(_, p)| p)
                .collect()
        }
        _ => unreachable!("not a damaging op"),
    }
}

fn drop_delivered(dir: &Path, model: &Model) {
    for (no, bytes) in segments(dir) {
        if record_spans(&bytes)
            .iter()
            .all(|(_, p)| model.delivered.contains(p))
        {
            fs::remove_file(segment::path_of(dir, no)).expect("delete a segment");
        }
    }
}

fn run(ops: &[Op]) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let mut model = Model::default();
    let mut wal = Wal::open(&dir);
    model.check(&wal.read_owed().0, "a new log");
    for (step, op) in ops.iter().enumerate() {
        let when = format!("after step {step} ({op:?})");
        match op {
            Op::Append(counts) => {
                let recs = wal.append(counts, &mut model);
                model.acknowledged(recs);
                continue;
            }
            Op::Deliver => {
                model.check(&wal.deliver(), &when);
                model.deliver();
                continue;
            }
            Op::Crash {
                records,
                keep,
                tail,
            } => {
                wal.close();
                let (written, lost) = crash(&wal, &mut model, *records, *keep, tail);
                model.owed.extend(written);
                model.gone.extend(lost);
            }
            Op::FlipRecord { .. } | Op::FlipHeader { .. } | Op::Cut { .. } => {
                wal.close();
                let destroyed = damage(&dir, op);
                model.destroyed(&destroyed);
            }
            Op::DropDelivered => {
                wal.close();
                drop_delivered(&dir, &model);
            }
            Op::Reopen => wal.close(),
        }
        drop(wal);
        wal = Wal::open(&dir);
        model.check(&wal.read_owed().0, &when);
    }
    drop(wal);
    let wal = Wal::open(&dir);
    model.check(&wal.read_owed().0, "at the end");
    let last = wal.append(&[1], &mut model);
    model.acknowledged(last);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 40,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_wal_holds_exactly_what_it_owes_through_crashes_damage_and_delivery(
        ops in vec(op(), 1..30)
    ) {
        run(&ops);
    }
}

#[test]
fn a_torn_commit_after_a_delivered_and_released_log_keeps_ids_above_the_delivered_ones() {
    run(&[
        Op::Append(vec![3, 2]),
        Op::Deliver,
        Op::Reopen,
        Op::Deliver,
        Op::Crash {
            records: 2,
            keep: 0,
            tail: Tail::Garbage(vec![0xff; 9]),
        },
        Op::Append(vec![1]),
    ]);
}

#[test]
fn new_records_are_read_when_every_delivered_segment_file_was_deleted() {
    run(&[
        Op::Append(vec![4, 4]),
        Op::Deliver,
        Op::DropDelivered,
        Op::Append(vec![1]),
        Op::Reopen,
        Op::Append(vec![2]),
        Op::Reopen,
    ]);
}
