//! Operating busyapi, black-box: what `/metrics`, `/readyz` and the logs
//! tell an operator, how the server pushes back when it is full, how it
//! stops, how it sheds slow and surplus clients, and how it is configured.
//! The real binary, the real dev MongoDB (SecantusDB), real signals.
//!
//! Tests that stop MongoDB run their own ([`Mongo::start`]); the others
//! share one and each uses its own database. Without a MongoDB URI the
//! harness points busyapi at a dead port: the WAL still acknowledges and
//! nothing is ever delivered, which is how a backlog is kept still.
//!
//! | module           | what it covers                                          |
//! |------------------|---------------------------------------------------------|
//! | [`admin_listen`] | --admin-listen: which address answers what, cap, stop   |
//! | [`metrics`]      | families and types, counters and histograms moving      |
//! | [`readiness`]    | /healthz and /readyz: WAL unwritable, MongoDB down      |
//! | [`backpressure`] | the WAL quota: 503 at once, nothing written, bounded    |
//! | [`shutdown`]     | SIGTERM: drain, deliver, exit 0; a second signal        |
//! | [`limits`]       | slowloris, body trickle, idle keep-alive, connection cap|
//! | [`logs_config`]  | logfmt, RUST_LOG, no patient data in logs, precedence   |
//! | [`tls`]          | native TLS: 201, TLS 1.1 refused, handshake deadline, SIGHUP |
//! | [`workers`]      | workers pinned only when the process owns that many CPUs|
mod common;

#[path = "operations/admin_listen.rs"]
mod admin_listen;
#[path = "operations/backpressure.rs"]
mod backpressure;
#[path = "operations/limits.rs"]
mod limits;
#[path = "operations/logs_config.rs"]
mod logs_config;
#[path = "operations/metrics.rs"]
mod metrics;
#[path = "operations/readiness.rs"]
mod readiness;
#[path = "operations/shutdown.rs"]
mod shutdown;
#[path = "operations/tls.rs"]
mod tls;
#[path = "operations/workers.rs"]
mod workers;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    DELIVERY, Http, Mongo, Response, Scrape, Server, assert_error, fresh_usages, metric,
    post_request, wait_drained, wait_for,
};

/// The smallest `--wal-max-bytes`, used to reach the quota quickly.
const QUOTA_BYTES: u64 = 1 << 20;
/// Longest accepted patientId and medication, in bytes: usages this big
/// fill the quota in few requests.
const PATIENT_ID_BYTES_MAX: usize = 128;
const MEDICATION_BYTES_MAX: usize = 200;

/// A 503 that says why and when to come back.
fn assert_unavailable(r: &Response, needle: &str) {
    assert_error(r, 503, needle);
    let retry = r.header("retry-after").unwrap_or_else(|| {
        panic!("a 503 without Retry-After: {:?}", r.headers);
    });
    assert!(
        retry.parse::<u32>().is_ok_and(|s| s >= 1),
        "Retry-After {retry:?}"
    );
}

/// A usage as large as the limits allow, told apart by `n`.
fn big_usage(n: u64) -> String {
    let patient = format!("{n:0>PATIENT_ID_BYTES_MAX$}");
    let medication = "M".repeat(MEDICATION_BYTES_MAX);
    format!(r#"{{"patientId": "{patient}", "timestamp": {n}, "medication": "{medication}"}}"#)
}

/// Sends `bodies` pipelined in one write and reads every response.
fn post_pipelined(c: &mut Http, bodies: &[String]) -> Vec<Response> {
    let raw: Vec<u8> = bodies.iter().flat_map(|b| post_request(b)).collect();
    c.send(&raw);
    bodies.iter().map(|_| c.response()).collect()
}

/// POSTs large usages until the WAL quota refuses one; returns the ids
/// acknowledged on the way.
fn fill_to_quota(s: &Server) -> Vec<u64> {
    const ROUND: u64 = 64;
    let rounds_max = 4 * QUOTA_BYTES / (ROUND * PATIENT_ID_BYTES_MAX as u64);
    let mut c = s.connect();
    let mut acked = Vec::new();
    for round in 0..rounds_max {
        let bodies: Vec<String> = (0..ROUND).map(|i| big_usage(round * ROUND + i)).collect();
        let mut refused = false;
        for r in post_pipelined(&mut c, &bodies) {
            match r.status {
                201 => acked.push(r.id()),
                503 => {
                    assert_unavailable(&r, "over its quota");
                    refused = true;
                }
                _ => panic!("unexpected {}: {}", r.status, r.text()),
            }
        }
        if refused {
            return acked;
        }
    }
    panic!(
        "the quota of {QUOTA_BYTES} bytes never refused a usage; stats: {}",
        s.stats()
    );
}

/// A private MongoDB that has `db.usages` and is down.
fn mongo_down_with(db: &str) -> Mongo {
    let mut mongo = Mongo::start();
    fresh_usages(&mongo, db);
    mongo.kill();
    mongo
}

/// MongoDB holds exactly the acknowledged ids, each once.
fn assert_stored_exactly(mongo: &Mongo, db: &str, acked: &[u64]) {
    let stored = mongo.ids(db);
    let distinct: BTreeSet<u64> = stored.iter().copied().collect();
    assert_eq!(distinct.len(), stored.len(), "an id is stored twice");
    let acked: BTreeSet<u64> = acked.iter().copied().collect();
    let lost: Vec<_> = acked.difference(&distinct).take(10).collect();
    assert!(
        lost.is_empty(),
        "acknowledged but not in MongoDB (first 10 of {} acknowledged): {lost:?}",
        acked.len()
    );
    let extra: Vec<_> = distinct.difference(&acked).take(10).collect();
    assert!(extra.is_empty(), "stored but never acknowledged: {extra:?}");
}

/// What a run of the binary that is expected to end by itself left.
struct Exited {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs busyapi with `args` and `env` until it exits (it must, within
/// 30 s): for `--help` and for configurations it refuses.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> Exited {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_busyapi"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start busyapi");
    let until = Instant::now() + Duration::from_secs(30);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            panic!("busyapi {args:?} did not exit by itself");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    Exited {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
