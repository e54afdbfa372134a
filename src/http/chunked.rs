//! Chunked request bodies (RFC 9112 §7.1), decoded into one buffer.
//!
//! Strict where leniency lets a proxy and busyapi disagree about where a
//! request ends (request smuggling): a chunk-size line must start with a hex
//! digit, end in CRLF, and hold no control bytes but tabs; sizes and the
//! trailer section are bounded.

use httparse::Status;

use super::HttpError;
use crate::limits::{HEADER_BYTES_MAX, HEADERS_MAX};

pub(super) fn dechunk(
    buf: &[u8],
    mut pos: usize,
    max: usize,
    out: &mut Vec<u8>,
) -> Result<Option<usize>, HttpError> {
    loop {
        check_size_line(&buf[pos..])?;
        let (skip, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(Status::Complete(found)) => found,
            Ok(Status::Partial) if buf.len() - pos > CHUNK_LINE_BYTES_MAX => {
                return Err(HttpError::BadChunk);
            }
            Ok(Status::Partial) => return Ok(None),
            Err(_) => return Err(HttpError::BadChunk),
        };
        pos += skip;
        if size == 0 {
            return trailers(buf, pos);
        }
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > max - out.len() {
            return Err(HttpError::BodyTooLarge { max_bytes: max });
        }
        let Some(data) = buf.get(pos..pos + size) else {
            return Ok(None);
        };
        match buf.get(pos + size..pos + size + 2) {
            None => return Ok(None),
            Some(b"\r\n") => {}
            Some(_) => return Err(HttpError::BadChunk),
        }
        out.extend_from_slice(data);
        pos += size + 2;
    }
}

/// A chunk-size line with extensions longer than this is refused.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

/// Skips the trailer section after the last chunk; returns the request end.
fn trailers(buf: &[u8], pos: usize) -> Result<Option<usize>, HttpError> {
    let rest = &buf[pos..];
    if rest.starts_with(b"\r\n") {
        return Ok(Some(pos + 2));
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    match httparse::parse_headers(rest, &mut headers) {
        Ok(Status::Complete((n, _))) => Ok(Some(pos + n)),
        Ok(Status::Partial) if rest.len() > HEADER_BYTES_MAX => Err(HttpError::HeadersTooLarge),
        Ok(Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(_) => Err(HttpError::BadChunk),
    }
}

/// Refuses a chunk-size line that httparse would accept but a proxy might
/// read differently: no leading hex digit (an empty size), a bare LF, or a
/// control byte in an extension. An unfinished line is left to the parser.
fn check_size_line(rest: &[u8]) -> Result<(), HttpError> {
    if rest.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
        return Err(HttpError::BadChunk);
    }
    let line = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest, |n| &rest[..=n]);
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::request::{Body, Head, parse_body, parse_head};
    use super::*;

    fn head(raw: &str) -> Result<Option<Head<'_>>, HttpError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn chunked_bodies_are_decoded_with_extensions_and_trailers() {
        let raw = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\n{\"a\r\n2\r\n\":\r\n2\r\n1}\r\n0\r\nX-Trailer: t\r\n\r\nNEXT";
        let h = head(raw).expect("ok").expect("complete");
        let mut scratch = Vec::new();
        let (body, end) = parse_body(raw.as_bytes(), &h, 100, &mut scratch)
            .expect("ok")
            .expect("complete");
        assert_eq!(body, Body::Scratch);
        assert_eq!(scratch, b"{\"a\":1}");
        assert_eq!(&raw[end..], "NEXT");
        for cut in h.len..end {
            assert_eq!(
                parse_body(&raw.as_bytes()[..cut], &h, 100, &mut scratch),
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
            parse_body(big.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BodyTooLarge { max_bytes: 100 })
        );
        let bad = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        let h = head(bad).expect("ok").expect("complete");
        assert_eq!(
            parse_body(bad.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BadChunk)
        );
        let no_crlf = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc";
        let h = head(no_crlf).expect("ok").expect("complete");
        assert_eq!(
            parse_body(no_crlf.as_bytes(), &h, 100, &mut Vec::new()),
            Err(HttpError::BadChunk)
        );
    }

    #[test]
    fn size_lines_that_proxies_could_read_differently_are_refused() {
        const HEAD: &str = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "\r\n\r\n",
            ";x\r\n\r\n",
            "2;a\nb\r\n{}\r\n0\r\n\r\n",
            "2\n{}\r\n0\r\n\r\n",
            "2;a\x01b\r\n{}\r\n0\r\n\r\n",
            "2\r{}\r\n0\r\n\r\n",
        ] {
            let raw = format!("{HEAD}{body}");
            let h = head(&raw).expect("ok").expect("complete");
            assert_eq!(
                parse_body(raw.as_bytes(), &h, 100, &mut Vec::new()),
                Err(HttpError::BadChunk),
                "{body:?}"
            );
        }
        let tab = format!("{HEAD}2;a=\tb\r\n{{}}\r\n0\r\n\r\n");
        let h = head(&tab).expect("ok").expect("complete");
        assert!(matches!(
            parse_body(tab.as_bytes(), &h, 100, &mut Vec::new()),
            Ok(Some((Body::Scratch, _)))
        ));
    }
}
