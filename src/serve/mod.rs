//! `ferry serve`: verified bundles as a read-only OCI registry, for sites with no registry of their own.
//! Nothing is extracted: manifests are kept in memory (checked again against their digests), blobs are
//! read in place from the bundle files at the offsets verify found, in bounded chunks, so memory stays
//! flat whatever the bundle size. Requests handled at once are bounded; more wait their turn.

mod auth;
mod blob;
mod content;
mod http;
pub mod node_config;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::sync::Semaphore;

pub use self::content::Content;
use self::http::{Server, Stats};
use crate::digest::Digest;

/// How long in-flight transfers may finish after Ctrl-C or SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// A connection that sends no complete request headers for this long is closed, idle ones included: a node
/// that has pulled would otherwise hold a file descriptor here until it closes the connection itself.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the summary is logged while requests come in.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{} is gzipped; serve reads blobs in place from an uncompressed bundle: gunzip it first",
        .0.display()
    )]
    Compressed(PathBuf),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed since it was verified; verify it again", .0.display())]
    Changed(PathBuf),
    #[error("{image}: {reason}")]
    Mapping { image: String, reason: String },
    #[error(
        "{image} is {first} in one bundle and {second} in {}: serve them from two servers",
        .bundle.display()
    )]
    Conflict {
        image: String,
        first: Digest,
        second: Digest,
        bundle: PathBuf,
    },
    #[error("--htpasswd {}: {reason}", .path.display())]
    Htpasswd { path: PathBuf, reason: String },
    #[error("--tls-cert {} / --tls-key {}: not a usable certificate and key", .cert.display(), .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

pub struct ServeOptions {
    pub listen: SocketAddr,
    /// PEM certificate chain and key; plain HTTP without.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub htpasswd: Option<PathBuf>,
    pub max_transfers: usize,
}

/// Serves `content` until Ctrl-C or SIGTERM; `listening` is told the bound address once it is known.
pub async fn serve(
    content: Content,
    options: &ServeOptions,
    listening: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    raise_open_files_limit();
    let auth = options
        .htpasswd
        .as_deref()
        .map(auth::Htpasswd::load)
        .transpose()?;
    let listener =
        std::net::TcpListener::bind(options.listen).map_err(|source| ServeError::Listen {
            addr: options.listen,
            source,
        })?;
    let listen_error = |source| ServeError::Listen {
        addr: options.listen,
        source,
    };
    listener.set_nonblocking(true).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let server = Arc::new(Server {
        content,
        auth,
        transfers: Arc::new(Semaphore::new(options.max_transfers.max(1))),
        stats: Stats::default(),
    });
    let app = Router::new()
        .fallback(http::handle)
        .with_state(server.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    let handle = axum_server::Handle::new();
    let served = match &options.tls {
        Some((cert, key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .map_err(|source| ServeError::Tls {
                    cert: cert.clone(),
                    key: key.clone(),
                    source,
                })?;
            let mut server = axum_server::from_tcp_rustls(listener, config)
                .map_err(listen_error)?
                .handle(handle.clone());
            close_idle(server.http_builder());
            listening(bound);
            tokio::spawn(server.serve(app))
        }
        None => {
            // HTTP/1 only: no client speaks HTTP/2 without TLS, and guessing the version would wait on a
            // silent connection forever instead of timing it out.
            let mut server = axum_server::from_tcp(listener)
                .map_err(listen_error)?
                .handle(handle.clone())
                .http1_only();
            close_idle(server.http_builder());
            listening(bound);
            tokio::spawn(server.serve(app))
        }
    };
    let summaries = tokio::spawn(log_summaries(server.clone()));
    stopped().await;
    tracing::info!(
        "stopping: in-flight transfers get {} s to finish",
        GRACE.as_secs()
    );
    handle.graceful_shutdown(Some(GRACE));
    let _ = served.await;
    summaries.abort();
    tracing::info!("stopped after {}", server.stats.summary());
    Ok(())
}

fn close_idle(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
}

/// Each node keeps a few connections open, and the usual soft limit of 1024 open files runs out at a few
/// hundred nodes; the hard limit (often 512 Ki under systemd) is what the operator allows.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum) {
        if current < maximum {
            let raised = Rlimit {
                current: Some(maximum),
                maximum: Some(maximum),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => tracing::debug!("open files limit raised from {current} to {maximum}"),
                Err(error) => tracing::warn!(
                    "open files limit stays at {current} ({error}): a few hundred nodes at once may exceed it"
                ),
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn stopped() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

/// Logs the running totals at info level, when they changed.
async fn log_summaries(server: Arc<Server>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(SUMMARY_EVERY).await;
        let summary = server.stats.summary();
        if summary != last {
            tracing::info!("so far: {summary}");
            last = summary;
        }
    }
}
