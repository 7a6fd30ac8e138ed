//! From a reference to single-platform images: the top manifest is fetched once per image (a list or
//! index is then read for each platform asked for, or with none asked, `--platform all`, each of its
//! manifests is taken and the index kept in the cache), each platform's manifest and config after it.

use super::{BlobJob, PullError, PullItem, Puller};
use crate::digest::Digest;
use crate::image::Platform;
use crate::image::{limits, media, Descriptor, Image, ImageConfig, ImageSource, Index, Manifest};
use crate::io::read_side_file;
use crate::reference::Reference;
use crate::registry::RegistryError;

/// What a reference names upstream: one manifest, or a list or index of them.
struct Top {
    digest: Digest,
    bytes: Vec<u8>,
    media_type: String,
}

impl Puller<'_> {
    /// Resolves one image for each of `platforms`, fetching its top manifest once: the results come in
    /// the order of `platforms`, and a top manifest that cannot be had is one failure, not one per platform.
    pub(super) async fn resolve(
        &self,
        item: &PullItem,
        platforms: &[Platform],
    ) -> Vec<Result<Image, PullError>> {
        let image = item.upstream.to_string();
        let location = &item.location.reference;
        // A digest-pinned reference is read from the cache, or fetched, by its digest, which is checked.
        let top = match self.fetch_manifest(&image, location).await {
            Ok(bytes) => media_type_of(&image, &bytes).map(|media_type| Top {
                digest: Digest::of(&bytes),
                bytes,
                media_type,
            }),
            Err(error) => Err(error),
        };
        let top = match top {
            Ok(top) => top,
            Err(error) => return vec![Err(error.into())],
        };
        if platforms.is_empty() {
            return match self.every_entry(item, &top) {
                Ok(entries) => {
                    let mut images = Vec::with_capacity(entries.len());
                    for entry in &entries {
                        images.push(self.resolve_listed(item, &top, entry).await);
                    }
                    images
                }
                Err(error) => vec![Err(error)],
            };
        }
        let mut images = Vec::with_capacity(platforms.len());
        for platform in platforms {
            images.push(self.resolve_platform(item, &top, platform).await);
        }
        images
    }

    /// `--platform all`: every manifest a list or index names, in its order, the index itself kept in
    /// the cache to be carried byte for byte; a single manifest is the one entry, as it is.
    fn every_entry(
        &self,
        item: &PullItem,
        top: &Top,
    ) -> Result<Vec<Option<Descriptor>>, PullError> {
        let image = item.upstream.to_string();
        if !media::is_index(&top.media_type) {
            return Ok(vec![None]);
        }
        let index = parse_index(&image, &top.bytes)?;
        if let Some(nested) = index
            .manifests
            .iter()
            .find(|m| media::is_index(&m.media_type))
        {
            return Err(RegistryError::NestedIndex {
                image,
                digest: nested.digest.clone(),
            }
            .into());
        }
        self.store
            .put(&top.digest, &top.bytes)
            .map_err(|cause| PullError::Cache { image, cause })?;
        Ok(index.manifests.into_iter().map(Some).collect())
    }

    /// One platform of an image: its manifest (from the index, or the top manifest itself) and config.
    async fn resolve_platform(
        &self,
        item: &PullItem,
        top: &Top,
        platform: &Platform,
    ) -> Result<Image, PullError> {
        let image = item.upstream.to_string();
        let chosen = match media::is_index(&top.media_type) {
            true => Some(choose_platform(&image, &top.bytes, platform)?),
            false => None,
        };
        let resolved = self.resolve_entry(item, top, &chosen).await?;
        if !platform.matches(&resolved.platform) {
            return Err(RegistryError::PlatformMismatch {
                image,
                wanted: platform.to_string(),
                actual: resolved.platform.to_string(),
            }
            .into());
        }
        Ok(resolved)
    }

    /// One entry of the top's index as it is (`None`: the top is the manifest): its config's platform
    /// must be the one the entry lists, as verify holds the bundle to.
    async fn resolve_listed(
        &self,
        item: &PullItem,
        top: &Top,
        entry: &Option<Descriptor>,
    ) -> Result<Image, PullError> {
        let resolved = self.resolve_entry(item, top, entry).await?;
        match entry.as_ref().and_then(|e| e.platform.as_ref()) {
            Some(listed) if !listed.matches(&resolved.platform) => {
                Err(RegistryError::IndexPlatform {
                    image: item.upstream.to_string(),
                    manifest: resolved.manifest.digest,
                    listed: listed.to_string(),
                    actual: resolved.platform.to_string(),
                }
                .into())
            }
            _ => Ok(resolved),
        }
    }

    /// The image of one entry of the top's index (`None`: the top is the manifest): its manifest and
    /// config.
    async fn resolve_entry(
        &self,
        item: &PullItem,
        top: &Top,
        entry: &Option<Descriptor>,
    ) -> Result<Image, PullError> {
        let image = item.upstream.to_string();
        let location = &item.location.reference;
        let (index_digest, manifest_bytes, manifest_type) = if let Some(chosen) = entry {
            within(&image, "manifest", chosen.size, limits::MAX_MANIFEST)?;
            let bytes = self
                .fetch_manifest(&image, &location.with_digest(chosen.digest.clone()))
                .await?;
            let manifest_type = media_type_of(&image, &bytes)?;
            (Some(top.digest.clone()), bytes, manifest_type)
        } else {
            (None, top.bytes.clone(), top.media_type.clone())
        };
        let manifest = parse_manifest(&image, &manifest_bytes, &manifest_type)?;
        let manifest_digest = Digest::of(&manifest_bytes);
        self.store
            .put(&manifest_digest, &manifest_bytes)
            .map_err(|cause| PullError::Cache {
                image: image.clone(),
                cause,
            })?;
        let image_platform = self.config_platform(item, location, &manifest).await?;
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

    /// Fetches the config into the cache and reads the platform it says.
    async fn config_platform(
        &self,
        item: &PullItem,
        location: &Reference,
        manifest: &Manifest,
    ) -> Result<Platform, PullError> {
        let image = item.upstream.to_string();
        let config_job = BlobJob {
            image: image.clone(),
            id: None,
            location: location.clone(),
            blob: manifest.config.clone(),
        };
        self.fetch_blob(&config_job).await?;
        let bytes = self
            .store
            .read(&manifest.config.digest)
            .map_err(|cause| PullError::Cache {
                image: image.clone(),
                cause,
            })?;
        let config = ImageConfig::parse(&bytes).map_err(|e| RegistryError::BadManifest {
            image,
            media_type: "config".into(),
            message: e.to_string(),
        })?;
        Ok(config.platform())
    }

    /// A manifest by tag from the registry; by digest from the cache when a run before stored it (no
    /// request, which on a warm rebuild is one round trip per image less), else from the registry.
    async fn fetch_manifest(
        &self,
        image: &str,
        location: &Reference,
    ) -> Result<Vec<u8>, RegistryError> {
        if let Some(stored) = location
            .digest()
            .and_then(|digest| self.stored_manifest(digest))
        {
            return Ok(stored);
        }
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

    /// The cached manifest of `digest`, hashed again as it is read: a file changed in the cache is not
    /// believed but removed, to be fetched and stored anew.
    fn stored_manifest(&self, digest: &Digest) -> Option<Vec<u8>> {
        let bytes = read_side_file(&self.store.path(digest), limits::MAX_MANIFEST).ok()?;
        if Digest::of(&bytes) != *digest {
            // Should it fail, the fetched manifest is taken all the same, and the next run tries again.
            let _ = self.store.evict(digest);
            return None;
        }
        Some(bytes)
    }
}

/// A single-platform manifest, within the limits verify will hold the bundle to.
fn parse_manifest(image: &str, bytes: &[u8], media_type: &str) -> Result<Manifest, RegistryError> {
    let bad = |message: String| RegistryError::BadManifest {
        image: image.to_string(),
        media_type: media_type.to_string(),
        message,
    };
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    within(image, "config", manifest.config.size, limits::MAX_CONFIG)?;
    if manifest.claimed_size().is_none() {
        return Err(bad(format!(
            "its blob sizes add up to more than {} bytes",
            limits::MAX_IMAGE_BYTES
        )));
    }
    Ok(manifest)
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
    let index = parse_index(image, index_bytes)?;
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

fn parse_index(image: &str, bytes: &[u8]) -> Result<Index, RegistryError> {
    serde_json::from_slice(bytes).map_err(|e| RegistryError::BadManifest {
        image: image.to_string(),
        media_type: "index".into(),
        message: e.to_string(),
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
