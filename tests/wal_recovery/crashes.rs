//! SIGKILLs under load at random moments: every acknowledged id survives
//! and reaches MongoDB once. And a second process on the same data
//! directory, which would corrupt it, refuses to start. And an append that
//! failed halfway: what it wrote does not come back as records answered
//! 503, whether the wipe after it succeeds or fails (then the process
//! stops).

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::*;
use common::{load, wait_for};

/// Milliseconds drawn from `seed`, which the test prints, so the kill
/// moments differ from run to run and a failing run can be told apart.
fn random_ms(seed: &mut u64, range: Range<u64>) -> u64 {
    // xorshift64: enough to spread kill moments, no dependency needed.
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    range.start + *seed % (range.end - range.start)
}

#[test]
fn every_acknowledged_id_survives_repeated_sigkills_under_load_and_reaches_mongodb_once() {
    let (_tmp, dir) = data_dir();
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seeded with {seed}");
    let mut server = Server::start(offline(&dir));
    let mut acked: Vec<u64> = Vec::new();
    for round in 0..5 {
        let halt = Arc::new(AtomicBool::new(false));
        let clients = load(server.addr, 8, halt.clone());
        let acknowledged_before = server.stats()["acknowledged"].as_u64();
        wait_for(
            Duration::from_secs(20),
            "the load to be acknowledged",
            || server.stats()["acknowledged"].as_u64() > acknowledged_before,
        );
        std::thread::sleep(Duration::from_millis(random_ms(&mut seed, 0..400)));
        server.kill9();
        halt.store(true, Ordering::Relaxed);
        let mut ids = clients.join().expect("load");
        assert!(!ids.is_empty(), "round {round}: nothing acknowledged");
        let floor = wal_ids(&dir)
            .last()
            .copied()
            .unwrap_or(0)
            .max(acked.iter().copied().max().unwrap_or(0));
        ids.sort_unstable();
        assert_strictly_increasing(&ids, "ids acknowledged in one run, sorted");

        server.restart();
        let in_wal = wal_ids(&dir);
        assert_strictly_increasing(&in_wal, "ids along the log");
        let in_wal_set: BTreeSet<u64> = in_wal.iter().copied().collect();
        let missing: Vec<u64> = acked
            .iter()
            .chain(&ids)
            .copied()
            .filter(|id| !in_wal_set.contains(id))
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged id(s) lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        let new = post_many(&server, 1);
        assert_all_above(&new, floor, "the first id after a SIGKILL");
        acked.extend(ids.into_iter().chain(new));
    }
    stop(&mut server);

    let db = "wal_recovery_sigkills";
    let _turn = mongo_turn();
    let client = shared_mongo().client();
    let in_wal = wal_ids(&dir);
    let server = Server::start(online(&dir, db));
    let mut stored = Vec::new();
    wait_for(DELIVERY, "every record of the WAL in MongoDB", || {
        stored = stored_ids(&usages(&client, db));
        stored.len() >= in_wal.len()
    });
    assert_eq!(stored, in_wal, "MongoDB holds each WAL record once");
    drop(server);
    let stored: BTreeSet<u64> = stored.into_iter().collect();
    assert!(
        acked.iter().all(|id| stored.contains(id)),
        "every acknowledged id is in MongoDB"
    );
}

#[test]
fn a_second_process_on_the_same_data_dir_refuses_to_start_and_the_first_keeps_serving() {
    let (_tmp, dir) = data_dir();
    let first = Server::start(offline(&dir));
    let before = post_many(&first, 3);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--mongodb-uri",
            "mongodb://127.0.0.1:9",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .expect("run a second busyapi");
    assert_eq!(
        out.status.code(),
        Some(1),
        "the second process must not run"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("in use by another busyapi process")
            && stderr.contains(&format!("pid {}", first.pid())),
        "it says why, and who holds the directory: {stderr}"
    );
    let after = post_many(&first, 3);
    assert_all_above(&after, before[2], "the first process is untouched");
}

#[test]
fn a_second_process_on_the_same_port_refuses_to_start_even_with_its_own_data_dir() {
    // Same node id, another data directory: sharing the port, it would hand
    // out the first one's ids.
    let (_tmp, dir) = data_dir();
    let (_other_tmp, other_dir) = data_dir();
    let first = Server::start(offline(&dir));
    let before = post_many(&first, 3);
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .args(["--listen", &first.addr.to_string()])
        .args(["--mongodb-uri", "mongodb://127.0.0.1:9"])
        .args(["--fresh-dir-ids", "from-one"])
        .arg("--data-dir")
        .arg(&other_dir)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run a second busyapi");
    let exited = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(100));
        second.try_wait().expect("try_wait")
    });
    if exited.is_none() {
        let _ = second.kill();
    }
    let out = second.wait_with_output().expect("its output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        exited.and_then(|s| s.code()),
        Some(1),
        "the second process ran: {stderr}"
    );
    assert!(
        stderr.contains(&format!("could not listen on {}", first.addr))
            && stderr.contains("in use"),
        "it says why: {stderr}"
    );
    let after = post_many(&first, 3);
    assert_all_above(&after, before[2], "the first process is untouched");
}

#[test]
fn records_of_an_append_that_failed_halfway_do_not_come_back_after_a_crash() {
    const BURST: usize = 12;
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(offline(&dir).env("FAILPOINTS", "wal::write=1*return(torn)"));
    // One write, one read, one WAL submission: the first commit holds the
    // burst, and the failpoint lets half of its bytes reach the file.
    let mut c = server.connect();
    let burst: Vec<u8> = (0..BURST)
        .flat_map(|_| common::post_request(common::USAGE))
        .collect();
    c.send(&burst);
    let statuses: Vec<u16> = (0..BURST).map(|_| c.response().status).collect();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(
        refused >= 4,
        "the torn commit held {refused} record(s), too few to leave whole frames: {statuses:?}"
    );
    // A shorter commit lands over the start of the torn one.
    let acked = post_many(&server, 1);
    let acknowledged = server.written().0;
    server.kill9();
    server.drop_env("FAILPOINTS");
    server.restart();
    assert_eq!(
        server.stat("walBacklogRecords"),
        acknowledged,
        "records answered 503 came back from the torn append"
    );
    let after = post_many(&server, 1);
    assert_all_above(&after, acked[0], "after the restart");
}

#[test]
fn when_a_torn_append_cannot_be_wiped_the_process_stops_and_no_usage_answered_503_comes_back() {
    const BURST: usize = 12;
    let (_tmp, dir) = data_dir();
    let mut server = Server::start(
        offline(&dir).env("FAILPOINTS", "wal::write=1*return(torn);wal::wipe=1*return"),
    );
    // One write, one WAL submission: the torn commit holds the whole burst,
    // each usage told apart by its patient id.
    let patient = |i: usize| format!("burst-{i}");
    let burst: Vec<u8> = (0..BURST)
        .flat_map(|i| {
            common::post_request(&format!(
                r#"{{"patientId": "{}", "timestamp": {i}, "medication": "Albuterol"}}"#,
                patient(i)
            ))
        })
        .collect();
    let mut c = server.connect();
    c.send(&burst);
    let statuses: Vec<u16> = (0..BURST)
        .map_while(|_| c.try_response().map(|r| r.status))
        .collect();
    let refused: BTreeSet<String> = (0..statuses.len())
        .filter(|&i| statuses[i] == 503)
        .map(patient)
        .collect();
    let until = std::time::Instant::now() + STOP;
    while server.is_running() && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let stopped_by_itself = !server.is_running();
    server.kill9();
    server.drop_env("FAILPOINTS");
    server.restart();
    let in_wal: BTreeSet<String> = segment::list(&dir)
        .expect("list segments")
        .into_iter()
        .flat_map(|no| record_spans(&segment_bytes(&dir, no), |r| r.patient_id.to_owned()))
        .map(|(_, p)| p)
        .collect();
    let back: Vec<&String> = refused.intersection(&in_wal).collect();
    assert!(
        back.is_empty(),
        "usages answered 503 are in the WAL after a restart, to be delivered: {back:?}"
    );
    assert!(
        stopped_by_itself && statuses.is_empty(),
        "the process kept serving after the failed wipe: {statuses:?}"
    );
    server.wait_for_log("FATAL: could not zero what a failed WAL append left");
    // What the torn write left (never answered, so no one retries it on a
    // 503) may come back from the page cache; new ids stay above it.
    let floor = wal_ids(&dir).last().copied().unwrap_or(0);
    assert_all_above(&post_many(&server, 1), floor, "after the restart");
}
