//! Micro-benchmarks of the per-request hot path, below HTTP:
//!
//! - `parse`: a ~100-byte usage body through busyapi's [`UsageParser`]
//!   (simd-json tape, buffers reused across requests) against serde_json
//!   into an equivalent `#[derive(Deserialize)]` struct with
//!   `deny_unknown_fields`, followed by the same checks (lengths, non-empty,
//!   timestamp forms), so both produce a validated [`Usage`].
//! - `wal_stage_frame`: [`record::stage`] on the ingest side plus
//!   [`record::frame_staged`] in the WAL writer, per record, for a batch of
//!   1 and of 64 records.
//! - `wal_append_fdatasync`: one `write` plus one `fdatasync` of 1 framed
//!   record and of 64 framed records on a file in `target/tmp` (the work
//!   disk; `/tmp` may be tmpfs elsewhere, where fsync costs nothing). This
//!   is what group commit buys: the cost per record of the 64-record commit.
//!
//! `cargo bench --bench hot_path` takes about a minute (short measurement
//! times: these are for comparing alternatives, not for publishing).
//! `cargo test --all-targets` runs every benchmark once, in test mode.
// A bench is a binary with no API: its one public item is the `pub fn
// benches` that criterion_group! writes, which no doc comment can reach.
#![allow(missing_docs)]

use std::borrow::Cow;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::time::Duration;

use busyapi::ingest::{PatientId, Usage, UsageParser, timestamp};
use busyapi::limits::{MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX, TIMESTAMP_BYTES_MAX};
use busyapi::wal::{Id, record};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The contract's example: a string patientId and the JavaScript date form.
const BODY_JS_DATE: &[u8] = br#"{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}"#;
/// An integer patientId and an RFC 3339 timestamp with an offset.
const BODY_RFC3339: &[u8] = br#"{"patientId": 4817, "timestamp": "2016-11-01T09:11:51.250-05:00", "medication": "Levalbuterol"}"#;

/// `receivedAt` of every staged record; its value does not matter here.
const RECEIVED_AT_MS: i64 = 1_700_000_000_000;
/// Once the fsync benchmark's file is this large it is truncated, so a long
/// run does not fill the disk.
const FSYNC_FILE_BYTES_MAX: u64 = 32 << 20;

// ------------------------------------------------------------- serde twin

/// The serde_json counterpart of busyapi's usage contract.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageDe<'a> {
    #[serde(rename = "patientId", borrow)]
    patient_id: Scalar<'a>,
    #[serde(borrow)]
    timestamp: Scalar<'a>,
    #[serde(borrow)]
    medication: Cow<'a, str>,
}

/// A JSON string or integer, borrowed when the string has no escapes; what
/// `patientId` and `timestamp` may be. Written by hand because
/// `#[serde(untagged)]` buffers every value and would handicap serde.
enum Scalar<'a> {
    Text(Cow<'a, str>),
    Unsigned(u64),
    Signed(i64),
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an integer")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(Cow::Owned(v.to_owned())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Signed(v))
    }
}

/// The checks [`UsageParser`] makes after parsing, on the serde struct.
fn validate<'a>(u: &'a UsageDe<'_>) -> Result<Usage<'a>, &'static str> {
    let bounded = |s: &'a str, max: usize| {
        if s.is_empty() || s.len() > max {
            Err("empty or too long")
        } else {
            Ok(s)
        }
    };
    let patient_id = match &u.patient_id {
        Scalar::Text(s) => PatientId::Text(bounded(s, PATIENT_ID_BYTES_MAX)?),
        Scalar::Unsigned(n) => PatientId::Number(*n),
        Scalar::Signed(n) if *n >= 0 => PatientId::Number(n.unsigned_abs()),
        Scalar::Signed(_) => return Err("negative patientId"),
    };
    let timestamp_ms = match &u.timestamp {
        Scalar::Text(s) if s.len() > TIMESTAMP_BYTES_MAX => return Err("timestamp too long"),
        Scalar::Text(s) => timestamp::parse_text(s).map_err(|_| "bad timestamp")?,
        Scalar::Signed(n) => timestamp::check_range(*n).map_err(|_| "bad timestamp")?,
        Scalar::Unsigned(n) => i64::try_from(*n)
            .ok()
            .and_then(|n| timestamp::check_range(n).ok())
            .ok_or("bad timestamp")?,
    };
    Ok(Usage {
        patient_id,
        timestamp_ms,
        medication: bounded(&u.medication, MEDICATION_BYTES_MAX)?,
        event_id: None,
    })
}

// ------------------------------------------------------------- benchmarks

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, body) in [("js_date", BODY_JS_DATE), ("rfc3339_int", BODY_RFC3339)] {
        group.throughput(Throughput::Bytes(body.len() as u64));
        let mut parser = UsageParser::new();
        group.bench_with_input(
            BenchmarkId::new("simd_json_usage_parser", name),
            body,
            |b, body| {
                b.iter(|| {
                    let usage = parser.parse(black_box(body)).expect("a valid body");
                    black_box(usage.timestamp_ms);
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("serde_json_derive", name),
            body,
            |b, body| {
                b.iter(|| {
                    let de: UsageDe<'_> = serde_json::from_slice(black_box(body)).expect("valid");
                    let usage = validate(&de).expect("a valid body");
                    black_box(usage.timestamp_ms);
                })
            },
        );
    }
    group.finish();
}

/// One usage per string pair; every third has an integer patientId.
fn usages(strings: &[(String, String)]) -> Vec<Usage<'_>> {
    strings
        .iter()
        .enumerate()
        .map(|(i, (pid, med))| Usage {
            patient_id: if i % 3 == 0 {
                PatientId::Number(100 + i as u64)
            } else {
                PatientId::Text(pid)
            },
            timestamp_ms: 1_478_009_511_000 + i as i64 * 1000,
            medication: med,
            event_id: None,
        })
        .collect()
}

fn strings(n: usize) -> Vec<(String, String)> {
    const MEDICATIONS: [&str; 4] = ["Albuterol", "Levalbuterol", "Fluticasone", "Budesonide"];
    (0..n)
        .map(|i| (format!("{}", 100 + i), MEDICATIONS[i % 4].to_owned()))
        .collect()
}

/// Stages `batch` and frames it, as a connection and the writer do.
fn stage_and_frame(batch: &[Usage<'_>], staged: &mut Vec<u8>, framed: &mut Vec<u8>) -> u64 {
    staged.clear();
    for u in batch {
        record::stage(u, RECEIVED_AT_MS, staged);
    }
    framed.clear();
    record::frame_staged(staged, Id::from_raw(1), framed)
}

fn wal_stage_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal_stage_frame");
    for n in [1usize, 64] {
        let strings = strings(n);
        let batch = usages(&strings);
        let (mut staged, mut framed) = (Vec::with_capacity(64 << 10), Vec::with_capacity(64 << 10));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("records", n), |b| {
            b.iter(|| black_box(stage_and_frame(black_box(&batch), &mut staged, &mut framed)))
        });
    }
    group.finish();
}

/// An append-only file in cargo's per-target temporary directory.
fn bench_file(dir: &tempfile::TempDir) -> File {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("bench.wal"))
        .expect("create the benchmark file")
}

fn wal_append_fdatasync(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("a temporary directory");
    let mut file = bench_file(&dir);
    let mut group = c.benchmark_group("wal_append_fdatasync");
    // Each iteration is a disk round trip; flat sampling keeps the number
    // of iterations (and the time) bounded.
    group.sampling_mode(SamplingMode::Flat);
    for n in [1usize, 64] {
        let strings = strings(n);
        let batch = usages(&strings);
        let (mut staged, mut framed) = (Vec::new(), Vec::new());
        stage_and_frame(&batch, &mut staged, &mut framed);
        let mut written = 0u64;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("records", n), |b| {
            b.iter(|| {
                if written > FSYNC_FILE_BYTES_MAX {
                    file.set_len(0).expect("truncate the benchmark file");
                    written = 0;
                }
                file.write_all(&framed).expect("append");
                file.sync_data().expect("fdatasync");
                written += framed.len() as u64;
            })
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = parse, wal_stage_frame, wal_append_fdatasync
}
criterion_main!(benches);
