//! Token buckets on one atomic each: a key's rate limit, and the budget of
//! failed authentications of one address.
//!
//! A bucket is kept as its "theoretical arrival time" (the GCRA form of a
//! token bucket): the instant at which it would be full again, in
//! nanoseconds on the [`Auth`](super::Auth)'s clock. Taking `n` tokens moves
//! it `n` intervals later; it may run at most `burst` intervals ahead of
//! now. One compare-and-swap takes tokens, so workers on every core share a
//! bucket with no lock and no allocation.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::KeyLimit;
use crate::limits::BUCKET_CAS_TRIES_MAX;

const NANOS_PER_S: u64 = 1_000_000_000;

/// One token bucket.
#[derive(Debug)]
pub struct Bucket {
    /// When the bucket is full again, ns; 0 (full) at start.
    full_at_ns: AtomicU64,
    /// Nanoseconds per token: 1 s / rate.
    interval_ns: u64,
    /// How far ahead of now `full_at_ns` may run: `burst` intervals.
    tolerance_ns: u64,
    /// The limit it was made with, so a reload can tell whether it changed.
    pub limit: KeyLimit,
}

impl Bucket {
    /// A full bucket of `limit`.
    pub fn new(limit: KeyLimit) -> Bucket {
        let interval_ns = NANOS_PER_S / limit.rate_per_s.max(1);
        Bucket {
            full_at_ns: AtomicU64::new(0),
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(limit.burst),
            limit,
        }
    }

    /// Takes `count` tokens at `now_ns`; `Err` with the nanoseconds until
    /// they would be there. Contention past [`BUCKET_CAS_TRIES_MAX`] lost
    /// swaps counts as over the limit (others took the tokens meanwhile).
    pub fn take(&self, count: u64, now_ns: u64) -> Result<(), u64> {
        let cost = self.interval_ns.saturating_mul(count);
        let mut full_at = self.full_at_ns.load(Relaxed);
        for _ in 0..BUCKET_CAS_TRIES_MAX {
            let next = full_at.max(now_ns).saturating_add(cost);
            let ahead = next - now_ns;
            if ahead > self.tolerance_ns {
                return Err(ahead - self.tolerance_ns);
            }
            match self
                .full_at_ns
                .compare_exchange_weak(full_at, next, Relaxed, Relaxed)
            {
                Ok(_) => return Ok(()),
                Err(now_there) => full_at = now_there,
            }
        }
        Err(self.interval_ns)
    }
}

/// Whole seconds to wait for `wait_ns`, rounded up, at least 1: a
/// `Retry-After` value.
pub fn retry_after_secs(wait_ns: u64) -> u64 {
    wait_ns.div_ceil(NANOS_PER_S).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(rate_per_s: u64, burst: u64) -> Bucket {
        Bucket::new(KeyLimit { rate_per_s, burst })
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let b = bucket(10, 3);
        let t = 5 * NANOS_PER_S;
        for _ in 0..3 {
            assert_eq!(b.take(1, t), Ok(()));
        }
        assert_eq!(b.take(1, t), Err(NANOS_PER_S / 10));
        assert_eq!(b.take(1, t + NANOS_PER_S / 10), Ok(()));
        assert_eq!(b.take(1, t + NANOS_PER_S / 10), Err(NANOS_PER_S / 10));
        assert_eq!(b.take(3, t + 10 * NANOS_PER_S), Ok(()), "refilled");
    }

    #[test]
    fn a_count_takes_that_many_tokens_or_none() {
        let b = bucket(1, 5);
        assert_eq!(b.take(4, 0), Ok(()));
        assert_eq!(b.take(2, 0), Err(NANOS_PER_S), "only one is left");
        assert_eq!(b.take(1, 0), Ok(()), "the refused take took nothing");
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(NANOS_PER_S), 1);
        assert_eq!(retry_after_secs(NANOS_PER_S + 1), 2);
        assert_eq!(retry_after_secs(0), 1);
    }
}
