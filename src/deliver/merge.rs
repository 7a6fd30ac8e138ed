//! The full bundle a delta stands for, rebuilt from the delta and its bases once they are verified
//! together: the same documents and blobs in the same order under the same headers, so the same bytes
//! `ferry bundle` wrote on the connected side. Every blob is hashed again as it passes (the files may
//! have changed since they were verified), and the output is hashed as it is written: a bundle whose
//! sha256 is not the one the delta names is never put in place.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::progress::Reporter;
use crate::tarball::{
    file_name, write_entries, BlobSource, Signer, TarballError, WriteOptions, Written,
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

/// Writes the full bundle `delta` (verified with every base) stands for at `path`.
pub fn merge(
    delta: &Verified,
    path: &Path,
    split: Option<u64>,
    reporter: &dyn Reporter,
) -> Result<Merged, MergeError> {
    let record = complete(delta)?;
    for input in &delta.source().files {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        if same(input, path) {
            return Err(MergeError::OverInput {
                output: path.to_path_buf(),
                input: input.clone(),
            });
        }
    }
    let full = &record.record.bundle;
    let options = WriteOptions {
        mtime: full.mtime,
        split,
        signer: None,
        // The full bundle is rebuilt alone: recovery data is for a transfer, and the delta had its own.
        recovery: None,
    };
    reporter.phase(&format!(
        "writing {} ({} blobs, {} from the bases)",
        path.display(),
        delta.locations().len(),
        record
            .record
            .bases
            .iter()
            .map(|base| base.blobs.len())
            .sum::<usize>()
    ));
    let staged = write_entries(
        &Union(delta),
        &record.documents,
        &sizes(delta),
        path,
        &options,
        reporter,
    )?;
    if staged.sha256() != &full.sha256 {
        return Err(MergeError::Mismatch {
            delta: delta.bundle().to_path_buf(),
            expected: full.sha256.clone(),
            actual: staged.sha256().clone(),
            ours: env!("CARGO_PKG_VERSION").to_string(),
            theirs: delta.metadata().ferry.version.clone(),
        });
    }
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
