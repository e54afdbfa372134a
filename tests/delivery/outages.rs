//! MongoDB out of reach: usages are still acknowledged and the server stays
//! ready, the outage is logged once, and the backlog drains exactly once
//! when MongoDB is back, after the index is made. A MongoDB that answers but
//! refuses a document is not out of reach.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use common::{
    DELIVERY, Mongo, Opts, Scrape, USAGE, app_commands, free_port, fresh_usages, load, metric,
    recording_proxy_at, shared_mongo, wait_drained, wait_for,
};

#[test]
fn usages_are_acknowledged_and_the_server_stays_ready_while_mongodb_is_unreachable() {
    let server = Server::start(Opts::default());
    let mut acked = Vec::new();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        acked.extend(post_burst(&server, 20));
        assert_eq!(server.get("/readyz").status, 200, "{}", server.logs());
        std::thread::sleep(Duration::from_millis(200));
    }
    wait_for(
        Duration::from_secs(30),
        "the flusher to keep retrying",
        || stat(&server, "mongoErrors").as_u64() >= Some(2),
    );
    let s = server.stats();
    assert_eq!(s["mongoUp"], false);
    assert_eq!(s["ready"], true);
    assert_eq!(s["acknowledged"], acked.len());
    assert_eq!(s["walBacklogRecords"], acked.len());
    assert_eq!(outage_warnings(&server), 1, "{}", server.logs());
}

#[test]
fn with_mongodb_down_at_start_usages_are_acknowledged_and_drain_once_it_is_up() {
    const DB: &str = "delivery_down_at_start";
    let mut mongo = Mongo::start();
    let coll = fresh_usages(&mongo, DB);
    mongo.kill();
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let mut acked = post_burst(&server, 50);
    wait_for(Duration::from_secs(60), "three failed attempts", || {
        stat(&server, "mongoErrors").as_u64() >= Some(3)
    });
    acked.extend(post_burst(&server, 50));
    assert_eq!(stat(&server, "mongoUp"), false);
    assert_eq!(backlog(&server), 100);

    mongo.restart();
    wait_drained(&server);
    assert_eq!(stat(&server, "mongoUp"), true);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);
    server.wait_for_log("MongoDB is reachable again");
    let logs = server.logs();
    assert_eq!(
        outage_warnings(&server),
        1,
        "one warning, not one per retry:\n{logs}"
    );
    assert_eq!(
        logs.matches("MongoDB is reachable again").count(),
        1,
        "{logs}"
    );
}

#[test]
fn mongodb_killed_mid_stream_under_load_loses_nothing_and_duplicates_nothing() {
    const DB: &str = "delivery_mid_stream";
    let mut mongo = Mongo::start();
    let coll = fresh_usages(&mongo, DB);
    let server = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = load(server.addr, 4, stop.clone());
    wait_for(Duration::from_secs(60), "deliveries under way", || {
        stat(&server, "flushed").as_u64() >= Some(500)
    });
    mongo.kill();
    wait_for(
        Duration::from_secs(30),
        "the flusher to see the outage",
        || stat(&server, "mongoUp") == false,
    );
    let during = stat(&server, "acknowledged").as_u64();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        stat(&server, "acknowledged").as_u64() > during,
        "acknowledged during the outage"
    );
    mongo.restart();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let acked = clients.join().expect("load");

    wait_drained(&server);
    assert_eq!(stat(&server, "mongoUp"), true);
    // The server was never killed: the WAL holds exactly what was acknowledged.
    let in_wal = acked.iter().copied().collect();
    assert_exactly_once(&coll, &acked, &in_wal);
    assert_eq!(outage_warnings(&server), 1, "{}", server.logs());
}

#[test]
fn a_document_mongodb_refuses_is_not_an_outage_mongo_up_stays_1_and_nothing_logs_it_unreachable() {
    const DB: &str = "delivery_refusal_not_outage";
    const WRITE_ERRORS: &str = r#"busyapi_mongo_errors_total{kind="write"}"#;
    let (coll, server) = server_with_unique_patient_ids(DB);
    let first = server.post(USAGE).id();
    wait_for(DELIVERY, "the first usage in MongoDB", || {
        stored_ids(&coll) == [first]
    });
    assert_eq!(metric(&server, "busyapi_mongo_up"), 1.0);
    // The same patientId again: the unique index refuses it, on every retry.
    assert_eq!(server.post(USAGE).status, 201);
    wait_for(
        DELIVERY,
        "MongoDB to refuse the second usage 3 times",
        || {
            let m = Scrape::of(&server);
            assert_eq!(
                m.value("busyapi_mongo_up"),
                1.0,
                "a refusal reported MongoDB as down; log:\n{}",
                server.logs()
            );
            m.value(WRITE_ERRORS) >= 3.0
        },
    );
    assert_eq!(stat(&server, "mongoUp"), true);
    server.wait_for_log("MongoDB refuses a batch");
    let logs = server.logs();
    let flaps: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("unreachable") || l.contains("reachable again"))
        .collect();
    assert!(
        flaps.is_empty(),
        "a refusal logged as an outage: {flaps:#?}"
    );
}

#[test]
fn a_backlog_found_at_start_goes_to_mongodb_only_after_the_index_is_created_when_mongodb_comes_back()
 {
    const DB: &str = "delivery_index_first";
    const USAGES: usize = 50;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    // A run that cannot reach MongoDB leaves its usages in the WAL.
    let mut offline = Server::start(
        Opts::default()
            .data_dir(&data)
            .arg("--shutdown-grace-secs 0"),
    );
    let mut acked = post_burst(&offline, USAGES);
    assert!(offline.terminate(Duration::from_secs(30)).success());

    // The next run finds the backlog and a MongoDB that comes back only
    // after its first attempts failed: the moment the index step (retried
    // every 2 s) and the inserts (retried after 50 ms) race for it.
    let proxy: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let uri = format!("mongodb://{proxy}/?directConnection=true");
    let server = Server::start(Opts::default().data_dir(&data).mongo(uri, DB));
    wait_for(Duration::from_secs(30), "the first failed attempt", || {
        outage_warnings(&server) == 1
    });
    let upstream = ([127, 0, 0, 1], mongo.port).into();
    let rec = recording_proxy_at(proxy, upstream);
    wait_drained(&server);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);

    let sent: Vec<String> = app_commands(&rec)
        .iter()
        .map(|(_, c)| c.keys().next().expect("a command").clone())
        .collect();
    let first_insert = sent
        .iter()
        .position(|c| c == "insert")
        .unwrap_or_else(|| panic!("no insert among the commands sent: {sent:?}"));
    assert!(
        sent[..first_insert].iter().any(|c| c == "createIndexes"),
        "an insert went out before the index was created: {sent:?}"
    );
}
