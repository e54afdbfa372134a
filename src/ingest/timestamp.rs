//! The three accepted forms of `timestamp`, turned into UTC epoch milliseconds.
//!
//! - JavaScript `Date.prototype.toString()`:
//!   `Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)`. The weekday must be a weekday
//!   name; the zone name in parentheses is optional and ignored, because the
//!   numeric offset is what defines the instant.
//! - RFC 3339 / ISO 8601: `2016-11-01T14:11:51Z`, `2016-11-01T09:11:51.250-05:00`
//!   (a space or a lower-case `t` also separates date and time, as RFC 3339
//!   allows), and a bare date `2016-11-01`, read as midnight UTC exactly as
//!   JavaScript's `Date.parse` does. A date-time without an offset is
//!   rejected: it names no instant.
//! - A JSON integer of epoch milliseconds (handled by the caller, range-checked
//!   here by [`check_range`]).
//!
//! Everything is parsed by hand, without allocation: this runs once per
//! request. Leap seconds (`:60`) are rejected rather than silently moved.

use crate::limits::{TIMESTAMP_MS_MAX, TIMESTAMP_MS_MIN};

/// Why a timestamp was refused; the text goes to the client in the 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Matches none of the forms in the module docs.
    #[error(
        "timestamp is not in a known form (JavaScript Date.toString(), RFC 3339, or epoch milliseconds)"
    )]
    Format,
    /// A known form with a field out of range: month 13, 31 November, hour
    /// 24, second 60, an offset past 23:59.
    #[error("timestamp has a date or time field out of range")]
    Field,
    /// An RFC 3339 date-time with neither `Z` nor `±hh:mm`.
    #[error("timestamp has a date and time but no UTC offset")]
    MissingOffset,
    /// An instant before 1970 or after 9999 (`TIMESTAMP_MS_MIN` to
    /// `TIMESTAMP_MS_MAX` in [`crate::limits`]).
    #[error("timestamp is outside 1970-01-01 to 9999-12-31")]
    Range,
}

const MS_PER_SECOND: i64 = 1000;
const SECONDS_PER_MINUTE: i64 = 60;
const SECONDS_PER_DAY: i64 = 86_400;
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];

/// Parses a string timestamp in either text form.
pub fn parse_text(s: &str) -> Result<i64, TimestampError> {
    let b = s.as_bytes();
    let ms = if b.len() >= 4 && b[..4].iter().all(u8::is_ascii_digit) {
        parse_rfc3339(b)?
    } else {
        parse_js_date(b)?
    };
    check_range(ms)
}

/// Refuses instants outside the stored range.
pub fn check_range(ms: i64) -> Result<i64, TimestampError> {
    if (TIMESTAMP_MS_MIN..=TIMESTAMP_MS_MAX).contains(&ms) {
        Ok(ms)
    } else {
        Err(TimestampError::Range)
    }
}

/// A cursor over ASCII bytes with the few primitives the formats need.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn digits(&mut self, n: usize) -> Result<i64, TimestampError> {
        let end = self.pos + n;
        let part = self.b.get(self.pos..end).ok_or(TimestampError::Format)?;
        let mut v = 0i64;
        for &c in part {
            if !c.is_ascii_digit() {
                return Err(TimestampError::Format);
            }
            v = v * 10 + i64::from(c - b'0');
        }
        self.pos = end;
        Ok(v)
    }

    fn byte(&mut self, want: u8) -> Result<(), TimestampError> {
        self.take(|c| c == want).map(|_| ())
    }

    fn take(&mut self, ok: impl Fn(u8) -> bool) -> Result<u8, TimestampError> {
        match self.b.get(self.pos) {
            Some(&c) if ok(c) => {
                self.pos += 1;
                Ok(c)
            }
            _ => Err(TimestampError::Format),
        }
    }

    fn word(&mut self, n: usize) -> Result<&'a [u8], TimestampError> {
        let w = self
            .b
            .get(self.pos..self.pos + n)
            .ok_or(TimestampError::Format)?;
        self.pos += n;
        Ok(w)
    }

    fn rest(&self) -> &'a [u8] {
        &self.b[self.pos..]
    }
}

fn parse_rfc3339(b: &[u8]) -> Result<i64, TimestampError> {
    let mut c = Cursor { b, pos: 0 };
    let year = c.digits(4)?;
    c.byte(b'-')?;
    let month = c.digits(2)?;
    c.byte(b'-')?;
    let day = c.digits(2)?;
    let days = days_from_civil(year, month, day)?;
    if c.rest().is_empty() {
        return Ok(days * SECONDS_PER_DAY * MS_PER_SECOND);
    }
    c.take(|x| x == b'T' || x == b't' || x == b' ')?;
    let (hour, minute) = (c.digits(2)?, c.colon_then(2)?);
    let second = c.colon_then(2)?;
    let mut millis = 0;
    if c.take(|x| x == b'.' || x == b',').is_ok() {
        millis = fraction_ms(&mut c)?;
    }
    let offset_s = match c.rest().first() {
        None => return Err(TimestampError::MissingOffset),
        Some(b'Z' | b'z') => {
            c.pos += 1;
            0
        }
        Some(_) => {
            let sign = sign_of(c.take(|x| x == b'+' || x == b'-')?);
            let (h, m) = (c.digits(2)?, c.colon_then(2)?);
            sign * offset_seconds(h, m)?
        }
    };
    if !c.rest().is_empty() {
        return Err(TimestampError::Format);
    }
    instant_ms(days, hour, minute, second, millis, offset_s)
}

impl Cursor<'_> {
    fn colon_then(&mut self, n: usize) -> Result<i64, TimestampError> {
        self.byte(b':')?;
        self.digits(n)
    }
}

/// One to nine fraction digits, truncated to milliseconds.
fn fraction_ms(c: &mut Cursor<'_>) -> Result<i64, TimestampError> {
    let start = c.pos;
    let mut ms = 0;
    while let Some(&d) = c.b.get(c.pos).filter(|d| d.is_ascii_digit()) {
        if c.pos - start < 3 {
            ms = ms * 10 + i64::from(d - b'0');
        }
        c.pos += 1;
    }
    let n = c.pos - start;
    if n == 0 || n > 9 {
        return Err(TimestampError::Format);
    }
    for _ in n..3 {
        ms *= 10;
    }
    Ok(ms)
}

fn parse_js_date(b: &[u8]) -> Result<i64, TimestampError> {
    let mut c = Cursor { b, pos: 0 };
    let weekday = c.word(3)?;
    if !WEEKDAYS.iter().any(|w| w.as_slice() == weekday) {
        return Err(TimestampError::Format);
    }
    c.byte(b' ')?;
    let month_name = c.word(3)?;
    let month = MONTHS
        .iter()
        .position(|m| m.as_slice() == month_name)
        .ok_or(TimestampError::Format)? as i64
        + 1;
    c.byte(b' ')?;
    let day = c.digits(2)?;
    c.byte(b' ')?;
    let year = c.digits(4)?;
    c.byte(b' ')?;
    let hour = c.digits(2)?;
    let minute = c.colon_then(2)?;
    let second = c.colon_then(2)?;
    c.byte(b' ')?;
    if c.word(3)? != b"GMT" {
        return Err(TimestampError::Format);
    }
    let sign = sign_of(c.take(|x| x == b'+' || x == b'-')?);
    let (h, m) = (c.digits(2)?, c.digits(2)?);
    let offset_s = sign * offset_seconds(h, m)?;
    let rest = c.rest();
    let zone_ok = rest.is_empty()
        || (rest.len() >= 3
            && rest.starts_with(b" (")
            && rest.ends_with(b")")
            && !rest[2..rest.len() - 1].contains(&b')'));
    if !zone_ok {
        return Err(TimestampError::Format);
    }
    let days = days_from_civil(year, month, day)?;
    instant_ms(days, hour, minute, second, 0, offset_s)
}

fn sign_of(c: u8) -> i64 {
    if c == b'-' { -1 } else { 1 }
}

fn offset_seconds(hours: i64, minutes: i64) -> Result<i64, TimestampError> {
    if hours > 23 || minutes > 59 {
        return Err(TimestampError::Field);
    }
    Ok((hours * 60 + minutes) * SECONDS_PER_MINUTE)
}

fn instant_ms(
    days: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
    offset_s: i64,
) -> Result<i64, TimestampError> {
    if hour > 23 || minute > 59 || second > 59 {
        return Err(TimestampError::Field);
    }
    let local_s = days * SECONDS_PER_DAY + hour * 3600 + minute * SECONDS_PER_MINUTE + second;
    Ok((local_s - offset_s) * MS_PER_SECOND + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`), after checking the day exists in that month.
fn days_from_civil(year: i64, month: i64, day: i64) -> Result<i64, TimestampError> {
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err(TimestampError::Field);
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Ok(era * 146_097 + doe - 719_468)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2016-11-01T14:11:51Z, the instant of the contract's example.
    const EXAMPLE_MS: i64 = 1_478_009_511_000;

    #[test]
    fn javascript_date_to_string_with_zone_name_is_read_with_its_offset() {
        assert_eq!(
            parse_text("Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)"),
            Ok(EXAMPLE_MS)
        );
        assert_eq!(
            parse_text("Tue Nov 01 2016 15:11:51 GMT+0100 (Central European Standard Time)"),
            Ok(EXAMPLE_MS)
        );
    }

    #[test]
    fn javascript_date_without_zone_name_is_accepted() {
        assert_eq!(
            parse_text("Tue Nov 01 2016 14:11:51 GMT+0000"),
            Ok(EXAMPLE_MS)
        );
    }

    #[test]
    fn rfc3339_forms_agree_on_the_same_instant() {
        for s in [
            "2016-11-01T14:11:51Z",
            "2016-11-01t14:11:51z",
            "2016-11-01 14:11:51Z",
            "2016-11-01T09:11:51-05:00",
            "2016-11-01T19:41:51+05:30",
            "2016-11-01T14:11:51.000Z",
            "2016-11-01T14:11:51.0004999Z",
        ] {
            assert_eq!(parse_text(s), Ok(EXAMPLE_MS), "{s}");
        }
    }

    #[test]
    fn fractions_are_truncated_to_milliseconds() {
        assert_eq!(parse_text("2016-11-01T14:11:51.5Z"), Ok(EXAMPLE_MS + 500));
        assert_eq!(parse_text("2016-11-01T14:11:51.25Z"), Ok(EXAMPLE_MS + 250));
        assert_eq!(
            parse_text("2016-11-01T14:11:51.123456789Z"),
            Ok(EXAMPLE_MS + 123)
        );
        assert_eq!(
            parse_text("2016-11-01T14:11:51.1234567890Z"),
            Err(TimestampError::Format)
        );
        assert_eq!(
            parse_text("2016-11-01T14:11:51.Z"),
            Err(TimestampError::Format)
        );
    }

    #[test]
    fn a_bare_date_is_midnight_utc_like_javascript() {
        assert_eq!(parse_text("2016-11-01"), Ok(1_477_958_400_000));
        assert_eq!(parse_text("1970-01-01"), Ok(0));
    }

    #[test]
    fn a_date_time_without_offset_is_refused() {
        assert_eq!(
            parse_text("2016-11-01T14:11:51"),
            Err(TimestampError::MissingOffset)
        );
    }

    #[test]
    fn impossible_dates_and_times_are_refused() {
        for s in [
            "2016-02-30T00:00:00Z",
            "2015-02-29T00:00:00Z",
            "2016-13-01T00:00:00Z",
            "2016-00-01T00:00:00Z",
            "2016-11-01T24:00:00Z",
            "2016-11-01T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2016-11-01T10:00:00+24:00",
            "Tue Nov 31 2016 09:11:51 GMT-0500",
        ] {
            assert_eq!(parse_text(s), Err(TimestampError::Field), "{s}");
        }
        assert_eq!(
            parse_text("2000-02-29"),
            Ok(951_782_400_000),
            "2000 is a leap year"
        );
    }

    #[test]
    fn garbage_is_a_format_error() {
        for s in [
            "",
            "now",
            "yesterday at noon",
            "2016",
            "2016-11-01T14:11:51Zjunk",
            "2016-11-01T14:11Z",
            "Tue Nov 01 2016",
            "Xyz Nov 01 2016 09:11:51 GMT-0500 (CDT)",
            "Tue Foo 01 2016 09:11:51 GMT-0500 (CDT)",
            "Tue Nov 01 2016 09:11:51 UTC-0500 (CDT)",
            "Tue Nov 01 2016 09:11:51 GMT-0500 CDT",
            "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT",
            "Tue Nov 01 2016 09:11:51 GMT-0500 (C)T)",
            "１９７０-01-01",
        ] {
            assert_eq!(parse_text(s), Err(TimestampError::Format), "{s:?}");
        }
    }

    #[test]
    fn instants_outside_the_stored_range_are_refused() {
        assert_eq!(
            parse_text("1969-12-31T23:59:59Z"),
            Err(TimestampError::Range)
        );
        assert_eq!(parse_text("9999-12-31T23:59:59.999Z"), Ok(TIMESTAMP_MS_MAX));
        assert_eq!(
            parse_text("9999-12-31T23:59:59-00:01"),
            Err(TimestampError::Range)
        );
        assert_eq!(check_range(-1), Err(TimestampError::Range));
        assert_eq!(check_range(EXAMPLE_MS), Ok(EXAMPLE_MS));
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), Ok(0));
        assert_eq!(days_from_civil(2000, 3, 1), Ok(11_017));
        assert_eq!(days_from_civil(1969, 12, 31), Ok(-1));
    }
}
