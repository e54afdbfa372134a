//! A steady load at a fixed rate, each answer kept with the moment it came,
//! so a test can say whether 201s went on at that rate through a window.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::http::Http;

/// One POST's outcome.
#[derive(Clone, Copy, Debug)]
pub struct Answer {
    pub at: Instant,
    /// The status, or 0 when the connection ended without an answer.
    pub status: u16,
    /// The id of a 201.
    pub id: Option<u64>,
}

/// POSTs of valid usages at `per_second`, spread over `conns` keep-alive
/// connections, each paced on its own schedule. A connection that falls
/// behind sends at once until it is back on schedule: the offered count
/// over any long window stays `per_second` times its length.
pub struct Paced {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Answer>>>,
}

impl Paced {
    pub fn start(addr: SocketAddr, per_second: u32, conns: u32) -> Paced {
        assert!(
            conns > 0 && per_second >= conns,
            "{per_second}/s over {conns} connections"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let interval = Duration::from_secs(1) * conns / per_second;
        let threads = (0..conns)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || run(addr, t, interval, &stop))
            })
            .collect();
        Paced { stop, threads }
    }

    /// Stops the load; every answer, in the order they came.
    pub fn stop(mut self) -> Vec<Answer> {
        self.stop.store(true, Relaxed);
        let mut all: Vec<Answer> = std::mem::take(&mut self.threads)
            .into_iter()
            .flat_map(|t| t.join().expect("a load thread panicked"))
            .collect();
        all.sort_by_key(|a| a.at);
        all
    }
}

impl Drop for Paced {
    /// A test that panics does not leave the load running.
    fn drop(&mut self) {
        self.stop.store(true, Relaxed);
    }
}

fn run(addr: SocketAddr, t: u32, interval: Duration, stop: &AtomicBool) -> Vec<Answer> {
    let mut answers = Vec::new();
    let mut c = Http::connect(addr);
    let start = Instant::now();
    let mut n = 0u32;
    while !stop.load(Relaxed) {
        let next = start + interval * n;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        n += 1;
        let body =
            format!(r#"{{"patientId": "n{t}-{n}", "timestamp": {n}, "medication": "Albuterol"}}"#);
        c.post_json(&body);
        let answer = match c.try_response() {
            Some(r) => Answer {
                at: Instant::now(),
                status: r.status,
                id: (r.status == 201).then(|| r.id()),
            },
            None => {
                c = Http::connect(addr);
                Answer {
                    at: Instant::now(),
                    status: 0,
                    id: None,
                }
            }
        };
        answers.push(answer);
    }
    answers
}
