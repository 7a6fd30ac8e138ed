//! Reading a docker-save tarball without extracting it: where each entry's bytes lie, where its symlinks
//! point, and what its manifest.json says.
//!
//! Both layouts docker writes are read through manifest.json: the legacy one (`<id>/layer.tar`, `<id>.json`,
//! a repeated layer saved as a symlink `../<other id>/layer.tar`) and Docker 25's (`blobs/sha256/<hex>` next
//! to oci-layout and index.json). A plain tar is listed from its headers alone, seeking past the data; its
//! entries are then read in place, several at once. A gzipped tarball cannot be read in place: listing
//! streams through it, and opening it for import first gunzips it into a private file in the cache.
//!
//! The tarballs come from outside: names that could lead outside the archive are refused, as are a
//! manifest.json naming entries the tar lacks, and JSON or layer counts beyond what docker and c/image load.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Deserialize;
use tempfile::TempPath;

use super::VendorError;
use crate::cache::BlobStore;
use crate::reference::Reference;

const MANIFEST_JSON: &str = "manifest.json";
/// c/image's limit for manifest.json (internal/iolimits): larger is not a real docker save.
const MAX_MANIFEST_JSON: u64 = 1 << 20;
/// dockerd's maxLayerDepth: an image with more layers cannot be loaded.
pub(super) const MAX_LAYERS: usize = 125;
/// docker never links to a link; a few hops spare odd but honest tools, and cut loops.
const MAX_LINK_HOPS: usize = 8;

/// One image as manifest.json describes it (dockerd's `manifestItem`); the paths are checked to be
/// clean, and to name entries of the tar.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct SavedImage {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

impl SavedImage {
    /// The RepoTags, normalized as docker does (`huawei-csi:4.8.0` is `docker.io/library/huawei-csi:4.8.0`).
    pub fn references(&self, archive: &Path) -> Result<Vec<Reference>, VendorError> {
        let tags = self.repo_tags.iter().flatten();
        tags.map(|tag| {
            tag.parse().map_err(|source| VendorError::BadTag {
                archive: archive.to_path_buf(),
                tag: tag.clone(),
                source,
            })
        })
        .collect()
    }
}

/// Where a regular file's bytes lie in the uncompressed tar.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub offset: u64,
    pub size: u64,
}

/// How a byte stream is compressed, from its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn of(head: &[u8]) -> Compression {
        match head {
            [0x1f, 0x8b, ..] => Compression::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
            _ => Compression::None,
        }
    }
}

/// The images of the docker-save tarball at `path`, checked as [`DockerSave::open`] checks them.
/// [`VendorError::NotDockerSave`] when it has no manifest.json.
pub(super) fn saved_images(path: &Path) -> Result<Vec<SavedImage>, VendorError> {
    let file = File::open(path).map_err(|source| VendorError::Read {
        archive: path.to_path_buf(),
        source,
    })?;
    Ok(list(path, &file)?.images)
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
    pub fn open(path: &Path, store: &BlobStore) -> Result<DockerSave, VendorError> {
        let read_error = |source| VendorError::Read {
            archive: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        let (file, gunzipped) = match compression_at(&file, 0, u64::MAX).map_err(read_error)? {
            Compression::Gzip => {
                let (file, temp) = gunzip(path, file, store)?;
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

    /// The image tagged `reference`.
    pub fn image(&self, reference: &Reference) -> Result<&SavedImage, VendorError> {
        for image in &self.listing.images {
            if image.references(&self.path)?.contains(reference) {
                return Ok(image);
            }
        }
        Err(VendorError::NotInArchive {
            archive: self.path.clone(),
            reference: reference.clone(),
        })
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
    pub fn compression(&self, name: &str, span: Span) -> Result<Compression, VendorError> {
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

/// Regular files and symlinks by clean name, and the checked manifest.json.
#[derive(Default)]
struct Listing {
    files: HashMap<String, Span>,
    /// Symlink name → target, already resolved against the link's directory.
    links: HashMap<String, String>,
    images: Vec<SavedImage>,
}

impl Listing {
    fn span(&self, archive: &Path, name: &str) -> Result<Span, VendorError> {
        let mut current = clean_name(archive, name.as_bytes())?;
        for _ in 0..=MAX_LINK_HOPS {
            if let Some(span) = self.files.get(&current) {
                return Ok(*span);
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
                });
            }
            for name in std::iter::once(&image.config).chain(&image.layers) {
                self.span(archive, name)?;
            }
        }
        Ok(())
    }
}

/// Lists the tar in `file` (gunzipping it when its magic bytes say so); `archive` names it in errors.
fn list(archive: &Path, mut file: &File) -> Result<Listing, VendorError> {
    let read_error = |source| VendorError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    file.rewind().map_err(read_error)?; // a freshly gunzipped file was just written to its end
    if compression_at(file, 0, u64::MAX).map_err(read_error)? == Compression::Gzip {
        let mut tar =
            tar::Archive::new(MultiGzDecoder::new(BufReader::with_capacity(1 << 20, file)));
        index(archive, tar.entries().map_err(read_error)?)
    } else {
        let mut tar = tar::Archive::new(file);
        index(archive, tar.entries_with_seek().map_err(read_error)?)
    }
}

fn index<R: Read>(archive: &Path, entries: tar::Entries<'_, R>) -> Result<Listing, VendorError> {
    let read_error = |source| VendorError::Read {
        archive: archive.to_path_buf(),
        source,
    };
    let mut listing = Listing::default();
    let mut manifest = None;
    for entry in entries {
        let mut entry = entry.map_err(read_error)?;
        let name = clean_name(archive, &entry.path_bytes())?;
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let resolved = link_target(archive, &name, &target)?;
            listing.links.insert(name, resolved);
        } else if kind.is_file() {
            let span = Span {
                offset: entry.raw_file_position(),
                size: entry.size(),
            };
            if name == MANIFEST_JSON {
                manifest = Some(read_limited(
                    archive,
                    &name,
                    &mut entry,
                    span.size,
                    MAX_MANIFEST_JSON,
                )?);
            }
            listing.files.insert(name, span);
        }
    }
    let manifest = manifest.ok_or_else(|| VendorError::NotDockerSave {
        archive: archive.to_path_buf(),
    })?;
    listing.images = serde_json::from_slice(&manifest).map_err(|source| VendorError::Json {
        archive: archive.to_path_buf(),
        entry: MANIFEST_JSON.into(),
        source,
    })?;
    listing.check(archive)?;
    Ok(listing)
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
fn compression_at(file: &File, offset: u64, size: u64) -> io::Result<Compression> {
    let mut head = [0u8; 4];
    let want = head.len().min(usize::try_from(size).unwrap_or(usize::MAX));
    let mut filled = 0;
    while filled < want {
        match file.read_at(&mut head[filled..want], offset + filled as u64)? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(Compression::of(&head[..filled]))
}

/// Gunzips a compressed tarball into a private file in the cache, so that its entries can be read in
/// place like those of a plain tar.
fn gunzip(archive: &Path, file: File, store: &BlobStore) -> Result<(File, TempPath), VendorError> {
    let temp = store.temp_file()?;
    let mut output = BufWriter::with_capacity(1 << 20, temp.as_file());
    io::copy(
        &mut MultiGzDecoder::new(BufReader::with_capacity(
            1 << 20,
            crate::interrupt::Checked(file),
        )),
        &mut output,
    )
    .and_then(|_| output.flush())
    .map_err(|source| VendorError::Gunzip {
        archive: archive.to_path_buf(),
        source,
    })?;
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

    #[test]
    fn compression_is_told_by_magic_bytes() {
        assert_eq!(Compression::of(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::of(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::of(b"usr/"), Compression::None);
        assert_eq!(Compression::of(&[0x1f]), Compression::None);
    }
}
