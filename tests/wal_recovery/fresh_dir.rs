//! A data directory with no history: its ids start above what MongoDB
//! already holds of this node, so a node id that ran before on a lost or
//! new disk does not hand out an id twice, and every usage it acknowledges
//! is stored. By default a node that cannot ask MongoDB serves anyway
//! (from 1, saying so); `--fresh-dir-ids wait-for-mongodb` waits instead.

use std::process::{Command, Stdio};
use std::time::Instant;

use busyapi::wal::Id;
use common::Mongo;
use mongodb::options::WriteConcern;

use super::*;

/// `_id`s of another node (node 1): they must not move node 0's floor.
const NODE_1_ID: i64 = Id::new(1, 5_000).raw() as i64;

#[test]
fn a_node_id_reused_on_an_empty_data_dir_starts_above_its_ids_in_mongodb_and_every_usage_is_stored()
{
    const DB: &str = "wal_recovery_fresh_dir_reused";
    let _turn = mongo_turn();
    let coll = common::fresh_usages(shared_mongo(), DB);
    coll.insert_one(doc! {"_id": NODE_1_ID})
        .run()
        .expect("a document of node 1");
    let client = shared_mongo().client();
    let (_first_tmp, first_dir) = data_dir();
    let mut server = Server::start(online(&first_dir, DB));
    let first = post_many(&server, 5);
    wait_for_stored(&client, DB, &first);
    stop(&mut server);

    let (_second_tmp, second_dir) = data_dir();
    let mut server = Server::start(online(&second_dir, DB));
    let second = post_many(&server, 5);
    assert_all_above(&second, first[4], "a new data directory of the same node");
    assert!(
        second.iter().all(|&id| Id::from_raw(id).node() == 0),
        "still node 0's ids: {second:?}"
    );
    assert!(
        server.logs().contains(&format!(
            "MongoDB holds node 0's ids up to seq {}",
            first[4]
        )),
        "{}",
        server.logs()
    );
    wait_for_stored(&client, DB, &[first, second].concat());
    assert_eq!(
        common::metric(&server, "busyapi_id_collisions_total"),
        0.0,
        "no id collided"
    );
    stop(&mut server);
}

#[test]
fn a_fresh_data_dir_waits_for_mongodb_before_listening_and_keeps_the_learned_floor_without_it() {
    const DB: &str = "wal_recovery_fresh_dir_wait";
    const HIGHEST_SEQ: i64 = 1_000;
    let mut mongo = Mongo::start();
    let coll = common::fresh_usages(&mongo, DB);
    // Journaled: the kill below must not take them back.
    coll.insert_many([doc! {"_id": HIGHEST_SEQ}, doc! {"_id": NODE_1_ID}])
        .write_concern(WriteConcern::builder().journal(true).build())
        .run()
        .expect("an earlier life's documents");
    mongo.kill();
    let uri = mongo.uri();
    let back_at = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(3));
        mongo.restart();
        (mongo, Instant::now())
    });
    let (_tmp, dir) = data_dir();
    // Blocks until busyapi listens, which it must not do before MongoDB
    // is back and has answered.
    let mut server = Server::start(
        Opts::default()
            .data_dir(&dir)
            .mongo(uri, DB)
            .arg("--fresh-dir-ids wait-for-mongodb"),
    );
    let listening_at = Instant::now();
    let (mut mongo, back) = back_at.join().expect("MongoDB restarted");
    assert!(
        listening_at > back,
        "busyapi listened before MongoDB was back"
    );
    assert!(
        server
            .logs()
            .contains("waiting for MongoDB to learn where ids start"),
        "{}",
        server.logs()
    );
    // Killed before it handed out anything: only the first segment's
    // header remembers the floor, and MongoDB is down for the restart.
    server.kill9();
    mongo.kill();
    server.restart();
    let ids = post_many(&server, 3);
    assert_all_above(&ids, HIGHEST_SEQ as u64, "after a restart without MongoDB");
    assert!(
        ids.iter().all(|&id| Id::from_raw(id).node() == 0),
        "{ids:?}"
    );
}

#[test]
fn sigterm_while_a_fresh_data_dir_waits_for_mongodb_exits_0_having_created_no_segment() {
    let (_tmp, dir) = data_dir();
    let mut child = Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .args(["--listen", "127.0.0.1:0"])
        .args([
            "--mongodb-uri",
            &format!("mongodb://127.0.0.1:{}", common::free_port()),
        ])
        .args(["--fresh-dir-ids", "wait-for-mongodb"])
        .arg("--data-dir")
        .arg(&dir)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start busyapi");
    let lines = common::stderr_lines(&mut child);
    let mut seen = Vec::new();
    while !seen
        .last()
        .is_some_and(|l: &String| l.contains("waiting for MongoDB to learn where ids start"))
    {
        match lines.recv_timeout(STOP) {
            Ok(line) => seen.push(line),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "busyapi did not wait for MongoDB; its log:\n{}",
                    seen.join("\n")
                );
            }
        }
    }
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let until = Instant::now() + STOP;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < until,
            "busyapi ignored SIGTERM while waiting"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.iter().collect();
    assert_eq!(status.code(), Some(0), "{}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("nothing was acknowledged")),
        "{rest:?}"
    );
    assert!(
        segment::list(&dir).expect("list segments").is_empty(),
        "a segment would fix ids at 1 for the next start"
    );
}

#[test]
fn by_default_a_fresh_data_dir_serves_while_mongodb_is_unreachable_and_says_its_ids_start_at_1() {
    let (_tmp, dir) = data_dir();
    let dead = format!("mongodb://127.0.0.1:{}", common::free_port());
    let server = Server::start(Opts::default().data_dir(&dir).mongo(dead, "unused"));
    assert_eq!(post_many(&server, 2), [1, 2]);
    assert!(
        server
            .logs()
            .contains("could not ask MongoDB where node 0's ids start"),
        "{}",
        server.logs()
    );
}

/// Node 0's highest seq in MongoDB in the torn-creation tests below.
const TORN_FLOOR_SEQ: i64 = 40;

#[test]
fn a_crash_while_the_first_segments_header_is_written_leaves_no_segment_file_behind() {
    let (_tmp, dir) = data_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .args(["--listen", "127.0.0.1:0", "--fresh-dir-ids", "from-one"])
        .args(["--wal-segment-bytes", "1MiB"])
        .args([
            "--mongodb-uri",
            &format!("mongodb://127.0.0.1:{}", common::free_port()),
        ])
        .arg("--data-dir")
        .arg(&dir)
        // A crash in the middle of the header write: what a power cut
        // before the header is durable leaves of the file names.
        .env("FAILPOINTS", "wal::segment_header=panic")
        .output()
        .expect("run busyapi");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("wal::segment_header"),
        "the failpoint did not stop it: {stderr}"
    );
    assert_eq!(
        segment::list(&dir).expect("list segments"),
        [] as [u64; 0],
        "a segment's name exists before its header is durable"
    );
}

#[test]
fn a_zero_filled_first_segment_is_no_history_and_ids_start_above_the_nodes_ids_in_mongodb() {
    // A spare renamed to the first segment, its header lost by a power cut.
    const SEGMENT_BYTES: usize = 1 << 20;
    let id = first_id_after_torn_creation("wal_recovery_fresh_dir_zeros", &[0; SEGMENT_BYTES]);
    assert!(id > TORN_FLOOR_SEQ as u64, "id {id} is held in MongoDB");
}

#[test]
fn a_first_segment_with_a_torn_header_is_no_history_and_ids_start_above_the_nodes_ids_in_mongodb() {
    let id = first_id_after_torn_creation("wal_recovery_fresh_dir_torn_header", b"BUSYWAL");
    assert!(id > TORN_FLOOR_SEQ as u64, "id {id} is held in MongoDB");
}

/// A data directory holding only `first` as segment 1, MongoDB holding node
/// 0's ids 1 ..= `TORN_FLOOR_SEQ`: the id of the first POST, after checking
/// that its usage is stored (not refused as a duplicate `_id`).
fn first_id_after_torn_creation(db: &str, first: &[u8]) -> u64 {
    let _turn = mongo_turn();
    let coll = common::fresh_usages(shared_mongo(), db);
    let earlier: Vec<_> = (1..=TORN_FLOOR_SEQ)
        .map(|id| doc! {"_id": id})
        .chain([doc! {"_id": NODE_1_ID}])
        .collect();
    coll.insert_many(earlier)
        .run()
        .expect("an earlier life's documents");
    let (_tmp, dir) = data_dir();
    fs::create_dir_all(&dir).expect("create the data directory");
    write_segment(&dir, 1, first);
    let mut server = Server::start(online(&dir, db));
    let id = post_many(&server, 1)[0];
    if id > TORN_FLOOR_SEQ as u64 {
        let earlier: Vec<u64> = (1..=TORN_FLOOR_SEQ as u64).collect();
        wait_for_stored(&shared_mongo().client(), db, &[earlier, vec![id]].concat());
    }
    stop(&mut server);
    id
}

fn wait_for_stored(client: &Client, db: &str, ids: &[u64]) {
    common::wait_for(DELIVERY, "the acknowledged usages in MongoDB", || {
        let stored: Vec<u64> = stored_ids(&usages(client, db))
            .into_iter()
            .filter(|&id| Id::from_raw(id).node() == 0)
            .collect();
        stored == ids
    });
}
