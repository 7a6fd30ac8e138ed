//! Counters for the summary lines `ferry serve` logs.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub manifests: AtomicU64,
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
    pub not_found: AtomicU64,
    pub refused: AtomicU64,
    /// Connections closed because a response made no progress for `limits::STALL`.
    pub stalled: AtomicU64,
    /// Connections closed for sending no request for `limits::IDLE`.
    pub idle: AtomicU64,
    /// Connections closed at once: their address held `limits::CONNECTIONS_PER_ADDRESS` already.
    pub turned_away: AtomicU64,
}

impl Stats {
    pub fn count(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} request(s): {} manifest(s), {} blob(s), {} sent; {} not found, {} refused; \
             connections closed: {} stalled, {} idle, {} over the per-address bound",
            get(&self.requests),
            get(&self.manifests),
            get(&self.blobs),
            crate::progress::DecimalBytes(get(&self.bytes)),
            get(&self.not_found),
            get(&self.refused),
            get(&self.stalled),
            get(&self.idle),
            get(&self.turned_away)
        )
    }
}
