//! Proves a bundle complete and intact on arrival, trusting nothing in it: one streaming pass hashes every
//! blob as it passes (the whole file is hashed on another thread for the `.sha256`), then every reference
//! is checked: index → manifests → configs and layers, `manifest.json` and `ferry.json` against the index,
//! and, with a Kubernetes version, the catalog against the bundle. Every finding is collected.

mod catalog;
mod checksum;
mod documents;
mod graph;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use self::catalog::check_completeness;
use self::checksum::check_sums;
use self::stream::{Contents, OuterHasher};
use crate::catalog::Catalogs;
use crate::digest::Digest;
use crate::k8s::KubeVersion;
use crate::tarball::read::{read_bundle, ReadError, Source};
use crate::tarball::{BundleMetadata, METADATA_JSON};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also decompress each layer and check it against the config's diff_ids.
    pub deep: bool,
    /// Check the bundle holds every image the catalog lists for this Kubernetes version.
    pub kubernetes: Option<KubeVersion>,
}

/// What `.sha256` files beside the bundle said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Checksum {
    /// Every checksum file found agrees with the bytes read.
    Verified { files: Vec<PathBuf> },
    /// No checksum file travelled with the bundle.
    Absent,
    Mismatch {
        file: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    pub name: String,
    pub manifest: Option<Digest>,
    /// The config its manifest names: what a lock pins vendor images by.
    pub config: Option<Digest>,
    pub platform: Option<String>,
    pub size: u64,
    pub layers: Vec<Digest>,
    pub problems: Vec<String>,
}

/// Everything verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bundle: PathBuf,
    pub bytes: u64,
    pub checksum: Checksum,
    pub images: Vec<ImageVerdict>,
    /// Findings that belong to no single image.
    pub problems: Vec<String>,
    /// Images the catalog lists for `--k8s` that the bundle lacks.
    pub missing: Vec<String>,
    pub blobs: usize,
    pub metadata: Option<BundleMetadata>,
    /// Where each blob's bytes are in the tar stream (offset, size), for delivery.
    #[serde(skip)]
    pub locations: BTreeMap<Digest, (u64, u64)>,
    #[serde(skip)]
    pub source: Source,
}

/// A bundle proven intact: the only form in which deliver takes one.
#[derive(Debug)]
pub struct Verified {
    pub bundle: PathBuf,
    pub source: Source,
    pub metadata: BundleMetadata,
    pub images: Vec<VerifiedImage>,
    /// Where each blob's bytes are in the tar stream (offset, size).
    pub locations: BTreeMap<Digest, (u64, u64)>,
}

#[derive(Debug, Clone)]
pub struct VerifiedImage {
    /// The upstream name, as the index gives it (or as `ferry.json` does for an image pinned by digest).
    pub name: String,
    pub manifest: Digest,
}

impl Report {
    /// The verified bundle, if every check passed; the report itself otherwise, to show why not.
    pub fn into_verified(self) -> Result<Verified, Box<Report>> {
        if !self.intact() {
            return Err(Box::new(self));
        }
        let images: Option<Vec<VerifiedImage>> = self
            .images
            .iter()
            .map(|image| {
                Some(VerifiedImage {
                    name: image.name.clone(),
                    manifest: image.manifest.clone()?,
                })
            })
            .collect();
        match (images, self.metadata) {
            (Some(images), Some(metadata)) => Ok(Verified {
                bundle: self.bundle,
                source: self.source,
                metadata,
                images,
                locations: self.locations,
            }),
            // An intact bundle always has both; a report without them is not proof of anything.
            (images, metadata) => Err(Box::new(Report {
                metadata,
                problems: vec![format!(
                    "the bundle lacks {}",
                    if images.is_none() {
                        "a manifest digest for some image"
                    } else {
                        METADATA_JSON
                    }
                )],
                ..self
            })),
        }
    }

    pub fn intact(&self) -> bool {
        self.problems.is_empty()
            && self.missing.is_empty()
            && self.images.iter().all(|i| i.problems.is_empty())
            && !matches!(self.checksum, Checksum::Mismatch { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("--k8s cannot be checked: the bundle's release is not one this ferry knows (add it with --catalog-file)")]
    Catalog(#[source] crate::catalog::CatalogError),
    #[error("--k8s: {0}")]
    Kubernetes(crate::resolve::ResolveError),
}

pub fn verify(
    path: &Path,
    options: &VerifyOptions,
    catalogs: &Catalogs,
) -> Result<Report, VerifyError> {
    let source = Source::locate(path)?;
    let mut hasher = OuterHasher::start();
    let mut contents = Contents::default();
    let bytes = read_bundle(&source, &mut hasher, |entry| {
        contents.take(entry, options.deep)
    })?;
    let (parts, whole) = hasher.finish();
    let checksum = check_sums(&source, &parts, &whole);
    let mut report = Report {
        bundle: path.to_path_buf(),
        bytes,
        checksum,
        images: Vec::new(),
        problems: std::mem::take(&mut contents.problems),
        missing: Vec::new(),
        blobs: contents.blobs.len(),
        metadata: None,
        locations: std::mem::take(&mut contents.locations),
        source,
    };
    contents.cross_check(&mut report, options.deep);
    if let Some(version) = options.kubernetes {
        check_completeness(&mut report, version, catalogs)?;
    }
    Ok(report)
}
