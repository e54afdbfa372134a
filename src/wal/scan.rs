//! The recovery scan of one segment: which records are intact, what is
//! damaged or torn, and the quarantine of what is cut. A segment's records
//! are decoded in the format its header names ([`Format`]), so segments
//! written before a format change are recovered and delivered as well.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::ops::Range;
use std::path::Path;

use super::record::{self, Decoded, Format};
use super::segment::{HEADER_BYTES, Header, path_of};
use super::{Id, WalError, quarantine};

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
        None => match header_for_intact(no, node_id, &bytes) {
            // A header is synced before its segment gets its name (see
            // `create`), and records follow it: with neither, the file
            // never held a record. Written by a binary that named segments
            // first, it is a creation torn by a power cut.
            None => {
                quarantine::discard_torn_creation(dir, &path, no, &bytes)?;
                return Ok(None);
            }
            Some(header) => rebuild_header(dir, &path, header, &mut bytes)?,
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
        match record::decode(&bytes[pos..], header.format) {
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
            _ => match next_intact(bytes, pos, scan.last_id.unwrap_or(Id::MIN), header.format) {
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
fn next_intact(bytes: &[u8], pos: usize, after_id: Id, format: Format) -> Option<usize> {
    let nonzero = pos + bytes[pos..].iter().position(|&b| b != 0)?;
    let from = nonzero.saturating_sub(3).max(pos + 1);
    (from..bytes.len()).find(|&at| {
        matches!(record::decode(&bytes[at..], format), Decoded::Record(r, _) if r.id > after_id)
    })
}

/// The header to rebuild for a segment whose header is unreadable: the
/// format its records decode in (the current one first; a record of one
/// format never decodes in another) and the seq of its first intact record.
/// `None` if it holds no intact record in any format.
fn header_for_intact(no: u64, node_id: u32, bytes: &[u8]) -> Option<Header> {
    Format::ALL.into_iter().find_map(|format| {
        let probe = Header {
            node_id,
            segment_no: no,
            base_seq: 0,
            format,
        };
        let first = scan_records(probe, bytes, 0).first_id?;
        Some(Header {
            base_seq: first.seq(),
            ..probe
        })
    })
}

/// A damaged header in front of records: keep the records (they may be
/// acknowledged and undelivered), quarantine the old header bytes, and write
/// `header`, whose base seq is the first intact record's.
fn rebuild_header(
    dir: &Path,
    path: &Path,
    header: Header,
    bytes: &mut [u8],
) -> Result<Header, WalError> {
    let no = header.segment_no;
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
    use crate::wal::segment::tests::HEADER;

    fn segment_with(n: u64) -> Vec<u8> {
        let mut staged = Vec::new();
        for i in 0..n {
            let usage = Usage {
                patient_id: PatientId::Number(i),
                timestamp_ms: 1,
                medication: "Albuterol",
                event_id: None,
            };
            record::stage(&usage, 2, &mut staged);
        }
        let mut bytes = HEADER.encode().to_vec();
        record::frame_staged(&staged, Id::from_raw(100), &mut bytes);
        bytes
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
