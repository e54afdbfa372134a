//! A test host of the suite's own: a network namespace reached from the
//! root namespace over a veth pair, and the network faults put on it.
//!
//! For slot `N` (0 to 255, one per live host on the machine):
//!
//! ```text
//!   root namespace                     namespace busyapi-nf<N>-<pid>
//!   busyapi, the test                  secantusd-py, the fault's rules
//!   bnf<N>  10.200.N.1/30  <-- veth -->  eth0  10.200.N.2/30
//! ```
//!
//! The root-side name `bnf<N>` is the slot's lock: `ip link add` fails if
//! another host, of this process or another, holds it. A fault is a set of
//! iptables rules inside the namespace, so it touches that host's traffic
//! alone, and the namespace takes them with it when it goes. The host is
//! deleted on drop, a panicking test included; hosts of a test process that
//! was killed are swept by the next [`TestHost::new`].
//!
//! The root namespace also gets a route `unreachable 10.200.0.0/16`, below
//! the hosts' own /30 routes: a packet for a host that is gone (from a
//! busyapi a killed test left running) fails at once on this machine
//! instead of leaving it through the default route.
//!
//! This kernel has neither `sch_netem` (`tc qdisc ... netem`) nor the `gact`
//! action (`tc filter ... action drop`), but it has netfilter, so:
//! - a blackhole is DROP both ways: packets vanish, nothing is refused;
//! - lost replies are DROP on the namespace's output alone;
//! - loss is DROP both ways with `-m statistic --mode random`;
//! - latency is NFQUEUE on the namespace's output, whose reader
//!   ([`super::nfqueue`]) lets each packet go after a fixed delay.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::time::Duration;

use super::nfqueue::DelayQueue;
use super::which;

/// What test hosts' namespaces are called: `busyapi-nf<N>-<pid>`.
const NETNS_PREFIX: &str = "busyapi-nf";
/// Slots: the third byte of `10.200.N.0/30`.
const SLOTS: u32 = 256;
/// Every slot's addresses; kept on this machine by an `unreachable` route.
const HOSTS_NET: &str = "10.200.0.0/16";
/// The netfilter queue a delay uses; queues are per namespace.
const DELAY_QUEUE: u16 = 0;

/// A network namespace with one veth link to the root namespace.
pub struct TestHost {
    pub name: String,
    /// The host's address, inside the namespace.
    pub addr: Ipv4Addr,
}

/// A network fault on the traffic of one TCP port of a test host.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Every packet dropped, both ways, without a reply.
    Blackhole,
    /// Every packet from the host dropped: what is sent to it arrives and
    /// is acted on, its answers vanish.
    RepliesLost,
    /// Each packet dropped with this probability, both ways.
    Loss { percent: u32 },
    /// Each packet from the host held this long: the round trip grows by it,
    /// as with `netem delay` on the host's link.
    Delay { ms: u64 },
}

/// A fault in place; dropping it heals the network.
pub struct Injected<'a> {
    host: &'a TestHost,
    /// Each rule as `iptables -A` took it (chain first).
    rules: Vec<Vec<String>>,
    queue: Option<DelayQueue>,
}

impl TestHost {
    /// Creates a namespace and its link, with loopback up inside. Panics
    /// with the reason if `ip` or `iptables` is missing or refuses.
    pub fn new() -> TestHost {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        tool("iptables");
        ip(&["route", "replace", "unreachable", HOSTS_NET])
            .unwrap_or_else(|e| panic!("ip route replace unreachable {HOSTS_NET}: {e}"));
        sweep_stale();
        let first = std::process::id()
            .wrapping_mul(7)
            .wrapping_add(NEXT.fetch_add(1, Relaxed));
        for k in 0..SLOTS {
            let slot = (first + k) % SLOTS;
            if let Some(host) = TestHost::try_slot(slot) {
                return host;
            }
        }
        panic!("no free test-host slot: {SLOTS} veth links bnf<N> exist");
    }

    fn try_slot(slot: u32) -> Option<TestHost> {
        let name = format!("{NETNS_PREFIX}{slot}-{}", std::process::id());
        let veth = format!("bnf{slot}");
        ip(&["netns", "add", &name]).unwrap_or_else(|e| panic!("ip netns add {name}: {e}"));
        let host = TestHost {
            name,
            addr: Ipv4Addr::new(10, 200, slot as u8, 2),
        };
        let gateway = format!("10.200.{slot}.1/30");
        let inside = format!("{}/30", host.addr);
        if ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &host.name,
        ])
        .is_err()
        {
            return None; // taken: `host` is dropped, its namespace deleted
        }
        for args in [
            vec!["addr", "add", &gateway, "dev", &veth],
            vec!["link", "set", &veth, "up"],
            vec!["-n", &host.name, "addr", "add", &inside, "dev", "eth0"],
            vec!["-n", &host.name, "link", "set", "eth0", "up"],
            vec!["-n", &host.name, "link", "set", "lo", "up"],
        ] {
            ip(&args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
        }
        Some(host)
    }

    pub fn ip(&self) -> IpAddr {
        IpAddr::V4(self.addr)
    }

    /// The command that runs a program inside the namespace.
    pub fn launcher(&self) -> Vec<String> {
        [
            tool("ip").display().to_string(),
            "netns".into(),
            "exec".into(),
            self.name.clone(),
        ]
        .into()
    }

    /// Puts `fault` on the traffic to and from TCP port `port` of the host.
    pub fn inject(&self, fault: Fault, port: u16) -> Injected<'_> {
        let port = port.to_string();
        let both_ways = |target: &[&str]| -> Vec<Vec<String>> {
            [["INPUT", "--dport"], ["OUTPUT", "--sport"]]
                .iter()
                .map(|[chain, dir]| {
                    let mut r: Vec<String> =
                        [chain, "-p", "tcp", dir, &port].map(String::from).into();
                    r.extend(target.iter().map(|s| s.to_string()));
                    r
                })
                .collect()
        };
        let mut injected = Injected {
            host: self,
            rules: Vec::new(),
            queue: None,
        };
        let (rules, queue) = match fault {
            Fault::Blackhole => (both_ways(&["-j", "DROP"]), None),
            Fault::RepliesLost => {
                let rule = ["OUTPUT", "-p", "tcp", "--sport", &port, "-j", "DROP"];
                (vec![rule.map(String::from).into()], None)
            }
            Fault::Loss { percent } => {
                let p = format!("{:.2}", f64::from(percent) / 100.0);
                let rules = both_ways(&[
                    "-m",
                    "statistic",
                    "--mode",
                    "random",
                    "--probability",
                    &p,
                    "-j",
                    "DROP",
                ]);
                (rules, None)
            }
            Fault::Delay { ms } => {
                let netns = PathBuf::from("/run/netns").join(&self.name);
                let q = DelayQueue::bind(&netns, DELAY_QUEUE, Duration::from_millis(ms))
                    .unwrap_or_else(|e| panic!("a delay needs a netfilter queue: {e}"));
                let queue = DELAY_QUEUE.to_string();
                let rule = [
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "--sport",
                    &port,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &queue,
                ];
                (vec![rule.map(String::from).into()], Some(q))
            }
        };
        injected.queue = queue;
        for rule in rules {
            self.iptables("-A", &rule)
                .unwrap_or_else(|e| panic!("iptables -A {}: {e}", rule.join(" ")));
            injected.rules.push(rule);
        }
        injected
    }

    fn iptables(&self, op: &str, rule: &[String]) -> Result<String, String> {
        let iptables = tool("iptables").display().to_string();
        let mut args = vec!["netns", "exec", &self.name, &iptables, "-w", op];
        args.extend(rule.iter().map(String::as_str));
        ip(&args)
    }
}

impl Injected<'_> {
    /// Packets the fault's rules have matched so far: zero would mean the
    /// fault never touched the traffic.
    pub fn packets(&self) -> u64 {
        let listing = self
            .host
            .iptables("-L", &["-n".into(), "-v".into(), "-x".into()])
            .unwrap_or_else(|e| panic!("iptables -L: {e}"));
        listing
            .lines()
            .filter(|l| l.contains("DROP") || l.contains("NFQUEUE"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    /// The delay queue, for a [`Fault::Delay`].
    pub fn queue(&self) -> Option<&DelayQueue> {
        self.queue.as_ref()
    }

    /// Takes the fault away.
    pub fn heal(self) {}
}

impl Drop for Injected<'_> {
    fn drop(&mut self) {
        // Rules first: with the queue gone first, a packet still sent to
        // it would be dropped.
        for rule in self.rules.drain(..) {
            if let Err(e) = self.host.iptables("-D", &rule) {
                eprintln!("iptables -D {}: {e}", rule.join(" "));
            }
        }
        self.queue.take();
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        delete_netns(&self.name);
    }
}

/// Kills what runs in namespace `name` and deletes it (its veth goes too).
fn delete_netns(name: &str) {
    if let Ok(pids) = ip(&["netns", "pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid the kernel just listed; no memory.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    if let Err(e) = ip(&["netns", "del", name]) {
        eprintln!("ip netns del {name}: {e}");
    }
}

/// Deletes the test hosts of test processes that are gone (killed before
/// their hosts' drop could run).
fn sweep_stale() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some((_, pid)) = rest.split_once('-') else {
            continue;
        };
        if !PathBuf::from("/proc").join(pid).exists() {
            delete_netns(name);
        }
    }
}

/// A tool the faults need, or a panic that says how to get it.
fn tool(name: &str) -> PathBuf {
    which(name).unwrap_or_else(|| {
        panic!(
            "{name} is not installed; network-fault tests need Debian's iproute2 and iptables (scripts/test.sh installs them)"
        )
    })
}

/// Runs `ip` with `args`; its stdout, or its stderr as the error.
fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool("ip"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}
