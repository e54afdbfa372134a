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
//! ```

use std::io::{self, BufRead};
use std::sync::atomic::{AtomicU64, Ordering};

use may_minihttp::{HttpServer, HttpService, Request, Response};

/// The next id; shared by every connection, as a single-node id counter is.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The listen address when none is given.
const LISTEN_DEFAULT: &str = "127.0.0.1:8080";

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

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
    let server = HttpServer(Bare)
        .start(addr.as_str())
        .unwrap_or_else(|e| panic!("could not listen on {addr}: {e}"));
    println!("bare_minihttp listening on http://{addr}");
    server.join().expect("the accept loop does not panic");
}
