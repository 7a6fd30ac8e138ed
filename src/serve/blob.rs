//! Blob bodies streamed from the bundle files in fixed chunks, so memory stays flat whatever the blob or
//! bundle size: each chunk is read positionally on a blocking thread and checked against the hash it had
//! when the blob was first served (see `chunks`) before any of it is sent. A chunk that changed cuts the
//! transfer: the client sees a cut connection, never altered bytes.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::Stream;

use super::chunks::{intact, Hashes, CHUNK};
use super::content::{BlobAt, Content};
use super::slots::Slot;
use super::stats::Stats;
use crate::digest::Digest;

/// The bytes `start..end` (relative to the blob) of the blob at `at`.
pub struct Transfer {
    pub content: Arc<Content>,
    pub stats: Arc<Stats>,
    pub at: BlobAt,
    pub digest: Digest,
    pub hashes: Hashes,
    pub start: u64,
    pub end: u64,
    /// Held until the body is sent or dropped: transfers are bounded, not just request handling.
    pub _slot: Slot,
}

impl Transfer {
    pub fn into_stream(self) -> impl Stream<Item = std::io::Result<Bytes>> + Send {
        let position = self.start;
        futures_util::stream::try_unfold((self, position), |(transfer, position)| async move {
            if position >= transfer.end {
                return Ok(None);
            }
            // The whole chunk that holds `position`: chunks are checked whole.
            let index = position / CHUNK;
            let chunk_start = index * CHUNK;
            let length = CHUNK.min(transfer.at.size - chunk_start);
            let (content, hashes, at) = (
                transfer.content.clone(),
                transfer.hashes.clone(),
                transfer.at,
            );
            let chunk = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; length as usize];
                content.bundles[at.bundle].read_exact_at(&mut buf, at.offset + chunk_start)?;
                Ok::<_, std::io::Error>(intact(&hashes, index, &buf).then_some(buf))
            })
            .await
            .map_err(std::io::Error::other)??;
            let Some(chunk) = chunk else {
                tracing::error!(
                    "blob {} in {} changed since it was verified (bytes {chunk_start}..{}); transfer cut before them",
                    transfer.digest,
                    transfer.content.bundles[at.bundle].path.display(),
                    chunk_start + length
                );
                return Err(std::io::Error::other("the bundle changed since verify"));
            };
            let until = transfer.end.min(chunk_start + length);
            let sent = Bytes::from(chunk)
                .slice((position - chunk_start) as usize..(until - chunk_start) as usize);
            transfer
                .stats
                .bytes
                .fetch_add(sent.len() as u64, Ordering::Relaxed);
            Ok(Some((sent, (transfer, until))))
        })
    }
}
