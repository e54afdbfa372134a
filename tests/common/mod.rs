//! Test harness: the real busyapi binary and the real dev MongoDB
//! (SecantusDB) as child processes, and a raw HTTP/1.1 client.
//!
//! `secantusd-py` is found through `BUSYAPI_SECANTUSD`, else in the
//! project's `.venv` (which `scripts/test.sh` creates). If it is missing the
//! tests fail with a message saying how to install it: they never skip.
//!
//! | module      | what it holds                                            |
//! |-------------|----------------------------------------------------------|
//! | [`mongo`]   | the dev MongoDB, shared or private; collection setup     |
//! | [`server`]  | a busyapi process, its options, `/api/stats`, draining   |
//! | [`http`]    | the raw client, request framing, load, refusal checks    |
//! | [`metrics`] | `/metrics` scraped and read                              |
//! | [`netns`]   | a test host in a network namespace, and network faults   |
//! | [`nfqueue`] | a netfilter queue that delays packets (latency faults)   |
//! | [`paced`]   | a load at a fixed rate, each answer with its time        |
//! | [`wal`]     | segment files read with busyapi's decoder, and rewritten |
//! | [`wire`]    | a proxy recording the MongoDB commands a client sends    |
//! | [`tls`]     | a test CA and its certificates; TLS clients that check   |
//! | [`docs`]    | Markdown headings as link anchors                        |
#![allow(dead_code)]

pub mod docs;
pub mod http;
pub mod metrics;
pub mod mongo;
pub mod netns;
pub mod nfqueue;
pub mod paced;
pub mod server;
pub mod tls;
pub mod wal;
pub mod wire;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

// Each suite uses some of these: the rest would be "unused" in its crate.
#[allow(unused_imports)]
pub use docs::anchors_of;
#[allow(unused_imports)]
pub use http::{Http, Response, assert_error, batch_request, json_array, load, post_request};
#[allow(unused_imports)]
pub use metrics::{Scrape, metric};
#[allow(unused_imports)]
pub use mongo::{
    MONGO_ANSWER, Mongo, POISON, dead_letters, fresh_usages, shared_mongo, stored_ids,
    unique_patient_ids, usages, usages_refusing_poison,
};
#[allow(unused_imports)]
pub use server::{DELIVERY, Opts, Server, stderr_lines, wait_drained};
#[allow(unused_imports)]
pub use wal::{record_spans, segment_bytes, write_segment};
#[allow(unused_imports)]
pub use wire::{Recorded, app_commands, recording_proxy, recording_proxy_at, stalling_proxy};

pub const USAGE: &str = r#"{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}"#;

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// Polls `f` every 20 ms until it is true or `timeout` passes.
pub fn wait_for(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < until,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A binary on PATH (or in /usr/sbin, where Debian puts daemons).
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
