//! The header fields busyapi acts on, read once per request head, and the
//! syntax each must have: `Content-Length` digits, the `Transfer-Encoding`
//! list (RFC 9112 §6.3, §7), `Host` (RFC 9110 §7.2, RFC 3986 §3.2),
//! `Connection` tokens, `Expect`, the media type and `Idempotency-Key`
//! (draft-ietf-httpapi-idempotency-key-header).

use super::HttpError;
use super::request::ContentType;
use crate::limits::EVENT_ID_BYTES_MAX;
use crate::usage::Usage;

/// The header fields busyapi acts on.
#[derive(Default)]
pub(super) struct Fields<'a> {
    /// Host field lines seen: RFC 9112 §3.2 asks for exactly one.
    pub hosts: usize,
    pub content_length: Option<usize>,
    pub codings: Codings,
    /// `close` is somewhere in a `Connection` list.
    pub close: bool,
    /// `keep-alive` is somewhere in a `Connection` list.
    pub keep_alive: bool,
    pub expect_continue: bool,
    pub content_type: ContentType,
    /// The media type as sent (no parameters), so a 415 can name it.
    pub media_type: &'a [u8],
    /// `Idempotency-Key` field lines seen: more than one is a 400.
    pub idempotency_keys: usize,
    /// The last `Idempotency-Key` value, trimmed, unchecked: only a usage
    /// POST reads it, and checks it then ([`idempotency_key`]).
    pub idempotency_key: Option<&'a [u8]>,
    /// `Authorization` field lines seen: more than one is a 400.
    pub authorizations: usize,
    /// The last `Authorization` value, trimmed, unchecked (`auth` reads it).
    pub authorization: Option<&'a [u8]>,
}

impl<'a> Fields<'a> {
    pub fn read(headers: &[httparse::Header<'a>]) -> Result<Fields<'a>, HttpError> {
        let mut f = Fields::default();
        for h in headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let n = content_length(h.value)?;
                if f.content_length.is_some_and(|prev| prev != n) {
                    return Err(HttpError::BadContentLength);
                }
                f.content_length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                f.codings.add(h.value)?;
            } else if name.eq_ignore_ascii_case("connection") {
                for token in tokens(h.value) {
                    f.close |= token.eq_ignore_ascii_case(b"close");
                    f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                f.expect_continue = trim(h.value).eq_ignore_ascii_case(b"100-continue");
            } else if name.eq_ignore_ascii_case("content-type") {
                f.media_type = media_type(h.value);
                f.content_type = content_type(f.media_type);
            } else if name.eq_ignore_ascii_case("host") {
                if !valid_host(h.value) {
                    return Err(HttpError::BadHost);
                }
                f.hosts += 1;
            } else if name.eq_ignore_ascii_case("idempotency-key") {
                f.idempotency_key = Some(trim(h.value));
                f.idempotency_keys += 1;
            } else if name.eq_ignore_ascii_case("authorization") {
                f.authorization = Some(trim(h.value));
                f.authorizations += 1;
            }
        }
        Ok(f)
    }
}

fn trim(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|t| !t.is_empty())
}

/// Digits only: no sign, no spaces inside, no list. At most 19 digits so
/// the value fits; anything larger is far over any body limit anyway.
fn content_length(v: &[u8]) -> Result<usize, HttpError> {
    let v = trim(v);
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::BadContentLength);
    }
    let n = v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The transfer codings of a request, over all its `Transfer-Encoding`
/// lines (which form one list, RFC 9110 §5.3).
#[derive(Default)]
pub(super) struct Codings {
    /// Any `Transfer-Encoding` line was present.
    present: bool,
    /// Times `chunked` appears in the list.
    chunked: usize,
    /// The list so far ends in `chunked`.
    last_chunked: bool,
    /// A coding other than `chunked` appears.
    other: bool,
}

impl Codings {
    fn add(&mut self, v: &[u8]) -> Result<(), HttpError> {
        let mut any = false;
        for coding in tokens(v) {
            any = true;
            self.last_chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked += usize::from(self.last_chunked);
            self.other |= !self.last_chunked;
        }
        self.present = true;
        if any {
            Ok(())
        } else {
            Err(HttpError::Malformed)
        }
    }

    /// Whether the body is chunked. RFC 9112 §6.3: a list that does not
    /// end in `chunked` leaves the body's length unknown (400); §7: chunked
    /// is applied at most once (400). Other codings (compressions) are not
    /// supported: 501.
    pub fn chunked(&self) -> Result<bool, HttpError> {
        if !self.present {
            Ok(false)
        } else if !self.last_chunked {
            Err(HttpError::ChunkedNotLast)
        } else if self.chunked > 1 {
            Err(HttpError::ChunkedTwice)
        } else if self.other {
            Err(HttpError::UnsupportedTransferEncoding)
        } else {
            Ok(true)
        }
    }
}

/// A `Host` value as RFC 9110 §7.2 has it: `uri-host [ ":" port ]` from
/// RFC 3986 §3.2.2–3.2.3 (a reg-name, an IPv4 address, or a bracketed IP
/// literal, then digits), or empty.
fn valid_host(v: &[u8]) -> bool {
    let v = trim(v);
    let (host, port) = if let Some(literal) = v.strip_prefix(b"[") {
        let Some(end) = literal.iter().position(|&b| b == b']') else {
            return false;
        };
        let inside = &literal[..end];
        let port = match &literal[end + 1..] {
            [] => None,
            [b':', port @ ..] => Some(port),
            _ => return false,
        };
        let ok = !inside.is_empty() && inside.iter().all(|&b| b == b':' || uri_char(b));
        (ok, port)
    } else {
        let (name, port) = match v.iter().rposition(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        };
        (reg_name(name), port)
    };
    host && port.is_none_or(|p| p.iter().all(u8::is_ascii_digit))
}

/// RFC 3986 reg-name: unreserved, sub-delims and percent-encoded octets
/// (an IPv4 address is one too).
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while i < name.len() {
        if name[i] == b'%' {
            let hex = name.get(i + 1..i + 3);
            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                return false;
            }
            i += 3;
        } else if uri_char(name[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 unreserved or sub-delims.
fn uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b)
}

/// The media type of a `Content-Type` value: its parameters dropped.
fn media_type(v: &[u8]) -> &[u8] {
    trim(v.split(|&b| b == b';').next().unwrap_or(v))
}

/// Classifies a media type (see [`media_type`]).
fn content_type(media: &[u8]) -> ContentType {
    let is_json = media.eq_ignore_ascii_case(b"application/json")
        || (media.len() > 5 && media[media.len() - 5..].eq_ignore_ascii_case(b"+json"));
    if is_json {
        ContentType::Json
    } else if media.eq_ignore_ascii_case(b"application/x-ndjson") {
        ContentType::Ndjson
    } else {
        ContentType::Other
    }
}

/// An `Idempotency-Key` value as the usage's eventId. The draft makes it
/// a structured-field string (`"..."`, RFC 8941 §3.3.3); a bare value is
/// taken too, as many clients send one. Either way the key is 1 to
/// [`EVENT_ID_BYTES_MAX`] bytes of printable ASCII without `"` or `\`,
/// so no escape needs undoing and the key is the bytes as sent.
pub(super) fn idempotency_key(value: &[u8]) -> Result<&str, HttpError> {
    let key = match value {
        [b'"', inner @ .., b'"'] => inner,
        [b'"', ..] => return Err(HttpError::BadIdempotencyKey),
        bare => bare,
    };
    let printable = |&b: &u8| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\';
    if key.is_empty() || key.len() > EVENT_ID_BYTES_MAX || !key.iter().all(printable) {
        return Err(HttpError::BadIdempotencyKey);
    }
    std::str::from_utf8(key).map_err(|_| HttpError::BadIdempotencyKey)
}

/// A usage POST's `Idempotency-Key` (`header`, as [`Fields`] kept it)
/// becomes the usage's eventId. A body that names another event with its
/// own eventId is refused: which one the client meant is unknown.
pub(super) fn keyed<'u>(
    mut usage: Usage<'u>,
    header: Option<&'u [u8]>,
) -> Result<Usage<'u>, HttpError> {
    let Some(value) = header else {
        return Ok(usage);
    };
    let key = idempotency_key(value)?;
    match usage.event_id {
        Some(sent) if sent != key => Err(HttpError::IdempotencyKeyMismatch),
        _ => {
            usage.event_id = Some(key);
            Ok(usage)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_are_classified() {
        let classify = |v: &[u8]| content_type(media_type(v));
        assert_eq!(classify(b"application/json"), ContentType::Json);
        assert_eq!(
            classify(b"Application/JSON ; charset=utf-8"),
            ContentType::Json
        );
        assert_eq!(classify(b"application/vnd.api+json"), ContentType::Json);
        assert_eq!(classify(b"text/plain"), ContentType::Other);
        assert_eq!(classify(b"application/x-ndjson"), ContentType::Ndjson);
        assert_eq!(
            classify(b"Application/X-NDJSON; charset=utf-8"),
            ContentType::Ndjson
        );
        assert_eq!(
            classify(b"application/x-www-form-urlencoded"),
            ContentType::Other
        );
    }

    #[test]
    fn idempotency_keys_are_sf_strings_or_bare_within_the_event_id_bound() {
        let longest = "k".repeat(EVENT_ID_BYTES_MAX);
        for (sent, key) in [
            ("abc", "abc"),
            ("\"abc\"", "abc"),
            ("\"a b\"", "a b"),
            (
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            (longest.as_str(), longest.as_str()),
        ] {
            assert_eq!(idempotency_key(sent.as_bytes()), Ok(key), "{sent:?}");
        }
        let too_long = "k".repeat(EVENT_ID_BYTES_MAX + 1);
        let quoted_too_long = format!("\"{too_long}\"");
        for bad in [
            "",
            "\"\"",
            "\"",
            "\"abc",
            "\"a\\\"b\"",
            "a\\b",
            "é",
            "a\tb",
            too_long.as_str(),
            quoted_too_long.as_str(),
        ] {
            assert_eq!(
                idempotency_key(bad.as_bytes()),
                Err(HttpError::BadIdempotencyKey),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn an_idempotency_key_becomes_the_event_id_unless_the_body_names_another() {
        let usage = |event_id| Usage {
            patient_id: crate::usage::PatientId::Number(1),
            timestamp_ms: 0,
            medication: "m",
            event_id,
        };
        assert_eq!(keyed(usage(None), None), Ok(usage(None)));
        assert_eq!(keyed(usage(Some("e")), None), Ok(usage(Some("e"))));
        assert_eq!(keyed(usage(None), Some(b"k")), Ok(usage(Some("k"))));
        assert_eq!(
            keyed(usage(Some("k")), Some(b"\"k\"")),
            Ok(usage(Some("k")))
        );
        assert_eq!(
            keyed(usage(Some("e")), Some(b"k")),
            Err(HttpError::IdempotencyKeyMismatch)
        );
        assert_eq!(
            keyed(usage(None), Some(b"")),
            Err(HttpError::BadIdempotencyKey)
        );
    }

    #[test]
    fn host_values_follow_rfc_3986() {
        for good in [
            "",
            "a",
            "example.com",
            "example.com:8080",
            "127.0.0.1:3000",
            "[::1]",
            "[::1]:3000",
            "[v1.fe]",
            "xn--bcher-kva.example",
            "a%20b",
            "host:",
        ] {
            assert!(valid_host(good.as_bytes()), "{good:?}");
        }
        for bad in [
            "a b", "a/b", "a@b", "a:b:c", "a:8o", "[::1", "[]", "[::1]x", "a%2", "a%zz", "a\"b",
            "a?b", "a#b", "é",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn transfer_codings_are_one_list_over_all_lines() {
        let codings = |lines: &[&str]| {
            let mut c = Codings::default();
            for l in lines {
                c.add(l.as_bytes())?;
            }
            c.chunked()
        };
        assert_eq!(codings(&[]), Ok(false));
        assert_eq!(codings(&["chunked"]), Ok(true));
        assert_eq!(codings(&["Chunked"]), Ok(true));
        assert_eq!(codings(&["gzip"]), Err(HttpError::ChunkedNotLast));
        assert_eq!(codings(&["chunked, gzip"]), Err(HttpError::ChunkedNotLast));
        assert_eq!(
            codings(&["chunked", "gzip"]),
            Err(HttpError::ChunkedNotLast)
        );
        assert_eq!(codings(&["chunked, chunked"]), Err(HttpError::ChunkedTwice));
        assert_eq!(
            codings(&["chunked", "chunked"]),
            Err(HttpError::ChunkedTwice)
        );
        assert_eq!(
            codings(&["gzip", "chunked"]),
            Err(HttpError::UnsupportedTransferEncoding)
        );
        assert_eq!(codings(&[" , "]), Err(HttpError::Malformed));
    }
}
