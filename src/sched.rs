//! Ingest before delivery: how busyapi asks the Linux scheduler to treat
//! its threads.
//!
//! The flusher's threads and the MongoDB driver's run at nice
//! [`DELIVERY_NICE`]. The WAL exists so that delivery can lag: when the CPU
//! is short (a burst, a database on the same host), a batch that waits is
//! backlog the WAL already holds, while an acknowledgement that waits is
//! latency every device feels. Linux gives a nice-10 thread about a tenth
//! of a nice-0 thread's share when both want the CPU, and everything when
//! nothing else does, so an idle or a sized host delivers at full speed.
//!
//! Raising a nice value needs no privilege, and a failure is not an error:
//! delivery works as before, only without yielding to ingest.

use std::fs;

use crate::limits::DELIVERY_NICE;

/// How the MongoDB driver's runtime threads are named: tokio's defaults
/// (`tokio-rt-worker`, and `tokio-runtime-worker` in older releases).
const DRIVER_THREAD_PREFIX: &str = "tokio-";

/// Lowers the priority of the calling thread (a delivery thread).
pub fn lower_this_thread() {
    lower(this_tid());
}

/// Lowers the priority of the MongoDB driver's threads. They are started
/// by whichever thread first made a client, perhaps the main thread at a
/// fresh start; threads they start later inherit the lowered priority.
pub fn lower_driver_threads() {
    let Ok(tasks) = fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let name = fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if name.starts_with(DRIVER_THREAD_PREFIX) {
            lower(tid);
        }
    }
}

fn this_tid() -> libc::pid_t {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Thread `tid`'s nice value, or `None` if it cannot be read.
fn nice_of(tid: libc::pid_t) -> Option<i32> {
    // getpriority returns -1 both for an error and for nice -1; errno tells.
    // SAFETY: errno is this thread's; getpriority reads only its arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        (*libc::__errno_location() == 0).then_some(nice)
    }
}

/// Sets thread `tid`'s nice value to [`DELIVERY_NICE`] unless it is
/// already at least that (a process started under `nice` keeps its own).
fn lower(tid: libc::pid_t) {
    if nice_of(tid).is_some_and(|n| n >= DELIVERY_NICE) {
        return;
    }
    // On Linux, PRIO_PROCESS with a thread id sets that one thread's nice
    // value. Raising a nice value needs no privilege.
    // SAFETY: setpriority reads only its integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, DELIVERY_NICE) };
    if rc != 0 {
        log::debug!(
            "could not lower the priority of thread {tid}: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        nice_of(this_tid()).expect("readable")
    }

    #[test]
    fn a_delivery_thread_runs_at_the_delivery_nice_value_and_others_do_not() {
        let before = nice_of_this_thread();
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            nice_of_this_thread()
        })
        .join()
        .expect("thread");
        assert_eq!(lowered, DELIVERY_NICE.max(before));
        assert_eq!(nice_of_this_thread(), before, "only the one thread");
    }
}
