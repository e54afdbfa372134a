//! The value parsers of the flags: numbers within bounds, byte sizes, and
//! MongoDB's names. Each is a plain function clap calls on the flag's text,
//! whether it came from the command line, the environment, the file or the
//! default, so every source is checked by the same code.
//!
//! A value that parses but is not acceptable (out of bounds, not a name
//! MongoDB takes) is refused with [`Refused`]; [`super::Config::load`] turns
//! that into [`super::ConfigError::Invalid`], which names the flag. Text that
//! does not parse at all stays clap's own error.

use std::error::Error;
use std::fmt::Display;
use std::ops::RangeBounds;
use std::str::FromStr;

use clap::builder::TypedValueParser;

/// Why a well-formed value is not accepted, in words that follow the flag's
/// name: "--node-id: must be 0 to 1023".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

type Parsed<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// What a bounded flag can hold: compared with its bounds, shown in the
/// reason, and kept by clap.
pub trait Bounded: PartialOrd + Display + Clone + Send + Sync + 'static {}
impl<T: PartialOrd + Display + Clone + Send + Sync + 'static> Bounded for T {}

/// A number from `min` to `max`.
pub fn within<T>(min: T, max: T) -> impl TypedValueParser<Value = T>
where
    T: Bounded + FromStr<Err: Error + Send + Sync + 'static>,
{
    let reason = format!("must be {min} to {max}");
    bounded(number::<T>, min..=max, reason)
}

/// A number no smaller than `min`.
pub fn at_least<T>(min: T) -> impl TypedValueParser<Value = T>
where
    T: Bounded + FromStr<Err: Error + Send + Sync + 'static>,
{
    let reason = format!("must be at least {min}");
    bounded(number::<T>, min.., reason)
}

/// A number no larger than `max`.
pub fn at_most<T>(max: T) -> impl TypedValueParser<Value = T>
where
    T: Bounded + FromStr<Err: Error + Send + Sync + 'static>,
{
    let reason = format!("must be at most {max}");
    bounded(number::<T>, ..=max, reason)
}

/// A byte size (see [`parse_bytes`]) from `min` to `max`.
pub fn bytes_within<T: Bounded + TryFrom<u64>>(min: T, max: T) -> impl TypedValueParser<Value = T> {
    let reason = format!("must be {min} to {max}");
    bounded(bytes::<T>, min..=max, reason)
}

/// A byte size (see [`parse_bytes`]) no smaller than `min`.
pub fn bytes_at_least<T: Bounded + TryFrom<u64>>(min: T) -> impl TypedValueParser<Value = T> {
    let reason = format!("must be at least {min}");
    bounded(bytes::<T>, min.., reason)
}

/// Parses with `parse`, then refuses what is outside `range` with `reason`.
fn bounded<T: Bounded>(
    parse: fn(&str) -> Parsed<T>,
    range: impl RangeBounds<T> + Clone + Send + Sync + 'static,
    reason: String,
) -> impl TypedValueParser<Value = T> {
    move |s: &str| -> Parsed<T> {
        let value = parse(s)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(Box::new(Refused(reason.clone())))
        }
    }
}

fn number<T: FromStr<Err: Error + Send + Sync + 'static>>(s: &str) -> Parsed<T> {
    Ok(s.parse()?)
}

fn bytes<T: TryFrom<u64>>(s: &str) -> Parsed<T> {
    let n = parse_bytes(s)?;
    T::try_from(n).map_err(|_| format!("'{s}' is too large").into())
}

/// `4096`, `16KiB`, `64MiB`, `4GiB` (also `K`, `M`, `G`, `KB`, `MB`, `GB`,
/// all binary multiples).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a byte size"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(format!("unknown unit in '{s}' (use KiB, MiB or GiB)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// `n` in the largest binary unit that divides it (`4GiB`, `16KiB`, `1000`):
/// how a byte-size default is shown in `--help`, read back by
/// [`parse_bytes`].
pub fn bytes_text(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A connection string the driver can parse; nothing is contacted.
pub fn mongodb_uri(s: &str) -> Parsed<String> {
    match mongodb::options::ConnectionString::parse(s) {
        Ok(_) => Ok(s.to_owned()),
        Err(e) => Err(Box::new(Refused(e.to_string()))),
    }
}

/// A database or collection name MongoDB accepts.
pub fn mongodb_name(s: &str) -> Parsed<String> {
    if !s.is_empty() && !s.contains(['$', '\0', '/', ' ']) {
        Ok(s.to_owned())
    } else {
        Err(Box::new(Refused(
            "must be non-empty, without '$', '/', spaces or NUL".into(),
        )))
    }
}

/// The default of `--workers`: the cores this process may run on.
pub fn cores() -> usize {
    core_affinity::get_core_ids().map_or(1, |c| c.len().max(1))
}
