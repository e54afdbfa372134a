//! The flusher's durable progress: how far the WAL has reached MongoDB.
//!
//! File `checkpoint` in the data directory, 40 bytes, little-endian:
//!
//! | offset | size | field                                                   |
//! |--------|------|---------------------------------------------------------|
//! | 0      | 8    | magic `BUSYCKP1`                                        |
//! | 8      | 8    | segment number of the next record to deliver            |
//! | 16     | 8    | byte offset of that record in its segment               |
//! | 24     | 8    | highest sequence number ever delivered (an id floor)    |
//! | 32     | 4    | CRC-32 of bytes 0..32                                   |
//! | 36     | 4    | zero                                                    |
//!
//! It is replaced atomically: write `checkpoint.tmp`, fsync it, rename it
//! over `checkpoint`, fsync the directory. A crash leaves either the old or
//! the new one. Everything before the position has been acknowledged by
//! MongoDB with the configured write concern; everything from it on is sent
//! again after a restart (MongoDB turns the replays into duplicate-key
//! errors, so nothing is stored twice).

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::{Position, WalError};

const MAGIC: &[u8; 8] = b"BUSYCKP1";
const FILE_NAME: &str = "checkpoint";
const TMP_NAME: &str = "checkpoint.tmp";
const BYTES: usize = 40;

/// How far delivery has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Checkpoint {
    /// Where the next record to deliver starts.
    pub at: Position,
    /// Highest sequence number delivered so far.
    pub last_seq: u64,
}

impl Checkpoint {
    fn encode(&self) -> [u8; BYTES] {
        let mut b = [0u8; BYTES];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.at.segment.to_le_bytes());
        b[16..24].copy_from_slice(&self.at.offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.last_seq.to_le_bytes());
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() != BYTES || &b[0..8] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(b[32..36].try_into().expect("4 bytes"));
        (crc == crc32fast::hash(&b[0..32])).then(|| Checkpoint {
            at: Position {
                segment: u64_at(8),
                offset: u64_at(16),
            },
            last_seq: u64_at(24),
        })
    }
}

/// Reads the checkpoint. A missing file is `None` (nothing delivered yet). A
/// damaged one is logged and also `None`: the whole WAL is then sent again,
/// which costs time but loses nothing and duplicates nothing.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>, WalError> {
    match fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => {
            let ckpt = Checkpoint::decode(&bytes);
            if ckpt.is_none() {
                log::error!(
                    "the WAL checkpoint is damaged; every segment will be sent to MongoDB again"
                );
            }
            Ok(ckpt)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(WalError::io("read the checkpoint", e)),
    }
}

/// Replaces the checkpoint durably.
pub fn store(dir: &Path, ckpt: &Checkpoint) -> Result<(), WalError> {
    let tmp = dir.join(TMP_NAME);
    let mut f = File::create(&tmp).map_err(|e| WalError::io("write the checkpoint", e))?;
    f.write_all(&ckpt.encode())
        .map_err(|e| WalError::io("write the checkpoint", e))?;
    super::sync_or_die(&f, "the checkpoint");
    fs::rename(&tmp, dir.join(FILE_NAME)).map_err(|e| WalError::io("rename the checkpoint", e))?;
    super::segment::sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_checkpoint_loads_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(load(dir.path()).expect("load"), None);
        let c = Checkpoint {
            at: Position {
                segment: 4,
                offset: 1234,
            },
            last_seq: 99,
        };
        store(dir.path(), &c).expect("store");
        assert_eq!(load(dir.path()).expect("load"), Some(c));
    }

    #[test]
    fn a_damaged_checkpoint_loads_as_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        store(dir.path(), &Checkpoint::default()).expect("store");
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).expect("read");
        bytes[10] ^= 1;
        fs::write(&path, bytes).expect("write");
        assert_eq!(load(dir.path()).expect("load"), None);
    }
}
