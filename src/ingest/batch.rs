//! A batch body → its validated usages, one by one, in the order sent.
//!
//! Two forms:
//! - **A JSON array** of usage objects (`Content-Type: application/json`,
//!   the body's first non-blank byte `[`).
//! - **NDJSON** (`Content-Type: application/x-ndjson`): one usage object a
//!   line. Lines end in LF or CRLF, the last one may end without; a line
//!   of nothing but JSON whitespace is skipped and does not count as a
//!   usage (so an index always names a usage, the same as in the array
//!   form and in the 201's `ids`).
//!
//! Every element goes through the single-usage validation
//! ([`UsageParser::parse`]'s `read_usage`), so a bad element gets the
//! same reason a single event would, with its index. The caller gets each
//! valid usage as it is read ([`UsageParser::parse_batch`]'s `each`) and
//! must keep nothing of a batch that fails later: a batch is all or
//! nothing, and the caller decides that, not this module, since only it
//! knows where it keeps them.
//!
//! The count is checked before any element is: a batch over its bound is
//! refused whole (413) whatever its elements hold.

use simd_json::Node;

use super::{IngestError, Usage, UsageParser, read_usage};

/// How a batch body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchForm {
    /// A JSON array of usage objects.
    Array,
    /// One usage object a line (`application/x-ndjson`).
    Ndjson,
}

/// Why a batch was refused; nothing of it is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The array body is not JSON at all, so no element can be named.
    #[error("body is not valid JSON")]
    Json,
    /// No usage in the batch (`[]`, or NDJSON of blank lines only). 400.
    #[error("a batch must hold at least one usage")]
    Empty,
    /// More usages than `--batch-max-records`. 413.
    #[error("a batch holds at most {max_records} usages")]
    TooMany {
        /// The bound that was passed.
        max_records: usize,
    },
    /// Usage `index` (from 0, in the order sent) is not valid; `reason`
    /// is what a single event with that body would have been told.
    #[error("usage {index}: {reason}")]
    Element {
        /// The refused usage's position in the batch.
        index: usize,
        /// Why it was refused.
        reason: IngestError,
    },
}

impl BatchError {
    /// The index of the refused usage, when one usage is to blame.
    pub fn index(&self) -> Option<usize> {
        match self {
            BatchError::Element { index, .. } => Some(*index),
            _ => None,
        }
    }
}

/// JSON's whitespace (RFC 8259 §2), which may surround any value.
fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Whether a JSON body is an array: its first non-blank byte is `[`. A
/// single usage is an object, so this is all the router needs to know.
pub fn is_array(body: &[u8]) -> bool {
    body.iter().find(|&&b| !is_json_space(b)) == Some(&b'[')
}

/// The lines of an NDJSON body that hold something: blank ones skipped.
fn ndjson_lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|&b| b == b'\n')
        .filter(|line| !line.iter().all(|&b| is_json_space(b)))
}

impl UsageParser {
    /// Validates every usage of a batch body in `form`, handing each to
    /// `each` with its index as soon as it is valid. Stops at the first
    /// invalid one. Returns how many usages the batch holds.
    pub fn parse_batch(
        &mut self,
        body: &[u8],
        form: BatchForm,
        max_records: usize,
        mut each: impl FnMut(usize, Usage<'_>),
    ) -> Result<usize, BatchError> {
        match form {
            BatchForm::Array => self.parse_array(body, max_records, &mut each),
            BatchForm::Ndjson => {
                let count = ndjson_lines(body).count();
                check_count(count, max_records)?;
                for (index, line) in ndjson_lines(body).enumerate() {
                    let usage = self
                        .parse(line)
                        .map_err(|reason| BatchError::Element { index, reason })?;
                    each(index, usage);
                }
                Ok(count)
            }
        }
    }

    fn parse_array(
        &mut self,
        body: &[u8],
        max_records: usize,
        each: &mut impl FnMut(usize, Usage<'_>),
    ) -> Result<usize, BatchError> {
        self.with_tape(body, |nodes| walk_array(nodes, max_records, each))
            .map_err(|_| BatchError::Json)?
    }
}

fn check_count(count: usize, max_records: usize) -> Result<(), BatchError> {
    if count == 0 {
        return Err(BatchError::Empty);
    }
    if count > max_records {
        return Err(BatchError::TooMany { max_records });
    }
    Ok(())
}

/// Walks a tape that should be one array of usage objects.
fn walk_array<'a>(
    nodes: &[Node<'a>],
    max_records: usize,
    each: &mut impl FnMut(usize, Usage<'a>),
) -> Result<usize, BatchError> {
    let Some(Node::Array { len, .. }) = nodes.first() else {
        return Err(BatchError::Json);
    };
    check_count(*len, max_records)?;
    let mut at = 1;
    for index in 0..*len {
        // An element spans its own node and, for a container, the nodes
        // it counts; the tape is well formed, so `at` stays in it.
        let span = match nodes.get(at) {
            Some(Node::Object { count, .. } | Node::Array { count, .. }) => 1 + count,
            Some(Node::String(_) | Node::Static(_)) => 1,
            None => return Err(BatchError::Json),
        };
        let element = nodes.get(at..at + span).ok_or(BatchError::Json)?;
        let usage = read_usage(element).map_err(|reason| BatchError::Element { index, reason })?;
        each(index, usage);
        at += span;
    }
    Ok(*len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(body: &str, form: BatchForm, max: usize) -> Result<Vec<String>, BatchError> {
        let mut p = UsageParser::new();
        let mut meds = Vec::new();
        let n = p.parse_batch(body.as_bytes(), form, max, |i, u| {
            assert_eq!(i, meds.len(), "in order");
            meds.push(u.medication.to_owned());
        })?;
        assert_eq!(n, meds.len());
        Ok(meds)
    }

    fn usage(m: &str) -> String {
        format!(r#"{{"patientId":"p","timestamp":0,"medication":"{m}"}}"#)
    }

    #[test]
    fn an_array_yields_its_usages_in_order() {
        let body = format!(" [ {}, {} ,{}] ", usage("a"), usage("b"), usage("c"));
        assert_eq!(
            ids(&body, BatchForm::Array, 10),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
    }

    #[test]
    fn ndjson_takes_lf_crlf_no_final_newline_and_skips_blank_lines() {
        let body = format!("{}\r\n\n  \r\n{}\n{}", usage("a"), usage("b"), usage("c"));
        assert_eq!(
            ids(&body, BatchForm::Ndjson, 10),
            Ok(vec!["a".into(), "b".into(), "c".into()])
        );
        let body = format!("{}\n{}\n", usage("a"), usage("b"));
        assert_eq!(ids(&body, BatchForm::Ndjson, 2).map(|v| v.len()), Ok(2));
    }

    #[test]
    fn a_bad_element_is_named_by_its_index_with_the_single_event_reason() {
        let bad = r#"{"patientId":"p","timestamp":0}"#;
        for at in [0, 1, 2] {
            let mut parts = [usage("a"), usage("b"), usage("c")];
            parts[at] = bad.into();
            let want = Err(BatchError::Element {
                index: at,
                reason: IngestError::MissingField("medication"),
            });
            let array = format!("[{}]", parts.join(","));
            assert_eq!(ids(&array, BatchForm::Array, 10), want, "array, {at}");
            let lines = parts.join("\n\n");
            assert_eq!(ids(&lines, BatchForm::Ndjson, 10), want, "ndjson, {at}");
        }
        let nested = format!(r#"[{}, [1, [2]], {}]"#, usage("a"), usage("b"));
        assert_eq!(
            ids(&nested, BatchForm::Array, 10),
            Err(BatchError::Element {
                index: 1,
                reason: IngestError::NotObject
            })
        );
        let deep = format!(r#"[{{"patientId":{{"a":[1,{{}}]}}}}, {}]"#, usage("b"));
        assert!(matches!(
            ids(&deep, BatchForm::Array, 10),
            Err(BatchError::Element { index: 0, .. })
        ));
    }

    #[test]
    fn an_empty_batch_and_one_over_the_bound_are_refused_before_any_element() {
        assert_eq!(ids("[]", BatchForm::Array, 10), Err(BatchError::Empty));
        assert_eq!(
            ids("\n \r\n", BatchForm::Ndjson, 10),
            Err(BatchError::Empty)
        );
        let three = format!("[{},{},{{}}]", usage("a"), usage("b"));
        assert_eq!(
            ids(&three, BatchForm::Array, 2),
            Err(BatchError::TooMany { max_records: 2 })
        );
        let lines = format!("{}\n{}\nnot json", usage("a"), usage("b"));
        assert_eq!(
            ids(&lines, BatchForm::Ndjson, 2),
            Err(BatchError::TooMany { max_records: 2 })
        );
        assert_eq!(ids("[1,", BatchForm::Array, 2), Err(BatchError::Json));
    }

    #[test]
    fn only_a_body_that_starts_with_a_bracket_is_an_array() {
        assert!(is_array(b" \r\n\t[{}]"));
        assert!(!is_array(b" {}"));
        assert!(!is_array(b""));
    }
}
