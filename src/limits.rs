//! Every bound in busyapi, named, with the reason it has the value it has.
//!
//! Defaults that an operator can change are here too (as `*_DEFAULT`); the
//! flags in [`crate::config`] start from them. Where bounds depend on each
//! other the relation is checked at compile time at the bottom of the file.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

// ---------------------------------------------------------------- HTTP

/// `--listen`: every interface, so a node in a container or VM is reachable
/// without a flag; port 3000, as in the README's examples.
pub const LISTEN_DEFAULT: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3000);
/// Bodies above this get 413 by default; a usage event is about 100 bytes, so
/// 16 KiB leaves two orders of magnitude for long ids and whitespace.
pub const BODY_BYTES_MAX_DEFAULT: usize = 16 * 1024;
/// The largest `--max-body-bytes` accepted: the WAL record and the read buffer
/// are sized from it, and no usage event comes close.
pub const BODY_BYTES_MAX_LIMIT: usize = 1024 * 1024;
/// The smallest `--max-body-bytes`: the shortest usage event (about 50
/// bytes) must still fit.
pub const BODY_BYTES_MAX_MIN: usize = 64;
/// `--batch-max-records`: usages in one batch POST. A phone back from a
/// day offline holds dozens to hundreds of events; 1,000 covers it in one
/// request, and one WAL commit.
pub const BATCH_RECORDS_MAX_DEFAULT: usize = 1_000;
/// The largest `--batch-max-records`: a batch is committed whole, in one
/// group commit, so it may not hold more than a commit does.
pub const BATCH_RECORDS_LIMIT: usize = COMMIT_RECORDS_MAX;
/// `--batch-max-bytes`: the body cap of a batch (a JSON array or NDJSON).
/// 1,000 usages of about 100 bytes, with room for long ids. A connection
/// in the middle of one holds its body, so the read buffer of any
/// connection may grow to this (four times it for a chunked body) where a
/// single usage's cap bounded it before: 10,000 connections all sending
/// batches at once are gigabytes, not the 1 GiB of idle ones.
pub const BATCH_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// The largest `--batch-max-bytes`: the read buffer of a connection that
/// sends one grows to four times this at worst (chunked framing), and
/// [`BATCH_RECORDS_LIMIT`] usages at their largest, escaped, stay under it.
pub const BATCH_BYTES_MAX_LIMIT: usize = 8 * 1024 * 1024;
/// The smallest `--batch-max-bytes`: one short usage in brackets.
pub const BATCH_BYTES_MAX_MIN: usize = BODY_BYTES_MAX_MIN;
/// The request line plus all headers. Real clients send well under 2 KiB;
/// proxies add a few forwarding headers. Above this: 431.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// The request target (path and query). RFC 9112 §3 asks servers to take
/// request lines of at least 8,000 octets; busyapi's own paths are under 20
/// bytes, so this only passes long queries that some clients add. Above
/// this: 414, before the rest of the head is waited for.
pub const REQUEST_TARGET_BYTES_MAX: usize = 8 * 1024;
/// Bytes of a refused media type that a 415 names back. Every registered
/// media type is shorter; the bound keeps a 415 a short line whatever a
/// client sends.
pub const MEDIA_TYPE_ECHO_BYTES_MAX: usize = 64;
/// Headers per request. The contract asks for at least 64; proxies that chain
/// `X-Forwarded-*` and tracing headers stay far below 100. Above this: 431.
pub const HEADERS_MAX: usize = 100;
/// Responses are written in one `write` per read batch; a pipelining client
/// that sends more than this many requests in one read is answered in several
/// rounds. This bounds the usages in one WAL submission.
pub const PIPELINE_REQUESTS_MAX: usize = 256;
/// A round also ends once its responses reach this many bytes: they are
/// written, and decoding resumes only when the client has taken them. So a
/// client that pipelines and never reads pins this plus one response (the
/// status page, 11 KiB, is the largest), not all its answers: 256 status
/// pages were 2.8 MiB. 16 KiB is still over a hundred 201s a round.
pub const PIPELINE_RESPONSE_BYTES_MAX: usize = 16 * 1024;
/// Initial read buffer per connection: a burst of pipelined usages fits.
pub const READ_BUF_BYTES_INITIAL: usize = 16 * 1024;
/// Initial response buffer per connection: a round's budget.
pub const WRITE_BUF_BYTES_INITIAL: usize = PIPELINE_RESPONSE_BYTES_MAX;
/// Initial buffer of a round's usages in WAL form: about 30 usages.
pub const STAGED_BYTES_INITIAL: usize = 4096;
/// A connection buffer that grew past this for one large round (a body
/// near the cap, a round of many large responses or usages) is given back
/// afterwards: an idle connection keeps its initial buffers only. Twice the
/// initial sizes, so ordinary rounds never reallocate.
pub const BUF_BYTES_KEPT_MAX: usize = 32 * 1024;
/// After a response that closes the connection while the client may still
/// be sending (a 413 decided from `Content-Length`, a 408), what still
/// arrives is read and dropped for at most this long before the socket
/// closes: closing with unread bytes makes the kernel send a reset, which
/// can destroy the response before the client reads it. A second is enough
/// for a body at the largest cap on any link a device uses, and holds a
/// refused client for little longer than its answer takes.
pub const CLOSE_DRAIN_MS: u64 = 1_000;
/// ...and at most this many bytes: a body at the largest cap.
pub const CLOSE_DRAIN_BYTES_MAX: usize = BODY_BYTES_MAX_LIMIT;
/// Coroutine stack. Connection state lives on the heap; the parser and the
/// response writer are shallow. 64 KiB leaves room for `log` formatting.
pub const COROUTINE_STACK_BYTES: usize = 64 * 1024;
/// Allocations from this size up get pages of their own from the kernel,
/// which go back to it when they are freed: a buffer that grew for one
/// large body is given back whole, not kept in the allocator's heap.
/// glibc starts at this value too but raises it to the largest block ever
/// freed, so after the first large body every later one stayed behind as
/// heap the process could not return (an idle connection that once took a
/// 512 KiB body held 77–107 KiB instead of 73–76 KiB). Usages are a few
/// hundred bytes, so only rare, large rounds pay the `mmap` this costs.
pub const MALLOC_MMAP_THRESHOLD_BYTES: usize = 128 * 1024;

/// Time allowed from the first byte of a request to the end of its headers.
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Time allowed from the end of the headers to the end of the body.
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// A keep-alive connection with no request in progress is closed after this.
/// Load balancers keep their own pools for less than this (HAProxy: 1 min),
/// so busyapi is not the side that races a reuse against a close.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 75_000;
/// The shortest header, body or idle timeout: below it a healthy client on
/// a slow network is cut off mid-request.
pub const READ_TIMEOUT_MS_MIN: u64 = 100;
/// The longest header, body or idle timeout: beyond an hour a connection
/// that sends nothing is as good as leaked.
pub const READ_TIMEOUT_MS_MAX: u64 = 3_600_000;
/// File descriptors kept out of reach of client connections: the WAL's
/// segments, directory and lock, may's epoll and eventfds (about 20 in all),
/// the MongoDB pool (up to 10 connections a server, plus monitors) and the
/// socket a refused connection is answered on. `--max-connections` is
/// lowered at start so connections cannot take these.
pub const FD_RESERVE: u64 = 128;
/// Pause of the accept loop after a failed accept (out of descriptors or
/// memory): long enough not to spin on a worker, short enough that a freed
/// descriptor is used at once.
pub const ACCEPT_RETRY_MS: u64 = 50;
/// Pending connections the kernel queues before busyapi accepts them: a
/// load balancer reconnecting its pool at once fits (may's own choice).
pub const LISTEN_BACKLOG: i32 = 1024;
/// Open connections. Each costs a coroutine stack and a read buffer (about
/// 100 KiB); 10,000 of them is 1 GiB, a bound a 24 GiB host carries easily.
pub const CONNECTIONS_MAX_DEFAULT: usize = 10_000;
/// Open connections on the `--admin-listen` address, counted apart from
/// `--max-connections`: Prometheus, an operator's browser and a few tools
/// need a handful, and a flood of public connections must not lock them
/// out of `/metrics` just when they matter. When that address is set,
/// these are kept out of `--max-connections`' reach with [`FD_RESERVE`].
pub const ADMIN_CONNECTIONS_MAX: usize = 64;
/// `--workers` at most: more than any host busyapi runs on has cores, and
/// every worker has a WAL lane of its own.
pub const WORKERS_MAX: usize = 1024;
/// `--metrics`: the per-request counters cost a few nanoseconds, and an
/// operator wants them; off is for measuring that cost.
pub const METRICS_DEFAULT: bool = true;

// ---------------------------------------------------------------- API keys

/// A key id (`--api-keys-file`'s `id`), in bytes of `[A-Za-z0-9._-]`: a name
/// an operator chooses, logged and stored in every usage as `source`, so
/// short; stored in a WAL record with a u8 length.
pub const KEY_ID_BYTES_MAX: usize = 64;
/// Keys in one `--api-keys-file`: one per client application or fleet, not
/// per device. Bounds the lookup (every key is compared, see `http::auth`)
/// and the `key` label of the per-key metrics.
pub const API_KEYS_MAX: usize = 1024;
/// A keys file larger than this is refused: [`API_KEYS_MAX`] entries take
/// about 150 KiB.
pub const KEYS_FILE_BYTES_MAX: u64 = 1 << 20;
/// A presented bearer token longer than this is refused without hashing:
/// `busyapi-admin keys new` makes 43 characters.
pub const API_KEY_BYTES_MAX: usize = 512;
/// Random bytes in a key `busyapi-admin keys new` makes: 256 bits, beyond
/// any guessing, as 43 base64url characters.
pub const API_KEY_RANDOM_BYTES: usize = 32;
/// `--key-rate-per-s`: usages a second one key may send when its entry
/// sets no rate. A key serves an app or a fleet; a node takes about 18,000
/// a second, so the default keeps any one key from taking most of a node
/// while far above what a fleet of devices sends on average.
pub const KEY_RATE_PER_S_DEFAULT: u64 = 1000;
/// `--key-burst`: usages one key may send at once above its rate: two
/// seconds' worth, for devices that sync their backlog together after an
/// outage.
pub const KEY_BURST_DEFAULT: u64 = 2000;
/// Lost compare-and-swaps before a token bucket answers "over the limit":
/// each lost swap means another request took tokens, so under honest load
/// a take succeeds within a few tries.
pub const BUCKET_CAS_TRIES_MAX: usize = 16;
/// Slots of the table of failed authentications per client address
/// (addresses hash into it; two that share a slot share a budget). 1,024
/// slots of about 40 bytes: 40 KiB, whatever the number of clients.
pub const AUTH_FAILURE_SLOTS: usize = 1024;
/// Failed authentications per second one address may make past its burst
/// and still get a 401: a misconfigured client retries far slower, and a
/// guesser of a 256-bit key gains nothing from any rate.
pub const AUTH_FAILURE_RATE_PER_S: u64 = 2;
/// Failed authentications one address may make at once before the next
/// is answered 429 and its connection closed.
pub const AUTH_FAILURE_BURST: u64 = 20;
/// A key's `rate_per_s` at most: far above what one node takes (tens of
/// thousands of usages a second), so a bucket never limits below the
/// node's own capacity by mistake of scale.
pub const KEY_RATE_PER_S_MAX: u64 = 1_000_000;
/// A key's `burst` at most: a minute at the highest rate would be more
/// than a WAL quota holds; this keeps a bucket's arithmetic far from overflow.
pub const KEY_BURST_MAX: u64 = 10_000_000;

// ---------------------------------------------------------------- usage fields

/// `patientId` in bytes (UTF-8). Ids in the original service are short
/// numbers; 128 leaves room for UUIDs and prefixed ids. Stored with a u8 length.
pub const PATIENT_ID_BYTES_MAX: usize = 128;
/// `medication` in bytes (UTF-8). Drug names with dose, form and device
/// stay well under this; stored with a u8 length.
pub const MEDICATION_BYTES_MAX: usize = 200;
/// `eventId` in bytes (UTF-8): a device-made UUID is 36; 64 leaves room
/// for a prefix or a hash. Stored with a u8 length, and in MongoDB's
/// `{patientId, eventId}` index, whose key stays far below any limit.
pub const EVENT_ID_BYTES_MAX: usize = 64;
/// `timestamp` as a string. The longest accepted form is the JavaScript
/// `Date.toString()` with a long zone name in parentheses.
pub const TIMESTAMP_BYTES_MAX: usize = 96;
/// Latest accepted instant, 9999-12-31T23:59:59.999Z in epoch milliseconds:
/// the four-digit-year range every accepted text form can express.
pub const TIMESTAMP_MS_MAX: i64 = 253_402_300_799_999;
/// Earliest accepted instant: the Unix epoch. Devices report recent events;
/// anything earlier is a clock that was never set.
pub const TIMESTAMP_MS_MIN: i64 = 0;

// ---------------------------------------------------------------- retry window

/// `(patientId, eventId)` pairs a node remembers to answer a retry with
/// the first id (`retry_window`). A retry after a lost 201 comes within a
/// client timeout, seconds to a minute: 65,536 pairs cover a minute at
/// 1,000 events with an eventId a second. About 290 bytes a pair (a
/// 216-byte slot holding both keys at their bounds, and its index entries
/// at half load), so 18 MiB per node, the slots touched only as they fill.
pub const RETRY_WINDOW_EVENTS: usize = 65_536;
/// Locks the window is split over, so workers rarely wait on one another:
/// far more than the cores a node has. Eviction is first in, first out
/// within a shard.
pub const RETRY_WINDOW_SHARDS: usize = 64;

// ---------------------------------------------------------------- ids

/// Bits of an id that carry `--node-id`. 1,024 nodes is far beyond the
/// capacity plan (100M users a minute needs well under 200 nodes).
pub const NODE_ID_BITS: u32 = 10;
/// Bits of an id that carry the node's own sequence. 2^43 ids at 18,000/s
/// last 15 years; at a saturated 80,000/s they last 3.5 years.
pub const SEQ_BITS: u32 = 43;
/// The largest `--node-id`.
pub const NODE_ID_MAX: u32 = (1 << NODE_ID_BITS) - 1;
/// The largest per-node sequence number.
pub const SEQ_MAX: u64 = (1 << SEQ_BITS) - 1;
/// `--node-id`: a single node needs no id of its own.
pub const NODE_ID_DEFAULT: u32 = 0;

// ---------------------------------------------------------------- WAL

/// `--data-dir`: beside the binary, for a first run; a deployment names a
/// persistent disk.
pub const DATA_DIR_DEFAULT: &str = "./data";

/// One segment file (`--wal-segment-bytes`). Small enough that a delivered
/// segment is deleted soon after its records reach MongoDB; large enough
/// that rolling (a rename and a directory fsync) is rare: about 600,000
/// usages. Segments are preallocated (zero-filled in the background), so a
/// commit's fdatasync writes data blocks only, never the inode.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// The smallest `--wal-segment-bytes`: room for thousands of records.
pub const SEGMENT_BYTES_MIN: u64 = 1 << 20;
/// The largest `--wal-segment-bytes`: recovery reads a segment into memory.
pub const SEGMENT_BYTES_LIMIT: u64 = 1 << 30;
/// Zeros written, and pushed to the disk, per call when preallocating a
/// segment. Small, because a commit's fdatasync that arrives while a chunk
/// is being written waits for it: with 1 MiB chunks the spare's fill (4 s
/// of every segment) took busyapi's p99 at 18,000 requests/s from 2.6 to
/// 5.0 ms and its p99.9 from 6 to 24 ms (docs/notes/2026-12-04-spare-fill-
/// chunks.md). 64 KiB is 1,024 writes a segment, a few ms of CPU.
pub const PREALLOC_CHUNK_BYTES: usize = 64 << 10;
/// How fast the next segment is zero-filled while the server takes load:
/// a default segment in 4 s. At 18,000 requests/s a segment lasts about 30
/// s, and even at a closed loop's 80,000 about 7 s, so the spare is ready
/// in time; faster, the fill floods the disk queue that commits wait in.
pub const SPARE_FILL_BYTES_PER_S: u64 = 16 << 20;
/// Default quota of undelivered WAL bytes: beyond it POSTs get 503. 4 GiB is
/// about 40 million usages, 40 minutes of the target load with MongoDB down.
pub const WAL_MAX_BYTES_DEFAULT: u64 = 4 << 30;
/// The smallest quota accepted: one full segment plus headroom.
pub const WAL_MAX_BYTES_MIN: u64 = 1 << 20;
/// Submissions waiting per ingest lane for the WAL writer. A full lane means
/// the disk is far behind; the request gets 503 at once instead of waiting.
pub const LANE_SUBMISSIONS_MAX: usize = 4096;
/// Records framed into one group commit: about 200 KiB of typical usages
/// (at most 854 KiB), one write and one fdatasync; no waiter holds longer.
pub const COMMIT_RECORDS_MAX: usize = 2048;
/// Default bound on holding a commit back so that one fdatasync serves more
/// records (`--commit-delay-max-us`; see `wal::pacing`). An fdatasync costs
/// ~100 µs of CPU here; at 8,000 requests/s, 1.5 ms makes a commit carry
/// about 12 records instead of 2–3, while adding at most 1.5 ms to a
/// request that arrives just after a commit started.
pub const COMMIT_DELAY_MAX_US_DEFAULT: u64 = 1_500;
/// The largest `--commit-delay-max-us`: beyond 10 ms the hold dominates the
/// latency a device sees, and no fsync is that expensive.
pub const COMMIT_DELAY_MAX_US_LIMIT: u64 = 10_000;
/// How long the WAL writer sleeps when there is nothing to commit before it
/// checks again; wake-ups normally come from submitters, this is a backstop.
pub const WRITER_IDLE_PARK_MS: u64 = 100;

// ---------------------------------------------------------------- flusher

/// `--mongodb-uri`: a mongod on this machine's default port.
pub const MONGODB_URI_DEFAULT: &str = "mongodb://127.0.0.1:27017";
/// `--database`: named after the service.
pub const DATABASE_DEFAULT: &str = "busyapi";
/// `--collection`: named after the API's resource, `/api/usages`.
pub const COLLECTION_DEFAULT: &str = "usages";
/// Default records per `insert` command: the batch size at which the dev server
/// and a real mongod both reach their throughput plateau.
pub const FLUSH_MAX_RECORDS_DEFAULT: usize = 1000;
/// Largest BSON document MongoDB takes, a command included
/// (`maxBsonObjectSize`).
pub const BSON_COMMAND_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most bytes one usage takes in an `insert` command's `documents` array:
/// its seven fields at their caps, the array index key and the framing come
/// to about 585 (`sink::encode` tests the bound).
pub const DOCUMENT_BYTES_MAX: usize = 640;
/// Room in a command for everything but its documents: the collection name,
/// `ordered`, `maxTimeMS` and the write concern.
pub const COMMAND_OVERHEAD_BYTES: usize = 64 * 1024;
/// Largest accepted `--flush-max-records`: a batch is one `insert` command,
/// which must fit in [`BSON_COMMAND_BYTES_MAX`]. Above it MongoDB would
/// refuse the batch, and the flusher would retry it forever.
pub const FLUSH_MAX_RECORDS_LIMIT: usize =
    (BSON_COMMAND_BYTES_MAX - COMMAND_OVERHEAD_BYTES) / DOCUMENT_BYTES_MAX;
/// Default wait for a batch to fill before it goes out anyway.
pub const FLUSH_INTERVAL_MS_DEFAULT: u64 = 50;
/// The longest `--flush-interval-ms`: a trickle of usages waits no longer
/// than a minute to be sent.
pub const FLUSH_INTERVAL_MS_MAX: u64 = 60_000;
/// Batches in flight to MongoDB at once.
pub const FLUSH_CONCURRENCY_DEFAULT: usize = 2;
/// The most `--flush-concurrency`: each batch in flight holds its command
/// (up to 16 MiB) in memory, and beyond a few MongoDB's write path, not the
/// round trip, is what limits delivery.
pub const FLUSH_CONCURRENCY_MAX: usize = 16;
/// Retry backoff after a failed batch starts here...
pub const FLUSH_BACKOFF_MS_MIN: u64 = 50;
/// ...doubles, and stops growing here, so a recovered MongoDB is noticed
/// within a few seconds.
pub const FLUSH_BACKOFF_MS_MAX: u64 = 5_000;
/// Answers in a row in which MongoDB refuses a document (a per-document
/// write error that is not about the server's state, e.g. a validator's 121)
/// before that document goes to the dead-letter collection. Such refusals do
/// not pass by themselves, but a validator or index being changed, or
/// undone, at that very moment can: five answers with backoff take under a
/// second, which is as long as one poison record holds its batch.
pub const REFUSED_ATTEMPTS_MAX: u32 = 5;
/// Default `--dead-letter-collection`: next to `usages`, named after it.
pub const DEAD_LETTER_COLLECTION_DEFAULT: &str = "usages_deadletter";
/// The server's message kept in a dead letter, in bytes. Validator and
/// duplicate-key messages are a line; the cap keeps a dead letter small
/// enough for [`DEAD_LETTERS_PER_COMMAND_MAX`] of them to fit a command.
pub const DEAD_LETTER_MESSAGE_BYTES_MAX: usize = 512;
/// Most bytes a dead letter takes in an `insert` command: the usage
/// ([`DOCUMENT_BYTES_MAX`]), its message, and 128 for the `error` and
/// `deadLetteredAt` fields' framing (about 60; `sink::deadletter` tests it).
pub const DEAD_LETTER_BYTES_MAX: usize = DOCUMENT_BYTES_MAX + DEAD_LETTER_MESSAGE_BYTES_MAX + 128;
/// Dead letters per `insert` command, so that one of the largest fits in
/// [`BSON_COMMAND_BYTES_MAX`] even when a whole maximal batch is refused.
pub const DEAD_LETTERS_PER_COMMAND_MAX: usize =
    (BSON_COMMAND_BYTES_MAX - COMMAND_OVERHEAD_BYTES) / DEAD_LETTER_BYTES_MAX;
/// Ids one log line about dead letters names; the rest are counted. A
/// validator that refuses everything would otherwise log a thousand ids a
/// batch.
pub const DEAD_LETTER_IDS_LOGGED_MAX: usize = 10;
/// The checkpoint is rewritten at most this often (and always before a
/// segment is deleted); after a crash at most this much is replayed.
pub const CHECKPOINT_INTERVAL_MS: u64 = 1_000;
/// Nice value of the flusher's and the MongoDB driver's threads (see
/// `flusher::priority`): under contention Linux gives them about a tenth
/// of a connection's CPU share, which still delivers 18,000 records/s (a
/// few µs of CPU each) while acknowledgements go first.
pub const DELIVERY_NICE: i32 = 10;
/// Default time the flusher gets at shutdown to deliver the backlog.
pub const SHUTDOWN_GRACE_SECS_DEFAULT: u64 = 25;
/// The longest `--shutdown-grace-secs`: beyond an hour a stop looks hung to
/// any process manager, and the WAL keeps what is not delivered anyway.
pub const SHUTDOWN_GRACE_SECS_MAX: u64 = 3600;
/// Default `--shutdown-drain-ms`: without a load balancer in front nobody
/// reads `/readyz`, so a stop need not wait for one.
pub const SHUTDOWN_DRAIN_MS_DEFAULT: u64 = 0;
/// The longest `--shutdown-drain-ms`: a load balancer notices a failing
/// `/readyz` within seconds; a minute is far beyond any check interval.
pub const SHUTDOWN_DRAIN_MS_MAX: u64 = 60_000;

// ---------------------------------------------------------------- relations

const _: () = assert!(
    RETRY_WINDOW_EVENTS.is_multiple_of(RETRY_WINDOW_SHARDS),
    "every retry-window shard holds as many pairs"
);

/// A framed record (format 3): 8-byte frame header, 24 fixed payload bytes,
/// four u8 lengths and the four strings.
pub const RECORD_BYTES_MAX: usize = 8
    + 24
    + 4
    + PATIENT_ID_BYTES_MAX
    + MEDICATION_BYTES_MAX
    + EVENT_ID_BYTES_MAX
    + KEY_ID_BYTES_MAX;

const _: () = assert!(
    PATIENT_ID_BYTES_MAX <= u8::MAX as usize,
    "patientId is stored with a u8 length"
);
const _: () = assert!(
    MEDICATION_BYTES_MAX <= u8::MAX as usize,
    "medication is stored with a u8 length"
);
const _: () = assert!(
    EVENT_ID_BYTES_MAX <= u8::MAX as usize,
    "eventId is stored with a u8 length"
);
const _: () = assert!(
    KEY_ID_BYTES_MAX <= u8::MAX as usize,
    "a key id is stored with a u8 length"
);
const _: () = assert!(
    NODE_ID_BITS + SEQ_BITS == 53,
    "ids must stay exact in a JavaScript number"
);
const _: () = assert!(SEGMENT_BYTES_MIN >= 1024 * RECORD_BYTES_MAX as u64);
const _: () = assert!(
    SEGMENT_BYTES_MIN <= SEGMENT_BYTES_DEFAULT && SEGMENT_BYTES_DEFAULT <= SEGMENT_BYTES_LIMIT
);
const _: () = assert!(
    COMMIT_RECORDS_MAX * RECORD_BYTES_MAX < SEGMENT_BYTES_MIN as usize,
    "a commit fits a segment"
);
const _: () = assert!(
    BATCH_RECORDS_LIMIT <= COMMIT_RECORDS_MAX && PIPELINE_REQUESTS_MAX <= COMMIT_RECORDS_MAX,
    "a submission (a round's usages, or one batch) fits one commit whole"
);
const _: () =
    assert!(1 <= BATCH_RECORDS_MAX_DEFAULT && BATCH_RECORDS_MAX_DEFAULT <= BATCH_RECORDS_LIMIT);
const _: () = assert!(
    BATCH_BYTES_MAX_MIN <= BATCH_BYTES_MAX_DEFAULT
        && BATCH_BYTES_MAX_DEFAULT <= BATCH_BYTES_MAX_LIMIT
);
const _: () = assert!(WAL_MAX_BYTES_MIN <= WAL_MAX_BYTES_DEFAULT);
const _: () = assert!(BODY_BYTES_MAX_DEFAULT <= BODY_BYTES_MAX_LIMIT);
const _: () = assert!(BODY_BYTES_MAX_MIN <= BODY_BYTES_MAX_DEFAULT);
const _: () = assert!(
    READ_TIMEOUT_MS_MIN <= HEADER_READ_TIMEOUT_MS_DEFAULT
        && HEADER_READ_TIMEOUT_MS_DEFAULT <= READ_TIMEOUT_MS_MAX
        && READ_TIMEOUT_MS_MIN <= BODY_READ_TIMEOUT_MS_DEFAULT
        && BODY_READ_TIMEOUT_MS_DEFAULT <= READ_TIMEOUT_MS_MAX
        && READ_TIMEOUT_MS_MIN <= IDLE_TIMEOUT_MS_DEFAULT
        && IDLE_TIMEOUT_MS_DEFAULT <= READ_TIMEOUT_MS_MAX
);
const _: () = assert!(COMMIT_DELAY_MAX_US_DEFAULT <= COMMIT_DELAY_MAX_US_LIMIT);
const _: () =
    assert!(1 <= FLUSH_INTERVAL_MS_DEFAULT && FLUSH_INTERVAL_MS_DEFAULT <= FLUSH_INTERVAL_MS_MAX);
const _: () =
    assert!(1 <= FLUSH_CONCURRENCY_DEFAULT && FLUSH_CONCURRENCY_DEFAULT <= FLUSH_CONCURRENCY_MAX);
const _: () = assert!(SHUTDOWN_GRACE_SECS_DEFAULT <= SHUTDOWN_GRACE_SECS_MAX);
const _: () = assert!(CONNECTIONS_MAX_DEFAULT >= 1);
const _: () = assert!(ADMIN_CONNECTIONS_MAX >= 1);
const _: () = assert!(
    BUF_BYTES_KEPT_MAX >= 2 * READ_BUF_BYTES_INITIAL
        && BUF_BYTES_KEPT_MAX >= 2 * WRITE_BUF_BYTES_INITIAL
        && BUF_BYTES_KEPT_MAX >= 2 * STAGED_BYTES_INITIAL,
    "ordinary rounds keep their buffers"
);
const _: () = assert!(
    REQUEST_TARGET_BYTES_MAX < HEADER_BYTES_MAX,
    "a target at the limit leaves room for the headers"
);
const _: () = assert!(
    HEADERS_MAX >= 64,
    "the contract accepts at least 64 headers"
);
const _: () = assert!(FLUSH_MAX_RECORDS_DEFAULT <= FLUSH_MAX_RECORDS_LIMIT);
const _: () = assert!(FLUSH_BACKOFF_MS_MIN <= FLUSH_BACKOFF_MS_MAX);
const _: () = assert!(
    REFUSED_ATTEMPTS_MAX >= 1,
    "a document is tried at least once"
);
const _: () = assert!(DEAD_LETTERS_PER_COMMAND_MAX >= 1);
const _: () = assert!(
    1 <= KEY_RATE_PER_S_DEFAULT
        && KEY_RATE_PER_S_DEFAULT <= KEY_RATE_PER_S_MAX
        && 1 <= KEY_BURST_DEFAULT
        && KEY_BURST_DEFAULT <= KEY_BURST_MAX
);
const _: () = assert!(
    KEY_BURST_MAX.checked_mul(1_000_000_000).is_some(),
    "a bucket's tolerance in ns fits a u64"
);
