//! Request framing: the head (httparse) and the body (Content-Length or
//! chunked). Pure functions over a byte buffer; "need more bytes" is an
//! ordinary `Ok(None)`, not an error.

use httparse::Status;

use super::fields::Fields;
use super::{HttpError, chunked};
use crate::limits::{HEADER_BYTES_MAX, HEADERS_MAX, REQUEST_TARGET_BYTES_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The request methods busyapi's routes tell apart.
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: as `GET`, without the body.
    Head,
    /// `POST`.
    Post,
    /// Any other method: 405 on every route.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
/// What a request's Content-Type says of its body.
pub enum ContentType {
    #[default]
    /// No Content-Type header.
    Missing,
    /// `application/json`, with any parameters.
    Json,
    /// `application/x-ndjson`: a batch of usages, one a line.
    Ndjson,
    /// Any other media type: 415 for a usage.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// How the body's end is found (RFC 9112 §6).
pub enum Framing {
    /// Content-Length: this many bytes (0 for no body).
    Length(usize),
    /// Transfer-Encoding: chunked.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    /// The method, as far as the routes care.
    pub method: Method,
    /// The path without query string or absolute-form authority.
    pub path: &'a str,
    /// HTTP/1.0 or HTTP/1.1.
    pub http10: bool,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a 100 before its body.
    pub expect_continue: bool,
    /// What Content-Type says of the body.
    pub content_type: ContentType,
    /// The media type as sent, without parameters (empty if none was).
    pub media_type: &'a [u8],
    /// How the body's end is found.
    pub framing: Framing,
    /// The `Idempotency-Key` value, trimmed and not yet checked (a usage
    /// POST takes it as its eventId, see `conn`); `None` without one.
    pub idempotency_key: Option<&'a [u8]>,
    /// The `Authorization` value, trimmed and not yet checked (`auth` does,
    /// for a usage POST); `None` without one.
    pub authorization: Option<&'a [u8]>,
    /// Bytes of the request line and headers, up to the body.
    pub len: usize,
}

/// Parses the head at the start of `buf`. `Ok(None)`: not all there yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head<'_>>, HttpError> {
    // Uninitialised: zeroing 100 headers for every request showed up as the
    // hottest user-space function in profiles.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(Status::Complete(_)) if req.path.is_some_and(|p| p.len() > REQUEST_TARGET_BYTES_MAX) => {
            return Err(HttpError::TargetTooLong);
        }
        Ok(Status::Complete(n)) if n > HEADER_BYTES_MAX => return Err(HttpError::HeadersTooLarge),
        Ok(Status::Complete(n)) => n,
        Ok(Status::Partial) if partial_target_too_long(buf) => {
            return Err(HttpError::TargetTooLong);
        }
        Ok(Status::Partial) if buf.len() > HEADER_BYTES_MAX => {
            return Err(HttpError::HeadersTooLarge);
        }
        Ok(Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(version_error(buf)),
        Err(_) => return Err(HttpError::Malformed),
    };
    let http10 = req.version == Some(0);
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let path = path_of(req.path.unwrap_or(""))?;
    let fields = Fields::read(req.headers)?;
    match fields.hosts {
        0 if !http10 => return Err(HttpError::MissingHost),
        0 | 1 => {}
        _ => return Err(HttpError::DuplicateHost),
    }
    if fields.idempotency_keys > 1 {
        return Err(HttpError::DuplicateIdempotencyKey);
    }
    if fields.authorizations > 1 {
        return Err(HttpError::DuplicateAuthorization);
    }
    let framing = match (fields.content_length, fields.codings.chunked()?) {
        (Some(_), true) => return Err(HttpError::LengthAndChunked),
        (_, true) if http10 => return Err(HttpError::UnsupportedTransferEncoding),
        (_, true) => Framing::Chunked,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::Length(0),
    };
    // `close` anywhere in the list wins, whatever else the list says.
    let keep_alive = if http10 {
        fields.keep_alive && !fields.close
    } else {
        !fields.close
    };
    Ok(Some(Head {
        method,
        path,
        http10,
        keep_alive,
        expect_continue: fields.expect_continue && !http10,
        content_type: fields.content_type,
        media_type: fields.media_type,
        framing,
        idempotency_key: fields.idempotency_key,
        authorization: fields.authorization,
        len,
    }))
}

/// httparse calls any bad token where the version belongs a version error,
/// so `GET /a b HTTP/1.1` (a space in the target) would get 505. Only a
/// request line of three parts ending in `HTTP/<digit>...` names an HTTP
/// version busyapi does not speak; anything else is malformed (400).
fn version_error(buf: &[u8]) -> HttpError {
    let line = buf
        .split(|&b| b == b'\r' || b == b'\n')
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let version = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(_), Some(v), None) => v,
        _ => return HttpError::Malformed,
    };
    match version.strip_prefix(b"HTTP/") {
        Some([major, ..]) if major.is_ascii_digit() => HttpError::Version,
        _ => HttpError::Malformed,
    }
}

/// Whether the target of a request line that is not complete yet is
/// already over [`REQUEST_TARGET_BYTES_MAX`]: the bytes after the method's
/// space, up to the next space or the end. Looked at only once the buffer
/// could hold such a target, so ordinary partial heads cost nothing.
fn partial_target_too_long(buf: &[u8]) -> bool {
    if buf.len() <= REQUEST_TARGET_BYTES_MAX {
        return false;
    }
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let target = line[space + 1..].split(|&b| b == b' ').next();
    target.is_some_and(|t| t.len() > REQUEST_TARGET_BYTES_MAX)
}

/// Strips the query and, for absolute-form targets, the scheme and host.
/// A target that starts with `/` is origin-form, whatever its query holds.
/// An absolute-form authority ends at the first `/`, `?` or `#` (RFC 3986
/// §3.2), and its scheme must be `http` or `https`, in any case; `*` is
/// kept as it is (it routes nowhere).
fn path_of(target: &str) -> Result<&str, HttpError> {
    let path = if target.starts_with('/') || target == "*" {
        target
    } else {
        let (scheme, rest) = target.split_once("://").ok_or(HttpError::BadTarget)?;
        let http = scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https");
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        // RFC 9110 §4.2.1: an http(s) URI with an empty host is invalid.
        if !http || authority_end == 0 {
            return Err(HttpError::BadTarget);
        }
        if rest[authority_end..].starts_with('/') {
            &rest[authority_end..]
        } else {
            "/"
        }
    };
    Ok(path.split(['?', '#']).next().unwrap_or(path))
}

/// A body, once all of it is buffered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The body is `buf[range]` (Content-Length framing).
    Slice(std::ops::Range<usize>),
    /// The body was de-chunked into the caller's scratch buffer.
    Scratch,
}

/// Finds the end of the body of `head` in `buf` (which starts with the
/// head). Returns the body and the request's total length, or `Ok(None)`
/// if more bytes are needed. Chunked bodies are decoded into `scratch`,
/// resuming where `progress` says the last call for this request stopped
/// (a fresh [`chunked::Progress`] for each new request).
pub fn parse_body(
    buf: &[u8],
    head: &Head<'_>,
    body_bytes_max: usize,
    scratch: &mut Vec<u8>,
    progress: &mut chunked::Progress,
) -> Result<Option<(Body, usize)>, HttpError> {
    match head.framing {
        Framing::Length(n) if n > body_bytes_max => Err(HttpError::BodyTooLarge {
            max_bytes: body_bytes_max,
        }),
        Framing::Length(n) => {
            let end = head.len + n;
            Ok((buf.len() >= end).then_some((Body::Slice(head.len..end), end)))
        }
        Framing::Chunked => {
            if progress.fresh() {
                scratch.clear();
            }
            chunked::dechunk(buf, head.len, body_bytes_max, scratch, progress)
                .map(|done| done.map(|end| (Body::Scratch, end)))
        }
    }
}

/// [`parse_body`] for a request seen whole at once: no progress is kept.
#[cfg(test)]
pub(super) fn parse_body_once(
    buf: &[u8],
    head: &Head<'_>,
    body_bytes_max: usize,
    scratch: &mut Vec<u8>,
) -> Result<Option<(Body, usize)>, HttpError> {
    parse_body(buf, head, body_bytes_max, scratch, &mut Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head<'_>>, HttpError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn a_usage_post_parses() {
        let raw = "POST /api/usages?x=1 HTTP/1.1\r\nHost: a\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}";
        let h = head(raw).expect("ok").expect("complete");
        assert_eq!(
            (h.method, h.path, h.http10, h.keep_alive),
            (Method::Post, "/api/usages", false, true)
        );
        assert_eq!(
            (h.content_type, h.framing),
            (ContentType::Json, Framing::Length(2))
        );
        let mut scratch = Vec::new();
        let (body, end) = parse_body_once(raw.as_bytes(), &h, 100, &mut scratch)
            .expect("ok")
            .expect("complete");
        assert_eq!(
            (body, end),
            (Body::Slice(raw.len() - 2..raw.len()), raw.len())
        );
    }

    #[test]
    fn partial_heads_and_bodies_ask_for_more() {
        assert_eq!(head("POST /api/usages HTTP/1.1\r\nHost: a\r\n"), Ok(None));
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n{}";
        let h = head(raw).expect("ok").expect("complete");
        assert_eq!(
            parse_body_once(raw.as_bytes(), &h, 100, &mut Vec::new()),
            Ok(None)
        );
    }

    #[test]
    fn connection_semantics_follow_the_version() {
        let h = head("GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.http10 && !h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive);
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive, CLOSE\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive);
    }

    #[test]
    fn bad_framing_is_refused_with_its_reason() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                HttpError::BadContentLength,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::LengthAndChunked,
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            ("POST / HTTP/1.1\r\n\r\n", HttpError::MissingHost),
            (
                "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
                HttpError::DuplicateHost,
            ),
            (
                "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
                HttpError::DuplicateHost,
            ),
            ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", HttpError::BadHost),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                HttpError::ChunkedTwice,
            ),
            (
                "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
                HttpError::BadTarget,
            ),
            ("GARBAGE\r\n\r\n", HttpError::Malformed),
            ("GET / HTTP/2.0\r\n\r\n", HttpError::Version),
            ("\r\nGET / HTTP/3\r\n\r\n", HttpError::Version),
            ("GET / HTTP/2", HttpError::Version),
            ("GET /a b HTTP/1.1\r\n\r\n", HttpError::Malformed),
            ("GET / FOO/1.1\r\n\r\n", HttpError::Malformed),
            ("GET / HTTP/x.1\r\n\r\n", HttpError::Malformed),
        ];
        for (raw, want) in cases {
            assert_eq!(head(raw), Err(want), "{raw:?}");
        }
    }

    #[test]
    fn header_count_and_size_are_bounded() {
        let many: String = (0..HEADERS_MAX + 1)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            head(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")),
            Err(HttpError::TooManyHeaders)
        );
        let ok: String = (0..64).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(
            head(&format!("GET / HTTP/1.1\r\nHost: a\r\n{ok}\r\n"))
                .expect("ok")
                .is_some()
        );
        let big = format!(
            "GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n",
            "v".repeat(HEADER_BYTES_MAX)
        );
        assert_eq!(head(&big), Err(HttpError::HeadersTooLarge));
        let unfinished = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(HEADER_BYTES_MAX));
        assert_eq!(head(&unfinished), Err(HttpError::HeadersTooLarge));
    }

    #[test]
    fn content_length_over_the_cap_is_refused_before_the_body_arrives() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999\r\n\r\n";
        let h = head(raw).expect("ok").expect("complete");
        assert_eq!(
            parse_body_once(raw.as_bytes(), &h, 16, &mut Vec::new()),
            Err(HttpError::BodyTooLarge { max_bytes: 16 })
        );
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_their_path() {
        let path = |t| path_of(t).expect("a valid target");
        assert_eq!(path("http://example.com/api/usages?a=b"), "/api/usages");
        assert_eq!(path("HTTPS://example.com/api/usages"), "/api/usages");
        assert_eq!(path("http://example.com"), "/");
        assert_eq!(path("http://example.com?x=/api/usages"), "/");
        assert_eq!(path("http://example.com#/api/usages"), "/");
        assert_eq!(path("/healthz#frag"), "/healthz");
        assert_eq!(path("/api/usages?cb=http://x/healthz"), "/api/usages");
        for bad in [
            "ftp://x/api/usages",
            "x/api/usages",
            "http:///api/usages",
            "a:b",
        ] {
            assert_eq!(path_of(bad), Err(HttpError::BadTarget), "{bad}");
        }
    }

    #[test]
    fn a_long_target_is_refused_as_soon_as_it_is_over_the_limit() {
        let target = "/".repeat(REQUEST_TARGET_BYTES_MAX + 1);
        let partial = format!("GET {target}");
        assert_eq!(head(&partial), Err(HttpError::TargetTooLong));
        let whole = format!("GET {target} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(head(&whole), Err(HttpError::TargetTooLong));
        let at_limit = "/".repeat(REQUEST_TARGET_BYTES_MAX);
        let whole = format!("GET {at_limit} HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(head(&whole).expect("ok").is_some());
        assert_eq!(head(&format!("GET {at_limit} HTTP/1.1")), Ok(None));
    }
}
