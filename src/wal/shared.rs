//! The view of the log shared by the writer, the flusher and the HTTP layer,
//! and [`open`], which locks a data directory and wires what
//! [`super::recovery`] found in it into that view.

use std::collections::VecDeque;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::checkpoint::Checkpoint;
use super::record::Format;
use super::segment::{self, QUARANTINE_DIR};
use super::writer::Active;
use super::{Id, Position, WalError, recovery};

/// What a reader needs to know about one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentView {
    /// The segment number, also the stem of its file name.
    pub no: u64,
    /// Bytes up to here are fsynced; a reader must not go past it.
    pub committed_end: u64,
    /// No more records will be appended.
    pub sealed: bool,
    /// Ranges found damaged at recovery; readers skip them.
    pub damaged: Vec<Range<u64>>,
    /// The layout of its records, from its header.
    pub format: Format,
}

/// State shared between the WAL writer, the flusher and the HTTP layer.
pub struct WalShared {
    /// The exclusive lock on the data directory, held until the process ends.
    _lock: fs::File,
    /// The data directory (`--data-dir`).
    pub dir: PathBuf,
    /// This process's node id (`--node-id`), the high part of every id it
    /// hands out.
    pub node_id: u32,
    /// Size of a segment file (`--wal-segment-bytes`).
    pub segment_bytes: u64,
    /// Segments on disk, oldest first; the last one is the active one.
    segments: Mutex<VecDeque<SegmentView>>,
    /// Signalled on every commit and roll, for the flusher.
    changed: Condvar,
    /// Bytes in the WAL not yet delivered to MongoDB: the quota's measure.
    backlog_bytes: AtomicU64,
    /// Records in the WAL not yet delivered to MongoDB.
    backlog_records: AtomicU64,
    /// False while appends fail (a full disk, say); readiness reports it.
    writable: AtomicBool,
    /// The raw id of the newest committed record (0: none yet this run).
    last_id: AtomicU64,
    /// The first id this run hands out: records below it were recovered
    /// and may have reached MongoDB before.
    pub first_new_id: Id,
}

impl WalShared {
    /// WAL bytes not yet delivered to MongoDB: what `--wal-max-bytes` bounds.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog_bytes.load(Ordering::Relaxed)
    }

    /// Records in the WAL not yet delivered to MongoDB.
    pub fn backlog_records(&self) -> u64 {
        self.backlog_records.load(Ordering::Relaxed)
    }

    /// False while appends fail (a full disk, say).
    pub fn is_writable(&self) -> bool {
        self.writable.load(Ordering::Relaxed)
    }

    /// The id of the newest committed record; raw 0 until one is committed
    /// this run.
    pub fn last_id(&self) -> Id {
        Id::from_raw(self.last_id.load(Ordering::Relaxed))
    }

    pub(super) fn set_writable(&self, ok: bool) {
        self.writable.store(ok, Ordering::Relaxed);
    }

    /// The segment `no`, or if it is gone, the first one after it.
    pub fn segment_at_or_after(&self, no: u64) -> Option<SegmentView> {
        self.segments.lock().iter().find(|s| s.no >= no).cloned()
    }

    /// Waits up to `timeout` for the log to commit past `at` or to seal
    /// its segment, and returns the view of that segment (or, if it is
    /// gone, of the first one after it).
    pub fn wait_past(&self, at: Position, timeout: Duration) -> Option<SegmentView> {
        let mut segs = self.segments.lock();
        let ready = |segs: &VecDeque<SegmentView>| {
            segs.iter()
                .find(|s| s.no >= at.segment)
                .is_some_and(|s| s.no > at.segment || s.sealed || s.committed_end > at.offset)
        };
        if !ready(&segs) {
            self.changed.wait_for(&mut segs, timeout);
        }
        segs.iter().find(|s| s.no >= at.segment).cloned()
    }

    /// Wakes anyone in [`WalShared::wait_past`] (used at shutdown).
    pub fn notify(&self) {
        self.changed.notify_all();
    }

    pub(super) fn publish_commit(&self, end: Position, bytes: u64, records: u64, last_id: Id) {
        {
            let mut segs = self.segments.lock();
            let active = segs
                .back_mut()
                .expect("the active segment is always in the view");
            debug_assert_eq!(active.no, end.segment);
            active.committed_end = end.offset;
        }
        self.backlog_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.backlog_records.fetch_add(records, Ordering::Relaxed);
        self.last_id.store(last_id.raw(), Ordering::Relaxed);
        self.changed.notify_all();
    }

    pub(super) fn publish_roll(&self, new_no: u64) {
        let mut segs = self.segments.lock();
        if let Some(old) = segs.back_mut() {
            old.sealed = true;
        }
        segs.push_back(SegmentView {
            no: new_no,
            committed_end: Position::first_in(new_no).offset,
            sealed: false,
            damaged: Vec::new(),
            format: Format::CURRENT,
        });
        drop(segs);
        self.changed.notify_all();
    }

    /// The flusher reports records that MongoDB has confirmed.
    pub fn delivered(&self, bytes: u64, records: u64) {
        self.backlog_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.backlog_records.fetch_sub(records, Ordering::Relaxed);
    }

    /// Deletes every sealed segment numbered below `no`. The caller has
    /// already stored a checkpoint at or past `no` (invariant 4).
    pub fn release_before(&self, no: u64) -> Result<usize, WalError> {
        let mut released = Vec::new();
        {
            let mut segs = self.segments.lock();
            while segs.front().is_some_and(|s| s.no < no && s.sealed) {
                released.push(segs.pop_front().expect("front exists").no);
            }
        }
        for n in &released {
            fs::remove_file(segment::path_of(&self.dir, *n))
                .map_err(|e| WalError::io("delete a delivered segment", e))?;
        }
        if !released.is_empty() {
            segment::sync_dir(&self.dir);
        }
        Ok(released.len())
    }

    /// Segments currently on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.lock().len()
    }
}

/// A recovered data directory: the shared view, the writer's active
/// segment, and where delivery resumes.
pub struct Opened {
    /// The view of the log that every part shares.
    pub shared: Arc<WalShared>,
    /// The fresh segment for the writer thread to append to.
    pub active: Active,
    /// Where delivery to MongoDB resumes: the saved checkpoint, or without
    /// one the start of the oldest segment.
    pub resume: Checkpoint,
}

/// Recovers `dir` (creating it if needed) and opens a fresh active segment.
///
/// A directory whose recovery found no checkpoint and no segment with a
/// header or a record (a segment torn at creation is not history) has no
/// history of its own: `fresh_floor` then says the highest seq this node
/// may already have handed out (its ids in MongoDB, from an earlier life on
/// another disk), and the first segment's header keeps that floor for
/// every later start. The rules are in `wal/recovery.rs`.
pub fn open(
    dir: &Path,
    node_id: u32,
    segment_bytes: u64,
    fresh_floor: impl FnOnce() -> Result<u64, WalError>,
) -> Result<Opened, WalError> {
    fs::create_dir_all(dir.join(QUARANTINE_DIR))
        .map_err(|e| WalError::io("create the data directory", e))?;
    let lock = lock_dir(dir)?;
    let r = recovery::recover(dir, node_id, segment_bytes, fresh_floor)?;
    let first_new_id = Id::new(node_id, r.active.next_seq);
    log::info!(
        "WAL recovered in {}: {} segment(s), {} record(s) awaiting delivery, next id {first_new_id}",
        dir.display(),
        r.views.len(),
        r.backlog_records
    );
    let shared = Arc::new(WalShared {
        _lock: lock,
        dir: dir.to_path_buf(),
        node_id,
        segment_bytes,
        segments: Mutex::new(r.views),
        changed: Condvar::new(),
        backlog_bytes: AtomicU64::new(r.backlog_bytes),
        backlog_records: AtomicU64::new(r.backlog_records),
        writable: AtomicBool::new(true),
        last_id: AtomicU64::new(0),
        first_new_id,
    });
    Ok(Opened {
        shared,
        active: r.active,
        resume: r.resume,
    })
}

/// Takes the data directory's lock, or says who holds it. The kernel drops
/// a `flock` when its holder exits, however it exits, so a crash never
/// leaves a stale lock behind.
fn lock_dir(dir: &Path) -> Result<fs::File, WalError> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK_NAME))
        .map_err(|e| WalError::io("open the data directory's lock file", e))?;
    // SAFETY: flock(2) on a descriptor this function owns; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(WalError::io("lock the data directory", err));
        }
        let mut pid = String::new();
        let _ = file.read_to_string(&mut pid);
        let holder = match pid.trim() {
            "" => String::new(),
            p => format!(" (pid {p})"),
        };
        return Err(WalError::Locked {
            dir: dir.display().to_string(),
            holder,
        });
    }
    file.set_len(0)
        .map_err(|e| WalError::io("write the lock file", e))?;
    file.rewind()
        .map_err(|e| WalError::io("write the lock file", e))?;
    write!(file, "{}", std::process::id()).map_err(|e| WalError::io("write the lock file", e))?;
    Ok(file)
}

/// The lock file in the data directory.
const LOCK_NAME: &str = "lock";
