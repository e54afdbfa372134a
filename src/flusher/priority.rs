//! Ingest before delivery: the flusher's threads, and the MongoDB driver's,
//! run at a lower CPU priority than the connections and the WAL writer.
//!
//! The WAL exists so that delivery can lag. When the CPU is short (a burst,
//! a database on the same host), an acknowledgement that waits for the CPU
//! is latency every device feels, while a batch that waits is backlog the
//! WAL already holds. So delivery takes what the connections leave: Linux
//! gives a nice-[`DELIVERY_NICE`] thread about a tenth of a nice-0 thread's
//! share when both want the CPU, and everything when nothing else does, so
//! an idle or a sized host delivers at full speed.
//!
//! A failure to lower a priority is not an error: delivery still works, it
//! only competes with ingest as it did before.

use std::fs;

use crate::limits::DELIVERY_NICE;

/// How the MongoDB driver's runtime threads are named: tokio's defaults
/// (`tokio-rt-worker`, and `tokio-runtime-worker` in older releases).
const DRIVER_THREAD_PREFIX: &str = "tokio-";

/// Lowers the priority of the calling thread.
pub(super) fn lower_this_thread() {
    // SAFETY: gettid takes no arguments and cannot fail.
    let tid = unsafe { libc::gettid() };
    lower(tid);
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

/// Sets thread `tid`'s nice value to [`DELIVERY_NICE`] unless it is
/// already at least that (a process started under `nice` keeps its own).
fn lower(tid: libc::pid_t) {
    // On Linux, PRIO_PROCESS with a thread id reads and sets that one
    // thread's nice value. Raising a nice value needs no privilege.
    // getpriority returns -1 both for an error and for nice -1; errno tells.
    // SAFETY: errno is this thread's; getpriority and setpriority read
    // only their integer arguments.
    let rc = unsafe {
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        if *libc::__errno_location() == 0 && now >= DELIVERY_NICE {
            return;
        }
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, DELIVERY_NICE)
    };
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
        // SAFETY: as above; getpriority reads only its arguments.
        unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t)
        }
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
