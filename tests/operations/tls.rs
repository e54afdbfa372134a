//! Native TLS (`--tls-cert`, `--tls-key`): real TLS clients (`curl`,
//! `openssl s_client`) that trust only the CA the test makes. A usage gets
//! its 201 through TLS; TLS 1.1 is refused; plain HTTP on the TLS port is
//! closed without a crash; a handshake that trickles is cut at the header
//! deadline; SIGHUP serves a new certificate to new connections while old
//! ones go on, and keeps the old one when the new files are bad.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::*;
use common::tls::{
    Leaf, TestPki, assert_tls11_refused_and_tls12_taken, curl_post, handshake, tool,
};
use common::{Opts, USAGE};

/// The header timeout the handshake tests run into.
const HEADER_TIMEOUT: Duration = Duration::from_millis(1000);
/// Latest a stalled handshake may be cut, past its timeout.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1500);

/// The certificate files the server is started with, which a test may
/// overwrite before a SIGHUP.
struct Served {
    cert: PathBuf,
    key: PathBuf,
}

impl Served {
    fn new(pki: &TestPki, leaf: &Leaf) -> Served {
        let served = Served {
            cert: pki.dir().join("served.pem"),
            key: pki.dir().join("served.key"),
        };
        served.replace_with(leaf);
        served
    }

    fn replace_with(&self, leaf: &Leaf) {
        std::fs::copy(&leaf.cert, &self.cert).expect("copy the certificate");
        std::fs::copy(&leaf.key, &self.key).expect("copy the key");
    }

    fn args(&self) -> String {
        format!(
            "--tls-cert {} --tls-key {}",
            self.cert.display(),
            self.key.display()
        )
    }
}

fn tls_server(served: &Served, extra: &str) -> Server {
    Server::start(Opts::default().arg(&format!("{} {extra}", served.args())))
}

/// The subject of the certificate a new connection to `addr` is shown.
fn subject_served(ca: &Path, addr: SocketAddr) -> String {
    let (ok, text) = handshake(ca, addr, "tls1_3");
    assert!(ok, "a TLS 1.3 handshake with {addr}:\n{text}");
    text.lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in:\n{text}"))
        .to_owned()
}

/// A TLS connection kept open across a test: `openssl s_client` with the
/// HTTP bytes on its stdin and the answers on its stdout.
struct KeptConnection {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl KeptConnection {
    fn open(ca: &Path, addr: SocketAddr) -> KeptConnection {
        let mut child = Command::new(tool("openssl"))
            .args(["s_client", "-quiet", "-verify_return_error", "-connect"])
            .arg(addr.to_string())
            .arg("-CAfile")
            .arg(ca)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start openssl s_client");
        let to = child.stdin.take().expect("stdin");
        let from = BufReader::new(child.stdout.take().expect("stdout"));
        KeptConnection { child, to, from }
    }

    /// `GET path` on this connection; the status of its response.
    fn get(&mut self, path: &str) -> u16 {
        write!(self.to, "GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").expect("send");
        self.to.flush().expect("flush");
        let mut line = String::new();
        self.from.read_line(&mut line).expect("status line");
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {line:?}"));
        let mut length = 0;
        loop {
            line.clear();
            self.from.read_line(&mut line).expect("header");
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().expect("content-length");
            }
        }
        let mut body = vec![0; length];
        self.from.read_exact(&mut body).expect("body");
        status
    }
}

impl Drop for KeptConnection {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_client_that_checks_the_certificate_gets_its_201_over_tls_and_tls_1_1_is_refused() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("node"));
    let s = tls_server(&served, "");
    assert!(
        s.logs()
            .contains(&format!("listening on https://{}", s.addr)),
        "{}",
        s.logs()
    );
    let response = curl_post(&pki.ca, s.addr, USAGE);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(response.contains(r#"{"id": 1}"#), "{response}");
    assert_tls11_refused_and_tls12_taken(&pki.ca, s.addr);
    let (ok, text) = handshake(&pki.ca, s.addr, "tls1_3");
    assert!(ok && text.contains("TLSv1.3"), "TLS 1.3:\n{text}");
}

#[test]
fn plain_http_to_the_tls_port_is_closed_without_an_http_answer_and_the_server_goes_on() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("node"));
    let mut s = tls_server(&served, "");
    let mut plain = TcpStream::connect(s.addr).expect("connect");
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    plain
        .write_all(&post_request(USAGE))
        .expect("send plain HTTP");
    let mut answer = Vec::new();
    // The end, an EOF or a reset, must come well before the read timeout.
    let started = Instant::now();
    let _ = plain.read_to_end(&mut answer);
    assert!(started.elapsed() < Duration::from_secs(5), "not closed");
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP was answered in plain HTTP: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // Anything sent is a TLS alert record (content type 21).
    assert!(answer.is_empty() || answer[0] == 21, "{answer:?}");
    assert!(s.is_running(), "the server died:\n{}", s.logs());
    assert!(curl_post(&pki.ca, s.addr, USAGE).starts_with("HTTP/1.1 201"));
    let stats = common::tls::curl(&pki.ca, s.addr, "/api/stats", &[]);
    let text = String::from_utf8_lossy(&stats.stdout);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let stats: serde_json::Value = serde_json::from_str(body).expect("stats JSON");
    assert_eq!(
        stats["acknowledged"], 1,
        "nothing stored in the clear: {stats}"
    );
    let metrics = common::tls::curl(&pki.ca, s.addr, "/metrics", &[]);
    let scrape = Scrape {
        text: String::from_utf8_lossy(&metrics.stdout).into_owned(),
    };
    assert_eq!(
        scrape.value("busyapi_tls_handshakes_failed_total"),
        1.0,
        "the plain HTTP connection is counted"
    );
}

/// Sends `bytes` one at a time, a read timeout (200 ms) apart, until the
/// server closes `c`; fails if it is still open past the header timeout
/// and its slack, or if `bytes` run out first. Returns when it closed.
fn trickle_until_closed(
    c: &mut TcpStream,
    bytes: impl Iterator<Item = u8>,
    what: &str,
) -> Duration {
    let started = Instant::now();
    let mut buf = [0; 256];
    for byte in bytes {
        assert!(
            started.elapsed() < HEADER_TIMEOUT + TIMEOUT_SLACK,
            "a trickling {what} was still read after {:?}",
            started.elapsed()
        );
        if c.write_all(&[byte]).is_err() {
            return started.elapsed();
        }
        match c.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return started.elapsed(),
        }
    }
    panic!("every byte of the {what} went in before the deadline: send slower");
}

#[test]
fn a_handshake_that_trickles_is_cut_at_the_header_deadline() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("node"));
    let ms = HEADER_TIMEOUT.as_millis();
    let s = tls_server(&served, &format!("--header-read-timeout-ms {ms}"));
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    // A TLS handshake record header announcing 200 bytes, then one byte
    // every 200 ms: every socket read makes progress, the whole does not.
    c.write_all(&[0x16, 0x03, 0x01, 0x00, 0xc8]).expect("send");
    let closed_after = trickle_until_closed(&mut c, std::iter::repeat(0x01), "handshake");
    assert!(
        closed_after + Duration::from_millis(250) >= HEADER_TIMEOUT,
        "cut before its deadline, after {closed_after:?}"
    );
}

/// A rustls client trusting only `ca`, its handshake with `addr` done
/// over `tcp`.
fn rustls_client(ca: &Path, tcp: &mut TcpStream) -> rustls::ClientConnection {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(ca).expect("read the CA") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("trust the CA");
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut client =
        rustls::ClientConnection::new(std::sync::Arc::new(config), name).expect("client");
    while client.is_handshaking() {
        client.complete_io(tcp).expect("handshake");
    }
    client
}

#[test]
fn a_record_that_trickles_after_the_handshake_is_cut_at_the_connections_deadline() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("node"));
    let ms = HEADER_TIMEOUT.as_millis();
    let s = tls_server(
        &served,
        &format!("--header-read-timeout-ms {ms} --idle-timeout-ms {ms}"),
    );
    let mut tcp = TcpStream::connect(s.addr).expect("connect");
    let mut client = rustls_client(&pki.ca, &mut tcp);
    // One whole request in one TLS record, sent a byte every 200 ms: each
    // socket read makes progress, but no record is ever complete in time.
    client
        .writer()
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("plaintext");
    let mut record = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut record).expect("encrypt");
    }
    tcp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    trickle_until_closed(&mut tcp, record.into_iter(), "TLS record");
}

#[test]
fn sighup_serves_a_new_certificate_to_new_connections_while_an_open_one_goes_on() {
    let pki = TestPki::new();
    let (first, second) = (pki.issue("first"), pki.issue("second"));
    let served = Served::new(&pki, &first);
    let s = tls_server(&served, "");
    assert!(subject_served(&pki.ca, s.addr).contains("first"));
    let mut kept = KeptConnection::open(&pki.ca, s.addr);
    assert_eq!(kept.get("/healthz"), 200);

    served.replace_with(&second);
    s.signal(libc::SIGHUP);
    s.wait_for_log("reloaded the TLS certificate");
    assert!(subject_served(&pki.ca, s.addr).contains("second"));
    assert_eq!(kept.get("/healthz"), 200, "the open connection goes on");
    assert!(curl_post(&pki.ca, s.addr, USAGE).starts_with("HTTP/1.1 201"));
}

#[test]
fn sighup_with_a_bad_new_certificate_keeps_the_old_one_and_says_why() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("first"));
    let mut s = tls_server(&served, "");
    std::fs::write(&served.cert, "not a certificate\n").expect("spoil the certificate");
    s.signal(libc::SIGHUP);
    s.wait_for_log("kept the TLS certificate in use");
    assert!(s.logs().contains("--tls-cert"), "{}", s.logs());
    assert!(s.is_running());
    assert!(subject_served(&pki.ca, s.addr).contains("first"));
    assert!(curl_post(&pki.ca, s.addr, USAGE).starts_with("HTTP/1.1 201"));
}

#[test]
fn past_max_connections_a_tls_connection_is_closed_without_a_plain_answer() {
    let pki = TestPki::new();
    let served = Served::new(&pki, &pki.issue("node"));
    let s = tls_server(&served, "--max-connections 1");
    let mut kept = KeptConnection::open(&pki.ca, s.addr);
    assert_eq!(kept.get("/healthz"), 200);
    let mut surplus = TcpStream::connect(s.addr).expect("connect");
    surplus
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = surplus.read_to_end(&mut answer);
    assert!(answer.is_empty(), "the surplus connection got {answer:?}");
    let (ok, text) = handshake(&pki.ca, s.addr, "tls1_3");
    assert!(!ok, "a handshake past the cap succeeded:\n{text}");
    // The kept connection still has its slot, and says how many were shut.
    assert_eq!(kept.get("/healthz"), 200);
    drop(kept);
    let mut scrape = Scrape {
        text: String::new(),
    };
    wait_for(
        Duration::from_secs(10),
        "a scrape once the slot is free",
        || {
            let out = common::tls::curl(&pki.ca, s.addr, "/metrics", &[]);
            scrape.text = String::from_utf8_lossy(&out.stdout).into_owned();
            out.status.success()
        },
    );
    assert!(scrape.value("busyapi_connections_refused_total") >= 2.0);
}

#[test]
fn a_key_that_does_not_match_the_certificate_stops_the_start_naming_the_flags() {
    let pki = TestPki::new();
    let (a, b) = (pki.issue("a"), pki.issue("b"));
    let data = pki.dir().join("data");
    let exited = run_to_exit(
        &[
            "--data-dir",
            data.to_str().expect("utf8"),
            "--fresh-dir-ids",
            "from-one",
            "--tls-cert",
            a.cert.to_str().expect("utf8"),
            "--tls-key",
            b.key.to_str().expect("utf8"),
        ],
        &[],
    );
    assert_ne!(exited.code, Some(0));
    assert!(
        !data.exists(),
        "the WAL was opened before the certificate was checked"
    );
    assert!(
        exited.stderr.contains("--tls-cert and --tls-key"),
        "{}",
        exited.stderr
    );
}
