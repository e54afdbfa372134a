//! The smallest end-to-end check: one usage in, one document out.
mod common;

use std::time::Duration;

use common::{Opts, Server, USAGE, shared_mongo, wait_for};

#[test]
fn a_posted_usage_is_acknowledged_and_lands_in_mongodb_with_its_id() {
    let mongo = shared_mongo();
    // The production segment size, preallocated (the other suites use 1 MiB).
    let server = Server::start(
        Opts::default()
            .mongo(mongo.uri(), "smoke")
            .arg("--wal-segment-bytes 64MiB"),
    );
    let r = server.post(USAGE);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.id();
    wait_for(Duration::from_secs(20), "the usage in MongoDB", || {
        mongo.ids("smoke") == vec![id]
    });
}
