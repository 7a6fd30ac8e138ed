//! A small fault-injecting reverse proxy between ferry and a real registry: the failures real networks
//! and registries produce (503s, 429 with Retry-After, connections cut mid-blob, a flipped byte, a lying
//! header, a short Content-Length), each a bounded number of times, so tests can prove retries, resume
//! and digest refusal.
//! In-process on purpose: it injects faults; compatibility is proven against the real registry behind it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// ferry with its pauses between attempts cut to 1 ms (as go-containerregistry's tests use a
/// `fastBackoff`): for tests whose injected failures make it go through every attempt. A `Retry-After`
/// is still honoured.
pub fn fast_retries(command: &mut Command) -> &mut Command {
    command.env(ferry::registry::retry::BASE_DELAY_ENV, "1")
}

#[derive(Debug)]
pub enum Fault {
    /// Answer `status` instead of forwarding.
    Status { status: u16 },
    /// Answer 429 with `Retry-After: secs`.
    TooManyRequests { retry_after_secs: u64 },
    /// Forward, but close the connection after `after_bytes` of the body.
    CutBody { after_bytes: usize },
    /// Forward, with one bit of the body byte at `offset` flipped.
    FlipByte { offset: usize },
    /// Forward, with header `name` (which the answer must have) saying `value` instead.
    ReplaceHeader { name: &'static str, value: String },
    /// Forward, but declare a Content-Length `by` bytes short and send only that many bytes, as a
    /// registry (or a proxy before it) with a damaged copy or a wrong length does.
    ShortLength { by: usize },
    /// Answer requests of `method` (every method when empty) with `status`, these extra header lines
    /// (`Name: value\r\n`) and this JSON body, as a registry or its front (Harbor's) refuses.
    Refuse {
        method: &'static str,
        status: u16,
        headers: String,
        body: &'static str,
    },
    /// Forward a cross-repository mount (`POST ...?mount=&from=`) without its query, so the registry opens
    /// an upload session (202) instead, as registries that decline a mount do.
    DeclineMount,
}

/// A fault for requests whose path contains `path_contains`, fired at most `times` times.
#[derive(Debug)]
pub struct Rule {
    pub path_contains: String,
    pub fault: Fault,
    pub times: usize,
    fired: AtomicUsize,
}

impl Rule {
    pub fn new(path_contains: &str, fault: Fault, times: usize) -> Rule {
        Rule {
            path_contains: path_contains.into(),
            fault,
            times,
            fired: AtomicUsize::new(0),
        }
    }

    /// Fires for a GET of a matching path; faults on the body only when the body reaches the bytes they
    /// touch (`body_len` is `None` before the response is known), so a small config does not use them up.
    fn take(&self, method: &str, path: &str, body_len: Option<usize>) -> bool {
        let reaches = match (&self.fault, body_len) {
            (Fault::Refuse { method: only, .. }, None) => {
                return (only.is_empty() || *only == method)
                    && path.contains(&self.path_contains)
                    && self.fire();
            }
            (Fault::DeclineMount, None) => {
                return method == "POST"
                    && path.contains("mount=")
                    && path.contains(&self.path_contains)
                    && self.fire();
            }
            (Fault::Status { .. } | Fault::TooManyRequests { .. }, None) => true,
            (
                Fault::CutBody { after_bytes: at }
                | Fault::FlipByte { offset: at }
                | Fault::ShortLength { by: at },
                Some(len),
            ) => len > *at,
            (Fault::ReplaceHeader { .. }, Some(_)) => true,
            _ => false,
        };
        reaches && method == "GET" && path.contains(&self.path_contains) && self.fire()
    }

    fn fire(&self) -> bool {
        self.fired
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.times).then_some(n + 1)
            })
            .is_ok()
    }
}

/// One request the proxy saw: method, path, Range header, and the status it answered.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub status: u16,
}

pub struct FaultProxy {
    addr: String,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FaultProxy {
    pub fn start(upstream: &str, rules: Vec<Rule>) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            proxy: addr.clone(),
            rules,
            seen: seen.clone(),
        });
        let stopping = stop.clone();
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = connection else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = shared.serve(client);
                });
            }
        });
        FaultProxy { addr, stop, seen }
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr); // wakes the accept loop so it sees the flag
    }
}

struct Shared {
    upstream: String,
    proxy: String,
    rules: Vec<Rule>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One HTTP/1.1 request with a Content-Length body (or none); `None` when the peer closed first.
pub fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        reader.read_line(&mut header)?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':') {
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
    }
    let length = header_value(&headers, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request {
        method,
        path,
        headers,
        body,
    }))
}

pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Shared {
    fn record(&self, request: &Request, status: u16) {
        let range = header_value(&request.headers, "range").map(str::to_string);
        self.seen.lock().unwrap().push(Seen {
            method: request.method.clone(),
            path: request.path.clone(),
            range,
            status,
        });
    }

    fn serve(&self, client: TcpStream) -> std::io::Result<()> {
        client.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut reader = BufReader::new(client.try_clone()?);
        let mut client = client;
        let Some(mut request) = read_request(&mut reader)? else {
            return Ok(());
        };
        let rule = self
            .rules
            .iter()
            .find(|r| r.take(&request.method, &request.path, None));
        match rule.map(|r| &r.fault) {
            Some(Fault::Status { status }) => {
                self.record(&request, *status);
                return answer(&mut client, *status, "", None);
            }
            Some(Fault::Refuse {
                status,
                headers,
                body,
                ..
            }) => {
                self.record(&request, *status);
                return answer(&mut client, *status, headers, Some(body));
            }
            Some(Fault::TooManyRequests { retry_after_secs }) => {
                self.record(&request, 429);
                return answer(
                    &mut client,
                    429,
                    &format!("Retry-After: {retry_after_secs}\r\n"),
                    None,
                );
            }
            Some(Fault::DeclineMount) => {
                let bare = request
                    .path
                    .split('?')
                    .next()
                    .unwrap_or_default()
                    .to_string();
                request.path = bare;
            }
            _ => {}
        }
        let (head, mut body) = self.forward(&request)?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.record(&request, status);
        let rule = self
            .rules
            .iter()
            .find(|r| r.take(&request.method, &request.path, Some(body.len())));
        let head = match rule.map(|r| &r.fault) {
            Some(Fault::ReplaceHeader { name, value }) => replace_header(&head, name, value),
            Some(Fault::ShortLength { by }) => {
                body.truncate(body.len() - by);
                replace_header(&head, "Content-Length", &body.len().to_string())
            }
            _ => head,
        };
        client.write_all(head.as_bytes())?;
        match rule.map(|r| &r.fault) {
            Some(Fault::CutBody { after_bytes }) => {
                body.truncate(*after_bytes);
                client.write_all(&body)?;
                client.flush()?;
                return client.shutdown(std::net::Shutdown::Both);
            }
            Some(Fault::FlipByte { offset }) if *offset < body.len() => body[*offset] ^= 0x01,
            _ => {}
        }
        client.write_all(&body)
    }

    /// Sends the request upstream; returns the response head (Location rewritten to the proxy) and body.
    fn forward(&self, request: &Request) -> std::io::Result<(String, Vec<u8>)> {
        let mut upstream = TcpStream::connect(&self.upstream)?;
        let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.path);
        for (name, value) in &request.headers {
            if !["host", "connection"].contains(&name.to_ascii_lowercase().as_str()) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!(
            "Host: {}\r\nConnection: close\r\n\r\n",
            self.upstream
        ));
        upstream.write_all(head.as_bytes())?;
        upstream.write_all(&request.body)?;
        let mut response = Vec::new();
        upstream.read_to_end(&mut response)?;
        let split = response
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(response.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&response[..split]).replace(&self.upstream, &self.proxy);
        // Registries answer keep-alive requests with chunked bodies only when asked; with Connection: close
        // and HEAD/GET of blobs and manifests, Distribution sends Content-Length, so the body is plain bytes.
        Ok((head, response[split..].to_vec()))
    }
}

/// `head` with the value of header `name` replaced; panics when the answer has no such header, so a
/// test cannot pass for a fault that never fired.
fn replace_header(head: &str, name: &str, value: &str) -> String {
    let mut found = false;
    let lines: Vec<String> = head
        .split("\r\n")
        .map(|line| match line.split_once(':') {
            Some((header, _)) if header.eq_ignore_ascii_case(name) => {
                found = true;
                format!("{header}: {value}")
            }
            _ => line.to_string(),
        })
        .collect();
    assert!(found, "the answer has no {name} header to replace:\n{head}");
    lines.join("\r\n")
}

fn answer(
    client: &mut TcpStream,
    status: u16,
    extra_headers: &str,
    body: Option<&str>,
) -> std::io::Result<()> {
    let body = body.map_or_else(
        || {
            format!(
                "{{\"errors\":[{{\"code\":\"UNAVAILABLE\",\"message\":\"injected {status}\"}}]}}"
            )
        },
        str::to_string,
    );
    let head = format!(
        "HTTP/1.1 {status} Injected\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes())?;
    client.write_all(body.as_bytes())
}
