//! Workers are pinned one per CPU only when the process may run on exactly
//! as many CPUs as it has workers; on a shared host (more CPUs in its
//! affinity mask) pinning would crowd every busyapi onto the same first
//! CPUs, so they run unpinned and the log says why.

use super::*;
use common::{Opts, USAGE};

/// CPUs this test process (and so its child) may run on.
fn allowed_cpus() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list")
        .trim();
    list.split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (
                    a.parse().expect("a CPU number"),
                    b.parse().expect("a CPU number"),
                );
                b - a + 1
            }
            None => 1,
        })
        .sum()
}

#[test]
fn workers_are_pinned_only_when_the_process_owns_exactly_as_many_cpus() {
    let cpus = allowed_cpus();
    let owned = Server::start(Opts::default().arg(&format!("--workers {cpus}")));
    assert!(
        owned
            .logs()
            .contains(&format!("with {cpus} pinned worker(s)")),
        "{}",
        owned.logs()
    );
    assert_eq!(owned.post(USAGE).status, 201);

    let shared = Server::start(Opts::default().arg(&format!("--workers {}", cpus + 1)));
    let logs = shared.logs();
    assert!(
        logs.contains(&format!("with {} unpinned worker(s)", cpus + 1))
            && logs.contains(&format!("this process may run on {cpus} CPU(s)")),
        "{logs}"
    );
    assert_eq!(shared.post(USAGE).status, 201);
}
