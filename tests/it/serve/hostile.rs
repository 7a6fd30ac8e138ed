//! Clients that misbehave on purpose, each from a loopback address of its own (127.0.0.2 and up), so
//! that the server's per-address bounds tell them from the real clients on 127.0.0.1: readers that stop
//! reading, over HTTP/1 and over HTTP/2 on TLS (frames written by hand, so nothing reads on their behalf),
//! connections that send nothing, and password guessers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// A connection, plain or TLS.
pub type Stream = Box<dyn ReadWrite + Send>;

pub trait ReadWrite: Read + Write {}

impl<T: Read + Write> ReadWrite for T {}

/// A TCP connection to `addr` from `source`, with a small receive buffer (a client that stops reading
/// stalls the server soon) and a 1 s read timeout.
pub fn connect_from(source: &str, addr: &str) -> std::io::Result<TcpStream> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(format!("{source}:0").parse().unwrap())?;
        socket.set_recv_buffer_size(16 << 10)?;
        socket.connect(addr.parse().unwrap()).await?.into_std()
    })?;
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    Ok(stream)
}

pub fn plain_from(source: &str, addr: &str) -> Stream {
    Box::new(connect_from(source, addr).unwrap())
}

/// TLS to `addr` from `source`, trusting `ca`, offering only `alpn` (`h2` or `http/1.1`); the handshake
/// is done before it returns, so a server that closes at once makes this an error.
pub fn tls_from(source: &str, addr: &str, ca: &Path, alpn: &[u8]) -> std::io::Result<Stream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut tcp = connect_from(source, addr)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while tls.is_handshaking() {
        match tls.complete_io(&mut tcp) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Box::new(rustls::StreamOwned::new(tls, tcp)))
}

fn is_timeout(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Sends an HTTP/1.1 GET and reads nothing.
pub fn http1_get(stream: &mut Stream, addr: &str, path: &str, headers: &[(&str, &str)]) {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.flush().unwrap();
}

/// One request on a connection of its own (`Connection: close`), answered within `within`: the status,
/// the headers and the body as far as it came before the connection ended (status 0 if it ended before
/// the headers did); `None` if the answer did not end in time.
pub fn exchange(
    mut stream: Stream,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> Option<(u16, String, Vec<u8>)> {
    let mut all = headers.to_vec();
    all.push(("Connection", "close"));
    http1_get(&mut stream, addr, path, &all);
    let deadline = Instant::now() + within;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(e) if is_timeout(&e) => return None,
            // A cut transfer (or a TLS peer gone without close_notify): what came is the answer.
            Err(_) => break,
        }
    }
    let Some(split) = response.windows(4).position(|w| w == b"\r\n\r\n") else {
        // Closed before a whole head: status 0, and what came.
        return Some((0, String::new(), response));
    };
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head, response[split + 4..].to_vec()))
}

/// The HTTP/2 connection preface, with windows as large as a Go client opens (so a stall is the TCP
/// connection's, as when a machine stops reading, not flow control's).
pub fn h2_start(stream: &mut Stream) {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // SETTINGS: INITIAL_WINDOW_SIZE (4) = 2^31 - 1.
    frame(&mut bytes, 0x4, 0, 0, &[0, 4, 0x7f, 0xff, 0xff, 0xff]);
    // WINDOW_UPDATE of the connection, to 2^31 - 1.
    frame(
        &mut bytes,
        0x8,
        0,
        0,
        &(0x7fff_ffffu32 - 65_535).to_be_bytes(),
    );
    stream.write_all(&bytes).unwrap();
    stream.flush().unwrap();
}

/// A GET on stream `id` (odd, rising), as one HEADERS frame that ends the stream.
pub fn h2_get(stream: &mut Stream, id: u32, authority: &str, path: &str, headers: &[(&str, &str)]) {
    let mut block = Vec::new();
    let pseudo = [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", authority),
        (":path", path),
    ];
    for (name, value) in pseudo.iter().chain(headers) {
        // A literal header field without indexing, new name, no Huffman coding (RFC 7541, 6.2.2).
        block.push(0);
        hpack_string(&mut block, name.to_ascii_lowercase().as_bytes());
        hpack_string(&mut block, value.as_bytes());
    }
    let mut bytes = Vec::new();
    frame(&mut bytes, 0x1, 0x5, id, &block);
    stream.write_all(&bytes).unwrap();
    stream.flush().unwrap();
}

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// A string literal: its length as a 7-bit-prefix integer, then the bytes.
fn hpack_string(out: &mut Vec<u8>, text: &[u8]) {
    let mut length = text.len();
    if length < 127 {
        out.push(length as u8);
    } else {
        out.push(127);
        length -= 127;
        while length >= 128 {
            out.push((length % 128) as u8 | 0x80);
            length /= 128;
        }
        out.push(length as u8);
    }
    out.extend_from_slice(text);
}

/// Whether the server has closed `stream`: what it sent is read and dropped until the end, for at most
/// `wait`. One still open (or still sending) after that is not closed.
pub fn closed_within(stream: &mut Stream, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 64 << 10];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Runs `command`, killed if it has not finished within `limit`; its output goes through files, so a
/// chatty one cannot block on a full pipe.
pub fn run_within(command: &mut Command, limit: Duration) -> Option<Output> {
    let out = tempfile::tempfile().unwrap();
    let err = tempfile::tempfile().unwrap();
    let mut child = command
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            let read = |mut file: std::fs::File| {
                use std::io::Seek;
                let mut bytes = Vec::new();
                file.seek(std::io::SeekFrom::Start(0)).unwrap();
                file.read_to_end(&mut bytes).unwrap();
                bytes
            };
            return Some(Output {
                status,
                stdout: read(out),
                stderr: read(err),
            });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
