//! Real network faults between busyapi and MongoDB, under load.
//!
//! The dev MongoDB runs on a test host of its own, a network namespace that
//! busyapi, in the root namespace, reaches over a veth pair
//! ([`common::netns`]). A steady load POSTs usages the whole time and keeps
//! every answer. A fault then goes on that host's MongoDB traffic: packets
//! dropped silently both ways for 30 s, MongoDB's replies alone dropped (so
//! batches it stored come back as replays), 200 ms added to every packet
//! from MongoDB, or 20% of packets lost both ways. Through each fault
//! busyapi must go on answering 201 from its WAL at the offered rate; when
//! MongoDB is cut off it must report it unreachable (`mongoUp`,
//! `busyapi_mongo_up`) within a bound taken from its own timeouts; once the
//! network heals and the load stops, its backlog must reach 0 within a
//! bound, and MongoDB must hold every acknowledged id, each once, and
//! nothing else.
//!
//! Each test has its own host (namespace, addresses, MongoDB) and its own
//! busyapi, so the tests run in parallel.

mod common;

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use busyapi::limits::FLUSH_BACKOFF_MS_MAX;
use common::netns::{Fault, TestHost};
use common::paced::{Answer, Paced};
use common::{Mongo, Opts, Scrape, Server, fresh_usages, wait_for};

/// Usages offered a second, spread over [`LOAD_CONNS`] connections.
const RATE_PER_S: u32 = 200;
const LOAD_CONNS: u32 = 4;
/// MongoDB's port on its host; each namespace has ports of its own.
const MONGO_PORT: u16 = 27017;
/// Load with deliveries under way before the fault.
const BEFORE_FAULT: Duration = Duration::from_secs(3);
/// Load after the heal, before it stops.
const AFTER_HEAL: Duration = Duration::from_secs(3);
/// How often the test reads `/api/stats` during a fault.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// busyapi's own timeouts, as `src/` sets them: the probe pings MongoDB
/// this often (`PROBE_INTERVAL_MS`, src/flusher/health.rs) ...
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// ... gives up finding a server after this (`SERVER_SELECTION_TIMEOUT`,
/// src/sink/mongo.rs) ...
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// ... and a connection, or a monitor's `hello`, after this
/// (`CONNECT_TIMEOUT`, src/sink/mongo.rs).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The driver checks a server this often (its default `heartbeatFrequencyMS`,
/// which busyapi leaves alone).
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Scheduling on a two-core machine that other suites share.
const SLACK: Duration = Duration::from_secs(4);

/// A blackhole is reported within this: the next probe is at most
/// [`PROBE_INTERVAL`] away; its ping on an open connection fails once the
/// driver's monitor gives up on the server (the next check within
/// [`HEARTBEAT`], timing out after [`CONNECT_TIMEOUT`]), and a ping that
/// must select a server then fails after [`SERVER_SELECTION_TIMEOUT`].
const UNREACHABLE_REPORTED_MAX: Duration = PROBE_INTERVAL
    .saturating_add(HEARTBEAT)
    .saturating_add(CONNECT_TIMEOUT)
    .saturating_add(SERVER_SELECTION_TIMEOUT)
    .saturating_add(SLACK);

/// Records the dev MongoDB stores a second at least, with three tests and
/// other suites on two cores (it stores about 2,000 alone).
const DELIVERED_PER_S_MIN: u64 = 500;

/// The backlog is gone within this once the load stops: a sender may be in
/// its longest backoff ([`FLUSH_BACKOFF_MS_MAX`]), the driver finds the
/// server again within a [`HEARTBEAT`], then the backlog (at most the
/// whole run's load) goes at [`DELIVERED_PER_S_MIN`].
fn drain_max(run: Duration) -> Duration {
    let backlog = u64::from(RATE_PER_S) * run.as_secs();
    Duration::from_millis(FLUSH_BACKOFF_MS_MAX)
        + HEARTBEAT
        + Duration::from_secs(backlog / DELIVERED_PER_S_MIN)
        + SLACK
}

/// The longest wait between two answers while a fault is on: the load asks
/// every 20 ms on each connection and an fsync'd 201 takes milliseconds,
/// but an fsync on a disk that builds share can stall (0.5 s seen).
const ANSWER_GAP_MAX: Duration = Duration::from_secs(2);
/// The share of the offered POSTs answered 201 within a fault's window.
const OFFERED_SHARE_MIN: f64 = 0.9;

#[test]
fn a_30_s_blackhole_to_mongodb_is_reported_within_the_timeouts_while_201s_go_on_and_all_drains_once()
 {
    unreachable_run(
        "netfault_blackhole",
        Fault::Blackhole,
        Duration::from_secs(30),
    );
}

#[test]
fn when_mongodbs_replies_are_lost_the_batches_it_stored_are_replayed_as_duplicates_and_stored_once()
{
    let run = unreachable_run(
        "netfault_replies_lost",
        Fault::RepliesLost,
        Duration::from_secs(12),
    );
    assert!(
        run.replayed > 0.0,
        "no batch MongoDB stored without its reply reaching busyapi was sent again: {run:?}"
    );
}

#[test]
fn with_200_ms_added_latency_201s_go_on_deliveries_go_on_and_all_drains_once() {
    let run = FaultRun::new(
        "netfault_latency",
        Fault::Delay { ms: 200 },
        Duration::from_secs(12),
    )
    .go();
    assert!(
        run.delivered_during > 0,
        "nothing reached MongoDB during the added latency: {run:?}"
    );
    let Some(Ok(connect)) = run.connect_during else {
        panic!("no connection to MongoDB during the latency: {run:?}")
    };
    assert!(
        connect >= Duration::from_millis(200),
        "a TCP handshake took {connect:?} with 200 ms added to the SYN-ACK"
    );
}

#[test]
fn with_20_percent_packet_loss_201s_go_on_and_all_drains_once() {
    FaultRun::new(
        "netfault_loss",
        Fault::Loss { percent: 20 },
        Duration::from_secs(12),
    )
    .go();
}

/// One run: a host, a MongoDB on it, a busyapi, the load, one fault.
struct FaultRun {
    db: &'static str,
    fault: Fault,
    length: Duration,
    // Dropped in this order: busyapi, MongoDB, then the namespace.
    server: Server,
    mongo: Mongo,
    host: TestHost,
}

/// What a run saw, for the assertions and for the failure message.
#[derive(Debug, Default)]
struct Seen {
    /// How long into the fault `mongoUp` first read false.
    first_down: Option<Duration>,
    /// `busyapi_mongo_up` read right after that.
    metric_at_first_down: Option<f64>,
    /// Times `mongoUp` went from true to false during the fault.
    downs: u32,
    /// Records MongoDB confirmed while the fault was on.
    delivered_during: u64,
    /// Packets the fault's rules matched (dropped or queued).
    packets: u64,
    /// How long a TCP handshake with MongoDB took during the fault, or how
    /// it failed.
    connect_during: Option<Result<Duration, ErrorKind>>,
    /// 201s a second during the fault, and the longest wait between two.
    rate_during: f64,
    gap_max_during: Duration,
    /// `mongoErrors`, and records MongoDB already had when they were sent
    /// again (`busyapi_records_replayed_duplicate_total`), over the run.
    mongo_errors: u64,
    replayed: f64,
    up_after_heal: bool,
    acknowledged: usize,
    drained_in: Duration,
}

/// A run of a fault that cuts MongoDB off: a handshake with it times out
/// (it is not refused), `mongoUp` turns false within
/// [`UNREACHABLE_REPORTED_MAX`] with `busyapi_mongo_up` at 0, and both are
/// up again after the heal.
fn unreachable_run(db: &'static str, fault: Fault, length: Duration) -> Seen {
    let run = FaultRun::new(db, fault, length).go();
    assert_eq!(
        run.connect_during,
        Some(Err(ErrorKind::TimedOut)),
        "a connection to MongoDB during the fault must time out, not be refused"
    );
    let reported = run
        .first_down
        .unwrap_or_else(|| panic!("mongoUp never turned false during the fault: {run:?}"));
    assert!(
        reported <= UNREACHABLE_REPORTED_MAX,
        "MongoDB reported unreachable {reported:?} into the fault, over {UNREACHABLE_REPORTED_MAX:?}"
    );
    assert_eq!(
        run.metric_at_first_down,
        Some(0.0),
        "busyapi_mongo_up when /api/stats said mongoUp false"
    );
    assert!(
        run.up_after_heal,
        "mongoUp is not true again after the heal: {run:?}"
    );
    run
}

impl FaultRun {
    fn new(db: &'static str, fault: Fault, length: Duration) -> FaultRun {
        let host = TestHost::new();
        let mongo = Mongo::start_in(host.ip(), MONGO_PORT, host.launcher());
        fresh_usages(&mongo, db);
        let server = Server::start(Opts::default().mongo(mongo.uri(), db));
        FaultRun {
            db,
            fault,
            length,
            server,
            mongo,
            host,
        }
    }

    /// Load, fault, heal, stop, drain; then every assertion that holds for
    /// every fault.
    fn go(self) -> Seen {
        let started = Instant::now();
        let load = Paced::start(self.server.addr, RATE_PER_S, LOAD_CONNS);
        wait_for(
            Duration::from_secs(30),
            "deliveries before the fault",
            || self.server.stat("flushed") > 0,
        );
        std::thread::sleep(BEFORE_FAULT);
        let mut seen = Seen::default();
        let flushed_before = self.server.stat("flushed");
        let injected = self.host.inject(self.fault, MONGO_PORT);
        let fault_at = Instant::now();
        self.watch(fault_at, &mut seen);
        seen.delivered_during = self.server.stat("flushed") - flushed_before;
        seen.connect_during = Some(handshake(SocketAddr::new(self.host.ip(), MONGO_PORT)));
        seen.packets = injected.packets();
        if let Some(q) = injected.queue() {
            assert!(q.held() > 0, "no packet went through the delay queue");
            assert_eq!(q.overruns(), 0, "packets the delay queue missed (dropped)");
        }
        injected.heal();
        let healed_at = Instant::now();
        assert!(
            seen.packets > 0,
            "the {:?} rules never matched a packet",
            self.fault
        );
        std::thread::sleep(AFTER_HEAL);
        let answers = load.stop();
        let stopped_at = Instant::now();
        let limit = drain_max(started.elapsed());
        self.wait_drained(limit);
        seen.drained_in = stopped_at.elapsed();
        let stats = self.server.stats();
        seen.up_after_heal = stats["mongoUp"] == true;
        seen.mongo_errors = stats["mongoErrors"].as_u64().unwrap_or_default();
        seen.replayed = Scrape::of(&self.server).value("busyapi_records_replayed_duplicate_total");
        (seen.rate_during, seen.gap_max_during) =
            assert_answered_throughout(&answers, fault_at, healed_at);
        seen.acknowledged = self.assert_stored_exactly_once(&answers);
        eprintln!(
            "{:?} for {:?}: {seen:?} (drain bound {limit:?})",
            self.fault, self.length
        );
        seen
    }

    /// Reads `/api/stats` through the fault, noting when MongoDB is
    /// reported down.
    fn watch(&self, fault_at: Instant, seen: &mut Seen) {
        let mut was_up = true;
        while fault_at.elapsed() < self.length {
            let up = self.server.stats()["mongoUp"] == true;
            if !up && seen.first_down.is_none() {
                seen.first_down = Some(fault_at.elapsed());
                seen.metric_at_first_down = Scrape::of(&self.server).try_value("busyapi_mongo_up");
            }
            if was_up && !up {
                seen.downs += 1;
            }
            was_up = up;
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    fn wait_drained(&self, limit: Duration) {
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(limit, "the backlog to reach 0 after the heal", || {
                self.server.stat("walBacklogRecords") == 0
            })
        }));
        if let Err(e) = waited {
            eprintln!(
                "stats: {}\nbusyapi's log:\n{}",
                self.server.stats(),
                self.server.logs()
            );
            std::panic::resume_unwind(e);
        }
    }

    /// MongoDB holds exactly the acknowledged ids, each once. busyapi was
    /// never killed, so its WAL holds exactly what it acknowledged.
    fn assert_stored_exactly_once(&self, answers: &[Answer]) -> usize {
        let mut acked: Vec<u64> = answers.iter().filter_map(|a| a.id).collect();
        acked.sort_unstable();
        let distinct: BTreeSet<u64> = acked.iter().copied().collect();
        assert_eq!(distinct.len(), acked.len(), "an id was acknowledged twice");
        let stored = self.mongo.ids(self.db);
        assert_eq!(
            self.mongo.count(self.db),
            stored.len() as u64,
            "documents without a distinct id"
        );
        if stored != acked {
            let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
            let lost: Vec<_> = distinct.difference(&stored_set).take(10).collect();
            let foreign: Vec<_> = stored_set.difference(&distinct).take(10).collect();
            panic!(
                "{} acknowledged, {} stored; acknowledged but not stored (first 10): {lost:?}; stored but not acknowledged: {foreign:?}",
                acked.len(),
                stored.len()
            );
        }
        acked.len()
    }
}

/// How long a TCP handshake with `addr` takes, or how it fails.
fn handshake(addr: SocketAddr) -> Result<Duration, ErrorKind> {
    let t = Instant::now();
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map(|_| t.elapsed())
        .map_err(|e| e.kind())
}

/// Every answer is a 201, and between `from` and `to` they come at the
/// offered rate: no gap over [`ANSWER_GAP_MAX`], and at least
/// [`OFFERED_SHARE_MIN`] of what the window offers. Returns the rate (a
/// second) and the longest gap in the window.
fn assert_answered_throughout(answers: &[Answer], from: Instant, to: Instant) -> (f64, Duration) {
    if let Some(bad) = answers.iter().find(|a| a.status != 201) {
        let n = answers.iter().filter(|a| a.status != 201).count();
        panic!("{n} POST(s) not answered 201, the first: {bad:?}");
    }
    let window: Vec<Instant> = answers
        .iter()
        .map(|a| a.at)
        .filter(|at| (from..to).contains(at))
        .collect();
    let mut last = from;
    let mut gap_max = Duration::ZERO;
    for at in window.iter().copied().chain([to]) {
        let gap = at - last;
        assert!(
            gap <= ANSWER_GAP_MAX,
            "no 201 for {gap:?}, {:?} into the fault",
            last - from
        );
        gap_max = gap_max.max(gap);
        last = at;
    }
    let secs = (to - from).as_secs_f64();
    let offered = f64::from(RATE_PER_S) * secs;
    assert!(
        window.len() as f64 >= OFFERED_SHARE_MIN * offered,
        "{} 201s during the fault, {offered:.0} offered",
        window.len()
    );
    (window.len() as f64 / secs, gap_max)
}
