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
//!
//! | module      | what it holds                                             |
//! |-------------|-----------------------------------------------------------|
//! | [`model`]   | the operations, their strategy, and the model of the log  |
//! | [`harness`] | the real WAL opened, appended to, read and delivered from |
//! | [`damage`]  | torn commits, flipped bits, cut and deleted segments      |
mod common;

#[path = "wal_model/damage.rs"]
mod damage;
#[path = "wal_model/harness.rs"]
mod harness;
#[path = "wal_model/model.rs"]
mod model;

use proptest::collection::vec;
use proptest::prelude::*;

use damage::{crash, damage, drop_delivered};
use harness::Wal;
use model::{Model, Op, Tail, op};

/// A node id other than 0, so the id's node bits are exercised too.
const NODE_ID: u32 = 3;
/// Lanes of the writer: two, like the two cores this runs on.
const LANES: usize = 2;
/// Reader calls needed to read the whole log, at most: one per segment and
/// one to find the end. Each reopen adds one segment.
const READ_CALLS_MAX: usize = 1_000;

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

#[test]
fn one_reader_hands_over_every_record_in_order_across_read_chunks_segments_and_appends() {
    // Segments of 4 MiB hold four of the reader's 1 MiB read chunks; records
    // of uneven length (patients "a1" to "a240000") make chunks end inside
    // records. The reader is kept across appends, as the flusher keeps it,
    // and takes an odd number of records per call, so one chunk is decoded
    // over many calls, a kept chunk meets bytes committed after it, and a
    // backlog larger than a chunk is read in several.
    const SEGMENT_BYTES: u64 = 4 << 20;
    const ROUNDS: usize = 120;
    const PER_CALL: usize = 997;
    let tmp = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open_with(&tmp.path().join("data"), SEGMENT_BYTES);
    let mut model = Model::default();
    let mut reader = wal.reader();
    let (mut sent, mut got) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        sent.extend(wal.append(&[1000, 1000], &mut model));
        // A backlog of 40 rounds (over 3 MiB) outgrows a read chunk.
        if round % 40 == 39 {
            harness::read_to_end(&mut reader, PER_CALL, &mut got);
        } else if round % 10 == 9 {
            // Part of what is there: the rest waits in the kept chunk.
            let out = reader
                .read(PER_CALL, std::time::Duration::ZERO, |r| {
                    got.push(model::Rec {
                        id: r.id,
                        patient: r.patient_id.to_owned(),
                    })
                })
                .expect("read the log");
            if out.segment_done {
                reader.next_segment();
            }
        }
    }
    harness::read_to_end(&mut reader, PER_CALL, &mut got);
    let first_segment = wal.reader().position().segment;
    assert!(
        reader.position().segment > first_segment,
        "the log never left its first segment; the test crossed too few chunks"
    );
    assert_eq!(got.len(), sent.len());
    assert!(
        got == sent,
        "the reader handed over other records than were acknowledged"
    );
}

#[test]
fn a_directory_with_no_history_takes_its_floor_from_the_caller_once_and_keeps_it() {
    use busyapi::wal::{self, WalError, segment};
    const SEGMENT_BYTES: u64 = busyapi::limits::SEGMENT_BYTES_MIN;
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("data");
    let refused = wal::open(&dir, NODE_ID, SEGMENT_BYTES, || {
        Err(WalError::FreshFloor("MongoDB never answered".into()))
    });
    assert!(refused.is_err(), "the caller's error stops the open");
    assert!(
        segment::list(&dir).expect("list").is_empty(),
        "no segment may fix the ids before the floor is known"
    );
    let opened = wal::open(&dir, NODE_ID, SEGMENT_BYTES, || Ok(41)).expect("open");
    assert_eq!(opened.shared.first_new_id.seq(), 42);
    drop(opened);
    // Its first segment's header holds the floor now: not asked again.
    let reopened = wal::open(&dir, NODE_ID, SEGMENT_BYTES, || {
        panic!("a directory with a segment asked for a floor")
    })
    .expect("reopen");
    assert_eq!(reopened.shared.first_new_id.seq(), 42);
}
