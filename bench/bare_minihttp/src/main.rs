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

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use may::sync::Blocker;

use may_minihttp::{HttpServer, HttpService, Request, Response};

/// The next id; shared by every connection, as a single-node id counter is.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Set by `--fsync-wait`: requests wait for the fsync stream.
static WAIT_FOR_FSYNC: AtomicBool = AtomicBool::new(false);

/// Requests waiting for the next fdatasync to start and finish. The lock is
/// held for a push or a swap, never across a yield.
static WAITERS: Mutex<Vec<Arc<Blocker>>> = Mutex::new(Vec::new());

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
            WAITERS
                .lock()
                .expect("no panic while holding it")
                .push(me.clone());
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

/// Appends and fdatasyncs back to back, forever; see the module docs.
fn fsync_stream(file: File) {
    let commit = [b'x'; STREAM_COMMIT_BYTES];
    let (mut at, mut commits, mut since) = (0u64, 0u64, Instant::now());
    loop {
        // Only requests that arrived before this fdatasync starts are
        // answered when it returns.
        let waiting = std::mem::take(&mut *WAITERS.lock().expect("no panic while holding it"));
        file.write_all_at(&commit, at)
            .expect("the fsync stream's file was preallocated");
        file.sync_data()
            .expect("fdatasync of the fsync stream's file");
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
    match (args.next().as_deref(), args.next()) {
        (None, _) => {}
        (Some(mode @ ("--fsync-stream" | "--fsync-wait")), Some(dir)) => {
            WAIT_FOR_FSYNC.store(mode == "--fsync-wait", Ordering::Relaxed);
            let file = preallocate(Path::new(&dir))
                .unwrap_or_else(|e| panic!("could not preallocate in {dir}: {e}"));
            std::thread::spawn(move || fsync_stream(file));
        }
        _ => {
            eprintln!("usage: bare_minihttp [ADDR] [--fsync-stream DIR | --fsync-wait DIR]");
            std::process::exit(2);
        }
    }
    let server = HttpServer(Bare)
        .start(addr.as_str())
        .unwrap_or_else(|e| panic!("could not listen on {addr}: {e}"));
    println!("bare_minihttp listening on http://{addr}");
    server.join().expect("the accept loop does not panic");
}
