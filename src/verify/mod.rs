//! Proves a bundle complete and intact on arrival, trusting nothing in it: one streaming pass hashes every
//! blob as it passes (the whole file is hashed on another thread for the `.sha256`), then every reference
//! is checked: index → manifests → configs and layers, `manifest.json` and `ferry.json` against the index,
//! and, with a Kubernetes version, the catalog against the bundle. Every finding is collected.
//!
//! A delta is checked with its bases (delta.rs): each base file must be one the delta names by sha256,
//! and supplies the blobs the delta expects from it, each hashed as it passes; the union is then checked
//! as the full bundle it stands for. Without its bases, what the delta holds is checked, and what
//! it expects from where is listed.

mod base;
mod catalog;
mod checksum;
mod delta;
mod documents;
mod graph;
mod stream;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use self::base::describe_from_headers;
use self::catalog::check_completeness;
use self::checksum::check_sums;
pub use self::checksum::checksum_lines;
pub use self::delta::{BaseVerdict, DeltaReport};
use self::stream::{Contents, OuterHasher};
use crate::catalog::Catalogs;
use crate::digest::Digest;
use crate::image::Platform;
use crate::k8s::KubeVersion;
use crate::recovery::{self, RecoveryError, RecoverySet};
use crate::reference::Reference;
use crate::tarball::delta::{BundleDescription, DeltaRecord, DescribedImage, HeldBlob};
use crate::tarball::layout::METADATA_JSON;
use crate::tarball::read::{read_bundle, ReadError, Source};
use crate::tarball::{file_name, BundleMetadata, Documents};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Also decompress each layer and check it against the config's diff_ids.
    pub deep: bool,
    /// Check the bundle holds every image the catalog lists for this Kubernetes version.
    pub kubernetes: Option<KubeVersion>,
    /// A delta's bases, in any order: each must be a file the delta names.
    pub bases: Vec<PathBuf>,
}

/// What `.sha256` files beside the bundle said.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Checksum {
    /// Every checksum file found agrees with the bytes read.
    Verified {
        files: Vec<PathBuf>,
        /// `BUNDLE.sha256` as it was read and checked, when it was: what a signature must cover (read
        /// again, it could be another file).
        #[serde(skip)]
        sums: Option<Vec<u8>>,
    },
    /// No checksum file travelled with the bundle.
    Absent,
    /// A checksum file is there but cannot be read: not proof, and not absence either.
    Unreadable { file: PathBuf, reason: String },
    Mismatch {
        file: PathBuf,
        name: String,
        expected: String,
        actual: String,
    },
}

/// What the recovery data beside a damaged bundle can do for it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RecoveryCheck {
    Repairable {
        bundle: PathBuf,
        damaged_blocks: usize,
        recovery_blocks: usize,
    },
    NotEnough {
        bundle: PathBuf,
        damaged_blocks: usize,
        recovery_blocks: usize,
    },
    /// Every block matches the recovery data: the damage is not in the bundle's bytes.
    NoDamage {
        bundle: PathBuf,
    },
    Unusable {
        bundle: PathBuf,
        reason: String,
    },
}

impl std::fmt::Display for RecoveryCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecoveryCheck::Repairable {
                bundle,
                damaged_blocks,
                recovery_blocks,
            } => write!(
                f,
                "{damaged_blocks} damaged blocks; {recovery_blocks} recovery blocks available: run `ferry repair {}`",
                bundle.display()
            ),
            RecoveryCheck::NotEnough {
                damaged_blocks,
                recovery_blocks,
                ..
            } => write!(
                f,
                "{damaged_blocks} damaged blocks, only {recovery_blocks} recovery blocks available: {} more would be needed to repair it",
                damaged_blocks - recovery_blocks
            ),
            RecoveryCheck::NoDamage { .. } => write!(
                f,
                "every block matches the recovery data, so the damage is not in the bundle's bytes and repair cannot help"
            ),
            RecoveryCheck::Unusable { reason, .. } => {
                write!(f, "the recovery data cannot be used: {reason}")
            }
        }
    }
}

/// What the recovery data beside `path` (a bundle, or its first part) says about its damage; None when
/// there is none.
pub fn check_recovery(path: &Path) -> Option<RecoveryCheck> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let bundle = PathBuf::from(std::ffi::OsStr::from_bytes(
        bytes.strip_suffix(b".part-000").unwrap_or(bytes),
    ));
    if recovery::files_beside(&bundle).is_empty() {
        return None;
    }
    let unusable = |error: RecoveryError| RecoveryCheck::Unusable {
        bundle: path.to_path_buf(),
        reason: crate::causes::chain(&error),
    };
    let damage = match RecoverySet::load(&bundle).and_then(|set| set.check()) {
        Ok(damage) => damage,
        Err(error) => return Some(unusable(error)),
    };
    let (damaged_blocks, recovery_blocks) = (damage.damaged_slices(), damage.recovery_slices);
    let bundle = path.to_path_buf();
    Some(if damage.is_intact() {
        RecoveryCheck::NoDamage { bundle }
    } else if damage.is_repairable() {
        RecoveryCheck::Repairable {
            bundle,
            damaged_blocks,
            recovery_blocks,
        }
    } else {
        RecoveryCheck::NotEnough {
            bundle,
            damaged_blocks,
            recovery_blocks,
        }
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageVerdict {
    /// As the index names it (or `ferry.json`, for an image pinned by digest alone); `image #N` when
    /// nothing does.
    pub name: String,
    /// The name, when it is one.
    #[serde(skip)]
    pub reference: Option<Reference>,
    pub manifest: Option<Digest>,
    /// The config its manifest names: what a lock pins vendor images by.
    pub config: Option<Digest>,
    /// What its config says.
    #[serde(serialize_with = "as_text")]
    pub platform: Option<Platform>,
    /// ferry's index of the image's platforms, when the bundle carries several; with `--platform all`,
    /// the upstream index it came whole from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// `index` is the upstream's, not ferry's.
    #[serde(skip)]
    pub upstream_index: bool,
    pub size: u64,
    pub layers: Vec<Digest>,
    pub problems: Vec<String>,
}

/// Everything verify found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub bundle: PathBuf,
    pub bytes: u64,
    /// Of the file (the parts joined) as read.
    pub sha256: Digest,
    pub checksum: Checksum,
    /// Recovery files a checksum file lists that do not match it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub damaged_recovery_files: Vec<String>,
    /// For a damaged bundle with recovery data beside it: whether it can be repaired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryCheck>,
    pub images: Vec<ImageVerdict>,
    /// Findings that belong to no single image.
    pub problems: Vec<String>,
    /// Images the catalog lists for `--k8s` that the bundle lacks.
    pub missing: Vec<String>,
    pub blobs: usize,
    pub metadata: Option<BundleMetadata>,
    /// What a delta is a delta of, and of which bases.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaReport>,
    /// Where each blob's bytes are in the tar stream (offset, size), for delivery. A delta's bases
    /// follow its own files in `source`, so their blobs are located in that joined stream too.
    #[serde(skip)]
    pub locations: BTreeMap<Digest, (u64, u64)>,
    /// The documents as read, by name: what a loader is fed, rather than the file read again.
    #[serde(skip)]
    pub documents: BTreeMap<String, Vec<u8>>,
    #[serde(skip)]
    pub source: Source,
}

/// A bundle proven intact: the only form in which deliver takes one. Only [`Report::into_verified`]
/// makes one, from a report with no finding.
#[derive(Debug)]
pub struct Verified {
    bundle: PathBuf,
    source: Source,
    bytes: u64,
    metadata: BundleMetadata,
    platforms: Vec<Platform>,
    images: Vec<VerifiedImage>,
    locations: BTreeMap<Digest, (u64, u64)>,
    documents: BTreeMap<String, Vec<u8>>,
    delta: Option<VerifiedDelta>,
    partial: bool,
}

/// What a verified delta stands for and where its blobs are.
#[derive(Debug)]
pub struct VerifiedDelta {
    /// Its `ferry-delta.json`.
    pub record: DeltaRecord,
    /// The documents of the full bundle, in the order it has them.
    pub documents: Documents,
    /// The blobs expected from bases that were not given (push finds them in the registry instead),
    /// each with the index of its base in the record, and its size.
    pub expected: BTreeMap<Digest, (usize, u64)>,
    /// The base files read with it.
    pub files: Vec<PathBuf>,
}

impl VerifiedDelta {
    /// Whether every blob is at hand (the bases were given): then it is as good as the full bundle.
    pub fn complete(&self) -> bool {
        self.expected.is_empty()
    }
}

impl Verified {
    /// Damaged images were left out (`--intact-only`): [`Verified::images`] holds the intact ones, while
    /// the documents still name every image.
    pub fn is_partial(&self) -> bool {
        self.partial
    }

    /// The path it was verified at (the first part's, for a split bundle).
    pub fn bundle(&self) -> &Path {
        &self.bundle
    }

    pub fn source(&self) -> &Source {
        &self.source
    }

    /// Its size as read: the joined parts, compressed if it is.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn metadata(&self) -> &BundleMetadata {
        &self.metadata
    }

    /// Every platform it carries, the first being the one docker's view shows.
    pub fn platforms(&self) -> &[Platform] {
        &self.platforms
    }

    /// Each image once per platform, in the index's order.
    pub fn images(&self) -> &[VerifiedImage] {
        &self.images
    }

    /// Where a blob's bytes are in the tar stream (offset, size).
    pub fn location(&self, digest: &Digest) -> Option<(u64, u64)> {
        self.locations.get(digest).copied()
    }

    /// Every blob, with where its bytes are in the tar stream (offset, size).
    pub fn locations(&self) -> &BTreeMap<Digest, (u64, u64)> {
        &self.locations
    }

    /// A blob's size, whether it is at hand or expected from a base that was not given.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        self.location(digest).map(|(_, size)| size).or_else(|| {
            self.delta
                .as_ref()
                .and_then(|delta| delta.expected.get(digest).map(|&(_, size)| size))
        })
    }

    /// When it is a delta: what it stands for, and what it expects from bases not given.
    pub fn delta(&self) -> Option<&VerifiedDelta> {
        self.delta.as_ref()
    }

    /// The documents (`oci-layout`, `ferry.json`, `index.json`, `manifest.json`) by name, the very bytes
    /// checked: the file may have changed since.
    pub fn documents(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.documents
    }
}

/// One image of a verified bundle, on one platform.
#[derive(Debug, Clone)]
pub struct VerifiedImage {
    reference: Reference,
    manifest: Digest,
    platform: Platform,
    index: Option<Digest>,
    config: Digest,
    layers: Vec<Digest>,
}

impl VerifiedImage {
    /// The upstream name, as the index gives it (or as `ferry.json` does for an image pinned by digest).
    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn manifest(&self) -> &Digest {
        &self.manifest
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// ferry's index of the image's platforms, in a bundle of several.
    pub fn index(&self) -> Option<&Digest> {
        self.index.as_ref()
    }

    pub fn config(&self) -> &Digest {
        &self.config
    }

    pub fn layers(&self) -> &[Digest] {
        &self.layers
    }
}

impl Report {
    /// The verified bundle, if every check passed; the report itself otherwise, to show why not.
    pub fn into_verified(self) -> Result<Verified, Box<Report>> {
        if !self.intact() {
            return Err(Box::new(self));
        }
        self.proof()
    }

    /// The images of a damaged bundle that verified, as a bundle to deliver alone, and the names of
    /// the images left out: an image with a platform damaged is left out whole. The report back when
    /// the damage is not confined to images (a document, the tar past a damaged header) or no image is
    /// intact.
    pub fn into_intact_images(mut self) -> Result<(Verified, Vec<String>), Box<Report>> {
        let mut damaged: Vec<String> = Vec::new();
        for image in self.images.iter().filter(|i| !i.problems.is_empty()) {
            if !damaged.contains(&image.name) {
                damaged.push(image.name.clone());
            }
        }
        let (kept, left_out): (Vec<ImageVerdict>, Vec<ImageVerdict>) = self
            .images
            .iter()
            .cloned()
            .partition(|i| !damaged.contains(&i.name));
        // A finding that names no blob of a left-out image, or one of a kept image, is not confined.
        let blobs = |images: &[ImageVerdict]| -> Vec<String> {
            images
                .iter()
                .flat_map(|i| {
                    i.manifest
                        .iter()
                        .chain(&i.config)
                        .chain(&i.index)
                        .chain(&i.layers)
                })
                .map(Digest::to_string)
                .collect()
        };
        let (kept_blobs, left_out_blobs) = (blobs(&kept), blobs(&left_out));
        let confined = |problem: &String| {
            left_out_blobs.iter().any(|b| problem.contains(b.as_str()))
                && !kept_blobs.iter().any(|b| problem.contains(b.as_str()))
        };
        if kept.is_empty() || !self.missing.is_empty() || !self.problems.iter().all(confined) {
            return Err(Box::new(self));
        }
        self.images = kept;
        let mut intact = self.proof()?;
        intact.partial = !damaged.is_empty();
        Ok((intact, damaged))
    }

    /// The proof that deliver takes, of every image in the report.
    fn proof(self) -> Result<Verified, Box<Report>> {
        let images: Option<Vec<VerifiedImage>> = self.images.iter().map(verified_image).collect();
        let platforms: Option<Vec<Platform>> = self.metadata.as_ref().and_then(|metadata| {
            let carried = metadata.all_platforms();
            carried.iter().map(|p| p.parse().ok()).collect()
        });
        let delta = self.delta.as_ref().map(DeltaReport::verified);
        match (images, platforms, self.metadata) {
            (Some(images), Some(platforms), Some(metadata)) => Ok(Verified {
                bundle: self.bundle,
                source: self.source,
                bytes: self.bytes,
                metadata,
                platforms,
                images,
                locations: self.locations,
                delta,
                documents: self.documents,
                partial: false,
            }),
            // An intact bundle always has all; a report without them is not proof of anything.
            (images, platforms, metadata) => {
                let lacking = match (images, platforms) {
                    (None, _) => "a name, manifest, config or platform for some image".to_string(),
                    (_, None) if metadata.is_some() => {
                        format!("readable platforms in {METADATA_JSON}")
                    }
                    _ => METADATA_JSON.to_string(),
                };
                Err(Box::new(Report {
                    metadata,
                    problems: vec![format!("the bundle lacks {lacking}")],
                    ..self
                }))
            }
        }
    }

    pub fn intact(&self) -> bool {
        self.problems.is_empty()
            && self.missing.is_empty()
            && self.images.iter().all(|i| i.problems.is_empty())
            && !matches!(
                self.checksum,
                Checksum::Mismatch { .. } | Checksum::Unreadable { .. }
            )
    }
}

/// What deliver takes of an image: only what the checks proved.
fn verified_image(verdict: &ImageVerdict) -> Option<VerifiedImage> {
    Some(VerifiedImage {
        reference: verdict.reference.clone()?,
        manifest: verdict.manifest.clone()?,
        platform: verdict.platform.clone()?,
        index: verdict.index.clone(),
        config: verdict.config.clone()?,
        layers: verdict.layers.clone(),
    })
}

/// A platform as people write it: `linux/arm64`.
fn as_text<S: serde::Serializer>(
    platform: &Option<Platform>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match platform {
        Some(platform) => serializer.collect_str(platform),
        None => serializer.serialize_none(),
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
    let (mut report, mut contents) = read(path, options.deep, None)?;
    let joined = delta::join_bases(&mut report, &mut contents, &options.bases, options.deep)?;
    contents.cross_check(&mut report, options.deep);
    report.documents = std::mem::take(&mut contents.documents);
    joined.name_images(&mut report);
    if let Some(version) = options.kubernetes {
        check_completeness(&mut report, version, catalogs)?;
    }
    if !report.intact() {
        report.recovery = check_recovery(path);
    }
    Ok(report)
}

/// Reads a bundle in one pass: the report of what the pass found, and what it saw for the checks. With
/// `only`, the blobs not in it are passed over, hashed only as part of the whole file.
fn read(
    path: &Path,
    deep: bool,
    only: Option<&std::collections::BTreeSet<Digest>>,
) -> Result<(Report, Contents), VerifyError> {
    let source = Source::locate(path)?;
    let hasher = OuterHasher::start();
    let mut contents = Contents::default();
    let wanted = |name: &str| {
        let blob = name
            .strip_prefix(crate::tarball::layout::BLOBS_DIR)
            .and_then(|hex| Digest::from_hex(hex).ok());
        match (only, blob) {
            (Some(only), Some(digest)) => only.contains(&digest),
            _ => true,
        }
    };
    let bytes = read_bundle(&source, &mut &hasher, |entry| match wanted(&entry.name) {
        true => contents.take(entry, deep, &hasher),
        false => Ok(()),
    })?;
    let hashed = hasher.finish();
    contents.settle(&hashed);
    let (parts, whole) = (hashed.parts, hashed.whole);
    let (checksum, damaged_recovery_files) = check_sums(&source, &parts, &whole);
    let report = Report {
        bundle: path.to_path_buf(),
        bytes,
        sha256: whole,
        checksum,
        damaged_recovery_files,
        recovery: None,
        images: Vec::new(),
        problems: std::mem::take(&mut contents.problems),
        missing: Vec::new(),
        blobs: contents.blobs.len(),
        metadata: None,
        delta: None,
        locations: std::mem::take(&mut contents.locations),
        documents: BTreeMap::new(),
        source,
    };
    Ok((report, contents))
}

impl Report {
    /// What a delta built against this bundle needs to know of it: its identity and every blob it holds.
    pub fn describe(&self) -> BundleDescription {
        BundleDescription {
            file: file_name(&self.source.whole),
            sha256: self.sha256.clone(),
            bytes: self.bytes,
            release: self
                .metadata
                .as_ref()
                .and_then(BundleMetadata::release_spec),
            blobs: self
                .locations
                .iter()
                .map(|(digest, &(_, size))| HeldBlob {
                    digest: digest.clone(),
                    size,
                })
                .collect(),
            images: self
                .images
                .iter()
                .map(|image| DescribedImage {
                    name: image.name.clone(),
                    blobs: image.config.iter().chain(&image.layers).cloned().collect(),
                })
                .collect(),
        }
    }
}
