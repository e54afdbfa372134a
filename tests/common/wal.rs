//! Segment files read and written behind busyapi's back, with its own
//! decoder: what recovery will find in them, and the damage a test does.

use std::fs;
use std::ops::Range;
use std::path::Path;

use busyapi::wal::Id;
use busyapi::wal::record::{self, Decoded, Format, Record};
use busyapi::wal::segment::{self, HEADER_BYTES};

/// Every intact record of a segment file as (byte range, `key` of the
/// record), found the way recovery finds them: decode, and past damage
/// resynchronise on the next record with a higher id. Records are decoded
/// in the format the header's version field names (the current one if it
/// names none).
pub fn record_spans<T>(bytes: &[u8], key: impl Fn(&Record<'_>) -> T) -> Vec<(Range<usize>, T)> {
    let version = bytes
        .get(8..12)
        .map_or(0, |v| u32::from_le_bytes(v.try_into().expect("4 bytes")));
    let format = Format::from_version(version).unwrap_or(Format::CURRENT);
    let mut spans = Vec::new();
    let (mut pos, mut last) = (HEADER_BYTES as usize, Id::MIN);
    while pos < bytes.len() {
        match record::decode(&bytes[pos..], format) {
            Decoded::Record(r, n) if r.id > last => {
                spans.push((pos..pos + n, key(&r)));
                last = r.id;
                pos += n;
            }
            _ => match record::resync(&bytes[pos..], last, format) {
                Some(skip) => pos += skip,
                None => break,
            },
        }
    }
    spans
}

/// The whole file of segment `no`, preallocated bytes included.
pub fn segment_bytes(dir: &Path, no: u64) -> Vec<u8> {
    fs::read(segment::path_of(dir, no)).expect("read a segment")
}

pub fn write_segment(dir: &Path, no: u64, bytes: &[u8]) {
    fs::write(segment::path_of(dir, no), bytes).expect("rewrite a segment");
}
