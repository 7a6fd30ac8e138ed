//! What each blob's bytes were when it was first asked for, per fixed-size chunk, so that every chunk sent
//! afterwards (of a whole blob or of a `Range`) is checked before it leaves: a bundle file changed after
//! start never sends altered bytes, it cuts the transfer.
//!
//! Why per chunk, and lazily: SHA-256 cannot check a part of a blob without the rest, so a range is
//! either re-hashed whole on every request (reading a whole layer for its last megabyte) or checked
//! against per-chunk hashes taken once. The table is taken on a blob's first request, in one read that
//! also checks the blob's digest (so it describes the verified bytes), and costs 32 bytes per 256 KiB
//! chunk, 1/8192 of what is served: 1.3 MB for a 10 GB bundle, only for blobs clients asked for.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use tokio::sync::OnceCell;

use super::content::{BlobAt, Content};
use crate::digest::Digest;

/// Bytes read, checked and sent per step; with the bound on transfers, this bounds their memory.
pub const CHUNK: u64 = 256 << 10;

pub type Hashes = Arc<[[u8; 32]]>;

/// The blob's bytes are not those verify found: the bundle file changed since.
#[derive(Debug)]
pub struct Changed;

#[derive(Default)]
pub struct Chunks {
    tables: Mutex<HashMap<Digest, Arc<OnceCell<Hashes>>>>,
}

impl Chunks {
    /// The chunk hashes of blob `digest` at `at`, taken on its first request (one at a time per blob).
    pub async fn of(
        &self,
        content: &Arc<Content>,
        digest: &Digest,
        at: BlobAt,
    ) -> Result<Hashes, Changed> {
        let cell = self
            .tables
            .lock()
            .expect("not poisoned")
            .entry(digest.clone())
            .or_default()
            .clone();
        let content = content.clone();
        let digest = digest.clone();
        cell.get_or_try_init(|| async move {
            tokio::task::spawn_blocking(move || hash_chunks(&content, &digest, at))
                .await
                .map_err(|_| Changed)?
        })
        .await
        .cloned()
    }
}

/// Reads the blob once: the hash of each chunk, and of the whole, which must be `digest`.
fn hash_chunks(content: &Content, digest: &Digest, at: BlobAt) -> Result<Hashes, Changed> {
    let bundle = &content.bundles[at.bundle];
    let mut whole = Sha256::new();
    let mut hashes = Vec::with_capacity(usize::try_from(at.size.div_ceil(CHUNK)).unwrap_or(0));
    let mut buf = vec![0u8; CHUNK as usize];
    let mut position = 0;
    while position < at.size {
        let length = CHUNK.min(at.size - position) as usize;
        let chunk = &mut buf[..length];
        if let Err(error) = bundle.read_exact_at(chunk, at.offset + position) {
            tracing::error!("blob {digest} in {}: {error}", bundle.path.display());
            return Err(Changed);
        }
        whole.update(&*chunk);
        hashes.push(Sha256::digest(&*chunk).into());
        position += length as u64;
    }
    let actual = Digest::from_hasher(whole);
    if actual != *digest {
        tracing::error!(
            "blob {digest} in {} changed since it was verified (now {actual}); not served",
            bundle.path.display()
        );
        return Err(Changed);
    }
    Ok(hashes.into())
}

/// Whether `bytes`, chunk `index` of a blob, are what `hashes` recorded.
pub fn intact(hashes: &[[u8; 32]], index: u64, bytes: &[u8]) -> bool {
    usize::try_from(index)
        .ok()
        .and_then(|index| hashes.get(index))
        .is_some_and(|expected| *expected == <[u8; 32]>::from(Sha256::digest(bytes)))
}
