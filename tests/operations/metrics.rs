//! `/metrics`: every family declared with its type, and the numbers moving
//! with what really happened: requests, commits, the backlog, delivery and
//! MongoDB's reachability.

use super::*;
use common::{Opts, USAGE};

/// Every family an operator's dashboards and alerts rely on, and its type.
const FAMILIES: [(&str, &str); 23] = [
    ("busyapi_http_requests_total", "counter"),
    ("busyapi_records_acknowledged_total", "counter"),
    ("busyapi_event_retries_answered_total", "counter"),
    ("busyapi_records_flushed_total", "counter"),
    ("busyapi_records_replayed_duplicate_total", "counter"),
    ("busyapi_dead_letters_total", "counter"),
    ("busyapi_mongo_errors_total", "counter"),
    ("busyapi_connections_refused_total", "counter"),
    ("busyapi_connections_timed_out_total", "counter"),
    ("busyapi_tls_handshakes_failed_total", "counter"),
    ("busyapi_wal_fsync_seconds", "histogram"),
    ("busyapi_wal_commit_records", "histogram"),
    ("busyapi_wal_commit_hold_seconds", "histogram"),
    ("busyapi_flush_batch_seconds", "histogram"),
    ("busyapi_flush_batch_records", "histogram"),
    ("busyapi_wal_backlog_records", "gauge"),
    ("busyapi_wal_backlog_bytes", "gauge"),
    ("busyapi_wal_max_bytes", "gauge"),
    ("busyapi_wal_segments", "gauge"),
    ("busyapi_wal_writable", "gauge"),
    ("busyapi_mongo_up", "gauge"),
    ("busyapi_ready", "gauge"),
    ("busyapi_connections_open", "gauge"),
];

/// The family a sample line belongs to, given the declared families.
fn family_of<'a>(sample: &str, declared: &'a [(String, String)]) -> Option<&'a (String, String)> {
    let name = sample.split(['{', ' ']).next().unwrap_or_default();
    declared.iter().find(|(family, kind)| {
        name == family
            || (kind == "histogram"
                && ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name.strip_prefix(family.as_str()) == Some(suffix)))
    })
}

/// Checks that a histogram's buckets are cumulative and end at its count.
fn assert_cumulative(scrape: &Scrape, family: &str) {
    let buckets = scrape.buckets(family);
    assert!(buckets.len() >= 2, "{family} has no buckets");
    for pair in buckets.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "{family}: le={} holds {} but le={} only {}",
            pair[0].0,
            pair[0].1,
            pair[1].0,
            pair[1].1
        );
    }
    let (le, last) = buckets.last().expect("buckets");
    assert_eq!(le, "+Inf", "{family}: the last bucket is le={le}");
    assert_eq!(
        *last,
        scrape.value(&format!("{family}_count")),
        "{family}: le=\"+Inf\" is not the count"
    );
}

#[test]
fn every_metric_family_is_declared_once_with_its_type_and_every_sample_belongs_to_one() {
    let s = Server::start(Opts::default());
    assert_eq!(s.post(USAGE).status, 201);
    let scrape = Scrape::of(&s);
    for (family, kind) in FAMILIES {
        assert_eq!(
            scrape.type_of(family),
            Some(kind),
            "# TYPE of {family} in:\n{}",
            scrape.text
        );
        let help = format!("# HELP {family} ");
        assert!(
            scrape.text.lines().any(|l| l.starts_with(&help)),
            "no HELP for {family}"
        );
    }
    let declared: Vec<(String, String)> = scrape
        .text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            (name.to_owned(), kind.to_owned())
        })
        .collect();
    let names: BTreeSet<&str> = declared.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), declared.len(), "a family is declared twice");
    for line in scrape.text.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            family_of(line, &declared).is_some(),
            "{line:?} belongs to no declared family"
        );
        let value = line.rsplit_once(' ').expect("name value").1;
        assert!(value.parse::<f64>().is_ok(), "{line:?}: not a number");
    }
    for kind in busyapi::metrics::MONGO_ERROR_KINDS {
        scrape.value(&format!("busyapi_mongo_errors_total{{kind=\"{kind}\"}}"));
    }
}

#[test]
fn request_counters_move_by_route_and_status_with_each_response() {
    let s = Server::start(Opts::default());
    let series = |route: &str, status: u16| {
        format!("busyapi_http_requests_total{{route=\"{route}\",status=\"{status}\"}}")
    };
    let before = Scrape::of(&s);
    let count = |scrape: &Scrape, route, status| scrape.try_value(&series(route, status));
    for _ in 0..3 {
        assert_eq!(s.post(USAGE).status, 201);
    }
    assert_eq!(s.post("{").status, 400);
    assert_eq!(s.get("/api/usages").status, 405);
    assert_eq!(s.get("/nowhere").status, 404);
    assert_eq!(s.get("/healthz").status, 200);
    assert_eq!(s.get("/readyz").status, 200);
    let mut c = s.connect();
    c.send(b"GET / HTTP/2.0\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 505);
    let after = Scrape::of(&s);
    for (route, status, n) in [
        ("/api/usages", 201, 3.0),
        ("/api/usages", 400, 1.0),
        ("/api/usages", 405, 1.0),
        ("other", 404, 1.0),
        ("other", 505, 1.0),
        ("/healthz", 200, 1.0),
        ("/readyz", 200, 1.0),
        // The first scrape was counted after it was rendered.
        ("/metrics", 200, 1.0),
    ] {
        let moved = count(&after, route, status).unwrap_or(0.0)
            - count(&before, route, status).unwrap_or(0.0);
        assert_eq!(moved, n, "{}", series(route, status));
    }
    assert_eq!(
        after.value("busyapi_records_acknowledged_total")
            - before.value("busyapi_records_acknowledged_total"),
        3.0
    );
}

#[test]
fn the_wal_histograms_count_every_group_commit_and_their_buckets_are_cumulative() {
    const PIPELINED: usize = 10;
    let s = Server::start(Opts::default());
    let mut c = s.connect();
    let before = Scrape::of(&s);
    // Sequential POSTs on one connection: one commit of one record each.
    for _ in 0..5 {
        c.post_json(USAGE);
        assert_eq!(c.response().status, 201);
    }
    let sequential = Scrape::of(&s);
    let moved = |a: &Scrape, b: &Scrape, series: &str| b.value(series) - a.value(series);
    assert_eq!(
        moved(&before, &sequential, "busyapi_wal_fsync_seconds_count"),
        5.0
    );
    assert_eq!(
        moved(&before, &sequential, "busyapi_wal_commit_records_count"),
        5.0
    );
    assert_eq!(
        moved(&before, &sequential, "busyapi_wal_commit_records_sum"),
        5.0
    );
    assert!(sequential.value("busyapi_wal_fsync_seconds_sum") >= 0.0);

    // Pipelined POSTs in one write: one commit of all of them.
    let bodies = vec![USAGE.to_owned(); PIPELINED];
    for r in post_pipelined(&mut c, &bodies) {
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let grouped = Scrape::of(&s);
    assert_eq!(
        moved(&sequential, &grouped, "busyapi_wal_commit_records_count"),
        1.0,
        "{PIPELINED} pipelined usages were not one group commit"
    );
    assert_eq!(
        moved(&sequential, &grouped, "busyapi_wal_commit_records_sum"),
        PIPELINED as f64
    );
    assert_eq!(
        moved(&sequential, &grouped, "busyapi_wal_fsync_seconds_count"),
        1.0
    );
    let bucket = |scrape: &Scrape, le: &str| {
        let key = format!("busyapi_wal_commit_records_bucket{{le=\"{le}\"}}");
        scrape.value(&key)
    };
    assert_eq!(bucket(&grouped, "8"), bucket(&sequential, "8"));
    assert_eq!(bucket(&grouped, "16"), bucket(&sequential, "16") + 1.0);
    for family in [
        "busyapi_wal_fsync_seconds",
        "busyapi_wal_commit_records",
        "busyapi_flush_batch_seconds",
        "busyapi_flush_batch_records",
    ] {
        assert_cumulative(&grouped, family);
    }
}

#[test]
fn the_wal_quota_is_exported_and_the_backlog_reaches_it_when_posts_start_to_get_503() {
    let default = Server::start(Opts::default());
    assert_eq!(
        metric(&default, "busyapi_wal_max_bytes"),
        busyapi::limits::WAL_MAX_BYTES_DEFAULT as f64,
        "without --wal-max-bytes the gauge is the default quota"
    );
    drop(default);

    // The near-quota alert divides the backlog by this gauge: at the moment
    // busyapi refuses POSTs, that ratio must have reached 1.
    let s = Server::start(Opts::default().arg(&format!("--wal-max-bytes {QUOTA_BYTES}")));
    let empty = Scrape::of(&s);
    assert_eq!(empty.value("busyapi_wal_max_bytes"), QUOTA_BYTES as f64);
    assert_eq!(empty.value("busyapi_wal_backlog_bytes"), 0.0);
    fill_to_quota(&s);
    let full = Scrape::of(&s);
    assert_eq!(full.value("busyapi_wal_max_bytes"), QUOTA_BYTES as f64);
    assert!(
        full.value("busyapi_wal_backlog_bytes") >= full.value("busyapi_wal_max_bytes"),
        "refusing at the quota, yet the backlog is below the exported quota:\n{}",
        full.text
    );
    assert_eq!(full.value("busyapi_ready"), 0.0);
}

#[test]
fn mongo_up_follows_mongodb_even_when_idle_and_the_backlog_gauges_grow_and_drain() {
    const DB: &str = "operations_backlog_gauges";
    const USAGES: usize = 20;
    let mut mongo = Mongo::start();
    fresh_usages(&mongo, DB);
    let s = Server::start(Opts::default().mongo(mongo.uri(), DB));
    let up = || metric(&s, "busyapi_mongo_up");
    // Nothing is posted: only the probe can tell.
    wait_for(
        Duration::from_secs(30),
        "busyapi_mongo_up 1 while idle",
        || up() == 1.0,
    );
    let first = s.post(USAGE).id();
    wait_drained(&s);
    let delivered = Scrape::of(&s);
    assert_eq!(delivered.value("busyapi_records_flushed_total"), 1.0);
    assert!(delivered.value("busyapi_flush_batch_seconds_count") >= 1.0);
    assert_cumulative(&delivered, "busyapi_flush_batch_seconds");

    mongo.kill();
    wait_for(
        Duration::from_secs(30),
        "busyapi_mongo_up 0 while idle",
        || up() == 0.0,
    );
    let errors = |scrape: &Scrape| -> f64 {
        ["network", "server_selection", "timeout", "other"]
            .iter()
            .map(|k| scrape.value(&format!("busyapi_mongo_errors_total{{kind=\"{k}\"}}")))
            .sum()
    };
    let errors_before = errors(&Scrape::of(&s));
    let mut acked = vec![first];
    let mut bytes = 0.0;
    for i in 1..=USAGES {
        acked.push(s.post(USAGE).id());
        let scrape = Scrape::of(&s);
        assert_eq!(scrape.value("busyapi_wal_backlog_records"), i as f64);
        let now = scrape.value("busyapi_wal_backlog_bytes");
        assert!(
            now > bytes,
            "the backlog bytes did not grow: {now} after {bytes}"
        );
        bytes = now;
    }
    wait_for(
        Duration::from_secs(30),
        "busyapi_mongo_errors_total to move while MongoDB is down",
        || errors(&Scrape::of(&s)) > errors_before,
    );
    assert_eq!(metric(&s, "busyapi_mongo_up"), 0.0);
    assert_eq!(
        s.get("/readyz").status,
        200,
        "MongoDB down alone made busyapi unready"
    );

    mongo.restart();
    wait_drained(&s);
    let after = Scrape::of(&s);
    assert_eq!(after.value("busyapi_wal_backlog_records"), 0.0);
    assert_eq!(after.value("busyapi_wal_backlog_bytes"), 0.0);
    assert_eq!(after.value("busyapi_mongo_up"), 1.0);
    assert_eq!(
        after.value("busyapi_records_flushed_total"),
        (USAGES + 1) as f64
    );
    assert!(
        after.value("busyapi_flush_batch_seconds_count")
            > delivered.value("busyapi_flush_batch_seconds_count")
    );
    assert_cumulative(&after, "busyapi_flush_batch_seconds");
    assert_stored_exactly(&mongo, DB, &acked);
}
