//! Record framing: staging on the connection's side (through
//! [`super::Submission::stage`], so no caller outside the WAL knows this
//! format), framing in the WAL writer, decoding (with resynchronisation
//! past damage) on the recovery and flusher side. The byte layout is
//! documented in [`crate::wal`].

use super::Id;
use crate::limits::{
    EVENT_ID_BYTES_MAX, MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX, RECORD_BYTES_MAX,
};
use crate::usage::Usage;

/// `len: u32` then `crc: u32`.
pub const FRAME_HEADER_BYTES: usize = 8;
/// id, receivedAt and timestamp, 8 bytes each.
const PAYLOAD_FIXED_BYTES: usize = 24;
/// The u8 string lengths of a version-2 record: patientId, medication,
/// eventId.
const PAYLOAD_LEN_BYTES: usize = 3;
/// The smallest payload of any format: a version-1 record (two lengths, no
/// eventId) with both strings one byte long.
pub const PAYLOAD_BYTES_MIN: usize = PAYLOAD_FIXED_BYTES + 2 + 2;
/// The smallest whole frame.
pub const FRAME_BYTES_MIN: usize = FRAME_HEADER_BYTES + PAYLOAD_BYTES_MIN;
/// The largest payload.
pub const PAYLOAD_BYTES_MAX: usize = RECORD_BYTES_MAX - FRAME_HEADER_BYTES;
/// A staged record is the payload without its id (the writer assigns ids).
const STAGED_FIXED_BYTES: usize = PAYLOAD_FIXED_BYTES - 8;

/// The record layout of a segment, from its header's format version. Only
/// version 1 lacks the eventId; a segment holds records of one format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// patientId and medication.
    V1,
    /// patientId, medication, and an eventId (length 0: none).
    V2,
}

impl Format {
    /// What new segments are written in.
    pub const CURRENT: Format = Format::V2;

    /// The format of a header's version field; `None` for one this binary
    /// does not know.
    pub fn from_version(version: u32) -> Option<Format> {
        match version {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            _ => None,
        }
    }

    /// The number a segment header stores for this format.
    pub fn version(self) -> u32 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
        }
    }
}

/// One decoded record, borrowing the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The id returned in the 201 and used as MongoDB's `_id`.
    pub id: Id,
    /// When busyapi accepted the request, UTC epoch milliseconds.
    pub received_at_ms: i64,
    /// The event's instant, UTC epoch milliseconds.
    pub timestamp_ms: i64,
    /// `patientId` in stored form: a number as its decimal digits.
    pub patient_id: &'a str,
    /// The medication name, as sent.
    pub medication: &'a str,
    /// The device's id of the event, if it sent one (never in a version-1
    /// record).
    pub event_id: Option<&'a str>,
}

/// Appends a usage to `out` in staged form: the payload without its id.
/// The strings were bounded by ingest; this asserts it, since a longer one
/// would not fit its u8 length.
pub fn stage(usage: &Usage<'_>, received_at_ms: i64, out: &mut Vec<u8>) {
    let mut scratch = itoa::Buffer::new();
    let pid = usage.patient_id.as_bytes(&mut scratch);
    let med = usage.medication.as_bytes();
    assert!(
        !pid.is_empty() && pid.len() <= PATIENT_ID_BYTES_MAX,
        "ingest bounds patientId"
    );
    assert!(
        !med.is_empty() && med.len() <= MEDICATION_BYTES_MAX,
        "ingest bounds medication"
    );
    let event = usage.event_id.unwrap_or_default().as_bytes();
    assert!(
        event.len() <= EVENT_ID_BYTES_MAX && (usage.event_id.is_none() || !event.is_empty()),
        "ingest bounds eventId"
    );
    out.extend_from_slice(&received_at_ms.to_le_bytes());
    out.extend_from_slice(&usage.timestamp_ms.to_le_bytes());
    out.push(pid.len() as u8);
    out.extend_from_slice(pid);
    out.push(med.len() as u8);
    out.extend_from_slice(med);
    out.push(event.len() as u8);
    out.extend_from_slice(event);
}

/// The length of the staged record at the start of `staged` (always the
/// current format).
fn staged_len(staged: &[u8]) -> usize {
    let pid_len = staged[STAGED_FIXED_BYTES] as usize;
    let med_len = staged[STAGED_FIXED_BYTES + 1 + pid_len] as usize;
    let event_len = staged[STAGED_FIXED_BYTES + 2 + pid_len + med_len] as usize;
    STAGED_FIXED_BYTES + PAYLOAD_LEN_BYTES + pid_len + med_len + event_len
}

/// Frames every staged record in `staged`, numbering them from `first_id`,
/// onto `out`. Returns how many records were framed.
pub fn frame_staged(staged: &[u8], first_id: Id, out: &mut Vec<u8>) -> u64 {
    let (mut pos, mut framed) = (0, 0);
    while pos < staged.len() {
        let n = staged_len(&staged[pos..]);
        frame_one(first_id.plus(framed), &staged[pos..pos + n], out);
        pos += n;
        framed += 1;
    }
    framed
}

fn frame_one(id: Id, staged: &[u8], out: &mut Vec<u8>) {
    let payload_len = 8 + staged.len();
    debug_assert!((PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX).contains(&payload_len));
    let len_bytes = (payload_len as u32).to_le_bytes();
    let id_bytes = id.raw().to_le_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len_bytes);
    crc.update(&id_bytes);
    crc.update(staged);
    out.extend_from_slice(&len_bytes);
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&id_bytes);
    out.extend_from_slice(staged);
}

/// What lies at an offset of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole, intact record and the bytes it occupies.
    Record(Record<'a>, usize),
    /// Fewer bytes than the frame needs: the end of what was written, or a
    /// tail torn by a crash, or a damaged length. The caller tells them apart
    /// with [`resync`].
    Incomplete,
    /// Bytes that are not a valid frame: zeros, or a bad length, layout or CRC.
    Invalid,
}

/// Decodes the frame at the start of `buf`, a segment's of `format`.
pub fn decode(buf: &[u8], format: Format) -> Decoded<'_> {
    if buf.len() < FRAME_HEADER_BYTES {
        return Decoded::Incomplete;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if !(PAYLOAD_BYTES_MIN..=PAYLOAD_BYTES_MAX).contains(&len) {
        return Decoded::Invalid;
    }
    let Some(payload) = buf.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Decoded::Incomplete;
    };
    let Some(record) = parse_payload(payload, format) else {
        return Decoded::Invalid;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&buf[0..4]);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return Decoded::Invalid;
    }
    Decoded::Record(record, FRAME_HEADER_BYTES + len)
}

/// Checks the payload's inner layout (cheap, before the CRC) and splits it.
fn parse_payload(p: &[u8], format: Format) -> Option<Record<'_>> {
    let word = |at: usize| i64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"));
    let pid_len = *p.get(PAYLOAD_FIXED_BYTES)? as usize;
    let med_at = PAYLOAD_FIXED_BYTES + 1 + pid_len;
    let med_len = *p.get(med_at)? as usize;
    let med_end = med_at + 1 + med_len;
    let event_id = match format {
        Format::V1 => None,
        Format::V2 => {
            let event_len = *p.get(med_end)? as usize;
            let event = p.get(med_end + 1..med_end + 1 + event_len)?;
            (event_len > 0).then_some(event)
        }
    };
    let end = med_end + event_id.map_or(0, |e| e.len()) + usize::from(format == Format::V2);
    if pid_len == 0 || med_len == 0 || end != p.len() {
        return None;
    }
    Some(Record {
        id: Id::from_raw(word(0) as u64),
        received_at_ms: word(8),
        timestamp_ms: word(16),
        patient_id: std::str::from_utf8(&p[PAYLOAD_FIXED_BYTES + 1..med_at]).ok()?,
        medication: std::str::from_utf8(&p[med_at + 1..med_end]).ok()?,
        event_id: event_id.map(std::str::from_utf8).transpose().ok()?,
    })
}

/// After damage at the start of `buf`, the offset of the next intact record
/// whose id is above `after_id`, if any. Ids only grow along the log, so a
/// stale or accidental match with a lower id is not taken.
pub fn resync(buf: &[u8], after_id: Id, format: Format) -> Option<usize> {
    (1..buf.len())
        .find(|&at| matches!(decode(&buf[at..], format), Decoded::Record(r, _) if r.id > after_id))
}

#[cfg(test)]
mod tests {
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
        while let Decoded::Record(r, n) = decode(buf, Format::V2) {
            ids.push(r.id.raw());
            buf = &buf[n..];
        }
        ids
    }

    #[test]
    fn a_framed_record_decodes_to_what_was_staged() {
        let out = framed(1, 77);
        match decode(&out, Format::V2) {
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
        assert!(matches!(decode(&f, Format::V2), Decoded::Record(r, _) if r.patient_id == "100"));
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
                decode(&out[..cut], Format::V2),
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
                    !matches!(decode(&bad, Format::V2), Decoded::Record(..)),
                    "flip {byte}:{bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0u8; 64], Format::V2), Decoded::Invalid);
        assert_eq!(decode(&[], Format::V2), Decoded::Incomplete);
        assert_eq!(resync(&[0u8; 4096], Id::from_raw(0), Format::V2), None);
    }

    #[test]
    fn resync_finds_the_next_record_after_damage() {
        let mut out = framed(3, 1);
        out[12] ^= 0xff; // inside the first record's payload
        assert_eq!(decode(&out, Format::V2), Decoded::Invalid);
        let at = resync(&out, Id::from_raw(0), Format::V2).expect("second record is intact");
        assert_eq!(decode_all(&out[at..]), vec![2, 3]);
        assert_eq!(
            resync(&out, Id::from_raw(3), Format::V2),
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
            let Decoded::Record(r, n) = decode(&f, Format::V2) else {
                panic!("{event_id:?} did not decode");
            };
            assert_eq!(
                (r.event_id, r.patient_id, r.medication),
                (event_id, "p", "m")
            );
            assert_eq!((r.id.raw(), r.timestamp_ms, r.received_at_ms), (8, 3, 4));
            assert!(
                matches!(decode(&f[n..], Format::V2), Decoded::Record(r, _) if r.id.raw() == 9)
            );
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
        let mut payload = id.to_le_bytes().to_vec();
        payload.extend_from_slice(&7i64.to_le_bytes());
        payload.extend_from_slice(&11i64.to_le_bytes());
        payload.push(pid.len() as u8);
        payload.extend_from_slice(pid.as_bytes());
        payload.push(med.len() as u8);
        payload.extend_from_slice(med.as_bytes());
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
        assert_eq!(decode(&framed(1, 5), Format::V1), Decoded::Invalid);
    }

    #[test]
    fn every_single_bit_flip_in_an_event_id_record_is_detected() {
        let mut out = Vec::new();
        frame_staged(&staged_event(Some("evt-1")), Id::from_raw(1), &mut out);
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                for format in [Format::V1, Format::V2] {
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
        for f in [Format::V1, Format::V2] {
            assert_eq!(Format::from_version(f.version()), Some(f));
        }
        assert_eq!(Format::from_version(0), None);
        assert_eq!(Format::from_version(3), None);
    }
}
