//! Ids: positive and increasing within a run, across graceful and SIGKILL
//! restarts, and above every delivered id even when all that remembers them
//! is the checkpoint or an empty segment's header.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use busyapi::wal::{Id, checkpoint};

use super::*;
use common::{load, wait_for};

#[test]
fn ids_are_positive_and_strictly_increasing_within_a_run() {
    let (_tmp, dir) = data_dir();
    let server = Server::start(offline(&dir));
    let sequential = post_many(&server, 50);
    assert!(sequential[0] > 0, "ids start above zero");
    assert_strictly_increasing(&sequential, "ids of one connection");

    let halt = Arc::new(AtomicBool::new(false));
    let concurrent = load(server.addr, 6, halt.clone());
    wait_for(
        Duration::from_secs(20),
        "300 concurrent acknowledgements",
        || server.stats()["acknowledged"].as_u64() >= Some(350),
    );
    halt.store(true, Ordering::Relaxed);
    let mut concurrent = concurrent.join().expect("load");
    assert_all_above(
        &concurrent,
        sequential[49],
        "concurrent POSTs after sequential ones",
    );
    concurrent.sort_unstable();
    assert_strictly_increasing(&concurrent, "ids of concurrent connections, sorted");
    assert_strictly_increasing(&wal_ids(&dir), "ids along the log");
}

#[test]
fn ids_keep_increasing_across_a_graceful_restart() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let before = post_many(&server, 20);
    stop(&mut server);
    server.restart();
    let after = post_many(&server, 20);
    assert_all_above(&after, before[19], "after a graceful restart");
    assert_strictly_increasing(&after, "ids after the restart");
    assert_eq!(wal_ids(&dir), [before, after].concat());
}

#[test]
fn ids_keep_increasing_across_a_sigkill_restart() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let before = post_many(&server, 20);
    server.kill9();
    server.restart();
    let after = post_many(&server, 20);
    assert_all_above(&after, before[19], "after a SIGKILL restart");
    assert_strictly_increasing(&after, "ids after the restart");
    assert_eq!(wal_ids(&dir), [before, after].concat());
}

/// Two runs against MongoDB: the first delivers its records; the second
/// passes the first's segment, so the flusher releases it, then delivers
/// records of its own. Left behind: the checkpoint, pointing past every
/// record of the newest segment, and that segment. Returns every id.
fn deliver_and_release(dir: &Path, db: &str, client: &Client) -> Vec<u64> {
    let mut server = Server::start(online(dir, db));
    let first = post_many(&server, 20);
    wait_for(DELIVERY, "the first run's records in MongoDB", || {
        stored_ids(&usages(client, db)) == first
    });
    stop(&mut server);
    let mut server = Server::start(online(dir, db));
    wait_for(DELIVERY, "the delivered segment to be released", || {
        segment::list(dir).expect("list").len() == 1
    });
    let all = [first, post_many(&server, 20)].concat();
    wait_for(DELIVERY, "the second run's records in MongoDB", || {
        stored_ids(&usages(client, db)) == all
    });
    stop(&mut server);
    let newest = newest_segment(dir);
    let ckpt = checkpoint::load(dir).expect("load").expect("a checkpoint");
    assert_eq!(segment::list(dir).expect("list"), [newest]);
    assert_eq!(
        (ckpt.at.segment, ckpt.at.offset, ckpt.last_seq),
        (
            newest,
            logical_end(dir, newest) as u64,
            Id::from_raw(all[39]).seq()
        ),
        "the graceful stop stores a checkpoint past every delivered record"
    );
    all
}

#[test]
fn ids_stay_above_delivered_ones_and_new_records_reach_mongodb_when_only_the_checkpoint_is_left() {
    let db = "wal_recovery_only_checkpoint";
    let (_tmp, dir) = data_dir();
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let delivered = deliver_and_release(&dir, db, &client);
    // Every record is in MongoDB, so losing the segment files loses nothing:
    // the checkpoint alone remembers how far ids went, and it points into a
    // segment number that no longer exists.
    for no in segment::list(&dir).expect("list") {
        fs::remove_file(segment::path_of(&dir, no)).expect("remove a segment");
    }
    // A run while MongoDB is out of reach leaves that checkpoint in place
    // and its own records in the WAL...
    let mut server = Server::start(offline(&dir));
    let waiting = post_many(&server, 5);
    assert_all_above(&waiting, delivered[39], "with only the checkpoint left");
    stop(&mut server);
    // ...and the next run, with MongoDB back, must deliver them all.
    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 2);
    assert_all_above(&new, waiting[4], "after the run without MongoDB");
    let all = [delivered, waiting, new].concat();
    wait_for(DELIVERY, "every later record in MongoDB", || {
        stored_ids(&usages(&client, db)) == all
    });
}

#[test]
fn ids_stay_above_delivered_ones_when_the_checkpoint_is_damaged_and_only_an_empty_segment_is_left()
{
    let db = "wal_recovery_empty_segment";
    let (_tmp, dir) = data_dir();
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let delivered = deliver_and_release(&dir, db, &client);
    // A third run passes the second's segment and releases it; what is left
    // is its own segment, holding no record: only its header's base seq
    // remembers the ids.
    let mut server = Server::start(online(&dir, db));
    let own = newest_segment(&dir);
    wait_for(DELIVERY, "the second run's segment to be released", || {
        segment::list(&dir).expect("list") == [own]
    });
    stop(&mut server);
    assert!(
        record_spans(&segment_bytes(&dir, own), |r| r.id.raw()).is_empty(),
        "the remaining segment holds no record"
    );
    let ckpt_path = dir.join("checkpoint");
    let mut ckpt = fs::read(&ckpt_path).expect("read the checkpoint");
    ckpt[26] ^= 0x40; // inside last_seq: the CRC no longer matches
    fs::write(&ckpt_path, ckpt).expect("damage the checkpoint");
    assert_eq!(checkpoint::load(&dir).expect("load"), None);

    let server = Server::start(online(&dir, db));
    let new = post_many(&server, 5);
    assert_all_above(&new, delivered[39], "with only an empty segment left");
    let all = [delivered, new].concat();
    wait_for(DELIVERY, "the new records in MongoDB", || {
        stored_ids(&usages(&client, db)) == all
    });
}

#[test]
fn ids_of_a_last_record_destroyed_before_a_restart_are_never_handed_out_again() {
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir));
    let before = post_many(&server, 10);
    server.kill9();
    // The newest record was acknowledged (and could have been delivered);
    // a flipped byte makes it a torn tail that recovery cuts, so nothing
    // left in the WAL remembers its id.
    let no = newest_segment(&dir);
    let spans = record_spans(&segment_bytes(&dir, no), |r| r.id.raw());
    let (last, last_id) = spans.last().cloned().expect("records in the segment");
    assert_eq!(
        last_id, before[9],
        "the last record is the last acknowledged"
    );
    rewrite(&dir, no, |b| b[(last.start + last.end) / 2] ^= 0x5a);

    server.restart();
    let after = post_many(&server, 5);
    assert_eq!(
        wal_ids(&dir),
        [&before[..9], &after[..]].concat(),
        "recovery cut exactly the damaged record"
    );
    assert_all_above(&after, before[9], "after the last record was cut");
}

#[test]
fn with_fresh_dir_ids_from_one_a_reused_node_id_is_reported_when_mongodb_holds_its_ids() {
    const DB: &str = "wal_recovery_reused_node_id";
    let _turn = mongo_turn();
    common::fresh_usages(shared_mongo(), DB);
    let client = shared_mongo().client();
    let (_first_tmp, first_dir) = data_dir();
    let mut server = Server::start(online(&first_dir, DB));
    let first = post_many(&server, 5);
    wait_for(DELIVERY, "the first data dir's records in MongoDB", || {
        stored_ids(&usages(&client, DB)) == first
    });
    stop(&mut server);
    // The same node id on an empty data directory, told not to ask
    // MongoDB where its ids start (see fresh_dir.rs for the default).
    let (_second_tmp, second_dir) = data_dir();
    let server = Server::start(online(&second_dir, DB).arg("--fresh-dir-ids from-one"));
    let reused = post_many(&server, 5);
    assert_eq!(reused, first, "an empty data directory starts ids at 1");
    wait_for(DELIVERY, "the collisions to be counted", || {
        common::metric(&server, "busyapi_id_collisions_total") == 5.0
    });
    // The line reports the first refused batch, which may hold fewer than
    // the 5 (the flusher batches by time): the count is the metric's.
    server.wait_for_log("MongoDB already holds other documents under ");
}
