//! Reading an image tarball without extracting it: where each entry's bytes lie, where its symlinks point,
//! and which images it holds.
//!
//! A docker-save archive is read through its manifest.json, in both layouts docker writes: the legacy one
//! (`<id>/layer.tar`, `<id>.json`, a repeated layer saved as a symlink `../<other id>/layer.tar`) and Docker
//! 25's (`blobs/sha256/<hex>` next to oci-layout and index.json). An OCI archive (skopeo `oci-archive:`,
//! `podman save --format oci-archive`) has no manifest.json: its index.json names the manifests, and each
//! image is named by its index annotation. A plain tar is listed from its headers, seeking past large
//! entries; its entries are then read in place, several at once. A gzipped tarball cannot be read in place:
//! listing streams through it, and opening it for import first gunzips it into a private file in the cache,
//! no further than the end of the tar the listing found. A gzipped tarball that expands more than
//! [`MAX_GZIP_EXPANSION`] times is no vendor's: listing stops there, and it is passed over.
//!
//! The tarballs come from outside: names that could lead outside the archive are refused, as are entries
//! the images name that the tar lacks, JSON blobs that do not hash to their names, and JSON or layer counts
//! beyond what docker and c/image load. A file that is not a tar, or is cut short, is described in words of
//! ferry's, never with the bytes a tar parser choked on.

use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tempfile::TempPath;

use super::error::VendorError;
use crate::cache::BlobStore;
use crate::digest::Digest;
use crate::image::{media, Descriptor, Index, Manifest};
use crate::interrupt::Cancel;
use crate::layer_codec::{Codec, EXPANSION_MARGIN};
use crate::reference::Reference;
use crate::tarball::layout::{
    blob_path, index_name, DockerEntry, INDEX_JSON, MANIFEST_JSON, REF_NAME_ANNOTATION,
};

/// c/image's limit for manifest.json (internal/iolimits): larger is not a real docker save.
const MAX_MANIFEST_JSON: u64 = 1 << 20;
/// The JSON entries (configs, manifests, indexes) kept while listing, all together: thousands of images'.
const MAX_JSON_TOTAL: u64 = 64 << 20;
/// dockerd's maxLayerDepth: an image with more layers cannot be loaded.
pub(super) const MAX_LAYERS: usize = 125;
/// c/image's limit for a config (internal/iolimits); dockerd has none, but no real config comes close.
pub(super) const MAX_CONFIG: u64 = 4 << 20;
/// docker never links to a link; a few hops spare odd but honest tools, and cut loops.
const MAX_LINK_HOPS: usize = 8;
/// How many times its size a gzipped tarball may expand (beyond [`EXPANSION_MARGIN`]): docker-save
/// tarballs hold uncompressed layers, which gzip 2 to 10 times smaller; a run of zeros expands a
/// thousandfold, so a small file cannot fill the cache or keep the scan busy.
const MAX_GZIP_EXPANSION: u64 = 100;

/// The image an OCI archive's manifest describes, as docker's `manifest.json` would list it.
fn saved_from_oci(manifest: &Manifest, name: Option<String>) -> DockerEntry {
    DockerEntry {
        config: blob_path(&manifest.config.digest),
        repo_tags: name.into_iter().collect(),
        layers: manifest
            .layers
            .iter()
            .map(|l| blob_path(&l.digest))
            .collect(),
    }
}

/// The RepoTags of an archived image, normalized as docker does (`huawei-csi:4.8.0` is
/// `docker.io/library/huawei-csi:4.8.0`).
pub(super) fn references(
    image: &DockerEntry,
    archive: &Path,
) -> Result<Vec<Reference>, VendorError> {
    image
        .repo_tags
        .iter()
        .map(|tag| {
            tag.parse().map_err(|source| VendorError::BadTag {
                archive: archive.to_path_buf(),
                tag: tag.clone(),
                source,
            })
        })
        .collect()
}

/// Where a regular file's bytes lie in the uncompressed tar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub offset: u64,
    pub size: u64,
}

/// What a scan learns of one tarball.
pub(super) struct Scanned {
    /// The images, each with its config's bytes.
    pub images: Vec<(DockerEntry, Vec<u8>)>,
    /// The bytes of its tar (uncompressed) up to its last entry: all that import needs of it.
    pub tar_bytes: u64,
}

/// The images of the tarball at `path`, checked as [`DockerSave::open`] checks them.
/// [`VendorError::NotAnArchive`] when it is no image archive.
pub(super) fn scan_archive(path: &Path) -> Result<Scanned, VendorError> {
    let file = File::open(path).map_err(|source| VendorError::Read {
        archive: path.to_path_buf(),
        source,
    })?;
    let mut listing = list(path, &file)?;
    let images = std::mem::take(&mut listing.images);
    let images = images
        .into_iter()
        .map(|image| {
            let config = listing.json(path, &image.config)?.to_vec();
            Ok((image, config))
        })
        .collect::<Result<_, VendorError>>()?;
    Ok(Scanned {
        images,
        tar_bytes: listing.end,
    })
}

/// A docker-save tarball opened for import: a plain tar whose entries are read in place, by several
/// threads at once.
pub(super) struct DockerSave {
    /// The vendor's file, as errors and [`crate::image::ImageSource::Vendor`] name it.
    pub path: PathBuf,
    file: File,
    listing: Listing,
    /// The gunzipped copy of a compressed tarball; deleted on drop.
    _gunzipped: Option<TempPath>,
}

impl DockerSave {
    /// Opens the tarball at `path`, of which import needs the first `tar_bytes` bytes of tar (what its
    /// scan listed).
    pub fn open(
        path: &Path,
        tar_bytes: u64,
        store: &BlobStore,
        cancel: &Cancel,
    ) -> Result<DockerSave, VendorError> {
        let read_error = |source| VendorError::Read {
            archive: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let (file, gunzipped) = match compression_at(&file, 0, u64::MAX).map_err(read_error)? {
            Codec::Gzip => {
                let (file, temp) = gunzip(path, file, tar_bytes, store, cancel)?;
                (file, Some(temp))
            }
            _ => (file, None),
        };
        let listing = list(path, &file)?;
        Ok(DockerSave {
            path: path.to_path_buf(),
            file,
            listing,
            _gunzipped: gunzipped,
        })
    }

    /// The images, in the order the archive lists them.
    pub fn images(&self) -> &[DockerEntry] {
        &self.listing.images
    }

    /// Where the entry `name` (following symlinks) lies.
    pub fn span(&self, name: &str) -> Result<Span, VendorError> {
        self.listing.span(&self.path, name)
    }

    /// The bytes of one entry; several may be read at the same time.
    pub fn read(&self, span: Span) -> Section<'_> {
        Section {
            file: &self.file,
            offset: span.offset,
            remaining: span.size,
        }
    }

    /// A small entry (a config) whole, refused when larger than `limit`.
    pub fn read_small(&self, name: &str, limit: u64) -> Result<Vec<u8>, VendorError> {
        let span = self.span(name)?;
        read_limited(&self.path, name, self.read(span), span.size, limit)
    }

    /// How the entry at `span` is compressed.
    pub fn compression(&self, name: &str, span: Span) -> Result<Codec, VendorError> {
        compression_at(&self.file, span.offset, span.size).map_err(|source| {
            VendorError::ReadEntry {
                archive: self.path.clone(),
                entry: name.to_string(),
                source,
            }
        })
    }
}

/// The bytes of one entry, read with positioned reads so that threads can share the file.
pub(super) struct Section<'a> {
    file: &'a File,
    offset: u64,
    remaining: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the tar file ends inside this entry",
            ));
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// Regular files and symlinks by clean name, the small JSON entries, and the checked images.
#[derive(Default)]
struct Listing {
    files: HashMap<String, Span>,
    /// Symlink name → target, already resolved against the link's directory.
    links: HashMap<String, String>,
    /// Entries of at most [`MAX_CONFIG`] bytes that start like JSON: configs, manifests, indexes,
    /// manifest.json.
    json: HashMap<String, Vec<u8>>,
    images: Vec<DockerEntry>,
    /// Where the last entry (its data padded to a block) ends in the uncompressed tar.
    end: u64,
}

impl Listing {
    /// A JSON entry the images name (following symlinks).
    fn json(&self, archive: &Path, name: &str) -> Result<&[u8], VendorError> {
        let (file, span) = self.file(archive, name)?;
        if let Some(bytes) = self.json.get(file) {
            return Ok(bytes);
        }
        Err(if span.size > MAX_CONFIG {
            VendorError::TooLarge {
                archive: archive.to_path_buf(),
                entry: name.to_string(),
                size: span.size,
                limit: MAX_CONFIG,
            }
        } else {
            VendorError::NotJson {
                archive: archive.to_path_buf(),
                entry: name.to_string(),
            }
        })
    }

    fn span(&self, archive: &Path, name: &str) -> Result<Span, VendorError> {
        Ok(self.file(archive, name)?.1)
    }

    /// The regular file `name` leads to (following symlinks): its name and where it lies.
    fn file(&self, archive: &Path, name: &str) -> Result<(&str, Span), VendorError> {
        let mut current = clean_name(archive, name.as_bytes())?;
        for _ in 0..=MAX_LINK_HOPS {
            if let Some((file, span)) = self.files.get_key_value(&current) {
                return Ok((file, *span));
            }
            match self.links.get(&current) {
                Some(target) => current = target.clone(),
                None => break,
            }
        }
        Err(VendorError::MissingEntry {
            archive: archive.to_path_buf(),
            entry: name.to_string(),
        })
    }

    /// Refuses what docker would not load, and names manifest.json gives that the tar lacks.
    fn check(&self, archive: &Path) -> Result<(), VendorError> {
        for image in &self.images {
            if image.layers.len() > MAX_LAYERS {
                let (entry, count) = (image.config.clone(), image.layers.len());
                return Err(VendorError::TooManyLayers {
                    archive: archive.to_path_buf(),
                    entry,
                    count,
                    limit: MAX_LAYERS,
                });
            }
            for name in std::iter::once(&image.config).chain(&image.layers) {
                self.span(archive, name)?;
            }
        }
        Ok(())
    }
}

/// Lists the tar in `file` (gunzipping it when its magic bytes say so, at most [`MAX_GZIP_EXPANSION`]
/// times its size); `archive` names it in errors.
fn list(archive: &Path, mut file: &File) -> Result<Listing, VendorError> {
    let read_error = |source| VendorError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    file.rewind().map_err(read_error)?; // a freshly gunzipped file was just written to its end
    let length = file.metadata().map_err(read_error)?.len();
    if compression_at(file, 0, u64::MAX).map_err(read_error)? == Codec::Gzip {
        let limit = length
            .saturating_mul(MAX_GZIP_EXPANSION)
            .saturating_add(EXPANSION_MARGIN);
        let exceeded = Cell::new(false);
        let gunzipped = MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file));
        let mut tar = tar::Archive::new(Bounded {
            inner: gunzipped,
            left: limit,
            exceeded: &exceeded,
        });
        let listed = index(archive, tar.entries().map_err(read_error)?, None);
        if exceeded.get() {
            return Err(VendorError::NotAnArchive {
                archive: archive.to_path_buf(),
                why: format!(
                    "gunzipped, it expands beyond {limit} bytes from its {length}, more than \
                     {MAX_GZIP_EXPANSION} times, as no image tarball does (a gzip bomb?); if it is the \
                     vendor's, gunzip it and ferry reads the .tar"
                ),
            });
        }
        listed
    } else {
        let mut tar = tar::Archive::new(file);
        index(
            archive,
            tar.entries_with_seek().map_err(read_error)?,
            Some(length),
        )
    }
}

/// A reader that fails, and says so in `exceeded`, once more than `left` bytes would pass.
struct Bounded<'a, R> {
    inner: R,
    left: u64,
    exceeded: &'a Cell<bool>,
}

impl<R: Read> Read for Bounded<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => {
                self.exceeded.set(true);
                Err(io::Error::other(
                    "the bound on decompressed bytes was reached",
                ))
            }
        }
    }
}

/// Lists the entries; `length` is the file's, when the tar is read in place (entries must lie inside it).
fn index<R: Read>(
    archive: &Path,
    entries: tar::Entries<'_, R>,
    length: Option<u64>,
) -> Result<Listing, VendorError> {
    let mut listing = Listing::default();
    let mut json_total = 0u64;
    // The first JSON entry beyond MAX_JSON_TOTAL: refused only if the tar turns out to be an image
    // archive, since a tarball of data is no image archive and is passed over.
    let mut json_overflow: Option<String> = None;
    // The last entry read whole, to say where a damaged tar goes wrong.
    let mut last: Option<String> = None;
    for entry in entries {
        let unreadable = |last: &Option<String>| VendorError::NotAnArchive {
            archive: archive.to_path_buf(),
            why: match last {
                None => "it is not a tar file (nor a gzipped one)".into(),
                Some(name) => format!("the tar is damaged or cut short after its entry '{name}'"),
            },
        };
        let mut entry = entry.map_err(|_| unreadable(&last))?;
        let name = clean_name(archive, &entry.path_bytes())?;
        let kind = entry.header().entry_type();
        let data_end = entry
            .raw_file_position()
            .checked_add(entry.size().div_ceil(512).saturating_mul(512));
        listing.end = listing.end.max(data_end.unwrap_or(u64::MAX));
        if kind.is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let resolved = link_target(archive, &name, &target)?;
            listing.links.insert(name.clone(), resolved);
        } else if kind.is_file() {
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            let end = span.offset.checked_add(span.size);
            if let (Some(length), Some(end)) = (length, end) {
                if end > length {
                    return Err(VendorError::NotAnArchive {
                        archive: archive.to_path_buf(),
                        why: format!(
                            "it is cut short: its entry '{name}' needs {end} bytes, the file has {length}"
                        ),
                    });
                }
            }
            if span.size <= MAX_CONFIG {
                let mut bytes = Vec::with_capacity(span.size as usize);
                let read = (&mut entry).take(span.size).read_to_end(&mut bytes);
                if read.is_err() || bytes.len() as u64 != span.size {
                    return Err(VendorError::NotAnArchive {
                        archive: archive.to_path_buf(),
                        why: format!("the tar is damaged or cut short inside its entry '{name}'"),
                    });
                }
                let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
                if matches!(first, Some(b'{' | b'[')) {
                    json_total += span.size;
                    if json_total <= MAX_JSON_TOTAL {
                        listing.json.insert(name.clone(), bytes);
                    } else if json_overflow.is_none() {
                        json_overflow = Some(name.clone());
                    }
                }
            }
            listing.files.insert(name.clone(), span);
        }
        last = Some(name);
    }
    let is_image_archive =
        listing.files.contains_key(MANIFEST_JSON) || listing.files.contains_key(INDEX_JSON);
    if let (true, Some(name)) = (is_image_archive, json_overflow) {
        return Err(VendorError::TooLarge {
            archive: archive.to_path_buf(),
            entry: format!("the JSON entries up to {name}"),
            size: json_total,
            limit: MAX_JSON_TOTAL,
        });
    }
    listing.images = if let Some(span) = listing.files.get(MANIFEST_JSON) {
        if span.size > MAX_MANIFEST_JSON {
            return Err(VendorError::TooLarge {
                archive: archive.to_path_buf(),
                entry: MANIFEST_JSON.into(),
                size: span.size,
                limit: MAX_MANIFEST_JSON,
            });
        }
        let manifest = listing.json(archive, MANIFEST_JSON)?;
        serde_json::from_slice(manifest).map_err(|source| VendorError::Json {
            archive: archive.to_path_buf(),
            entry: MANIFEST_JSON.into(),
            source,
        })?
    } else if listing.files.contains_key(INDEX_JSON) {
        oci_images(archive, &listing)?
    } else {
        return Err(VendorError::NotAnArchive {
            archive: archive.to_path_buf(),
            why: format!(
                "it is a tar without {MANIFEST_JSON} (docker save) or {INDEX_JSON} (OCI archive)"
            ),
        });
    };
    listing.check(archive)?;
    Ok(listing)
}

/// The images an OCI archive's index.json names, one per single-platform manifest (an index inside is
/// followed one level, as skopeo `--all` writes it; the platforms an exporter left out are passed over).
/// Each manifest and index must hash to its name.
fn oci_images(archive: &Path, listing: &Listing) -> Result<Vec<DockerEntry>, VendorError> {
    let index: Index = parse(archive, INDEX_JSON, listing.json(archive, INDEX_JSON)?)?;
    let mut images = Vec::new();
    for descriptor in &index.manifests {
        let name = image_name(descriptor);
        if media::is_index(&descriptor.media_type) {
            let nested: Index = parse_blob(archive, listing, &descriptor.digest)?;
            let present = |d: &&Descriptor| listing.files.contains_key(&blob_path(&d.digest));
            for inner in nested
                .manifests
                .iter()
                .filter(|d| !media::is_index(&d.media_type))
                .filter(present)
            {
                let manifest: Manifest = parse_blob(archive, listing, &inner.digest)?;
                images.push(saved_from_oci(&manifest, name.clone()));
            }
        } else {
            let manifest: Manifest = parse_blob(archive, listing, &descriptor.digest)?;
            images.push(saved_from_oci(&manifest, name));
        }
    }
    if images.iter().all(|image| image.repo_tags.is_empty()) {
        return Err(VendorError::NotAnArchive {
            archive: archive.to_path_buf(),
            why: format!(
                "it is an OCI archive whose images carry no name ({REF_NAME_ANNOTATION} in {INDEX_JSON} \
                 is absent or only a tag); write it with one, e.g. skopeo copy SOURCE \
                 oci-archive:FILE:registry.example/repository:tag"
            ),
        });
    }
    Ok(images)
}

/// The full name an index entry gives its image: containerd's annotation, else the ref name when it is
/// a full name (`registry/repository:tag`) and not just a tag.
fn image_name(descriptor: &Descriptor) -> Option<String> {
    let ref_name = || {
        let name = descriptor.annotations.as_ref()?.get(REF_NAME_ANNOTATION)?;
        (name.contains(':') || name.contains('/')).then(|| name.clone())
    };
    index_name(descriptor).map(str::to_string).or_else(ref_name)
}

/// A JSON blob of the archive, checked against its digest.
fn parse_blob<T: serde::de::DeserializeOwned>(
    archive: &Path,
    listing: &Listing,
    digest: &Digest,
) -> Result<T, VendorError> {
    let entry = blob_path(digest);
    let bytes = listing.json(archive, &entry)?;
    let actual = Digest::of(bytes);
    if &actual != digest {
        return Err(VendorError::BlobMismatch {
            archive: archive.to_path_buf(),
            entry,
            actual,
        });
    }
    parse(archive, &entry, bytes)
}

fn parse<T: serde::de::DeserializeOwned>(
    archive: &Path,
    entry: &str,
    bytes: &[u8],
) -> Result<T, VendorError> {
    serde_json::from_slice(bytes).map_err(|source| VendorError::Json {
        archive: archive.to_path_buf(),
        entry: entry.to_string(),
        source,
    })
}

/// A name from a tar header or manifest.json as a clean relative path (`./a//b` is `a/b`). Absolute
/// names, names with `..` and names that are not UTF-8 are refused.
fn clean_name(archive: &Path, raw: &[u8]) -> Result<String, VendorError> {
    std::str::from_utf8(raw)
        .ok()
        .and_then(|name| join_inside(Vec::new(), name, false))
        .ok_or_else(|| VendorError::UnsafePath {
            archive: archive.to_path_buf(),
            entry: String::from_utf8_lossy(raw).into(),
        })
}

/// A symlink's target as an archive name: relative to the link's directory, where docker's
/// `../<id>/layer.tar` is fine as long as it stays inside the archive.
fn link_target(archive: &Path, link: &str, raw: &[u8]) -> Result<String, VendorError> {
    let mut directory: Vec<&str> = link.split('/').collect();
    directory.pop();
    std::str::from_utf8(raw)
        .ok()
        .and_then(|target| join_inside(directory, target, true))
        .ok_or_else(|| VendorError::UnsafePath {
            archive: archive.to_path_buf(),
            entry: format!("{link} -> {}", String::from_utf8_lossy(raw)),
        })
}

/// `path` appended to `base` component by component; `None` when it is absolute, or has `..` where
/// `parent` is false, or climbs above the archive's root.
fn join_inside<'a>(mut base: Vec<&'a str>, path: &'a str, parent: bool) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parent => {
                base.pop()?;
            }
            ".." => return None,
            _ => base.push(part),
        }
    }
    Some(base.join("/"))
}

/// Reads an entry whole after checking its size against `limit`.
fn read_limited(
    archive: &Path,
    entry: &str,
    reader: impl Read,
    size: u64,
    limit: u64,
) -> Result<Vec<u8>, VendorError> {
    if size > limit {
        return Err(VendorError::TooLarge {
            archive: archive.to_path_buf(),
            entry: entry.to_string(),
            size,
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    reader
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|source| VendorError::ReadEntry {
            archive: archive.to_path_buf(),
            entry: entry.to_string(),
            source,
        })?;
    Ok(bytes)
}

/// How the `size` bytes at `offset` of `file` are compressed, from their first bytes.
fn compression_at(file: &File, offset: u64, size: u64) -> io::Result<Codec> {
    let mut head = [0u8; 4];
    let want = head.len().min(usize::try_from(size).unwrap_or(usize::MAX));
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut head[filled..want], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(Codec::sniff(&head[..filled]))
}

/// Gunzips the first `tar_bytes` bytes of a compressed tarball (all its listing found) into a private
/// file in the cache, so that its entries can be read in place like those of a plain tar.
fn gunzip(
    archive: &Path,
    file: File,
    tar_bytes: u64,
    store: &BlobStore,
    cancel: &Cancel,
) -> Result<(File, TempPath), VendorError> {
    let temp = store.temp_file()?;
    let mut output = BufWriter::with_capacity(1 << 20, temp.as_file());
    let gunzipped = MultiGzDecoder::new(BufReader::with_capacity(1 << 20, cancel.reader(file)));
    let copied = io::copy(&mut gunzipped.take(tar_bytes), &mut output)
        .and_then(|copied| output.flush().map(|()| copied))
        .map_err(|source| VendorError::Gunzip {
            archive: archive.to_path_buf(),
            source,
        })?;
    if copied != tar_bytes {
        return Err(VendorError::Changed {
            archive: archive.to_path_buf(),
        });
    }
    drop(output);
    Ok(temp.into_parts())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_kept_inside_the_archive() {
        let archive = Path::new("x.tar");
        assert_eq!(
            clean_name(archive, b"./blobs//sha256/ab").unwrap(),
            "blobs/sha256/ab"
        );
        for bad in [
            &b"../etc/passwd"[..],
            b"/etc/passwd",
            b"a/../../b",
            b"a/../b",
            b"\xff",
        ] {
            assert!(
                matches!(
                    clean_name(archive, bad),
                    Err(VendorError::UnsafePath { .. })
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            link_target(archive, "def/layer.tar", b"../abc/layer.tar").unwrap(),
            "abc/layer.tar"
        );
        assert!(link_target(archive, "def/layer.tar", b"../../etc/passwd").is_err());
        assert!(link_target(archive, "def/layer.tar", b"/etc/passwd").is_err());
    }
}
