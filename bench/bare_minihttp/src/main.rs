//! The ceiling for this stack: a bare may_minihttp 0.1.11 server that reads
//! each request's body and answers `201 {"id":N}` from an atomic counter.
//!
//! No routing, no validation, no WAL, no fsync, no MongoDB: whatever busyapi
//! does beyond this costs throughput, and `scripts/bench.sh ingest` reports
//! busyapi's rate as a fraction of this one. may_minihttp's own defaults are
//! kept (may's worker count, no `TCP_NODELAY`), as in the figures quoted in
//! the project's measured facts.
//!
//! ```text
//! cargo build --release --manifest-path bench/bare_minihttp/Cargo.toml
//! bench/bare_minihttp/target/release/bare_minihttp 127.0.0.1:8080
//! bench/bare_minihttp/target/release/bare_minihttp 127.0.0.1:8080 --fsync-stream DIR
//! bench/bare_minihttp/target/release/bare_minihttp 127.0.0.1:8080 --fsync-wait DIR
//! bench/bare_minihttp/target/release/bare_minihttp 127.0.0.1:8080 --fsync-paced DIR HOLD_US
//! ```
//!
//! `--fsync-stream DIR` adds one thing: a thread that appends
//! [`STREAM_COMMIT_BYTES`] to a preallocated file in `DIR` and fdatasyncs
//! it, back to back, for as long as the server runs. No request waits for
//! it: the throughput it costs the bare handler is what the CPU and the
//! disk spend on a group-committing server's stream of fsyncs, and nothing
//! else. It prints its commits per second every second.
//!
//! `--fsync-wait DIR` is the thinnest durable server: the same stream, and
//! each request waits, before its 201, for an fdatasync that started after
//! it arrived (one in flight at a time, as in a group commit). No
//! validation, no WAL format, no handoff beyond a may `Blocker`. Whatever
//! it loses against the bare handler, a server that group-commits an
//! fdatasync before every 201 on the same machine loses at least
//! (`scripts/bench.sh fsync-floor`).
//!
//! `--fsync-paced DIR HOLD_US` is the thinnest durable server with paced
//! commits: requests wait as in `--fsync-wait`, but an fdatasync starts
//! only once a request waits for it, and no sooner than `HOLD_US` after the
//! previous one started, the bound busyapi's pacing keeps at a steady load
//! (`--commit-delay-max-us`). At the same fsyncs per second as busyapi it
//! shows what those commits cost with nothing else around them, so
//! busyapi's excess over it is its own code.
//!
//! In the fsync modes `GET /metrics` answers the commits and the requests
//! they carried, under the names busyapi's /metrics uses, so that the
//! bench kit reads fsyncs per second and records per commit off both alike.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use may::sync::Blocker;

use may_minihttp::{HttpServer, HttpService, Request, Response};

/// The next id; shared by every connection, as a single-node id counter is.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Set by every `--fsync-*` mode: `GET /metrics` answers the stream's
/// counters instead of a 201.
static FSYNC_MODE: AtomicBool = AtomicBool::new(false);

/// Set by `--fsync-wait` and `--fsync-paced`: requests wait for the
/// fsync stream.
static WAIT_FOR_FSYNC: AtomicBool = AtomicBool::new(false);

/// Requests waiting for the next fdatasync to start and finish. The lock is
/// held for a push or a swap, never across a yield.
static WAITERS: Mutex<Vec<Arc<Blocker>>> = Mutex::new(Vec::new());

/// Set by `--fsync-paced`: the stream sleeps until a request waits, and
/// the first request of a commit wakes it.
static STREAM_THREAD: OnceLock<Thread> = OnceLock::new();

/// Commits of the fsync stream, and the requests they answered, for
/// `GET /metrics`.
static COMMITS: AtomicU64 = AtomicU64::new(0);
static COMMITTED_REQUESTS: AtomicU64 = AtomicU64::new(0);

/// The listen address when none is given.
const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

/// One commit of the fsync stream: about what busyapi's group commit writes
/// at 64 connections (10 to 15 framed usages of ~100 bytes).
const STREAM_COMMIT_BYTES: usize = 1024;

/// The stream's file: preallocated (written and synced once) so that each
/// fdatasync writes data blocks and never the inode, as busyapi's segments.
const STREAM_FILE_BYTES: u64 = 64 << 20;

#[derive(Clone)]
struct Bare;

impl HttpService for Bare {
    fn call(&mut self, req: Request, rsp: &mut Response) -> io::Result<()> {
        if FSYNC_MODE.load(Ordering::Relaxed) && req.method() == "GET" && req.path() == "/metrics" {
            metrics(rsp);
            return Ok(());
        }
        // Read the whole body, as a real handler must (may_minihttp would
        // otherwise try to parse it as the next request).
        let mut body = req.body();
        let mut body_bytes = 0usize;
        loop {
            let n = body.fill_buf()?.len();
            if n == 0 {
                break;
            }
            body_bytes += n;
            body.consume(n);
        }
        std::hint::black_box(body_bytes);
        if WAIT_FOR_FSYNC.load(Ordering::Relaxed) {
            let me = Blocker::current();
            let first = {
                let mut waiters = WAITERS.lock().expect("no panic while holding it");
                waiters.push(me.clone());
                waiters.len() == 1
            };
            if first && let Some(stream) = STREAM_THREAD.get() {
                stream.unpark();
            }
            // Unparked only by the stream, after a whole fdatasync; an
            // unpark that comes first makes this return at once.
            me.park(None).map_err(|_| io::Error::other("cancelled"))?;
        }
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        rsp.status_code(201, "Created")
            .header("Content-Type: application/json");
        let mut digits = itoa::Buffer::new();
        let out = rsp.body_mut();
        out.extend_from_slice(b"{\"id\":");
        out.extend_from_slice(digits.format(id).as_bytes());
        out.extend_from_slice(b"}");
        Ok(())
    }
}

fn metrics(rsp: &mut Response) {
    let text = format!(
        "busyapi_wal_fsync_seconds_count {}\nbusyapi_wal_commit_records_sum {}\n",
        COMMITS.load(Ordering::Relaxed),
        COMMITTED_REQUESTS.load(Ordering::Relaxed)
    );
    rsp.header("Content-Type: text/plain; version=0.0.4");
    rsp.body_mut().extend_from_slice(text.as_bytes());
}

/// Sleeps until a request waits for the stream (`--fsync-paced`).
fn wait_for_a_waiter() {
    while WAITERS
        .lock()
        .expect("no panic while holding it")
        .is_empty()
    {
        // The first waiter unparks after its push: a wake between the
        // check and the park leaves a token, so none is lost.
        std::thread::park();
    }
}

/// Appends and fdatasyncs, forever; see the module docs. Without a `hold`
/// the commits run back to back; with one, each waits for a request and
/// starts no sooner than `hold` after the previous one started.
fn fsync_stream(file: File, hold: Option<Duration>) {
    let commit = [b'x'; STREAM_COMMIT_BYTES];
    let (mut at, mut commits, mut since) = (0u64, 0u64, Instant::now());
    let mut last_start = Instant::now();
    loop {
        if let Some(hold) = hold {
            wait_for_a_waiter();
            let start = last_start + hold;
            let now = Instant::now();
            if start > now {
                std::thread::sleep(start - now);
            }
            last_start = Instant::now();
        }
        // Only requests that arrived before this fdatasync starts are
        // answered when it returns.
        let waiting = std::mem::take(&mut *WAITERS.lock().expect("no panic while holding it"));
        file.write_all_at(&commit, at)
            .expect("the fsync stream's file was preallocated");
        file.sync_data()
            .expect("fdatasync of the fsync stream's file");
        COMMITS.fetch_add(1, Ordering::Relaxed);
        COMMITTED_REQUESTS.fetch_add(waiting.len() as u64, Ordering::Relaxed);
        for w in waiting {
            w.unpark();
        }
        at = (at + STREAM_COMMIT_BYTES as u64) % STREAM_FILE_BYTES;
        commits += 1;
        if since.elapsed() >= Duration::from_secs(1) {
            let per_s = commits as f64 / since.elapsed().as_secs_f64();
            println!("fsync stream: {per_s:.0} commits/s");
            (commits, since) = (0, Instant::now());
        }
    }
}

fn preallocate(dir: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(dir.join("fsync-stream.dat"))?;
    let mib = vec![0u8; 1 << 20];
    for i in 0..STREAM_FILE_BYTES >> 20 {
        file.write_all_at(&mib, i << 20)?;
    }
    file.sync_all()?;
    Ok(file)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
    let mode = args.next();
    let dir = args.next();
    let hold_us = args.next().map(|h| h.parse::<u64>());
    let hold = match (mode.as_deref(), dir.is_some(), hold_us) {
        (None, _, None) => None,
        (Some("--fsync-stream" | "--fsync-wait"), true, None) => None,
        (Some("--fsync-paced"), true, Some(Ok(us))) => Some(Duration::from_micros(us)),
        _ => {
            eprintln!(
                "usage: bare_minihttp [ADDR] [--fsync-stream DIR | --fsync-wait DIR | --fsync-paced DIR HOLD_US]"
            );
            std::process::exit(2);
        }
    };
    if let (Some(mode), Some(dir)) = (mode, dir) {
        FSYNC_MODE.store(true, Ordering::Relaxed);
        WAIT_FOR_FSYNC.store(mode != "--fsync-stream", Ordering::Relaxed);
        let file = preallocate(Path::new(&dir))
            .unwrap_or_else(|e| panic!("could not preallocate in {dir}: {e}"));
        let stream = std::thread::spawn(move || fsync_stream(file, hold));
        if hold.is_some() {
            let _ = STREAM_THREAD.set(stream.thread().clone());
        }
    }
    let server = HttpServer(Bare)
        .start(addr.as_str())
        .unwrap_or_else(|e| panic!("could not listen on {addr}: {e}"));
    println!("bare_minihttp listening on http://{addr}");
    server.join().expect("the accept loop does not panic");
}
