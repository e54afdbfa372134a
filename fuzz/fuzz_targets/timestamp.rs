//! The timestamp forms (`ingest::timestamp::parse_text`), two ways, chosen
//! by the first byte:
//!
//! - raw: an arbitrary string. An accepted one must be in range, and the
//!   instant it names, written back out in canonical RFC 3339 and in
//!   JavaScript's `Date.toString()` form, must read back as the same
//!   instant (to the second, for the JavaScript form, which has no
//!   milliseconds).
//! - built: an instant and a UTC offset the fuzzer chooses, written in one
//!   of the accepted forms and spellings, must read back as that instant.
//!
//! The writer here is this file's own (a plain walk over years and
//! months), not busyapi's closed form, so the two check each other.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use busyapi::ingest::timestamp::parse_text;
use busyapi::limits::{TIMESTAMP_MS_MAX, TIMESTAMP_MS_MIN};
use libfuzzer_sys::fuzz_target;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
/// 1970-01-01 was a Thursday.
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MS_PER_DAY: i64 = 86_400_000;

/// Local civil time of an instant, already shifted by its offset.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
    second: i64,
    millis: i64,
    weekday: &'static str,
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: usize) -> i64 {
    const DAYS: [i64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    DAYS[month] + i64::from(month == 1 && is_leap(year))
}

/// Walks year by year and month by month from 1970: slow, and plainly
/// right, which is what an oracle for a closed-form parser wants.
fn civil(local_ms: i64) -> Civil {
    let all_days = local_ms.div_euclid(MS_PER_DAY);
    let in_day = local_ms.rem_euclid(MS_PER_DAY);
    let (mut year, mut days) = (1970, all_days);
    while days < 0 {
        year -= 1;
        days += 365 + i64::from(is_leap(year));
    }
    while days >= 365 + i64::from(is_leap(year)) {
        days -= 365 + i64::from(is_leap(year));
        year += 1;
    }
    let mut month = 0;
    while days >= days_in_month(year, month) {
        days -= days_in_month(year, month);
        month += 1;
    }
    Civil {
        year,
        month: month as i64 + 1,
        day: days + 1,
        hour: in_day / 3_600_000,
        minute: in_day / 60_000 % 60,
        second: in_day / 1000 % 60,
        millis: in_day % 1000,
        weekday: WEEKDAYS[all_days.rem_euclid(7) as usize],
    }
}

/// An offset of `minutes` east of UTC as `+hh:mm` (or `+hhmm`).
fn offset(minutes: i64, colon: bool) -> String {
    let sign = if minutes < 0 { '-' } else { '+' };
    let (h, m) = (minutes.abs() / 60, minutes.abs() % 60);
    if colon {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}{m:02}")
    }
}

fn rfc3339(ms: i64, offset_min: i64, sep: char, fraction: Option<usize>, zulu: char) -> String {
    let c = civil(ms + offset_min * 60_000);
    let mut s = format!(
        "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    );
    if let Some(digits) = fraction {
        let nanos = format!("{:03}000000", c.millis);
        s.push('.');
        s.push_str(&nanos[..digits]);
    }
    if offset_min == 0 && zulu != '+' {
        s.push(zulu);
    } else {
        s.push_str(&offset(offset_min, true));
    }
    s
}

fn js_date(ms: i64, offset_min: i64, zone: Option<&str>) -> String {
    let c = civil(ms + offset_min * 60_000);
    let mut s = format!(
        "{} {} {:02} {:04} {:02}:{:02}:{:02} GMT{}",
        c.weekday,
        MONTHS[(c.month - 1) as usize],
        c.day,
        c.year,
        c.hour,
        c.minute,
        c.second,
        offset(offset_min, false)
    );
    if let Some(z) = zone {
        s.push_str(&format!(" ({z})"));
    }
    s
}

fn raw(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(ms) = parse_text(s) else { return };
    assert!((TIMESTAMP_MS_MIN..=TIMESTAMP_MS_MAX).contains(&ms));
    let canonical = rfc3339(ms, 0, 'T', Some(3), 'Z');
    assert_eq!(parse_text(&canonical), Ok(ms), "{canonical}");
    let js = js_date(ms, 0, None);
    assert_eq!(parse_text(&js), Ok(ms - ms % 1000), "{js}");
}

#[derive(Arbitrary, Debug)]
struct Built {
    ms: u64,
    /// Minutes east of UTC, reduced to the accepted ±23:59.
    offset_min: i16,
    form: u8,
    fraction_digits: u8,
    zone: Option<String>,
}

fn built(u: &mut Unstructured<'_>) {
    let Ok(b) = Built::arbitrary(u) else { return };
    let ms = (b.ms % (TIMESTAMP_MS_MAX as u64 + 1)) as i64;
    let offset_min = i64::from(b.offset_min) % (24 * 60);
    let local_year = civil(ms + offset_min * 60_000).year;
    if !(0..=9999).contains(&local_year) {
        return; // A local date past year 9999 has no four-digit spelling.
    }
    let (text, want) = match b.form % 6 {
        0 => (rfc3339(ms, offset_min, 'T', None, 'Z'), ms - ms % 1000),
        1 => (rfc3339(ms, offset_min, 't', Some(3), 'z'), ms),
        2 => {
            let digits = 1 + usize::from(b.fraction_digits % 9);
            let kept = ms % 1000 / 10_i64.pow(3_u32.saturating_sub(digits as u32));
            let want = ms - ms % 1000 + kept * 10_i64.pow(3_u32.saturating_sub(digits as u32));
            (rfc3339(ms, offset_min, ' ', Some(digits), '+'), want)
        }
        3 => (
            rfc3339(ms - ms.rem_euclid(MS_PER_DAY), 0, 'T', None, 'Z')[..10].to_owned(),
            ms - ms.rem_euclid(MS_PER_DAY),
        ),
        4 => (js_date(ms, offset_min, None), ms - ms % 1000),
        _ => {
            let zone: String = b
                .zone
                .unwrap_or_default()
                .chars()
                .filter(|&c| c != ')')
                .collect();
            (js_date(ms, offset_min, Some(&zone)), ms - ms % 1000)
        }
    };
    assert_eq!(parse_text(&text), Ok(want), "{text}");
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(rest),
        Some((_, rest)) => built(&mut Unstructured::new(rest)),
        None => {}
    }
});
