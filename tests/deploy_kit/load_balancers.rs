//! The load balancer templates: the real `haproxy` and `nginx` accept
//! them, HAProxy drops a stopping node before its drain ends, and nginx with
//! the kit's settings retries a refused POST on another node. Both
//! terminate TLS: see [`super::tls`].

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;
use common::{Opts, Server, free_port, wait_for};

/// The certificate paths the templates name, as written.
pub(super) const HAPROXY_PEM: &str = "/etc/haproxy/certs/busyapi.pem";
pub(super) const NGINX_CERT: &str = "/etc/nginx/certs/busyapi.crt";
pub(super) const NGINX_KEY: &str = "/etc/nginx/certs/busyapi.key";

/// A template as written but for its certificate paths, which name the
/// test's: `haproxy -c` and `nginx -t` load the certificates, and the
/// production paths exist on a production host only.
fn with_test_certs(path: &str, dir: &Path, leaf: &common::tls::Leaf) -> PathBuf {
    let text = read(path)
        .replace(HAPROXY_PEM, &leaf.combined.display().to_string())
        .replace(NGINX_CERT, &leaf.cert.display().to_string())
        .replace(NGINX_KEY, &leaf.key.display().to_string());
    let out = dir.join(path);
    std::fs::write(&out, text).expect("write the template");
    out
}

#[test]
fn haproxy_accepts_the_production_template_and_it_drops_a_stopping_node_before_its_drain_ends() {
    let pki = common::tls::TestPki::new();
    let leaf = pki.issue("haproxy");
    let out = Command::new(required("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(with_test_certs("haproxy.cfg", pki.dir(), &leaf))
        .output()
        .expect("haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let cfg = read("haproxy.cfg");
    let directive = |name: &str| -> String {
        cfg.lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("haproxy.cfg has no `{name}`"))
            .to_owned()
    };
    assert_eq!(directive("option httpchk"), "option httpchk GET /readyz");
    assert!(directive("option redispatch").len() >= "option redispatch".len());
    assert!(directive("http-reuse").starts_with("http-reuse safe"));
    assert_eq!(
        directive("option http-buffer-request"),
        "option http-buffer-request",
        "L7 retries need the whole request"
    );
    let retry_on = directive("retry-on");
    assert!(
        retry_on.contains("conn-failure") && retry_on.contains("503"),
        "{retry_on}"
    );
    assert!(
        !retry_on.contains("response-timeout") && !retry_on.contains("all-retryable"),
        "a late 201 must not be retried: {retry_on}"
    );

    let server = directive("default-server");
    let param = |name: &str| -> u64 {
        let v = server
            .split_whitespace()
            .skip_while(|w| *w != name)
            .nth(1)
            .unwrap_or_else(|| panic!("default-server {name}"));
        let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
        n.parse::<u64>().expect("a number") * if unit == "s" { 1000 } else { 1 }
    };
    let detection_ms = param("inter") + (param("fall") - 1) * param("fastinter");
    let drain_ms: u64 = env_file("busyapi.env")["BUSYAPI_SHUTDOWN_DRAIN_MS"]
        .parse()
        .expect("drain");
    assert!(
        drain_ms > 2 * detection_ms,
        "drain {drain_ms} ms vs HAProxy's detection {detection_ms} ms"
    );
    let cluster =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh"))
            .expect("cluster.sh");
    assert!(
        cluster.contains(&format!("DRAIN_MS={drain_ms}")),
        "scripts/cluster.sh runs its nodes with the same drain"
    );
}

/// The port of every `server` line of a balancer template.
fn server_ports(path: &str) -> Vec<String> {
    read(path)
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.strip_prefix("server "))
        .filter_map(|l| l.split_whitespace().find(|w| w.contains(':')))
        .map(|w| {
            w.trim_end_matches(';')
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .to_owned()
        })
        .collect()
}

#[test]
fn the_balancers_forward_to_the_public_port_and_never_to_the_admin_one() {
    let env = env_file("busyapi.env");
    let public = env["BUSYAPI_LISTEN"].rsplit(':').next().expect("port");
    let admin = env["BUSYAPI_ADMIN_LISTEN"]
        .rsplit(':')
        .next()
        .expect("port");
    assert_ne!(public, admin);
    for path in ["haproxy.cfg", "nginx.conf"] {
        let ports = server_ports(path);
        assert!(!ports.is_empty(), "{path} lists no servers");
        assert!(
            ports.iter().all(|p| p == public),
            "{path} forwards to {ports:?}, not only to the public port {public}"
        );
    }
}

// ---------------------------------------------------------------- nginx

/// Where a rendered nginx terminates TLS, and with what certificate.
pub(super) struct NginxTls<'a> {
    pub port: u16,
    pub leaf: &'a common::tls::Leaf,
}

/// The template with this machine's addresses (see the markers at its
/// top), with TLS on `tls` if given, plain HTTP only if not.
pub(super) fn render_nginx_conf(
    listen: u16,
    tls: Option<&NginxTls<'_>>,
    nodes: &[std::net::SocketAddr],
) -> String {
    let mut out = String::new();
    let mut in_servers = false;
    for line in read("nginx.conf").lines() {
        let trimmed = line.trim();
        let marked = |m: &str| !trimmed.starts_with('#') && line.contains(m);
        let tls_line = ["# [tls]", "# [cert]", "# [key]", "# [https-only]"]
            .iter()
            .any(|m| marked(m));
        if tls_line {
            let Some(tls) = tls else { continue };
            let line = line
                .replace(
                    "listen 443 ssl",
                    &format!("listen 127.0.0.1:{} ssl", tls.port),
                )
                .replace(NGINX_CERT, &tls.leaf.cert.display().to_string())
                .replace(NGINX_KEY, &tls.leaf.key.display().to_string());
            out.push_str(&line);
            out.push('\n');
        } else if trimmed == "# [servers]" {
            in_servers = true;
            for n in nodes {
                out.push_str(&format!(
                    "        server {n} max_fails=1 fail_timeout=5s;\n"
                ));
            }
        } else if trimmed == "# [/servers]" {
            in_servers = false;
        } else if in_servers || (!trimmed.starts_with('#') && line.contains("# [host]")) {
        } else if !trimmed.starts_with('#') && line.contains("# [listen]") {
            out.push_str(&format!("        listen 127.0.0.1:{listen};\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub(super) fn nginx(prefix: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(required("nginx"));
    cmd.arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .arg("-e")
        .arg("stderr")
        .args(extra);
    cmd
}

pub(super) fn nginx_prefix(conf: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("logs")).expect("logs dir");
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
    // nginx's workers drop to an unprivileged user and must reach the prefix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[test]
fn nginx_accepts_the_production_template_as_written_and_as_rendered() {
    let pki = common::tls::TestPki::new();
    let leaf = pki.issue("nginx");
    let out = Command::new(required("nginx"))
        .arg("-t")
        .arg("-c")
        .arg(with_test_certs("nginx.conf", pki.dir(), &leaf))
        .output()
        .expect("nginx -t");
    assert_ok(&out, "nginx -t on scripts/deploy/nginx.conf");
    let prefix = nginx_prefix(&render_nginx_conf(
        free_port(),
        None,
        &["127.0.0.1:1".parse().expect("addr")],
    ));
    assert_ok(
        &nginx(prefix.path(), &["-t"]).output().expect("nginx -t"),
        "nginx -t on the rendered template",
    );
    let conf = read("nginx.conf");
    assert!(conf.contains("proxy_next_upstream error timeout http_503 non_idempotent;"));
    assert!(conf.contains("keepalive "), "keep-alive to the nodes");
}

/// The nginx master; dropping it stops it with SIGTERM, which also ends
/// its workers (SIGKILL would leave them running, orphaned).
pub(super) struct Nginx(Child);

impl Nginx {
    /// Runs the configuration in `prefix` in the foreground, and waits
    /// until it listens on `port`.
    pub(super) fn start(prefix: &Path, port: u16) -> Nginx {
        let pid = prefix.join("nginx.pid");
        let log = std::fs::File::create(prefix.join("logs/stderr.log")).expect("log");
        let child = nginx(
            prefix,
            &["-g", &format!("daemon off; pid {};", pid.display())],
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start nginx");
        let started = Nginx(child);
        wait_for(Duration::from_secs(10), "nginx to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        started
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[test]
fn nginx_with_the_kits_settings_retries_a_post_that_one_node_refused_with_503_on_another_node() {
    // Node 1 cannot write its WAL (a failpoint): it answers every POST 503,
    // which busyapi sends only when nothing was written. Node 2 is healthy.
    let refusing = Server::start(
        Opts::default()
            .arg("--node-id 1")
            .env("FAILPOINTS", "wal::write=return"),
    );
    let healthy = Server::start(Opts::default().arg("--node-id 2"));
    let port = free_port();
    let prefix = nginx_prefix(&render_nginx_conf(
        port,
        None,
        &[refusing.addr, healthy.addr],
    ));
    let _nginx = Nginx::start(prefix.path(), port);

    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut c = common::Http::connect(proxy);
    let ids: Vec<u64> = (0..20)
        .map(|_| {
            c.post_json(common::USAGE);
            c.response().id()
        })
        .collect();
    assert!(
        ids.iter().all(|id| id >> 43 == 2),
        "every usage was stored by the healthy node: {ids:?}"
    );
    let refused = refusing.stats()["serverErrors"]
        .as_u64()
        .expect("serverErrors");
    assert!(
        refused >= 1,
        "nginx did try the refusing node (and retried elsewhere)"
    );
    assert_eq!(refusing.stats()["acknowledged"].as_u64(), Some(0));
}
