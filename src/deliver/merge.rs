//! The full bundle a delta stands for, rebuilt from the delta and its bases: the same documents and blobs
//! in the same order under the same headers, so the same bytes `ferry bundle` wrote on the connected
//! side. The output is hashed as it is written, and a bundle whose sha256 is not the one the delta names
//! is never put in place.
//!
//! Two ways, one result. [`locate`] and [`Located::write`] read only the inputs' tar headers and copy
//! each blob once: the output's sha256, which the delta names, proves every byte of it (each blob, and
//! so each base), at the cost of one hash pass. When anything is off (a file that is not a base, a blob missing, an
//! output that hashes otherwise), it says so and [`merge`] takes over: the delta verified with every
//! base first, each blob hashed again as it is copied, so that what is wrong is named.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::progress::Reporter;
use crate::tarball::delta::{BaseRecord, DeltaRecord, FullBundle, DELTA_FORMAT};
use crate::tarball::headers::{self, Contents};
use crate::tarball::layout::{DELTA_JSON, LEADING_DOCUMENTS, METADATA_JSON};
use crate::tarball::read::Source;
use crate::tarball::{
    file_name, write_entries, BlobSource, BundleMetadata, Documents, Signer, Staged, TarballError,
    WriteOptions, Written,
};
use crate::verify::{Verified, VerifiedDelta};

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("{}: a whole bundle, not a delta; merge takes the bases first and the delta last", .0.display())]
    NotADelta(PathBuf),
    #[error("{}: the delta's bases were not all given", .0.display())]
    Incomplete(PathBuf),
    #[error("-o {}: that is {}, one of the files merged; write the bundle elsewhere", .output.display(), .input.display())]
    OverInput { output: PathBuf, input: PathBuf },
    #[error("{}: the delta names its full bundle {name:?}, which is not a file name; give the output with -o FILE", .delta.display())]
    NotAFileName { delta: PathBuf, name: String },
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error("the bundle merged from {} hashes to {actual}, but the delta names {expected}: this ferry ({ours}) writes bundles otherwise than the one that made the delta ({theirs}); nothing was written", .delta.display())]
    Mismatch {
        delta: PathBuf,
        expected: Digest,
        actual: Digest,
        ours: String,
        theirs: String,
    },
}

/// What was merged.
#[derive(Debug)]
pub struct Merged {
    pub written: Written,
    /// Whether `PATH.sig` was written: the delta was signed, and the output keeps the full bundle's name.
    pub signed: bool,
}

/// Refuses an output path that is one of the inputs: writing it would destroy what is read.
fn check_output(inputs: &[PathBuf], path: &Path) -> Result<(), MergeError> {
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    match inputs.iter().find(|input| same(input, path)) {
        Some(input) => Err(MergeError::OverInput {
            output: path.to_path_buf(),
            input: input.clone(),
        }),
        None => Ok(()),
    }
}

/// The quick way's answer: done, or declined for a reason (nothing was written).
#[derive(Debug)]
pub enum Quick<T> {
    Done(T),
    Declined(String),
}

/// A delta and its bases as their headers describe them, ready to be copied into the full bundle.
#[derive(Debug)]
pub struct Located {
    record: DeltaRecord,
    metadata: BundleMetadata,
    documents: Documents,
    sources: Vec<Source>,
    /// Each blob of the full bundle: the source that holds it, its offset there, its size.
    blobs: BTreeMap<Digest, (usize, u64, u64)>,
}

/// Reads the headers of `delta` and `bases` (not their blobs). Only a file the delta was made from (by
/// size, holding every blob the delta expects from it) serves as a base, and every base must be given.
pub fn locate(delta: &Path, bases: &[PathBuf]) -> Quick<Located> {
    // What cannot be read here (a directory, a part gone, Ctrl-C) is left to the explaining way.
    let read = |file: &Path, documents: bool| -> Option<(Source, Contents)> {
        let source = Source::locate(file).ok()?;
        let contents = headers::contents(&source, documents).ok()??;
        Some((source, contents))
    };
    let declined = Quick::Declined;
    let Some((delta_source, mut delta_contents)) = read(delta, true) else {
        return declined(format!(
            "{} is not laid out as ferry writes a delta",
            delta.display()
        ));
    };
    let parsed = |name: &str| delta_contents.documents.get(name).map(Vec::as_slice);
    let record =
        parsed(DELTA_JSON).and_then(|bytes| serde_json::from_slice::<DeltaRecord>(bytes).ok());
    let metadata = parsed(METADATA_JSON)
        .and_then(|bytes| serde_json::from_slice::<BundleMetadata>(bytes).ok());
    let (Some(record), Some(metadata)) = (record, metadata) else {
        return declined(format!(
            "{} holds no delta record ferry reads",
            delta.display()
        ));
    };
    if record.format != DELTA_FORMAT {
        return declined(format!("{DELTA_JSON} is of format {}", record.format));
    }
    let mut sources = vec![delta_source];
    let mut blobs: BTreeMap<Digest, (usize, u64, u64)> = delta_contents
        .blobs
        .iter()
        .map(|(digest, &(offset, size))| (digest.clone(), (0, offset, size)))
        .collect();
    let mut matched = vec![false; record.bases.len()];
    for file in bases {
        let Some((source, contents)) = read(file, false) else {
            return declined(format!(
                "{} is not laid out as ferry writes a bundle",
                file.display()
            ));
        };
        let bytes: u64 = source
            .files
            .iter()
            .map(|part| std::fs::metadata(part).map_or(0, |m| m.len()))
            .sum();
        let holds = |base: &BaseRecord| {
            base.bytes == bytes
                && base.blobs.iter().all(|blob| {
                    contents
                        .blobs
                        .get(&blob.digest)
                        .is_some_and(|&(_, size)| size == blob.size)
                })
        };
        let Some(index) = (0..record.bases.len()).find(|&i| !matched[i] && holds(&record.bases[i]))
        else {
            return declined(format!(
                "{} is not one of the delta's bases",
                file.display()
            ));
        };
        matched[index] = true;
        for blob in &record.bases[index].blobs {
            let (offset, size) = contents.blobs[&blob.digest];
            blobs.insert(blob.digest.clone(), (sources.len(), offset, size));
        }
        sources.push(source);
    }
    let unmatched =
        (0..record.bases.len()).find(|&i| !matched[i] && !record.bases[i].blobs.is_empty());
    if let Some(missing) = unmatched {
        return declined(format!(
            "base {} was not given",
            record.bases[missing].shown()
        ));
    }
    let documents: Documents = LEADING_DOCUMENTS
        .map(|name| {
            (
                name,
                delta_contents.documents.remove(name).unwrap_or_default(),
            )
        })
        .into();
    Quick::Done(Located {
        record,
        metadata,
        documents,
        sources,
        blobs,
    })
}

impl Located {
    /// The delta's record: the full bundle it stands for, and its bases.
    pub fn record(&self) -> &DeltaRecord {
        &self.record
    }

    /// The full bundle's `ferry.json`.
    pub fn metadata(&self) -> &BundleMetadata {
        &self.metadata
    }

    /// Every file read: the delta's, then the bases'.
    pub fn files(&self) -> Vec<PathBuf> {
        self.sources.iter().flat_map(|s| s.files.clone()).collect()
    }

    /// Copies every blob once into the full bundle at `path`, put in place only if it hashes to the
    /// sha256 the delta names.
    pub fn write(
        &self,
        path: &Path,
        split: Option<u64>,
        reporter: &dyn Reporter,
    ) -> Result<Quick<Merged>, MergeError> {
        let sizes: BTreeMap<Digest, u64> = self
            .blobs
            .iter()
            .map(|(digest, &(_, _, size))| (digest.clone(), size))
            .collect();
        let full = &self.record.bundle;
        let written = write_full(
            self,
            &self.documents,
            &sizes,
            &self.record,
            &self.files(),
            path,
            split,
            reporter,
        )?;
        Ok(match written {
            Ok(merged) => Quick::Done(merged),
            Err(actual) => Quick::Declined(format!(
                "the bundle copied hashes to {actual}, not to the {} the delta names",
                full.sha256
            )),
        })
    }
}

/// Blobs as the headers located them; not hashed one by one (see [`BlobSource::hashes_each_blob`]).
impl BlobSource for Located {
    fn open(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + '_>, TarballError> {
        let &(index, offset, _) = self
            .blobs
            .get(digest)
            .ok_or_else(|| TarballError::Changed {
                digest: digest.clone(),
                path: self.sources[0].whole.clone(),
            })?;
        let source = &self.sources[index];
        let reader = source
            .open_range(offset, size)
            .map_err(|error| TarballError::Read {
                path: source.place(offset).0,
                source: error,
            })?;
        Ok(Box::new(reader))
    }

    fn damaged(&self, digest: &Digest, _: Digest, _: u64) -> TarballError {
        let index = self.blobs.get(digest).map_or(0, |&(index, _, _)| index);
        TarballError::Changed {
            digest: digest.clone(),
            path: self.sources[index].whole.clone(),
        }
    }

    fn unreadable(&self, digest: &Digest, at: u64, error: std::io::Error) -> TarballError {
        let (index, offset) = self.blobs.get(digest).map_or((0, 0), |&(i, o, _)| (i, o));
        TarballError::Read {
            path: self.sources[index].place(offset.saturating_add(at)).0,
            source: error,
        }
    }

    fn hashes_each_blob(&self) -> bool {
        false
    }
}

/// Writes the full bundle `delta` (verified with every base) stands for at `path`.
pub fn merge(
    delta: &Verified,
    path: &Path,
    split: Option<u64>,
    reporter: &dyn Reporter,
) -> Result<Merged, MergeError> {
    let record = complete(delta)?;
    let written = write_full(
        &Union(delta),
        &record.documents,
        &sizes(delta),
        &record.record,
        &delta.source().files,
        path,
        split,
        reporter,
    )?;
    written.map_err(|actual| MergeError::Mismatch {
        delta: delta.bundle().to_path_buf(),
        expected: record.record.bundle.sha256.clone(),
        actual,
        ours: env!("CARGO_PKG_VERSION").to_string(),
        theirs: delta.metadata().ferry.version.clone(),
    })
}

/// Writes the full bundle `record` names from `source` at `path` (none of `inputs`), and puts it in
/// place if it hashes to the sha256 the record names; else returns what it hashed to, nothing written.
#[allow(clippy::too_many_arguments)]
fn write_full(
    source: &dyn BlobSource,
    documents: &Documents,
    sizes: &BTreeMap<Digest, u64>,
    record: &DeltaRecord,
    inputs: &[PathBuf],
    path: &Path,
    split: Option<u64>,
    reporter: &dyn Reporter,
) -> Result<Result<Merged, Digest>, MergeError> {
    check_output(inputs, path)?;
    let full = &record.bundle;
    reporter.phase(&format!(
        "writing {} ({} blobs, {} from the bases)",
        path.display(),
        sizes.len(),
        record
            .bases
            .iter()
            .map(|base| base.blobs.len())
            .sum::<usize>()
    ));
    let staged = write_entries(
        source,
        documents,
        sizes,
        path,
        &options(full, split),
        reporter,
    )?;
    if staged.sha256() != &full.sha256 {
        return Ok(Err(staged.sha256().clone()));
    }
    place(staged, record, path).map(Ok)
}

fn options(full: &FullBundle, split: Option<u64>) -> WriteOptions {
    WriteOptions {
        mtime: full.mtime,
        split,
        signer: None,
        // The full bundle is rebuilt alone: recovery data is for a transfer, and the delta had its own.
        recovery: None,
    }
}

/// Puts the merged bundle in place, with the full bundle's signature when the delta carries one and
/// the output keeps the name it signs.
fn place(staged: Staged, record: &DeltaRecord, path: &Path) -> Result<Merged, MergeError> {
    let full = &record.bundle;
    let signature = full
        .signature
        .as_ref()
        .filter(|_| file_name(path) == full.name)
        .map(|text| Recorded {
            checksum: crate::tarball::checksum_text(&full.sha256, &full.name),
            signature: text.clone(),
        });
    let signed = signature.is_some();
    let written = staged.place(signature.as_ref().map(|s| s as &dyn Signer))?;
    Ok(Merged { written, signed })
}

fn complete(delta: &Verified) -> Result<&VerifiedDelta, MergeError> {
    match delta.delta() {
        None => Err(MergeError::NotADelta(delta.bundle().to_path_buf())),
        Some(record) if !record.complete() => {
            Err(MergeError::Incomplete(delta.bundle().to_path_buf()))
        }
        Some(record) => Ok(record),
    }
}

/// Every blob of the full bundle, all of which a complete delta locates.
fn sizes(bundle: &Verified) -> BTreeMap<Digest, u64> {
    bundle
        .locations()
        .iter()
        .map(|(digest, &(_, size))| (digest.clone(), size))
        .collect()
}

/// The blobs of a delta and its bases, where verify found them.
struct Union<'a>(&'a Verified);

impl Union<'_> {
    /// The file that holds `offset` of the joined stream: the one to name when it cannot be read.
    fn file_at(&self, offset: u64) -> PathBuf {
        let files = &self.0.source().files;
        let mut start = 0u64;
        for file in files {
            let length = std::fs::metadata(file).map_or(0, |m| m.len());
            if offset < start.saturating_add(length) {
                return file.clone();
            }
            start = start.saturating_add(length);
        }
        files.last().cloned().unwrap_or_default()
    }
}

impl BlobSource for Union<'_> {
    fn open(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + '_>, TarballError> {
        let changed = |offset| TarballError::Changed {
            digest: digest.clone(),
            path: self.file_at(offset),
        };
        let (offset, verified) = self.0.location(digest).ok_or_else(|| changed(0))?;
        if verified != size {
            return Err(changed(offset));
        }
        let reader =
            self.0
                .source()
                .open_range(offset, size)
                .map_err(|source| TarballError::Read {
                    path: self.file_at(offset),
                    source,
                })?;
        Ok(Box::new(reader))
    }

    fn damaged(&self, digest: &Digest, _: Digest, _: u64) -> TarballError {
        let offset = self.0.location(digest).map_or(0, |(offset, _)| offset);
        TarballError::Changed {
            digest: digest.clone(),
            path: self.file_at(offset),
        }
    }

    fn unreadable(&self, digest: &Digest, at: u64, error: std::io::Error) -> TarballError {
        let offset = self.0.location(digest).map_or(0, |(offset, _)| offset);
        TarballError::Read {
            path: self.file_at(offset.saturating_add(at)),
            source: error,
        }
    }
}

/// The full bundle's signature, recorded in the delta when it was signed: it signs exactly the checksum
/// file of that bundle under its own name.
#[derive(Debug)]
struct Recorded {
    checksum: String,
    signature: String,
}

impl Signer for Recorded {
    fn signature(&self, checksum_file: &[u8]) -> io::Result<String> {
        if checksum_file != self.checksum.as_bytes() {
            return Err(io::Error::other(
                "the signature recorded in the delta is for another checksum file",
            ));
        }
        Ok(self.signature.clone())
    }

    fn fingerprint(&self) -> String {
        "the delta's signer".into()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::feed::Archive;
    use super::*;
    use crate::cache::BlobStore;
    use crate::catalog::Catalogs;
    use crate::progress::Silent;
    use crate::tarball::delta::BundleDescription;
    use crate::tarball::{write_bundle, write_delta};
    use crate::testutil::{intact_images, loose_metadata};
    use crate::verify::{verify, Report, VerifyOptions};

    /// A connected side: a cache, and bundles and deltas of images written from it.
    struct Site {
        dir: tempfile::TempDir,
        store: BlobStore,
    }

    impl Site {
        fn new() -> Site {
            let dir = tempfile::tempdir().unwrap();
            let store = BlobStore::open(&dir.path().join("cache")).unwrap();
            Site { dir, store }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn bundle(&self, name: &str, images: &[&str]) -> PathBuf {
            let images = intact_images(&self.store, images, &["linux/amd64"]);
            let path = self.path(name);
            let options = WriteOptions::default();
            write_bundle(
                &self.store,
                &images,
                &loose_metadata(&images),
                &path,
                &options,
                &Silent,
            )
            .unwrap();
            path
        }

        fn delta(&self, name: &str, images: &[&str], bases: &[&Path]) -> PathBuf {
            let bases: Vec<BundleDescription> =
                bases.iter().map(|b| check(b, &[]).describe()).collect();
            self.delta_of(name, images, &bases)
        }

        fn delta_of(&self, name: &str, images: &[&str], bases: &[BundleDescription]) -> PathBuf {
            let images = intact_images(&self.store, images, &["linux/amd64"]);
            let path = self.path(name);
            write_delta(
                &self.store,
                &images,
                &loose_metadata(&images),
                bases,
                "full.tar",
                &path,
                &WriteOptions::default(),
                &Silent,
            )
            .unwrap();
            path
        }
    }

    fn check(path: &Path, bases: &[&Path]) -> Report {
        let options = VerifyOptions {
            bases: bases.iter().map(|b| b.to_path_buf()).collect(),
            ..Default::default()
        };
        verify(path, &options, &Catalogs::load(&[]).unwrap()).unwrap()
    }

    /// A tar's entries, by name, with their bytes.
    fn entries(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut archive = tar::Archive::new(tar);
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (entry.path().unwrap().to_string_lossy().into_owned(), data)
            })
            .collect()
    }

    fn blobs_in(path: &Path) -> Vec<Digest> {
        check(path, &[]).locations.keys().cloned().collect()
    }

    /// The delta carries what the base lacks and every manifest and config; merged with the base it is the
    /// bundle written directly, byte for byte, and so is what load is fed.
    #[test]
    fn a_merged_delta_is_the_direct_bundle_byte_for_byte() {
        let site = Site::new();
        let base = site.bundle("base.tar", &["quay.io/a/x:1", "quay.io/a/y:1"]);
        let direct = site.bundle("direct.tar", &["quay.io/a/y:1", "quay.io/a/z:1"]);
        let delta = site.delta("delta.tar", &["quay.io/a/y:1", "quay.io/a/z:1"], &[&base]);
        let in_base = blobs_in(&base);
        let layer_of_y = &check(&direct, &[]).images[0].layers[0];
        assert!(in_base.contains(layer_of_y));
        let expected: Vec<Digest> = blobs_in(&direct)
            .into_iter()
            .filter(|digest| digest != layer_of_y)
            .collect();
        assert_eq!(
            blobs_in(&delta),
            expected,
            "all but the layer the base holds"
        );

        let alone = check(&delta, &[]);
        assert!(alone.intact(), "{:?}", alone.problems);
        let listed = alone.delta.as_ref().unwrap();
        assert_eq!((listed.bases[0].blobs, &listed.bases[0].file), (1, &None));
        let joined = check(&delta, &[&base]).into_verified().unwrap();
        let merged = site.path("merged.tar");
        let done = merge(&joined, &merged, None, &Silent).unwrap();
        let direct_bytes = std::fs::read(&direct).unwrap();
        assert_eq!(std::fs::read(&merged).unwrap(), direct_bytes);
        assert_eq!(done.written.sha256, Digest::of(&direct_bytes));
        assert!(!done.signed);
        // What load feeds: every entry of the direct bundle, the delta's own record not among them.
        let archive = Archive::whole(&joined);
        let fed = archive.write(joined.source(), Vec::new()).ok().unwrap();
        assert_eq!(fed.len() as u64, archive.size());
        assert_eq!(entries(&fed), entries(&direct_bytes));
        let refused = merge(&joined, &base, None, &Silent).unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "-o {}: that is {}, one of the files merged; write the bundle elsewhere",
                base.display(),
                base.display()
            )
        );
    }

    /// The quick way: headers read, each blob copied once, the output proven by the sha256 the delta
    /// names; split too. A base changed in place (its size kept), a file that is no base and a base not
    /// given make it decline, saying why, with nothing written.
    #[test]
    fn the_quick_merge_is_the_direct_bundle_or_declines_with_nothing_written() {
        let site = Site::new();
        let base = site.bundle("base.tar", &["quay.io/a/x:1", "quay.io/a/y:1"]);
        let direct = site.bundle("direct.tar", &["quay.io/a/y:1", "quay.io/a/z:1"]);
        let delta = site.delta("delta.tar", &["quay.io/a/y:1", "quay.io/a/z:1"], &[&base]);
        let quick = |bases: &[PathBuf], out: &Path, split| match locate(&delta, bases) {
            Quick::Done(located) => match located.write(out, split, &Silent).unwrap() {
                Quick::Done(merged) => Ok(merged),
                Quick::Declined(reason) => Err(reason),
            },
            Quick::Declined(reason) => Err(reason),
        };
        let merged = site.path("merged.tar");
        let done = quick(std::slice::from_ref(&base), &merged, None).unwrap();
        let direct_bytes = std::fs::read(&direct).unwrap();
        assert_eq!(std::fs::read(&merged).unwrap(), direct_bytes);
        assert_eq!(done.written.sha256, Digest::of(&direct_bytes));
        let parts = site.path("parts.tar");
        quick(std::slice::from_ref(&base), &parts, Some(2048)).unwrap();
        let mut joined = Vec::new();
        for index in 0.. {
            match std::fs::read(site.path(&format!("parts.tar.part-{index:03}"))) {
                Ok(bytes) => joined.extend(bytes),
                Err(_) => break,
            }
        }
        assert_eq!(joined, direct_bytes);

        // The layer of y, which the delta takes from the base: one bit flipped in place.
        let layer = &check(&direct, &[]).images[0].layers[0];
        let mut bytes = std::fs::read(&base).unwrap();
        let name = format!("blobs/sha256/{}", layer.hex());
        let header_of = |tar: &[u8]| {
            // The entry's header: manifest.json names the same path, not at a block's start.
            (0..tar.len())
                .step_by(512)
                .find(|&at| tar[at..].starts_with(name.as_bytes()))
                .unwrap()
        };
        let at = header_of(&bytes);
        bytes[at + 512] ^= 1;
        let tampered = site.path("tampered.tar");
        std::fs::write(&tampered, &bytes).unwrap();
        let out = site.path("out.tar");
        let full_sha = Digest::of(&direct_bytes);
        let mut wrong = direct_bytes.clone();
        let at = header_of(&wrong);
        wrong[at + 512] ^= 1;
        assert_eq!(
            quick(&[tampered], &out, None).unwrap_err(),
            format!(
                "the bundle copied hashes to {}, not to the {full_sha} the delta names",
                Digest::of(&wrong)
            )
        );
        let other = site.bundle("other.tar", &["quay.io/a/y:1"]);
        assert_eq!(
            quick(std::slice::from_ref(&other), &out, None).unwrap_err(),
            format!("{} is not one of the delta's bases", other.display())
        );
        let base_sha = Digest::of(&std::fs::read(&base).unwrap());
        assert_eq!(
            quick(&[], &out, None).unwrap_err(),
            format!("base base.tar (sha256 {}) was not given", base_sha.hex())
        );
        let left: Vec<String> = std::fs::read_dir(site.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("out") || name.starts_with(".out"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    /// Several bases, one of them a delta itself: each blob comes from the file that holds it.
    #[test]
    fn a_delta_of_a_delta_and_its_base_merges_too() {
        let site = Site::new();
        let base = site.bundle("base.tar", &["quay.io/a/x:1", "quay.io/a/y:1"]);
        let first = site.delta("first.tar", &["quay.io/a/y:1", "quay.io/a/z:1"], &[&base]);
        let direct = site.bundle("direct.tar", &["quay.io/a/z:1", "quay.io/a/x:1"]);
        let second = site.delta(
            "second.tar",
            &["quay.io/a/z:1", "quay.io/a/x:1"],
            &[&base, &first],
        );
        let report = check(&second, &[&first, &base]);
        let bases = &report.delta.as_ref().unwrap().bases;
        assert_eq!(
            bases
                .iter()
                .map(|b| (b.blobs, b.file.clone()))
                .collect::<Vec<_>>(),
            [(1, Some(base.clone())), (1, Some(first.clone()))],
            "x's layer from the base, z's from the first delta"
        );
        let merged = site.path("merged.tar");
        merge(&report.into_verified().unwrap(), &merged, None, &Silent).unwrap();
        assert_eq!(
            std::fs::read(&merged).unwrap(),
            std::fs::read(&direct).unwrap()
        );
    }

    /// A base that is not the file the delta names is refused by name; so is a delta claiming a blob from
    /// a base that lacks it, naming the blob, the image and the base; and a whole bundle takes no base.
    #[test]
    fn a_wrong_base_and_a_false_claim_are_refused_by_name() {
        let site = Site::new();
        let base = site.bundle("base.tar", &["quay.io/a/x:1"]);
        let other = site.bundle("other.tar", &["quay.io/a/w:1"]);
        let delta = site.delta("delta.tar", &["quay.io/a/x:1", "quay.io/a/z:1"], &[&base]);
        let base_sha = Digest::of(&std::fs::read(&base).unwrap());
        let wrong = check(&delta, &[&other]);
        assert_eq!(
            wrong.problems,
            [
                format!(
                    "{} is not a base of this delta: its sha256 is {}, and the delta was made from \
                     base.tar (sha256 {})",
                    other.display(),
                    Digest::of(&std::fs::read(&other).unwrap()).hex(),
                    base_sha.hex()
                ),
                format!(
                    "the delta expects 1 blob(s) (34 B) from base base.tar (sha256 {}), which was \
                     not given",
                    base_sha.hex()
                )
            ]
        );
        assert!(!wrong.intact());

        // A description of the base that claims a blob it does not hold: the delta leaves it out.
        let mut claimed = check(&base, &[]).describe();
        let images = intact_images(&site.store, &["quay.io/a/z:1"], &["linux/amd64"]);
        let z_layer = images[0].layers[0].clone();
        claimed.blobs.push(crate::tarball::delta::HeldBlob {
            digest: z_layer.digest.clone(),
            size: z_layer.size,
        });
        let false_claim = site.delta_of("claim.tar", &["quay.io/a/z:1"], &[claimed]);
        let report = check(&false_claim, &[&base]);
        assert_eq!(
            report.problems,
            [format!(
                "blob {} of quay.io/a/z:1 is expected from base base.tar (sha256 {}) ({}), which \
                 does not hold it",
                z_layer.digest,
                base_sha.hex(),
                base.display()
            )]
        );
        assert_eq!(
            report.images[0].problems,
            [format!("layer {} is missing", z_layer.digest)]
        );

        let junk = site.path("junk.tar");
        std::fs::write(&junk, vec![b'x'; 2048]).unwrap();
        assert_eq!(
            check(&delta, &[&junk]).problems[0],
            format!(
                "base {} is not a ferry bundle, or is damaged at its start: a header checksum \
                 that is not a number at byte 0",
                junk.display()
            )
        );

        let whole = check(&base, &[&other]);
        assert_eq!(
            whole.problems,
            [format!(
                "{} is a whole bundle, not a delta: it takes no base",
                base.display()
            )]
        );
    }
}
