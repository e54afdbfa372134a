//! Failed authentications per client address, so that guessing keys costs
//! the server nothing measurable.
//!
//! A bounded table ([`AUTH_FAILURE_SLOTS`] token buckets) that addresses
//! hash into: no allocation, no growth, whatever the number of addresses.
//! An address within its budget ([`AUTH_FAILURE_BURST`], refilled at
//! [`AUTH_FAILURE_RATE_PER_S`]) gets 401s; past it, a failed attempt gets
//! 429 with `Retry-After` and its connection is closed, so each further
//! guess costs the guesser a new TCP connection while it costs the server
//! one hash. Only failures are limited: a valid key from the same address
//! (another client behind the same balancer) is served as ever, so one
//! broken client cannot lock the others out.

use std::net::IpAddr;

use super::KeyLimit;
use super::bucket::Bucket;
use crate::limits::{AUTH_FAILURE_BURST, AUTH_FAILURE_RATE_PER_S, AUTH_FAILURE_SLOTS};

/// The table of failure budgets.
pub struct Failures {
    slots: Box<[Bucket]>,
}

impl Default for Failures {
    fn default() -> Failures {
        let limit = KeyLimit {
            rate_per_s: AUTH_FAILURE_RATE_PER_S,
            burst: AUTH_FAILURE_BURST,
        };
        Failures {
            slots: (0..AUTH_FAILURE_SLOTS)
                .map(|_| Bucket::new(limit))
                .collect(),
        }
    }
}

impl Failures {
    /// Records a failed authentication from `ip` at `now_ns`: `Err` with the
    /// nanoseconds until the address is within its budget again.
    pub fn failed(&self, ip: IpAddr, now_ns: u64) -> Result<(), u64> {
        self.slot(ip).take(1, now_ns)
    }

    /// FNV-1a of the address's bytes (an IPv4-mapped IPv6 address as its
    /// IPv4 form), into a slot.
    fn slot(&self, ip: IpAddr) -> &Bucket {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        let mut buf = [0u8; 16];
        let bytes: &[u8] = match ip {
            IpAddr::V4(v4) => {
                buf[..4].copy_from_slice(&v4.octets());
                &buf[..4]
            }
            IpAddr::V6(v6) => {
                buf = v6.octets();
                &buf
            }
        };
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        &self.slots[(hash % self.slots.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_burst_is_refused_and_another_is_not() {
        let f = Failures::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..AUTH_FAILURE_BURST {
            assert_eq!(f.failed(a, 0), Ok(()));
        }
        assert!(f.failed(a, 0).is_err());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert!(f.failed(mapped, 0).is_err(), "the same address over IPv6");
        assert_eq!(f.failed(b, 0), Ok(()));
    }
}
