//! Pull: registry images into the blob cache, verified, deduplicated, in parallel, resumable.
//!
//! First every image's manifest is resolved (list → the wanted platform → manifest → config), then all
//! layers of all images are fetched together, each distinct blob once, at most `jobs` at a time.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{stream, StreamExt};

use crate::cache::{BlobStore, CacheError};
use crate::digest::Digest;
use crate::image::{
    limits, media, Descriptor, Image, ImageConfig, ImageSource, Index, Manifest, Platform,
};
use crate::progress::Reporter;
use crate::reference::Reference;
use crate::registry::retry::{after_attempts, Classify, RetryPolicy, Verdict};
use crate::registry::{
    FetchError, Location, RefusalKind, RegistryClient, RegistryError, RegistryOptions,
};

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
    #[error("{} fetches failed:\n  {}", .0.len(), .0.iter().map(|e| crate::error::chain(e)).collect::<Vec<_>>().join("\n  "))]
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
    options: &RegistryOptions,
    items: &[PullItem],
    platforms: &[Platform],
    jobs: usize,
    reporter: &dyn Reporter,
) -> Result<PullReport, PullError> {
    let mut report = PullReport::default();
    if items.is_empty() {
        return Ok(report);
    }
    let hosts: BTreeSet<String> = items
        .iter()
        .map(|i| i.location.reference.registry().to_string())
        .collect();
    let client = RegistryClient::connect(options, &hosts).await?;
    let puller = Puller {
        client,
        store,
        retry: &options.retry,
        reporter,
        downloaded: AtomicU64::new(0),
    };
    for note in items.iter().flat_map(|i| &i.location.notes) {
        reporter.note(note);
    }
    // Every image is tried on every platform, so that one run reports every image that fails, not just
    // the first; image by image, platform by platform, in the order asked for.
    let pairs: Vec<(&PullItem, &Platform)> = items
        .iter()
        .flat_map(|item| platforms.iter().map(move |platform| (item, platform)))
        .collect();
    let resolved: Vec<(&PullItem, Result<Image, PullError>)> = stream::iter(pairs)
        .map(|(item, platform)| {
            let puller = &puller;
            async move { (item, puller.resolve(item, platform).await) }
        })
        .buffered(jobs.max(1))
        .collect()
        .await;
    let images: Vec<Image> = all_or_every_failure(excuse_allowed(resolved))?;

    // Each distinct layer once, attributed to the first image that needs it.
    let mut seen = BTreeSet::new();
    let mut jobs_list = Vec::new();
    let shown = |image: &Image| match platforms.len() {
        1 => image.reference.to_string(),
        _ => format!("{} ({})", image.reference, image.platform),
    };
    for image in &images {
        let name = shown(image);
        let (mut total, mut cached) = (0, 0);
        for layer in &image.layers {
            total += layer.size;
            if store.contains(&layer.digest, Some(layer.size)) {
                cached += layer.size;
                report.cached_blobs += usize::from(seen.insert(layer.digest.clone()));
            } else if seen.insert(layer.digest.clone()) {
                jobs_list.push(BlobJob {
                    image: name.clone(),
                    location: location_of(items, image),
                    blob: layer.clone(),
                });
            }
        }
        reporter.image_start(&name, total, cached);
    }
    report.downloaded_blobs = jobs_list.len();
    all_or_every_failure(
        stream::iter(&jobs_list)
            .map(|job| puller.fetch_blob(job))
            .buffer_unordered(jobs.max(1))
            .collect()
            .await,
    )?;
    for image in &images {
        reporter.image_done(&shown(image));
    }
    report.downloaded_bytes = puller.downloaded.load(Ordering::Relaxed);
    report.images = images;
    Ok(report)
}

/// Drops the missing platforms of images allowed to come with fewer, as long as each has one.
fn excuse_allowed(
    resolved: Vec<(&PullItem, Result<Image, PullError>)>,
) -> Vec<Result<Image, PullError>> {
    let has_one = |item: &PullItem| {
        resolved
            .iter()
            .any(|(other, result)| other.upstream == item.upstream && result.is_ok())
    };
    let excused: Vec<bool> = resolved
        .iter()
        .map(|(item, result)| {
            item.partial_ok
                && has_one(item)
                && matches!(
                    result,
                    Err(PullError::Registry(
                        RegistryError::PlatformMissing { .. }
                            | RegistryError::PlatformMismatch { .. }
                    ))
                )
        })
        .collect();
    resolved
        .into_iter()
        .zip(excused)
        .filter(|(_, excused)| !excused)
        .map(|((_, result), _)| result)
        .collect()
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

fn location_of(items: &[PullItem], image: &Image) -> Reference {
    items
        .iter()
        .find(|i| i.upstream == image.reference)
        .map(|i| i.location.reference.clone())
        .expect("every image comes from an item")
}

struct BlobJob {
    image: String,
    location: Reference,
    blob: Descriptor,
}

struct Puller<'a> {
    client: RegistryClient,
    store: &'a BlobStore,
    retry: &'a RetryPolicy,
    reporter: &'a dyn Reporter,
    downloaded: AtomicU64,
}

impl Puller<'_> {
    /// Resolves one image to its single-platform manifest and fetches its config.
    async fn resolve(&self, item: &PullItem, platform: &Platform) -> Result<Image, PullError> {
        let image = item.upstream.to_string();
        let location = &item.location.reference;
        // A digest-pinned reference is fetched by its digest, which the client checks.
        let top = self.fetch_manifest(&image, location).await?;
        let top_digest = Digest::of(&top);
        let top_type = media_type_of(&image, &top)?;
        let (index_digest, manifest_bytes, manifest_type) = if media::is_index(&top_type) {
            let chosen = choose_platform(&image, &top, platform)?;
            within(&image, "manifest", chosen.size, limits::MAX_MANIFEST)?;
            let bytes = self
                .fetch_manifest(&image, &location.with_digest(chosen.digest.clone()))
                .await?;
            let manifest_type = media_type_of(&image, &bytes)?;
            (Some(top_digest), bytes, manifest_type)
        } else {
            (None, top, top_type)
        };
        let manifest: Manifest =
            serde_json::from_slice(&manifest_bytes).map_err(|e| RegistryError::BadManifest {
                image: image.clone(),
                media_type: manifest_type.clone(),
                message: e.to_string(),
            })?;
        within(&image, "config", manifest.config.size, limits::MAX_CONFIG)?;
        if manifest.claimed_size().is_none() {
            return Err(RegistryError::BadManifest {
                image,
                media_type: manifest_type,
                message: format!(
                    "its blob sizes add up to more than {} bytes",
                    limits::MAX_IMAGE_BYTES
                ),
            }
            .into());
        }
        let manifest_digest = Digest::of(&manifest_bytes);
        self.store
            .put(&manifest_digest, &manifest_bytes)
            .map_err(|cause| PullError::Blob {
                image: image.clone(),
                digest: manifest_digest.clone(),
                registry: location.registry().to_string(),
                attempts: 1,
                cause: cause.into(),
            })?;
        let config_job = BlobJob {
            image: image.clone(),
            location: location.clone(),
            blob: manifest.config.clone(),
        };
        self.fetch_blob(&config_job).await?;
        let image_platform =
            ImageConfig::parse(&self.store.read(&manifest.config.digest).unwrap_or_default())
                .map_err(|e| RegistryError::BadManifest {
                    image: image.clone(),
                    media_type: "config".into(),
                    message: e.to_string(),
                })?
                .platform();
        if !platform.matches(&image_platform) {
            return Err(RegistryError::PlatformMismatch {
                image,
                wanted: platform.to_string(),
                actual: image_platform.to_string(),
            }
            .into());
        }
        Ok(Image {
            reference: item.upstream.clone(),
            source: ImageSource::Registry {
                fetched_from: location.registry().to_string(),
            },
            platform: image_platform,
            index_digest,
            manifest: Descriptor {
                media_type: manifest_type,
                digest: manifest_digest,
                size: manifest_bytes.len() as u64,
                platform: None,
                annotations: None,
            },
            config: manifest.config,
            layers: manifest.layers,
        })
    }

    async fn fetch_manifest(
        &self,
        image: &str,
        location: &Reference,
    ) -> Result<Vec<u8>, RegistryError> {
        self.retry
            .run(
                |_| self.client.manifest(location),
                |attempt, error| {
                    self.reporter
                        .retry(image, "manifest", attempt, &error.to_string())
                },
            )
            .await
            .map_err(|failure| RegistryError::Manifest {
                image: image.to_string(),
                registry: location.registry().to_string(),
                attempts: failure.attempts,
                cause: failure.last,
            })
    }

    async fn fetch_blob(&self, job: &BlobJob) -> Result<(), PullError> {
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
            .map_err(|failure| PullError::Blob {
                image: job.image.clone(),
                digest: job.blob.digest.clone(),
                registry: job.location.registry().to_string(),
                attempts: failure.attempts,
                cause: failure.last,
            })
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
                self.reporter.bytes(&job.image, digest, chunk.len() as u64);
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

/// The media type a manifest declares, or the one its shape implies (OCI allows omitting it).
fn media_type_of(image: &str, bytes: &[u8]) -> Result<String, RegistryError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "schemaVersion")]
        schema_version: Option<u32>,
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| RegistryError::BadManifest {
        image: image.to_string(),
        media_type: "unknown".into(),
        message: e.to_string(),
    })?;
    let declared = probe.media_type.as_deref();
    if probe.schema_version == Some(1)
        || matches!(
            declared,
            Some(media::DOCKER_SCHEMA1 | media::DOCKER_SCHEMA1_SIGNED)
        )
    {
        return Err(RegistryError::Schema1 {
            image: image.to_string(),
        });
    }
    Ok(match declared {
        Some(declared) => declared.to_string(),
        None if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
        None => media::OCI_MANIFEST.to_string(),
    })
}

/// Picks the wanted platform's manifest from a list or index, skipping attestations (`unknown/unknown`).
fn choose_platform(
    image: &str,
    index_bytes: &[u8],
    wanted: &Platform,
) -> Result<Descriptor, RegistryError> {
    let index: Index =
        serde_json::from_slice(index_bytes).map_err(|e| RegistryError::BadManifest {
            image: image.to_string(),
            media_type: "index".into(),
            message: e.to_string(),
        })?;
    if let Some(found) = index
        .manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| wanted.matches(p)))
    {
        return Ok(found.clone());
    }
    let available: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::to_string)
        .collect();
    Err(RegistryError::PlatformMissing {
        image: image.to_string(),
        wanted: wanted.to_string(),
        available: available.join(", "),
    })
}

/// Refuses what is larger than the limit verify will hold the bundle to.
fn within(image: &str, what: &'static str, size: u64, limit: u64) -> Result<(), RegistryError> {
    if size > limit {
        return Err(RegistryError::TooLarge {
            image: image.to_string(),
            what,
            size,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(platforms: &[&str]) -> Vec<u8> {
        let manifests: Vec<serde_json::Value> = platforms
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let platform: Platform = p.parse().unwrap();
                serde_json::json!({
                    "mediaType": media::DOCKER_MANIFEST,
                    "digest": Digest::of(&[i as u8]).to_string(),
                    "size": 100 + i,
                    "platform": platform,
                })
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": media::DOCKER_LIST, "manifests": manifests})).unwrap()
    }

    #[test]
    fn picks_the_wanted_platform_with_its_variant() {
        let list = index(&[
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
        ]);
        assert_eq!(
            choose_platform("x", &list, &"linux/arm/v7".parse().unwrap())
                .unwrap()
                .size,
            102
        );
        assert_eq!(
            choose_platform("x", &list, &"linux/arm64".parse().unwrap())
                .unwrap()
                .size,
            103
        );
        assert_eq!(
            choose_platform("x", &list, &Platform::linux_amd64())
                .unwrap()
                .size,
            100
        );
    }

    #[test]
    fn a_missing_platform_names_the_ones_that_exist() {
        let list = index(&["linux/amd64", "linux/arm64", "unknown/unknown"]);
        let err = choose_platform("quay.io/a/b:1", &list, &"linux/s390x".parse().unwrap())
            .unwrap_err()
            .to_string();
        assert_eq!(err, "quay.io/a/b:1 has no manifest for platform linux/s390x; it has: linux/amd64, linux/arm64");
    }

    #[test]
    fn schema_1_is_refused_by_name() {
        let err = media_type_of(
            "quay.io/k8scsi/old:v1",
            br#"{"schemaVersion": 1, "name": "k8scsi/old"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("quay.io/k8scsi/old:v1 has a Docker schema 1 manifest"),
            "{err}"
        );
    }

    #[test]
    fn media_type_is_inferred_when_omitted() {
        assert_eq!(
            media_type_of("x", br#"{"schemaVersion": 2, "manifests": []}"#).unwrap(),
            media::OCI_INDEX
        );
        assert_eq!(
            media_type_of("x", br#"{"schemaVersion": 2, "config": {}, "layers": []}"#).unwrap(),
            media::OCI_MANIFEST
        );
    }
}
