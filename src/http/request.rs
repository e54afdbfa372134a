//! Request framing: the head (httparse) and the body (Content-Length or
//! chunked). Pure functions over a byte buffer; "need more bytes" is an
//! ordinary `Ok(None)`, not an error.

use httparse::Status;

use super::{HttpError, chunked};
use crate::limits::{HEADER_BYTES_MAX, HEADERS_MAX};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContentType {
    #[default]
    Missing,
    Json,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head<'a> {
    pub method: Method,
    /// The path without query string or absolute-form authority.
    pub path: &'a str,
    /// HTTP/1.0 or HTTP/1.1.
    pub http10: bool,
    /// Whether the connection stays open after this request.
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub content_type: ContentType,
    pub framing: Framing,
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
        Ok(Status::Complete(n)) if n > HEADER_BYTES_MAX => return Err(HttpError::HeadersTooLarge),
        Ok(Status::Complete(n)) => n,
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
    let path = path_of(req.path.unwrap_or(""));
    let fields = Fields::read(req.headers)?;
    if !http10 && !fields.host {
        return Err(HttpError::MissingHost);
    }
    let framing = match (fields.content_length, fields.chunked) {
        (Some(_), true) => return Err(HttpError::LengthAndChunked),
        (_, true) if http10 => return Err(HttpError::UnsupportedTransferEncoding),
        (_, true) => Framing::Chunked,
        (Some(n), false) => Framing::Length(n),
        (None, false) => Framing::Length(0),
    };
    let keep_alive = if http10 {
        fields.keep_alive
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
        framing,
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

/// Strips the query and, for absolute-form targets, the scheme and host.
/// A target that starts with `/` is origin-form, whatever its query holds.
fn path_of(target: &str) -> &str {
    let target = match target.split_once("://") {
        Some((_, rest)) if !target.starts_with('/') => rest.find('/').map_or("/", |i| &rest[i..]),
        _ => target,
    };
    target.split(['?', '#']).next().unwrap_or(target)
}

/// The header fields busyapi acts on.
#[derive(Default)]
struct Fields {
    host: bool,
    content_length: Option<usize>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    content_type: ContentType,
}

impl Fields {
    fn read(headers: &[httparse::Header<'_>]) -> Result<Fields, HttpError> {
        let mut f = Fields::default();
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = content_length(h.value)?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::BadContentLength);
                }
                f.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                f.chunked = transfer_encoding(h.value)?;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in tokens(h.value) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                f.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case("content-type") {
                f.content_type = content_type(h.value);
            } else if name.eq_ignore_ascii_case("host") {
                f.host = true;
            }
        }
        Ok(f)
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// Digits only: no sign, no spaces inside, no list. At most 19 digits so
/// the value fits; anything larger is far over any body limit anyway.
fn content_length(v: &[u8]) -> Result<usize, HttpError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadContentLength);
    }
    let n = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Only `chunked` (alone) is supported; compressions and other codings get
/// 501 as RFC 9112 asks.
fn transfer_encoding(v: &[u8]) -> Result<bool, HttpError> {
    let mut codings = tokens(v);
    match (codings.next(), codings.next()) {
        (Some(c), None) if c.eq_ignore_ascii_case(b"chunked") => Ok(true),
        (None, _) => Err(HttpError::Malformed),
        _ => Err(HttpError::UnsupportedTransferEncoding),
    }
}

fn content_type(v: &[u8]) -> ContentType {
    let media = trim(v.split(|&b| b == b';').next().unwrap_or(v));
    let is_json = media.eq_ignore_ascii_case(b"application/json")
        || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"));
    if is_json {
        ContentType::Json
    } else {
        ContentType::Other
    }
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
/// if more bytes are needed. Chunked bodies are decoded into `scratch`.
pub fn parse_body(
    buf: &[u8],
    head: &Head<'_>,
    body_bytes_max: usize,
    scratch: &mut Vec<u8>,
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
            scratch.clear();
            chunked::dechunk(buf, head.len, body_bytes_max, scratch)
                .map(|done| done.map(|end| (Body::Scratch, end)))
        }
    }
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
        let (body, end) = parse_body(raw.as_bytes(), &h, 100, &mut scratch)
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
            parse_body(raw.as_bytes(), &h, 100, &mut Vec::new()),
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
            parse_body(raw.as_bytes(), &h, 16, &mut Vec::new()),
            Err(HttpError::BodyTooLarge { max_bytes: 16 })
        );
    }

    #[test]
    fn content_types_are_classified() {
        assert_eq!(content_type(b"application/json"), ContentType::Json);
        assert_eq!(
            content_type(b"Application/JSON ; charset=utf-8"),
            ContentType::Json
        );
        assert_eq!(content_type(b"application/vnd.api+json"), ContentType::Json);
        assert_eq!(content_type(b"text/plain"), ContentType::Other);
        assert_eq!(
            content_type(b"application/x-www-form-urlencoded"),
            ContentType::Other
        );
    }

    #[test]
    fn absolute_form_targets_are_reduced_to_their_path() {
        assert_eq!(path_of("http://example.com/api/usages?a=b"), "/api/usages");
        assert_eq!(path_of("http://example.com"), "/");
        assert_eq!(path_of("/healthz#frag"), "/healthz");
        assert_eq!(path_of("/api/usages?cb=http://x/healthz"), "/api/usages");
    }
}
