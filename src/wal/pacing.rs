//! Commit pacing: when the writer holds a commit back so that one
//! `fdatasync` serves more records.
//!
//! An fdatasync costs about 100 µs of CPU on a virtio disk (doorbells and
//! interrupts) whatever it carries. Committing back to back, as soon as
//! anything is queued, makes a commit carry what arrived during the last
//! one: at 8,000 requests/s that is 2–3 records, and the fsyncs alone take
//! more CPU than the whole request path. Every mature log paces its group
//! commit for this (PostgreSQL's `commit_delay` with `commit_siblings`,
//! MySQL's `binlog_group_commit_sync_delay` with `_no_delay_count`, Kafka's
//! `linger.ms`); the rule they share is to wait only when more records are
//! known to be coming. Here that means:
//!
//! 1. **Nobody else can submit: commit now.** Every connection that could
//!    add a record is already waiting on this commit (a closed loop of a
//!    few connections), so holding would only add latency.
//! 2. **Most of the commit's submitters are in a closed loop: commit
//!    now.** A client whose next request waits for this reply (wrk, a
//!    balancer's busy pool) came back within
//!    [`super::submission::PROMPT_THINK_US`] of its previous reply; for it a
//!    hold is added round-trip time, and its throughput falls with it
//!    (measured: 26% at 16 connections). A device, or a pool held at a
//!    fixed rate, comes back later.
//! 3. **The expected gain is under one record: commit now.** The writer
//!    keeps a smoothed arrival rate; a trickle commits at once.
//! 4. **Otherwise hold**, until [`COMMIT_RECORDS_TARGET`] records are
//!    expected, but never later than `--commit-delay-max-us` after the
//!    previous commit started, scaled by the share of submitters that are
//!    not waiting yet. The bound is the cap on what pacing adds to any
//!    request's latency, and at a steady load from many devices it caps the
//!    fsync rate at one per bound. The scaling keeps a bounded pool of
//!    connections (a balancer, a load generator) from being slowed into a
//!    closed loop: as more of its connections wait, the holds shrink to
//!    nothing, where otherwise the longer round trips would leave even more
//!    of them waiting.
//!
//! A hold ends early when the last connection that could submit does (see
//! `Lanes::hold_writer`), so rule 1 also holds mid-wait.
//!
//! # Invariants
//! - Pacing only ever delays a commit; it never acknowledges anything
//!   early. Every 201 still follows its record's fdatasync.
//! - No hold lasts past `delay_max` after the previous commit's start.

use std::time::{Duration, Instant};

/// Records a held commit waits for at most. 64 records share an fsync's
/// ~100 µs of CPU at under 2 µs each, and at 18,000 requests/s they arrive
/// in 3.5 ms, longer than the default bound, so the bound decides there.
pub const COMMIT_RECORDS_TARGET: u64 = 64;
/// A hold whose expected gain is below this many records is not made: a
/// trickle commits at once.
const HOLD_GAIN_RECORDS_MIN: f64 = 1.0;
/// Weight of the newest sample in the smoothed arrival rate: about the
/// last eight commits count.
const RATE_SMOOTHING: f64 = 0.125;
/// A gap between commits longer than this restarts the rate estimate
/// instead of averaging an idle spell into it.
const RATE_RESET_GAP: Duration = Duration::from_secs(1);

/// What the writer knows when it decides on a hold.
#[derive(Debug, Clone, Copy)]
pub struct Batch {
    /// Records drained for this commit.
    pub records: u64,
    /// Submissions not yet answered, the drained ones included.
    pub submissions_waiting: usize,
    /// Connections that can submit (see [`super::lanes::Lanes::attach`]).
    pub submitters: usize,
    /// Drained submissions from submitters in a closed loop (see
    /// [`super::submission::Submission::prompt`]).
    pub prompt_submissions: usize,
    /// All drained submissions.
    pub submissions: usize,
}

/// The writer's pacing state.
#[derive(Debug)]
pub struct Pacer {
    /// `--commit-delay-max-us`; zero turns pacing off.
    delay_max: Duration,
    /// Smoothed records per second arriving at the writer.
    rate_per_s: f64,
    /// When the previous commit started.
    last_start: Option<Instant>,
}

impl Pacer {
    /// A pacer that holds a commit back by at most `delay_max` (zero: never).
    pub fn new(delay_max: Duration) -> Pacer {
        Pacer {
            delay_max,
            rate_per_s: 0.0,
            last_start: None,
        }
    }

    /// Until when to hold `batch` back, or `None` to commit it now.
    pub fn hold_until(&self, now: Instant, batch: Batch) -> Option<Instant> {
        let last_start = self.last_start?;
        if self.delay_max.is_zero()
            || batch.records >= COMMIT_RECORDS_TARGET
            || batch.submitters <= batch.submissions_waiting
            || 2 * batch.prompt_submissions >= batch.submissions
        {
            return None;
        }
        // The more submitters already wait on this commit, the shorter the
        // hold: a client with a bounded pool (a balancer, a load generator
        // with 64 connections) whose requests all sit in the WAL cannot
        // send more, and a full hold would only stretch its round trips
        // until its pool, not the server, sets the rate.
        let free = 1.0 - batch.submissions_waiting as f64 / batch.submitters as f64;
        let cap = last_start + self.delay_max.mul_f64(free);
        if cap <= now || self.rate_per_s <= 0.0 {
            return None;
        }
        let missing = (COMMIT_RECORDS_TARGET - batch.records) as f64;
        let to_target = Duration::from_secs_f64(missing / self.rate_per_s);
        let until = cap.min(now + to_target);
        let gain = self.rate_per_s * (until - now).as_secs_f64();
        (gain >= HOLD_GAIN_RECORDS_MIN).then_some(until)
    }

    /// Notes that a commit of `records` starts `now`.
    pub fn started(&mut self, now: Instant, records: u64) {
        if let Some(last) = self.last_start {
            let gap = now.saturating_duration_since(last);
            // A sample over a gap this short is noise from a timer's
            // resolution; skip it rather than divide by almost nothing.
            if gap >= Duration::from_micros(1) {
                let sample = records as f64 / gap.as_secs_f64();
                self.rate_per_s = if gap > RATE_RESET_GAP || self.rate_per_s == 0.0 {
                    sample
                } else {
                    self.rate_per_s + RATE_SMOOTHING * (sample - self.rate_per_s)
                };
            }
        }
        self.last_start = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_millis(2);

    /// A pacer that has seen commits of `records` every `every`.
    fn warmed(every: Duration, records: u64) -> (Pacer, Instant) {
        let mut p = Pacer::new(BOUND);
        let mut t = Instant::now();
        for _ in 0..32 {
            p.started(t, records);
            t += every;
        }
        (p, t - every)
    }

    fn batch(records: u64, waiting: usize, submitters: usize) -> Batch {
        Batch {
            records,
            submissions_waiting: waiting,
            submitters,
            prompt_submissions: 0,
            submissions: waiting.max(1),
        }
    }

    #[test]
    fn a_steady_stream_is_held_but_never_past_the_bound() {
        // 8,000 records/s: 4 records every 500 µs.
        let (p, last) = warmed(Duration::from_micros(500), 4);
        let now = last + Duration::from_micros(400);
        let until = p.hold_until(now, batch(3, 3, 64)).expect("a hold");
        assert!(until > now);
        assert!(until <= last + BOUND, "held past the bound");
    }

    #[test]
    fn a_closed_loop_whose_every_connection_waits_commits_at_once() {
        let (p, last) = warmed(Duration::from_micros(300), 4);
        let now = last + Duration::from_micros(250);
        assert_eq!(p.hold_until(now, batch(4, 4, 4)), None);
    }

    #[test]
    fn the_hold_shrinks_as_more_of_the_submitters_wait() {
        let (p, last) = warmed(Duration::from_micros(500), 20);
        let now = last + Duration::from_micros(100);
        let few = p.hold_until(now, batch(4, 8, 64)).expect("a hold");
        let most = p.hold_until(now, batch(4, 56, 64)).expect("a hold");
        assert!(most < few, "{most:?} is not shorter than {few:?}");
        assert!(most <= last + BOUND.mul_f64(8.0 / 64.0));
    }

    #[test]
    fn a_commit_whose_submitters_are_mostly_in_a_closed_loop_is_not_held() {
        let (p, last) = warmed(Duration::from_micros(300), 8);
        let now = last + Duration::from_micros(200);
        let mut b = batch(6, 6, 16);
        assert!(p.hold_until(now, b).is_some(), "a hold for devices");
        b.prompt_submissions = 3;
        assert_eq!(p.hold_until(now, b), None);
    }

    #[test]
    fn a_trickle_commits_at_once() {
        // 100 records/s: the bound would gather 0.2 of a record.
        let (p, last) = warmed(Duration::from_millis(10), 1);
        let now = last + Duration::from_micros(100);
        assert_eq!(p.hold_until(now, batch(1, 1, 64)), None);
    }

    #[test]
    fn a_full_enough_commit_and_a_pacer_turned_off_do_not_hold() {
        let (p, last) = warmed(Duration::from_micros(500), 4);
        let now = last + Duration::from_micros(100);
        assert_eq!(p.hold_until(now, batch(COMMIT_RECORDS_TARGET, 9, 64)), None);
        let mut off = Pacer::new(Duration::ZERO);
        off.started(last, 4);
        assert_eq!(off.hold_until(now, batch(1, 1, 64)), None);
    }

    #[test]
    fn a_fast_stream_holds_only_until_the_target_is_expected() {
        // 128,000 records/s: 64 more records take 0.5 ms, under the bound.
        let (p, last) = warmed(Duration::from_micros(500), 64);
        let now = last + Duration::from_micros(10);
        let until = p.hold_until(now, batch(0, 1, 64)).expect("a hold");
        let held = until - now;
        assert!(
            held < Duration::from_micros(600) && held > Duration::from_micros(400),
            "held {held:?}"
        );
    }

    #[test]
    fn the_rate_restarts_after_an_idle_spell() {
        let (mut p, last) = warmed(Duration::from_micros(100), 10);
        let after_idle = last + Duration::from_secs(5);
        p.started(after_idle, 1);
        let now = after_idle + Duration::from_micros(100);
        assert_eq!(p.hold_until(now, batch(1, 1, 64)), None);
    }
}
