//! Connections: accepted within a bound per client address, over TLS with the protocol ALPN chose
//! (HTTP/2 or HTTP/1.1) or as plain HTTP/1.1, each watched so that an idle or stalled one is closed. Our
//! own accept loop, because these bounds sit between accepting a socket and serving it.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use super::error::ServeError;
use super::http::{handle, Server};
use super::limits;
use super::stats::Stats;
use super::watch::{Activity, Counted, Trouble};

/// Far more than any certificate chain or key.
const MAX_PEM_FILE: u64 = 1 << 20;

/// The TLS side of `--tls-cert` and `--tls-key`, offering HTTP/2 and HTTP/1.1.
pub fn tls(cert: &Path, key: &Path) -> Result<TlsAcceptor, ServeError> {
    let unusable = |source: std::io::Error| ServeError::Tls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    };
    // Read as side files: a FIFO or device in their place must not block the start.
    let read = |path: &Path| {
        crate::io::read_side_file(path, MAX_PEM_FILE).map_err(|e| {
            unusable(std::io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        })
    };
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unusable(std::io::Error::other(e)))?;
    let private =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| unusable(std::io::Error::other(e)))?;
    let mut config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| unusable(std::io::Error::other(e)))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepts connections until `stop` changes; each one's task holds a clone of `stop` until it ends.
pub async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    server: Arc<Server>,
    mut stop: watch::Receiver<bool>,
) {
    let peers = Arc::new(Peers::default());
    let mut warned: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors, most likely: wait for connections to close rather than spin.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!("cannot accept connections: {error}");
                    warned = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(admitted) = peers.admit(peer.ip()) else {
            Stats::count(&server.stats.turned_away);
            tracing::debug!(
                "{peer}: closed at once: its address holds {} connections already",
                limits::CONNECTIONS_PER_ADDRESS
            );
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            tls.clone(),
            server.clone(),
            stop.clone(),
            admitted,
        ));
    }
}

/// Serves one connection until it ends, idles, stalls, or the server stops.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    server: Arc<Server>,
    stop: watch::Receiver<bool>,
    _admitted: Admitted,
) {
    let activity = Activity::new();
    let stats = server.stats.clone();
    let service = {
        let activity = activity.clone();
        service_fn(move |request: Request<Incoming>| {
            let (server, activity) = (server.clone(), activity.clone());
            async move {
                let under_way = activity.start();
                let (parts, _) = request.into_parts();
                let response = handle(&server, peer, &parts).await;
                Ok::<_, Infallible>(response.map(|body| activity.watch(body, under_way)))
            }
        })
    };
    let stream = Counted::new(stream, &activity);
    let Some(acceptor) = tls else {
        let connection = http1().serve_connection(TokioIo::new(stream), service);
        return drive(connection, &activity, stop, peer, &stats).await;
    };
    let stream = match tokio::time::timeout(limits::HANDSHAKE, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return tracing::debug!("{peer}: TLS handshake failed: {error}"),
        Err(_) => {
            return tracing::debug!(
                "{peer}: no TLS handshake within {} s: closed",
                limits::HANDSHAKE.as_secs()
            )
        }
    };
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        let connection = http1().serve_connection(TokioIo::new(stream), service);
        return drive(connection, &activity, stop, peer, &stats).await;
    }
    let connection = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits::STREAMS_PER_CONNECTION)
        .keep_alive_interval(limits::PING)
        .keep_alive_timeout(limits::PING)
        .serve_connection(TokioIo::new(stream), service);
    drive(connection, &activity, stop, peer, &stats).await;
}

/// HTTP/1.1, whose request headers must arrive within `limits::IDLE`.
fn http1() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits::IDLE);
    builder
}

/// Drives `connection` until it ends; closes it when it idles or stalls, and asks it to close (finishing
/// what is under way) when the server stops.
async fn drive<C: GracefulConnection>(
    connection: C,
    activity: &Activity,
    mut stop: watch::Receiver<bool>,
    peer: SocketAddr,
    stats: &Stats,
) {
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        trouble = activity.trouble() => match trouble {
            Trouble::Stalled => {
                Stats::count(&stats.stalled);
                return tracing::info!(
                    "{peer}: took nothing of a response for {} s: connection closed",
                    limits::STALL.as_secs()
                );
            }
            Trouble::Idle => {
                Stats::count(&stats.idle);
                tracing::debug!("{peer}: no request for {} s: connection closed", limits::IDLE.as_secs());
            }
        },
        _ = stop.changed() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(limits::CLOSING, connection).await;
}

/// Connections held per client address.
#[derive(Default)]
struct Peers {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One of an address's connections; dropped with it.
struct Admitted {
    peers: Arc<Peers>,
    address: IpAddr,
}

impl Peers {
    fn admit(self: &Arc<Self>, address: IpAddr) -> Option<Admitted> {
        let mut counts = self.counts.lock().expect("not poisoned");
        let count = counts.entry(address).or_default();
        if *count >= limits::CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *count += 1;
        Some(Admitted {
            peers: self.clone(),
            address,
        })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.peers.counts.lock().expect("not poisoned");
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}
