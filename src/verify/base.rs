//! What `ferry bundle --since BASE` needs to know of a base bundle, read from its headers and documents
//! alone: every blob it holds, the images that reference them, and its sha256 as `BASE.sha256` names it.
//! That file was written with the bundle, every blob hashed as it was written; the proof that BASE is
//! still that file (one SHA-256 pass over it, against `BASE.sha256`) runs on a thread of its own while
//! the new images are fetched and the delta is written, and the delta is placed only once it holds.
//! A base without a `.sha256`, a delta, or anything not laid out as ferry writes a bundle is verified
//! whole before anything is fetched instead ([`super::verify`]).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use super::stream::{Contents, SeenBlob};
use super::{checksum, read, Checksum, Report, VerifyError};
use crate::digest::Digest;
use crate::tarball::delta::BundleDescription;
use crate::tarball::headers::{self, Parts};
use crate::tarball::layout::DELTA_JSON;
use crate::tarball::read::Source;

/// The proof under way that a base is the file its `.sha256` names.
#[derive(Debug)]
pub struct BaseProof {
    path: PathBuf,
    sums: PathBuf,
    sha256: Digest,
    /// Taken by the first [`BaseProof::confirm`].
    reading: Mutex<Option<JoinHandle<Result<Report, VerifyError>>>>,
}

/// A base that is not the file its `.sha256` named when the delta was begun.
#[derive(Debug, thiserror::Error)]
#[error("--since {}: the file hashes to {actual}, not to the {expected} that {} names: it was damaged or changed since it was written, and no delta is written against it (`ferry verify {}` says where)", .path.display(), .sums.display(), .path.display())]
pub struct BaseChanged {
    pub path: PathBuf,
    pub sums: PathBuf,
    pub expected: Digest,
    pub actual: Digest,
}

#[derive(Debug, thiserror::Error)]
pub enum BaseProofError {
    #[error(transparent)]
    Changed(#[from] BaseChanged),
    #[error("--since {}: {} changed or was removed while the base was read; no delta is written against it", .path.display(), .sums.display())]
    SumsChanged { path: PathBuf, sums: PathBuf },
    #[error("--since {}: {problem}; no delta is written against it", .path.display())]
    Damaged { path: PathBuf, problem: String },
    #[error(transparent)]
    Unreadable(#[from] VerifyError),
}

/// Describes the bundle at `path` for a delta built against it and starts the proof of it; `None` when
/// it is to be verified whole first: it has no `.sha256`, is a delta, or is not laid out as ferry writes
/// a bundle, or its documents do not check out (the whole verification then says what is wrong).
pub fn describe_base(path: &Path) -> Option<(BundleDescription, BaseProof)> {
    let source = Source::locate(path).ok()?;
    let (sums, sha256) = checksum::claimed(&source)?;
    let found = headers::contents(&source, true).ok()??;
    if found.documents.contains_key(DELTA_JSON) {
        return None;
    }
    let parts = Parts::open(&source).ok()?;
    let mut contents = Contents {
        documents: found
            .documents
            .into_iter()
            .map(|(name, bytes)| (name.to_string(), bytes))
            .collect(),
        ..Contents::default()
    };
    // Manifests and configs are read and hashed, as the graph check needs them; every other blob is
    // vouched for by the `.sha256` until the proof holds.
    for (digest, &(offset, size)) in &found.blobs {
        let mut head = [0u8; 1];
        let mut kept = None;
        if size > 0 {
            parts.read_exact_at(&mut head, offset).ok()?;
        }
        if contents.keeps(&head, size) {
            let mut bytes = vec![0; usize::try_from(size).ok()?];
            parts.read_exact_at(&mut bytes, offset).ok()?;
            if Digest::of(&bytes) != *digest {
                return None;
            }
            contents.kept_total += size;
            kept = Some(bytes);
        }
        contents.locations.insert(digest.clone(), (offset, size));
        contents
            .blobs
            .insert(digest.clone(), SeenBlob::vouched(digest, size, kept));
    }
    let bytes = source
        .files
        .iter()
        .map(|part| std::fs::metadata(part).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()
        .ok()?;
    let mut report = Report {
        bundle: path.to_path_buf(),
        bytes,
        sha256: sha256.clone(),
        checksum: Checksum::Absent,
        damaged_recovery_files: Vec::new(),
        recovery: None,
        images: Vec::new(),
        problems: Vec::new(),
        missing: Vec::new(),
        blobs: contents.blobs.len(),
        metadata: None,
        delta: None,
        locations: std::mem::take(&mut contents.locations),
        documents: Default::default(),
        source,
    };
    contents.cross_check(&mut report, false);
    if !report.intact() {
        return None;
    }
    let reading = {
        let path = path.to_path_buf();
        std::thread::spawn(move || read(&path, false, Some(&BTreeSet::new())).map(|(r, _)| r))
    };
    Some((
        report.describe(),
        BaseProof {
            path: path.to_path_buf(),
            sums,
            sha256,
            reading: Mutex::new(Some(reading)),
        },
    ))
}

impl BaseProof {
    /// Waits for the proof: the whole file read as a bundle, hashed to the sha256 its `.sha256` named
    /// when it was described, and every checksum file beside it agreeing.
    pub fn confirm(&self) -> Result<(), BaseProofError> {
        let reading = match self.reading.lock() {
            Ok(mut reading) => reading.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(reading) = reading else {
            // Confirmed already, for another bundle of the same build.
            return Ok(());
        };
        let report = reading.join().unwrap_or_else(|_| {
            Err(VerifyError::Read(crate::tarball::read::ReadError::Open {
                path: self.path.clone(),
                source: std::io::Error::other("the thread reading it stopped"),
            }))
        })?;
        if report.sha256 != self.sha256 {
            return Err(BaseChanged {
                path: self.path.clone(),
                sums: self.sums.clone(),
                expected: self.sha256.clone(),
                actual: report.sha256,
            }
            .into());
        }
        if let Some(problem) = report.problems.into_iter().next() {
            return Err(BaseProofError::Damaged {
                path: self.path.clone(),
                problem,
            });
        }
        match report.checksum {
            Checksum::Verified { .. } => Ok(()),
            _ => Err(BaseProofError::SumsChanged {
                path: self.path.clone(),
                sums: self.sums.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;
    use crate::testutil::intact_bundle;

    fn verified_whole(path: &Path) -> BundleDescription {
        let catalogs = Catalogs::load(&[]).unwrap();
        super::super::verify(path, &Default::default(), &catalogs)
            .unwrap()
            .describe()
    }

    /// From its headers and documents, a base is described exactly as verifying it whole describes it,
    /// and the proof holds.
    #[test]
    fn a_base_is_described_from_its_headers_as_verify_describes_it() {
        let dir = tempfile::tempdir().unwrap();
        let platforms = ["linux/amd64", "linux/arm64"];
        let (_, path) = intact_bundle(
            dir.path(),
            &["quay.io/a/b:1", "huawei-csi:4.8.0"],
            &platforms,
        );
        let (description, proof) = describe_base(&path).unwrap();
        assert_eq!(description, verified_whole(&path));
        proof.confirm().unwrap();
        // Once proved, for every bundle of the build that takes it.
        proof.confirm().unwrap();
    }

    /// Without the `.sha256` that vouches for its blobs, or as a delta, a base is left to be verified whole.
    #[test]
    fn without_its_sha256_a_base_is_verified_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        std::fs::remove_file(dir.path().join("b.tar.sha256")).unwrap();
        assert!(describe_base(&path).is_none());
    }

    /// A layer changed in place is not read when the base is described; the proof finds it, and says which
    /// file, against which `.sha256`, and what to run.
    #[test]
    fn a_base_that_is_not_the_file_its_sha256_names_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        let claimed = std::fs::read_to_string(dir.path().join("b.tar.sha256")).unwrap();
        let layer = &images[0].layers[0].digest;
        let (offset, _) = crate::testutil::verified(&path).location(layer).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 1;
        std::fs::write(&path, &bytes).unwrap();

        let (_, proof) = describe_base(&path).unwrap();
        let refused = proof.confirm().unwrap_err();
        assert_eq!(
            refused.to_string(),
            format!(
                "--since {}: the file hashes to {}, not to the sha256:{} that {} names: it was damaged or changed since it was written, and no delta is written against it (`ferry verify {}` says where)",
                path.display(),
                Digest::of(&bytes),
                &claimed[..64],
                dir.path().join("b.tar.sha256").display(),
                path.display()
            )
        );
    }
}
