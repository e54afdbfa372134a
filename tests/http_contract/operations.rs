//! What operators and load balancers read: `/healthz`, `/readyz`, `HEAD`,
//! `/metrics` and `/api/stats`.

use std::io::Read;

use super::*;

/// Sends `HEAD path` and then a closing `GET /healthz` on one connection,
/// checks that nothing but the GET's response follows the HEAD's head
/// (a body there would be read as the next response), and returns the
/// HEAD's head, each line ending in CRLF.
fn head_of(s: &Server, path: &str) -> String {
    let mut c = s.connect();
    let raw = format!(
        "HEAD {path} HTTP/1.1\r\nHost: t\r\n\r\nGET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    );
    c.send(raw.as_bytes());
    let mut bytes = Vec::new();
    c.stream.read_to_end(&mut bytes).expect("read");
    let text = String::from_utf8(bytes).expect("utf8");
    let (head, rest) = text.split_once("\r\n\r\n").expect("a head");
    assert!(
        rest.starts_with("HTTP/1.1 200 OK\r\n"),
        "HEAD {path} carried a body: {rest:?}"
    );
    assert!(rest.ends_with(r#"{"status": "ok"}"#), "{rest}");
    format!("{head}\r\n")
}

#[test]
fn healthz_and_readyz_answer_200_with_json() {
    let s = start();
    for (path, status) in [("/healthz", "ok"), ("/readyz", "ready")] {
        let r = s.get(path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.json()["status"], status, "{path}");
    }
}

#[test]
fn head_announces_the_length_of_the_get_and_sends_no_body() {
    let s = start();
    for path in ["/healthz", "/readyz"] {
        let length = s
            .get(path)
            .header("content-length")
            .expect("a length")
            .to_owned();
        let head = head_of(&s, path);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains(&format!("\r\nContent-Length: {length}\r\n")),
            "{head}"
        );
    }
    for path in ["/metrics", "/api/stats"] {
        let head = head_of(&s, path);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Length: "), "{head}");
    }
    let head = head_of(&s, "/nope");
    assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
    let head = head_of(&s, "/api/usages");
    assert!(
        head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nAllow: POST\r\n"), "{head}");
}

#[test]
fn metrics_are_prometheus_text_that_counts_requests_by_route_and_status() {
    let s = start();
    assert_eq!(s.post(USAGE).status, 201);
    assert_eq!(s.post("{").status, 400);
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = r.text();
    for line in [
        "# TYPE busyapi_http_requests_total counter",
        r#"busyapi_http_requests_total{route="/api/usages",status="201"} 1"#,
        r#"busyapi_http_requests_total{route="/api/usages",status="400"} 1"#,
        "busyapi_records_acknowledged_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
}

#[test]
fn stats_are_json_and_count_acknowledged_usages() {
    let s = start();
    let ids: Vec<u64> = (0..3).map(|_| s.post(USAGE).id()).collect();
    let r = s.get("/api/stats");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let stats = r.json();
    assert_eq!(stats["acknowledged"], 3, "{stats}");
    assert_eq!(stats["lastId"], ids[2], "{stats}");
    assert_eq!(stats["ready"], true, "{stats}");
    assert_eq!(stats["walWritable"], true, "{stats}");
}
