//! Batch POSTs: a JSON array or NDJSON of usages on `/api/usages`, all or
//! nothing, one `201 {"ids": [...]}` in the order sent. Against a dead
//! MongoDB port: what is written is read from `/api/stats`.

use super::*;
use common::{batch_request, json_array, metric, post_request};

const JSON: &str = "application/json";
const NDJSON: &str = "application/x-ndjson";

/// A valid usage of patient `p{i}`, distinct by its medication.
fn nth(i: usize) -> String {
    format!(r#"{{"patientId": "p{i}", "timestamp": {i}, "medication": "m{i}"}}"#)
}

fn nths(n: usize) -> Vec<String> {
    (0..n).map(nth).collect()
}

/// `nth(i)` with its own eventId.
fn with_event(i: usize) -> String {
    format!(r#"{{"patientId": "p{i}", "timestamp": {i}, "medication": "m", "eventId": "e{i}"}}"#)
}

fn post_batch(s: &Server, content_type: &str, body: &str) -> Response {
    exchange(s, &batch_request(content_type, body))
}

#[test]
fn an_array_and_ndjson_get_201_with_their_ids_in_the_order_sent() {
    let s = start();
    let r = post_batch(&s, JSON, &json_array(&nths(3)));
    assert_eq!(r.ids(), [1, 2, 3]);
    // CRLF, a blank line and no final newline: three usages, no more.
    let lines = format!("{}\r\n\r\n{}\n   \n{}", nth(3), nth(4), nth(5));
    assert_eq!(post_batch(&s, NDJSON, &lines).ids(), [4, 5, 6]);
    let lines = format!("{}\n", nth(6));
    assert_eq!(post_batch(&s, NDJSON, &lines).ids(), [7]);
    assert_eq!(s.written(), (7, 7));
    let batches = metric(&s, "busyapi_batches_total");
    let records = metric(&s, "busyapi_batch_records_total");
    assert_eq!((batches, records), (3.0, 7.0));
}

#[test]
fn one_bad_usage_first_in_the_middle_or_last_refuses_the_batch_naming_its_index() {
    let s = start();
    let bad = r#"{"patientId": "x", "timestamp": 0}"#;
    for at in [0, 2, 4] {
        let mut usages = nths(5);
        usages[at] = bad.to_owned();
        let lines = usages.join("\n");
        for (content_type, body) in [(JSON, json_array(&usages)), (NDJSON, lines)] {
            let r = post_batch(&s, content_type, &body);
            let want = format!("usage {at}: missing field medication");
            assert_error(&r, 400, &want);
            assert_eq!(r.json()["index"], at, "{content_type}: {}", r.text());
            assert_eq!(r.header("connection"), None, "the connection stays open");
        }
    }
    let not_an_object = json_array(&[nth(0), "[1]".into()]);
    let r = post_batch(&s, JSON, &not_an_object);
    assert_error(&r, 400, "usage 1: body must be a JSON object");
    assert_eq!(r.json()["index"], 1);
    assert_error(&post_batch(&s, JSON, "[{}"), 400, "body is not valid JSON");
    assert_nothing_written(&s);
}

#[test]
fn an_empty_batch_gets_400_and_an_idempotency_key_on_a_batch_too() {
    let s = start();
    let empty = "a batch must hold at least one usage";
    assert_error(&post_batch(&s, JSON, " [ ] "), 400, empty);
    assert_error(&post_batch(&s, NDJSON, "\r\n\n"), 400, empty);
    assert_error(&post_batch(&s, NDJSON, ""), 400, empty);
    let keyed = post_with(
        "Content-Type: application/json\r\nIdempotency-Key: k1\r\n",
        json_array(&nths(2)).as_bytes(),
    );
    assert_error(
        &exchange(&s, &keyed),
        400,
        "Idempotency-Key names one event",
    );
    assert_nothing_written(&s);
}

#[test]
fn more_usages_than_batch_max_records_get_413_and_nothing_is_written() {
    let s = Server::start(Opts::default().arg("--batch-max-records 3"));
    let too_many = "a batch holds at most 3 usages";
    assert_error(&post_batch(&s, JSON, &json_array(&nths(4))), 413, too_many);
    let lines = nths(4).join("\n");
    assert_error(&post_batch(&s, NDJSON, &lines), 413, too_many);
    assert_nothing_written(&s);
    assert_eq!(post_batch(&s, JSON, &json_array(&nths(3))).ids(), [2, 3, 4]);
}

#[test]
fn a_batch_over_batch_max_bytes_gets_413_and_one_over_max_body_bytes_is_taken() {
    let s = Server::start(Opts::default().arg("--batch-max-bytes 2KiB"));
    let big = json_array(&nths(60));
    assert!(big.len() > 2048);
    assert_refused(
        &s,
        &batch_request(JSON, &big),
        413,
        "body larger than 2048 bytes",
    );
    let lines = nths(60).join("\n");
    assert_refused(
        &s,
        &batch_request(NDJSON, &lines),
        413,
        "body larger than 2048 bytes",
    );
    assert_refused(
        &s,
        &post_chunked(&one_chunk(&big)),
        413,
        "body larger than 2048 bytes",
    );
    assert_nothing_written(&s);
    // By default a batch may be far larger than a single usage may.
    let s = start();
    let big = json_array(&nths(400));
    assert!(big.len() > BODY_BYTES_MAX);
    assert_eq!(post_batch(&s, JSON, &big).ids().len(), 400);
    let chunked = exchange(&s, &post_chunked(&one_chunk(&big)));
    assert_eq!(chunked.ids().first(), Some(&401));
    // ...and a single usage over its own cap still gets 413.
    let over = usage_of_len(BODY_BYTES_MAX + 1);
    assert_refused(
        &s,
        &post_json(over.as_bytes()),
        413,
        "body larger than 16384 bytes",
    );
    let chunked = exchange(&s, &post_chunked(&one_chunk(&over)));
    assert_error(&chunked, 413, "body larger than 16384 bytes");
}

#[test]
fn batches_and_single_usages_on_one_keep_alive_connection_answer_in_order() {
    let s = start();
    let mut c = s.connect();
    let requests = [
        post_request(&nth(0)),
        batch_request(JSON, &json_array(&nths(3))),
        post_request(&nth(1)),
        batch_request(NDJSON, &nths(2).join("\n")),
        batch_request(JSON, &json_array(&[nth(0), "{}".into()])),
        post_request(&nth(2)),
    ];
    // One at a time, then all pipelined in one write.
    for pipelined in [false, true] {
        let base = s.written().1;
        if pipelined {
            c.send(&requests.concat());
        }
        let mut answers = Vec::new();
        for req in &requests {
            if !pipelined {
                c.send(req);
            }
            answers.push(c.response());
        }
        let ids = |r: &Response| match r.status {
            201 if r.json().get("ids").is_some() => r.ids(),
            201 => vec![r.id()],
            _ => vec![],
        };
        let got: Vec<Vec<u64>> = answers.iter().map(ids).collect();
        let b = |k: u64| base + k;
        let want = [
            vec![b(1)],
            vec![b(2), b(3), b(4)],
            vec![b(5)],
            vec![b(6), b(7)],
            vec![],
            vec![b(8)],
        ];
        assert_eq!(got, want, "pipelined: {pipelined}");
        assert_error(&answers[4], 400, "usage 1: missing field patientId");
    }
    assert_eq!(s.written(), (16, 16));
}

#[test]
fn a_retried_batch_gets_its_first_ids_again_and_writes_nothing_twice() {
    let s = start();
    let first: Vec<String> = (0..3).map(with_event).collect();
    let ids = post_batch(&s, JSON, &json_array(&first)).ids();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(post_batch(&s, NDJSON, &first.join("\n")).ids(), ids);
    assert_eq!(s.written(), (3, 3), "the retry wrote nothing");
    // A retry that adds a new event: the known ones keep their ids.
    let mut more = first.clone();
    more.insert(1, with_event(7));
    assert_eq!(post_batch(&s, JSON, &json_array(&more)).ids(), [1, 4, 2, 3]);
    assert_eq!(s.written(), (4, 4));
    assert_eq!(metric(&s, "busyapi_event_retries_answered_total"), 6.0);
    // A single POST of an event a batch wrote answers the batch's id.
    assert_eq!(s.post(&with_event(7)).id(), 4);
}

#[test]
fn an_event_sent_twice_in_one_batch_is_written_once_and_both_get_its_id() {
    let s = start();
    let twice = [with_event(0), with_event(1), with_event(0)];
    assert_eq!(post_batch(&s, JSON, &json_array(&twice)).ids(), [1, 2, 1]);
    assert_eq!(s.written(), (2, 2));
    // One eventId for two patients is two events, in a batch too.
    let other = r#"{"patientId": "q", "timestamp": 0, "medication": "m", "eventId": "e0"}"#;
    let two = [with_event(0), other.to_owned()];
    assert_eq!(post_batch(&s, JSON, &json_array(&two)).ids(), [1, 3]);
    assert_eq!(s.written(), (3, 3));
}

#[test]
fn a_batch_the_wal_cannot_take_gets_503_with_retry_after_and_nothing_of_it_is_written() {
    let s = Server::start(Opts::default().env("FAILPOINTS", "wal::write=1*return"));
    let r = post_batch(&s, JSON, &json_array(&nths(3)));
    assert_error(&r, 503, "the write-ahead log cannot be written");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(s.written(), (0, 0), "a refused batch was written");
    assert_eq!(post_batch(&s, JSON, &json_array(&nths(3))).ids(), [1, 2, 3]);
}

#[test]
fn a_batch_over_the_wal_quota_gets_503_like_a_single_usage() {
    let s = Server::start(Opts::default().arg("--wal-max-bytes 1MiB"));
    let full = json_array(&nths(1000));
    let mut refused = None;
    for _ in 0..100 {
        let r = post_batch(&s, JSON, &full);
        if r.status != 201 {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the quota was never reached");
    assert_error(&r, 503, "retry later");
    assert_eq!(r.header("retry-after"), Some("1"));
    let written = s.written();
    assert_error(&post_batch(&s, NDJSON, &nth(0)), 503, "retry later");
    assert_error(&s.post(USAGE), 503, "retry later");
    assert_eq!(s.written(), written, "nothing was written over the quota");
}
