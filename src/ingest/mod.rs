//! Request body → validated [`Usage`]: the second step of the data flow.
//!
//! Owns the usage contract. A body is accepted only if it is one JSON object
//! with exactly the fields `patientId`, `timestamp` and `medication`, and
//! optionally `eventId`, each of the right type and within its bound
//! ([`crate::limits`]). Anything else is
//! an [`IngestError`] whose text tells the client what was wrong; nothing is
//! written for it. Unknown fields are refused, which also keeps `$`-prefixed
//! keys from ever reaching MongoDB.
//!
//! Parsing uses simd-json's tape API with buffers that live as long as the
//! connection ([`UsageParser`]), so a request costs no allocation here. The
//! returned [`Usage`] borrows the parser's scratch copy of the body. The
//! type itself lives in the leaf module [`crate::usage`], which the WAL
//! uses too, so the WAL does not depend on this module; it is re-exported
//! here for callers that parse.
//!
//! Error texts name fields, never echo values: they may carry health data.

pub mod batch;
pub mod timestamp;

use simd_json::{Buffers, Node, StaticNode, Tape};

use crate::limits::{
    EVENT_ID_BYTES_MAX, MEDICATION_BYTES_MAX, PATIENT_ID_BYTES_MAX, TIMESTAMP_BYTES_MAX,
};
pub use crate::usage::{PatientId, Usage};
pub use batch::{BatchError, BatchForm};
pub use timestamp::TimestampError;

/// Why a body was refused. Every variant is a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// Not parseable as JSON.
    #[error("body is not valid JSON")]
    Json,
    /// Valid JSON whose top-level value is not an object.
    #[error("body must be a JSON object")]
    NotObject,
    /// A key other than `patientId`, `timestamp`, `medication` and `eventId`.
    #[error("unknown field (allowed: patientId, timestamp, medication, eventId)")]
    UnknownField,
    /// A key given twice; holds its name.
    #[error("field {0} appears more than once")]
    DuplicateField(&'static str),
    /// One of the three keys is absent; holds its name.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// A field's JSON type is not one it may have.
    #[error("field {field} must be {expected}")]
    WrongType {
        /// The field's JSON key.
        field: &'static str,
        /// What the field may hold, in words for the client.
        expected: &'static str,
    },
    /// A string field is `""`; holds the field's key.
    #[error("field {0} must not be empty")]
    Empty(&'static str),
    /// A string field is over its bound in [`crate::limits`].
    #[error("field {field} is longer than {max_bytes} bytes")]
    TooLong {
        /// The field's JSON key.
        field: &'static str,
        /// The bound, in bytes of UTF-8 after JSON unescaping.
        max_bytes: usize,
    },
    /// `timestamp` has an accepted type but is not an accepted instant.
    #[error("{0}")]
    Timestamp(#[from] TimestampError),
}

/// Reusable simd-json state for one connection.
pub struct UsageParser {
    /// simd-json's stage-1/stage-2 scratch, kept between requests.
    buffers: Buffers,
    /// The tape's node vector, kept between requests (reset to `'static`
    /// while unused, see [`Tape::reset`]).
    tape: Option<Tape<'static>>,
    /// The body copied with the padding simd-json reads past its end; strings
    /// are unescaped in place here, so the `Usage` borrows it.
    input: Vec<u8>,
}

impl Default for UsageParser {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageParser {
    /// A parser whose buffers start sized for a 512-byte body; a larger
    /// body grows them.
    pub fn new() -> Self {
        UsageParser {
            buffers: Buffers::new(512),
            tape: Some(Tape::null().reset()),
            input: Vec::with_capacity(512 + simd_json::INPUT_PADDING),
        }
    }

    /// Validates `body` as a usage event.
    pub fn parse(&mut self, body: &[u8]) -> Result<Usage<'_>, IngestError> {
        self.with_tape(body, read_usage)?
    }

    /// Parses `body` onto the reused tape and lets `read` walk it; `Err`
    /// if `body` is not JSON.
    fn with_tape<'s, R>(
        &'s mut self,
        body: &[u8],
        read: impl FnOnce(&[Node<'s>]) -> R,
    ) -> Result<R, IngestError> {
        self.input.clear();
        self.input.extend_from_slice(body);
        self.input.resize(body.len() + simd_json::INPUT_PADDING, 0);
        let mut tape = self.tape.take().unwrap_or_else(|| Tape::null().reset());
        let filled =
            simd_json::fill_tape_padded(&mut self.input, body.len(), &mut self.buffers, &mut tape);
        let result = match filled {
            Ok(()) => Ok(read(&tape.0)),
            Err(_) => Err(IngestError::Json),
        };
        self.tape = Some(tape.reset());
        result
    }
}

const FIELD_PATIENT: &str = "patientId";
const FIELD_TIMESTAMP: &str = "timestamp";
const FIELD_MEDICATION: &str = "medication";
const FIELD_EVENT: &str = "eventId";

/// Walks a parsed tape: one object whose values are all scalars we know.
fn read_usage<'a>(nodes: &[Node<'a>]) -> Result<Usage<'a>, IngestError> {
    let Some(Node::Object { len, .. }) = nodes.first() else {
        return Err(IngestError::NotObject);
    };
    let (mut patient, mut ts, mut medication, mut event) = (None, None, None, None);
    for pair in 0..*len {
        // Values of known fields are scalars or a type error, so a pair is
        // always exactly two nodes up to the first error.
        let key = match nodes.get(1 + 2 * pair) {
            Some(Node::String(k)) => *k,
            _ => return Err(IngestError::Json),
        };
        let value = nodes.get(2 + 2 * pair).ok_or(IngestError::Json)?;
        match key {
            FIELD_PATIENT => set_once(&mut patient, FIELD_PATIENT, patient_id(value)?)?,
            FIELD_TIMESTAMP => set_once(&mut ts, FIELD_TIMESTAMP, timestamp_ms(value)?)?,
            FIELD_MEDICATION => set_once(&mut medication, FIELD_MEDICATION, medication_of(value)?)?,
            FIELD_EVENT => set_once(&mut event, FIELD_EVENT, event_id(value)?)?,
            _ => return Err(IngestError::UnknownField),
        }
    }
    Ok(Usage {
        patient_id: patient.ok_or(IngestError::MissingField(FIELD_PATIENT))?,
        timestamp_ms: ts.ok_or(IngestError::MissingField(FIELD_TIMESTAMP))?,
        medication: medication.ok_or(IngestError::MissingField(FIELD_MEDICATION))?,
        event_id: event,
    })
}

fn set_once<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), IngestError> {
    if slot.replace(value).is_some() {
        return Err(IngestError::DuplicateField(field));
    }
    Ok(())
}

fn bounded_str<'a>(
    field: &'static str,
    s: &'a str,
    max_bytes: usize,
) -> Result<&'a str, IngestError> {
    if s.is_empty() {
        return Err(IngestError::Empty(field));
    }
    if s.len() > max_bytes {
        return Err(IngestError::TooLong { field, max_bytes });
    }
    Ok(s)
}

fn patient_id<'a>(value: &Node<'a>) -> Result<PatientId<'a>, IngestError> {
    match value {
        Node::String(s) => Ok(PatientId::Text(bounded_str(
            FIELD_PATIENT,
            s,
            PATIENT_ID_BYTES_MAX,
        )?)),
        Node::Static(StaticNode::U64(n)) => Ok(PatientId::Number(*n)),
        Node::Static(StaticNode::I64(n)) if *n >= 0 => Ok(PatientId::Number(n.unsigned_abs())),
        _ => Err(IngestError::WrongType {
            field: FIELD_PATIENT,
            expected: "a non-empty string or a non-negative integer",
        }),
    }
}

fn timestamp_ms(value: &Node<'_>) -> Result<i64, IngestError> {
    let ms = match value {
        Node::String(s) if s.len() > TIMESTAMP_BYTES_MAX => {
            return Err(IngestError::TooLong {
                field: FIELD_TIMESTAMP,
                max_bytes: TIMESTAMP_BYTES_MAX,
            });
        }
        Node::String(s) => timestamp::parse_text(s)?,
        Node::Static(StaticNode::I64(n)) => timestamp::check_range(*n)?,
        Node::Static(StaticNode::U64(n)) => {
            timestamp::check_range(i64::try_from(*n).map_err(|_| TimestampError::Range)?)?
        }
        _ => {
            return Err(IngestError::WrongType {
                field: FIELD_TIMESTAMP,
                expected: "a date string or an integer of epoch milliseconds",
            });
        }
    };
    Ok(ms)
}

/// `eventId`: the device's id of the event. Optional, but when present a
/// non-empty string; `null` is refused like any other type.
fn event_id<'a>(value: &Node<'a>) -> Result<&'a str, IngestError> {
    text_field(FIELD_EVENT, value, EVENT_ID_BYTES_MAX)
}

fn medication_of<'a>(value: &Node<'a>) -> Result<&'a str, IngestError> {
    text_field(FIELD_MEDICATION, value, MEDICATION_BYTES_MAX)
}

/// A field that must be a non-empty string of at most `max_bytes`.
fn text_field<'a>(
    field: &'static str,
    value: &Node<'a>,
    max_bytes: usize,
) -> Result<&'a str, IngestError> {
    match value {
        Node::String(s) => bounded_str(field, s, max_bytes),
        _ => Err(IngestError::WrongType {
            field,
            expected: "a non-empty string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<(String, i64, String), IngestError> {
        let mut p = UsageParser::new();
        let u = p.parse(body.as_bytes())?;
        let mut scratch = itoa::Buffer::new();
        let pid = String::from_utf8(u.patient_id.as_bytes(&mut scratch).to_vec()).expect("utf8");
        Ok((pid, u.timestamp_ms, u.medication.to_owned()))
    }

    #[test]
    fn the_contract_example_is_accepted() {
        let got = parse(
            r#"{"patientId": "100", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}"#,
        );
        assert_eq!(
            got,
            Ok(("100".into(), 1_478_009_511_000, "Albuterol".into()))
        );
    }

    #[test]
    fn an_integer_patient_id_is_stored_as_its_decimal_string() {
        let got = parse(r#"{"patientId": 42, "timestamp": 1478009511000, "medication": "X"}"#);
        assert_eq!(got, Ok(("42".into(), 1_478_009_511_000, "X".into())));
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let got = parse(r#"{"patientId":"a\"b","timestamp":0,"medication":"\u00e9"}"#);
        assert_eq!(got, Ok(("a\"b".into(), 0, "é".into())));
    }

    #[test]
    fn the_parser_can_be_reused_across_bodies() {
        let mut p = UsageParser::new();
        for i in 0..50u64 {
            let body = format!(r#"{{"patientId":{i},"timestamp":{i},"medication":"m{i}"}}"#);
            let u = p.parse(body.as_bytes()).expect("valid");
            assert_eq!(u.patient_id, PatientId::Number(i));
            assert_eq!(u.medication, format!("m{i}"));
        }
        assert_eq!(p.parse(b"{").map(|_| ()), Err(IngestError::Json));
    }

    #[test]
    fn each_kind_of_bad_body_gets_its_own_error() {
        let cases: &[(&str, IngestError)] = &[
            ("", IngestError::Json),
            ("{", IngestError::Json),
            ("[1,2]", IngestError::NotObject),
            ("\"x\"", IngestError::NotObject),
            ("17", IngestError::NotObject),
            (
                r#"{"patientId":"1","timestamp":0}"#,
                IngestError::MissingField("medication"),
            ),
            (
                r#"{"timestamp":0,"medication":"m"}"#,
                IngestError::MissingField("patientId"),
            ),
            (
                r#"{"patientId":"1","medication":"m"}"#,
                IngestError::MissingField("timestamp"),
            ),
            (
                r#"{"patientId":"1","timestamp":0,"medication":"m","$set":1}"#,
                IngestError::UnknownField,
            ),
            (
                r#"{"patientId":"1","patientId":"2","timestamp":0,"medication":"m"}"#,
                IngestError::DuplicateField("patientId"),
            ),
            (
                r#"{"patientId":"","timestamp":0,"medication":"m"}"#,
                IngestError::Empty("patientId"),
            ),
            (
                r#"{"patientId":"1","timestamp":0,"medication":""}"#,
                IngestError::Empty("medication"),
            ),
            (
                r#"{"patientId":"1","timestamp":"soon","medication":"m"}"#,
                IngestError::Timestamp(TimestampError::Format),
            ),
            (
                r#"{"patientId":"1","timestamp":-5,"medication":"m"}"#,
                IngestError::Timestamp(TimestampError::Range),
            ),
            (
                r#"{"patientId":"1","timestamp":18446744073709551615,"medication":"m"}"#,
                IngestError::Timestamp(TimestampError::Range),
            ),
        ];
        for (body, want) in cases {
            assert_eq!(parse(body).as_ref().map(|_| ()), Err(want), "{body}");
        }
    }

    #[test]
    fn wrong_types_name_the_field() {
        for (body, field) in [
            (
                r#"{"patientId":true,"timestamp":0,"medication":"m"}"#,
                "patientId",
            ),
            (
                r#"{"patientId":-1,"timestamp":0,"medication":"m"}"#,
                "patientId",
            ),
            (
                r#"{"patientId":1.5,"timestamp":0,"medication":"m"}"#,
                "patientId",
            ),
            (
                r#"{"patientId":{"$gt":""},"timestamp":0,"medication":"m"}"#,
                "patientId",
            ),
            (
                r#"{"patientId":"1","timestamp":1.5,"medication":"m"}"#,
                "timestamp",
            ),
            (
                r#"{"patientId":"1","timestamp":null,"medication":"m"}"#,
                "timestamp",
            ),
            (
                r#"{"patientId":"1","timestamp":0,"medication":["m"]}"#,
                "medication",
            ),
        ] {
            match parse(body) {
                Err(IngestError::WrongType { field: f, .. }) => assert_eq!(f, field, "{body}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn field_lengths_are_bounded() {
        let long_pid = "p".repeat(PATIENT_ID_BYTES_MAX + 1);
        let body = format!(r#"{{"patientId":"{long_pid}","timestamp":0,"medication":"m"}}"#);
        assert!(matches!(
            parse(&body),
            Err(IngestError::TooLong {
                field: "patientId",
                ..
            })
        ));
        let ok_pid = "p".repeat(PATIENT_ID_BYTES_MAX);
        let body = format!(r#"{{"patientId":"{ok_pid}","timestamp":0,"medication":"m"}}"#);
        assert!(parse(&body).is_ok());
        let long_med = "m".repeat(MEDICATION_BYTES_MAX + 1);
        let body = format!(r#"{{"patientId":"1","timestamp":0,"medication":"{long_med}"}}"#);
        assert!(matches!(
            parse(&body),
            Err(IngestError::TooLong {
                field: "medication",
                ..
            })
        ));
        let long_ts = "x".repeat(TIMESTAMP_BYTES_MAX + 1);
        let body = format!(r#"{{"patientId":"1","timestamp":"{long_ts}","medication":"m"}}"#);
        assert!(matches!(
            parse(&body),
            Err(IngestError::TooLong {
                field: "timestamp",
                ..
            })
        ));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let deep = "[".repeat(5000) + &"]".repeat(5000);
        assert!(parse(&deep).is_err());
        let deep_obj = format!(r#"{{"patientId":{}}}"#, "[".repeat(3000));
        assert!(parse(&deep_obj).is_err());
    }

    fn event_id_of(body: &str) -> Result<Option<String>, IngestError> {
        let mut p = UsageParser::new();
        Ok(p.parse(body.as_bytes())?.event_id.map(str::to_owned))
    }

    #[test]
    fn an_event_id_is_optional_and_kept_as_sent() {
        let body = |e: &str| format!(r#"{{"patientId":"1","timestamp":0,"medication":"m"{e}}}"#);
        assert_eq!(event_id_of(&body("")), Ok(None));
        assert_eq!(
            event_id_of(&body(r#","eventId":"a\u00e9""#)),
            Ok(Some("aé".into()))
        );
        let longest = "e".repeat(EVENT_ID_BYTES_MAX);
        assert_eq!(
            event_id_of(&body(&format!(r#","eventId":"{longest}""#))),
            Ok(Some(longest))
        );
    }

    #[test]
    fn a_bad_event_id_is_refused_naming_the_field() {
        let body = |e: &str| {
            format!(r#"{{"patientId":"1","timestamp":0,"medication":"m","eventId":{e}}}"#)
        };
        let too_long = format!(r#""{}""#, "e".repeat(EVENT_ID_BYTES_MAX + 1));
        for (value, want) in [
            (r#""""#, IngestError::Empty("eventId")),
            (
                &*too_long,
                IngestError::TooLong {
                    field: "eventId",
                    max_bytes: EVENT_ID_BYTES_MAX,
                },
            ),
            (
                "null",
                IngestError::WrongType {
                    field: "eventId",
                    expected: "a non-empty string",
                },
            ),
            (
                "7",
                IngestError::WrongType {
                    field: "eventId",
                    expected: "a non-empty string",
                },
            ),
            (
                r#"["e"]"#,
                IngestError::WrongType {
                    field: "eventId",
                    expected: "a non-empty string",
                },
            ),
            (
                r#""a","eventId":"a""#,
                IngestError::DuplicateField("eventId"),
            ),
        ] {
            assert_eq!(event_id_of(&body(value)), Err(want), "{value}");
        }
    }
}
