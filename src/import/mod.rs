//! Vendor images: the docker-save tarballs a vendor ships inside its release package (Huawei's
//! storage-backend-controller, huawei-csi, ...), or OCI archives (podman, skopeo), imported into the cache
//! as proper OCI images.
//!
//! A name must mean one image: when two archives (or two entries of one) claim it with different configs,
//! so different content, the import is refused naming both, unless exactly one of them is for the platform
//! asked for. Files that are no image archive are passed over, and named if an image is then missing.
//!
//! The config is stored byte for byte, so the image ID docker shows stays the vendor's. Each uncompressed
//! layer is gzipped into the cache (layer.rs), the layers of all requested images in parallel, one per core,
//! each distinct layer once; a new OCI manifest then names config and layers. Its bytes depend only on the
//! tarballs and [`COMPRESSION`] (with the zlib-rs version Cargo.lock pins), so importing the same package
//! twice, into any cache, gives the same manifest digest.

mod archive;
mod layer;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use self::archive::{DockerSave, Span, MAX_LAYERS};
pub use self::layer::COMPRESSION;
use crate::cache::{BlobStore, CacheError};
use crate::digest::Digest;
use crate::image::{media, Descriptor, Image, ImageConfig, ImageSource, Manifest, Platform};
use crate::layer_codec::Codec;
use crate::progress::Reporter;
use crate::reference::{Reference, ReferenceError};

/// c/image's limit for a config (internal/iolimits); dockerd has none, but no real config comes close.
const MAX_CONFIG: u64 = 4 << 20;

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
    #[error("vendor archive {archive}: the image of {entry} has {count} layers; docker loads at most {MAX_LAYERS}")]
    TooManyLayers {
        archive: PathBuf,
        entry: String,
        count: usize,
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
    #[error(
        "the vendor directory {dir} has no image {reference}; it has: {}\n{}\
         (the tarballs are in the vendor's release package, e.g. its image/ directory)",
        names(.available), passed_over_lines(.passed_over)
    )]
    Missing {
        dir: PathBuf,
        reference: Reference,
        available: Vec<Reference>,
        passed_over: Vec<PassedOver>,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
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

/// The image archives of a vendor directory, indexed by the names of the images they hold.
#[derive(Debug, Default)]
pub struct VendorDir {
    dir: PathBuf,
    /// Every image claiming each name, in path order.
    images: BTreeMap<Reference, Vec<Found>>,
    passed_over: Vec<PassedOver>,
}

/// A file that is no image archive ferry can read, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassedOver {
    pub file: PathBuf,
    pub why: String,
}

/// One image an archive holds under a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub archive: PathBuf,
    /// Its place among the archive's images.
    at: usize,
    /// The digest of its config, docker's image ID: the same ID is the same content, as the config
    /// records every layer's diff_id, which the import checks.
    pub id: Digest,
    platform: Option<Platform>,
}

impl VendorDir {
    /// Lists the images of every `.tar`, `.tar.gz` or `.tgz` under `dir`, at any depth. Tarballs that are
    /// no image archive (a Helm chart beside the images, a damaged file) are passed over.
    pub fn scan(dir: &Path) -> Result<VendorDir, VendorError> {
        let mut archives = Vec::new();
        find_archives(dir, &mut archives)?;
        archives.sort();
        let mut vendor = VendorDir {
            dir: dir.to_path_buf(),
            ..VendorDir::default()
        };
        for path in archives {
            vendor.add(&path)?;
        }
        Ok(vendor)
    }

    fn add(&mut self, path: &Path) -> Result<(), VendorError> {
        let saved = match archive::saved_images(path) {
            Err(VendorError::NotAnArchive { archive, why }) => {
                self.passed_over.push(PassedOver { file: archive, why });
                return Ok(());
            }
            saved => saved?,
        };
        for (at, (image, config)) in saved.iter().enumerate() {
            let platform = ImageConfig::parse(config)
                .ok()
                .map(|config| config.platform());
            for reference in image.references(path)? {
                self.images.entry(reference).or_default().push(Found {
                    archive: path.to_path_buf(),
                    at,
                    id: Digest::of(config),
                    platform: platform.clone(),
                });
            }
        }
        Ok(())
    }

    /// Every image the directory holds, sorted: what to tell a user who asked for another.
    pub fn available(&self) -> Vec<Reference> {
        self.images.keys().cloned().collect()
    }

    /// The image named `reference`, preferring those for `platform`: refused when two of them differ.
    pub fn choose(
        &self,
        reference: &Reference,
        platform: &Platform,
    ) -> Result<&Found, VendorError> {
        let all = self.images.get(reference).map_or(&[][..], Vec::as_slice);
        let for_platform: Vec<&Found> = all
            .iter()
            .filter(|found| found.platform.as_ref().is_some_and(|p| platform.matches(p)))
            .collect();
        let pool = if for_platform.is_empty() {
            all.iter().collect()
        } else {
            for_platform
        };
        let Some(&first) = pool.first() else {
            return Err(VendorError::Missing {
                dir: self.dir.clone(),
                reference: reference.clone(),
                available: self.available(),
                passed_over: self.passed_over.clone(),
            });
        };
        if let Some(other) = pool.iter().find(|found| found.id != first.id) {
            return Err(VendorError::Conflict {
                reference: reference.clone(),
                first: (first.archive.clone(), first.id.clone()),
                second: (other.archive.clone(), other.id.clone()),
            });
        }
        Ok(first)
    }
}

/// Collects archive files by name; symlinked directories are not followed, so a loop cannot trap the walk.
fn find_archives(dir: &Path, into: &mut Vec<PathBuf>) -> Result<(), VendorError> {
    let dir_error = |source| VendorError::Dir {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_lowercase();
        if entry.file_type().map_err(dir_error)?.is_dir() {
            find_archives(&path, into)?;
        } else if [".tar", ".tar.gz", ".tgz"]
            .iter()
            .any(|suffix| name.ends_with(suffix))
            && path.is_file()
        {
            into.push(path);
        }
    }
    Ok(())
}

/// Imports every image of `references` from the tarballs under `dir`, in the order given, each for
/// `platform` where the directory holds it for several.
pub fn import_all(
    store: &BlobStore,
    dir: &Path,
    references: &[Reference],
    platform: &Platform,
    reporter: &dyn Reporter,
) -> Result<Vec<Image>, VendorError> {
    let vendor = VendorDir::scan(dir)?;
    let requests = references
        .iter()
        .map(|r| Ok((vendor.choose(r, platform)?, r)))
        .collect::<Result<Vec<_>, VendorError>>()?;
    import_each(store, &requests, reporter)
}

/// One requested image, its config read and each layer found in its archive.
struct Prepared<'a> {
    reference: &'a Reference,
    archive: &'a DockerSave,
    config: Vec<u8>,
    platform: Platform,
    layers: Vec<SavedLayer>,
}

/// A layer as its archive holds it.
struct SavedLayer {
    entry: String,
    span: Span,
    diff_id: Digest,
    /// Compressed layers (docker save writes none, OCI archives may) are stored as they are.
    codec: Codec,
}

/// A layer to bring into the store in this run, for the image at `owner` (whose progress it shows).
struct Job<'a> {
    archive: &'a DockerSave,
    layer: &'a SavedLayer,
    owner: usize,
}

/// Where one layer's blob comes from: an earlier run, or a job of this one.
enum LayerBlob {
    Stored(Descriptor),
    Job(usize),
}

fn import_each(
    store: &BlobStore,
    requests: &[(&Found, &Reference)],
    reporter: &dyn Reporter,
) -> Result<Vec<Image>, VendorError> {
    let mut archives = BTreeMap::new();
    for &(found, _) in requests {
        let path = found.archive.as_path();
        if !archives.contains_key(path) {
            archives.insert(path, DockerSave::open(path, store)?);
        }
    }
    let images = requests
        .iter()
        .map(|&(found, reference)| prepare(&archives[found.archive.as_path()], found, reference))
        .collect::<Result<Vec<_>, _>>()?;
    let (jobs, blobs) = plan_layers(store, &images);
    let names: Vec<String> = images
        .iter()
        .map(|image| image.reference.to_string())
        .collect();
    for (at, image) in images.iter().enumerate() {
        let total: u64 = image.layers.iter().map(|l| l.span.size).sum();
        let to_store: u64 = jobs
            .iter()
            .filter(|job| job.owner == at)
            .map(|job| job.layer.span.size)
            .sum();
        reporter.image_start(&names[at], total, total - to_store);
    }
    let stored = in_parallel(&jobs, |job| {
        bring_in(store, job, &names[job.owner], reporter)
    })?;
    let mut imported = Vec::with_capacity(images.len());
    for ((image, blobs), name) in images.into_iter().zip(blobs).zip(&names) {
        let layers = blobs
            .into_iter()
            .map(|blob| match blob {
                LayerBlob::Stored(descriptor) => descriptor,
                LayerBlob::Job(at) => stored[at].clone(),
            })
            .collect();
        imported.push(finish(store, image, layers)?);
        reporter.image_done(name);
    }
    Ok(imported)
}

fn prepare<'a>(
    archive: &'a DockerSave,
    found: &Found,
    reference: &'a Reference,
) -> Result<Prepared<'a>, VendorError> {
    let changed = || VendorError::Changed {
        archive: archive.path.clone(),
    };
    let saved = archive.images().get(found.at).ok_or_else(changed)?;
    let config = archive.read_small(&saved.config, MAX_CONFIG)?;
    if Digest::of(&config) != found.id {
        return Err(changed());
    }
    let mut probe = ImageConfig::parse(&config).map_err(|source| VendorError::Json {
        archive: archive.path.clone(),
        entry: saved.config.clone(),
        source,
    })?;
    let diff_ids = std::mem::take(&mut probe.rootfs.diff_ids);
    if diff_ids.len() != saved.layers.len() {
        return Err(VendorError::LayerCount {
            archive: archive.path.clone(),
            entry: saved.config.clone(),
            layers: saved.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let layers = saved
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(entry, diff_id)| {
            let span = archive.span(entry)?;
            Ok(SavedLayer {
                entry: entry.clone(),
                span,
                diff_id,
                codec: archive.compression(entry, span)?,
            })
        })
        .collect::<Result<_, VendorError>>()?;
    Ok(Prepared {
        reference,
        archive,
        config,
        platform: probe.platform(),
        layers,
    })
}

/// What makes two layers one job: gzipping gives bytes that depend only on the content, so one job per
/// diff_id; a compressed layer is stored as the vendor compressed it, so each copy is its own job.
#[derive(PartialEq, Eq, Hash)]
enum JobKey<'a> {
    Compress(&'a Digest),
    Keep(&'a Path, &'a str),
}

/// Decides where each layer's blob comes from: an uncompressed layer gzipped by an earlier run is
/// reused; every other layer is brought in by a job of this run.
fn plan_layers<'a>(
    store: &BlobStore,
    images: &'a [Prepared<'a>],
) -> (Vec<Job<'a>>, Vec<Vec<LayerBlob>>) {
    let mut jobs = Vec::new();
    let mut job_of = HashMap::new();
    let mut blobs = Vec::new();
    for (owner, image) in images.iter().enumerate() {
        let mut image_blobs = Vec::new();
        for layer in &image.layers {
            let key = if layer.codec != Codec::Plain {
                JobKey::Keep(&image.archive.path, &layer.entry)
            } else if let Some((digest, size)) = layer::remembered(store, &layer.diff_id) {
                image_blobs.push(LayerBlob::Stored(layer_descriptor(
                    Codec::Plain,
                    digest,
                    size,
                )));
                continue;
            } else {
                JobKey::Compress(&layer.diff_id)
            };
            let at = *job_of.entry(key).or_insert_with(|| {
                jobs.push(Job {
                    archive: image.archive,
                    layer,
                    owner,
                });
                jobs.len() - 1
            });
            image_blobs.push(LayerBlob::Job(at));
        }
        blobs.push(image_blobs);
    }
    (jobs, blobs)
}

/// Stores one layer (gzipping it unless it is gzip already) into a temporary file in the cache, checks it
/// against its diff_id, then moves it into place under the digest learned while writing.
fn bring_in(
    store: &BlobStore,
    job: &Job,
    owner: &str,
    reporter: &dyn Reporter,
) -> Result<Descriptor, VendorError> {
    let (archive, layer) = (&job.archive.path, job.layer);
    let failed = |source| VendorError::Layer {
        archive: archive.clone(),
        entry: layer.entry.clone(),
        source,
    };
    let read = Progress {
        inner: crate::interrupt::Checked(job.archive.read(layer.span)),
        report: |n| reporter.bytes(owner, &layer.diff_id, n),
    };
    let input = BufReader::with_capacity(1 << 18, read);
    let temp = store.temp_file()?;
    let mut output = BufWriter::with_capacity(1 << 20, temp.as_file());
    let written = match layer.codec {
        Codec::Plain => layer::gzip(input, &mut output),
        codec => layer::keep(input, &mut output, codec, layer.span.size),
    };
    let written = written
        .and_then(|written| output.flush().map(|()| written))
        .map_err(failed)?;
    drop(output);
    if written.diff_id != layer.diff_id {
        return Err(VendorError::DiffIdMismatch {
            archive: archive.clone(),
            entry: layer.entry.clone(),
            expected: layer.diff_id.clone(),
            actual: written.diff_id,
        });
    }
    store.adopt(temp, &written.digest)?;
    if layer.codec == Codec::Plain {
        layer::remember(store, &layer.diff_id, &written)?;
    }
    Ok(layer_descriptor(layer.codec, written.digest, written.size))
}

/// Reports every chunk read.
struct Progress<R, F> {
    inner: R,
    report: F,
}

impl<R: Read, F: Fn(u64)> Read for Progress<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.report)(n as u64);
        Ok(n)
    }
}

/// Runs `work` on every item, one thread per core. After a failure no new item starts; the first failure
/// in item order is returned.
fn in_parallel<T: Sync, U: Send, E: Send>(
    items: &[T],
    work: impl Fn(&T) -> Result<U, E> + Sync,
) -> Result<Vec<U>, E> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let mut done: Vec<(usize, Result<U, E>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while !failed.load(Ordering::Relaxed) {
                        let at = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(at) else { break };
                        let result = work(item);
                        failed.fetch_or(result.is_err(), Ordering::Relaxed);
                        done.push((at, result));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(at, _)| *at);
    done.into_iter().map(|(_, result)| result).collect()
}

/// Stores the config as it is and a new OCI manifest naming it and `layers`.
fn finish(
    store: &BlobStore,
    image: Prepared,
    layers: Vec<Descriptor>,
) -> Result<Image, VendorError> {
    let config = store_document(store, media::OCI_CONFIG, &image.config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers,
    };
    // serde_json writes struct fields in declaration order, without spaces: the bytes are fixed.
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    Ok(Image {
        reference: image.reference.clone(),
        source: ImageSource::Vendor {
            file: image.archive.path.clone(),
        },
        platform: image.platform,
        index_digest: None,
        manifest: store_document(store, media::OCI_MANIFEST, &manifest_bytes)?,
        config: manifest.config,
        layers: manifest.layers,
    })
}

fn store_document(
    store: &BlobStore,
    media_type: &str,
    bytes: &[u8],
) -> Result<Descriptor, CacheError> {
    let digest = Digest::of(bytes);
    store.put(&digest, bytes)?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    })
}

/// The descriptor of a stored layer: gzip, unless it came zstd-compressed and was kept so.
fn layer_descriptor(codec: Codec, digest: Digest, size: u64) -> Descriptor {
    let media_type = match codec {
        Codec::Zstd => media::OCI_LAYER_ZSTD,
        Codec::Plain | Codec::Gzip => media::OCI_LAYER_GZIP,
    };
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        platform: None,
        annotations: None,
    }
}

#[cfg(test)]
mod tests;
