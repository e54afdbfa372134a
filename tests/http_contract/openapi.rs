//! `GET /openapi.json`: the API document the binary serves is the one in
//! the repository, and it names exactly the paths the router has, so the
//! two cannot drift apart unnoticed. `scripts/schemathesis.sh` checks the
//! server's answers against the document's content.

use std::collections::BTreeSet;
use std::io::Read;

use super::*;

/// The router's paths, read from the arms of the one `match` in
/// `routes::route` (`"/path" => (Route::..., Action::...)`).
fn routed_paths() -> BTreeSet<String> {
    let src = include_str!("../../src/http/routes.rs");
    let paths: BTreeSet<String> = src
        .lines()
        .filter_map(|line| {
            let arm = line.trim().strip_prefix('"')?;
            let (path, rest) = arm.split_once('"')?;
            rest.trim_start()
                .starts_with("=> (Route::")
                .then(|| path.to_owned())
        })
        .collect();
    assert!(paths.contains("/api/usages"), "no routes read: {paths:?}");
    paths
}

fn documented_paths(doc: &serde_json::Value) -> BTreeSet<String> {
    doc["paths"]
        .as_object()
        .expect("the document has paths")
        .keys()
        .cloned()
        .collect()
}

/// The status of `method path` with no body; a HEAD's response has no
/// body to read, so the connection is closed and read to its end.
fn status_of(s: &Server, method: &str, path: &str) -> u16 {
    let mut c = s.connect();
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    c.send(raw.as_bytes());
    let mut bytes = Vec::new();
    c.stream.read_to_end(&mut bytes).expect("read");
    let text = String::from_utf8_lossy(&bytes);
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3));
    status
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: no status line in {text:?}"))
}

#[test]
fn the_served_document_is_the_repositorys_and_names_every_route() {
    let s = start();
    let r = s.get("/openapi.json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    let kept: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).expect("docs/openapi.json");
    assert_eq!(served, kept, "the served document is not docs/openapi.json");
    assert_eq!(served["openapi"], "3.1.0");
    assert_eq!(served["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(documented_paths(&served), routed_paths());
}

#[test]
fn every_documented_operation_answers_on_its_path_and_nothing_else_does() {
    let s = start();
    let doc = s.get("/openapi.json").json();
    for path in documented_paths(&doc) {
        let ops = doc["paths"][&path].as_object().expect("operations");
        for method in ops.keys() {
            let method = method.to_ascii_uppercase();
            let status = status_of(&s, &method, &path);
            assert!(![404, 405].contains(&status), "{method} {path}: {status}");
            let documented = &ops[&method.to_ascii_lowercase()]["responses"];
            assert!(
                documented.get(status.to_string()).is_some(),
                "{method} {path} answered {status}, which the document does not list"
            );
        }
        // A method the path does not take: 405, whose Allow the document's
        // operations agree with.
        let r = exchange(&s, &request("PUT", &path, "", b""));
        assert_eq!(r.status, 405, "PUT {path}");
        let mut allowed: Vec<String> = ops.keys().map(|m| m.to_ascii_uppercase()).collect();
        allowed.sort_by_key(|m| m != "GET");
        assert_eq!(
            r.header("allow"),
            Some(allowed.join(", ").as_str()),
            "{path}"
        );
    }
}

#[test]
fn a_414_is_counted_under_its_own_status_and_as_a_client_error() {
    let s = start();
    let long = format!("/{}", "a".repeat(9 * 1024));
    assert_eq!(status_of(&s, "GET", &long), 414);
    let metrics = s.get("/metrics").text();
    let line = r#"busyapi_http_requests_total{route="other",status="414"} 1"#;
    assert!(
        metrics.lines().any(|l| l == line),
        "no {line:?} in:\n{metrics}"
    );
    assert_eq!(s.stats()["clientErrors"], 1);
}
