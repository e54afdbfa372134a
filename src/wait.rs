//! Waiting on an OS thread for a condition, until a deadline at the
//! latest: the one place busyapi sleeps in steps while it watches for a
//! stop.
//!
//! What these waits watch is state other threads set (a stop deadline, a
//! signal, a count falling to zero, a thread ending), not something that
//! can wake the waiter, so the waiter looks again every `step`. The step
//! bounds how late a wait notices its condition and the deadline bounds
//! the wait; both are the caller's, since they differ from one wait to
//! the next and each has its reason where it is declared.
//!
//! A leaf, below everything that waits (`http`, the flusher, `shutdown`,
//! `main`). For OS threads only: it blocks the thread, and a may coroutine
//! that called it would stall every connection on its worker.

use std::time::{Duration, Instant};

/// Waits until `done()` holds or `deadline` passes, looking every `step`
/// (the last step is cut to the deadline). Returns whether `done()` held.
/// `done` is asked once more after the last step, so a condition met at
/// the deadline counts as met.
pub fn until(deadline: Instant, step: Duration, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(step.min(left));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    const STEP: Duration = Duration::from_millis(10);

    #[test]
    fn a_condition_that_already_holds_ends_the_wait_without_sleeping() {
        let started = Instant::now();
        assert!(until(started + Duration::from_secs(60), STEP, || true));
        assert!(started.elapsed() < STEP);
    }

    #[test]
    fn a_condition_that_never_holds_ends_the_wait_at_the_deadline_not_a_step_later() {
        let started = Instant::now();
        let deadline = started + Duration::from_millis(35);
        assert!(!until(deadline, Duration::from_secs(60), || false));
        assert!(Instant::now() >= deadline);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "slept a whole step"
        );
    }

    #[test]
    fn a_condition_another_thread_sets_ends_the_wait_within_a_step() {
        let flag = Arc::new(AtomicBool::new(false));
        let setter = {
            let flag = flag.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                flag.store(true, Ordering::Relaxed);
            })
        };
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        assert!(until(deadline, STEP, || flag.load(Ordering::Relaxed)));
        assert!(started.elapsed() < Duration::from_secs(30));
        setter.join().expect("setter");
    }

    #[test]
    fn a_condition_met_at_the_deadline_counts_as_met() {
        let deadline = Instant::now() + Duration::from_millis(20);
        assert!(until(deadline, Duration::from_secs(60), || Instant::now()
            >= deadline));
    }
}
