//! HTTP/1.1 on may coroutines: the first step of the data flow.
//!
//! # Why not may_minihttp
//! The stack named may_minihttp, and it sets the shape kept here: one
//! coroutine per connection, pipelined requests decoded from one read,
//! responses written in one batch. Its 0.1.11 release cannot meet the
//! contract, though: it panics on a non-numeric `Content-Length`, drops the
//! connection without a response on any parse error, stops at 16 headers,
//! has no chunked bodies, and breaks a connection whose body a handler does
//! not read. So this module is a small HTTP/1.1 layer of its own on `may` +
//! `httparse` (the README has the numbers that compare the two).
//!
//! # What it owns
//! - [`server`]: the accept loop and its stop; [`admission`]: the
//!   connection cap and the count of requests in progress, which the
//!   server owns and the shutdown drain asks it about.
//! - [`conn`]: one connection: reading with timeouts, pipelining, grouping
//!   a read's usages into one WAL submission (a batch POST into one of its
//!   own, answered with all its ids), writing responses in order.
//! - [`request`] / [`response`]: framing, as pure functions; `fields`: the
//!   header fields acted on and their syntax; [`chunked`]: chunked request
//!   bodies, strictly.
//! - `socket`: the stream, plain or TLS (its handshake under a deadline),
//!   writing within a deadline, draining before a close, and giving grown
//!   buffers back; [`tls`]: the certificate, and its reload on SIGHUP.
//! - [`auth`]: API keys (the keys file, the Bearer check in constant
//!   time, per-key token buckets, the failed-authentication budget of an
//!   address), checked on a usage's head before its body is staged.
//! - [`routes`]: what each path answers, and [`ApiError::status`], the one
//!   place where errors become statuses.
//!
//! # Invariants
//! - Every request gets a response, parse errors included; after an error
//!   that leaves the stream's framing unknown the connection is closed.
//! - A 201 is written only after the WAL writer replied that the record is
//!   fsynced; responses leave in request order.
//! - No request body is ever logged.
//! - What a connection holds is bounded in bytes: a round of pipelined
//!   requests ends at a response budget, its write has one deadline, and
//!   buffers grown for a round are given back (see [`conn`]).

pub mod admission;
pub mod auth;
pub mod chunked;
pub mod conn;
mod fields;
pub mod request;
pub mod response;
pub mod routes;
pub mod server;
mod socket;
pub mod tls;

pub use admission::{Admission, Admitted};

use crate::app::NotReady;
use crate::ingest::{BatchError, IngestError};
use crate::limits::{
    EVENT_ID_BYTES_MAX, HEADER_BYTES_MAX, HEADERS_MAX, MEDIA_TYPE_ECHO_BYTES_MAX,
    REQUEST_TARGET_BYTES_MAX,
};
use crate::wal::CommitError;
use crate::wal::SubmitError;
use auth::AuthError;

/// Request framing errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    #[error("malformed request line or header")]
    /// 400: the request line or a header line does not parse.
    Malformed,
    #[error("malformed Content-Length")]
    /// 400: Content-Length is not one decimal number (or differs between
    /// repeated headers).
    BadContentLength,
    #[error("Content-Length and Transfer-Encoding together are not allowed")]
    /// 400: both Content-Length and Transfer-Encoding (RFC 9112 §6.3 lets a
    /// server refuse it, and a proxy in front may read it the other way).
    LengthAndChunked,
    #[error("malformed chunked body")]
    /// 400: a chunk size line, chunk data or trailer of a chunked body does
    /// not parse.
    BadChunk,
    #[error("only the chunked Transfer-Encoding is supported")]
    /// 501: a transfer coding other than chunked (gzip, deflate...).
    UnsupportedTransferEncoding,
    #[error("the last Transfer-Encoding must be chunked")]
    /// 400: Transfer-Encoding whose last coding is not chunked, so the body
    /// has no length a server can find.
    ChunkedNotLast,
    #[error("chunked is given more than once in Transfer-Encoding")]
    /// 400: chunked listed more than once in Transfer-Encoding.
    ChunkedTwice,
    #[error("an HTTP/1.1 request needs a Host header")]
    /// 400: an HTTP/1.1 request without a Host header.
    MissingHost,
    #[error("more than one Host header")]
    /// 400: more than one Host header.
    DuplicateHost,
    #[error("malformed Host header")]
    /// 400: a Host value that is not RFC 3986 `host[:port]`.
    BadHost,
    #[error("more than one Idempotency-Key header")]
    /// 400: more than one `Idempotency-Key` header: which names the event
    /// would be a guess.
    DuplicateIdempotencyKey,
    #[error(
        "malformed Idempotency-Key header (1 to {EVENT_ID_BYTES_MAX} bytes of printable ASCII, bare or in double quotes)"
    )]
    /// 400: an `Idempotency-Key` that cannot be an eventId.
    BadIdempotencyKey,
    #[error("more than one Authorization header")]
    /// 400: more than one `Authorization` header: which key speaks would be
    /// a guess.
    DuplicateAuthorization,
    #[error("Idempotency-Key header and eventId in the body differ")]
    /// 400: a usage names its event twice, two ways: nothing is written.
    IdempotencyKeyMismatch,
    #[error("Idempotency-Key names one event: a batch gives each usage its own eventId instead")]
    /// 400: an `Idempotency-Key` on a batch POST, where it could name no
    /// one usage; nothing is written.
    IdempotencyKeyOnBatch,
    #[error("request target must be a path or an http(s) URL")]
    /// 400: a target that is neither an origin-form path, nor an absolute
    /// `http`/`https` URL with a host, nor `*`.
    BadTarget,
    #[error("request target longer than {REQUEST_TARGET_BYTES_MAX} bytes")]
    /// 414: a request target over [`REQUEST_TARGET_BYTES_MAX`].
    TargetTooLong,
    #[error("only HTTP/1.0 and HTTP/1.1 are supported")]
    /// 505: an HTTP version other than 1.0 and 1.1.
    Version,
    #[error("too many headers (at most {HEADERS_MAX})")]
    /// 431: more than [`HEADERS_MAX`] header lines.
    TooManyHeaders,
    #[error("request headers larger than {HEADER_BYTES_MAX} bytes")]
    /// 431: a request head over [`HEADER_BYTES_MAX`].
    HeadersTooLarge,
    #[error("body larger than {max_bytes} bytes")]
    /// 413: a body over the route's cap.
    BodyTooLarge {
        /// The cap that was passed, in bytes.
        max_bytes: usize,
    },
    #[error("request not received in time")]
    /// 408: the head or the body missed its read deadline.
    Timeout,
}

/// Everything a request can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    /// The request's framing (the status is the [`HttpError`]'s).
    Http(#[from] HttpError),
    #[error(transparent)]
    /// 400: the body is not a valid usage.
    Ingest(#[from] IngestError),
    #[error(transparent)]
    /// 400 (413 for too many usages): a batch refused whole.
    Batch(#[from] BatchError),
    #[error(transparent)]
    /// 401: a usage POST without a known API key.
    Auth(#[from] AuthError),
    #[error("no such path")]
    /// 404: no route has this path.
    NotFound,
    #[error("method not allowed (allowed: {allow})")]
    /// 405: the path exists, the method does not; `Allow` lists the methods.
    MethodNotAllowed {
        /// The methods the path takes, as the `Allow` header lists them.
        allow: &'static str,
    },
    #[error("Content-Type must be application/json or application/x-ndjson (received \"{0}\")")]
    /// 415: a body that is neither `application/json` nor
    /// `application/x-ndjson`; names what was sent.
    UnsupportedMediaType(MediaTypeEcho),
    #[error(transparent)]
    /// 503: the WAL did not take the submission (this core's lane is full,
    /// or the lanes stopped for shutdown).
    Submit(#[from] SubmitError),
    #[error(transparent)]
    /// 503: the WAL could not make the records durable.
    Commit(#[from] CommitError),
    #[error("{0}; retry later")]
    /// 503: the node takes no usages now (shutting down, the WAL unwritable,
    /// or the backlog over `--wal-max-bytes`).
    NotReady(#[from] NotReady),
}

/// A client's media type as a 415 names it back: at most
/// [`MEDIA_TYPE_ECHO_BYTES_MAX`] bytes (then `...`), printable ASCII only
/// (anything else becomes `?`), so a 415 never carries more than a short
/// line of what was sent. Fixed size: refusing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaTypeEcho {
    bytes: [u8; MEDIA_TYPE_ECHO_BYTES_MAX],
    len: usize,
    /// The type was longer than what is kept.
    cut: bool,
}

impl MediaTypeEcho {
    /// Keeps what may be echoed of the media type `sent`.
    pub fn new(sent: &[u8]) -> MediaTypeEcho {
        let mut bytes = [0; MEDIA_TYPE_ECHO_BYTES_MAX];
        let len = sent.len().min(MEDIA_TYPE_ECHO_BYTES_MAX);
        for (to, &from) in bytes.iter_mut().zip(&sent[..len]) {
            *to = if from.is_ascii_graphic() || from == b' ' {
                from
            } else {
                b'?'
            };
        }
        MediaTypeEcho {
            bytes,
            len,
            cut: sent.len() > len,
        }
    }
}

impl std::fmt::Display for MediaTypeEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Printable ASCII by construction, so always UTF-8.
        let kept = std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("?");
        f.write_str(kept)?;
        if self.cut { f.write_str("...") } else { Ok(()) }
    }
}

/// Seconds a client should wait before retrying a 503.
pub const RETRY_AFTER_SECS: &str = "1";

impl ApiError {
    /// The one place where an error becomes an HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Http(e) => match e {
                HttpError::TooManyHeaders | HttpError::HeadersTooLarge => 431,
                HttpError::BodyTooLarge { .. } => 413,
                HttpError::TargetTooLong => 414,
                HttpError::UnsupportedTransferEncoding => 501,
                HttpError::Version => 505,
                HttpError::Timeout => 408,
                HttpError::Malformed
                | HttpError::BadContentLength
                | HttpError::LengthAndChunked
                | HttpError::BadChunk
                | HttpError::ChunkedNotLast
                | HttpError::ChunkedTwice
                | HttpError::MissingHost
                | HttpError::DuplicateHost
                | HttpError::BadHost
                | HttpError::DuplicateIdempotencyKey
                | HttpError::BadIdempotencyKey
                | HttpError::DuplicateAuthorization
                | HttpError::IdempotencyKeyMismatch
                | HttpError::IdempotencyKeyOnBatch
                | HttpError::BadTarget => 400,
            },
            ApiError::Ingest(_) => 400,
            ApiError::Batch(BatchError::TooMany { .. }) => 413,
            ApiError::Batch(_) => 400,
            ApiError::Auth(e) => match e {
                AuthError::Missing | AuthError::WrongScheme | AuthError::UnknownKey => 401,
                AuthError::RateLimited { .. } | AuthError::TooManyFailures { .. } => 429,
                // A keys file's error stops a start or a reload; no request
                // can carry one, and if one did it is this server's fault.
                AuthError::KeysFile { .. } => 500,
            },
            ApiError::NotFound => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Submit(_) | ApiError::Commit(_) | ApiError::NotReady(_) => 503,
        }
    }

    /// Whether the connection closes after this error, whatever the
    /// request asked: an address that keeps failing to authenticate must
    /// open a new connection for each further guess.
    pub fn closes_connection(&self) -> bool {
        matches!(self, ApiError::Auth(AuthError::TooManyFailures { .. }))
    }

    /// Writes the error's response to `out`: its status, its JSON error,
    /// [`ApiError::extra_headers`] and a 429's `Retry-After`.
    pub fn write(&self, out: &mut Vec<u8>, conn: response::Conn, head_only: bool) {
        let mut secs = itoa::Buffer::new();
        let retry;
        let headers = match self {
            ApiError::Auth(e) => match e.retry_after_secs() {
                Some(n) => {
                    retry = [("Retry-After", secs.format(n))];
                    &retry[..]
                }
                None => self.extra_headers(),
            },
            _ => self.extra_headers(),
        };
        let message = self.to_string();
        response::write_error(out, self.status(), &message, conn, headers, head_only);
    }

    /// Headers that go with the status.
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            ApiError::MethodNotAllowed { allow } if *allow == routes::ALLOW_POST => {
                &[("Allow", routes::ALLOW_POST)]
            }
            ApiError::MethodNotAllowed { .. } => &[("Allow", routes::ALLOW_GET)],
            ApiError::Auth(e) if e.challenge() == auth::CHALLENGE => {
                &[("WWW-Authenticate", auth::CHALLENGE)]
            }
            ApiError::Auth(_) => &[("WWW-Authenticate", auth::CHALLENGE_INVALID)],
            e if e.status() == 503 => &[("Retry-After", RETRY_AFTER_SECS)],
            _ => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_maps_to_its_status() {
        let cases: Vec<(ApiError, u16)> = vec![
            (HttpError::Malformed.into(), 400),
            (HttpError::BadContentLength.into(), 400),
            (HttpError::TooManyHeaders.into(), 431),
            (HttpError::HeadersTooLarge.into(), 431),
            (HttpError::BodyTooLarge { max_bytes: 1 }.into(), 413),
            (HttpError::TargetTooLong.into(), 414),
            (HttpError::ChunkedNotLast.into(), 400),
            (HttpError::ChunkedTwice.into(), 400),
            (HttpError::DuplicateHost.into(), 400),
            (HttpError::BadHost.into(), 400),
            (HttpError::DuplicateIdempotencyKey.into(), 400),
            (HttpError::BadIdempotencyKey.into(), 400),
            (HttpError::IdempotencyKeyMismatch.into(), 400),
            (HttpError::DuplicateAuthorization.into(), 400),
            (AuthError::Missing.into(), 401),
            (AuthError::WrongScheme.into(), 401),
            (AuthError::UnknownKey.into(), 401),
            (
                AuthError::RateLimited {
                    retry_after_secs: 1,
                }
                .into(),
                429,
            ),
            (
                AuthError::TooManyFailures {
                    retry_after_secs: 1,
                }
                .into(),
                429,
            ),
            (HttpError::BadTarget.into(), 400),
            (HttpError::UnsupportedTransferEncoding.into(), 501),
            (HttpError::Version.into(), 505),
            (HttpError::Timeout.into(), 408),
            (IngestError::Json.into(), 400),
            (HttpError::IdempotencyKeyOnBatch.into(), 400),
            (BatchError::Empty.into(), 400),
            (BatchError::TooMany { max_records: 1 }.into(), 413),
            (
                BatchError::Element {
                    index: 0,
                    reason: IngestError::Json,
                }
                .into(),
                400,
            ),
            (ApiError::NotFound, 404),
            (
                ApiError::MethodNotAllowed {
                    allow: routes::ALLOW_POST,
                },
                405,
            ),
            (ApiError::UnsupportedMediaType(MediaTypeEcho::new(b"")), 415),
            (SubmitError::LaneFull.into(), 503),
            (CommitError::Write.into(), 503),
            (NotReady::OverQuota.into(), 503),
        ];
        for (e, status) in cases {
            assert_eq!(e.status(), status, "{e}");
        }
    }

    #[test]
    fn a_503_tells_when_to_retry_and_a_405_what_is_allowed() {
        assert_eq!(
            ApiError::from(NotReady::OverQuota).extra_headers(),
            &[("Retry-After", "1")]
        );
        assert_eq!(
            ApiError::MethodNotAllowed {
                allow: routes::ALLOW_POST
            }
            .extra_headers(),
            &[("Allow", "POST")]
        );
    }

    #[test]
    fn a_401_challenges_for_a_bearer_token_and_names_a_bad_one_invalid() {
        assert_eq!(
            ApiError::from(AuthError::Missing).extra_headers(),
            &[("WWW-Authenticate", "Bearer realm=\"busyapi\"")]
        );
        assert_eq!(
            ApiError::from(AuthError::UnknownKey).extra_headers(),
            &[(
                "WWW-Authenticate",
                "Bearer realm=\"busyapi\", error=\"invalid_token\""
            )]
        );
    }

    #[test]
    fn a_415_names_the_type_received_short_and_printable() {
        let e = ApiError::UnsupportedMediaType(MediaTypeEcho::new(b"text/plain"));
        assert_eq!(
            e.to_string(),
            "Content-Type must be application/json or application/x-ndjson (received \"text/plain\")"
        );
        let long = [b'x'; MEDIA_TYPE_ECHO_BYTES_MAX + 1];
        let echo = MediaTypeEcho::new(&long).to_string();
        assert_eq!(
            echo,
            format!("{}...", "x".repeat(MEDIA_TYPE_ECHO_BYTES_MAX))
        );
        assert_eq!(
            MediaTypeEcho::new(b"a\x01\xffb/c d").to_string(),
            "a??b/c d"
        );
    }
}
