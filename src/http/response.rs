//! Response encoding into a connection's write buffer.

use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the response ends the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conn {
    /// HTTP/1.1 default: nothing to say.
    KeepAlive,
    /// An HTTP/1.0 client asked for keep-alive: say yes explicitly.
    KeepAlive10,
    /// The connection closes after this response.
    Close,
}

/// The Content-Type of every JSON response.
pub const JSON: &str = "application/json";

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Writes a complete response. `body` is omitted (but its length still
/// announced) when `head_only` is set, as HEAD requires.
pub fn write(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    body: &[u8],
    conn: Conn,
    extra: &[(&str, &str)],
    head_only: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\nServer: busyapi\r\nDate: ");
    push_date(out);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
    for (name, value) in extra {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    match conn {
        Conn::KeepAlive => {}
        Conn::KeepAlive10 => out.extend_from_slice(b"\r\nConnection: keep-alive"),
        Conn::Close => out.extend_from_slice(b"\r\nConnection: close"),
    }
    out.extend_from_slice(b"\r\n\r\n");
    if !head_only {
        out.extend_from_slice(body);
    }
}

/// The longest `201 {"id": N}` [`write_created`] writes (178 bytes: a
/// 16-digit id, ids stay under 2^53, and `Connection: keep-alive`), with
/// room for a longer header; a test checks it. Pipelined usages count this
/// much each against the response budget.
pub const CREATED_BYTES_MAX: usize = 192;

/// `201 {"id": N}`, the hot path: no formatting machinery beyond itoa.
pub fn write_created(out: &mut Vec<u8>, id: u64, conn: Conn) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(id).as_bytes();
    let mut body = [0u8; 32];
    let prefix = b"{\"id\": ";
    body[..prefix.len()].copy_from_slice(prefix);
    body[prefix.len()..prefix.len() + digits.len()].copy_from_slice(digits);
    let len = prefix.len() + digits.len() + 1;
    body[len - 1] = b'}';
    write(out, 201, JSON, &body[..len], conn, &[], false);
}

/// `{"error": "..."}` with `message` escaped as a JSON string.
pub fn write_error(
    out: &mut Vec<u8>,
    status: u16,
    message: &str,
    conn: Conn,
    extra: &[(&str, &str)],
    head_only: bool,
) {
    let body = error_body(message, None);
    write(out, status, JSON, body.as_bytes(), conn, extra, head_only);
}

/// `{"error": "...", "index": N}`: a batch refused for its usage `index`.
pub fn write_error_at(out: &mut Vec<u8>, status: u16, message: &str, index: usize, conn: Conn) {
    let body = error_body(message, Some(index));
    write(out, status, JSON, body.as_bytes(), conn, &[], false);
}

/// An error body, `message` escaped as a JSON string.
fn error_body(message: &str, index: Option<usize>) -> String {
    let mut body = String::with_capacity(message.len() + 32);
    body.push_str("{\"error\": \"");
    for c in message.chars() {
        match c {
            '"' => body.push_str("\\\""),
            '\\' => body.push_str("\\\\"),
            c if (c as u32) < 0x20 => body.push_str(&format!("\\u{:04x}", c as u32)),
            c => body.push(c),
        }
    }
    body.push('"');
    if let Some(index) = index {
        body.push_str(", \"index\": ");
        body.push_str(itoa::Buffer::new().format(index));
    }
    body.push('}');
    body
}

/// `201 {"ids": [...]}`: a batch's ids, in the order its usages were sent.
pub fn write_created_batch(out: &mut Vec<u8>, ids: &[u64], conn: Conn) {
    let mut body = Vec::with_capacity(12 + ids.len() * 18);
    body.extend_from_slice(b"{\"ids\": [");
    let mut digits = itoa::Buffer::new();
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.extend_from_slice(b", ");
        }
        body.extend_from_slice(digits.format(*id).as_bytes());
    }
    body.extend_from_slice(b"]}");
    write(out, 201, JSON, &body, conn, &[], false);
}

/// The interim response to `Expect: 100-continue`.
pub fn write_continue(out: &mut Vec<u8>) {
    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
}

thread_local! {
    /// (unix second, IMF-fixdate) of the last Date header this thread wrote.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
}

fn push_date(out: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|cell| {
        let mut c = cell.borrow_mut();
        if c.0 != now {
            *c = (now, imf_fixdate(now));
        }
        out.extend_from_slice(&c.1);
    });
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` for a unix second.
fn imf_fixdate(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970 (Howard Hinnant's civil_from_days).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let s = format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    );
    let mut b = [0u8; 29];
    b.copy_from_slice(&s.as_bytes()[..29]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_date_header_is_imf_fixdate() {
        assert_eq!(&imf_fixdate(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &imf_fixdate(1_478_009_511),
            b"Tue, 01 Nov 2016 14:11:51 GMT"
        );
    }

    #[test]
    fn created_has_the_id_as_json() {
        let mut out = Vec::new();
        write_created(&mut out, 9_007_199_254_740_991, Conn::Close);
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.starts_with("HTTP/1.1 201 Created\r\n"));
        assert!(text.contains("\r\nContent-Type: application/json\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"id\": 9007199254740991}"));
        assert!(text.contains("Content-Length: 24\r\n"));
    }

    #[test]
    fn no_201_is_longer_than_created_bytes_max() {
        for conn in [Conn::KeepAlive, Conn::KeepAlive10, Conn::Close] {
            let mut out = Vec::new();
            write_created(&mut out, (1 << 53) - 1, conn);
            assert!(out.len() <= CREATED_BYTES_MAX, "{} bytes", out.len());
        }
    }

    #[test]
    fn error_messages_are_escaped_json() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            400,
            "bad \"x\"\n",
            Conn::KeepAlive,
            &[("Allow", "POST")],
            false,
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("\r\nAllow: POST\r\n"));
        assert!(text.ends_with(r#"{"error": "bad \"x\"\u000a"}"#), "{text}");
    }

    #[test]
    fn head_responses_announce_but_omit_the_body() {
        let mut out = Vec::new();
        write(
            &mut out,
            200,
            "text/plain",
            b"hello",
            Conn::KeepAlive,
            &[],
            true,
        );
        let text = String::from_utf8(out).expect("utf8");
        assert!(text.contains("Content-Length: 5\r\n") && text.ends_with("\r\n\r\n"));
    }
}
