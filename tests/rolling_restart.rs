//! Scale-out behind HAProxy, end to end: the real busyapi binary (two nodes
//! with their own node ids and WALs), the real dev MongoDB, and the real
//! HAProxy running the production template `scripts/deploy/haproxy.cfg`,
//! rendered for this machine by `scripts/render-haproxy.sh`, the renderer
//! `scripts/cluster.sh` runs too (the markers are documented at the top of
//! the template).
//!
//! HAProxy is a Debian package (`apt-get install haproxy`; `scripts/test.sh`
//! installs it). If it is missing these tests fail and say so: they never
//! skip.
mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    DELIVERY, Http, Mongo, Opts, Server, free_port, fresh_usages, post_request, wait_for, which,
};

/// `--shutdown-drain-ms` of the nodes, as in scripts/cluster.sh: HAProxy
/// needs ~0.75 s to see /readyz fail (inter 500ms, fall 2, fastinter 250ms).
const DRAIN_MS: u64 = 2000;
/// A node's whole stop: drain, in-flight requests, the flusher's backlog.
const STOP_MAX: Duration = Duration::from_secs(60);
/// HAProxy marking a started node up: rise 2 checks, downinter 1s, on two
/// shared cores.
const UP_MAX: Duration = Duration::from_secs(30);
/// Pause between a load thread's requests: a steady ~1,000 requests/s from
/// four threads, a load the two shared cores carry next to everything else.
const PACE: Duration = Duration::from_millis(3);
/// Failures kept verbatim for the assertion message.
const FAILURES_SHOWN_MAX: usize = 20;

// ---------------------------------------------------------------- HAProxy

fn haproxy_bin() -> PathBuf {
    which("haproxy").expect(
        "HAProxy is not installed: `apt-get install haproxy` (scripts/test.sh installs it); \
         this test needs the real balancer and does not skip",
    )
}

/// The production template with this machine's addresses, rendered by
/// scripts/render-haproxy.sh, as scripts/cluster.sh renders it.
fn render_haproxy_cfg(listen: SocketAddr, stats: SocketAddr, nodes: &[SocketAddr]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render-haproxy.sh");
    let cfg = output_of(
        Command::new(&script)
            .arg(listen.to_string())
            .arg(stats.to_string())
            .args(nodes.iter().map(SocketAddr::to_string)),
        "scripts/render-haproxy.sh failed",
    );
    String::from_utf8(cfg).expect("the rendered haproxy.cfg is UTF-8")
}

/// Runs `cmd` to its end and returns its stdout; if it fails, the test
/// fails with `what` and the command's stderr.
fn output_of(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// HAProxy as a child process, in the foreground (`-db`).
struct Haproxy {
    child: Child,
    addr: SocketAddr,
    stats: SocketAddr,
    dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(nodes: &[SocketAddr]) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let stats: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, render_haproxy_cfg(addr, stats, nodes)).expect("write haproxy.cfg");
        output_of(
            Command::new(haproxy_bin()).arg("-c").arg("-f").arg(&cfg),
            "HAProxy refuses the rendered template",
        );
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("log");
        let child = Command::new(haproxy_bin())
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone"))
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        let h = Haproxy {
            child,
            addr,
            stats,
            dir,
        };
        for i in 0..nodes.len() {
            h.wait_status(i, "UP");
        }
        h
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// HAProxy's state of node `i` ("UP", "DOWN", "UP 1/2", ...), from the
    /// stats page's CSV.
    fn status(&self, i: usize) -> Option<String> {
        let mut s = TcpStream::connect(self.stats).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /stats;csv HTTP/1.0\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let name = format!("node{i}");
        text.lines()
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.len() > 17 && f[0] == "busyapi" && f[1] == name)
            .map(|f| f[17].to_owned())
    }

    fn wait_status(&self, i: usize, want: &str) {
        wait_for(UP_MAX, &format!("HAProxy to see node {i} {want}"), || {
            self.status(i).as_deref() == Some(want)
        });
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- load

/// What the load threads saw.
#[derive(Default)]
struct Tally {
    ids: Vec<u64>,
    requests: u64,
    failures: u64,
    /// The first failures, verbatim.
    shown: Vec<String>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        self.failures += 1;
        if self.shown.len() < FAILURES_SHOWN_MAX {
            self.shown.push(what);
        }
    }

    fn merge(mut self, other: Tally) -> Tally {
        self.ids.extend(other.ids);
        self.requests += other.requests;
        self.failures += other.failures;
        self.shown.extend(other.shown);
        self.shown.truncate(FAILURES_SHOWN_MAX);
        self
    }
}

/// POSTs usages through `addr` on `conns` keep-alive connections, one thread
/// each, until `stop` is set or each thread has sent `per_conn`. Anything but
/// a 201 is a failure; a closed connection is one too, and is reopened.
fn steady_load(
    addr: SocketAddr,
    conns: usize,
    per_conn: Option<u64>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<Tally> {
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..conns)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut tally = Tally::default();
                    let mut c = Http::connect(addr);
                    while !stop.load(Ordering::Relaxed) && per_conn.is_none_or(|n| tally.requests < n) {
                        tally.requests += 1;
                        let n = tally.requests;
                        let body = format!(r#"{{"patientId": "p{t}-{n}", "timestamp": {n}, "medication": "Albuterol"}}"#);
                        let response = match c.stream.write_all(&post_request(&body)) {
                            Ok(()) => c.try_response(),
                            Err(_) => None,
                        };
                        match response {
                            Some(r) if r.status == 201 => tally.ids.push(r.id()),
                            Some(r) => tally.fail(format!("{} {}", r.status, r.text())),
                            None => {
                                tally.fail("the connection closed without a response".into());
                                c = Http::connect(addr);
                            }
                        }
                        std::thread::sleep(PACE);
                    }
                    tally
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|h| h.join().expect("load thread"))
            .fold(Tally::default(), Tally::merge)
    })
}

// ---------------------------------------------------------------- checks

fn node(mongo: &Mongo, db: &str, node_id: u32) -> Server {
    Server::start(Opts::default().mongo(mongo.uri(), db).arg(&format!(
        "--node-id {node_id} --shutdown-drain-ms {DRAIN_MS}"
    )))
}

/// A private MongoDB with the collection created before the nodes write to
/// it: the dev MongoDB can deadlock when two clients create it at once (see
/// [`fresh_usages`]).
fn fresh_mongo(db: &str) -> Mongo {
    let mongo = Mongo::start();
    fresh_usages(&mongo, db);
    mongo
}

/// The node id an id carries (`id = node_id << 43 | seq`).
fn node_of(id: u64) -> u64 {
    id >> 43
}

/// Every acknowledged id is stored once, and nothing else is stored.
fn assert_stored_exactly_once(mongo: &Mongo, db: &str, acked: &[u64]) {
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
    assert_eq!(acked_set.len(), acked.len(), "an id was handed out twice");
    wait_for(DELIVERY, "every acknowledged usage in MongoDB", || {
        mongo.count(db) >= acked.len() as u64
    });
    let stored = mongo.ids(db);
    let stored_set: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(stored_set.len(), stored.len(), "an id is stored twice");
    let missing: Vec<_> = acked_set.difference(&stored_set).take(5).collect();
    let extra: Vec<_> = stored_set.difference(&acked_set).take(5).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}..."
    );
    assert!(
        extra.is_empty(),
        "stored but never acknowledged (a retried request stored twice?): {extra:?}..."
    );
}

// ---------------------------------------------------------------- tests

#[test]
fn ids_handed_out_through_haproxy_are_distinct_across_nodes_and_all_reach_mongodb() {
    let db = "balanced";
    let mongo = fresh_mongo(db);
    // The two extremes of the node id range.
    let nodes = [node(&mongo, db, 0), node(&mongo, db, 1023)];
    let proxy = Haproxy::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());

    let tally = steady_load(proxy.addr, 4, Some(250), Arc::default())
        .join()
        .expect("load");

    assert_eq!(tally.failures, 0, "failed requests: {:?}", tally.shown);
    assert_eq!(tally.ids.len(), 1000);
    let node_ids: BTreeSet<u64> = tally.ids.iter().map(|&id| node_of(id)).collect();
    assert_eq!(
        node_ids,
        BTreeSet::from([0, 1023]),
        "round robin reaches both nodes, each with its own id range"
    );
    assert!(
        tally
            .ids
            .iter()
            .all(|&id| id & ((1 << 43) - 1) > 0 && id <= 1 << 53),
        "ids are node << 43 | seq, seq ≥ 1"
    );
    assert_stored_exactly_once(&mongo, db, &tally.ids);
}

#[test]
fn a_rolling_restart_behind_haproxy_fails_no_request_and_stores_every_acknowledged_id_once() {
    let db = "rolling";
    let mongo = fresh_mongo(db);
    let mut nodes = [node(&mongo, db, 1), node(&mongo, db, 2)];
    let proxy = Haproxy::start(&nodes.iter().map(|n| n.addr).collect::<Vec<_>>());
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(proxy.addr, 4, None, stop.clone());
    std::thread::sleep(Duration::from_secs(2));

    for (i, node) in nodes.iter_mut().enumerate() {
        let status = node.terminate(STOP_MAX);
        assert!(
            status.success(),
            "node {i} stopped with {status}; its log:\n{}",
            node.logs()
        );
        node.restart_on_same_port();
        proxy.wait_status(i, "UP");
        wait_for(UP_MAX, &format!("node {i} to take requests again"), || {
            node.stats()["acknowledged"].as_u64().is_some_and(|n| n > 0)
        });
        std::thread::sleep(Duration::from_secs(1));
    }
    stop.store(true, Ordering::Relaxed);
    let tally = load.join().expect("load");

    assert!(
        tally.failures == 0,
        "{} of {} requests failed during the rolling restart; the first: {:#?}\nHAProxy's log of retried and failed requests:\n{}",
        tally.failures,
        tally.requests,
        tally.shown,
        proxy
            .log()
            .lines()
            .filter(|l| !l.contains(" 201 "))
            .take(40)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // The drain works as designed: each node was taken out of rotation by
    // its /readyz turning 503, while it still accepted connections, and not
    // by HAProxy finding its port closed.
    let log = proxy.log();
    for i in 0..nodes.len() {
        let went_down = log
            .lines()
            .find(|l| l.contains(&format!("Server busyapi/node{i} is DOWN")));
        assert!(
            went_down.is_some_and(|l| l.contains("Layer7 wrong status") && l.contains("code: 503")),
            "node {i} left the rotation for another reason than its /readyz 503 during the drain: {went_down:?}"
        );
    }
    let node_ids: BTreeSet<u64> = tally.ids.iter().map(|&id| node_of(id)).collect();
    assert_eq!(node_ids, BTreeSet::from([1, 2]));
    assert_stored_exactly_once(&mongo, db, &tally.ids);
    for (i, node) in nodes.iter_mut().enumerate() {
        let status = node.terminate(STOP_MAX);
        assert!(status.success(), "node {i} stopped with {status}");
    }
}
