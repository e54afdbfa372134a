//! Helpers shared by the fuzz targets in `fuzz_targets/`. The bounds here
//! are the harness's own (how much of an input a target explores per run),
//! not busyapi's: those live in `busyapi::limits`.

/// Prefixes checked per complete input. Checking every prefix of a 16 KiB
/// head is quadratic and slows the fuzzer a hundredfold; the last few bytes
/// (where the terminator is) and a spread of others find the same bugs.
const PREFIX_CUTS_MAX: usize = 24;

/// Cut points in `0..len` to re-parse: every one of the last eight, then
/// evenly spread ones, `PREFIX_CUTS_MAX` in all at most.
pub fn prefix_cuts(len: usize) -> impl Iterator<Item = usize> {
    let tail = len.saturating_sub(8)..len;
    let spread_n = PREFIX_CUTS_MAX - 8;
    let step = (len / spread_n).max(1);
    let spread = (0..len.saturating_sub(8)).step_by(step).take(spread_n);
    spread.chain(tail)
}
