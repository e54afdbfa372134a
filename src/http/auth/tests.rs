//! The Bearer check, key ids, rate limits and the failure budget, on
//! `Auth` itself.
use super::*;
use crate::limits::KEY_ID_BYTES_MAX;

fn auth(keys: &[(&str, &str)]) -> Auth {
    let entries = keys
        .iter()
        .map(|(id, key)| Entry {
            id: KeyId::new(id).expect("id"),
            digest: digest_hex(&digest_of(key.as_bytes())).expect("hex"),
            limit: None,
        })
        .collect();
    Auth::new(AuthMode::Required, None, entries, LIMIT)
}

const LIMIT: KeyLimit = KeyLimit {
    rate_per_s: 1,
    burst: 2,
};

#[test]
fn a_known_bearer_key_proves_its_id_and_anything_else_is_refused() {
    let a = auth(&[("one", "key-1"), ("two", "key-2")]);
    let mut v = a.view();
    let check = |v: &mut View, h: Option<&[u8]>| a.check(v, h, || None);
    assert_eq!(
        check(&mut v, Some(b"Bearer key-2")).map(|k| k.map(|k| k.id.to_string())),
        Ok(Some("two".into()))
    );
    assert!(check(&mut v, Some(b"bearer   key-1")).is_ok());
    assert_eq!(check(&mut v, None), Err(AuthError::Missing));
    assert_eq!(check(&mut v, Some(b"")), Err(AuthError::Missing));
    assert_eq!(
        check(&mut v, Some(b"Basic a2V5LTE=")),
        Err(AuthError::WrongScheme)
    );
    assert_eq!(
        check(&mut v, Some(b"Bearerkey-1")),
        Err(AuthError::WrongScheme)
    );
    for bad in [&b"Bearer key-3"[..], b"Bearer ", b"Bearer key-1x"] {
        assert_eq!(check(&mut v, Some(bad)), Err(AuthError::UnknownKey));
    }
    let long = [b"Bearer ".as_slice(), &[b'k'; API_KEY_BYTES_MAX + 1]].concat();
    assert_eq!(check(&mut v, Some(&long)), Err(AuthError::UnknownKey));
}

#[test]
fn with_auth_off_every_request_passes_without_a_key_id() {
    let a = Auth::new(AuthMode::Off, None, Vec::new(), LIMIT);
    assert_eq!(a.check(&mut a.view(), None, || None), Ok(None));
}

#[test]
fn a_key_past_its_burst_is_rate_limited_and_counted() {
    let a = auth(&[("one", "key-1"), ("two", "key-2")]);
    let mut v = a.view();
    let one = a
        .check(&mut v, Some(b"Bearer key-1"), || None)
        .expect("valid")
        .expect("a key");
    assert_eq!(a.admit(&v, &one, 2), Ok(()));
    assert!(matches!(
        a.admit(&v, &one, 1),
        Err(AuthError::RateLimited {
            retry_after_secs: 1
        })
    ));
    let counts = a.counts();
    assert_eq!((counts[0].requests, counts[0].limited), (2, 1));
    assert_eq!((counts[1].requests, counts[1].limited), (0, 0));
}

#[test]
fn an_address_that_keeps_failing_is_told_to_wait_and_a_valid_key_from_it_still_passes() {
    let a = auth(&[("one", "key-1")]);
    let mut v = a.view();
    let peer = Some("192.0.2.9".parse().expect("ip"));
    let mut refusals = Vec::new();
    for _ in 0..=crate::limits::AUTH_FAILURE_BURST {
        refusals.push(
            a.check(&mut v, Some(b"Bearer guess"), || peer)
                .expect_err("no key"),
        );
    }
    assert!(
        refusals[..refusals.len() - 1]
            .iter()
            .all(|e| *e == AuthError::UnknownKey)
    );
    assert!(matches!(
        refusals.last(),
        Some(AuthError::TooManyFailures { .. })
    ));
    assert!(a.check(&mut v, Some(b"Bearer key-1"), || peer).is_ok());
}

#[test]
fn key_ids_take_only_their_charset_within_their_bound() {
    assert!(KeyId::new("app-1.fleet_B").is_some());
    for bad in ["", "a b", "é", "a/b", &"x".repeat(KEY_ID_BYTES_MAX + 1)] {
        assert!(KeyId::new(bad).is_none(), "{bad:?}");
    }
    assert!(KeyId::new(&"x".repeat(KEY_ID_BYTES_MAX)).is_some());
    assert!(KeyId::rule().contains(&KEY_ID_BYTES_MAX.to_string()));
}

#[test]
fn a_digest_is_sha_256_in_hex() {
    assert_eq!(
        digest_of(b"test"),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}
