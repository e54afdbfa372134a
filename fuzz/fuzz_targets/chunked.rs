//! The chunked body decoder (`http::chunked`, reached through
//! `http::request::parse_body`), two ways, chosen by the first byte:
//!
//! - raw: arbitrary bytes after a chunked head. A body that decodes must
//!   fit the cap and decode the same from its own bytes alone; fed as
//!   growing prefixes with one `chunked::Progress` kept between them (as
//!   a connection feeds its reads), every shorter prefix must ask for
//!   more bytes (never fail) and the whole must give the same body.
//! - built: a body the fuzzer chooses, cut into chunks of the fuzzer's
//!   sizes, with extensions and trailers, encoded as a client would. It
//!   must decode to exactly that body and end exactly at the encoding's end.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use busyapi::http::HttpError;
use busyapi::http::chunked::Progress;
use busyapi::http::request::{Body, ContentType, Framing, Head, Method, parse_body};
use busyapi::limits::BODY_BYTES_MAX_DEFAULT;
use busyapi_fuzz::prefix_cuts;
use libfuzzer_sys::fuzz_target;

/// A head as `parse_head` makes it for a chunked POST whose head is
/// `len` bytes long.
fn chunked_head(len: usize) -> Head<'static> {
    Head {
        method: Method::Post,
        path: "/api/usages",
        http10: false,
        keep_alive: true,
        expect_continue: false,
        content_type: ContentType::Json,
        media_type: b"application/json",
        idempotency_key: None,
        authorization: None,
        framing: Framing::Chunked,
        len,
    }
}

fn decode(
    buf: &[u8],
    head: &Head<'_>,
    scratch: &mut Vec<u8>,
    progress: &mut Progress,
) -> Result<Option<usize>, HttpError> {
    parse_body(buf, head, BODY_BYTES_MAX_DEFAULT, scratch, progress).map(|done| {
        done.map(|(body, end)| {
            assert_eq!(
                body,
                Body::Scratch,
                "chunked bodies land in the scratch buffer"
            );
            end
        })
    })
}

fn raw(data: &[u8]) {
    let head = chunked_head(0);
    let mut body = Vec::new();
    let Ok(Some(end)) = decode(data, &head, &mut body, &mut Progress::default()) else {
        return;
    };
    assert!(end <= data.len() && body.len() <= BODY_BYTES_MAX_DEFAULT);
    let mut again = Vec::new();
    let whole = decode(&data[..end], &head, &mut again, &mut Progress::default());
    assert_eq!(whole, Ok(Some(end)));
    assert_eq!(again, body);
    let (mut fed, mut progress) = (Vec::new(), Progress::default());
    for cut in prefix_cuts(end) {
        assert_eq!(
            decode(&data[..cut], &head, &mut fed, &mut progress),
            Ok(None),
            "a chunked body fed up to {cut} of {end} must ask for more"
        );
    }
    assert_eq!(
        decode(&data[..end], &head, &mut fed, &mut progress),
        Ok(Some(end))
    );
    assert_eq!(fed, body, "fed in reads, the body decodes as it does whole");
}

/// One chunk as a client sends it.
#[derive(Arbitrary, Debug)]
struct Chunk {
    size: u16,
    upper_hex: bool,
    leading_zeros: u8,
    extension: Option<Token>,
}

/// A token for an extension name or value, or a trailer field name.
#[derive(Arbitrary, Debug)]
struct Token(Vec<u8>);

impl Token {
    /// Keeps tchar bytes only (RFC 9110 §5.6.2), at least one.
    fn text(&self) -> String {
        let t: String = self
            .0
            .iter()
            .map(|&b| b as char)
            .filter(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(*c))
            .take(16)
            .collect();
        if t.is_empty() { "x".into() } else { t }
    }
}

#[derive(Arbitrary, Debug)]
struct Built {
    body: Vec<u8>,
    chunks: Vec<Chunk>,
    trailers: Vec<(Token, Token)>,
    after: Vec<u8>,
}

fn encode(b: &Built) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = &b.body[..];
    let mut chunks = b.chunks.iter().filter(|c| c.size > 0);
    while !rest.is_empty() {
        let (size, c) = match chunks.next() {
            Some(c) => (usize::from(c.size).min(rest.len()), Some(c)),
            None => (rest.len(), None),
        };
        let zeros = c.map_or(0, |c| usize::from(c.leading_zeros % 4));
        let hex = match c {
            Some(c) if c.upper_hex => format!("{size:X}"),
            _ => format!("{size:x}"),
        };
        out.extend(std::iter::repeat_n(b'0', zeros));
        out.extend_from_slice(hex.as_bytes());
        if let Some(ext) = c.and_then(|c| c.extension.as_ref()) {
            out.extend_from_slice(format!(";{}", ext.text()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&rest[..size]);
        out.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    out.extend_from_slice(b"0\r\n");
    for (name, value) in b.trailers.iter().take(8) {
        out.extend_from_slice(format!("{}: {}\r\n", name.text(), value.text()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn built(u: &mut Unstructured<'_>) {
    let Ok(b) = Built::arbitrary(u) else { return };
    if b.body.len() > BODY_BYTES_MAX_DEFAULT {
        return;
    }
    let encoded = encode(&b);
    let mut buf = encoded.clone();
    buf.extend_from_slice(&b.after);
    let mut body = Vec::new();
    assert_eq!(
        decode(&buf, &chunked_head(0), &mut body, &mut Progress::default()),
        Ok(Some(encoded.len()))
    );
    assert_eq!(body, b.body);
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => built(&mut Unstructured::new(rest)),
        None => {}
    }
});
