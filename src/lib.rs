//! busyapi takes inhaler-usage events over HTTP, makes each one durable on
//! local disk before it says `201 Created`, and delivers them to MongoDB
//! exactly once, whatever happens to the process or the database.
//!
//! ```text
//!  client ──HTTP──▶ http ──▶ ingest ──▶ wal ══fsync══▶ 201 {"id": N}
//!  (keep-alive,    (one       (simd-json  (group commit,       │
//!   pipelining)     coroutine  → Usage)    segment files)      ▼
//!                   per conn)                          flusher ──▶ sink ──▶ MongoDB
//!                                                      (batches,   (insert, unordered,
//!                                                       checkpoint) j:true)
//! ```
//!
//! | arrow                  | module       | what happens                                   |
//! |------------------------|--------------|------------------------------------------------|
//! | socket → request       | [`http`]     | HTTP/1.1 framing, API keys and their limits, routing, statuses |
//! | request → usage        | [`ingest`]   | JSON validation, timestamp forms               |
//! | usage → disk           | [`wal`]      | per-core lanes, group commit, fdatasync, ids   |
//! | disk → batches         | [`flusher`]  | reads committed records, retries, dead letters, checkpoints |
//! | batch → MongoDB        | [`sink`]     | BSON encoding, `insert`, error kinds, refusals |
//!
//! `http` drives the steps after it; `ingest` and `wal` know nothing of
//! each other nor of `http`. What several parts share sits below them
//! all, in leaf modules: [`usage`] (the validated `Usage` that ingest
//! makes and the WAL stages), [`limits`] (every bound and why) and
//! [`wait`] (the one way a thread sleeps while it watches for a stop).
//!
//! Around the flow: [`config`] (flags, environment, file), [`metrics`]
//! (per-core counters, `/metrics`), [`app`] (shared state and readiness),
//! [`startup`] (what is decided before the first request: a fresh data
//! directory's id floor), [`shutdown`] (the ordered stop),
//! [`retry_window`] (the ids a node answers a retried event with) and
//! [`sched`] (delivery's threads yield the CPU to acknowledgements).
//!
//! Threads: one may worker per core (`--workers`) runs every connection
//! coroutine; the workers are pinned one per CPU only when the process may
//! run on exactly as many CPUs as there are workers (`pin_workers` in
//! `main.rs`). One `wal-writer` thread appends and syncs; the flusher runs
//! its own threads for MongoDB. Connections never block a worker thread:
//! they wait for their commit on may's channels.

pub mod app;
pub mod config;
pub mod flusher;
pub mod http;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod retry_window;
pub mod sched;
pub mod shutdown;
pub mod sink;
pub mod startup;
pub mod usage;
pub mod wait;
pub mod wal;
