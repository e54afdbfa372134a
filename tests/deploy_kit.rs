//! The deployment kit in `scripts/deploy/`, checked: every Kubernetes
//! manifest parses and carries what a durable node needs, the HAProxy and
//! nginx templates are accepted by the real `haproxy` and `nginx` binaries
//! (Debian packages; `scripts/test.sh` installs them, and these tests fail
//! rather than skip when they are missing), nginx with the kit's settings
//! really retries a refused POST on another node, and the systemd unit has
//! its required keys (and passes `systemd-analyze verify` where systemd is).
//!
//! Numbers that must agree across files (drain, grace, ports, names) are
//! read from the files themselves and compared, so the kit cannot drift.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use yaml_rust2::{Yaml, YamlLoader};

use common::{Opts, Server, free_port, wait_for};

fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts/deploy")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(kit(path)).unwrap_or_else(|e| panic!("scripts/deploy/{path}: {e}"))
}

/// The one YAML document of a manifest file.
fn manifest(path: &str) -> Yaml {
    let mut docs = manifests(path);
    assert_eq!(docs.len(), 1, "{path} holds one document");
    docs.remove(0)
}

fn manifests(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn text<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {y:?}"))
}

fn int(y: &Yaml, what: &str) -> i64 {
    y.as_i64()
        .unwrap_or_else(|| panic!("{what} is not an integer: {y:?}"))
}

fn items<'a>(y: &'a Yaml, what: &str) -> &'a Vec<Yaml> {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what} is not a list: {y:?}"))
}

/// A binary on PATH (or in /usr/sbin, where Debian puts daemons).
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn required(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!("`{name}` is not installed: `apt-get install {name}` (scripts/test.sh installs it); the kit is checked with the real binary, never skipped")
    })
}

/// The environment variables busyapi reads, from its own `--help`.
fn busyapi_env_vars() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_busyapi"))
        .arg("--help")
        .output()
        .expect("busyapi --help");
    let help = String::from_utf8_lossy(&out.stdout);
    help.split("[env: ")
        .skip(1)
        .map(|s| s.split(['=', ']']).next().expect("a name").to_owned())
        .collect()
}

fn config_map() -> BTreeMap<String, String> {
    let cm = manifest("k8s/configmap.yaml");
    assert_eq!(text(&cm["kind"], "kind"), "ConfigMap");
    cm["data"]
        .as_hash()
        .expect("ConfigMap data")
        .iter()
        .map(|(k, v)| {
            (
                text(k, "a key").to_owned(),
                text(v, "ConfigMap values are strings").to_owned(),
            )
        })
        .collect()
}

/// `KEY=value` lines of an env file, comments skipped.
fn env_file(path: &str) -> BTreeMap<String, String> {
    read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("{path}: not KEY=value: {l}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

fn container(sts: &Yaml) -> &Yaml {
    let containers = items(&sts["spec"]["template"]["spec"]["containers"], "containers");
    assert_eq!(containers.len(), 1, "one busyapi container per pod");
    &containers[0]
}

fn env_var<'a>(c: &'a Yaml, name: &str) -> &'a Yaml {
    items(&c["env"], "env")
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("the container sets no {name}"))
}

// ---------------------------------------------------------------- Kubernetes

#[test]
fn every_kubernetes_manifest_parses_and_the_kustomization_lists_each_one() {
    let dir = kit("k8s");
    let mut files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("scripts/deploy/k8s")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    assert!(files.remove("kustomization.yaml"), "a kustomization.yaml");
    for f in &files {
        for doc in manifests(&format!("k8s/{f}")) {
            assert!(
                doc["apiVersion"].as_str().is_some() && doc["kind"].as_str().is_some(),
                "{f}: apiVersion and kind"
            );
            assert!(
                doc["metadata"]["name"].as_str().is_some(),
                "{f}: metadata.name"
            );
        }
    }
    let k = manifest("k8s/kustomization.yaml");
    let listed: BTreeSet<String> = items(&k["resources"], "resources")
        .iter()
        .map(|r| text(r, "a resource").to_owned())
        .collect();
    assert_eq!(
        listed, files,
        "the kustomization applies every manifest, and only those"
    );
}

#[test]
fn the_statefulset_keeps_each_pods_wal_on_its_own_volume_and_probes_readyz_and_healthz() {
    let sts = manifest("k8s/statefulset.yaml");
    assert_eq!(
        text(&sts["kind"], "kind"),
        "StatefulSet",
        "a StatefulSet: each pod's WAL must outlive the pod"
    );
    assert_eq!(text(&sts["apiVersion"], "apiVersion"), "apps/v1");
    let claims = items(&sts["spec"]["volumeClaimTemplates"], "volumeClaimTemplates");
    assert_eq!(claims.len(), 1);
    let claim = text(&claims[0]["metadata"]["name"], "claim name");
    assert_eq!(
        text(&claims[0]["spec"]["accessModes"][0], "accessModes"),
        "ReadWriteOnce"
    );
    let c = container(&sts);
    let data_dir = config_map()
        .remove("BUSYAPI_DATA_DIR")
        .expect("BUSYAPI_DATA_DIR in the ConfigMap");
    let mounted = items(&c["volumeMounts"], "volumeMounts").iter().any(|m| {
        m["name"].as_str() == Some(claim) && m["mountPath"].as_str() == Some(data_dir.as_str())
    });
    assert!(
        mounted,
        "the claim {claim} is mounted at the data dir {data_dir}"
    );
    assert_eq!(
        text(
            &sts["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"],
            "whenScaled"
        ),
        "Retain"
    );

    assert_eq!(
        text(&c["readinessProbe"]["httpGet"]["path"], "readiness path"),
        "/readyz"
    );
    assert_eq!(
        text(&c["livenessProbe"]["httpGet"]["path"], "liveness path"),
        "/healthz"
    );
    let listen = config_map()
        .remove("BUSYAPI_LISTEN")
        .expect("BUSYAPI_LISTEN");
    let port = &items(&c["ports"], "ports")[0];
    assert_eq!(
        listen.rsplit(':').next(),
        Some(
            int(&port["containerPort"], "containerPort")
                .to_string()
                .as_str()
        )
    );
    let port_name = text(&port["name"], "port name");
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["port"].as_str(),
            Some(port_name),
            "{probe} uses the named port"
        );
    }
}

#[test]
fn termination_grace_outlasts_the_drain_and_the_flushers_grace_and_the_drain_outlasts_readiness() {
    let sts = manifest("k8s/statefulset.yaml");
    let cm = config_map();
    let drain_ms: i64 = cm["BUSYAPI_SHUTDOWN_DRAIN_MS"].parse().expect("drain ms");
    let grace_secs: i64 = cm["BUSYAPI_SHUTDOWN_GRACE_SECS"]
        .parse()
        .expect("grace secs");
    let tgps = int(
        &sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        "terminationGracePeriodSeconds",
    );
    assert!(
        tgps * 1000 > drain_ms + grace_secs * 1000,
        "{tgps} s must exceed drain {drain_ms} ms + grace {grace_secs} s"
    );
    // Until the pod is out of every endpoint list it must keep serving.
    let r = &container(&sts)["readinessProbe"];
    let readiness_ms = int(&r["periodSeconds"], "periodSeconds")
        * int(&r["failureThreshold"], "failureThreshold")
        * 1000;
    assert!(
        drain_ms > readiness_ms,
        "drain {drain_ms} ms must outlast readiness detection {readiness_ms} ms"
    );
}

#[test]
fn the_node_id_is_the_pod_ordinal_and_the_hpa_never_outgrows_the_id_range() {
    let sts = manifest("k8s/statefulset.yaml");
    let id = env_var(container(&sts), "BUSYAPI_NODE_ID");
    assert_eq!(
        text(&id["valueFrom"]["fieldRef"]["fieldPath"], "fieldPath"),
        "metadata.labels['apps.kubernetes.io/pod-index']",
        "the ordinal label the StatefulSet controller sets on each pod"
    );
    let hpa = manifest("k8s/hpa.yaml");
    assert!(
        int(&hpa["spec"]["maxReplicas"], "maxReplicas") <= 1024,
        "node ids are 0..1023"
    );
}

#[test]
fn the_hpa_scales_the_statefulset_on_cpu() {
    let hpa = manifest("k8s/hpa.yaml");
    let sts = manifest("k8s/statefulset.yaml");
    assert_eq!(text(&hpa["apiVersion"], "apiVersion"), "autoscaling/v2");
    assert_eq!(text(&hpa["kind"], "kind"), "HorizontalPodAutoscaler");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(text(&target["kind"], "target kind"), "StatefulSet");
    assert_eq!(target["name"], sts["metadata"]["name"]);
    let metrics = items(&hpa["spec"]["metrics"], "metrics");
    assert!(
        metrics
            .iter()
            .any(|m| m["resource"]["name"].as_str() == Some("cpu")
                && m["resource"]["target"]["type"].as_str() == Some("Utilization"))
    );
    let min = int(&hpa["spec"]["minReplicas"], "minReplicas");
    assert!(
        min >= 2 && min <= int(&hpa["spec"]["maxReplicas"], "maxReplicas"),
        "at least two pods, so one can restart"
    );
    let cpu = &container(&sts)["resources"]["requests"]["cpu"];
    assert!(
        cpu.as_str().is_some() || cpu.as_i64().is_some(),
        "utilization needs a CPU request"
    );
}

#[test]
fn the_mongodb_uri_comes_from_the_secret_and_every_setting_is_one_busyapi_reads() {
    let sts = manifest("k8s/statefulset.yaml");
    let secret = manifest("k8s/secret.yaml");
    let c = container(&sts);
    let from = &env_var(c, "MONGODB_URI")["valueFrom"]["secretKeyRef"];
    assert_eq!(from["name"], secret["metadata"]["name"]);
    let key = text(&from["key"], "secret key");
    assert!(text(&secret["stringData"][key], "the URI").starts_with("mongodb"));
    let cm_name = &manifest("k8s/configmap.yaml")["metadata"]["name"];
    assert!(
        items(&c["envFrom"], "envFrom")
            .iter()
            .any(|e| &e["configMapRef"]["name"] == cm_name)
    );

    let known = busyapi_env_vars();
    let set: Vec<String> = config_map()
        .into_keys()
        .chain(env_file("busyapi.env").into_keys())
        .collect();
    for name in set {
        assert!(
            known.contains(&name),
            "{name} is not a busyapi setting (busyapi --help lists {known:?})"
        );
    }
}

#[test]
fn busyapi_starts_and_is_ready_with_the_configmaps_settings() {
    // Listen address and data dir come from the harness (flags win over the
    // environment); everything else is the ConfigMap's.
    let mut opts = Opts::default();
    for (k, v) in config_map() {
        opts = opts.env(&k, &v);
    }
    let mut server = Server::start(opts);
    assert_eq!(server.get("/readyz").status, 200, "log:\n{}", server.logs());
    assert!(server.terminate(Duration::from_secs(60)).success());
}

#[test]
fn the_services_select_the_pods_and_the_headless_one_governs_the_statefulset() {
    let sts = manifest("k8s/statefulset.yaml");
    let labels = &sts["spec"]["template"]["metadata"]["labels"];
    let services = manifests("k8s/services.yaml");
    assert_eq!(
        services.len(),
        2,
        "a headless Service and a ClusterIP Service"
    );
    for s in &services {
        assert_eq!(text(&s["kind"], "kind"), "Service");
        for (k, v) in s["spec"]["selector"].as_hash().expect("selector") {
            assert_eq!(
                &labels[text(k, "label")],
                v,
                "the pods carry the selector's labels"
            );
        }
        let port_name = text(&container(&sts)["ports"][0]["name"], "port name");
        assert_eq!(
            s["spec"]["ports"][0]["targetPort"].as_str(),
            Some(port_name)
        );
    }
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], sts["spec"]["serviceName"]);
    assert!(
        services
            .iter()
            .any(|s| s["spec"]["type"].as_str() == Some("ClusterIP"))
    );
}

// ---------------------------------------------------------------- HAProxy

#[test]
fn haproxy_accepts_the_production_template_and_it_drops_a_stopping_node_before_its_drain_ends() {
    let out = Command::new(required("haproxy"))
        .arg("-c")
        .arg("-f")
        .arg(kit("haproxy.cfg"))
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

// ---------------------------------------------------------------- nginx

/// The template with this machine's addresses (see the markers at its top).
fn render_nginx_conf(listen: u16, nodes: &[std::net::SocketAddr]) -> String {
    let mut out = String::new();
    let mut in_servers = false;
    for line in read("nginx.conf").lines() {
        let trimmed = line.trim();
        if trimmed == "# [servers]" {
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

fn nginx(prefix: &Path, extra: &[&str]) -> Command {
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

fn nginx_prefix(conf: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("logs")).expect("logs dir");
    std::fs::write(dir.path().join("nginx.conf"), conf).expect("nginx.conf");
    // nginx's workers drop to an unprivileged user and must reach the prefix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nginx_accepts_the_production_template_as_written_and_as_rendered() {
    let out = Command::new(required("nginx"))
        .arg("-t")
        .arg("-c")
        .arg(kit("nginx.conf"))
        .output()
        .expect("nginx -t");
    assert_ok(&out, "nginx -t on scripts/deploy/nginx.conf");
    let prefix = nginx_prefix(&render_nginx_conf(
        free_port(),
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
struct Nginx(Child);

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
    let prefix = nginx_prefix(&render_nginx_conf(port, &[refusing.addr, healthy.addr]));
    let pid = prefix.path().join("nginx.pid");
    let log = std::fs::File::create(prefix.path().join("logs/stderr.log")).expect("log");
    let child = nginx(
        prefix.path(),
        &["-g", &format!("daemon off; pid {};", pid.display())],
    )
    .stdout(Stdio::null())
    .stderr(log)
    .spawn()
    .expect("start nginx");
    let _nginx = Nginx(child);
    wait_for(Duration::from_secs(10), "nginx to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

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

// ---------------------------------------------------------------- systemd

/// `[Section]` → key → values (a key may repeat).
fn unit_file(path: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = String::new();
    for line in read(path)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']))
    {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name.to_owned();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{path}: not key=value: {line}"));
        assert!(!current.is_empty(), "{path}: {k} outside a section");
        sections
            .entry(current.clone())
            .or_default()
            .entry(k.trim().to_owned())
            .or_default()
            .push(v.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_restarts_always_keeps_the_wal_and_outlasts_the_stop_sequence() {
    let unit = unit_file("busyapi.service");
    let service = &unit["Service"];
    let one = |k: &str| -> &str {
        service
            .get(k)
            .and_then(|v| v.last())
            .unwrap_or_else(|| panic!("[Service] {k}"))
    };
    assert_eq!(one("Restart"), "always");
    assert!(
        one("LimitNOFILE").parse::<u64>().expect("LimitNOFILE") > 10_000,
        "above --max-connections"
    );
    let state = one("StateDirectory");
    assert!(
        one("ExecStart").contains(&format!("--data-dir /var/lib/{state}")),
        "the WAL is in the state directory"
    );
    assert!(
        one("EnvironmentFile").starts_with('/'),
        "a required env file (MONGODB_URI, node id)"
    );
    for key in [
        "NoNewPrivileges",
        "ProtectSystem",
        "PrivateTmp",
        "ProtectHome",
        "DynamicUser",
    ] {
        assert!(service.contains_key(key), "hardening: {key}");
    }
    let env = env_file("busyapi.env");
    let drain_s = env["BUSYAPI_SHUTDOWN_DRAIN_MS"]
        .parse::<u64>()
        .expect("drain")
        / 1000;
    let grace_s: u64 = env["BUSYAPI_SHUTDOWN_GRACE_SECS"].parse().expect("grace");
    let stop_s: u64 = one("TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop_s > drain_s + grace_s,
        "TimeoutStopSec {stop_s} s vs drain {drain_s} s + grace {grace_s} s"
    );
    assert_eq!(unit["Install"]["WantedBy"], ["multi-user.target"]);

    // systemd's own check, where systemd is: the unit as shipped, with
    // ExecStart pointed at the binary just built (verify wants it to exist).
    if let Some(analyze) = which("systemd-analyze") {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("busyapi.service");
        std::fs::write(
            &path,
            read("busyapi.service")
                .replace("/usr/local/bin/busyapi", env!("CARGO_BIN_EXE_busyapi")),
        )
        .expect("write");
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("systemd-analyze verify");
        assert_ok(&out, "systemd-analyze verify");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            said.trim().is_empty(),
            "systemd-analyze verify has remarks:\n{said}"
        );
    }
}
