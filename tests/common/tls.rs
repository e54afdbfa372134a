//! Certificates a test makes, and clients that check them.
//!
//! [`TestPki`] is a certificate authority of the test's own and server
//! certificates it signs for `127.0.0.1` and `localhost`, made with the
//! `openssl` CLI (a Debian package, present wherever the tests run; they
//! fail rather than skip without it). The clients are the real `curl` and
//! `openssl s_client`, trusting that CA alone: a server that showed any
//! other certificate would fail the handshake.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::which;

/// How long the test certificates are valid: the length of any test run.
const CERT_DAYS: &str = "2";

/// A binary the TLS tests run; missing, the test fails and says how to
/// install it.
pub fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "`{name}` is not installed: `apt-get install {name}`; the TLS tests use the real one"
        )
    })
}

/// A CA and the server certificates it signed, in a directory of their own.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA's certificate: what the clients trust.
    pub ca: PathBuf,
    ca_key: PathBuf,
}

/// One server certificate: its PEM files.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate, then the CA's (the chain a server sends).
    pub cert: PathBuf,
    /// Its private key (PKCS#8).
    pub key: PathBuf,
    /// The key, then the chain, in one file: what HAProxy's `crt` takes.
    pub combined: PathBuf,
}

impl TestPki {
    /// A fresh CA with an EC P-256 key.
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca.key");
        run_openssl(
            Command::new(tool("openssl"))
                .args(["req", "-x509", "-newkey", "ec"])
                .args(["-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
                .args(["-days", CERT_DAYS, "-subj", "/CN=busyapi test CA"])
                .arg("-keyout")
                .arg(&ca_key)
                .arg("-out")
                .arg(&ca),
            "make the test CA",
        );
        TestPki { dir, ca, ca_key }
    }

    /// A server certificate for 127.0.0.1 and localhost, named `name`
    /// (files `name.pem`, `name.key`, `name.combined.pem`), signed by the CA.
    pub fn issue(&self, name: &str) -> Leaf {
        let path = |suffix: &str| self.dir.path().join(format!("{name}{suffix}"));
        let (key, csr, leaf, ext) = (path(".key"), path(".csr"), path(".leaf.pem"), path(".ext"));
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write the extensions");
        run_openssl(
            Command::new(tool("openssl"))
                .args([
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ])
                .args(["-nodes", "-subj", &format!("/CN={name}")])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&csr),
            "make a server key and request",
        );
        run_openssl(
            Command::new(tool("openssl"))
                .args(["x509", "-req", "-days", CERT_DAYS, "-CAcreateserial"])
                .arg("-CAserial")
                .arg(self.dir.path().join("ca.srl"))
                .arg("-in")
                .arg(&csr)
                .arg("-CA")
                .arg(&self.ca)
                .arg("-CAkey")
                .arg(&self.ca_key)
                .arg("-extfile")
                .arg(&ext)
                .arg("-out")
                .arg(&leaf),
            "sign the server certificate",
        );
        let read = |p: &Path| std::fs::read_to_string(p).expect("read a PEM file");
        let chain = read(&leaf) + &read(&self.ca);
        let cert = path(".pem");
        std::fs::write(&cert, &chain).expect("write the chain");
        let combined = path(".combined.pem");
        std::fs::write(&combined, read(&key) + &chain).expect("write the combined PEM");
        Leaf {
            cert,
            key,
            combined,
        }
    }

    /// The directory the files are in (readable by the test only).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn run_openssl(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().expect("run openssl");
    assert!(
        out.status.success(),
        "openssl could not {what}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `curl` trusting `ca` alone, to `https://ADDR{path}`, with the response
/// head and body on stdout (`-i`); `extra` are further arguments.
pub fn curl(ca: &Path, addr: SocketAddr, path: &str, extra: &[&str]) -> Output {
    Command::new(tool("curl"))
        .args(["-sS", "-i", "--max-time", "30", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://{addr}{path}"))
        .stdin(Stdio::null())
        .output()
        .expect("run curl")
}

/// POSTs `body` as JSON over TLS with [`curl`]; the whole response text.
pub fn curl_post(ca: &Path, addr: SocketAddr, body: &str) -> String {
    let out = curl(
        ca,
        addr,
        "/api/usages",
        &[
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ],
    );
    assert!(
        out.status.success(),
        "curl over TLS to {addr} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A handshake with `openssl s_client` offering only `version` (`tls1_1`,
/// `tls1_2`, `tls1_3`), trusting `ca`. Security level 0, so that the
/// client itself would allow TLS 1.1: a refusal is then the server's.
/// Returns whether it succeeded and what the client printed.
pub fn handshake(ca: &Path, addr: SocketAddr, version: &str) -> (bool, String) {
    let out = Command::new(tool("openssl"))
        .args([
            "s_client",
            "-connect",
            &addr.to_string(),
            &format!("-{version}"),
        ])
        .args([
            "-cipher",
            "DEFAULT@SECLEVEL=0",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(ca)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// The server refused a TLS 1.1 handshake with an alert (OpenSSL-based
/// servers send `protocol_version`, rustls `handshake_failure`), while the
/// same client completes a TLS 1.2 one: the refusal is the server's
/// policy, not the client's (which would send nothing and say "no
/// protocols available").
pub fn assert_tls11_refused_and_tls12_taken(ca: &Path, addr: SocketAddr) {
    let (ok, text) = handshake(ca, addr, "tls1_2");
    assert!(ok && text.contains("TLSv1.2"), "TLS 1.2 to {addr}:\n{text}");
    let (ok, text) = handshake(ca, addr, "tls1_1");
    assert!(!ok, "TLS 1.1 to {addr} was accepted:\n{text}");
    assert!(
        text.contains("Protocol  : TLSv1.1") && text.contains("SSL alert number"),
        "TLS 1.1 to {addr} failed, but not with an alert from the server:\n{text}"
    );
}
