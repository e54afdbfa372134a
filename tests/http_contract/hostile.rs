//! Input no client should send: garbage, binary noise, random request
//! lines, torn requests, absurd lengths. The server answers where the
//! framing allows, writes nothing, keeps serving everyone else, and never
//! dies.

use std::io::Write;
use std::net::{Shutdown, TcpStream};

use super::*;

/// Deterministic pseudo-random bytes (xorshift), so a failure replays.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Makes closing `stream` send a reset instead of a FIN.
fn reset_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a socket this test owns and keeps open for the
    // call; the pointer and size describe a live `libc::linger`.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
}

#[test]
fn garbage_binary_input_and_random_request_lines_get_400_and_the_server_keeps_serving_others() {
    let mut s = start();
    let mut bystander = s.connect();
    bystander.send(&post_json(USAGE.as_bytes()));
    assert_eq!(bystander.response().id(), 1);
    let malformed = "malformed request line or header";
    let tls_hello: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n";
    let garbage: [&[u8]; 4] = [
        tls_hello,
        b"\0\0\0\0\0\0\0\0\r\n\r\n",
        b"\xff\xfe\xfd\r\n\r\n",
        b"{\"patientId\": 1}\r\n\r\n",
    ];
    for raw in garbage {
        assert_refused(&s, raw, 400, malformed);
    }
    for seed in 0..20 {
        // A request line of random bytes, then a plausible rest of a head.
        let line: Vec<u8> = noise(seed, 64)
            .into_iter()
            .filter(|b| !b"\r\n".contains(b))
            .collect();
        assert_refused(
            &s,
            &[&line[..], b"\r\nHost: t\r\n\r\n"].concat(),
            400,
            malformed,
        );
    }
    // 64 KiB of noise in one write is refused at its first bad byte.
    let mut c = s.connect();
    let _ = c.stream.write_all(&noise(99, 64 * 1024));
    assert_error(&c.response(), 400, malformed);
    assert_eq!(s.written(), (1, 1), "garbage was written");
    assert_bystander_served(&mut bystander, 2);
    assert_still_serving(&mut s);
}

#[test]
fn half_a_request_then_close_or_reset_writes_nothing_and_the_server_keeps_serving_others() {
    let mut s = start();
    let mut bystander = s.connect();
    let full = post_json(USAGE.as_bytes());
    for cut in [
        1,
        20,
        full.len() / 2,
        full.len() - USAGE.len(),
        full.len() - 1,
    ] {
        let mut c = s.connect();
        c.send(&full[..cut]);
        c.stream.shutdown(Shutdown::Write).expect("shutdown");
        assert!(c.closed(), "cut at {cut}: half a request was answered");
    }
    for cut in [20, full.len() - 1] {
        let c = s.connect();
        reset_on_close(&c.stream);
        (&c.stream).write_all(&full[..cut]).expect("send");
    }
    assert_eq!(s.written(), (0, 0), "part of a request was written");
    assert_bystander_served(&mut bystander, 1);
    assert_still_serving(&mut s);
}

#[test]
fn a_huge_content_length_is_refused_before_any_body_and_the_server_keeps_serving() {
    let mut s = start();
    let lengths = [
        (BODY_BYTES_MAX + 1).to_string(),
        (1u64 << 40).to_string(),
        "9".repeat(19),
    ];
    for len in lengths {
        let raw =
            format!("POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n{{");
        assert_refused(&s, raw.as_bytes(), 413, "body larger than 16384 bytes");
    }
    // Past u64 the value cannot even be held: refusing it as too large or
    // as unparseable framing are both right, if answered and closed.
    for len in [u64::MAX.to_string() + "0", "9".repeat(100)] {
        let mut c = s.connect();
        c.send(
            format!("POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n{{")
                .as_bytes(),
        );
        let r = c.response();
        assert!(matches!(r.status, 400 | 413), "{len}: {}", r.text());
        assert!(
            r.error().contains("Content-Length") || r.error().contains("body larger"),
            "{}",
            r.text()
        );
        assert!(c.closed(), "{len}: the connection stayed open");
    }
    assert_eq!(s.written(), (0, 0), "part of a request was written");
    assert_still_serving(&mut s);
}

/// A keep-alive connection opened before the abuse still gets its next 201,
/// with the next id: nothing in between was written.
fn assert_bystander_served(bystander: &mut Http, id: u64) {
    bystander.send(&post_json(USAGE.as_bytes()));
    assert_eq!(
        bystander.response().id(),
        id,
        "a bystander's connection was disturbed"
    );
}
