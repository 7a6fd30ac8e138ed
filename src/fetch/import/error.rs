//! What can go wrong importing vendor images, each naming the archive and entry.

use std::io;
use std::path::PathBuf;

use crate::cache::CacheError;
use crate::causes::chain;
use crate::digest::Digest;
use crate::image::Platform;
use crate::reference::{Reference, ReferenceError};

#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("cannot read vendor directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read vendor archive {archive}")]
    Read {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot gunzip vendor archive {archive} into the cache")]
    Gunzip {
        archive: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive} is not an image archive ferry can read: {why}")]
    NotAnArchive { archive: PathBuf, why: String },
    #[error(
        "vendor archive {archive}: {entry} hashes to {actual}: the archive was altered or damaged"
    )]
    BlobMismatch {
        archive: PathBuf,
        entry: String,
        actual: Digest,
    },
    #[error(
        "two vendor images are named {reference}, with different content: {} (image {}) and {} \
         (image {}); remove the one that is not the vendor's from the vendor directory",
        .first.0.display(), .first.1, .second.0.display(), .second.1
    )]
    Conflict {
        reference: Reference,
        /// The archive and image ID (config digest) of each.
        first: (PathBuf, Digest),
        second: (PathBuf, Digest),
    },
    #[error("vendor archive {archive} changed while ferry read it")]
    Changed { archive: PathBuf },
    #[error("vendor archive {archive}: {entry} is not JSON")]
    NotJson { archive: PathBuf, entry: String },
    #[error("vendor archive {archive}: cannot read {entry}")]
    ReadEntry {
        archive: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error("vendor archive {archive}: {entry} is not what docker save writes")]
    Json {
        archive: PathBuf,
        entry: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("vendor archive {archive}: refusing '{entry}': its path leads outside the archive")]
    UnsafePath { archive: PathBuf, entry: String },
    #[error(
        "vendor archive {archive}: manifest.json names {entry}, which the archive does not hold"
    )]
    MissingEntry { archive: PathBuf, entry: String },
    #[error("vendor archive {archive}: {entry} has {size} bytes, more than the {limit} a loader accepts")]
    TooLarge {
        archive: PathBuf,
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("vendor archive {archive}: the image of {entry} has {count} layers; docker loads at most {limit}")]
    TooManyLayers {
        archive: PathBuf,
        entry: String,
        count: usize,
        limit: usize,
    },
    #[error("vendor archive {archive}: the RepoTag '{tag}' is not an image reference")]
    BadTag {
        archive: PathBuf,
        tag: String,
        #[source]
        source: ReferenceError,
    },
    #[error("vendor archive {archive}: manifest.json names {layers} layers, but {entry} has {diff_ids} diff_ids")]
    LayerCount {
        archive: PathBuf,
        entry: String,
        layers: usize,
        diff_ids: usize,
    },
    #[error("vendor archive {archive}: cannot store layer {entry} in the cache")]
    Layer {
        archive: PathBuf,
        entry: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "vendor archive {archive}: layer {entry} hashes to {actual}, but the config says {expected}: \
         the archive was altered or damaged"
    )]
    DiffIdMismatch {
        archive: PathBuf,
        entry: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{}", missing(.dirs, .references, .available, .passed_over))]
    Missing {
        dirs: Vec<PathBuf>,
        /// Every image asked for that no directory holds.
        references: Vec<Reference>,
        available: Vec<Reference>,
        passed_over: Vec<PassedOver>,
    },
    #[error(
        "the vendor's packages have no {reference} for {wanted}; they have it for: {}; add the package \
         for {wanted} with another --vendor-dir, or carry this image as it is with --allow-single-platform {reference}",
        names_of_platforms(.has)
    )]
    PlatformMissing {
        reference: Reference,
        wanted: Platform,
        /// Each platform found, with the tarball it is in.
        has: Vec<(Platform, PathBuf)>,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Every image that cannot be taken, said together so that one run shows all there is to fix.
    #[error("{} vendor images cannot be imported:\n  {}", count_images(.0), .0.iter().map(|e| chain(e).replace('\n', "\n    ")).collect::<Vec<_>>().join("\n  "))]
    Several(Vec<VendorError>),
}

impl VendorError {
    /// The images this error is about.
    fn images(&self) -> usize {
        match self {
            VendorError::Missing { references, .. } => references.len(),
            VendorError::Several(errors) => count_images(errors),
            _ => 1,
        }
    }
}

fn count_images(errors: &[VendorError]) -> usize {
    errors.iter().map(VendorError::images).sum()
}

/// `the vendor directory D has no image X; it has: …`, then the files passed over and where the
/// tarballs usually are.
fn missing(
    dirs: &[PathBuf],
    references: &[Reference],
    available: &[Reference],
    passed_over: &[PassedOver],
) -> String {
    let shown = |dirs: &[PathBuf]| {
        dirs.iter()
            .map(|dir| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (subject, they) = match dirs {
        [dir] => (
            format!("the vendor directory {} has", dir.display()),
            "it has",
        ),
        dirs => (
            format!("the vendor directories {} have", shown(dirs)),
            "they have",
        ),
    };
    let wanted = match references {
        [one] => format!("no image {one}"),
        several => format!("none of the images {}", names(several)),
    };
    format!(
        "{subject} {wanted}; {they}: {}\n{}(the tarballs are in the vendor's release package, e.g. its \
         image/ directory)",
        names(available),
        passed_over_lines(passed_over)
    )
}

fn names_of_platforms(has: &[(Platform, PathBuf)]) -> String {
    if has.is_empty() {
        return "no platform (their configs name none)".into();
    }
    has.iter()
        .map(|(platform, file)| format!("{platform} ({})", file.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn names(references: &[Reference]) -> String {
    if references.is_empty() {
        return "no image archives".into();
    }
    references
        .iter()
        .map(Reference::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn passed_over_lines(files: &[PassedOver]) -> String {
    files
        .iter()
        .map(|file| format!("passed over {}: {}\n", file.file.display(), file.why))
        .collect()
}

/// A file that is no image archive ferry can read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    pub file: PathBuf,
    pub why: String,
}
