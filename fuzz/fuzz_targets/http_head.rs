//! The request head parser (`http::request::parse_head`) on arbitrary bytes.
//!
//! Beyond "never panics": a connection re-parses its buffer from the start
//! after every read, so a head split across reads must parse as it does
//! whole. A complete head must read the same from its own bytes alone, and
//! every shorter prefix must ask for more bytes, never fail.
#![no_main]

use busyapi::http::request::parse_head;
use busyapi::limits::HEADER_BYTES_MAX;
use busyapi_fuzz::prefix_cuts;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Some(head)) = parse_head(data) else {
        return;
    };
    assert!(head.len <= data.len() && head.len <= HEADER_BYTES_MAX);
    assert!(
        data[..head.len].ends_with(b"\n"),
        "a head ends at its blank line"
    );
    assert_eq!(parse_head(&data[..head.len]), Ok(Some(head)));
    for cut in prefix_cuts(head.len) {
        assert_eq!(
            parse_head(&data[..cut]),
            Ok(None),
            "a head cut at {cut} of {} must ask for more",
            head.len
        );
    }
});
