//! HTTP/1.1 as clients and proxies use it: keep-alive, `Connection: close`,
//! pipelining, chunked bodies, `Expect: 100-continue`, HTTP/1.0, many
//! headers, and bodies that arrive in pieces.

use std::io::Write;

use super::*;

#[test]
fn many_requests_share_one_keep_alive_connection() {
    let s = start();
    let mut c = s.connect();
    for want in 1..=200 {
        c.send(&post_json(USAGE.as_bytes()));
        let r = c.response();
        assert_eq!(r.id(), want);
        assert_eq!(
            r.header("connection"),
            None,
            "HTTP/1.1 keeps alive without saying so"
        );
    }
    c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(s.written(), (200, 200));
}

#[test]
fn connection_close_is_answered_with_connection_close_and_the_server_closes() {
    let s = start();
    let mut c = s.connect();
    let closing = post_with(
        "Content-Type: application/json\r\nConnection: close\r\n",
        USAGE.as_bytes(),
    );
    // The request pipelined after the close must not be handled.
    c.send(&[closing, post_json(USAGE.as_bytes())].concat());
    let r = c.response();
    assert_eq!(r.id(), 1);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed(), "the server kept the connection open");
    assert_eq!(
        s.written(),
        (1, 1),
        "the request after Connection: close was handled"
    );
}

#[test]
fn fifty_pipelined_requests_in_one_write_get_fifty_responses_in_order() {
    let s = start();
    let mut batch = Vec::new();
    let mut want = Vec::new();
    for i in 0..50 {
        let (raw, status, needle) = match i % 5 {
            0 => (
                b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
                200,
                "",
            ),
            1 => (post_json(b"{"), 400, "body is not valid JSON"),
            2 => (
                post_json(br#"{"patientId": "1", "timestamp": 0}"#),
                400,
                "missing field medication",
            ),
            3 => (
                b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
                404,
                "no such path",
            ),
            _ => (post_json(USAGE.as_bytes()), 201, ""),
        };
        batch.extend_from_slice(&raw);
        want.push((status, needle));
    }
    let mut c = s.connect();
    c.send(&batch);
    let mut next_id = 1;
    for (i, (status, needle)) in want.into_iter().enumerate() {
        let r = c.response();
        match status {
            201 => {
                assert_eq!(r.id(), next_id, "response {i}");
                next_id += 1;
            }
            200 => assert_eq!(r.json()["status"], "ok", "response {i}"),
            _ => assert_error(&r, status, needle),
        }
    }
    assert_eq!(s.written(), (10, 10));
}

#[test]
fn more_pipelined_requests_than_one_round_holds_are_all_answered_in_order() {
    const REQUESTS: u64 = 600;
    let s = start();
    let mut c = s.connect();
    let batch: Vec<u8> = (0..REQUESTS)
        .flat_map(|_| post_json(USAGE.as_bytes()))
        .collect();
    // Written from another thread: the responses must be read meanwhile.
    let mut writer = c.stream.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&batch));
    for want in 1..=REQUESTS {
        assert_eq!(c.response().id(), want);
    }
    sender.join().expect("sender").expect("send");
    assert_eq!(s.written(), (REQUESTS, REQUESTS));
}

#[test]
fn a_chunked_body_with_extensions_and_trailers_split_across_writes_is_accepted() {
    let s = start();
    let (first, rest) = USAGE.split_at(0x1a);
    let (second, third) = rest.split_at(0x40);
    let chunks = format!(
        "1a;name=value;flag\r\n{first}\r\n40\r\n{second}\r\n{:X}\r\n{third}\r\n0\r\nX-Checksum: none\r\nX-Other: t\r\n\r\n",
        third.len()
    );
    let mut c = s.connect();
    // Seven bytes a write: splits the head, size lines, extensions, data
    // and trailers.
    send_in_pieces(&mut c, &post_chunked(&chunks), 7);
    assert_eq!(c.response().id(), 1);
    c.send(&post_chunked(&one_chunk(USAGE)));
    assert_eq!(
        c.response().id(),
        2,
        "the connection is unusable after a chunked body"
    );
    assert_eq!(s.written(), (2, 2));
}

#[test]
fn an_8_kib_body_in_one_byte_chunks_over_five_hundred_writes_gets_its_201() {
    let s = start();
    // Six wire bytes a body byte: within what a request may take on the
    // wire (four times the body cap and the head).
    let body = usage_of_len(8 * 1024);
    let chunks: String = body.chars().map(|c| format!("1\r\n{c}\r\n")).collect();
    let raw = post_chunked(&format!("{chunks}0\r\n\r\n"));
    let mut c = s.connect();
    // 48 KiB on the wire in 100-byte writes: each read brings a few
    // chunks, and must not cost a decode of the body from its start.
    send_in_pieces(&mut c, &raw, 100);
    assert_eq!(c.response().id(), 1);
    c.send(&post_json(USAGE.as_bytes()));
    assert_eq!(c.response().id(), 2, "the connection is unusable after it");
}

#[test]
fn expect_100_continue_gets_100_before_the_body_is_sent_then_201() {
    let s = start();
    let raw = post_with(
        "Content-Type: application/json\r\nExpect: 100-continue\r\n",
        USAGE.as_bytes(),
    );
    let (head, body) = raw.split_at(raw.len() - USAGE.len());
    let mut c = s.connect();
    c.send(head);
    let interim = c.response();
    assert_eq!(
        (interim.status, interim.body.len()),
        (100, 0),
        "{interim:?}"
    );
    c.send(body);
    assert_eq!(c.response().id(), 1);

    let chunked = String::from_utf8(post_chunked("")).expect("utf8");
    c.send(
        chunked
            .replacen("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1)
            .as_bytes(),
    );
    assert_eq!(c.response().status, 100);
    c.send(one_chunk(USAGE).as_bytes());
    assert_eq!(c.response().id(), 2);
}

#[test]
fn an_expect_100_continue_request_that_will_be_refused_gets_its_final_status_without_100() {
    let s = start();
    let expect = |path: &str, headers: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n{headers}Content-Length: {len}\r\n\r\n"
        )
    };
    let json = "Content-Type: application/json\r\n";
    let cases = [
        (
            expect("/api/usages", "Content-Type: text/plain\r\n", 100),
            415,
            "Content-Type must be application/json",
        ),
        (
            expect(
                "/api/usages",
                "Content-Type: application/x-ndjson\r\n",
                BATCH_BYTES_MAX + 1,
            ),
            413,
            "body larger than 1048576 bytes",
        ),
        // Over the single cap and the batch cap: a usage or a batch, it
        // cannot be taken. (Under the batch cap a JSON body may be a
        // batch, so that client is told to go on.)
        (
            expect("/api/usages", json, BATCH_BYTES_MAX + 1),
            413,
            "body larger than 16384 bytes",
        ),
        (
            expect("/api/usages", json, 1 << 30),
            413,
            "body larger than 16384 bytes",
        ),
        (expect("/nope", json, 100), 404, "no such path"),
        (expect("/healthz", json, 100), 405, "method not allowed"),
    ];
    for (head, status, needle) in cases {
        // Only the head is sent: the first response must be the final one.
        assert_refused(&s, head.as_bytes(), status, needle);
    }
    assert_nothing_written(&s);
    let mut c = s.connect();
    c.send(expect("/api/usages", json, BODY_BYTES_MAX + 1).as_bytes());
    assert_eq!(
        c.response().status,
        100,
        "a JSON body this long may be a batch"
    );
    c.send(usage_of_len(BODY_BYTES_MAX + 1).as_bytes());
    assert_error_and_close(&mut c, 413, "body larger than 16384 bytes");
}

#[test]
fn http10_closes_by_default_and_keeps_alive_when_asked_and_says_so() {
    let s = start();
    let mut c = s.connect();
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(c.closed(), "an HTTP/1.0 connection stayed open");

    let mut c = s.connect();
    let post = String::from_utf8(post_json(USAGE.as_bytes())).expect("utf8");
    let post = post.replacen(
        "HTTP/1.1\r\nHost: t\r\n",
        "HTTP/1.0\r\nConnection: keep-alive\r\n",
        1,
    );
    for want in 1..=3 {
        c.send(post.as_bytes());
        let r = c.response();
        assert_eq!(r.id(), want);
        assert_eq!(r.header("connection"), Some("keep-alive"));
    }
    c.send(b"GET /healthz HTTP/1.0\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.header("connection")), (200, Some("close")));
    assert!(
        c.closed(),
        "an HTTP/1.0 request without keep-alive left the connection open"
    );
}

#[test]
fn a_request_with_64_headers_is_accepted() {
    let s = start();
    // With Host and Content-Length: 64.
    let headers = extra_headers(61) + "Content-Type: application/json\r\n";
    assert_eq!(exchange(&s, &post_with(&headers, USAGE.as_bytes())).id(), 1);
}

#[test]
fn a_request_sent_byte_by_byte_is_accepted() {
    let s = start();
    let mut c = s.connect();
    send_in_pieces(&mut c, &post_json(USAGE.as_bytes()), 1);
    assert_eq!(c.response().id(), 1);
    c.send(&post_json(USAGE.as_bytes()));
    assert_eq!(
        c.response().id(),
        2,
        "the connection is unusable after a trickled request"
    );
}

#[test]
fn the_route_comes_from_the_path_whatever_the_query_holds_and_absolute_form_is_understood() {
    let s = start();
    for target in [
        "/api/usages?cb=http://x/healthz",
        "/api/usages?next=https://example.com",
        "http://busyapi.example/api/usages?a=b",
    ] {
        let mut c = s.connect();
        c.send(
            format!(
                "POST {target} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{USAGE}",
                USAGE.len()
            )
            .as_bytes(),
        );
        let r = c.response();
        assert_eq!(r.status, 201, "POST {target}: {}", r.text());
    }
    assert_eq!(s.written().0, 3);
}
