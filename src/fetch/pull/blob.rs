//! One blob from a registry into the cache: resumed from whatever an earlier try (of this or another
//! process) left, checked against its digest, retried when the failure may pass.

use std::sync::atomic::Ordering;

use futures_util::StreamExt;

use super::{BlobFailure, PullError, Puller};
use crate::cache::CacheError;
use crate::image::Descriptor;
use crate::progress::Id;
use crate::reference::Reference;
use crate::registry::retry::RetryError;
use crate::registry::FetchError;

pub(super) struct BlobJob {
    /// The image it is fetched for, as messages name it.
    pub image: String,
    /// The progress task its bytes count for; none for a config, fetched before its image's task starts.
    pub id: Option<Id>,
    pub location: Reference,
    pub blob: Descriptor,
}

impl Puller<'_> {
    pub(super) async fn fetch_blob(&self, job: &BlobJob) -> Result<(), PullError> {
        let what = format!("blob {}", job.blob.digest);
        self.retry
            .run(
                |_| self.blob_attempt(job),
                |attempt, error| {
                    self.reporter
                        .retry(&job.image, &what, attempt, &error.to_string())
                },
            )
            .await
            .map_err(|failure| blob_error(job, failure))
    }

    /// One try at one blob: resume from whatever an earlier try (of this or another process) left.
    async fn blob_attempt(&self, job: &BlobJob) -> Result<(), BlobFailure> {
        let (digest, size) = (&job.blob.digest, job.blob.size);
        if self.store.contains(digest, Some(size)) {
            return Ok(());
        }
        let (store, wanted) = (self.store.clone(), digest.clone());
        // Taking the partial file's lock blocks while another ferry process downloads the same blob.
        let mut partial = tokio::task::spawn_blocking(move || store.begin(&wanted, Some(size)))
            .await
            .expect("cache task does not panic")?;
        if self.store.contains(digest, Some(size)) {
            return Ok(());
        }
        if partial.offset() < size {
            let response = self
                .client
                .blob(&job.location, digest, partial.offset(), size)
                .await?;
            if response.status() != reqwest::StatusCode::PARTIAL_CONTENT {
                partial.restart()?;
            }
            let mut body = response.bytes_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk?;
                partial.write(&chunk)?;
                self.downloaded
                    .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                if let Some(id) = job.id {
                    self.reporter.on_progress(id, chunk.len() as u64);
                }
            }
            if partial.offset() < size {
                return Err(FetchError::Truncated {
                    received: partial.offset(),
                    expected: size,
                }
                .into());
            }
        }
        partial.commit()?;
        Ok(())
    }
}

/// Where a blob's last failure happened: bytes that do not match their digest came from the registry;
/// any other failure of the cache is this machine's (a full disk), and is said so.
fn blob_error(job: &BlobJob, failure: RetryError<BlobFailure>) -> PullError {
    match failure.last {
        BlobFailure::Cache(cause @ CacheError::Io { .. }) => PullError::Cache {
            image: job.image.clone(),
            cause,
        },
        cause => PullError::Blob {
            image: job.image.clone(),
            digest: job.blob.digest.clone(),
            registry: job.location.registry().to_string(),
            attempts: failure.attempts,
            cause,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::causes::chain;
    use crate::digest::Digest;
    use crate::image::media;

    fn job() -> BlobJob {
        BlobJob {
            image: "quay.io/a/b:1".into(),
            id: None,
            location: "127.0.0.1:5000/a/b:1".parse().unwrap(),
            blob: Descriptor {
                media_type: media::OCI_LAYER_GZIP.into(),
                digest: Digest::of(b"layer"),
                size: 5,
                platform: None,
                annotations: None,
            },
        }
    }

    #[test]
    fn a_cache_that_cannot_write_is_named_not_the_registry() {
        let full = CacheError::Io {
            path: "/cache/ferry-v1/partial/ab".into(),
            action: "cannot write partial download",
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        };
        let error = blob_error(
            &job(),
            RetryError {
                attempts: 1,
                last: BlobFailure::Cache(full),
            },
        );
        assert_eq!(
            chain(&error),
            format!(
                "the local cache failed while pulling quay.io/a/b:1: cache /cache/ferry-v1/partial/ab: \
                 cannot write partial download: {}",
                std::io::Error::from(std::io::ErrorKind::StorageFull)
            )
        );
        let wrong = CacheError::DigestMismatch {
            expected: Digest::of(b"layer"),
            actual: Digest::of(b"other"),
            actual_size: 5,
        };
        let error = blob_error(
            &job(),
            RetryError {
                attempts: 6,
                last: BlobFailure::Cache(wrong),
            },
        );
        assert!(
            error.to_string().starts_with(&format!(
                "cannot fetch blob {} of quay.io/a/b:1 from 127.0.0.1:5000, after 6 attempts",
                Digest::of(b"layer")
            )),
            "{error}"
        );
    }
}
