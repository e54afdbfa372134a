//! Details of RFC 9110 and RFC 9112 that busyapi once got wrong: `Host`
//! syntax and count, the `Transfer-Encoding` list, `close` inside a
//! `Connection` list, 414, absolute-form targets, HEAD before
//! `100 Continue`, and a refusal that reaches a client still sending.

use std::io::{Read, Write};

use super::*;

/// The limit on a request target (`REQUEST_TARGET_BYTES_MAX`).
const TARGET_BYTES_MAX: usize = 8 * 1024;
/// The limit on a whole head (`HEADER_BYTES_MAX`).
const HEADER_BYTES_MAX: usize = 16 * 1024;

/// `raw` with its `Host: t` line replaced by `host_lines`.
fn with_host(raw: &[u8], host_lines: &str) -> Vec<u8> {
    String::from_utf8(raw.to_vec())
        .expect("utf8")
        .replacen("Host: t\r\n", host_lines, 1)
        .into_bytes()
}

#[test]
fn two_host_headers_or_a_host_that_is_not_host_and_port_get_400_and_close() {
    let s = start();
    let post = post_json(USAGE.as_bytes());
    let two = "more than one Host header";
    assert_refused(&s, &with_host(&post, "Host: t\r\nHost: t\r\n"), 400, two);
    assert_refused(&s, &with_host(&post, "Host: a\r\nHost: b\r\n"), 400, two);
    let http10 = b"GET /healthz HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n";
    assert_refused(&s, http10, 400, two);
    for bad in [
        "a b", "a/b", "user@a", "a:80x", "a:1:2", "[::1", "a%zz", "a\"b",
    ] {
        let raw = with_host(&post, &format!("Host: {bad}\r\n"));
        assert_refused(&s, &raw, 400, "malformed Host header");
    }
    assert_nothing_written(&s);
    for good in ["example.com:3000", "127.0.0.1", "[::1]:3000", ""] {
        let raw = with_host(&post, &format!("Host: {good}\r\n"));
        let r = exchange(&s, &raw);
        assert_eq!(r.status, 201, "Host: {good}: {}", r.text());
    }
}

#[test]
fn a_transfer_encoding_that_does_not_end_in_chunked_or_repeats_it_gets_400_and_closes() {
    let s = start();
    let te = |lines: &str| {
        format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n{lines}\r\n{}",
            one_chunk(USAGE)
        )
    };
    let not_last = "the last Transfer-Encoding must be chunked";
    for lines in [
        "Transfer-Encoding: gzip\r\n",
        "Transfer-Encoding: chunked, gzip\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        "Transfer-Encoding: identity\r\n",
    ] {
        assert_refused(&s, te(lines).as_bytes(), 400, not_last);
    }
    let twice = "chunked is given more than once in Transfer-Encoding";
    for lines in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: Chunked,CHUNKED\r\n",
    ] {
        assert_refused(&s, te(lines).as_bytes(), 400, twice);
    }
    assert_nothing_written(&s);
}

#[test]
fn close_anywhere_in_a_connection_list_in_any_case_closes_after_the_response() {
    let s = start();
    let healthz = |version: &str, lines: &str| {
        format!("GET /healthz HTTP/{version}\r\nHost: t\r\n{lines}\r\n").into_bytes()
    };
    for raw in [
        healthz("1.1", "Connection: keep-alive, close\r\n"),
        healthz("1.1", "Connection: Keep-Alive, CLOSE\r\n"),
        healthz("1.1", "Connection: keep-alive\r\nConnection: close\r\n"),
        healthz("1.0", "Connection: keep-alive, close\r\n"),
        healthz("1.0", "Connection: close\r\nConnection: Keep-Alive\r\n"),
    ] {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut c = s.connect();
        // A second request behind it must not be answered.
        c.send(&[&raw[..], &healthz("1.1", "")[..]].concat());
        let r = c.response();
        assert_eq!(r.status, 200, "{text:?}");
        assert_eq!(r.header("connection"), Some("close"), "{text:?}");
        assert!(c.closed(), "the connection stayed open after {text:?}");
    }
}

#[test]
fn a_request_target_over_8_kib_gets_414_and_one_at_the_limit_is_served() {
    let s = start();
    let too_long = format!("request target longer than {TARGET_BYTES_MAX} bytes");
    let over = format!("/healthz?{}", "q".repeat(TARGET_BYTES_MAX));
    let raw = format!("GET {over} HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_refused(&s, raw.as_bytes(), 414, &too_long);
    // Longer than the whole head may be: still 414, not 431, and answered
    // without waiting for the end of the request line.
    let huge = format!("GET /{}", "q".repeat(2 * HEADER_BYTES_MAX));
    assert_refused(&s, huge.as_bytes(), 414, &too_long);
    let at_limit = format!(
        "/healthz?{}",
        "q".repeat(TARGET_BYTES_MAX - "/healthz?".len())
    );
    let r = exchange(
        &s,
        format!("GET {at_limit} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn an_absolute_form_authority_ends_at_slash_query_or_fragment_and_only_http_schemes_pass() {
    let s = start();
    let post_to = |target: &str| {
        request(
            "POST",
            target,
            "Content-Type: application/json\r\n",
            USAGE.as_bytes(),
        )
    };
    // The path is `/` (the status page), which takes no POST.
    for target in ["http://t?next=/api/usages", "http://t#/api/usages"] {
        let r = exchange(&s, &post_to(target));
        assert_error(&r, 405, "method not allowed (allowed: GET, HEAD)");
    }
    let bad = "request target must be a path or an http(s) URL";
    for target in [
        "ftp://t/api/usages",
        "javascript://t/api/usages",
        "api/usages",
        "http:///api/usages",
    ] {
        assert_refused(&s, &post_to(target), 400, bad);
    }
    assert_nothing_written(&s);
    for target in ["HTTP://t/api/usages", "Https://t:443/api/usages?x=1"] {
        let r = exchange(&s, &post_to(target));
        assert_eq!(r.status, 201, "{target}: {}", r.text());
    }
}

#[test]
fn a_head_request_refused_before_100_continue_gets_its_status_line_and_headers_only() {
    let s = start();
    for path in ["/api/usages", "/nope"] {
        let mut c = s.connect();
        c.send(
            format!(
                "HEAD {path} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n"
            )
            .as_bytes(),
        );
        // The server closes after the refusal: everything it sent is here.
        let mut all = Vec::new();
        c.stream.read_to_end(&mut all).expect("read to the close");
        let text = String::from_utf8_lossy(&all);
        let head_end = text.find("\r\n\r\n").expect("a complete head") + 4;
        assert!(
            text.starts_with("HTTP/1.1 405 ") || text.starts_with("HTTP/1.1 404 "),
            "HEAD {path}: {text}"
        );
        assert_eq!(&text[head_end..], "", "HEAD {path} got a body");
    }
}

#[test]
fn a_413_from_content_length_reaches_a_client_that_is_still_sending_its_body() {
    // More than the kernel buffers between the two sockets hold, so that
    // the client is still writing when the server decides; at most what
    // the server drains (`CLOSE_DRAIN_BYTES_MAX`).
    const BODY_BYTES: usize = 1024 * 1024;
    let s = start();
    for _ in 0..3 {
        let mut c = s.connect();
        let head = format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {BODY_BYTES}\r\n\r\n"
        );
        let raw = [head.as_bytes(), &vec![b' '; BODY_BYTES]].concat();
        // All of it in one go, before reading anything, as a simple client
        // does. Refused unread, the body would make closing send a reset.
        let sent = c.stream.write_all(&raw);
        let r = c.try_response().expect("the 413, not a reset");
        assert!(sent.is_ok(), "the body was not taken: {sent:?}");
        assert_error(&r, 413, "body larger than 16384 bytes");
        assert_eq!(r.header("connection"), Some("close"));
    }
    assert_nothing_written(&s);
}
