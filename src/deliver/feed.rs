//! The tar a loader is fed, made by ferry from what verify proved rather than copied from the file as it
//! is now: the file may have changed since verify read it (a shared folder, a device that answers a second
//! read differently). Each blob is read again and hashed on its way, and the read that would end it fails
//! unless it still hashes to its digest, so the loader never holds the whole of a changed blob. The
//! documents come last, from verify's own copy. A feed cut short therefore ends inside an entry and holds
//! no index and no `manifest.json`: `ctr images import` and `docker load` refuse a tar that ends inside an
//! entry, and `podman load`, which copies its input to a file before it reads it, finds no image in one.
//! Memory stays flat: blobs stream through; the documents are what verify already held.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::PathBuf;

use flate2::read::MultiGzDecoder;
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::tarball::layout::{
    blob_path, pretty, BundleIndex, DockerEntry, INDEX_JSON, LAYOUT_JSON, MANIFEST_JSON,
};
use crate::tarball::read::{Joined, Source};
use crate::tarball::{append, tar_size};
use crate::verify::Verified;

/// What one feed holds: blobs of the bundle (by where they are in it), then documents.
pub struct Archive<'a> {
    blobs: Vec<(&'a Digest, u64, u64)>,
    documents: Vec<(&'a str, Cow<'a, [u8]>)>,
}

/// Why a blob could not be fed as verify saw it.
#[derive(Debug)]
pub enum Reread {
    /// It hashes to something else now.
    Changed(Digest),
    /// The bundle ends before it does.
    Shorter,
    Io(io::Error),
}

/// A blob that no longer reads as verify read it: which entry, where, and why.
#[derive(Debug)]
pub struct NotAsVerified {
    pub entry: String,
    /// Where the entry's data starts: a part and the offset in it, or the bundle and the offset in its
    /// decompressed tar.
    pub file: PathBuf,
    pub offset: u64,
    pub decompressed: bool,
    pub why: Reread,
}

impl fmt::Display for NotAsVerified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let place = format!(
            "{} (at byte {} of {}{})",
            self.entry,
            self.offset,
            self.file.display(),
            if self.decompressed {
                "'s gunzipped tar"
            } else {
                ""
            }
        );
        match &self.why {
            Reread::Changed(actual) => write!(f, "{place} now hashes to {actual}"),
            Reread::Shorter => write!(f, "the bundle now ends inside {place}"),
            Reread::Io(error) => write!(f, "{place} cannot be read again: {error}"),
        }
    }
}

impl std::error::Error for NotAsVerified {}

impl NotAsVerified {
    /// The one a [`Checked`] read failed with, if it was that.
    pub fn within(error: io::Error) -> Result<NotAsVerified, io::Error> {
        if !error.get_ref().is_some_and(|e| e.is::<NotAsVerified>()) {
            return Err(error);
        }
        let inner = error.into_inner().expect("checked above");
        Ok(*inner.downcast::<NotAsVerified>().expect("checked above"))
    }
}

/// How a feed ended badly: the bundle read differently, or the loader stopped reading.
#[derive(Debug)]
pub enum Stopped {
    Bundle(NotAsVerified),
    Loader(io::Error),
}

impl<'a> Archive<'a> {
    /// Every entry verify read; of a bundle whose damaged images were left out, what [`Archive::intact`]
    /// holds; of a delta verified with its bases, every entry of the full bundle it stands for (its
    /// documents, not the delta's own record).
    pub fn whole(bundle: &'a Verified) -> Archive<'a> {
        if bundle.is_partial() {
            return Archive::intact(bundle);
        }
        let documents = match bundle.delta() {
            Some(delta) => delta
                .documents
                .iter()
                .map(|(name, bytes)| (*name, Cow::Borrowed(bytes.as_slice())))
                .collect(),
            None => bundle
                .documents()
                .iter()
                .map(|(name, bytes)| (name.as_str(), Cow::Borrowed(bytes.as_slice())))
                .collect(),
        };
        Archive::of(bundle, bundle.locations().keys(), documents)
    }

    /// The intact images' blobs alone, under an `index.json` and a `manifest.json` that name only them, so
    /// that no loader asks for a damaged blob; `ferry.json`, which describes the whole bundle, stays out.
    fn intact(bundle: &'a Verified) -> Archive<'a> {
        let images = bundle.images();
        let blobs: BTreeSet<&Digest> = images
            .iter()
            .flat_map(|image| {
                let documents = image.index().into_iter().chain([image.manifest()]);
                documents.chain([image.config()]).chain(image.layers())
            })
            .collect();
        let configs: BTreeSet<String> = images.iter().map(|i| blob_path(i.config())).collect();
        let documents = bundle
            .documents()
            .iter()
            .filter_map(|(name, bytes)| {
                let kept = match name.as_str() {
                    LAYOUT_JSON => Cow::Borrowed(bytes.as_slice()),
                    INDEX_JSON => {
                        let mut index: BundleIndex = serde_json::from_slice(bytes).ok()?;
                        index
                            .manifests
                            .retain(|entry| blobs.contains(&entry.digest));
                        // The pins name ferry.json and the full manifest.json, neither of which is fed.
                        index.annotations = None;
                        Cow::Owned(pretty(&index))
                    }
                    MANIFEST_JSON => {
                        let mut entries: Vec<DockerEntry> = serde_json::from_slice(bytes).ok()?;
                        entries.retain(|entry| configs.contains(&entry.config));
                        Cow::Owned(pretty(&entries))
                    }
                    _ => return None,
                };
                Some((name.as_str(), kept))
            })
            .collect();
        Archive::of(bundle, blobs, documents)
    }

    /// The blobs `digests` of `bundle` (each once), then `documents`.
    pub fn of(
        bundle: &'a Verified,
        digests: impl IntoIterator<Item = &'a Digest>,
        documents: Vec<(&'a str, Cow<'a, [u8]>)>,
    ) -> Archive<'a> {
        let mut blobs: Vec<(&Digest, u64, u64)> = digests
            .into_iter()
            .map(|digest| {
                let (offset, size) = bundle
                    .location(digest)
                    .expect("a verified bundle holds every blob its images name");
                (digest, offset, size)
            })
            .collect();
        // In the bundle's order: a gzipped bundle is read once, front to back.
        blobs.sort_by_key(|&(_, offset, _)| offset);
        blobs.dedup_by_key(|&mut (digest, _, _)| digest);
        Archive { blobs, documents }
    }

    /// The bytes [`Archive::write`] writes.
    pub fn size(&self) -> u64 {
        let blobs = self.blobs.iter().map(|&(_, _, size)| size);
        let documents = self.documents.iter().map(|(_, bytes)| bytes.len() as u64);
        tar_size(blobs.chain(documents))
    }

    /// Writes the archive to `out` and hands `out` back; on a failure the stream is left cut inside an
    /// entry (the end-of-archive blocks are never written).
    pub fn write<W: Write>(&self, source: &Source, out: W) -> Result<W, Stopped> {
        let mut tar = tar::Builder::new(Gate {
            inner: io::BufWriter::with_capacity(1 << 20, out),
            open: true,
        });
        if let Err(stopped) = self.write_entries(source, &mut tar) {
            // Dropping the builder would write the end-of-archive blocks after the cut.
            tar.get_mut().open = false;
            return Err(stopped);
        }
        let gate = tar.into_inner().map_err(Stopped::Loader)?;
        gate.inner
            .into_inner()
            .map_err(|e| Stopped::Loader(e.into_error()))
    }

    fn write_entries<W: Write>(
        &self,
        source: &Source,
        tar: &mut tar::Builder<W>,
    ) -> Result<(), Stopped> {
        let mut reading = Reading::of(source).map_err(|error| {
            Stopped::Bundle(NotAsVerified {
                entry: "the bundle".into(),
                file: source.files[0].clone(),
                offset: 0,
                decompressed: false,
                why: Reread::Io(error),
            })
        })?;
        let decompressed = matches!(reading, Reading::Inflating { .. });
        for &(digest, offset, size) in &self.blobs {
            let name = blob_path(digest);
            let at = (offset, size, decompressed);
            let blob = reading.blob(offset, size).map_err(|error| {
                let checked = Checked::new(io::empty(), source, digest, at);
                Stopped::Bundle(checked.failure(Reread::Io(error)))
            })?;
            let mut checked = Checked::new(blob, source, digest, at);
            append(tar, &name, size, &mut checked, 0).map_err(|error| {
                NotAsVerified::within(error).map_or_else(Stopped::Loader, Stopped::Bundle)
            })?;
        }
        for (name, bytes) in &self.documents {
            append(tar, name, bytes.len() as u64, &mut bytes.as_ref(), 0)
                .map_err(Stopped::Loader)?;
        }
        Ok(())
    }
}

/// A writer that can be shut, after which every write fails.
struct Gate<W> {
    inner: W,
    open: bool,
}

impl<W: Write> Write for Gate<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.open {
            return Err(io::Error::other("the feed was cut"));
        }
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Where blobs are read again: in place in an uncompressed bundle, or in one pass through a gzipped one.
enum Reading<'s> {
    InPlace(&'s Source),
    Inflating {
        stream: Box<MultiGzDecoder<Joined<'static>>>,
        at: u64,
    },
}

impl<'s> Reading<'s> {
    fn of(source: &'s Source) -> io::Result<Reading<'s>> {
        Ok(if source.is_gzipped()? {
            Reading::Inflating {
                stream: Box::new(MultiGzDecoder::new(source.joined(0))),
                at: 0,
            }
        } else {
            Reading::InPlace(source)
        })
    }

    /// The `size` bytes at `offset` of the tar stream; offsets must come in order when inflating.
    fn blob(&mut self, offset: u64, size: u64) -> io::Result<Box<dyn Read + '_>> {
        match self {
            Reading::InPlace(source) => Ok(Box::new(source.open_range(offset, size)?)),
            Reading::Inflating { stream, at } => {
                let gap = offset.checked_sub(*at).ok_or_else(|| {
                    io::Error::other("blobs of a gzipped bundle are read in order")
                })?;
                let skipped = io::copy(&mut (&mut *stream).take(gap), &mut io::sink())?;
                if skipped < gap {
                    return Ok(Box::new(io::empty()));
                }
                *at = offset + size;
                Ok(Box::new((&mut **stream).take(size)))
            }
        }
    }
}

/// A blob's bytes hashed as they pass; the read that would end the blob fails instead, with a
/// [`NotAsVerified`], unless it still hashes to its digest, so whoever reads it never holds the whole of a
/// changed blob.
pub struct Checked<R> {
    inner: R,
    digest: Digest,
    /// Where the blob starts in the tar stream, and the bundle, to say where it failed.
    offset: u64,
    source: Source,
    decompressed: bool,
    left: u64,
    hasher: Sha256,
}

impl<R: Read> Checked<R> {
    /// The blob `digest` of `size` bytes at `offset` of `source`'s tar stream (`decompressed`: that of
    /// a gzipped bundle), read from `inner`.
    pub fn new(
        inner: R,
        source: &Source,
        digest: &Digest,
        (offset, size, decompressed): (u64, u64, bool),
    ) -> Checked<R> {
        Checked {
            inner,
            digest: digest.clone(),
            offset,
            source: source.clone(),
            decompressed,
            left: size,
            hasher: Sha256::new(),
        }
    }

    fn failure(&self, why: Reread) -> NotAsVerified {
        // A part and the offset in it, or (gzipped) the offset in the decompressed tar.
        let (file, offset) = match self.decompressed {
            false => self.source.place(self.offset),
            true => (self.source.whole.clone(), self.offset),
        };
        NotAsVerified {
            entry: blob_path(&self.digest),
            file,
            offset,
            decompressed: self.decompressed,
            why,
        }
    }

    fn fail(&self, why: Reread) -> io::Error {
        io::Error::other(self.failure(why))
    }
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = match self.inner.read(&mut buf[..want]) {
            Ok(0) => return Err(self.fail(Reread::Shorter)),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => return Err(error),
            Err(error) => return Err(self.fail(Reread::Io(error))),
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        if self.left == 0 {
            let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
            if actual != self.digest {
                return Err(self.fail(Reread::Changed(actual)));
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::testutil::{intact_bundle, verified};

    /// The entries of a tar, by name, and whether it ended with its end-of-archive blocks.
    fn entries(tar: &[u8]) -> (Vec<(String, Vec<u8>)>, io::Result<()>) {
        let mut archive = tar::Archive::new(tar);
        let mut found = Vec::new();
        let read = (|| {
            for entry in archive.entries()? {
                let mut entry = entry?;
                let name = entry.path()?.to_string_lossy().into_owned();
                let mut data = Vec::new();
                entry.read_to_end(&mut data)?;
                found.push((name, data));
            }
            Ok(())
        })();
        (found, read)
    }

    fn fed(bundle: &Verified) -> Result<Vec<u8>, Stopped> {
        Archive::whole(bundle).write(bundle.source(), Vec::new())
    }

    /// Flips a byte of the blob `digest` in the file at `path`, as a device answering a second read
    /// differently would.
    fn change(path: &Path, bundle: &Verified, digest: &Digest) -> u64 {
        let (offset, _) = bundle.location(digest).unwrap();
        let mut bytes = std::fs::read(path).unwrap();
        bytes[offset as usize] ^= 1;
        std::fs::write(path, bytes).unwrap();
        offset
    }

    /// Every entry verify read is fed, blobs as the bundle has them and the documents last, and the size
    /// announced is the size fed.
    #[test]
    fn the_whole_bundle_is_fed_documents_last() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1", "c:2"], &["linux/amd64"]);
        let bundle = verified(&path);
        let tar = fed(&bundle).ok().unwrap();
        assert_eq!(tar.len() as u64, Archive::whole(&bundle).size());
        let (fed, read) = entries(&tar);
        read.unwrap();
        let (original, _) = entries(&std::fs::read(&path).unwrap());
        let mut sorted = fed.clone();
        sorted.sort();
        let mut expected = original;
        expected.sort();
        assert_eq!(sorted, expected, "the same entries, byte for byte");
        let names: Vec<&str> = fed.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(
            names[names.len() - 4..],
            ["ferry.json", "index.json", "manifest.json", "oci-layout"]
        );
    }

    /// A blob that changed after verify is never fed whole: the feed stops inside its entry, before any
    /// document, so that a loader reading it finds a cut tar, and the error says which blob, where, and
    /// what it hashes to now.
    #[test]
    fn a_blob_changed_after_verify_cuts_the_feed_inside_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) = intact_bundle(dir.path(), &["quay.io/a/b:1", "c:2"], &["linux/amd64"]);
        let bundle = verified(&path);
        let layer = &images[1].layers[0].digest;
        let offset = change(&path, &bundle, layer);
        let mut out = Vec::new();
        let error = match Archive::whole(&bundle).write(bundle.source(), &mut out) {
            Err(Stopped::Bundle(error)) => error,
            other => panic!("{:?}", other.map(|_| ())),
        };
        let changed = std::fs::read(&path).unwrap()[offset as usize..]
            [..images[1].layers[0].size as usize]
            .to_vec();
        let actual = Digest::of(&changed);
        assert_eq!(
            error.to_string(),
            format!(
                "blobs/sha256/{} (at byte {offset} of {}) now hashes to {actual}",
                layer.hex(),
                path.display()
            )
        );
        let (fed, read) = entries(&out);
        assert!(read.is_err(), "the tar is cut: {fed:?}");
        assert!(
            fed.iter().all(|(name, _)| name.starts_with("blobs/")),
            "no document is fed: {fed:?}"
        );
        // What was fed ends inside the changed blob's entry, before its last byte.
        let name = blob_path(layer);
        let header = out
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .expect("its header is fed");
        assert!(
            out.len() < header + 512 + changed.len(),
            "its data is never fed whole"
        );
    }

    /// A bundle that now ends early, or has lost a part, is said to, naming the entry it ends in; a
    /// split bundle's part is named with the offset in that part.
    #[test]
    fn a_shorter_bundle_names_the_part_and_the_offset_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) = intact_bundle(dir.path(), &["quay.io/a/b:1", "c:2"], &["linux/amd64"]);
        let bundle = verified(&path);
        let layer = &images[1].layers[0].digest;
        let (offset, _) = bundle.location(layer).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..offset as usize + 1]).unwrap();
        let failure = |bundle: &Verified| match fed(bundle) {
            Err(Stopped::Bundle(error)) => error.to_string(),
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert_eq!(
            failure(&bundle),
            format!(
                "the bundle now ends inside blobs/sha256/{} (at byte {offset} of {})",
                layer.hex(),
                path.display()
            )
        );

        let parts: Vec<_> = bytes.chunks(4096).collect();
        for (index, part) in parts.iter().enumerate() {
            std::fs::write(dir.path().join(format!("b.tar.part-{index:03}")), part).unwrap();
        }
        std::fs::remove_file(&path).unwrap();
        let bundle = verified(&dir.path().join("b.tar.part-000"));
        let part = |index: u64| dir.path().join(format!("b.tar.part-{index:03}"));
        let lost = offset / 4096;
        std::fs::remove_file(part(lost)).unwrap();
        // The first blob that reaches into the lost part is where the feed stops.
        let (first, (start, _)) = bundle
            .locations()
            .iter()
            .filter(|(_, &(start, size))| start + size > lost * 4096)
            .min_by_key(|(_, &(start, _))| start)
            .unwrap();
        assert_eq!(
            failure(&bundle),
            format!(
                "blobs/sha256/{} (at byte {} of {}) cannot be read again: cannot open {}: No such file or directory (os error 2)",
                first.hex(),
                start % 4096,
                part(start / 4096).display(),
                part(lost).display()
            )
        );
    }

    /// A gzipped bundle is fed decompressed, read once front to back, and checked the same way.
    #[test]
    fn a_gzipped_bundle_is_fed_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1", "c:2"], &["linux/amd64"]);
        let plain = fed(&verified(&path)).ok().unwrap();
        let gzipped = dir.path().join("b.tar.gz");
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&gzipped).unwrap(),
            flate2::Compression::fast(),
        );
        encoder.write_all(&std::fs::read(&path).unwrap()).unwrap();
        encoder.finish().unwrap();
        let bundle = verified(&gzipped);
        assert_eq!(fed(&bundle).ok().unwrap(), plain);
        // The same bytes, other content: a gzipped bundle that is another bundle now.
        let (images, other) = intact_bundle(
            &dir.path().join("other"),
            &["quay.io/a/b:1", "d:3"],
            &["linux/amd64"],
        );
        let mut encoder = flate2::write::GzEncoder::new(
            std::fs::File::create(&gzipped).unwrap(),
            flate2::Compression::fast(),
        );
        encoder.write_all(&std::fs::read(&other).unwrap()).unwrap();
        encoder.finish().unwrap();
        let error = match fed(&bundle) {
            Err(Stopped::Bundle(error)) => error,
            other => panic!("{:?}", other.map(|_| ())),
        };
        assert!(
            error.to_string().contains(&format!(
                "{}'s gunzipped tar) now hashes to",
                gzipped.display()
            )),
            "{error} ({:?})",
            images.len()
        );
    }
}
