//! Chunked request bodies (RFC 9112 §7.1), decoded into one buffer.
//!
//! Incremental: a [`Progress`] kept by the connection says where the last
//! read's decoding stopped (a size line, a chunk's data, the trailers), so
//! a body that arrives in many small reads costs time linear in its size.
//!
//! Strict where leniency lets a proxy and busyapi disagree about where a
//! request ends (request smuggling): a chunk-size line must start with a hex
//! digit, end in CRLF, and hold no control bytes but tabs; sizes and the
//! trailer section are bounded.

use httparse::Status;

use super::HttpError;
use crate::limits::{HEADER_BYTES_MAX, HEADERS_MAX};

/// Where decoding a chunked body stopped, kept between reads: each read
/// then costs what it brought, not a decode of the body from its first
/// chunk again (which made a body arriving in many small reads cost time
/// quadratic in its size).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Offset in the request of what comes next; 0 before the first chunk.
    at: usize,
    expect: Expect,
    /// Bytes of the trailer section already searched for its end.
    trailers_searched: usize,
    /// Bytes looked at so far, to test that decoding is linear.
    #[cfg(test)]
    examined: usize,
}

/// What [`Progress::at`] points at.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Expect {
    #[default]
    SizeLine,
    /// A chunk's data of this many bytes, then CRLF.
    Data(usize),
    /// The trailer section after the last chunk.
    Trailers,
}

impl Progress {
    fn examined(&mut self, bytes: usize) {
        #[cfg(test)]
        {
            self.examined += bytes;
        }
        #[cfg(not(test))]
        let _ = bytes;
    }

    /// Decoding has not started: nothing was decoded into the output yet.
    pub fn fresh(&self) -> bool {
        self.at == 0
    }
}

/// Decodes the chunked body that starts at `start` in `buf` into `out`,
/// from where `p` says the last call stopped. `Ok(Some(end))`: the body
/// and its trailers end at `end`; `Ok(None)`: more bytes are needed.
pub(super) fn dechunk(
    buf: &[u8],
    start: usize,
    max: usize,
    out: &mut Vec<u8>,
    p: &mut Progress,
) -> Result<Option<usize>, HttpError> {
    if p.fresh() {
        p.at = start;
    }
    loop {
        match p.expect {
            Expect::SizeLine => {
                let rest = &buf[p.at..];
                let scanned = check_size_line(rest)?;
                p.examined(scanned);
                let (skip, size) = match httparse::parse_chunk_size(rest) {
                    Ok(Status::Complete(found)) => found,
                    Ok(Status::Partial) if rest.len() > CHUNK_LINE_BYTES_MAX => {
                        return Err(HttpError::BadChunk);
                    }
                    Ok(Status::Partial) => return Ok(None),
                    Err(_) => return Err(HttpError::BadChunk),
                };
                p.at += skip;
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > max - out.len() {
                    return Err(HttpError::BodyTooLarge { max_bytes: max });
                }
                p.expect = if size == 0 {
                    Expect::Trailers
                } else {
                    Expect::Data(size)
                };
            }
            Expect::Data(size) => {
                let (Some(data), Some(crlf)) = (
                    buf.get(p.at..p.at + size),
                    buf.get(p.at + size..p.at + size + 2),
                ) else {
                    return Ok(None);
                };
                if crlf != b"\r\n" {
                    return Err(HttpError::BadChunk);
                }
                out.extend_from_slice(data);
                p.examined(size + 2);
                p.at += size + 2;
                p.expect = Expect::SizeLine;
            }
            Expect::Trailers => return trailers(buf, p),
        }
    }
}

/// A chunk-size line with extensions longer than this is refused.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// Skips the trailer section after the last chunk; returns the request
/// end. The section is parsed once its blank line is here; until then
/// each call searches only the bytes the last one did not. Its lines must
/// end in CRLF, as size lines must: httparse would take a bare LF, and the
/// search for the blank line would not, so the same request would end in
/// one place when it came in one read and hang when its last byte came
/// in another (found by fuzz/fuzz_targets/chunked.rs).
fn trailers(buf: &[u8], p: &mut Progress) -> Result<Option<usize>, HttpError> {
    let rest = &buf[p.at..];
    if rest.starts_with(b"\r\n") {
        return Ok(Some(p.at + 2));
    }
    let from = p.trailers_searched.saturating_sub(3);
    // Only the section itself: what follows it is the next request's.
    let section_end = rest[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4);
    let section = &rest[..section_end.unwrap_or(rest.len())];
    if (from..section.len()).any(|i| section[i] == b'\n' && (i == 0 || section[i - 1] != b'\r')) {
        return Err(HttpError::BadChunk);
    }
    let found = section_end.is_some();
    p.examined(rest.len() - from);
    p.trailers_searched = rest.len();
    if !found {
        return if rest.len() > HEADER_BYTES_MAX {
            Err(HttpError::HeadersTooLarge)
        } else {
            Ok(None)
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    match httparse::parse_headers(rest, &mut headers) {
        Ok(Status::Complete((n, _))) if n > HEADER_BYTES_MAX => Err(HttpError::HeadersTooLarge),
        Ok(Status::Complete((n, _))) => Ok(Some(p.at + n)),
        Ok(Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(_) => Err(HttpError::BadChunk),
    }
}

/// Refuses a chunk-size line that httparse would accept but a proxy might
/// read differently: no leading hex digit (an empty size), a bare LF, or a
/// control byte in an extension. An unfinished line is left to the parser.
/// Returns the bytes looked at.
fn check_size_line(rest: &[u8]) -> Result<usize, HttpError> {
    if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(HttpError::BadChunk);
    }
    // No further than a size line may reach: what follows is chunk data.
    let window = &rest[..rest.len().min(CHUNK_LINE_BYTES_MAX + 2)];
    let line = window
        .iter()
        .position(|&b| b == b'\n')
        .map_or(window, |n| &window[..=n]);
    for (i, &b) in line.iter().enumerate() {
        let allowed = match b {
            b'\n' => i > 0 && line[i - 1] == b'\r',
            b'\r' => line.get(i + 1).is_none_or(|&next| next == b'\n'),
            b'\t' => true,
            _ => !b.is_ascii_control(),
        };
        if !allowed {
            return Err(HttpError::BadChunk);
        }
    }
    Ok(line.len())
}

#[cfg(test)]
mod tests {
    use super::super::request::{Body, Head, parse_body, parse_body_once, parse_head};
    use super::*;

    fn head(raw: &str) -> Result<Option<Head<'_>>, HttpError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn chunked_bodies_are_decoded_with_extensions_and_trailers() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{\"a\r\n2\r\n\":\r\n2\r\n1}\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let h = head(raw).expect("ok").expect("complete");
        let mut scratch = Vec::new();
        let (body, end) = parse_body_once(raw.as_bytes(), &h, 100, &mut scratch)
            .expect("ok")
            .expect("complete");
        assert_eq!(body, Body::Scratch);
        assert_eq!(scratch, b"{\"a\":1}");
        assert_eq!(&raw[end..], "NEXT");
        for cut in h.len..end {
            assert_eq!(
                parse_body_once(&raw.as_bytes()[..cut], &h, 100, &mut scratch),
                Ok(None),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn chunked_bodies_are_bounded_and_validated() {
        let big = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n";
        let h = head(big).expect("ok").expect("complete");
        assert_eq!(
            parse_body_once(big.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BodyTooLarge { max_bytes: 100 })
        );
        let bad = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let h = head(bad).expect("ok").expect("complete");
        assert_eq!(
            parse_body_once(bad.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BadChunk)
        );
        let no_crlf = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc";
        let h = head(no_crlf).expect("ok").expect("complete");
        assert_eq!(
            parse_body_once(no_crlf.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BadChunk)
        );
    }

    #[test]
    fn lines_that_proxies_could_read_differently_are_refused() {
        const HEAD: &str = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "\r\n\r\n",
            ";x\r\n\r\n",
            "2;a\nb\r\n{}\r\n0\r\n\r\n",
            "2\n{}\r\n0\r\n\r\n",
            "2;a\x01b\r\n{}\r\n0\r\n\r\n",
            "2\r{}\r\n0\r\n\r\n",
            BARE_LF_TRAILERS[0],
            BARE_LF_TRAILERS[1],
        ] {
            let raw = format!("{HEAD}{body}");
            let h = head(&raw).expect("ok").expect("complete");
            assert_eq!(
                parse_body_once(raw.as_bytes(), &h, 100, &mut Vec::new()),
                Err(HttpError::BadChunk),
                "{body:?}"
            );
        }
        let tab = format!("{HEAD}2;a=\tb\r\n{{}}\r\n0\r\n\r\n");
        let h = head(&tab).expect("ok").expect("complete");
        assert!(matches!(
            parse_body_once(tab.as_bytes(), &h, 100, &mut Vec::new()),
            Ok(Some((Body::Scratch, _)))
        ));
    }

    /// Trailer sections whose lines end in a bare LF (the second with a
    /// CRLF CRLF later in the same read, which once let it through whole).
    const BARE_LF_TRAILERS: [&str; 2] =
        ["2\r\n{}\r\n0\r\n\n", "2\r\n{}\r\n0\r\nX-T: t\n\r\n\r\n\r\n"];

    #[test]
    fn a_trailer_section_with_a_bare_lf_is_refused_when_fed_in_reads_too() {
        const HEAD: &str = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in BARE_LF_TRAILERS {
            let raw = format!("{HEAD}{body}");
            let h = head(&raw).expect("ok").expect("complete");
            let (mut p, mut out) = (Progress::default(), Vec::new());
            let fed = (h.len + 1..=raw.len())
                .map(|cut| parse_body(&raw.as_bytes()[..cut], &h, 100, &mut out, &mut p))
                .find(|r| *r != Ok(None));
            assert_eq!(fed, Some(Err(HttpError::BadChunk)), "fed: {body:?}");
        }
        // A bare LF after the section is the next request's business.
        let raw = format!("{HEAD}2\r\n{{}}\r\n0\r\nX-T: t\r\n\r\nGET\n");
        let h = head(&raw).expect("ok").expect("complete");
        let done = parse_body_once(raw.as_bytes(), &h, 100, &mut Vec::new());
        assert_eq!(done, Ok(Some((Body::Scratch, raw.len() - 4))));
    }

    /// Feeds the chunked request `raw` to the decoder `piece` bytes at a
    /// time, as small reads bring it, keeping one [`Progress`] across the
    /// feeds or, as before it was kept, starting afresh at every feed.
    /// Returns the body and the bytes the decoder looked at in all.
    fn feed(raw: &[u8], piece: usize, keep: bool) -> (Vec<u8>, usize) {
        let h = parse_head(raw).expect("ok").expect("complete");
        let (mut p, mut out, mut examined) = (Progress::default(), Vec::new(), 0);
        let mut cut = h.len;
        loop {
            cut = (cut + piece).min(raw.len());
            if !keep {
                examined += p.examined;
                p = Progress::default();
            }
            match parse_body(&raw[..cut], &h, 1 << 20, &mut out, &mut p) {
                Ok(Some(_)) => return (out, examined + p.examined),
                Ok(None) => assert!(cut < raw.len(), "incomplete at the end"),
                Err(e) => panic!("{e} at {cut}"),
            }
        }
    }

    #[test]
    fn a_body_arriving_in_many_small_reads_is_examined_in_time_linear_in_its_size() {
        let chunks: String = (0..1000).map(|i| format!("10\r\n{i:016}\r\n")).collect();
        let raw = format!(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}0\r\nX-Trailer: {}\r\n\r\n",
            "t".repeat(1000)
        );
        let body_bytes = raw.len() - raw.find("\r\n\r\n").expect("a head") - 4;
        for piece in [1, 3, 7] {
            let (out, examined) = feed(raw.as_bytes(), piece, true);
            assert_eq!(out.len(), 1000 * 16);
            assert_eq!(&out[..32], b"00000000000000000000000000000001");
            assert!(
                examined <= 2 * body_bytes,
                "{piece}-byte reads: {examined} bytes examined for a {body_bytes}-byte body"
            );
        }
        // The instrument sees the quadratic cost of starting over each read.
        let (out, examined) = feed(raw.as_bytes(), 7, false);
        assert_eq!(out.len(), 1000 * 16);
        assert!(examined > 100 * body_bytes, "{examined} for {body_bytes}");
    }
}
