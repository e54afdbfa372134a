//! `--admin-listen`: the operational endpoints on an address of their own,
//! the public address left with usages and the probes, and the connection
//! cap, the open count and the stop covering both. Without the flag every
//! path is on the one address, as it always was.

use std::net::SocketAddr;

use super::*;
use common::{Opts, USAGE};

/// The operational endpoints, which move to the admin address.
const ADMIN_PATHS: [&str; 4] = ["/metrics", "/api/stats", "/", "/openapi.json"];
/// The probes, on every address.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// `method path` on a fresh connection to `addr`, which the server then
/// closes (so a HEAD's response, which has no body, ends too).
fn ask(addr: SocketAddr, method: &str, path: &str) -> Response {
    let mut c = Http::connect(addr);
    c.send(format!("{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
    c.response()
}

fn with_admin_address(extra: &str) -> Server {
    Server::start(Opts::default().arg(&format!("--admin-listen 127.0.0.1:0 {extra}")))
}

#[test]
fn with_an_admin_address_the_public_one_answers_only_usages_and_the_probes() {
    let s = with_admin_address("");
    let admin = s.admin_addr();
    assert_ne!(admin, s.addr);
    assert_eq!(s.post(USAGE).status, 201, "usages on the public address");
    for path in PROBES {
        assert_eq!(ask(s.addr, "GET", path).status, 200, "public {path}");
    }
    for path in ADMIN_PATHS {
        assert_error(&ask(s.addr, "GET", path), 404, "no such path");
        let mut c = s.connect();
        c.send(format!("HEAD {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes());
        let mut raw = String::new();
        std::io::Read::read_to_string(&mut c.stream, &mut raw).expect("read");
        assert!(
            raw.starts_with("HTTP/1.1 404 "),
            "public HEAD {path}: {raw:?}"
        );
    }
}

#[test]
fn the_admin_address_serves_the_operational_endpoints_and_the_probes_but_not_usages() {
    let s = with_admin_address("");
    let admin = s.admin_addr();
    for path in ADMIN_PATHS.iter().chain(&PROBES) {
        assert_eq!(ask(admin, "GET", path).status, 200, "admin {path}");
    }
    let mut c = Http::connect(admin);
    c.post_json(USAGE);
    assert_error(&c.response(), 404, "no such path");
    // What the public address did is what the admin address reports.
    assert_eq!(s.post(USAGE).status, 201);
    let stats: serde_json::Value =
        serde_json::from_slice(&ask(admin, "GET", "/api/stats").body).expect("stats JSON");
    assert_eq!(stats["acknowledged"].as_u64(), Some(1), "{stats}");
    let scrape = Scrape {
        text: ask(admin, "GET", "/metrics").text(),
    };
    let refused = scrape.value(r#"busyapi_http_requests_total{route="other",status="404"}"#);
    assert!(
        refused >= 1.0,
        "the admin POST's 404 is counted: {}",
        scrape.text
    );
}

#[test]
fn the_open_count_covers_both_addresses_and_a_full_public_cap_leaves_the_admin_one_open() {
    let s = with_admin_address("--max-connections 1");
    let admin = s.admin_addr();
    let mut public = s.connect();
    public.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(public.response().status, 200);
    let r = ask(s.addr, "GET", "/healthz");
    assert_error(&r, 503, "too many open connections");
    // The public connection and the one asking.
    let stats: serde_json::Value =
        serde_json::from_slice(&ask(admin, "GET", "/api/stats").body).expect("stats JSON");
    assert_eq!(stats["connectionsOpen"].as_u64(), Some(2), "{stats}");
    assert_eq!(ask(admin, "GET", "/metrics").status, 200);
    drop(public);
    wait_for(Duration::from_secs(10), "the public slot to free", || {
        ask(s.addr, "GET", "/healthz").status == 200
    });
}

#[test]
fn at_shutdown_both_addresses_stop_accepting_and_the_process_exits_zero() {
    let mut s = with_admin_address("--shutdown-drain-ms 200");
    let admin = s.admin_addr();
    let status = s.terminate(Duration::from_secs(60));
    assert!(status.success(), "{status:?}\n{}", s.logs());
    for addr in [s.addr, admin] {
        let line = format!("stopped accepting connections on {addr}");
        assert!(s.logs().contains(&line), "no {line:?} in\n{}", s.logs());
    }
}

#[test]
fn without_an_admin_address_every_path_is_on_the_one_address() {
    let s = Server::start(Opts::default());
    assert_eq!(s.post(USAGE).status, 201);
    for path in ADMIN_PATHS.iter().chain(&PROBES) {
        assert_eq!(ask(s.addr, "GET", path).status, 200, "{path}");
    }
    assert!(
        !s.logs().contains("admin endpoints"),
        "an admin address was announced:\n{}",
        s.logs()
    );
}
