//! The image model every stage shares: descriptors, platforms, manifests, and [`Image`], one
//! single-platform image whose blobs are all in the cache. Pull and vendor import produce `Image`s;
//! the archive writer, verifier and delivery consume them.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::Reference;

/// What a registry or a bundle may claim, one set for pull and verify, so that ferry never bundles what
/// its own verify would refuse. Vendor import holds archives to the tighter limits docker and
/// containers/image load them with (fetch/import/archive.rs: 4 MiB configs, 125 layers).
pub mod limits {
    /// Distribution refuses to store a larger manifest, and containerd to fetch one.
    pub const MAX_MANIFEST: u64 = 4 << 20;
    /// Configs grow with the build history and no runtime bounds them (podman stops at 4 MiB, docker and
    /// containerd never); real ones stay under a few MiB, so this leaves room without trusting a lie.
    pub const MAX_CONFIG: u64 = 32 << 20;
    /// More than any real image; a larger claim is refused, which keeps every sum of sizes far from
    /// overflowing.
    pub const MAX_IMAGE_BYTES: u64 = 1 << 50;
}

pub mod media {
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
    pub const DOCKER_SCHEMA1_SIGNED: &str =
        "application/vnd.docker.distribution.manifest.v1+prettyjws";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

    /// What ferry asks registries for: every manifest and index type it can carry.
    pub const ACCEPTED: &[&str] = &[DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX];

    pub fn is_index(media_type: &str) -> bool {
        media_type == DOCKER_LIST || media_type == OCI_INDEX
    }
}

/// An OCI content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// `os/architecture[/variant]`, as in `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn linux_amd64() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    /// This machine's, in the names images use (Go's): linux/amd64 on x86_64, linux/arm64 on aarch64.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform {
            os: std::env::consts::OS.into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// `unknown/unknown`: what no node runs, such as buildkit's attestation manifests (SBOM, provenance)
    /// in an image index.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown"
    }

    /// Whether an index entry serves this platform. A missing variant on either side matches, except
    /// that arm64's implicit variant is v8 (as containerd normalizes it).
    pub fn matches(&self, other: &Platform) -> bool {
        let variant = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", Some("v8")) => None,
            (_, v) => v.map(str::to_string),
        };
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || variant(self) == variant(other))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a platform (expected os/architecture[/variant], e.g. linux/amd64 or linux/arm/v7)")]
pub struct PlatformError(String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid =
            |s: &&str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError(text.to_string()));
        }
        Ok(Platform {
            os: parts[0].to_ascii_lowercase(),
            architecture: parts[1].to_ascii_lowercase(),
            variant: parts.get(2).map(|v| v.to_ascii_lowercase()),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// The fields of a single-platform manifest (Docker schema 2 or OCI) that ferry needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// Bytes of config and layers, as the manifest claims them; `None` for a claim no real image makes
    /// (more than [`limits::MAX_IMAGE_BYTES`]), so that no sum of image sizes can overflow.
    pub fn claimed_size(&self) -> Option<u64> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .try_fold(0u64, |total, blob| total.checked_add(blob.size))
            .filter(|total| *total <= limits::MAX_IMAGE_BYTES)
    }
}

/// The parts of an image config (Docker or OCI) that ferry reads; the rest (history, environment) is
/// skipped unread.
#[derive(Debug, Clone, Deserialize)]
pub struct ImageConfig {
    pub os: String,
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl ImageConfig {
    pub fn parse(bytes: &[u8]) -> Result<ImageConfig, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn platform(&self) -> Platform {
        Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            variant: self.variant.clone(),
        }
    }
}

/// A manifest list or image index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The media type it declares, or the OCI index's, which one that declares none is.
    pub fn media_type(&self) -> &str {
        self.media_type.as_deref().unwrap_or(media::OCI_INDEX)
    }

    /// The media type the bytes of an index declare (ferry's own, or an upstream Docker list), to
    /// send or name it by; the OCI index's when they declare none or are not an index.
    pub fn media_type_of(bytes: &[u8]) -> String {
        serde_json::from_slice::<Index>(bytes).map_or_else(
            |_| media::OCI_INDEX.to_string(),
            |i| i.media_type().to_string(),
        )
    }
}

/// Where an image's bytes came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ImageSource {
    /// Pulled from a registry; `fetched_from` is the host it is fetched from (a mirror, perhaps), for
    /// what the cache does not already hold.
    Registry { fetched_from: String },
    /// Read from a docker-save tarball of the vendor's package.
    Vendor { file: PathBuf },
}

/// One single-platform image whose manifest, config and layers are all in the blob cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The upstream name (fully qualified, with a tag unless pulled by digest only).
    pub reference: Reference,
    pub source: ImageSource,
    pub platform: Platform,
    /// The upstream manifest list / index this manifest was picked from, if any.
    pub index_digest: Option<Digest>,
    /// The single-platform manifest; its bytes are the blob `manifest.digest`.
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Image {
    /// Total bytes of manifest, config and layers.
    pub fn size(&self) -> u64 {
        self.manifest.size + self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }

    /// Config and layers: the blobs a manifest points to.
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.config).chain(&self.layers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_parse_with_variants() {
        let arm: Platform = "linux/arm/v7".parse().unwrap();
        assert_eq!(arm.variant.as_deref(), Some("v7"));
        assert_eq!(arm.to_string(), "linux/arm/v7");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v1/x".parse::<Platform>().is_err());
    }

    #[test]
    fn platform_matching_follows_containerd() {
        let want: Platform = "linux/arm64".parse().unwrap();
        assert!(want.matches(&"linux/arm64/v8".parse().unwrap()));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(!v7.matches(&"linux/arm/v6".parse().unwrap()));
        assert!(!Platform::linux_amd64().matches(&"linux/arm64".parse().unwrap()));
    }
}
