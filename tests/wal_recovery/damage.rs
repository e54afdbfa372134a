//! Damage between runs, the way disks and crashes leave it: a torn tail,
//! zeros after the last record, a flipped bit in a sealed segment, a damaged
//! segment header, a segment torn at creation. What is cut is quarantined,
//! what is intact is kept and delivered, and new ids stay above the old.

use std::collections::BTreeSet;

use busyapi::wal::{Id, checkpoint};

use super::*;
use common::{Mongo, wait_for};

#[test]
fn a_torn_tail_is_cut_and_quarantined_and_the_server_starts_and_serves_higher_ids() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    stop(&mut server);

    let no = newest_segment(&dir);
    let spans = record_spans(&segment_bytes(&dir, no), |r| r.id.raw());
    assert_eq!(spans.iter().map(|(_, id)| *id).collect::<Vec<_>>(), acked);
    let last = spans[9].0.clone();
    let garbage = [0xa5u8; 100];
    let mut cut = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes.truncate(last.start + last.len() / 2);
        bytes.extend_from_slice(&garbage);
        cut = bytes[last.start..].to_vec();
    });

    let mut floor = acked[8];
    for restart in 0..2 {
        server.restart();
        assert_eq!(
            quarantined(&dir),
            [(format!("{no:020}-{}.bin", last.start), cut.clone())],
            "restart {restart}: the cut bytes, once"
        );
        assert_eq!(
            segment_bytes(&dir, no).len(),
            last.start,
            "cut at the last intact record"
        );
        let new = post_many(&server, 3);
        assert_all_above(&new, floor, "after a torn tail");
        floor = new[2];
        stop(&mut server);
    }
    assert_eq!(
        wal_ids(&dir)[..9],
        acked[..9],
        "every intact record is kept"
    );
}

#[test]
fn zeros_after_the_last_record_are_cut_without_a_quarantine_file() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    server.kill9();

    let no = newest_segment(&dir);
    let len = logical_end(&dir, no);
    rewrite(&dir, no, |bytes| {
        bytes.truncate(len);
        bytes.resize(len + 8192, 0);
    });
    server.restart();
    assert_eq!(segment_bytes(&dir, no).len(), len, "the zeros are cut");
    assert_eq!(quarantined(&dir), [], "zeros are not worth quarantining");
    let new = post_many(&server, 3);
    assert_all_above(&new, acked[9], "after a zero-filled tail");
    assert_eq!(wal_ids(&dir), [acked, new].concat());
}

#[test]
fn a_damaged_record_in_a_sealed_segment_is_quarantined_and_later_records_reach_mongodb() {
    let db = "wal_recovery_damaged_record";
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let acked = post_many(&server, 10);
    stop(&mut server);
    server.restart();
    let later = post_many(&server, 5);
    stop(&mut server);
    drop(server);

    let no = segment::list(&dir).expect("list")[0];
    let spans = record_spans(&segment_bytes(&dir, no), |r| r.id.raw());
    let third = spans[2].0.clone();
    assert_eq!(spans[2].1, acked[2]);
    let mut damaged = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes[third.start + 20] ^= 0x08; // inside receivedAt
        damaged = bytes[third.clone()].to_vec();
    });

    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 3);
    assert_all_above(&new, later[4], "after a damaged record");
    let mut expected = [acked, later, new].concat();
    let lost = expected.remove(2);
    wait_for(DELIVERY, "every intact record in MongoDB", || {
        stored_ids(&usages(&client, db)) == expected
    });
    assert_eq!(
        quarantined(&dir),
        [(format!("{no:020}-{}.bin", third.start), damaged)],
        "the damaged record's bytes (id {lost}) are in quarantine"
    );
}

#[test]
fn a_segment_with_a_damaged_header_gets_a_new_one_and_keeps_its_records() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let first = post_many(&server, 5);
    stop(&mut server);
    server.restart();
    let second = post_many(&server, 5);
    stop(&mut server);

    let no = segment::list(&dir).expect("list")[0];
    let mut original = Vec::new();
    rewrite(&dir, no, |bytes| {
        bytes[20] ^= 0x01; // the segment number: the header CRC fails
        original = bytes[..HEADER_BYTES as usize].to_vec();
    });
    server.restart();
    assert_eq!(
        quarantined(&dir),
        [(format!("{no:020}-0.bin"), original)],
        "the old header is kept for an operator"
    );
    assert!(segment::list(&dir).expect("list").contains(&no));
    let mut all = first.clone();
    all.extend(&second);
    assert_eq!(wal_ids(&dir), all, "the records behind the header are kept");
    let new = post_many(&server, 3);
    assert_all_above(&new, first[4].max(second[4]), "after a damaged header");
    stop(&mut server);
    server.restart();
    assert_eq!(
        quarantined(&dir).len(),
        1,
        "a second start finds nothing new"
    );
}

#[test]
fn a_segment_torn_at_creation_is_quarantined_and_the_server_still_starts() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let first = post_many(&server, 5);
    stop(&mut server);
    // A crash between creating the next segment and syncing its header.
    let torn_no = segment::list(&dir)
        .expect("list")
        .last()
        .expect("a segment")
        + 1;
    let torn = b"BUSYWAL1\x01\x00\x00".to_vec();
    fs::write(segment::path_of(&dir, torn_no), &torn).expect("write a torn segment");
    server.restart();
    assert_eq!(
        quarantined(&dir),
        [(format!("{torn_no:020}.bad-header"), torn)]
    );
    assert!(!segment::list(&dir).expect("list").contains(&torn_no));
    assert_eq!(wal_ids(&dir), first, "the records before it are untouched");
    let new = post_many(&server, 3);
    assert_all_above(&new, first[4], "after a torn creation");
    stop(&mut server);
}

#[test]
fn every_record_of_the_checkpoints_segment_and_after_reaches_mongodb_when_its_header_was_damaged() {
    let db = "wal_recovery_checkpoint_segment_header";
    let mut mongo = Mongo::start();
    let (_tmp, dir) = data_dir();
    let opts = Opts::default()
        .data_dir(&dir)
        .mongo(mongo.uri(), db)
        .arg("--shutdown-grace-secs 0");
    let mut server = Server::start(opts);
    let delivered = post_many(&server, 20);
    wait_for(DELIVERY, "a checkpoint past the delivered records", || {
        checkpoint::load(&dir)
            .expect("load")
            .is_some_and(|c| c.last_seq == Id::from_raw(delivered[19]).seq())
    });
    // MongoDB goes away: the rest of this segment and all of the next one
    // wait in the WAL, and the checkpoint stays inside the first segment.
    mongo.kill();
    let undelivered = post_many(&server, 20);
    server.kill9();
    server.restart();
    let waiting = post_many(&server, 5);
    server.kill9();
    let ckpt = checkpoint::load(&dir).expect("load").expect("a checkpoint");
    let first = segment::list(&dir).expect("list")[0];
    assert_eq!(
        ckpt.at.segment, first,
        "the checkpoint is inside the first segment"
    );
    rewrite(&dir, first, |bytes| bytes[30] ^= 0x02); // base seq: the CRC fails
    // Recovery rebuilds the header and keeps the records still waiting there.

    mongo.restart();
    server.restart();
    let new = post_many(&server, 3);
    assert_all_above(
        &new,
        waiting[4],
        "after the checkpoint's segment lost its header",
    );
    let want: BTreeSet<u64> = [delivered, undelivered, waiting, new]
        .concat()
        .into_iter()
        .collect();
    let client = mongo.client();
    wait_for(
        DELIVERY,
        "every record, before and after the damage, in MongoDB",
        || want.is_subset(&stored_ids(&usages(&client, db)).into_iter().collect()),
    );
    assert!(
        quarantined(&dir)
            .iter()
            .any(|(name, _)| name == &format!("{first:020}-0.bin"))
    );
}
