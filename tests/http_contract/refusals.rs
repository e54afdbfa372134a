//! Requests refused before their body is looked at: bad framing (400), an
//! unknown path (404) or method (405), a stall (408), a body over the cap
//! (413), a non-JSON type (415), oversized heads (431), unsupported codings
//! (501) and versions (505).

use std::time::Duration;

use super::*;

#[test]
fn a_malformed_request_line_or_header_gets_400_and_the_connection_closes() {
    let s = start();
    let bad: [&[u8]; 7] = [
        b"GARBAGE\r\n\r\n",
        b"POST /api/usages\r\nHost: t\r\n\r\n",
        b"POST /api/ usages HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /api/usages FOO/1.1\r\nHost: t\r\n\r\n",
        b"POST /api/usages HTTP/x.y\r\nHost: t\r\n\r\n",
        b"POST /api/usages HTTP/1.1 x\r\nHost: t\r\n\r\n",
        b"POST /api/usages HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
    ];
    for raw in bad {
        assert_refused(&s, raw, 400, "malformed request line or header");
    }
    let no_host = post_json(USAGE.as_bytes());
    let no_host = String::from_utf8(no_host)
        .expect("utf8")
        .replacen("Host: t\r\n", "", 1);
    assert_refused(
        &s,
        no_host.as_bytes(),
        400,
        "an HTTP/1.1 request needs a Host header",
    );
    assert_nothing_written(&s);
}

#[test]
fn a_malformed_content_length_gets_400_not_a_dropped_connection() {
    let s = start();
    let values = [
        "abc", "-1", "+103", "1.5", "0x10", "", "1 2", "103, 103", "12abc",
    ];
    for value in values {
        let head = format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {value}\r\n\r\n"
        );
        let raw = [head.as_bytes(), USAGE.as_bytes()].concat();
        assert_refused(&s, &raw, 400, "malformed Content-Length");
    }
    let two_lengths = post_with("Content-Length: 3\r\n", USAGE.as_bytes());
    assert_refused(&s, &two_lengths, 400, "malformed Content-Length");
    assert_nothing_written(&s);
}

#[test]
fn content_length_together_with_transfer_encoding_or_a_bad_chunk_gets_400() {
    let s = start();
    let chunked = one_chunk(USAGE);
    let both = "Content-Length and Transfer-Encoding together are not allowed";
    let length_last = post_with("Transfer-Encoding: chunked\r\n", chunked.as_bytes());
    assert_refused(&s, &length_last, 400, both);
    let length_first = format!(
        "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}",
        chunked.len()
    );
    assert_refused(&s, length_first.as_bytes(), 400, both);
    assert_refused(
        &s,
        &post_chunked("zz\r\n{}\r\n0\r\n\r\n"),
        400,
        "malformed chunked body",
    );
    assert_refused(
        &s,
        &post_chunked("2\r\n{}XX0\r\n\r\n"),
        400,
        "malformed chunked body",
    );
    assert_nothing_written(&s);
}

#[test]
fn an_unknown_path_gets_404_and_the_connection_stays_usable() {
    let s = start();
    let mut c = s.connect();
    let json = "Content-Type: application/json\r\n";
    for (method, path) in [
        ("GET", "/nope"),
        ("POST", "/api/usage"),
        ("POST", "/api/usages/1"),
        ("GET", "/api"),
    ] {
        c.send(&request(method, path, json, USAGE.as_bytes()));
        let r = c.response();
        assert_error(&r, 404, "no such path");
        assert_eq!(r.header("connection"), None, "a 404 closed the connection");
    }
    c.send(&post_json(USAGE.as_bytes()));
    assert_eq!(
        c.response().id(),
        1,
        "a 404 was written, or its body not skipped"
    );
}

#[test]
fn a_wrong_method_gets_405_with_an_allow_header() {
    let s = start();
    let mut c = s.connect();
    let cases = [
        ("GET", "/api/usages", "POST"),
        ("PUT", "/api/usages", "POST"),
        ("DELETE", "/api/usages", "POST"),
        ("POST", "/healthz", "GET, HEAD"),
        ("POST", "/readyz", "GET, HEAD"),
        ("PUT", "/metrics", "GET, HEAD"),
        ("DELETE", "/api/stats", "GET, HEAD"),
        ("POST", "/", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        c.send(&request(
            method,
            path,
            "Content-Type: application/json\r\n",
            USAGE.as_bytes(),
        ));
        let r = c.response();
        assert_error(&r, 405, &format!("method not allowed (allowed: {allow})"));
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
    c.send(&post_json(USAGE.as_bytes()));
    assert_eq!(
        c.response().id(),
        1,
        "a 405 was written, or its body not skipped"
    );
}

#[test]
fn a_request_that_stalls_mid_head_or_mid_body_gets_408() {
    let s = Server::start(
        Opts::default().arg("--header-read-timeout-ms 300 --body-read-timeout-ms 300"),
    );
    let full = post_json(USAGE.as_bytes());
    let head_len = full.len() - USAGE.len();
    for (stall_at, phase) in [
        (head_len / 2, "head"),
        (head_len, "body"),
        (full.len() - 1, "body"),
    ] {
        let mut c = s.connect();
        // Fail in seconds, not at the harness's 30 s, if no 408 comes.
        c.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.send(&full[..stall_at]);
        let r = c.response();
        assert_error(&r, 408, "request not received in time");
        assert!(
            c.closed(),
            "the connection stayed open after a 408 mid-{phase}"
        );
    }
    assert_nothing_written(&s);
}

#[test]
fn a_body_over_the_cap_gets_413_and_nothing_is_written() {
    let s = start();
    let too_large = "body larger than 16384 bytes";
    let over = usage_of_len(BODY_BYTES_MAX + 1);
    assert_refused(&s, &post_json(over.as_bytes()), 413, too_large);
    let chunks = format!(
        "2000\r\n{}\r\n2001\r\n{}\r\n0\r\n\r\n",
        " ".repeat(0x2000),
        " ".repeat(0x2001)
    );
    assert_refused(&s, &post_chunked(&chunks), 413, too_large);
    assert_nothing_written(&s);
    let at_cap = usage_of_len(BODY_BYTES_MAX);
    assert_eq!(
        s.post(&at_cap).id(),
        2,
        "a body exactly at the cap is accepted"
    );
}

#[test]
fn the_body_cap_follows_max_body_bytes() {
    let s = Server::start(Opts::default().arg("--max-body-bytes 1024"));
    let too_large = "body larger than 1024 bytes";
    assert_refused(
        &s,
        &post_json(usage_of_len(1025).as_bytes()),
        413,
        too_large,
    );
    let chunks = format!(
        "300\r\n{}\r\n300\r\n{}\r\n0\r\n\r\n",
        " ".repeat(0x300),
        " ".repeat(0x300)
    );
    assert_refused(&s, &post_chunked(&chunks), 413, too_large);
    assert_nothing_written(&s);
    assert_eq!(
        s.post(&usage_of_len(1024)).id(),
        2,
        "a body exactly at the cap is accepted"
    );
}

#[test]
fn a_non_json_content_type_gets_415_and_a_missing_one_is_accepted() {
    let s = start();
    let mut c = s.connect();
    let long = "x".repeat(200);
    let refused: [(&[u8], String); 6] = [
        (b"text/plain", "text/plain".into()),
        (
            b"application/x-www-form-urlencoded",
            "application/x-www-form-urlencoded".into(),
        ),
        (
            b"multipart/form-data; boundary=x",
            "multipart/form-data".into(),
        ),
        (b"application/jsonx", "application/jsonx".into()),
        // Named back printable and short: at most 64 bytes, then `...`.
        (b"text/\xffplain\x80", "text/?plain?".into()),
        (long.as_bytes(), format!("{}...", &long[..64])),
    ];
    for (media_type, named) in refused {
        let rest = format!("\r\nContent-Length: {}\r\n\r\n{USAGE}", USAGE.len());
        let head: &[u8] = b"POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: ";
        c.send(&[head, media_type, rest.as_bytes()].concat());
        let r = c.response();
        let want = format!(
            "Content-Type must be application/json or application/x-ndjson (received \"{named}\")"
        );
        assert_error(&r, 415, &want);
        assert_eq!(r.header("connection"), None, "a 415 closed the connection");
    }
    assert_eq!(s.written(), (0, 0), "a 415 was written");
    let accepted = [
        "",
        "Content-Type: application/json; charset=utf-8\r\n",
        "Content-Type: Application/JSON\r\n",
    ];
    for (i, headers) in accepted.into_iter().enumerate() {
        c.send(&post_with(headers, USAGE.as_bytes()));
        assert_eq!(c.response().id(), i as u64 + 1, "{headers:?}");
    }
}

#[test]
fn more_than_100_headers_or_headers_over_16_kib_get_431() {
    let s = start();
    // Host, Content-Type and Content-Length make three more.
    let json = "Content-Type: application/json\r\n";
    let hundred = post_with(&(extra_headers(97) + json), USAGE.as_bytes());
    assert_eq!(
        exchange(&s, &hundred).id(),
        1,
        "100 headers are within the limit"
    );
    let many = post_with(&(extra_headers(98) + json), USAGE.as_bytes());
    assert_refused(&s, &many, 431, "too many headers (at most 100)");
    let too_large = "request headers larger than 16384 bytes";
    let one_big = format!("X-Big: {}\r\n{json}", "v".repeat(16 * 1024));
    assert_refused(&s, &post_with(&one_big, USAGE.as_bytes()), 431, too_large);
    let wide: String = (0..50)
        .map(|i| format!("X-Wide-{i}: {}\r\n", "w".repeat(400)))
        .collect();
    assert_refused(
        &s,
        &post_with(&(wide + json), USAGE.as_bytes()),
        431,
        too_large,
    );
    assert_eq!(s.written(), (1, 1), "a 431 was written");
}

#[test]
fn an_unsupported_transfer_encoding_gets_501() {
    let s = start();
    let unsupported = "only the chunked Transfer-Encoding is supported";
    // A list that does not end in chunked is a 400 (see `rfc_details`).
    for coding in [
        "gzip, chunked",
        "deflate, chunked",
        "gzip, deflate, chunked",
    ] {
        let raw = format!(
            "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: {coding}\r\n\r\n0\r\n\r\n"
        );
        assert_refused(&s, raw.as_bytes(), 501, unsupported);
    }
    let http10 = format!(
        "POST /api/usages HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n{}",
        one_chunk(USAGE)
    );
    assert_refused(&s, http10.as_bytes(), 501, unsupported);
    assert_nothing_written(&s);
}

#[test]
fn an_http2_request_line_gets_505() {
    let s = start();
    let unsupported = "only HTTP/1.0 and HTTP/1.1 are supported";
    let http2 = String::from_utf8(post_json(USAGE.as_bytes())).expect("utf8");
    let http2 = http2.replacen("HTTP/1.1", "HTTP/2.0", 1);
    assert_refused(&s, http2.as_bytes(), 505, unsupported);
    assert_refused(&s, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, unsupported);
    assert_refused(
        &s,
        b"GET /healthz HTTP/3\r\nHost: t\r\n\r\n",
        505,
        unsupported,
    );
    assert_nothing_written(&s);
}
