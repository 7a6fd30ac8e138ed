//! Pull: registry images into the blob cache, verified, deduplicated, in parallel, resumable.
//!
//! First every image's manifest is resolved (resolve.rs: list → the wanted platforms → manifests →
//! configs), then all layers of all images are fetched together (blob.rs), each distinct blob once, at
//! most `jobs` at a time.

mod blob;
mod resolve;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{stream, StreamExt};

use self::blob::BlobJob;
use super::FetchSettings;
use crate::cache::{BlobStore, CacheError};
use crate::causes::chain;
use crate::digest::Digest;
use crate::image::Image;
use crate::progress::{Action, Id, Reporter, Task};
use crate::reference::Reference;
use crate::registry::retry::{after_attempts, Classify, RetryPolicy, Verdict};
use crate::registry::{FetchError, Location, RefusalKind, RegistryClient, RegistryError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot fetch blob {digest} of {image} from {registry}{}", after_attempts(*attempts))]
    Blob {
        image: String,
        digest: Digest,
        registry: String,
        attempts: u32,
        #[source]
        cause: BlobFailure,
    },
    /// This machine's cache failed, not the registry: a full disk, a file that cannot be read back.
    #[error("the local cache failed while pulling {image}")]
    Cache {
        image: String,
        #[source]
        cause: CacheError,
    },
    #[error("{} fetches failed:\n  {}", .0.len(), .0.iter().map(|e| chain(e)).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<PullError>),
}

/// Why one attempt at a blob failed: the registry, or the cache that checks and stores what it sent.
#[derive(Debug, thiserror::Error)]
pub enum BlobFailure {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl From<reqwest::Error> for BlobFailure {
    fn from(error: reqwest::Error) -> Self {
        BlobFailure::Fetch(error.into())
    }
}

impl Classify for BlobFailure {
    fn verdict(&self) -> Verdict {
        match self {
            BlobFailure::Fetch(fetch) => fetch.verdict(),
            // A wrong digest may be a byte flipped on the way; a fresh download settles it, a bounded number of times.
            BlobFailure::Cache(
                CacheError::DigestMismatch { .. } | CacheError::SizeMismatch { .. },
            ) => Verdict::Transient,
            BlobFailure::Cache(_) => Verdict::Fatal,
        }
    }
}

/// One image to pull: its upstream name, and where to fetch it from.
#[derive(Debug, Clone)]
pub struct PullItem {
    pub upstream: Reference,
    pub location: Location,
    /// Carried with the platforms it has when it lacks some of those asked for (`--allow-single-platform`).
    pub partial_ok: bool,
}

/// What a pull did, for the summary line and for tests.
#[derive(Debug, Default)]
pub struct PullReport {
    pub images: Vec<Image>,
    /// Blob bytes received from registries in this run (zero on a warm cache).
    pub downloaded_bytes: u64,
    pub downloaded_blobs: usize,
    pub cached_blobs: usize,
}

pub async fn pull(
    store: &BlobStore,
    settings: &FetchSettings,
    items: &[PullItem],
    reporter: &dyn Reporter,
) -> Result<PullReport, PullError> {
    if items.is_empty() {
        return Ok(PullReport::default());
    }
    let hosts: BTreeSet<String> = items
        .iter()
        .map(|i| i.location.reference.registry().to_string())
        .collect();
    let puller = Puller {
        client: RegistryClient::connect(&settings.registry, &hosts).await?,
        store,
        retry: &settings.registry.retry,
        reporter,
        downloaded: AtomicU64::new(0),
    };
    for note in items.iter().flat_map(|i| &i.location.notes) {
        reporter.note(note);
    }
    // Every image is tried on every platform, so that one run reports every image that fails, not just
    // the first; image by image, platform by platform, in the order asked for.
    let platforms = &settings.platforms;
    let jobs = settings.jobs.max(1);
    let resolved: Vec<(&PullItem, Vec<Result<Image, PullError>>)> = stream::iter(items)
        .map(|item| {
            let puller = &puller;
            async move { (item, puller.resolve(item, platforms).await) }
        })
        .buffered(jobs)
        .collect()
        .await;
    let images: Vec<Image> = all_or_every_failure(excuse_allowed(resolved))?;
    let (blob_jobs, ids, cached_blobs) = puller.plan_blobs(items, &images, platforms.len() != 1);
    all_or_every_failure(
        stream::iter(&blob_jobs)
            .map(|job| puller.fetch_blob(job))
            .buffer_unordered(jobs)
            .collect()
            .await,
    )?;
    for id in ids {
        reporter.on_complete(id);
    }
    Ok(PullReport {
        images,
        downloaded_bytes: puller.downloaded.load(Ordering::Relaxed),
        downloaded_blobs: blob_jobs.len(),
        cached_blobs,
    })
}

/// Drops the missing platforms of images allowed to come with fewer, as long as each has one.
fn excuse_allowed(
    resolved: Vec<(&PullItem, Vec<Result<Image, PullError>>)>,
) -> Vec<Result<Image, PullError>> {
    let mut results = Vec::new();
    for (item, platforms) in resolved {
        let has_one = platforms.iter().any(Result::is_ok);
        results.extend(platforms.into_iter().filter(|result| {
            let missing = matches!(
                result,
                Err(PullError::Registry(
                    RegistryError::PlatformMissing { .. } | RegistryError::PlatformMismatch { .. }
                ))
            );
            !(item.partial_ok && has_one && missing)
        }));
    }
    results
}

/// The values, or the one failure, or all of them together. A registry that refused this machine's
/// credentials (or wants some) is named once, not once per image it refused.
fn all_or_every_failure<T>(results: Vec<Result<T, PullError>>) -> Result<Vec<T>, PullError> {
    let (mut values, mut failures) = (Vec::new(), Vec::new());
    for result in results {
        match result {
            Ok(value) => values.push(value),
            Err(failure) => failures.push(failure),
        }
    }
    let mut refused: Vec<(String, RefusalKind)> = Vec::new();
    failures.retain(|failure| match failure.credential_refusal() {
        Some(key) if refused.contains(&key) => false,
        Some(key) => {
            refused.push(key);
            true
        }
        None => true,
    });
    match failures.len() {
        0 => Ok(values),
        1 => Err(failures.remove(0)),
        _ => Err(PullError::Several(failures)),
    }
}

impl PullError {
    /// The registry and kind of a refusal that concerns the credentials, not one image.
    fn credential_refusal(&self) -> Option<(String, RefusalKind)> {
        let cause = match self {
            PullError::Registry(RegistryError::Manifest { cause, .. }) => cause,
            PullError::Blob {
                cause: BlobFailure::Fetch(cause),
                ..
            } => cause,
            _ => return None,
        };
        match cause {
            FetchError::Refused(refusal)
                if matches!(
                    refusal.kind,
                    RefusalKind::BadCredentials | RefusalKind::NoCredentials
                ) =>
            {
                Some((refusal.registry.clone(), refusal.kind))
            }
            _ => None,
        }
    }
}

struct Puller<'a> {
    client: RegistryClient,
    store: &'a BlobStore,
    retry: &'a RetryPolicy,
    reporter: &'a dyn Reporter,
    downloaded: AtomicU64,
}

impl Puller<'_> {
    /// Each distinct layer not in the cache once, attributed to the first image that needs it; each
    /// image's progress started, its cached bytes counted as done. Returns the jobs, the images' progress
    /// ids, and how many distinct layers the cache had.
    fn plan_blobs(
        &self,
        items: &[PullItem],
        images: &[Image],
        several: bool,
    ) -> (Vec<BlobJob>, Vec<Id>, usize) {
        let mut seen = BTreeSet::new();
        let (mut jobs, mut ids, mut cached_blobs) = (Vec::new(), Vec::new(), 0);
        for image in images {
            let name = match several {
                true => format!("{} ({})", image.reference, image.platform),
                false => image.reference.to_string(),
            };
            let (mut total, mut cached, mut mine) = (0, 0, Vec::new());
            for layer in &image.layers {
                total += layer.size;
                if self.store.contains(&layer.digest, Some(layer.size)) {
                    cached += layer.size;
                    cached_blobs += usize::from(seen.insert(layer.digest.clone()));
                } else if seen.insert(layer.digest.clone()) {
                    mine.push(layer.clone());
                }
            }
            let id = self.reporter.on_start(&Task {
                action: Action::Pull,
                subject: &name,
                total,
                done: cached,
            });
            let location = location_of(items, image);
            jobs.extend(mine.into_iter().map(|blob| BlobJob {
                image: name.clone(),
                id: Some(id),
                location: location.clone(),
                blob,
            }));
            ids.push(id);
        }
        (jobs, ids, cached_blobs)
    }
}

fn location_of(items: &[PullItem], image: &Image) -> Reference {
    items
        .iter()
        .find(|i| i.upstream == image.reference)
        .map(|i| i.location.reference.clone())
        .expect("every image comes from an item")
}
