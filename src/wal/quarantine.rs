//! The quarantine directory: where recovery keeps every byte it cuts,
//! skips or replaces, for an operator (invariant 6 of [`super`]).
//!
//! # Invariant
//! A copy, and its name in the quarantine directory, are durable before
//! the caller cuts or overwrites the bytes it keeps: otherwise a power
//! cut could keep the cut and lose the only copy.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::WalError;
use super::segment::sync_dir;

/// Damaged byte ranges and torn tails are copied here before they are cut.
pub const QUARANTINE_DIR: &str = "quarantine";

/// fsyncs the quarantine directory, so that the files recovery put there
/// survive a power cut. Fatal on failure, as `segment::sync_dir`.
fn sync_quarantine(dir: &Path) {
    match File::open(dir.join(QUARANTINE_DIR)) {
        Ok(d) => super::sync_or_die(&d, "the quarantine directory"),
        Err(e) => super::fatal("open the quarantine directory for fsync", &e),
    }
}

/// Removes a segment that has no header and no record, so that it is not
/// taken for history: all zeros (a preallocated spare renamed before its
/// header was durable) it is deleted, anything else is moved to the
/// quarantine directory for an operator.
pub(super) fn discard_torn_creation(
    dir: &Path,
    path: &Path,
    no: u64,
    bytes: &[u8],
) -> Result<(), WalError> {
    if bytes.iter().any(|&b| b != 0) {
        return file(dir, path, no);
    }
    fs::remove_file(path).map_err(|e| WalError::io("delete a torn segment", e))?;
    sync_dir(dir);
    log::error!(
        "WAL segment {no} was torn at creation (all zeros, no header); deleted it (it held no record: headers are synced before use)"
    );
    Ok(())
}

fn file(dir: &Path, path: &Path, no: u64) -> Result<(), WalError> {
    let to = dir
        .join(QUARANTINE_DIR)
        .join(format!("{no:020}.bad-header"));
    fs::rename(path, &to).map_err(|e| WalError::io("quarantine a segment", e))?;
    // The new name first: synced the other way round, a crash could keep
    // the removal from the data directory and lose the file's only name.
    sync_quarantine(dir);
    sync_dir(dir);
    log::error!(
        "WAL segment {no} was torn at creation (no complete header); moved to {} (it held no record: headers are synced before use)",
        to.display()
    );
    Ok(())
}

/// Copies damaged `bytes` found at `offset` of segment `no` into the
/// quarantine directory, durably, before the caller cuts or rewrites them.
pub(super) fn bytes(dir: &Path, no: u64, offset: u64, bytes: &[u8]) -> Result<(), WalError> {
    if bytes.iter().all(|&b| b == 0) {
        return Ok(());
    }
    let to = dir
        .join(QUARANTINE_DIR)
        .join(format!("{no:020}-{offset}.bin"));
    let mut f = File::create(&to).map_err(|e| WalError::io("write a quarantine file", e))?;
    f.write_all(bytes)
        .map_err(|e| WalError::io("write a quarantine file", e))?;
    super::sync_or_die(&f, "a quarantine file");
    // The copy's name must be durable too before the caller cuts or
    // overwrites the bytes it keeps: synced data without a directory entry
    // is lost in a power cut, and with it the only copy.
    sync_quarantine(dir);
    log::warn!(
        "WAL segment {no}: {} damaged bytes at offset {offset} copied to {}",
        bytes.len(),
        to.display()
    );
    Ok(())
}
