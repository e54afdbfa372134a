//! WAL segment recovery (`wal::segment::recover`), run for real on files in
//! a scratch directory (on tmpfs where there is one, so its fsyncs cost
//! little), two ways, chosen by the first byte:
//!
//! - built: a segment written by busyapi's own code (`segment::create`,
//!   `record::stage` and `frame_staged`) from records the fuzzer chooses,
//!   then damaged as the fuzzer chooses (bit flips, overwrites, zeroed
//!   runs, truncation, appended bytes). Every record that lies wholly
//!   before the first changed byte must be recovered, unchanged; an
//!   undamaged segment must be recovered whole.
//! - raw: arbitrary bytes as a segment file.
//!
//! Either way recovery must not panic or fail, must leave the file at the
//! end it reports, must have copied every non-zero byte it cut or skipped
//! into the quarantine directory, and must find the same records again
//! when run a second time on what it left.
#![no_main]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use busyapi::ingest::{PatientId, Usage};
use busyapi::limits::{
    EVENT_ID_BYTES_MAX, MEDICATION_BYTES_MAX, NODE_ID_MAX, PATIENT_ID_BYTES_MAX, SEQ_MAX,
};
use busyapi::wal::Id;
use busyapi::wal::record::{self, Decoded, Format};
use busyapi::wal::segment::{self, HEADER_BYTES, Header, QUARANTINE_DIR, Scan};
use libfuzzer_sys::fuzz_target;

/// Records per built segment: enough for damage to land between, inside
/// and across records, few enough to keep runs fast.
const RECORDS_MAX: usize = 64;
/// Damage operations per built segment.
const DAMAGE_MAX: usize = 8;

/// A per-process scratch directory, emptied before each run.
fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        base.join(format!("busyapi-fuzz-wal-{}", std::process::id()))
    })
}

fn fresh_dir() -> &'static Path {
    let dir = scratch_dir();
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir.join(QUARANTINE_DIR)).expect("create the scratch directory");
    dir
}

/// A string field cut to `max_bytes` on a char boundary, never empty.
fn field(s: &str, max_bytes: usize) -> String {
    let mut out = String::new();
    for c in s.chars() {
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    if out.is_empty() { "x".into() } else { out }
}

#[derive(Arbitrary, Debug)]
struct Rec {
    patient_id: String,
    medication: String,
    event_id: Option<String>,
    timestamp_ms: i64,
    received_at_ms: i64,
}

#[derive(Arbitrary, Debug)]
enum Damage {
    Flip { at: u32, mask: u8 },
    Overwrite { at: u32, bytes: Vec<u8> },
    Zero { at: u32, len: u16 },
    Truncate { at: u32 },
    Append(Vec<u8>),
    AppendZeros(u16),
}

impl Damage {
    fn apply(&self, b: &mut Vec<u8>) {
        let at = |at: &u32| *at as usize % (b.len() + 1);
        match self {
            Damage::Flip { at: a, mask } => {
                let i = at(a);
                if let Some(x) = b.get_mut(i) {
                    *x ^= mask;
                }
            }
            Damage::Overwrite { at: a, bytes } => {
                let i = at(a);
                let end = (i + bytes.len()).min(b.len());
                b[i..end].copy_from_slice(&bytes[..end - i]);
            }
            Damage::Zero { at: a, len } => {
                let i = at(a);
                let end = (i + usize::from(*len)).min(b.len());
                b[i..end].fill(0);
            }
            Damage::Truncate { at: a } => {
                let i = at(a);
                b.truncate(i);
            }
            Damage::Append(bytes) => b.extend_from_slice(bytes),
            Damage::AppendZeros(n) => b.resize(b.len() + usize::from(*n), 0),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Built {
    node_id: u16,
    segment_no: u16,
    first_seq: u32,
    records: Vec<Rec>,
    damage: Vec<Damage>,
}

/// An owned record, to compare what went in with what came back.
#[derive(Debug, PartialEq, Eq)]
struct Owned {
    id: u64,
    received_at_ms: i64,
    timestamp_ms: i64,
    patient_id: String,
    medication: String,
    event_id: Option<String>,
}

/// Decodes records back to back from the header on, as far as they go.
fn records_of(bytes: &[u8]) -> Vec<(Owned, usize)> {
    let mut out = Vec::new();
    let mut pos = HEADER_BYTES as usize;
    while let Some(Decoded::Record(r, n)) = bytes
        .get(pos..)
        .map(|rest| record::decode(rest, Format::CURRENT))
    {
        pos += n;
        let owned = Owned {
            id: r.id.raw(),
            received_at_ms: r.received_at_ms,
            timestamp_ms: r.timestamp_ms,
            patient_id: r.patient_id.to_owned(),
            medication: r.medication.to_owned(),
            event_id: r.event_id.map(str::to_owned),
        };
        out.push((owned, pos));
    }
    out
}

/// Writes a segment from `b.records` with busyapi's own code; returns its
/// header, its bytes and the records with the offset each one ends at.
fn write_segment(dir: &Path, b: &Built) -> (Header, Vec<u8>, Vec<(Owned, usize)>) {
    let node_id = u32::from(b.node_id) & NODE_ID_MAX;
    let seq = u64::from(b.first_seq).max(1) & SEQ_MAX;
    let header = Header {
        node_id,
        segment_no: u64::from(b.segment_no),
        base_seq: seq,
        format: Format::CURRENT,
    };
    let file = segment::create(dir, header, 0).expect("create a segment");
    let mut staged = Vec::new();
    for r in b.records.iter().take(RECORDS_MAX) {
        let pid = field(&r.patient_id, PATIENT_ID_BYTES_MAX);
        let event_id = r.event_id.as_deref().map(|e| field(e, EVENT_ID_BYTES_MAX));
        let usage = Usage {
            patient_id: PatientId::Text(&pid),
            timestamp_ms: r.timestamp_ms,
            medication: &field(&r.medication, MEDICATION_BYTES_MAX),
            event_id: event_id.as_deref(),
        };
        record::stage(&usage, r.received_at_ms, &mut staged);
    }
    let mut framed = Vec::new();
    record::frame_staged(&staged, Id::new(node_id, seq), &mut framed);
    file.write_all_at(&framed, HEADER_BYTES)
        .expect("write records");
    let bytes = fs::read(segment::path_of(dir, header.segment_no)).expect("read the segment");
    let records = records_of(&bytes);
    assert_eq!(
        records.len(),
        b.records.len().min(RECORDS_MAX),
        "written records decode"
    );
    (header, bytes, records)
}

fn rewrite(path: &Path, bytes: &[u8]) {
    let f = File::create(path).expect("rewrite the segment");
    f.write_all_at(bytes, 0).expect("rewrite the segment");
}

/// Recovers segment `no` of `dir`, which held `before`, and checks what
/// holds for any input. Returns the scan and the file it left.
fn recover_checked(dir: &Path, no: u64, node_id: u32, before: &[u8]) -> Option<(Scan, Vec<u8>)> {
    let path = segment::path_of(dir, no);
    let scan =
        segment::recover(dir, no, node_id, 0).expect("recovery of a readable file succeeds")?;
    let after = fs::read(&path).expect("the recovered segment is still there");
    assert_eq!(
        after.len() as u64,
        scan.end,
        "the file ends where the scan says"
    );
    assert_eq!(
        after[HEADER_BYTES as usize..],
        before[HEADER_BYTES as usize..scan.end as usize]
    );
    let kept: Vec<Vec<u8>> = fs::read_dir(dir.join(QUARANTINE_DIR))
        .expect("list the quarantine")
        .map(|e| fs::read(e.expect("a quarantine entry").path()).expect("read a quarantine file"))
        .collect();
    let tail = scan.end..scan.end + scan.torn_tail_bytes;
    for r in scan.damaged.iter().chain([&tail]) {
        let cut = &before[r.start as usize..r.end as usize];
        if cut.iter().any(|&x| x != 0) {
            assert!(
                kept.iter().any(|k| k == cut),
                "bytes {r:?} cut without a quarantine copy"
            );
        }
    }
    let again = segment::recover(dir, no, node_id, 0)
        .expect("a second recovery succeeds")
        .expect("a recovered segment stays a segment");
    assert_eq!(
        again,
        Scan {
            torn_tail_bytes: 0,
            ..scan.clone()
        },
        "recovery is idempotent"
    );
    Some((scan, after))
}

fn built(u: &mut Unstructured<'_>) {
    let Ok(b) = Built::arbitrary(u) else { return };
    let dir = fresh_dir();
    let (header, orig, records) = write_segment(dir, &b);
    let mut bytes = orig.clone();
    for d in b.damage.iter().take(DAMAGE_MAX) {
        d.apply(&mut bytes);
    }
    let first_changed = orig
        .iter()
        .zip(&bytes)
        .position(|(a, b)| a != b)
        .unwrap_or(orig.len().min(bytes.len()));
    let intact = if first_changed < HEADER_BYTES as usize {
        0
    } else {
        records
            .iter()
            .take_while(|(_, end)| *end <= first_changed)
            .count()
    };
    let path = segment::path_of(dir, header.segment_no);
    rewrite(&path, &bytes);
    let recovered = recover_checked(dir, header.segment_no, header.node_id, &bytes);
    let Some((scan, after)) = recovered else {
        assert_eq!(intact, 0, "a segment with intact records was discarded");
        return;
    };
    let got = records_of(&after);
    assert!(
        got.len() >= intact,
        "intact records lost: {} of {intact} kept",
        got.len()
    );
    for ((want, _), (have, _)) in records.iter().zip(&got).take(intact) {
        assert_eq!(want, have);
    }
    if first_changed >= orig.len() && bytes[orig.len()..].iter().all(|&x| x == 0) {
        assert_eq!(
            scan.records as usize,
            records.len(),
            "an undamaged segment is kept whole"
        );
        assert!(scan.damaged.is_empty() && scan.torn_tail_bytes == 0);
    }
}

fn raw(data: &[u8]) {
    let dir = fresh_dir();
    let no = 1;
    rewrite(&segment::path_of(dir, no), data);
    let _ = recover_checked(dir, no, 0, data);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => built(&mut Unstructured::new(rest)),
        Some((_, rest)) => raw(rest),
        None => {}
    }
});
