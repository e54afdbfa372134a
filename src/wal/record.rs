//! Record framing: staging on the connection's side (through
//! [`super::Submission::stage`], so no caller outside the WAL knows this
//! format), framing in the WAL writer, decoding (with resynchronisation
//! past damage) on the recovery and flusher side. The byte layout is
//! documented in [`crate::wal`].

use super::Id;
use crate::limits::{
    EVENT_ID_BYTES_MAX, KEY_ID_BYTES_MAX, MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX,
    RECORD_BYTES_MAX,
};
use crate::usage::Usage;

/// `len: u32` then `crc: u32`.
pub const FRAME_HEADER_BYTES: usize = 8;
/// id, receivedAt and timestamp, 8 bytes each.
const PAYLOAD_FIXED_BYTES: usize = 24;
/// The u8 string lengths of a version-3 record: patientId, medication,
/// eventId, source.
const PAYLOAD_LEN_BYTES: usize = 4;
/// The smallest payload of any format: a version-1 record (two lengths, no
/// eventId) with both strings one byte long.
pub const PAYLOAD_BYTES_MIN: usize = PAYLOAD_FIXED_BYTES + 2 + 2;
/// The smallest whole frame.
pub const FRAME_BYTES_MIN: usize = FRAME_HEADER_BYTES + PAYLOAD_BYTES_MIN;
/// The largest payload.
pub const PAYLOAD_BYTES_MAX: usize = RECORD_BYTES_MAX - FRAME_HEADER_BYTES;
/// A staged record is the payload without its id (the writer assigns ids).
const STAGED_FIXED_BYTES: usize = PAYLOAD_FIXED_BYTES - 8;

/// The record layout of a segment, from its header's format version. Each
/// version adds one string at the end; a segment holds records of one
/// format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// patientId and medication.
    V1,
    /// patientId, medication, and an eventId (length 0: none).
    V2,
    /// As version 2, then the source: the id of the API key that wrote
    /// the usage (length 0: none, auth was off).
    V3,
}

impl Format {
    /// What new segments are written in.
    pub const CURRENT: Format = Format::V3;
    /// Every format this binary reads, newest first. A record of one
    /// format never decodes in another: each adds a length byte at the
    /// end, and a payload's length is exact.
    pub const ALL: [Format; 3] = [Format::V3, Format::V2, Format::V1];

    /// The format of a header's version field; `None` for one this binary
    /// does not know.
    pub fn from_version(version: u32) -> Option<Format> {
        match version {
            1 => Some(Format::V1),
            2 => Some(Format::V2),
            3 => Some(Format::V3),
            _ => None,
        }
    }

    /// The number a segment header stores for this format.
    pub fn version(self) -> u32 {
        match self {
            Format::V1 => 1,
            Format::V2 => 2,
            Format::V3 => 3,
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
    /// The id of the API key that wrote it, if auth was on (only in a
    /// version-3 record).
    pub source: Option<&'a str>,
}

/// Appends a usage of no API key (auth off) to `out` in staged form; see
/// [`stage_from`].
pub fn stage(usage: &Usage<'_>, received_at_ms: i64, out: &mut Vec<u8>) {
    stage_from(usage, None, received_at_ms, out);
}

/// Appends a usage written with the API key `source` to `out` in staged
/// form: the payload without its id. The strings were bounded by ingest
/// and the key id by its type; this asserts it, since a longer one would
/// not fit its u8 length.
pub fn stage_from(usage: &Usage<'_>, source: Option<&str>, received_at_ms: i64, out: &mut Vec<u8>) {
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
    let source = source.unwrap_or_default().as_bytes();
    assert!(source.len() <= KEY_ID_BYTES_MAX, "KeyId bounds a source");
    out.extend_from_slice(&received_at_ms.to_le_bytes());
    out.extend_from_slice(&usage.timestamp_ms.to_le_bytes());
    out.push(pid.len() as u8);
    out.extend_from_slice(pid);
    out.push(med.len() as u8);
    out.extend_from_slice(med);
    out.push(event.len() as u8);
    out.extend_from_slice(event);
    out.push(source.len() as u8);
    out.extend_from_slice(source);
}

/// The length of the staged record at the start of `staged` (always the
/// current format).
fn staged_len(staged: &[u8]) -> usize {
    let pid_len = staged[STAGED_FIXED_BYTES] as usize;
    let med_len = staged[STAGED_FIXED_BYTES + 1 + pid_len] as usize;
    let event_len = staged[STAGED_FIXED_BYTES + 2 + pid_len + med_len] as usize;
    let source_len = staged[STAGED_FIXED_BYTES + 3 + pid_len + med_len + event_len] as usize;
    STAGED_FIXED_BYTES + PAYLOAD_LEN_BYTES + pid_len + med_len + event_len + source_len
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
    // Each later string: a u8 length (0 for none), then its bytes.
    let optional = |at: usize| -> Option<(Option<&[u8]>, usize)> {
        let len = *p.get(at)? as usize;
        let bytes = p.get(at + 1..at + 1 + len)?;
        Some(((len > 0).then_some(bytes), at + 1 + len))
    };
    let (event_id, event_end) = match format {
        Format::V1 => (None, med_end),
        Format::V2 | Format::V3 => optional(med_end)?,
    };
    let (source, end) = match format {
        Format::V1 | Format::V2 => (None, event_end),
        Format::V3 => optional(event_end)?,
    };
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
        source: source.map(std::str::from_utf8).transpose().ok()?,
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
mod tests;
