//! Framing round trips, damage detection, and every older format.
use super::*;
use crate::usage::PatientId;

fn staged(pid: &str, med: &str, ts: i64) -> Vec<u8> {
    let mut out = Vec::new();
    let usage = Usage {
        patient_id: PatientId::Text(pid),
        timestamp_ms: ts,
        medication: med,
        event_id: None,
    };
    stage(&usage, 1_700_000_000_000, &mut out);
    out
}

fn framed(n: u64, first_id: u64) -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..n {
        s.extend(staged(&format!("p{i}"), "Albuterol", i as i64));
    }
    let mut out = Vec::new();
    assert_eq!(frame_staged(&s, Id::from_raw(first_id), &mut out), n);
    out
}

fn decode_all(mut buf: &[u8]) -> Vec<u64> {
    let mut ids = Vec::new();
    while let Decoded::Record(r, n) = decode(buf, Format::V3) {
        ids.push(r.id.raw());
        buf = &buf[n..];
    }
    ids
}

#[test]
fn a_framed_record_decodes_to_what_was_staged() {
    let out = framed(1, 77);
    match decode(&out, Format::V3) {
        Decoded::Record(r, n) => {
            assert_eq!(n, out.len());
            assert_eq!(r.id, Id::from_raw(77));
            assert_eq!(r.patient_id, "p0");
            assert_eq!(r.medication, "Albuterol");
            assert_eq!(r.received_at_ms, 1_700_000_000_000);
            assert_eq!(r.timestamp_ms, 0);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn numeric_patient_ids_are_staged_as_strings() {
    let mut out = Vec::new();
    let usage = Usage {
        patient_id: PatientId::Number(100),
        timestamp_ms: 5,
        medication: "m",
        event_id: None,
    };
    stage(&usage, 9, &mut out);
    let mut f = Vec::new();
    frame_staged(&out, Id::from_raw(1), &mut f);
    assert!(matches!(decode(&f, Format::V3), Decoded::Record(r, _) if r.patient_id == "100"));
}

#[test]
fn consecutive_frames_carry_consecutive_ids() {
    assert_eq!(decode_all(&framed(5, 10)), vec![10, 11, 12, 13, 14]);
}

#[test]
fn every_truncation_is_incomplete_never_a_record() {
    let out = framed(1, 1);
    for cut in 0..out.len() {
        assert_eq!(
            decode(&out[..cut], Format::V3),
            Decoded::Incomplete,
            "cut at {cut}"
        );
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let out = framed(1, 1);
    for byte in 0..out.len() {
        for bit in 0..8 {
            let mut bad = out.clone();
            bad[byte] ^= 1 << bit;
            assert!(
                !matches!(decode(&bad, Format::V3), Decoded::Record(..)),
                "flip {byte}:{bit} went unnoticed"
            );
        }
    }
}

#[test]
fn zeros_are_not_a_record() {
    assert_eq!(decode(&[0u8; 64], Format::V3), Decoded::Invalid);
    assert_eq!(decode(&[], Format::V3), Decoded::Incomplete);
    assert_eq!(resync(&[0u8; 4096], Id::from_raw(0), Format::V3), None);
}

#[test]
fn resync_finds_the_next_record_after_damage() {
    let mut out = framed(3, 1);
    out[12] ^= 0xff; // inside the first record's payload
    assert_eq!(decode(&out, Format::V3), Decoded::Invalid);
    let at = resync(&out, Id::from_raw(0), Format::V3).expect("second record is intact");
    assert_eq!(decode_all(&out[at..]), vec![2, 3]);
    assert_eq!(
        resync(&out, Id::from_raw(3), Format::V3),
        None,
        "no record above id 3"
    );
}

#[test]
fn an_event_id_round_trips_and_its_absence_too() {
    for event_id in [Some("e"), Some(&*"x".repeat(EVENT_ID_BYTES_MAX)), None] {
        let mut out = staged_event(event_id);
        out.extend(staged_event(event_id));
        let mut f = Vec::new();
        assert_eq!(frame_staged(&out, Id::from_raw(8), &mut f), 2);
        let Decoded::Record(r, n) = decode(&f, Format::V3) else {
            panic!("{event_id:?} did not decode");
        };
        assert_eq!(
            (r.event_id, r.patient_id, r.medication),
            (event_id, "p", "m")
        );
        assert_eq!((r.id.raw(), r.timestamp_ms, r.received_at_ms), (8, 3, 4));
        assert!(matches!(decode(&f[n..], Format::V3), Decoded::Record(r, _) if r.id.raw() == 9));
    }
}

/// One usage of patient `p`, medication `m`, timestamp 3, received at 4.
fn staged_event(event_id: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    let usage = Usage {
        patient_id: PatientId::Text("p"),
        timestamp_ms: 3,
        medication: "m",
        event_id,
    };
    stage(&usage, 4, &mut out);
    out
}

/// A version-1 frame, as the binary before eventIds wrote it.
fn framed_v1(id: u64, pid: &str, med: &str) -> Vec<u8> {
    framed_old(id, &[pid, med])
}

/// A version-2 frame, as the binary before API keys wrote it.
fn framed_v2(id: u64, event_id: Option<&str>) -> Vec<u8> {
    framed_old(id, &["p", "m", event_id.unwrap_or_default()])
}

/// A frame of an older format, written by hand: id, receivedAt 7,
/// timestamp 11, then each string with its u8 length.
fn framed_old(id: u64, strings: &[&str]) -> Vec<u8> {
    let mut payload = id.to_le_bytes().to_vec();
    payload.extend_from_slice(&7i64.to_le_bytes());
    payload.extend_from_slice(&11i64.to_le_bytes());
    for s in strings {
        payload.push(s.len() as u8);
        payload.extend_from_slice(s.as_bytes());
    }
    let len_bytes = (payload.len() as u32).to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&payload);
    let mut out = len_bytes.to_vec();
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

#[test]
fn a_version_1_record_decodes_with_no_event_id() {
    let f = framed_v1(5, "100", "Albuterol");
    match decode(&f, Format::V1) {
        Decoded::Record(r, n) => {
            assert_eq!(n, f.len());
            assert_eq!((r.id.raw(), r.received_at_ms, r.timestamp_ms), (5, 7, 11));
            assert_eq!(
                (r.patient_id, r.medication, r.event_id),
                ("100", "Albuterol", None)
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_record_read_in_the_other_format_is_not_a_record() {
    assert_eq!(
        decode(&framed_v1(5, "100", "Albuterol"), Format::V2),
        Decoded::Invalid
    );
    assert_eq!(
        decode(&framed_v1(5, "100", "Albuterol"), Format::V3),
        Decoded::Invalid
    );
    assert_eq!(decode(&framed(1, 5), Format::V1), Decoded::Invalid);
    assert_eq!(decode(&framed(1, 5), Format::V2), Decoded::Invalid);
    assert_eq!(
        decode(&framed_v2(5, Some("e")), Format::V3),
        Decoded::Invalid
    );
}

#[test]
fn every_single_bit_flip_in_an_event_id_record_is_detected() {
    let mut out = Vec::new();
    frame_staged(&staged_event(Some("evt-1")), Id::from_raw(1), &mut out);
    for byte in 0..out.len() {
        for bit in 0..8 {
            let mut bad = out.clone();
            bad[byte] ^= 1 << bit;
            for format in [Format::V1, Format::V2, Format::V3] {
                assert!(
                    !matches!(decode(&bad, format), Decoded::Record(..)),
                    "flip {byte}:{bit} went unnoticed"
                );
            }
        }
    }
}

#[test]
fn format_versions_round_trip_and_unknown_ones_are_refused() {
    for f in [Format::V1, Format::V2, Format::V3] {
        assert_eq!(Format::from_version(f.version()), Some(f));
    }
    assert_eq!(Format::from_version(0), None);
    assert_eq!(Format::from_version(4), None);
}

#[test]
fn a_version_2_record_decodes_with_its_event_id_and_no_source() {
    for event_id in [Some("evt"), None] {
        let f = framed_v2(6, event_id);
        let Decoded::Record(r, n) = decode(&f, Format::V2) else {
            panic!("{event_id:?} did not decode");
        };
        assert_eq!(n, f.len());
        assert_eq!((r.id.raw(), r.event_id, r.source), (6, event_id, None));
    }
}

#[test]
fn a_source_round_trips_and_its_absence_too() {
    let longest = "k".repeat(KEY_ID_BYTES_MAX);
    for source in [Some("app-1"), Some(longest.as_str()), None] {
        let usage = Usage {
            patient_id: PatientId::Text("p"),
            timestamp_ms: 3,
            medication: "m",
            event_id: Some("e"),
        };
        let mut staged = Vec::new();
        stage_from(&usage, source, 4, &mut staged);
        stage_from(&usage, source, 4, &mut staged);
        let mut f = Vec::new();
        assert_eq!(frame_staged(&staged, Id::from_raw(8), &mut f), 2);
        let Decoded::Record(r, n) = decode(&f, Format::V3) else {
            panic!("{source:?} did not decode");
        };
        assert_eq!((r.source, r.event_id), (source, Some("e")));
        assert!(matches!(decode(&f[n..], Format::V3), Decoded::Record(r, _) if r.source == source));
        assert!(f.len() <= 2 * RECORD_BYTES_MAX);
    }
}
