//! Damage done to the closed log the way crashes and disks do it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::Path;

use busyapi::wal::segment::{self, HEADER_BYTES};
use busyapi::wal::{Id, record};

use super::NODE_ID;
use super::common::{record_spans, segment_bytes, write_segment};
use super::harness::{Wal, usage};
use super::model::{Model, Op, Rec, Tail};

/// The intact records of a segment file as (byte range, patient id), found
/// the way recovery finds them.
fn patient_spans(bytes: &[u8]) -> Vec<(Range<usize>, String)> {
    record_spans(bytes, |r| r.patient_id.to_owned())
}

fn segments(dir: &Path) -> Vec<(u64, Vec<u8>)> {
    segment::list(dir)
        .expect("list segments")
        .into_iter()
        .map(|no| (no, segment_bytes(dir, no)))
        .collect()
}

/// The id the writer would have given its next record.
fn next_id(wal: &Wal) -> Id {
    let last = wal.shared.last_id();
    if last != Id::MIN {
        return last.plus(1);
    }
    let (_, active) = segments(&wal.dir).pop().expect("the active segment");
    let base_seq = u64::from_le_bytes(active[24..32].try_into().expect("8 bytes"));
    Id::new(NODE_ID, base_seq)
}

/// A commit of `records` records torn after `keep` bytes (modulo its
/// length). Returns the records it wrote whole, and the patients of those it
/// did not.
pub fn crash(
    wal: &Wal,
    model: &mut Model,
    records: u32,
    keep: usize,
    tail: &Tail,
) -> (Vec<Rec>, Vec<String>) {
    let first = next_id(wal);
    let mut framed = Vec::new();
    let mut recs = Vec::new();
    let mut ends = Vec::new();
    for i in 0..u64::from(records) {
        let patient = model.patient("c");
        let mut staged = Vec::new();
        record::stage(&usage(&patient), 1, &mut staged);
        record::frame_staged(&staged, first.plus(i), &mut framed);
        ends.push(framed.len());
        recs.push(Rec {
            id: first.plus(i),
            patient,
        });
    }
    let keep = keep % (framed.len() + 1);
    let mut torn = framed[..keep].to_vec();
    match tail {
        Tail::Nothing => {}
        Tail::Zeros(n) => torn.resize(torn.len() + n, 0),
        Tail::Garbage(g) => torn.extend_from_slice(g),
    }
    let (no, _) = segments(&wal.dir).pop().expect("the active segment");
    OpenOptions::new()
        .append(true)
        .open(segment::path_of(&wal.dir, no))
        .and_then(|mut f| f.write_all(&torn))
        .expect("append the torn commit");
    // A record is written whole when its bytes are on disk as framed: cut
    // off by `keep`, it can still be whole when the bytes it lost are zeros
    // and a zero tail puts them back (a version-2 record without an
    // eventId ends in its zero length byte). Nothing can tell such a record
    // from one whose write completed, so recovery rightly keeps it.
    let whole = ends
        .iter()
        .take_while(|&&end| torn.get(..end) == Some(&framed[..end]))
        .count();
    let lost = recs.split_off(whole);
    (recs, lost.into_iter().map(|r| r.patient).collect())
}

/// Applies a damaging op to the closed log; returns the patients whose
/// records it destroyed.
pub fn damage(dir: &Path, op: &Op) -> Vec<String> {
    let segs = segments(dir);
    match *op {
        Op::FlipRecord { pick, byte, bit } => {
            let all: Vec<_> = segs
                .iter()
                .flat_map(|(no, bytes)| patient_spans(bytes).into_iter().map(move |s| (*no, s)))
                .collect();
            let Some((no, (span, patient))) = all.get(pick % all.len().max(1)).cloned() else {
                return Vec::new();
            };
            let (_, bytes) = segs.iter().find(|(n, _)| *n == no).expect("segment");
            let mut bytes = bytes.clone();
            bytes[span.start + byte % span.len()] ^= 1 << bit;
            write_segment(dir, no, &bytes);
            vec![patient]
        }
        Op::FlipHeader { pick, byte, bit } => {
            let (no, bytes) = &segs[pick % segs.len()];
            let mut bytes = bytes.clone();
            bytes[byte] ^= 1 << bit;
            write_segment(dir, *no, &bytes);
            // A damaged header is rebuilt and the records behind it kept;
            // a flip in the padding after the CRC is not even damage.
            Vec::new()
        }
        Op::Cut { pick, keep } => {
            let (no, bytes) = &segs[pick % segs.len()];
            let keep = keep % (bytes.len() + 1);
            write_segment(dir, *no, &bytes[..keep]);
            patient_spans(bytes)
                .into_iter()
                .filter(|(span, _)| keep < HEADER_BYTES as usize || span.end > keep)
                .map(|(_, p)| p)
                .collect()
        }
        _ => unreachable!("not a damaging op"),
    }
}

pub fn drop_delivered(dir: &Path, model: &Model) {
    for (no, bytes) in segments(dir) {
        if patient_spans(&bytes)
            .iter()
            .all(|(_, p)| model.delivered.contains(p))
        {
            fs::remove_file(segment::path_of(dir, no)).expect("delete a segment");
        }
    }
}
