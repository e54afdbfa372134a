//! The validated usage event: the leaf type the data flow passes down.
//!
//! `ingest` produces a [`Usage`] from a request body and `wal` stages it
//! into a record, so both depend on this module and neither on the other.
//! It holds no logic beyond the stored form of a `patientId`, and depends
//! on nothing in the crate.
//!
//! A `Usage` borrows the bytes it was validated from (the parser's copy of
//! the body), so handing one from ingest to the WAL copies nothing.

/// `patientId` as sent: a string, or a non-negative integer stored as its
/// decimal string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatientId<'a> {
    /// Sent as a JSON string; stored as it is.
    Text(&'a str),
    /// Sent as a JSON integer; stored as its decimal digits.
    Number(u64),
}

impl PatientId<'_> {
    /// The stored string form; `scratch` holds the digits of a number.
    pub fn as_bytes<'s>(&'s self, scratch: &'s mut itoa::Buffer) -> &'s [u8] {
        match self {
            PatientId::Text(s) => s.as_bytes(),
            PatientId::Number(n) => scratch.format(*n).as_bytes(),
        }
    }
}

/// One validated usage event, borrowing the parser's copy of the body.
/// Ingest bounds its strings (the limits module); the WAL asserts those
/// bounds again when it stages one, since a record stores each length in
/// one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage<'a> {
    /// Whose inhaler it was: non-empty, at most `PATIENT_ID_BYTES_MAX`
    /// bytes in stored form.
    pub patient_id: PatientId<'a>,
    /// The event's instant, UTC epoch milliseconds.
    pub timestamp_ms: i64,
    /// What was inhaled: non-empty, at most `MEDICATION_BYTES_MAX` bytes.
    pub medication: &'a str,
    /// The device's own id of this event, if it sent one: with the
    /// patientId it names one real event, stored at most once.
    pub event_id: Option<&'a str>,
}
