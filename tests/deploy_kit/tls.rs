//! TLS at the balancer: the kit's HAProxy (rendered by
//! `scripts/render-haproxy.sh --tls`) and nginx, run for real with a
//! certificate the test makes, in front of a real busyapi. A client that
//! trusts the test's CA alone gets its 201 and HSTS; TLS 1.1 is refused;
//! plain HTTP is redirected to https with the method kept.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::load_balancers::{Nginx, NginxTls, nginx_prefix, render_nginx_conf};
use super::*;
use common::tls::{Leaf, TestPki, assert_tls11_refused_and_tls12_taken, curl, curl_post};
use common::{Opts, Server, USAGE, free_port, wait_for};

/// Time for a started balancer to take TLS connections and see its node up.
const BALANCER_START: Duration = Duration::from_secs(20);

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// HAProxy in the foreground (`-db`); dropping it kills it.
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The kit's haproxy.cfg rendered by the kit's renderer with TLS on
/// `tls`, plain HTTP on `plain`, in front of `node`; checked, then run.
fn start_haproxy(
    dir: &Path,
    leaf: &Leaf,
    tls: SocketAddr,
    plain: SocketAddr,
    node: SocketAddr,
) -> Haproxy {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/render-haproxy.sh");
    let stats = loopback(free_port());
    let out = Command::new(&script)
        .arg("--tls")
        .arg(tls.to_string())
        .arg(&leaf.combined)
        .args([plain.to_string(), stats.to_string(), node.to_string()])
        .output()
        .expect("run render-haproxy.sh");
    assert_ok(&out, "scripts/render-haproxy.sh --tls");
    let cfg = dir.join("haproxy-tls.cfg");
    std::fs::write(&cfg, &out.stdout).expect("write haproxy.cfg");
    let checked = Command::new(required("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(&cfg)
        .output()
        .expect("haproxy -c");
    assert_ok(&checked, "haproxy -c on the template rendered with --tls");
    let child = Command::new(required("haproxy"))
        .arg("-f")
        .arg(&cfg)
        .arg("-db")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start haproxy");
    Haproxy(child)
}

/// Waits until `/readyz` through the balancer's TLS address is 200: it
/// listens, and its node is in rotation.
fn wait_ready_through(ca: &Path, tls: SocketAddr) {
    wait_for(
        BALANCER_START,
        "the balancer to answer /readyz over TLS",
        || {
            let out = curl(ca, tls, "/readyz", &[]);
            out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("HTTP/1.1 200")
        },
    );
}

/// What every TLS balancer must do: a checking client's POST is stored
/// (201, HSTS), a client that trusts the system's CAs instead refuses the
/// test certificate, TLS 1.1 is refused, and plain HTTP is redirected.
fn assert_terminates_tls(node: &Server, ca: &Path, tls: SocketAddr, plain: SocketAddr) {
    wait_ready_through(ca, tls);
    let response = curl_post(ca, tls, USAGE);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("strict-transport-security: max-age=63072000"),
        "no HSTS over TLS:\n{response}"
    );
    assert_eq!(node.stat("acknowledged"), 1, "the node stored the usage");

    let unchecked = Command::new(common::tls::tool("curl"))
        .args(["-sS", "--max-time", "30"])
        .arg(format!("https://{tls}/readyz"))
        .output()
        .expect("run curl");
    assert!(
        !unchecked.status.success(),
        "a client that does not trust the test CA accepted the certificate"
    );

    assert_tls11_refused_and_tls12_taken(ca, tls);

    let mut c = common::Http::connect(plain);
    c.post_json(USAGE);
    let r = c.response();
    assert_eq!(r.status, 308, "plain HTTP: {}", r.text());
    let location = r.header("location").unwrap_or_default();
    assert!(location.starts_with("https://"), "Location {location:?}");
    assert_eq!(node.stat("acknowledged"), 1, "nothing stored in the clear");
}

#[test]
fn haproxy_with_the_kits_tls_settings_gives_a_checking_client_its_201_and_refuses_tls_1_1() {
    let node = Server::start(Opts::default());
    let pki = TestPki::new();
    let leaf = pki.issue("balancer");
    let (tls, plain) = (loopback(free_port()), loopback(free_port()));
    let _haproxy = start_haproxy(pki.dir(), &leaf, tls, plain, node.addr);
    assert_terminates_tls(&node, &pki.ca, tls, plain);
}

#[test]
fn nginx_with_the_kits_tls_settings_gives_a_checking_client_its_201_and_refuses_tls_1_1() {
    let node = Server::start(Opts::default());
    let pki = TestPki::new();
    let leaf = pki.issue("balancer");
    let (tls_port, plain_port) = (free_port(), free_port());
    let tls = NginxTls {
        port: tls_port,
        leaf: &leaf,
    };
    let prefix = nginx_prefix(&render_nginx_conf(plain_port, Some(&tls), &[node.addr]));
    let _nginx = Nginx::start(prefix.path(), plain_port);
    assert_terminates_tls(&node, &pki.ca, loopback(tls_port), loopback(plain_port));
}

#[test]
fn the_templates_allow_tls_1_2_and_1_3_only_and_send_hsts() {
    let haproxy = read("haproxy.cfg");
    let tls_bind = haproxy
        .lines()
        .find(|l| !l.trim_start().starts_with('#') && l.contains("# [tls]"))
        .expect("a TLS bind in haproxy.cfg");
    assert!(
        tls_bind.contains(" ssl crt ") && tls_bind.contains("ssl-min-ver TLSv1.2"),
        "{tls_bind}"
    );
    assert!(haproxy.contains("Strict-Transport-Security"));
    let nginx = read("nginx.conf");
    assert!(nginx.contains("ssl_protocols TLSv1.2 TLSv1.3;"));
    assert!(nginx.contains("add_header Strict-Transport-Security"));
    for old in ["TLSv1.0", "TLSv1.1", "TLSv1 ", "TLSv1;"] {
        let code = |t: &str| {
            t.lines()
                .map(|l| l.split('#').next().unwrap_or_default())
                .any(|l| l.contains(old))
        };
        assert!(!code(&haproxy) && !code(&nginx), "{old} is enabled");
    }
}
