//! `ferry serve`: verified bundles as a read-only OCI registry, for sites with no registry of their own.
//! Nothing is extracted: manifests are kept in memory (checked again against their digests), blobs are
//! read in place from the bundle files at the offsets verify found, in bounded chunks, each checked before
//! it is sent, so memory stays flat whatever the bundle size. Blob transfers at once are bounded, in all
//! and per client address; connections per address too, and idle or stalled ones are closed (`limits`).

mod auth;
mod blob;
mod chunks;
mod connection;
mod content;
mod error;
mod http;
mod limits;
pub mod node_config;
mod range;
mod response;
mod routes;
mod slots;
mod stats;
mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use self::chunks::Chunks;
pub use self::content::Content;
pub use self::error::ServeError;
use self::http::Server;
use self::slots::Slots;
use self::stats::Stats;

/// How long in-flight transfers may finish after Ctrl-C or SIGTERM.
const GRACE: Duration = Duration::from_secs(10);
/// How often the summary is logged while requests come in.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);

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
    let tls = options
        .tls
        .as_ref()
        .map(|(cert, key)| connection::tls(cert, key))
        .transpose()?;
    let listen_error = |source| ServeError::Listen {
        addr: options.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(options.listen).map_err(listen_error)?;
    listener.set_nonblocking(true).map_err(listen_error)?;
    let bound = listener.local_addr().map_err(listen_error)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(listen_error)?;
    let max_transfers = options.max_transfers.max(1);
    let server = Arc::new(Server {
        content: Arc::new(content),
        auth,
        slots: Slots::new(max_transfers, limits::transfers_per_address(max_transfers)),
        chunks: Chunks::default(),
        stats: Arc::new(Stats::default()),
    });
    let stats = server.stats.clone();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    listening(bound);
    let accepting = tokio::spawn(connection::accept(listener, tls, server, stopping));
    let summaries = tokio::spawn(log_summaries(stats.clone()));
    stopped().await;
    tracing::info!(
        "stopping: in-flight transfers get {} s to finish",
        GRACE.as_secs()
    );
    let _ = stop.send(true);
    // The listener closes with the accept loop; then each connection finishes what it has under way.
    let _ = accepting.await;
    let _ = tokio::time::timeout(GRACE, stop.closed()).await;
    summaries.abort();
    tracing::info!("stopped after {}", stats.summary());
    Ok(())
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
async fn log_summaries(stats: Arc<Stats>) {
    let mut last = String::new();
    loop {
        tokio::time::sleep(SUMMARY_EVERY).await;
        let summary = stats.summary();
        if summary != last {
            tracing::info!("so far: {summary}");
            last = summary;
        }
    }
}
