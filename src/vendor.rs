//! Vendor images: the docker-save tarballs a vendor ships inside its release package (Huawei's
//! storage-backend-controller, huawei-csi, ...), imported into the cache as proper OCI images.
//!
//! The config is kept byte for byte, so the image ID docker shows stays the vendor's. docker-save layers
//! are uncompressed; they are gzipped into the cache in one streaming pass that hashes both the
//! uncompressed bytes (checked against the config's diff_ids) and the compressed ones (the new blob's
//! digest). Which blob a layer became is remembered per compression setting, so a warm rebuild never
//! compresses again and, the setting being fixed, the same layer always gives the same bytes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use serde::Deserialize;
use serde_json::json;

use crate::cache::{BlobStore, CacheError};
use crate::digest::{Digest, Hashing};
use crate::image::{media, Descriptor, Image, ImageSource, Platform};
use crate::progress::Reporter;
use crate::reference::Reference;

/// zlib-rs at level 2: 139 MB/s for 44.6 % of the input on an 86 MB vendor layer, where level 1 keeps
/// 71 % and level 6 (the default) runs at 71 MB/s for 43 % (PERF-NOTES.md). Changing either the backend
/// or the level changes the bytes, hence this name is part of the cache key and of the bundle metadata.
pub const COMPRESSION: &str = "gzip-zlib-rs-2";
const LEVEL: u32 = 2;

/// Limits from c/image and docker, so a hostile package cannot exhaust memory.
const MAX_MANIFEST_JSON: u64 = 1 << 20;
const MAX_CONFIG: u64 = 4 << 20;
const MAX_LAYERS: usize = 125;

#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("cannot read vendor directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read vendor archive {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("vendor archive {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "the vendor directory {dir} has no image {reference}; it has: {available}\n\
         (the tarballs are in the vendor's release package, e.g. its image/ directory)"
    )]
    Missing { dir: PathBuf, reference: String, available: String },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

#[derive(Debug, Clone, Deserialize)]
struct ManifestEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// One image inside one docker-save archive.
#[derive(Debug, Clone)]
struct Found {
    archive: PathBuf,
    entry: ManifestEntry,
}

/// The docker-save archives of a vendor directory, indexed by the images they hold.
#[derive(Debug)]
pub struct VendorDir {
    dir: PathBuf,
    images: BTreeMap<Reference, Found>,
}

impl VendorDir {
    /// Reads the `manifest.json` of every `.tar`, `.tar.gz` or `.tgz` under `dir`.
    pub fn scan(dir: &Path) -> Result<VendorDir, VendorError> {
        let mut archives = Vec::new();
        collect_archives(dir, &mut archives)?;
        archives.sort();
        let mut images = BTreeMap::new();
        for archive in archives {
            for entry in read_manifest(&archive)? {
                for tag in entry.repo_tags.iter().flatten() {
                    let reference: Reference = tag.parse().map_err(|e: crate::reference::ReferenceError| VendorError::Invalid {
                        path: archive.clone(),
                        message: e.to_string(),
                    })?;
                    images.entry(reference).or_insert_with(|| Found { archive: archive.clone(), entry: entry.clone() });
                }
            }
        }
        Ok(VendorDir { dir: dir.to_path_buf(), images })
    }

    /// Imports `reference` into the cache.
    pub fn import(&self, store: &BlobStore, reference: &Reference, reporter: &dyn Reporter) -> Result<Image, VendorError> {
        let found = self.images.get(reference).ok_or_else(|| VendorError::Missing {
            dir: self.dir.clone(),
            reference: reference.to_string(),
            available: self.images.keys().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
        })?;
        import(store, &found.archive, &found.entry, reference, reporter)
    }
}

/// Imports every image of `references` from `dir`, the archives in parallel (one per core).
pub fn import_all(
    store: &BlobStore,
    dir: &Path,
    references: &[Reference],
    reporter: &dyn Reporter,
) -> Result<Vec<Image>, VendorError> {
    let vendor = VendorDir::scan(dir)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).min(references.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<(usize, Result<Image, VendorError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let at = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(reference) = references.get(at) else { break };
                        done.push((at, vendor.import(store, reference, reporter)));
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("import worker does not panic")).collect()
    });
    let mut ordered: Vec<Option<Image>> = vec![None; references.len()];
    for (at, result) in results {
        ordered[at] = Some(result?);
    }
    Ok(ordered.into_iter().map(|i| i.expect("every image imported")).collect())
}

fn collect_archives(dir: &Path, into: &mut Vec<PathBuf>) -> Result<(), VendorError> {
    let entries = std::fs::read_dir(dir).map_err(|source| VendorError::Dir { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| VendorError::Dir { path: dir.to_path_buf(), source })?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
        if path.is_dir() {
            collect_archives(&path, into)?;
        } else if name.ends_with(".tar") || name.ends_with(".tar.gz") || name.ends_with(".tgz") {
            into.push(path);
        }
    }
    Ok(())
}

/// Opens an archive, transparently gunzipping it (detected by magic bytes, not by name).
fn open_archive(path: &Path) -> Result<Box<dyn Read>, VendorError> {
    let read_error = |source| VendorError::Read { path: path.to_path_buf(), source };
    let mut file = File::open(path).map_err(read_error)?;
    let mut magic = [0u8; 2];
    let gzipped = file.read(&mut magic).map_err(read_error)? == 2 && magic == [0x1f, 0x8b];
    file.seek(SeekFrom::Start(0)).map_err(read_error)?;
    let file = io::BufReader::with_capacity(1 << 20, file);
    Ok(if gzipped { Box::new(MultiGzDecoder::new(file)) } else { Box::new(file) })
}

/// Calls `visit` for each regular entry with a safe name, refusing names that escape the archive.
fn for_each_entry(path: &Path, mut visit: impl FnMut(&str, &mut dyn Read, u64) -> Result<bool, VendorError>) -> Result<(), VendorError> {
    let read_error = |source| VendorError::Read { path: path.to_path_buf(), source };
    let mut archive = tar::Archive::new(open_archive(path)?);
    for entry in archive.entries().map_err(read_error)? {
        let mut entry = entry.map_err(read_error)?;
        let name = clean_name(path, &entry.path_bytes())?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let size = entry.size();
        if !visit(&name, &mut entry, size)? {
            break;
        }
    }
    Ok(())
}

fn clean_name(archive: &Path, raw: &[u8]) -> Result<String, VendorError> {
    let name = String::from_utf8_lossy(raw);
    let name = name.trim_start_matches("./");
    if name.starts_with('/') || name.split('/').any(|part| part == "..") {
        return Err(VendorError::Invalid { path: archive.to_path_buf(), message: format!("entry '{name}' points outside the archive") });
    }
    Ok(name.to_string())
}

fn read_limited(path: &Path, name: &str, reader: &mut dyn Read, size: u64, limit: u64) -> Result<Vec<u8>, VendorError> {
    if size > limit {
        return Err(VendorError::Invalid { path: path.to_path_buf(), message: format!("{name} is {size} bytes, more than the {limit} allowed") });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader.take(limit).read_to_end(&mut bytes).map_err(|source| VendorError::Read { path: path.to_path_buf(), source })?;
    Ok(bytes)
}

fn read_manifest(path: &Path) -> Result<Vec<ManifestEntry>, VendorError> {
    let mut manifest = None;
    for_each_entry(path, |name, reader, size| {
        if name == "manifest.json" {
            manifest = Some(read_limited(path, name, reader, size, MAX_MANIFEST_JSON)?);
            return Ok(false);
        }
        Ok(true)
    })?;
    let invalid = |message: String| VendorError::Invalid { path: path.to_path_buf(), message };
    let bytes = manifest.ok_or_else(|| invalid("no manifest.json: not a docker-save archive".into()))?;
    let entries: Vec<ManifestEntry> = serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    for entry in &entries {
        if entry.layers.len() > MAX_LAYERS {
            return Err(invalid(format!("an image has {} layers; at most {MAX_LAYERS} can be loaded", entry.layers.len())));
        }
        for name in std::iter::once(&entry.config).chain(&entry.layers) {
            clean_name(path, name.as_bytes())?;
        }
    }
    Ok(entries)
}

#[derive(Deserialize)]
struct ConfigProbe {
    os: String,
    architecture: String,
    variant: Option<String>,
    rootfs: RootFs,
}

#[derive(Deserialize)]
struct RootFs {
    diff_ids: Vec<Digest>,
}

fn import(store: &BlobStore, archive: &Path, entry: &ManifestEntry, reference: &Reference, reporter: &dyn Reporter) -> Result<Image, VendorError> {
    let invalid = |message: String| VendorError::Invalid { path: archive.to_path_buf(), message };
    // First pass: only the config, to learn the diff_ids (docker-save puts the layers before it).
    let mut config_bytes = None;
    for_each_entry(archive, |name, reader, size| {
        if name == entry.config {
            config_bytes = Some(read_limited(archive, name, reader, size, MAX_CONFIG)?);
            return Ok(false);
        }
        Ok(true)
    })?;
    let config_bytes = config_bytes.ok_or_else(|| invalid(format!("the config {} named in manifest.json is missing", entry.config)))?;
    let probe: ConfigProbe = serde_json::from_slice(&config_bytes).map_err(|e| invalid(format!("{}: {e}", entry.config)))?;
    let diff_ids = &probe.rootfs.diff_ids;
    if diff_ids.len() != entry.layers.len() {
        return Err(invalid(format!("{} layers, but the config lists {} diff_ids", entry.layers.len(), diff_ids.len())));
    }
    // Layers compressed by an earlier run with the same setting are reused as they are.
    let mut layers: Vec<Option<Descriptor>> = diff_ids.iter().map(|d| remembered(store, d)).collect();
    if layers.iter().any(Option::is_none) {
        reporter.note(&format!("compressing the layers of {reference} from {}", archive.display()));
        for_each_entry(archive, |name, reader, _| {
            if let Some(index) = entry.layers.iter().enumerate().position(|(i, l)| l == name && layers[i].is_none()) {
                let (descriptor, diff_id) = store_layer(store, archive, reader)?;
                if diff_id != diff_ids[index] {
                    return Err(invalid(format!("layer {name} hashes to {diff_id}, but the config says {}", diff_ids[index])));
                }
                remember(store, &diff_id, &descriptor).map_err(|source| VendorError::Read { path: archive.to_path_buf(), source })?;
                layers[index] = Some(descriptor);
            }
            Ok(layers.iter().any(Option::is_none))
        })?;
    }
    if let Some(missing) = layers.iter().position(Option::is_none) {
        return Err(invalid(format!("layer {} named in manifest.json is missing", entry.layers[missing])));
    }
    let layers: Vec<Descriptor> = layers.into_iter().flatten().collect();
    let config_digest = Digest::of(&config_bytes);
    store.put(&config_digest, &config_bytes)?;
    let config = Descriptor { media_type: media::OCI_CONFIG.into(), digest: config_digest, size: config_bytes.len() as u64, platform: None, annotations: None };
    let manifest_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .expect("JSON serializes");
    let manifest_digest = Digest::of(&manifest_bytes);
    store.put(&manifest_digest, &manifest_bytes)?;
    Ok(Image {
        reference: reference.clone(),
        source: ImageSource::Vendor { file: archive.to_path_buf() },
        platform: Platform { os: probe.os, architecture: probe.architecture, variant: probe.variant },
        index_digest: None,
        manifest: Descriptor { media_type: media::OCI_MANIFEST.into(), digest: manifest_digest, size: manifest_bytes.len() as u64, platform: None, annotations: None },
        config,
        layers,
    })
}

/// Stores one layer into the cache as gzip, compressing it unless it already is, in one streaming pass
/// that hashes what goes in (the diff_id) and what is stored (the blob digest). Returns both.
fn store_layer(store: &BlobStore, archive: &Path, reader: &mut dyn Read) -> Result<(Descriptor, Digest), VendorError> {
    let read_error = |source| VendorError::Read { path: archive.to_path_buf(), source };
    let mut head = [0u8; 2];
    let got = read_fully(reader, &mut head).map_err(read_error)?;
    let mut reader = head[..got].chain(reader);
    let temp = store.temp_file()?;
    let stored = Hashing::new(BufWriter::with_capacity(1 << 20, temp));
    let (stored, diff_id) = if got == 2 && head == [0x1f, 0x8b] {
        // Already gzip: kept as it is; the diff_id is that of the content inside.
        let mut tee = TeeReader { inner: &mut reader, copy: stored };
        let mut content = Hashing::new(io::sink());
        io::copy(&mut MultiGzDecoder::new(&mut tee), &mut content).map_err(read_error)?;
        io::copy(&mut tee, &mut io::sink()).map_err(read_error)?; // anything after the gzip stream
        (tee.copy, content.finish().1)
    } else {
        let mut content = Hashing::new(&mut reader);
        let mut encoder = GzEncoder::new(stored, flate2::Compression::new(LEVEL));
        io::copy(&mut content, &mut encoder).map_err(read_error)?;
        (encoder.finish().map_err(read_error)?, content.finish().1)
    };
    let (writer, digest, size) = stored.finish();
    let temp = writer.into_inner().map_err(|e| read_error(e.into_error()))?;
    store.adopt(temp, &digest)?;
    Ok((layer_descriptor(digest, size), diff_id))
}

/// Copies everything read through it into `copy`.
struct TeeReader<'a, W: Write> {
    inner: &'a mut dyn Read,
    copy: W,
}

impl<W: Write> Read for TeeReader<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

fn layer_descriptor(digest: Digest, size: u64) -> Descriptor {
    Descriptor { media_type: media::OCI_LAYER_GZIP.into(), digest, size, platform: None, annotations: None }
}

fn read_fully(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The blob a layer with this diff_id became under [`COMPRESSION`], if it is still in the cache.
fn remembered(store: &BlobStore, diff_id: &Digest) -> Option<Descriptor> {
    let text = std::fs::read_to_string(store.note_path(COMPRESSION, diff_id)).ok()?;
    let (digest, size) = text.trim().split_once(' ')?;
    let (digest, size): (Digest, u64) = (digest.parse().ok()?, size.parse().ok()?);
    store.contains(&digest, Some(size)).then(|| layer_descriptor(digest, size))
}

fn remember(store: &BlobStore, diff_id: &Digest, layer: &Descriptor) -> io::Result<()> {
    let note = store.note_path(COMPRESSION, diff_id);
    std::fs::create_dir_all(note.parent().expect("notes live in a directory"))?;
    let temp = note.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&temp, format!("{} {}\n", layer.digest, layer.size))?;
    std::fs::rename(temp, note)
}
