//! How records are batched on their way to MongoDB: a lone request does not
//! wait for a full batch, and a burst goes out in batches no larger than
//! `--flush-max-records`.

use std::time::{Duration, Instant};

use super::*;
use common::{Opts, USAGE, fresh_usages, metric, shared_mongo, wait_drained, wait_for};

#[test]
fn a_lone_request_reaches_mongodb_quickly_instead_of_waiting_for_a_full_batch() {
    const DB: &str = "delivery_trickle";
    const REQUESTS: usize = 5;
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--flush-interval-ms 50"),
    );
    let mut latencies = Vec::new();
    for _ in 0..REQUESTS {
        let id = server.post(USAGE).id() as i64;
        let acked_at = Instant::now();
        wait_for(Duration::from_secs(10), "the lone usage in MongoDB", || {
            coll.find_one(doc! {"_id": id})
                .run()
                .expect("find")
                .is_some()
        });
        latencies.push(acked_at.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    latencies.sort_unstable();
    assert!(
        latencies[REQUESTS / 2] < Duration::from_secs(2),
        "{latencies:?}"
    );
    // Each went out alone, in a batch of one.
    assert_eq!(
        metric(&server, "busyapi_flush_batch_records_count"),
        REQUESTS as f64
    );
    assert_eq!(
        metric(&server, "busyapi_flush_batch_records_sum"),
        REQUESTS as f64
    );
}

#[test]
fn a_burst_reaches_mongodb_in_batches_of_at_most_flush_max_records() {
    const DB: &str = "delivery_batches";
    let mongo = shared_mongo();
    let coll = fresh_usages(mongo, DB);
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), DB)
            .arg("--flush-max-records 10"),
    );
    let mut acked = post_burst(&server, 1000);
    wait_drained(&server);
    acked.sort_unstable();
    assert_eq!(stored_ids(&coll), acked);
    let batches = metric(&server, "busyapi_flush_batch_records_count");
    assert!(batches >= 100.0, "{batches} batches");
    assert_eq!(metric(&server, "busyapi_flush_batch_records_sum"), 1000.0);
}
