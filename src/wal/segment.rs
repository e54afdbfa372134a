//! Segment files: naming, the header, creation, and the recovery scan.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::record::{self, Decoded};
use super::{Id, WalError, quarantine};
use crate::limits::{PREALLOC_CHUNK_BYTES, SPARE_FILL_BYTES_PER_S};

/// Identifies a busyapi WAL segment.
const MAGIC: &[u8; 8] = b"BUSYWAL1";
/// Bumped on any change to the header or record layout.
const FORMAT_VERSION: u32 = 1;
/// Size of the segment header; records start at this offset.
pub const HEADER_BYTES: u64 = 40;
/// Extension of segment files; the stem is the zero-padded segment number.
const SEGMENT_EXT: &str = "wal";
pub use super::quarantine::QUARANTINE_DIR;

/// The decoded header of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The node whose ids the segment's records carry.
    pub node_id: u32,
    /// The segment number, also the file name.
    pub segment_no: u64,
    /// Every record in the segment has a sequence number at or above this:
    /// it keeps the id floor even when the segment holds no record.
    pub base_seq: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.node_id.to_le_bytes());
        h[16..24].copy_from_slice(&self.segment_no.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        let crc = crc32fast::hash(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    fn decode(h: &[u8]) -> Option<Header> {
        let h = h.get(..HEADER_BYTES as usize)?;
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let ok = &h[0..8] == MAGIC
            && u32_at(8) == FORMAT_VERSION
            && u32_at(32) == crc32fast::hash(&h[0..32]);
        ok.then(|| Header {
            node_id: u32_at(12),
            segment_no: u64_at(16),
            base_seq: u64_at(24),
        })
    }
}

/// The path of segment `no` in `dir`.
pub fn path_of(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:020}.{SEGMENT_EXT}"))
}

/// Segment numbers present in `dir`, ascending.
pub fn list(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut nos = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| WalError::io("list the WAL directory", e))? {
        let entry = entry.map_err(|e| WalError::io("list the WAL directory", e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".wal")
            && stem.len() == 20
            && let Ok(no) = stem.parse::<u64>()
        {
            nos.push(no);
        }
    }
    nos.sort_unstable();
    Ok(nos)
}

/// The next segment, zero-filled and synced ahead of need.
pub const SPARE_NAME: &str = "spare.wal.tmp";
/// A spare being filled; a crash leaves it half done, so it is discarded.
const SPARE_PARTIAL_NAME: &str = "spare.wal.partial";

/// Makes sure a complete spare of `bytes` exists: zeros written (not just
/// reserved) and synced, so appends into it change no file metadata and a
/// commit's fdatasync writes data blocks only.
///
/// `pace` is the fill rate while the server is taking load. Zero-filling a
/// 64 MiB segment at full speed floods the disk's queue, and every commit's
/// fdatasync waits behind it: unpaced, one fill during a run at 8,000
/// requests/s took p99 from about 2 ms to tens of milliseconds. Paced, the
/// zeros go out in chunks, each pushed to the disk (`sync_file_range`) on
/// its own, so commits slip between them.
pub fn prepare_spare(dir: &Path, bytes: u64, pace: SparePace) -> Result<(), WalError> {
    fail::fail_point!("wal::spare", |_| Err(WalError::io(
        "create a spare segment",
        std::io::Error::other("failpoint wal::spare")
    )));
    let spare = dir.join(SPARE_NAME);
    if fs::metadata(&spare).is_ok_and(|m| m.len() == bytes) {
        return Ok(());
    }
    let partial = dir.join(SPARE_PARTIAL_NAME);
    let mut f = File::create(&partial).map_err(|e| WalError::io("create a spare segment", e))?;
    let zeros = vec![0u8; PREALLOC_CHUNK_BYTES];
    let started = Instant::now();
    let mut done = 0;
    while done < bytes {
        let n = (bytes - done).min(PREALLOC_CHUNK_BYTES as u64) as usize;
        f.write_all(&zeros[..n])
            .map_err(|e| WalError::io("fill a spare segment", e))?;
        if pace == SparePace::Paced {
            start_writeback(&f, done, n as u64);
            let due =
                Duration::from_secs_f64((done + n as u64) as f64 / SPARE_FILL_BYTES_PER_S as f64);
            if let Some(early) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(early);
            }
        }
        done += n as u64;
    }
    super::sync_or_die(&f, "a spare segment");
    fs::rename(&partial, &spare).map_err(|e| WalError::io("rename a spare segment", e))?;
    sync_dir(dir);
    Ok(())
}

/// How fast [`prepare_spare`] fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SparePace {
    /// As fast as the disk takes it: at start, before any request.
    Full,
    /// At [`SPARE_FILL_BYTES_PER_S`]: beside commits.
    Paced,
}

/// Asks the kernel to start writing `[at, at + len)` of `file` to the disk
/// now, without waiting for it, so the final fsync has little left to do
/// and the disk sees one chunk at a time. Only a hint: a failure changes
/// nothing that the final fsync does not check.
fn start_writeback(file: &File, at: u64, len: u64) {
    let (Ok(offset), Ok(nbytes)) = (i64::try_from(at), i64::try_from(len)) else {
        return;
    };
    // SAFETY: sync_file_range on an open descriptor; it touches no memory of ours.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset,
            nbytes,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

/// A segment being created without a spare: it gets its header, synced,
/// before it gets its name. A crash leaves it half done, so it is discarded.
const NEW_SEGMENT_NAME: &str = "segment.wal.partial";

/// Creates segment `no`: from the spare when one of the right size is
/// ready (preallocated), else from an empty file. The header is written and
/// synced before the file is renamed to the segment's name, and the
/// directory is synced after: a segment's name never exists on disk
/// without its durable header. Renamed first, a power cut could leave a
/// zero-filled first segment that looks like history and hides the id
/// floor this node already has in MongoDB (see `open`'s `fresh_floor`).
pub fn create(dir: &Path, header: Header, segment_bytes: u64) -> Result<File, WalError> {
    let path = path_of(dir, header.segment_no);
    // The writer is the only creator and numbers are never reused; a rename
    // over an existing segment would destroy its records.
    assert!(
        fs::symlink_metadata(&path).is_err(),
        "segment {} already exists",
        header.segment_no
    );
    let spare = dir.join(SPARE_NAME);
    let from_spare = fs::metadata(&spare).is_ok_and(|m| m.len() == segment_bytes);
    let staged = if from_spare {
        spare
    } else {
        dir.join(NEW_SEGMENT_NAME)
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(!from_spare)
        .truncate(!from_spare)
        .open(&staged)
        .map_err(|e| WalError::io("create a segment", e))?;
    if let Err(e) = write_header(&file, &header) {
        // A spare stays a spare: the next header overwrites these bytes.
        if !from_spare {
            let _ = fs::remove_file(&staged);
        }
        return Err(WalError::io("write a segment header", e));
    }
    super::sync_or_die(&file, "a new segment's header");
    fs::rename(&staged, &path).map_err(|e| WalError::io("name a new segment", e))?;
    sync_dir(dir);
    Ok(file)
}

fn write_header(file: &File, header: &Header) -> std::io::Result<()> {
    fail::fail_point!("wal::segment_header", |_| Err(std::io::Error::other(
        "failpoint wal::segment_header"
    )));
    file.write_all_at(&header.encode(), 0)
}

/// Removes a spare left half-filled, or a segment left half-made, by a
/// crash.
pub fn discard_half_made(dir: &Path) {
    let _ = fs::remove_file(dir.join(SPARE_PARTIAL_NAME));
    let _ = fs::remove_file(dir.join(NEW_SEGMENT_NAME));
}

/// fsyncs a directory so that creations, renames and deletions in it are
/// durable. Fatal on failure for the same reason as a record fsync.
pub fn sync_dir(dir: &Path) {
    match File::open(dir) {
        Ok(d) => super::sync_or_die(&d, "the WAL directory"),
        Err(e) => super::fatal("open the WAL directory for fsync", &e),
    }
}

/// What recovery found in one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The segment's header, as read or as rebuilt from its first intact
    /// record.
    pub header: Header,
    /// Offset just past the last intact record (the segment's new length).
    pub end: u64,
    /// Intact records in the segment.
    pub records: u64,
    /// Records at or after the `pending_from` offset given to the scan: the
    /// ones still owed to MongoDB.
    pub pending_records: u64,
    /// The id of the first intact record; `None` if there is none.
    pub first_id: Option<Id>,
    /// The id of the last intact record; `None` if there is none.
    pub last_id: Option<Id>,
    /// Ranges of bytes between intact records that hold no intact record.
    /// Readers skip them; their bytes are kept in the quarantine directory.
    pub damaged: Vec<Range<u64>>,
    /// Bytes cut from the tail up to its last non-zero byte: a torn final
    /// write, or damage with no intact record after it. Zeros after them
    /// (preallocation) are not counted.
    pub torn_tail_bytes: u64,
}

/// Reads segment `no`, cuts a torn tail, quarantines damage, and reports
/// what it holds; records from offset `pending_from` on count as pending.
/// `Ok(None)` means the file has no valid header; it was moved to the
/// quarantine directory.
pub fn recover(
    dir: &Path,
    no: u64,
    node_id: u32,
    pending_from: u64,
) -> Result<Option<Scan>, WalError> {
    let path = path_of(dir, no);
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| WalError::io("read a segment", e))?;
    let header = match Header::decode(&bytes).filter(|h| h.segment_no == no) {
        Some(h) => h,
        None => match first_intact_seq(no, node_id, &bytes) {
            // A header is synced before its segment gets its name (see
            // `create`), and records follow it: with neither, the file
            // never held a record. Written by a binary that named segments
            // first, it is a creation torn by a power cut.
            None => {
                quarantine::discard_torn_creation(dir, &path, no, &bytes)?;
                return Ok(None);
            }
            Some(seq) => rebuild_header(dir, &path, no, node_id, seq, &mut bytes)?,
        },
    };
    let scan = scan_records(header, &bytes, pending_from);
    for r in &scan.damaged {
        quarantine::bytes(dir, no, r.start, &bytes[r.start as usize..r.end as usize])?;
    }
    if scan.torn_tail_bytes > 0 {
        let cut = &bytes[scan.end as usize..(scan.end + scan.torn_tail_bytes) as usize];
        quarantine::bytes(dir, no, scan.end, cut)?;
    }
    if (bytes.len() as u64) > scan.end {
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| WalError::io("open a segment to cut its tail", e))?;
        f.set_len(scan.end)
            .map_err(|e| WalError::io("cut a segment's torn tail", e))?;
        super::sync_or_die(&f, "a segment after cutting its tail");
    }
    Ok(Some(scan))
}

/// The pure part of recovery: walks the records after the header.
pub fn scan_records(header: Header, bytes: &[u8], pending_from: u64) -> Scan {
    let mut scan = Scan {
        header,
        end: HEADER_BYTES,
        records: 0,
        pending_records: 0,
        first_id: None,
        last_id: None,
        damaged: Vec::new(),
        torn_tail_bytes: 0,
    };
    let mut pos = HEADER_BYTES as usize;
    while pos < bytes.len() {
        match record::decode(&bytes[pos..]) {
            Decoded::Record(r, n) if scan.last_id.is_none_or(|last| r.id > last) => {
                scan.first_id.get_or_insert(r.id);
                scan.last_id = Some(r.id);
                scan.records += 1;
                if pos as u64 >= pending_from {
                    scan.pending_records += 1;
                }
                pos += n;
                scan.end = pos as u64;
            }
            _ => match next_intact(bytes, pos, scan.last_id.unwrap_or(Id::MIN)) {
                Some(at) => {
                    scan.damaged.push(pos as u64..at as u64);
                    pos = at;
                }
                None => break,
            },
        }
    }
    let data_end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
    scan.torn_tail_bytes = data_end.saturating_sub(scan.end);
    scan
}

/// After a bad frame at `pos`, the offset of the next intact record whose id
/// is above `after_id`. A run of zeros (the preallocated rest of a segment,
/// or blocks a crash left unwritten) is skipped at once: a record's length
/// is at least 28, so at most its first 3 bytes can be zeros.
fn next_intact(bytes: &[u8], pos: usize, after_id: Id) -> Option<usize> {
    let nonzero = pos + bytes[pos..].iter().position(|&b| b != 0)?;
    let from = nonzero.saturating_sub(3).max(pos + 1);
    (from..bytes.len()).find(
        |&at| matches!(record::decode(&bytes[at..]), Decoded::Record(r, _) if r.id > after_id),
    )
}

/// The seq of the first intact record of a segment whose header is
/// unreadable, or `None` if it holds no intact record.
fn first_intact_seq(no: u64, node_id: u32, bytes: &[u8]) -> Option<u64> {
    let probe = Header {
        node_id,
        segment_no: no,
        base_seq: 0,
    };
    scan_records(probe, bytes, 0).first_id.map(Id::seq)
}

/// A damaged header in front of records: keep the records (they may be
/// acknowledged and undelivered), quarantine the old header bytes, and write
/// a new header whose base seq is the first intact record's.
fn rebuild_header(
    dir: &Path,
    path: &Path,
    no: u64,
    node_id: u32,
    first_seq: u64,
    bytes: &mut [u8],
) -> Result<Header, WalError> {
    let header = Header {
        node_id,
        segment_no: no,
        base_seq: first_seq,
    };
    quarantine::bytes(dir, no, 0, &bytes[..HEADER_BYTES as usize])?;
    let encoded = header.encode();
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io("open a segment to rebuild its header", e))?;
    std::os::unix::fs::FileExt::write_all_at(&f, &encoded, 0)
        .map_err(|e| WalError::io("rebuild a segment header", e))?;
    super::sync_or_die(&f, "a rebuilt segment header");
    bytes[..HEADER_BYTES as usize].copy_from_slice(&encoded);
    log::error!(
        "WAL segment {no} had a damaged header; rebuilt it and kept the records after it (old header in quarantine)"
    );
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::{PatientId, Usage};

    const HEADER: Header = Header {
        node_id: 3,
        segment_no: 7,
        base_seq: 100,
    };

    fn segment_with(n: u64) -> Vec<u8> {
        let mut staged = Vec::new();
        for i in 0..n {
            let usage = Usage {
                patient_id: PatientId::Number(i),
                timestamp_ms: 1,
                medication: "Albuterol",
            };
            record::stage(&usage, 2, &mut staged);
        }
        let mut bytes = HEADER.encode().to_vec();
        record::frame_staged(&staged, Id::from_raw(100), &mut bytes);
        bytes
    }

    #[test]
    fn the_header_round_trips_and_rejects_any_flip() {
        let h = HEADER.encode();
        assert_eq!(Header::decode(&h), Some(HEADER));
        for i in 0..36 {
            let mut bad = h;
            bad[i] ^= 0x10;
            assert_eq!(Header::decode(&bad), None, "flip at {i}");
        }
    }

    #[test]
    fn a_clean_segment_scans_whole() {
        let bytes = segment_with(10);
        let s = scan_records(HEADER, &bytes, 0);
        assert_eq!(
            (s.records, s.first_id.map(Id::raw), s.last_id.map(Id::raw)),
            (10, Some(100), Some(109))
        );
        assert_eq!(s.pending_records, 10);
        let rec = (bytes.len() as u64 - HEADER_BYTES) / 10;
        let from_third = scan_records(HEADER, &bytes, HEADER_BYTES + 2 * rec);
        assert_eq!(from_third.pending_records, 8);
        assert_eq!(s.end, bytes.len() as u64);
        assert!(s.damaged.is_empty());
        assert_eq!(s.torn_tail_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_the_last_intact_record() {
        let full = segment_with(10);
        let nine = segment_with(9).len();
        for cut in nine + 1..full.len() {
            let s = scan_records(HEADER, &full[..cut], 0);
            assert_eq!(s.records, 9);
            assert_eq!(s.end, nine as u64);
            let data = full[nine..cut]
                .iter()
                .rposition(|&b| b != 0)
                .map_or(0, |i| i + 1);
            assert_eq!(
                s.torn_tail_bytes, data as u64,
                "trailing zeros are not data"
            );
        }
    }

    #[test]
    fn damage_in_the_middle_is_skipped_and_later_records_survive() {
        let mut bytes = segment_with(10);
        let rec = (bytes.len() - HEADER_BYTES as usize) / 10;
        bytes[HEADER_BYTES as usize + 3 * rec + 12] ^= 0x01; // inside record 4
        let s = scan_records(HEADER, &bytes, 0);
        assert_eq!(s.records, 9);
        assert_eq!(s.last_id.map(Id::raw), Some(109));
        assert_eq!(s.damaged.len(), 1);
        assert_eq!(s.damaged[0].end - s.damaged[0].start, rec as u64);
        assert_eq!(s.end, bytes.len() as u64);
    }

    #[test]
    fn zeros_after_the_records_are_a_torn_tail() {
        let mut bytes = segment_with(3);
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 8192]);
        let s = scan_records(HEADER, &bytes, 0);
        assert_eq!(
            (s.records, s.end, s.torn_tail_bytes),
            (3, end, 0),
            "zeros are no data"
        );
        bytes.extend_from_slice(b"junk");
        bytes.extend_from_slice(&[0u8; 100]);
        let s = scan_records(HEADER, &bytes, 0);
        assert_eq!((s.records, s.end, s.torn_tail_bytes), (3, end, 8192 + 4));
    }
}
