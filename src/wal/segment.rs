//! Segment files: naming, the header, and creation. The recovery scan of
//! one segment is in `wal/scan.rs`.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::WalError;
use super::record::Format;
use crate::limits::{PREALLOC_CHUNK_BYTES, SPARE_FILL_BYTES_PER_S};

/// Identifies a busyapi WAL segment.
const MAGIC: &[u8; 8] = b"BUSYWAL1";
/// Size of the segment header; records start at this offset.
pub const HEADER_BYTES: u64 = 40;
/// Extension of segment files; the stem is the zero-padded segment number.
const SEGMENT_EXT: &str = "wal";
pub use super::quarantine::QUARANTINE_DIR;
pub use super::scan::{Scan, recover, scan_records};

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
    /// The layout of its records: the header's format version, bumped on
    /// any change to the header or record layout. New segments are
    /// [`Format::CURRENT`]; older ones are still read.
    pub format: Format,
}

impl Header {
    pub(super) fn encode(&self) -> [u8; HEADER_BYTES as usize] {
        let mut h = [0u8; HEADER_BYTES as usize];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&self.format.version().to_le_bytes());
        h[12..16].copy_from_slice(&self.node_id.to_le_bytes());
        h[16..24].copy_from_slice(&self.segment_no.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_seq.to_le_bytes());
        let crc = crc32fast::hash(&h[0..32]);
        h[32..36].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub(super) fn decode(h: &[u8]) -> Option<Header> {
        let h = h.get(..HEADER_BYTES as usize)?;
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().expect("4 bytes"));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
        let ok = &h[0..8] == MAGIC && u32_at(32) == crc32fast::hash(&h[0..32]);
        let format = Format::from_version(u32_at(8)).filter(|_| ok)?;
        Some(Header {
            node_id: u32_at(12),
            segment_no: u64_at(16),
            base_seq: u64_at(24),
            format,
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
/// zeros go out in small chunks ([`PREALLOC_CHUNK_BYTES`]), each pushed to
/// the disk (`sync_file_range`) on its own, so commits slip between them
/// and one that lands behind a chunk waits for 64 KiB, not a megabyte.
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A header for tests of this module and of `wal/scan.rs`.
    pub(in crate::wal) const HEADER: Header = Header {
        node_id: 3,
        segment_no: 7,
        base_seq: 100,
        format: Format::CURRENT,
    };

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
    fn a_version_1_header_decodes_as_format_1() {
        let v1 = Header {
            format: Format::V1,
            ..HEADER
        };
        let h = v1.encode();
        assert_eq!(u32::from_le_bytes(h[8..12].try_into().expect("4")), 1);
        assert_eq!(Header::decode(&h), Some(v1));
    }
}
