//! Whether a loopback registry speaks TLS, asked without a TLS library: a ClientHello of our own is sent,
//! and the first bytes of the answer tell. Any TLS server answers a ClientHello with a TLS record (its
//! ServerHello, or an alert when it refuses what was offered); a plain HTTP server answers the bytes with
//! an HTTP error, or not at all.
//!
//! Why not a real handshake: its first ClientHello seeds the TLS library's random number generator, which
//! costs about 35 ms of CPU (aws-lc gathers jitter entropy), and a registry on plain HTTP never needs it.
//! Nothing is negotiated here, so nothing secret is at stake: the connection is dropped after the answer's
//! first bytes.

use std::net::IpAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// TLS record types (RFC 8446 5.1): change_cipher_spec, alert, handshake, application_data.
const RECORD_TYPES: std::ops::RangeInclusive<u8> = 20..=23;
/// The first byte of every TLS (and SSL 3) record version.
const RECORD_MAJOR_VERSION: u8 = 3;

/// Whether the server at `host` (`HOST[:PORT]`, port 443 when none is said, as for `https://HOST`)
/// answers a ClientHello with a TLS record within `timeout`. A server that cannot be reached, or answers
/// with anything else, does not.
pub async fn answers_tls(host: &str, timeout: Duration) -> bool {
    let Ok(url) = reqwest::Url::parse(&format!("https://{host}/")) else {
        return false;
    };
    let (Some(name), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return false;
    };
    let is_address = name.trim_matches(['[', ']']).parse::<IpAddr>().is_ok();
    let server_name = (!is_address).then_some(name);
    let exchange = async {
        let mut stream = TcpStream::connect(format!("{name}:{port}")).await?;
        stream.write_all(&client_hello(server_name)).await?;
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).await?;
        Ok::<_, std::io::Error>(header)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok([kind, major])) => RECORD_TYPES.contains(&kind) && major == RECORD_MAJOR_VERSION,
        _ => false,
    }
}

/// A TLS 1.2 ClientHello record (RFC 5246 7.4.1.2) with what every HTTPS server accepts: the ECDHE
/// AES-GCM and ChaCha20 suites, the usual groups and signature schemes, and the server's name when it has
/// one. A server that wants only TLS 1.3 answers it with an alert, which is a TLS record too.
fn client_hello(server_name: Option<&str>) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = server_name {
        // server_name (RFC 6066 3): one entry, of type host_name.
        let mut entry = vec![0];
        push_u16_prefixed(&mut entry, name.as_bytes());
        let mut list = Vec::new();
        push_u16_prefixed(&mut list, &entry);
        push_extension(&mut extensions, 0x0000, &list);
    }
    // supported_groups: x25519, secp256r1, secp384r1.
    let mut groups = Vec::new();
    push_u16_prefixed(&mut groups, &[0x00, 0x1d, 0x00, 0x17, 0x00, 0x18]);
    push_extension(&mut extensions, 0x000a, &groups);
    // ec_point_formats: uncompressed.
    push_extension(&mut extensions, 0x000b, &[1, 0]);
    // signature_algorithms: ECDSA P-256/SHA-256, RSA-PSS SHA-256, RSA PKCS#1 SHA-256, and their SHA-384
    // and SHA-512 kin, Ed25519.
    let mut schemes = Vec::new();
    push_u16_prefixed(
        &mut schemes,
        &[4, 3, 8, 4, 4, 1, 5, 3, 8, 5, 5, 1, 8, 6, 6, 1, 8, 7],
    );
    push_extension(&mut extensions, 0x000d, &schemes);

    let mut hello = vec![3, 3]; // TLS 1.2
    hello.extend((0..32).map(|_| fastrand::u8(..))); // the client's random
    hello.push(0); // no session to resume
                   // ECDHE-ECDSA and ECDHE-RSA with AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305.
    push_u16_prefixed(
        &mut hello,
        &[
            0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x2c, 0xc0, 0x30, 0xcc, 0xa9, 0xcc, 0xa8,
        ],
    );
    hello.extend([1, 0]); // compression: none
    push_u16_prefixed(&mut hello, &extensions);

    let length = u32::try_from(hello.len()).expect("a small message");
    let mut handshake = vec![1]; // client_hello
    handshake.extend(&length.to_be_bytes()[1..]);
    handshake.extend(hello);
    let mut record = vec![22, 3, 1]; // a handshake record, TLS 1.0 on the record layer as is usual
    push_u16_prefixed(&mut record, &handshake);
    record
}

fn push_u16_prefixed(into: &mut Vec<u8>, bytes: &[u8]) {
    let length = u16::try_from(bytes.len()).expect("a small field");
    into.extend(length.to_be_bytes());
    into.extend(bytes);
}

fn push_extension(into: &mut Vec<u8>, kind: u16, body: &[u8]) {
    into.extend(kind.to_be_bytes());
    push_u16_prefixed(into, body);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A server that reads what comes and answers `answer`, on a free loopback port.
    async fn server(answer: &'static [u8]) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream.write_all(answer).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_tls_record_is_tls_and_anything_else_is_not() {
        let timeout = Duration::from_secs(5);
        let plain = server(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n").await;
        assert!(!answers_tls(&plain, timeout).await);
        // A handshake_failure alert, as a TLS server sends when it shares no suite with the client.
        let alert = server(&[21, 3, 3, 0, 2, 2, 40]).await;
        assert!(answers_tls(&alert, timeout).await);
        let silent = server(b"").await;
        assert!(!answers_tls(&silent, timeout).await);
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap().to_string();
        drop(closed);
        assert!(!answers_tls(&addr, timeout).await);
    }

    #[tokio::test]
    async fn a_tls_server_answers_the_hello_with_its_own() {
        // rustls's server parses our ClientHello, and refuses it only for want of a certificate to serve:
        // with an alert, a TLS record.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0u8; 4096];
            let n = stream.read(&mut buffer).await.unwrap();
            let mut acceptor = rustls::server::Acceptor::default();
            acceptor.read_tls(&mut &buffer[..n]).unwrap();
            let accepted = acceptor.accept().expect("a well-formed ClientHello");
            let accepted = accepted.expect("a whole ClientHello");
            let hello = accepted.client_hello();
            assert_eq!(hello.server_name(), Some("localhost"));
            assert!(hello.cipher_suites().len() >= 6);
            stream.write_all(&[21, 3, 3, 0, 2, 2, 40]).await.unwrap();
        });
        let port = addr.rsplit_once(':').unwrap().1;
        assert!(answers_tls(&format!("localhost:{port}"), Duration::from_secs(5)).await);
    }
}
