//! A raw HTTP/1.1 client: bytes out, one parsed response at a time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The id of a 201.
    pub fn id(&self) -> u64 {
        assert_eq!(self.status, 201, "{}", self.text());
        self.json()["id"].as_u64().expect("id is an integer")
    }

    /// The ids of a batch's 201, in the order its usages were sent.
    pub fn ids(&self) -> Vec<u64> {
        assert_eq!(self.status, 201, "{}", self.text());
        let ids = self.json()["ids"]
            .as_array()
            .cloned()
            .expect("ids is an array");
        ids.iter()
            .map(|id| id.as_u64().expect("an integer id"))
            .collect()
    }

    /// The `error` text of an error response.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("error is a string")
            .to_owned()
    }
}

/// A raw HTTP/1.1 connection.
pub struct Http {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Http {
    /// A client on a socket the test opened itself.
    pub fn from_stream(stream: TcpStream) -> Http {
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn connect(addr: SocketAddr) -> Http {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Http {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    pub fn post_json(&mut self, body: &str) {
        self.send(&post_request(body));
    }

    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        match self.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads one response (Content-Length framed, as busyapi sends).
    pub fn try_response(&mut self) -> Option<Response> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.fill() {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            })
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().expect("content-length"));
        let len = if status == 100 { 0 } else { len };
        while self.buf.len() < head_end + len {
            if !self.fill() {
                return None;
            }
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Some(Response {
            status,
            headers,
            body,
        })
    }

    pub fn response(&mut self) -> Response {
        self.try_response()
            .expect("a response before the connection closed")
    }

    /// Whether the server closed the connection (EOF with nothing pending).
    pub fn closed(&mut self) -> bool {
        self.buf.is_empty() && !self.fill()
    }
}

/// Keeps POSTing valid usages on `conns` keep-alive connections from as
/// many threads until `stop` is set or the server goes away; returns every
/// acknowledged id.
pub fn load(
    addr: SocketAddr,
    conns: usize,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let handles: Vec<_> = (0..conns)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut ids = Vec::new();
                    let Ok(stream) = TcpStream::connect(addr) else { return ids };
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let mut c = Http { stream, buf: Vec::new() };
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        n += 1;
                        let body = format!(r#"{{"patientId": "p{t}-{n}", "timestamp": {n}, "medication": "Albuterol"}}"#);
                        if c.stream.write_all(&post_request(&body)).is_err() {
                            break;
                        }
                        match c.try_response() {
                            Some(r) if r.status == 201 => ids.push(r.id()),
                            Some(r) if r.status == 503 => std::thread::sleep(Duration::from_millis(5)),
                            Some(r) => panic!("unexpected {}: {}", r.status, r.text()),
                            None => break,
                        }
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("load thread"))
            .collect()
    })
}

/// A POST of `body` to /api/usages, framed by Content-Length.
pub fn post_request(body: &str) -> Vec<u8> {
    format!(
        "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A batch POST of `body` to /api/usages: a JSON array with
/// `application/json`, or lines with `application/x-ndjson`.
pub fn batch_request(content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/usages HTTP/1.1\r\nHost: t\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The JSON array of `usages` as a batch body.
pub fn json_array(usages: &[String]) -> String {
    format!("[{}]", usages.join(", "))
}

/// A refusal: `status`, and a JSON body whose `error` contains `needle`.
pub fn assert_error(r: &Response, status: u16, needle: &str) {
    assert_eq!(r.status, status, "wanted {status} ({needle}): {}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    let error = r.error();
    assert!(
        error.contains(needle),
        "{status}: {error:?} does not say {needle:?}"
    );
}
