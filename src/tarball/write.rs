//! Writes the bundle: one plain tar that is at once a docker-archive (`manifest.json`) and an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as Docker 25+ `docker save` writes it, so that
//! `docker load`, `ctr images import` and `podman load` all accept it.
//!
//! Blobs are copied from the cache unchanged (upstream digests survive), each once however many images
//! share it. The small JSON documents come first so a streaming reader knows what to expect before the
//! blobs pass. Headers are pinned (uid 0, mode 0644, one mtime, sorted names) so the same inputs give the
//! same bytes. The output is hashed while written and renamed into place only when complete.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::delta::{assign, BundleDescription, DeltaRecord, FullBundle, DELTA_FORMAT};
use super::layout::{
    blob_path, name_annotations, platform_index_bytes, pretty, BundleIndex, DockerEntry, Pins,
    DELTA_JSON, INDEX_JSON, LAYOUT_BYTES, LAYOUT_JSON, MANIFEST_JSON, METADATA_JSON,
};
use super::metadata::BundleMetadata;
use super::output::{self, Output, OutputError};
use super::{Signer, TarballError};
use crate::cache::BlobStore;
use crate::digest::{Digest, Mismatch};
use crate::image::{media, Descriptor, Image, Index};
use crate::progress::{Action, Counted, Id, Reporter, Task};
use crate::recovery::{Created, Redundancy};

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The mtime of every entry (seconds since the epoch): `SOURCE_DATE_EPOCH`, or 0.
    pub mtime: u64,
    /// Cut the output into parts of at most this many bytes.
    pub split: Option<u64>,
    /// Sign `PATH.sha256` into `PATH.sig`.
    pub signer: Option<Arc<dyn Signer>>,
    /// Write PAR2 recovery data of this size beside the bundle.
    pub recovery: Option<Redundancy>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// The bundle, or its parts in order.
    pub files: Vec<PathBuf>,
    /// `sha256sum -c` files written beside them.
    pub checksum_files: Vec<PathBuf>,
    pub sha256: Digest,
    pub bytes: u64,
    pub blobs: usize,
    /// Bytes not written because images share blobs.
    pub saved_by_sharing: u64,
    /// The recovery data written beside it.
    pub recovery: Option<Created>,
    /// A delta's record: the full bundle it stands for and what its bases supply.
    pub delta: Option<DeltaRecord>,
}

/// Where the blobs of a bundle being written come from: the cache (`ferry bundle`), or verified bundles
/// (`ferry merge`). Every blob is hashed as it passes, whatever its source.
pub trait BlobSource {
    /// The `size` bytes of blob `digest`.
    fn open(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + '_>, TarballError>;
    /// The error for a blob whose `read` bytes hashed to `actual`, not to `digest`, once dealt with.
    fn damaged(&self, digest: &Digest, actual: Digest, read: u64) -> TarballError;
    /// The error for blob `digest` that could not be read `at` bytes into it: it names the file.
    fn unreadable(&self, digest: &Digest, at: u64, error: io::Error) -> TarballError;
    /// Whether each blob is hashed on its way. Only a source whose output is checked whole against a
    /// sha256 known before writing (merge's, against the one its delta names) may pass: the output's
    /// hash then proves every blob, and a mismatch is explained by a second, blob-by-blob run.
    fn hashes_each_blob(&self) -> bool {
        true
    }
}

/// A cache file damaged on this machine (a flipped bit, a truncation) must not ship under its name with a
/// matching `.sha256`, to be found only on the far side of the air gap: it is removed from the cache, so
/// that the next run fetches it again.
impl BlobSource for BlobStore {
    fn open(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + '_>, TarballError> {
        Ok(Box::new(self.open_blob(digest)?.take(size)))
    }

    fn damaged(&self, digest: &Digest, actual: Digest, read: u64) -> TarballError {
        match self.evict(digest) {
            Ok(path) => TarballError::DamagedBlob {
                digest: digest.clone(),
                path,
                actual,
                read,
            },
            Err(e) => e.into(),
        }
    }

    fn unreadable(&self, digest: &Digest, _: u64, error: io::Error) -> TarballError {
        TarballError::Read {
            path: self.path(digest),
            source: error,
        }
    }
}

/// The kind of cache note that says what the full bundle of a layout hashes to. A change to how entries
/// are written ([`header`], the documents' order) must change this name.
const FULL_BUNDLES: &str = "full-bundles-v1";

/// What a full-bundle note holds beside the sha256, so that a note damaged on disk is not believed.
fn note_check(key: &Digest, sha256: &Digest) -> Digest {
    Digest::of(format!("{key} {sha256}").as_bytes())
}

/// The entries of a bundle before its blobs: `oci-layout`, `ferry.json`, `index.json` and docker's
/// `manifest.json`, in that order (a delta's `ferry-delta.json` comes after its blobs).
pub type Documents = Vec<(&'static str, Vec<u8>)>;

/// What a bundle of some images holds: its documents and every blob, each in the cache.
struct Layout {
    documents: Documents,
    blobs: BTreeMap<Digest, Descriptor>,
    /// Manifests, configs and ferry's indexes of platforms: what a delta always carries.
    documents_as_blobs: BTreeSet<Digest>,
    /// The bytes the images reference, a shared blob once per image.
    referenced: u64,
}

impl Layout {
    fn of(
        store: &BlobStore,
        images: &[Image],
        metadata: &BundleMetadata,
    ) -> Result<Layout, TarballError> {
        let tops = tops(
            store,
            images,
            metadata.platforms.is_some(),
            metadata.carries_every_platform(),
        )?;
        let indexes = tops
            .iter()
            .filter(|top| media::is_index(&top.descriptor.media_type))
            .map(|top| &top.descriptor);
        let mut blobs = distinct_blobs(images);
        let mut documents_as_blobs: BTreeSet<Digest> = images
            .iter()
            .flat_map(|image| [image.manifest.digest.clone(), image.config.digest.clone()])
            .collect();
        for index in indexes.clone() {
            blobs.insert(index.digest.clone(), index.clone());
            documents_as_blobs.insert(index.digest.clone());
        }
        for image in images {
            for blob in std::iter::once(&image.manifest).chain(image.blobs()) {
                if !store.contains(&blob.digest, Some(blob.size)) {
                    return Err(TarballError::MissingBlob {
                        image: image.reference.to_string(),
                        digest: blob.digest.clone(),
                    });
                }
            }
        }
        let referenced = images.iter().map(Image::size).sum::<u64>()
            + indexes.map(|index| index.size).sum::<u64>();
        Ok(Layout {
            documents: documents(&tops, metadata).into(),
            blobs,
            documents_as_blobs,
            referenced,
        })
    }

    fn sizes(&self) -> BTreeMap<Digest, u64> {
        self.blobs
            .iter()
            .map(|(digest, descriptor)| (digest.clone(), descriptor.size))
            .collect()
    }

    /// What the bytes of the bundle of this layout follow from: each entry's tar header (its name, size
    /// and mtime, as [`header`] encodes them) and its content, the documents' by their digests and the
    /// blobs' by their names (each checked against its bytes as it is written), in the order written. Two
    /// builds of one key write the same bytes; ferry's version is in `ferry.json`, a document.
    /// None where an entry has no header (the write itself then says why).
    fn key(&self, mtime: u64) -> Option<Digest> {
        let documents = self
            .documents
            .iter()
            .map(|(name, bytes)| (name.to_string(), bytes.len() as u64, Digest::of(bytes)));
        let blobs = self
            .blobs
            .iter()
            .map(|(digest, blob)| (blob_path(digest), blob.size, digest.clone()));
        let mut key = FULL_BUNDLES.as_bytes().to_vec();
        for (name, size, digest) in documents.chain(blobs) {
            key.extend_from_slice(header(&name, size, mtime).ok()?.as_bytes());
            key.extend_from_slice(digest.to_string().as_bytes());
        }
        Some(Digest::of(&key))
    }

    /// Notes in the cache what the full bundle of this layout hashes to, for a delta of it to come, with
    /// a check of its own: a note damaged on disk is passed over, never recorded in a delta.
    fn remember_sha256(&self, store: &BlobStore, mtime: u64, sha256: &Digest) {
        let Some(key) = self.key(mtime) else { return };
        let note = format!("{sha256} {}", note_check(&key, sha256));
        // Only a fact the next delta would otherwise work out again: a note not written is not an error.
        let _ = store.write_note(FULL_BUNDLES, &key, note.as_bytes());
    }

    /// The sha256 of the full bundle of this layout, when a build of it noted it.
    fn recalled_sha256(&self, store: &BlobStore, mtime: u64) -> Option<Digest> {
        let key = self.key(mtime)?;
        let note = store.note(FULL_BUNDLES, &key)?;
        let (sha256, check) = std::str::from_utf8(&note).ok()?.split_once(' ')?;
        let sha256: Digest = sha256.parse().ok()?;
        (check == note_check(&key, &sha256).to_string()).then_some(sha256)
    }

    fn saved_by_sharing(&self) -> u64 {
        self.referenced - self.blobs.values().map(|d| d.size).sum::<u64>()
    }
}

/// [`stage_bundle`] from the cache, placed at once: how tests build bundles (ferry's stages choose when
/// to place what they stage).
#[cfg(test)]
pub fn write_bundle(
    store: &BlobStore,
    images: &[Image],
    metadata: &BundleMetadata,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Written, TarballError> {
    stage_bundle(store, store, images, metadata, path, options, reporter)?
        .place(options.signer.as_deref())
}

/// Writes `images` and `metadata` as one bundle at `path` (or its parts), its blobs from `source`, and
/// leaves it staged: written and synced, not yet in place.
pub fn stage_bundle(
    store: &BlobStore,
    source: &dyn BlobSource,
    images: &[Image],
    metadata: &BundleMetadata,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Staged, TarballError> {
    let layout = Layout::of(store, images, metadata)?;
    reporter.phase(&format!(
        "writing {} ({} images, {} blobs)",
        path.display(),
        images.len(),
        layout.blobs.len()
    ));
    let staged = write_entries(
        source,
        &layout.documents,
        &layout.sizes(),
        path,
        options,
        reporter,
    )?;
    // Noted only when every blob was hashed on its way: then the sha256 is of bytes each checked.
    if source.hashes_each_blob() {
        layout.remember_sha256(store, options.mtime, staged.sha256());
    }
    Ok(Staged {
        saved_by_sharing: layout.saved_by_sharing(),
        ..staged
    })
}

/// [`stage_delta`] from the cache, placed at once: how tests build deltas.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub fn write_delta(
    store: &BlobStore,
    images: &[Image],
    metadata: &BundleMetadata,
    bases: &[BundleDescription],
    full_name: &str,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Written, TarballError> {
    stage_delta(
        store, store, images, metadata, bases, full_name, path, options, reporter,
    )?
    .place(options.signer.as_deref())
}

/// Writes a delta of `images` at `path`: the documents of the bundle [`stage_bundle`] would write (named
/// `full_name` by default), every manifest and config, only the blobs no base holds, and last
/// `ferry-delta.json`, and leaves it staged. `ferry-delta.json` names the bundle a merge must rebuild by
/// its sha256: when a build of it (or an earlier delta) noted that in the cache, only the delta's own
/// blobs are read, each checked on the way; else every blob is read from `source` once and checked, and
/// the full bundle is hashed in the same pass (every entry passes through its hash, only the delta's own
/// into the file), and its sha256 noted. With a signer, the full bundle's signature is recorded too.
#[allow(clippy::too_many_arguments)]
pub fn stage_delta(
    store: &BlobStore,
    source: &dyn BlobSource,
    images: &[Image],
    metadata: &BundleMetadata,
    bases: &[BundleDescription],
    full_name: &str,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Staged, TarballError> {
    let layout = Layout::of(store, images, metadata)?;
    let all = layout.sizes();
    let bases = assign(&all, &layout.documents_as_blobs, bases);
    let expected: BTreeSet<&Digest> = bases
        .iter()
        .flat_map(|base| base.blobs.iter().map(|b| &b.digest))
        .collect();
    let carried: BTreeMap<Digest, u64> = all
        .iter()
        .filter(|(digest, _)| !expected.contains(digest))
        .map(|(digest, size)| (digest.clone(), *size))
        .collect();
    let full_signature = |sha256: &Digest| {
        options
            .signer
            .as_ref()
            .map(|signer| signer.signature(output::checksum_text(sha256, full_name).as_bytes()))
            .transpose()
            .map_err(|e| write_error(path, e))
    };
    let mut record = DeltaRecord {
        format: DELTA_FORMAT,
        bundle: FullBundle {
            name: full_name.to_string(),
            // Of the same length as the sha256 and the signature to come: the delta's size is known first.
            sha256: Digest::of(b""),
            bytes: entries_size(&layout.documents, &all),
            mtime: options.mtime,
            signature: full_signature(&Digest::of(b""))?,
        },
        bases,
    };
    let mut documents = layout.documents.clone();
    documents.push((DELTA_JSON, pretty(&record)));
    let total = entries_size(&documents, &carried);
    // A build of the full bundle noted its sha256: then only the delta's own blobs are read, else every
    // blob, for the full bundle's hash.
    let known = layout.recalled_sha256(store, options.mtime);
    reporter.phase(&format!(
        "writing {} ({} images, {} of {} blobs; {})",
        path.display(),
        images.len(),
        carried.len(),
        all.len(),
        match known {
            Some(_) => format!("the full bundle {full_name} as the cache noted it"),
            None => format!("the full bundle {full_name} hashed on the way"),
        }
    ));
    let (out, id) = open_output(path, options, total, known.is_none(), reporter)?;
    let mut tar = tar::Builder::new(Routed { out, to_out: true });
    let written = stream_entries(
        &mut tar,
        source,
        &layout.documents,
        if known.is_some() { &carried } else { &all },
        |digest| carried.contains_key(digest),
        options.mtime,
    )
    .map_err(|e| e.unwrap_or_else(|e| write_error(path, e)))
    .and_then(|()| {
        let sha256 = match known {
            Some(sha256) => sha256,
            None => {
                // The full bundle ends here; the delta's record follows in the delta alone.
                let routed = tar.get_mut();
                routed.to_out = false;
                routed
                    .write_all(&[0; 1024])
                    .map_err(|e| write_error(path, e))?;
                let (sha256, bytes, mismatches) = routed
                    .out
                    .get_mut()
                    .end_full()
                    .map_err(|e| write_error(path, e))?;
                // What follows is the delta's alone, even the end a refused tar still gets when it
                // is dropped.
                routed.to_out = true;
                if let Some(refusal) = damaged(source, mismatches) {
                    return Err(refusal);
                }
                debug_assert_eq!(bytes, record.bundle.bytes);
                layout.remember_sha256(store, options.mtime, &sha256);
                sha256
            }
        };
        record.bundle.signature = full_signature(&sha256)?;
        record.bundle.sha256 = sha256;
        let json = pretty(&record);
        append(
            &mut tar,
            DELTA_JSON,
            json.len() as u64,
            &mut json.as_slice(),
            options.mtime,
        )
        .map_err(|e| write_error(path, e))?;
        tar.into_inner().map_err(|e| write_error(path, e))
    })?;
    let out = written.out.into_inner();
    reporter.on_complete(id);
    Ok(Staged {
        sealed: seal(out, source, options.recovery, path)?,
        path: path.to_path_buf(),
        blobs: carried.len(),
        saved_by_sharing: layout.saved_by_sharing(),
        delta: Some(record),
    })
}

/// The documents that come first, in the order written: `oci-layout`, `ferry.json`, `index.json`, and
/// docker's `manifest.json`.
fn documents(tops: &[Top], metadata: &BundleMetadata) -> [(&'static str, Vec<u8>); 4] {
    let metadata = metadata.to_bytes();
    let docker = pretty(&docker_manifest(tops.iter().map(|top| top.shown)));
    let index = pretty(&oci_index(
        tops,
        Pins {
            metadata: Digest::of(&metadata),
            docker_manifest: Digest::of(&docker),
        },
    ));
    [
        (LAYOUT_JSON, LAYOUT_BYTES.to_vec()),
        (METADATA_JSON, metadata),
        (INDEX_JSON, index),
        (MANIFEST_JSON, docker),
    ]
}

/// A bundle whose every byte is written and synced, not yet in place; dropped, it is removed.
pub struct Staged {
    sealed: output::Sealed,
    path: PathBuf,
    blobs: usize,
    saved_by_sharing: u64,
    delta: Option<DeltaRecord>,
}

impl Staged {
    /// The sha256 of everything written.
    pub fn sha256(&self) -> &Digest {
        &self.sealed.sha256
    }

    /// Puts the bundle and its checksum files in place, with `PATH.sig` from `signer` when there is one.
    pub fn place(self, signer: Option<&dyn Signer>) -> Result<Written, TarballError> {
        let Staged {
            sealed,
            path,
            blobs,
            saved_by_sharing,
            delta,
        } = self;
        let sealed = sealed.sign(signer).map_err(|e| output_error(&path, e))?;
        sealed.staging.place().map_err(|e| output_error(&path, e))?;
        Ok(Written {
            files: sealed.files,
            checksum_files: sealed.checksum_files,
            sha256: sealed.sha256,
            bytes: sealed.bytes,
            blobs,
            saved_by_sharing,
            recovery: sealed.recovery,
            delta,
        })
    }
}

/// Writes `documents`, then `blobs` from `source` in digest order, as a tar into a staged output of the
/// size they make (its progress one task), each blob hashed as it passes; the output is written and
/// synced, not yet signed or in place.
pub fn write_entries(
    source: &dyn BlobSource,
    documents: &Documents,
    blobs: &BTreeMap<Digest, u64>,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Staged, TarballError> {
    let total = entries_size(documents, blobs);
    let (out, id) = open_output(path, options, total, false, reporter)?;
    let mut tar = tar::Builder::new(Routed { out, to_out: true });
    let routed = stream_entries(&mut tar, source, documents, blobs, |_| true, options.mtime)
        .and_then(|()| tar.into_inner().map_err(Err))
        .map_err(|e| e.unwrap_or_else(|e| write_error(path, e)))?;
    // The last bytes are counted before the task is said to be done.
    let out = routed.out.into_inner();
    reporter.on_complete(id);
    Ok(Staged {
        sealed: seal(out, source, options.recovery, path)?,
        path: path.to_path_buf(),
        blobs: blobs.len(),
        saved_by_sharing: 0,
        delta: None,
    })
}

/// The bytes of the tar of `documents` and `blobs`.
fn entries_size(documents: &Documents, blobs: &BTreeMap<Digest, u64>) -> u64 {
    tar_size(
        documents
            .iter()
            .map(|(_, bytes)| bytes.len() as u64)
            .chain(blobs.values().copied()),
    )
}

/// What a tar builder writes: into the output while `to_out`, else (a delta's entries that its bases
/// hold) only into the hash of the full bundle the delta stands for, which its output hashes beside its
/// own ([`Output::shadow`]).
struct Routed<'r> {
    out: Counted<'r, Output>,
    to_out: bool,
}

impl Write for Routed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.to_out {
            true => self.out.write_all(buf)?,
            false => self.out.get_mut().shadow(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Routed<'_> {
    /// The next `size` bytes written are blob `digest`, hashed as they pass beside the output's (and a
    /// delta's full bundle's) hash.
    fn blob(&mut self, digest: &Digest, size: u64) {
        self.out.get_mut().blob(digest, size);
    }

    /// The blob being written ends here, short of its size.
    fn cut(&mut self) {
        self.out.get_mut().cut();
    }

    /// Reads up to `limit` bytes of the blob being written from `blob`, straight into the output (or the
    /// full bundle's hash alone) as writing them would, and says how many: 0 at its end. The outer error
    /// is the output's, the inner one the blob's.
    fn fill_from(&mut self, blob: &mut dyn Read, limit: u64) -> io::Result<io::Result<usize>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if !self.to_out {
            return self.out.get_mut().shadow_from(blob, limit);
        }
        let read = self.out.get_mut().fill_from(blob, limit)?;
        if let Ok(n) = read {
            self.out.passed(n);
        }
        Ok(read)
    }
}

/// Appends `documents`, then `blobs` from `source` in digest order, to `tar`, each blob announced to be
/// hashed as it passes, unless its source hashes none; a blob reaches the output only if `in_output` says
/// so (else only the full bundle's hash). The outer error is the bundle's; the inner one, the writing's.
fn stream_entries(
    tar: &mut tar::Builder<Routed<'_>>,
    source: &dyn BlobSource,
    documents: &Documents,
    blobs: &BTreeMap<Digest, u64>,
    in_output: impl Fn(&Digest) -> bool,
    mtime: u64,
) -> Result<(), Result<TarballError, io::Error>> {
    for (name, bytes) in documents {
        append(tar, name, bytes.len() as u64, &mut bytes.as_slice(), mtime).map_err(Err)?;
    }
    for (digest, size) in blobs {
        tar.get_mut().to_out = in_output(digest);
        copy_blob(tar.get_mut(), source, digest, *size, mtime)?;
    }
    tar.get_mut().to_out = true;
    Ok(())
}

/// The refusal of the blobs written that are not what their names say, once each is dealt with by its
/// source (evicted from the cache); the first is said. None when all are.
fn damaged(source: &dyn BlobSource, mismatches: Vec<Mismatch>) -> Option<TarballError> {
    let mut errors = mismatches
        .into_iter()
        .map(|m| source.damaged(&m.digest, m.actual, m.read));
    let first = errors.next();
    errors.for_each(drop);
    first
}

/// Seals what was written to `out` (at `path`), unless a blob in it is not what its name says.
fn seal(
    out: Output,
    source: &dyn BlobSource,
    recovery: Option<Redundancy>,
    path: &Path,
) -> Result<output::Sealed, TarballError> {
    let mut finished = out.finish().map_err(|e| output_error(path, e))?;
    if let Some(refusal) = damaged(source, std::mem::take(&mut finished.mismatches)) {
        return Err(refusal);
    }
    finished.seal(recovery).map_err(|e| output_error(path, e))
}

/// Copies one blob into the tar written to `out`, header and padding included, announced to `out` to be
/// hashed as it passes when its source wants each blob hashed: what does not hash to its name is its
/// source's to explain once the output is finished. A blob cut short still ends where its header says, so
/// that the output stays a tar of the size announced until the check refuses it; from a source that
/// hashes no blob, it is refused at once.
fn copy_blob(
    out: &mut Routed<'_>,
    source: &dyn BlobSource,
    digest: &Digest,
    size: u64,
    mtime: u64,
) -> Result<(), Result<TarballError, io::Error>> {
    let mut blob = source.open(digest, size).map_err(Ok)?;
    out.write_all(
        header(&blob_path(digest), size, mtime)
            .map_err(Err)?
            .as_bytes(),
    )
    .map_err(Err)?;
    let hashed = source.hashes_each_blob();
    if hashed {
        out.blob(digest, size);
    }
    let mut left = size;
    while left > 0 {
        match out.fill_from(&mut blob, left).map_err(Err)? {
            Ok(0) => break,
            Ok(read) => left -= read as u64,
            // What was read before the error is in the output: the failing byte is named.
            Err(error) => return Err(Ok(source.unreadable(digest, size - left, error))),
        }
    }
    if left > 0 {
        if !hashed {
            // Nothing else would notice.
            let ended = io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "blob {digest} ended after {} of its {size} bytes",
                    size - left
                ),
            );
            return Err(Ok(source.unreadable(digest, size - left, ended)));
        }
        out.cut();
    }
    let padding = left + size.next_multiple_of(512) - size;
    io::copy(&mut io::repeat(0).take(padding), out).map_err(Err)?;
    Ok(())
}

/// The bytes of a tar holding entries of `sizes`: a header and the data padded to 512 bytes each,
/// then two zero blocks.
pub fn tar_size(sizes: impl Iterator<Item = u64>) -> u64 {
    sizes
        .map(|size| 512 + size.div_ceil(512) * 512)
        .sum::<u64>()
        + 1024
}

/// Checks, before anything is fetched, that a bundle can be written at `path` (cut by `split`), and
/// sweeps what killed runs left beside it.
pub fn check_output(path: &Path, split: Option<u64>) -> Result<(), TarballError> {
    output::prepare(path, split).map_err(|e| output_error(path, e))
}

/// Every manifest, config and layer of `images`, once, sorted by digest.
fn distinct_blobs(images: &[Image]) -> BTreeMap<Digest, Descriptor> {
    let mut blobs = BTreeMap::new();
    for image in images {
        for blob in std::iter::once(&image.manifest).chain(image.blobs()) {
            blobs
                .entry(blob.digest.clone())
                .or_insert_with(|| blob.clone());
        }
    }
    blobs
}

/// What `index.json` names for one image, and the platform's image `manifest.json` describes.
struct Top<'a> {
    descriptor: Descriptor,
    shown: &'a Image,
}

/// One top-level descriptor per image. With one platform, the image's own manifest. With several
/// (`multi`), an OCI image index ferry writes into the cache, listing exactly the platforms carried, each
/// its upstream manifest's media type, digest and size, so that containerd's importer finds every blob
/// its walk reaches (none is left out of the bundle) and a push keeps every platform's digest. Images
/// arrive grouped by name, platforms in the order asked for; the first platform is docker's.
///
/// With `every` platform (`--platform all`), an image taken whole from its upstream index is that index,
/// byte for byte from the cache, so that pins to its digest resolve; one without (a single manifest
/// upstream, a vendor's tarball) is its manifest, or ferry's index of a vendor's several. Docker's is
/// the first platform that is not `unknown/unknown` (an attestation).
fn tops<'a>(
    store: &BlobStore,
    images: &'a [Image],
    multi: bool,
    every: bool,
) -> Result<Vec<Top<'a>>, TarballError> {
    let mut tops = Vec::new();
    for group in images.chunk_by(|a, b| a.reference == b.reference) {
        if every {
            let shown = group
                .iter()
                .find(|image| !image.platform.is_unknown())
                .unwrap_or(&group[0]);
            if let Some(descriptor) = upstream_index(store, group)? {
                tops.push(Top { descriptor, shown });
                continue;
            }
        }
        if !multi || (every && group.len() == 1) {
            tops.extend(group.iter().map(|image| Top {
                descriptor: image.manifest.clone(),
                shown: image,
            }));
            continue;
        }
        let manifests: Vec<Descriptor> = group
            .iter()
            .map(|image| Descriptor {
                platform: Some(image.platform.clone()),
                annotations: None,
                ..image.manifest.clone()
            })
            .collect();
        let bytes = platform_index_bytes(manifests);
        let digest = Digest::of(&bytes);
        store.put(&digest, &bytes)?;
        tops.push(Top {
            descriptor: Descriptor {
                media_type: media::OCI_INDEX.to_string(),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: None,
            },
            shown: &group[0],
        });
    }
    Ok(tops)
}

/// The upstream index `group` was taken whole from (every image of it names the same), as the cache
/// holds it; `None` when it has none.
fn upstream_index(store: &BlobStore, group: &[Image]) -> Result<Option<Descriptor>, TarballError> {
    let Some(digest) = &group[0].index_digest else {
        return Ok(None);
    };
    if group
        .iter()
        .any(|image| image.index_digest.as_ref() != Some(digest))
    {
        return Ok(None);
    }
    let bytes = store.read(digest)?;
    Ok(Some(Descriptor {
        media_type: Index::media_type_of(&bytes),
        digest: digest.clone(),
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    }))
}

/// One descriptor per image, at its manifest or (several platforms) ferry's index of them, named the
/// way containerd and podman read names. No `platform` field: containerd's filter lets such descriptors
/// through on any host. The index's own annotations pin `ferry.json` and `manifest.json` by digest, so
/// that `verify` can prove every byte of the bundle from the index down.
fn oci_index(tops: &[Top], pins: Pins) -> BundleIndex {
    let manifests = tops
        .iter()
        .map(|top| Descriptor {
            platform: None,
            annotations: name_annotations(&top.shown.reference),
            ..top.descriptor.clone()
        })
        .collect();
    BundleIndex::new(manifests, pins)
}

/// docker load's view: fully qualified RepoTags, so podman does not file them under `localhost/`. A tag
/// names one image here, so with several platforms this is the first one's.
fn docker_manifest<'a>(images: impl Iterator<Item = &'a Image>) -> Vec<DockerEntry> {
    images
        .map(|image| {
            DockerEntry::new(
                &image.reference,
                &image.config.digest,
                image.layers.iter().map(|l| &l.digest),
            )
        })
        .collect()
}

/// One regular entry, with the pinned header every entry of a bundle has.
pub fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: &mut dyn io::Read,
    mtime: u64,
) -> io::Result<()> {
    tar.append(&header(name, size, mtime)?, data)
}

/// The pinned header of a regular entry: uid 0, mode 0644, the bundle's one mtime.
fn header(name: &str, size: u64, mtime: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

fn write_error(path: &Path, source: io::Error) -> TarballError {
    output_error(path, OutputError::Io(source))
}

/// The staged output of `total` bytes at `path`, its progress one write task.
fn open_output<'r>(
    path: &Path,
    options: &WriteOptions,
    total: u64,
    cut_from_full: bool,
    reporter: &'r dyn Reporter,
) -> Result<(Counted<'r, Output>, Id), TarballError> {
    let output = Output::create(
        path,
        options.split,
        total,
        options.recovery.is_some(),
        cut_from_full,
    )
    .map_err(|e| output_error(path, e))?;
    let id = reporter.on_start(&Task {
        action: Action::Write,
        subject: &path.display().to_string(),
        total,
        done: 0,
    });
    Ok((Counted::new(output, reporter, id), id))
}

fn output_error(path: &Path, error: OutputError) -> TarballError {
    match error {
        OutputError::Io(source) if source.kind() == io::ErrorKind::StorageFull => {
            TarballError::DiskFull {
                path: path.to_path_buf(),
            }
        }
        OutputError::Io(source) => TarballError::Write {
            path: path.to_path_buf(),
            source,
        },
        OutputError::Target(error) => TarballError::Target(error),
        OutputError::NoRoom { dir, needed, free } => TarballError::NoRoom {
            path: path.to_path_buf(),
            dir,
            needed,
            free,
        },
        OutputError::Recovery(error) => TarballError::Recovery(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;
    use crate::testutil::{loose_metadata, two_images};

    /// A temporary directory with a cache holding [`two_images`].
    fn fixture() -> (tempfile::TempDir, BlobStore, Vec<Image>) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = two_images(&store);
        (dir, store, images)
    }

    fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut entry = e.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                (name, bytes)
            })
            .collect()
    }

    fn write(
        dir: &Path,
        store: &BlobStore,
        images: &[Image],
        name: &str,
        options: &WriteOptions,
    ) -> Result<Written, TarballError> {
        write_bundle(
            store,
            images,
            &loose_metadata(images),
            &dir.join(name),
            options,
            &Silent,
        )
    }

    #[test]
    fn one_archive_both_docker_and_oci_with_each_blob_once() {
        let (dir, store, images) = fixture();
        let written = write(
            dir.path(),
            &store,
            &images,
            "b.tar",
            &WriteOptions::default(),
        )
        .unwrap();
        let entries = entries(&dir.path().join("b.tar"));
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..4],
            [LAYOUT_JSON, METADATA_JSON, INDEX_JSON, MANIFEST_JSON]
        );
        // 2 manifests + 2 configs + 2 own layers + 1 shared layer.
        assert_eq!(names.len() - 4, 7);
        assert_eq!(written.blobs, 7);
        assert_eq!(
            written.saved_by_sharing,
            "shared base layer bytes".len() as u64
        );
        for (name, bytes) in &entries[4..] {
            assert_eq!(
                *name,
                blob_path(&Digest::of(bytes)),
                "every blob hashes to its name"
            );
        }
        let index: serde_json::Value = serde_json::from_slice(&entries[2].1).unwrap();
        assert_eq!(
            index["manifests"][1]["annotations"]["io.containerd.image.name"],
            "docker.io/library/huawei-csi:4.8.0"
        );
        assert_eq!(
            index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"],
            "4.8.0"
        );
        assert_eq!(
            index["manifests"][0]["digest"],
            images[0].manifest.digest.to_string()
        );
        let manifest: serde_json::Value = serde_json::from_slice(&entries[3].1).unwrap();
        assert_eq!(
            manifest[0]["RepoTags"][0],
            "registry.k8s.io/sig-storage/a:v1"
        );
        for path in manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&manifest[0]["Config"]])
        {
            assert!(
                names.contains(&path.as_str().unwrap()),
                "{path} is an entry"
            );
        }
    }

    /// Writing the tar is one task whose total is the bundle's size, and whose bytes reach it.
    #[test]
    fn the_tar_is_written_as_one_task_of_its_size() {
        let (dir, store, images) = fixture();
        let recorder = crate::testutil::Recorder::default();
        let path = dir.path().join("b.tar");
        let written = write_bundle(
            &store,
            &images,
            &loose_metadata(&images),
            &path,
            &WriteOptions::default(),
            &recorder,
        )
        .unwrap();
        assert_eq!(
            recorder.started(),
            [(format!("write {}", path.display()), written.bytes, 0)]
        );
        assert_eq!(recorder.bytes(crate::progress::Id(0)), written.bytes);
    }

    #[test]
    fn checksum_file_matches_and_output_is_deterministic() {
        let (dir, store, images) = fixture();
        let options = WriteOptions {
            mtime: 1_700_000_000,
            ..Default::default()
        };
        let first = write(dir.path(), &store, &images, "one.tar", &options).unwrap();
        write(dir.path(), &store, &images, "two.tar", &options).unwrap();
        let one = std::fs::read(dir.path().join("one.tar")).unwrap();
        assert_eq!(one.len() as u64, first.bytes);
        assert_eq!(one, std::fs::read(dir.path().join("two.tar")).unwrap());
        assert_eq!(Digest::of(&one), first.sha256);
        let sums = std::fs::read_to_string(dir.path().join("one.tar.sha256")).unwrap();
        assert_eq!(sums, format!("{}  one.tar\n", first.sha256.hex()));
    }

    #[test]
    fn a_missing_blob_leaves_nothing_behind() {
        let (dir, store, mut images) = fixture();
        images[1].layers[1].digest = Digest::of(b"never stored");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = write(&out, &store, &images, "b.tar", &WriteOptions::default()).unwrap_err();
        assert!(err.to_string().contains("huawei-csi"), "{err}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "no bundle, no temporary file"
        );
    }

    #[test]
    fn a_file_that_cannot_be_placed_takes_the_whole_bundle_with_it() {
        let (dir, store, images) = fixture();
        // A directory in the way of the checksum file (unsplit) or of the second part (split).
        for (blocked, split) in [("b.tar.sha256", None), ("b.tar.part-001", Some(2048))] {
            let out = dir.path().join(format!("out-{blocked}"));
            std::fs::create_dir_all(out.join(blocked).join("in the way")).unwrap();
            let options = WriteOptions {
                mtime: 0,
                split,
                ..Default::default()
            };
            write(&out, &store, &images, "b.tar", &options).unwrap_err();
            let left: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                [blocked],
                "no bundle, part or checksum without the rest"
            );
        }
    }

    #[test]
    fn split_parts_rejoin_into_the_whole() {
        let (dir, store, images) = fixture();
        let whole = write(
            dir.path(),
            &store,
            &images,
            "whole.tar",
            &WriteOptions::default(),
        )
        .unwrap();
        let split = write(
            dir.path(),
            &store,
            &images,
            "split.tar",
            &WriteOptions {
                split: Some(2048),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(split.files.len() > 2, "{:?}", split.files);
        let mut joined = Vec::new();
        for part in &split.files {
            let bytes = std::fs::read(part).unwrap();
            assert!(bytes.len() <= 2048);
            joined.extend(bytes);
        }
        assert_eq!(Digest::of(&joined), whole.sha256);
        assert_eq!(split.sha256, whole.sha256);
        let parts = std::fs::read_to_string(dir.path().join("split.tar.parts.sha256")).unwrap();
        assert_eq!(parts.lines().count(), split.files.len());
        assert!(parts.starts_with(&format!(
            "{}  split.tar.part-000\n",
            Digest::of(&std::fs::read(&split.files[0]).unwrap()).hex()
        )));
        let sum = std::fs::read_to_string(dir.path().join("split.tar.sha256")).unwrap();
        assert_eq!(sum, format!("{}  split.tar\n", whole.sha256.hex()));
    }

    #[test]
    fn a_blob_damaged_in_the_cache_is_refused_named_and_evicted() {
        let (dir, store, images) = fixture();
        let damaged = images[1].layers[1].digest.clone();
        let cached = store.path(&damaged);
        let mut bytes = std::fs::read(&cached).unwrap();
        bytes[3] ^= 0x10; // one bit, size unchanged: the store's own size check cannot see it
        std::fs::write(&cached, &bytes).unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = write(&out, &store, &images, "b.tar", &WriteOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cache file {} is damaged: {} bytes hashing to {}, not blob {damaged}; it was removed \
                 from the cache, so running ferry again fetches it anew",
                cached.display(),
                bytes.len(),
                Digest::of(&bytes)
            )
        );
        assert!(!cached.exists(), "the damaged blob is gone from the cache");
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left");
    }

    #[test]
    fn the_size_is_known_before_writing_and_absurd_part_counts_are_refused() {
        let (dir, store, images) = fixture();
        let whole = write(
            dir.path(),
            &store,
            &images,
            "b.tar",
            &WriteOptions::default(),
        )
        .unwrap();
        let at_most = |split| WriteOptions {
            split: Some(split),
            ..Default::default()
        };
        // The smallest part size that keeps to the limit works, one byte less does not.
        let smallest = whole.bytes.div_ceil(output::MAX_PARTS);
        let split = write(dir.path(), &store, &images, "s.tar", &at_most(smallest)).unwrap();
        assert_eq!(split.files.len() as u64, whole.bytes.div_ceil(smallest));
        let err = write(dir.path(), &store, &images, "t.tar", &at_most(smallest - 1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "--split {}: a bundle of {} bytes would be cut into {} parts; at most 1000 are \
                 numbered so that they rejoin in order, so use --split {smallest} or more",
                smallest - 1,
                whole.bytes,
                whole.bytes.div_ceil(smallest - 1)
            )
        );
        assert!(!dir.path().join("t.tar.part-000").exists());
    }

    #[test]
    fn files_that_are_not_regular_are_never_replaced() {
        let (dir, store, images) = fixture();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"keep me").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("link.tar")).unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("b.tar.sha256")).unwrap();
        for name in ["link.tar", "b.tar"] {
            let err =
                write(dir.path(), &store, &images, name, &WriteOptions::default()).unwrap_err();
            let existing = match name {
                "b.tar" => dir.path().join("b.tar.sha256"),
                _ => dir.path().join(name),
            };
            assert_eq!(
                err.to_string(),
                format!(
                    "{}: exists and is not a regular file; ferry does not replace it with a bundle's file",
                    existing.display()
                )
            );
        }
        assert!(dir.path().join("link.tar").is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    }

    #[test]
    fn names_sha256sum_would_escape_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let (dir, store, images) = fixture();
        for (name, shown) in [
            (&b"two\nlines.tar"[..], "two\\nlines.tar"),
            (b"latin1-\xe9.tar", "latin1-\u{fffd}.tar"),
        ] {
            let path = dir.path().join(std::ffi::OsStr::from_bytes(name));
            let err = write_bundle(
                &store,
                &images,
                &loose_metadata(&images),
                &path,
                &WriteOptions::default(),
                &Silent,
            )
            .unwrap_err();
            let message = err.to_string();
            assert!(message.ends_with(&format!("{shown}\": a file name with control characters or bytes that are not UTF-8 cannot be written into the .sha256 file as sha256sum -c and ferry verify read it; choose another name")), "{message}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["cache"]);
    }

    /// A source that cannot be read in the middle of a blob (an I/O error from a failing disk), or that
    /// ends early: the error names the source's file, not the bundle being written, and nothing is left.
    #[test]
    fn a_blob_that_cannot_be_read_names_its_file() {
        struct Failing {
            after: usize,
            error: bool,
        }
        impl BlobSource for Failing {
            fn open(&self, _: &Digest, _: u64) -> Result<Box<dyn Read + '_>, TarballError> {
                let head = io::repeat(7).take(self.after as u64);
                match self.error {
                    true => Ok(Box::new(head.chain(FailingRead))),
                    false => Ok(Box::new(head)),
                }
            }
            fn damaged(&self, _: &Digest, _: Digest, _: u64) -> TarballError {
                unreachable!("this source hashes no blob")
            }
            fn unreadable(&self, digest: &Digest, at: u64, error: io::Error) -> TarballError {
                TarballError::Read {
                    path: PathBuf::from(format!("source of {digest} at {at}")),
                    source: error,
                }
            }
            fn hashes_each_blob(&self) -> bool {
                false
            }
        }
        struct FailingRead;
        impl Read for FailingRead {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("Input/output error"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let digest = Digest::of(b"blob");
        let blobs = BTreeMap::from([(digest.clone(), 3 << 20)]);
        let path = dir.path().join("out.tar");
        for (error, said) in [
            (true, "Input/output error".to_string()),
            (
                false,
                format!("blob {digest} ended after 1000 of its 3145728 bytes"),
            ),
        ] {
            let failed = write_entries(
                &Failing { after: 1000, error },
                &Documents::default(),
                &blobs,
                &path,
                &WriteOptions::default(),
                &Silent,
            )
            .err()
            .unwrap();
            assert_eq!(
                crate::causes::chain(&failed),
                format!("cannot read source of {digest} at 1000: {said}")
            );
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }

    /// A delta whose base holds one damaged blob and which carries another: both are evicted in the one
    /// refusal (bundle::build fetches what was evicted and writes once more), nothing is left behind.
    #[test]
    fn a_delta_with_a_damaged_blob_carried_and_one_held_by_its_base_evicts_both() {
        use super::super::delta::HeldBlob;
        let (dir, store, images) = fixture();
        // The shared base layer, which the base holds; the second image's own layer, which is carried.
        let held = images[0].layers[0].clone();
        let carried = images[1].layers[1].clone();
        for digest in [&held.digest, &carried.digest] {
            let cached = store.path(digest);
            let mut bytes = std::fs::read(&cached).unwrap();
            bytes[3] ^= 0x10;
            std::fs::write(&cached, &bytes).unwrap();
        }
        let base = BundleDescription {
            file: "base.tar".into(),
            sha256: Digest::of(b"base"),
            bytes: 10240,
            release: None,
            blobs: vec![HeldBlob {
                digest: held.digest.clone(),
                size: held.size,
            }],
            images: vec![],
        };
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let error = write_delta(
            &store,
            &images,
            &loose_metadata(&images),
            &[base],
            "full.tar",
            &out.join("d.tar"),
            &WriteOptions::default(),
            &Silent,
        )
        .unwrap_err();
        let first = (&held.digest).min(&carried.digest).clone();
        assert!(
            matches!(&error, TarballError::DamagedBlob { digest, .. } if *digest == first),
            "{error}"
        );
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing left");
        assert!(!store.path(&held.digest).exists(), "the held blob evicted");
        assert!(
            !store.path(&carried.digest).exists(),
            "the carried blob evicted"
        );
    }

    /// A delta of large blobs, held by its base and carried in turn (an empty one among them), written
    /// whole, split and split with recovery data: each names the full bundle's sha256 and size, and
    /// holds the full bundle's entries but the held ones, the same bytes however it is cut.
    #[test]
    fn a_delta_of_large_blobs_names_its_full_bundle_however_it_is_cut() {
        use super::super::delta::HeldBlob;
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let mut rng = fastrand::Rng::with_seed(5);
        let layers: Vec<Descriptor> = [1_300_000, 2_500_000, 700_000, 1 << 20, 0, 3_000_001, 511]
            .into_iter()
            .map(|size| {
                let bytes: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
                crate::testutil::put(&store, &bytes, media::DOCKER_LAYER_GZIP)
            })
            .collect();
        let mut images = two_images(&store);
        images[0].layers.extend(layers.iter().cloned());
        let held: Vec<HeldBlob> = layers
            .iter()
            .step_by(2)
            .chain([&images[0].layers[0]])
            .map(|layer| HeldBlob {
                digest: layer.digest.clone(),
                size: layer.size,
            })
            .collect();
        let full_path = dir.path().join("full.tar");
        let metadata = loose_metadata(&images);
        let full = write_bundle(
            &store,
            &images,
            &metadata,
            &full_path,
            &WriteOptions::default(),
            &Silent,
        )
        .unwrap();
        let base = BundleDescription {
            file: "base.tar".into(),
            sha256: Digest::of(b"base"),
            bytes: 10240,
            release: None,
            blobs: held,
            images: vec![],
        };
        let expected: Vec<(String, Vec<u8>)> = entries(&full_path)
            .into_iter()
            .filter(|(name, _)| !base.blobs.iter().any(|b| name.ends_with(b.digest.hex())))
            .collect();
        let mut written = Vec::new();
        for (name, split, recovery) in [
            ("whole", None, None),
            ("split", Some(1_500_000), None),
            ("recovered", Some(1_000_000), Some("5%".parse().unwrap())),
        ] {
            let out = dir.path().join(name);
            std::fs::create_dir(&out).unwrap();
            let options = WriteOptions {
                split,
                recovery,
                ..WriteOptions::default()
            };
            let delta = write_delta(
                &store,
                &images,
                &metadata,
                std::slice::from_ref(&base),
                "full.tar",
                &out.join("d.tar"),
                &options,
                &Silent,
            )
            .unwrap();
            let record = delta.delta.as_ref().unwrap();
            assert_eq!(
                (&record.bundle.sha256, record.bundle.bytes),
                (&full.sha256, full.bytes),
                "{name}"
            );
            let bytes: Vec<u8> = delta
                .files
                .iter()
                .flat_map(|file| std::fs::read(file).unwrap())
                .collect();
            assert_eq!(Digest::of(&bytes), delta.sha256, "{name}");
            let joined = dir.path().join(format!("{name}.joined"));
            std::fs::write(&joined, &bytes).unwrap();
            let held_out = entries(&joined);
            assert_eq!(held_out[..expected.len()], expected[..], "{name}");
            assert_eq!(held_out.len(), expected.len() + 1, "{name}: and the record");
            written.push(bytes);
        }
        assert!(written.windows(2).all(|pair| pair[0] == pair[1]));
    }
}
