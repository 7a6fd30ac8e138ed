//! Blob bodies streamed from the bundle files in fixed chunks, so memory stays flat whatever the blob or
//! bundle size: each chunk is read positionally on a blocking thread. A whole blob is hashed as it goes,
//! and its last chunk is withheld if the digest does not match (the file changed after verify), so a
//! client sees a cut transfer instead of wrong bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;
use sha2::{Digest as _, Sha256};
use tokio::sync::OwnedSemaphorePermit;

use super::content::BlobAt;
use super::http::Server;
use crate::digest::Digest;

/// Bytes read per step; with the bound on transfers, this bounds the memory blob bodies take.
const CHUNK: u64 = 256 << 10;

/// The bytes `start..end` (relative to the blob) of the blob at `at`.
pub struct Transfer {
    pub server: Arc<Server>,
    pub at: BlobAt,
    pub digest: Digest,
    pub start: u64,
    pub end: u64,
    /// Held until the body is sent: transfers are bounded, not just request handling.
    pub _permit: OwnedSemaphorePermit,
}

struct State {
    transfer: Transfer,
    position: u64,
    /// Only for a whole blob: the digest is checked at its end.
    hasher: Option<Sha256>,
}

impl Transfer {
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let whole = self.start == 0 && self.end == self.at.size;
        let state = State {
            position: self.start,
            hasher: whole.then(Sha256::new),
            transfer: self,
        };
        futures_util::stream::try_unfold(state, |mut state| async move {
            let transfer = &state.transfer;
            if state.position >= transfer.end {
                return Ok(None);
            }
            let length = CHUNK.min(transfer.end - state.position);
            let offset = transfer.at.offset + state.position;
            let server = transfer.server.clone();
            let bundle = transfer.at.bundle;
            let mut hasher = state.hasher.take();
            let (chunk, hasher) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; length as usize];
                server.content.bundles[bundle].read_exact_at(&mut buf, offset)?;
                if let Some(hasher) = hasher.as_mut() {
                    hasher.update(&buf);
                }
                Ok::<_, std::io::Error>((buf, hasher))
            })
            .await
            .map_err(std::io::Error::other)??;
            state.position += length;
            if state.position == transfer.end {
                if let Some(hasher) = hasher {
                    let actual = Digest::from_hasher(hasher);
                    if actual != transfer.digest {
                        tracing::error!(
                            "blob {} in {} changed since it was verified (now {actual}); transfer cut",
                            transfer.digest,
                            transfer.server.content.bundles[bundle].path.display()
                        );
                        return Err(std::io::Error::other("the bundle changed since verify"));
                    }
                }
            } else {
                state.hasher = hasher;
            }
            transfer
                .server
                .stats
                .bytes
                .fetch_add(length, Ordering::Relaxed);
            Ok(Some((Bytes::from(chunk), state)))
        })
    }
}
