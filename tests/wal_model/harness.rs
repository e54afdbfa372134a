//! The real WAL under test: recovery on open, the group-commit writer, and
//! the flusher's reader, checkpoint and release.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use busyapi::ingest::{PatientId, Usage};
use busyapi::wal::checkpoint::{self, Checkpoint};
use busyapi::wal::reader::WalReader;
use busyapi::wal::record;
use busyapi::wal::{self, Lanes, Reply, Submission, WalShared, writer};

use super::model::{Model, Rec};
use super::{LANES, NODE_ID, READ_CALLS_MAX};

/// An open WAL with its writer running.
pub struct Wal {
    pub dir: PathBuf,
    pub shared: Arc<WalShared>,
    lanes: Arc<Lanes>,
    writer: Option<JoinHandle<()>>,
    /// Where delivery resumes.
    ckpt: Checkpoint,
}

impl Wal {
    pub fn open(dir: &Path) -> Wal {
        Wal::open_with(dir, busyapi::limits::SEGMENT_BYTES_MIN)
    }

    pub fn open_with(dir: &Path, segment_bytes: u64) -> Wal {
        let opened = wal::open(dir, NODE_ID, segment_bytes, || Ok(0))
            .expect("recovery never refuses to start");
        let lanes = Lanes::new(LANES);
        let writer = writer::spawn(
            lanes.clone(),
            opened.shared.clone(),
            opened.active,
            Duration::from_micros(busyapi::limits::COMMIT_DELAY_MAX_US_DEFAULT),
        )
        .expect("writer");
        Wal {
            dir: dir.to_path_buf(),
            shared: opened.shared,
            lanes,
            writer: Some(writer),
            ckpt: opened.resume,
        }
    }

    pub fn close(&mut self) {
        self.lanes.stop();
        if let Some(w) = self.writer.take() {
            w.join().expect("the writer exits cleanly");
        }
    }

    /// Queues every submission, then waits for each acknowledgement.
    pub fn append(&self, counts: &[u32], model: &mut Model) -> Vec<Rec> {
        let mut waiting = Vec::new();
        for (lane, &count) in counts.iter().enumerate() {
            let patients: Vec<String> = (0..count).map(|_| model.patient("a")).collect();
            let mut staged = Vec::new();
            for p in &patients {
                record::stage(&usage(p), 1, &mut staged);
            }
            let (reply, rx) = may::sync::mpsc::channel::<Reply>();
            let sub = Submission {
                staged,
                count,
                reply,
                prompt: false,
            };
            if self.lanes.submit(lane, sub).is_err() {
                panic!("a lane of {} refused a submission", LANES);
            }
            waiting.push((patients, rx));
        }
        let mut recs = Vec::new();
        for (patients, rx) in waiting {
            let first = rx.recv().expect("a reply").first_id.expect("a commit");
            recs.extend(patients.into_iter().enumerate().map(|(i, patient)| Rec {
                id: first.plus(i as u64),
                patient,
            }));
        }
        recs.sort_by_key(|r| r.id);
        recs
    }

    /// Reads everything committed from the checkpoint on, the way the
    /// flusher does; returns it and the checkpoint just past it.
    pub fn read_owed(&self) -> (Vec<Rec>, Checkpoint) {
        let mut reader = self.reader();
        let mut got = Vec::new();
        read_to_end(&mut reader, usize::MAX, &mut got);
        let at = reader.position();
        let last_seq = got
            .iter()
            .map(|r: &Rec| r.id.seq())
            .fold(self.ckpt.last_seq, u64::max);
        let next = Checkpoint { at, last_seq };
        (got, next)
    }

    /// A reader from where delivery resumes, as the flusher opens one.
    pub fn reader(&self) -> WalReader {
        WalReader::new(self.shared.clone(), self.ckpt)
    }

    pub fn deliver(&mut self) -> Vec<Rec> {
        let (got, next) = self.read_owed();
        checkpoint::store(&self.dir, &next).expect("store the checkpoint");
        self.shared
            .release_before(next.at.segment)
            .expect("release delivered segments");
        self.ckpt = next;
        got
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        self.close();
    }
}

pub fn usage(patient: &str) -> Usage<'_> {
    Usage {
        patient_id: PatientId::Text(patient),
        timestamp_ms: 7,
        medication: "Albuterol",
        event_id: None,
    }
}

/// Reads everything committed, `max` records a call at most, the way the
/// flusher does, appending it to `got`.
pub fn read_to_end(reader: &mut WalReader, max: usize, got: &mut Vec<Rec>) {
    for _ in 0..READ_CALLS_MAX {
        let out = reader
            .read(max, Duration::ZERO, |r| {
                got.push(Rec {
                    id: r.id,
                    patient: r.patient_id.to_owned(),
                })
            })
            .expect("read the log");
        if out.segment_done {
            reader.next_segment();
        } else if out.records == 0 {
            return;
        }
    }
    panic!("the reader did not reach the end of the log");
}
