//! What `ferry bundle --since BASE` needs to know of a base bundle, read from its headers and documents
//! alone: every blob it holds, the images that reference them, and its sha256 as `BASE.sha256` names it.
//! That file was written with the bundle, every blob hashed as it was written; the proof that BASE is
//! still that file (one SHA-256 pass over it, against `BASE.sha256`) runs on a thread of its own while
//! the new images are fetched and the delta is written, and the delta is placed only once it holds.
//! A base without a `.sha256`, a delta, or anything not laid out as ferry writes a bundle is verified
//! whole before anything is fetched instead ([`super::verify`]).

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread::JoinHandle;

use super::checksum::{self, check_sums};
use super::stream::{Contents, SeenBlob};
use super::{Checksum, Report};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::interrupt::Interrupted;
use crate::progress::Reporter;
use crate::tarball::delta::BundleDescription;
use crate::tarball::headers::{self, Parts};
use crate::tarball::layout::DELTA_JSON;
use crate::tarball::read::Source;

/// The proof under way that a base is the file its `.sha256` names: the files the description was read
/// from, hashed through the same open descriptors, so that what was described is what is proved.
#[derive(Debug)]
pub struct BaseProof {
    path: PathBuf,
    source: Source,
    sums: PathBuf,
    sha256: Digest,
    /// Taken by the first [`BaseProof::confirm`].
    hashing: Mutex<Option<JoinHandle<std::io::Result<Hashes>>>>,
}

/// Each part's sha256 and the whole's.
type Hashes = (Vec<Digest>, Digest);

#[derive(Debug, thiserror::Error)]
pub enum BaseProofError {
    #[error("--since {}: the file hashes to {actual}, not to the {expected} that {} names: it was damaged or changed since it was written, and no delta is written against it (`ferry verify {}` says where)", .path.display(), .sums.display(), .path.display())]
    Changed {
        path: PathBuf,
        sums: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("--since {}: {}; no delta is written against it", .path.display(), disagreement(.checksum))]
    Checksum { path: PathBuf, checksum: Checksum },
    #[error("--since {}: cannot read the base to the end: {source}; no delta is written against it", .path.display())]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

/// What a checksum file beside a base said against it, in words.
fn disagreement(checksum: &Checksum) -> String {
    match checksum {
        Checksum::Mismatch {
            file,
            name,
            expected,
            actual,
        } => format!(
            "{} disagrees for {name}: expected {expected}, read {actual}",
            file.display()
        ),
        Checksum::Unreadable { file, reason } => {
            format!("{} cannot be read: {reason}", file.display())
        }
        Checksum::Absent | Checksum::Verified { .. } => {
            "its .sha256 was removed while the base was read".into()
        }
    }
}

/// Describes the bundle at `path` for a delta built against it and starts the proof of it; `None` when
/// it is to be verified whole first: it has no `.sha256`, is a delta, or is not laid out as ferry writes
/// a bundle, or its documents do not check out (the whole verification then says what is wrong).
pub fn describe_from_headers(path: &Path) -> Option<(BundleDescription, BaseProof)> {
    let source = Source::locate(path).ok()?;
    let (sums, sha256) = checksum::claimed(&source)?;
    if source.is_gzipped().ok()? {
        return None;
    }
    // The headers, the documents, the manifests and configs and the proof are all read through these.
    let parts = Parts::open(&source).ok()?;
    let found = headers::contents_of(&parts, true).ok()??;
    if found.documents.contains_key(DELTA_JSON) {
        return None;
    }
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
    let hashing = std::thread::spawn(move || hash(&parts));
    Some((
        report.describe(),
        BaseProof {
            path: path.to_path_buf(),
            source: report.source,
            sums,
            sha256,
            hashing: Mutex::new(Some(hashing)),
        },
    ))
}

/// The bytes of a base read at a time for its proof.
const PROOF_BLOCK: usize = 1 << 20;

/// Each part's sha256 and the whole's, read through the descriptors the description was read from, on
/// this one thread into one buffer (the description's thread fetches and writes meanwhile). A bundle of
/// one part is hashed once: its part's sha256 is the whole's.
fn hash(parts: &Parts) -> std::io::Result<Hashes> {
    let split = parts.files().count() > 1;
    let (mut whole, mut each) = (Sha256::new(), Vec::new());
    let mut block = vec![0; PROOF_BLOCK];
    for mut file in parts.files() {
        let mut part = Sha256::new();
        file.seek(SeekFrom::Start(0))?;
        loop {
            crate::interrupt::check()?;
            let read = crate::io::read_full(&mut file, &mut block)?;
            if read == 0 {
                break;
            }
            whole.update(&block[..read]);
            if split {
                part.update(&block[..read]);
            }
        }
        each.push(part);
    }
    let whole = Digest::from_hasher(whole);
    let each = match split {
        true => each.into_iter().map(Digest::from_hasher).collect(),
        false => vec![whole.clone()],
    };
    Ok((each, whole))
}

impl BaseProof {
    /// Waits for the proof (Ctrl-C heard): the files described hash to the sha256 their `.sha256` named,
    /// and every checksum file beside them agrees. `reporter` hears that it is awaited, if it is.
    pub fn confirm(&self, reporter: &dyn Reporter) -> Result<(), BaseProofError> {
        let hashing = match self.hashing.lock() {
            Ok(mut hashing) => hashing.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        let Some(hashing) = hashing else {
            // Confirmed already, for another bundle of the same build.
            return Ok(());
        };
        if !hashing.is_finished() {
            reporter.phase(&format!(
                "checking {} against {}",
                self.path.display(),
                self.sums.display()
            ));
        }
        while !hashing.is_finished() {
            if let Some(stop) = crate::interrupt::pending() {
                return Err(stop.into());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let (parts, whole) = hashing
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .map_err(|source| match crate::interrupt::pending() {
                Some(stop) => stop.into(),
                None => BaseProofError::Unreadable {
                    path: self.path.clone(),
                    source,
                },
            })?;
        if whole != self.sha256 {
            return Err(BaseProofError::Changed {
                path: self.path.clone(),
                sums: self.sums.clone(),
                expected: self.sha256.clone(),
                actual: whole,
            });
        }
        match check_sums(&self.source, &parts, &whole).0 {
            Checksum::Verified { .. } => Ok(()),
            checksum => Err(BaseProofError::Checksum {
                path: self.path.clone(),
                checksum,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;
    use crate::progress::Silent;
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
        let (description, proof) = describe_from_headers(&path).unwrap();
        assert_eq!(description, verified_whole(&path));
        proof.confirm(&Silent).unwrap();
        // Once proved, for every bundle of the build that takes it.
        proof.confirm(&Silent).unwrap();
    }

    /// Without the `.sha256` that vouches for its blobs, or as a delta, a base is left to be verified whole.
    #[test]
    fn without_its_sha256_a_base_is_verified_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        std::fs::remove_file(dir.path().join("b.tar.sha256")).unwrap();
        assert!(describe_from_headers(&path).is_none());
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

        let (_, proof) = describe_from_headers(&path).unwrap();
        let refused = proof.confirm(&Silent).unwrap_err();
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

    /// A bundle of two images on two platforms cut in 1000-byte parts (with `.parts.sha256`), and with
    /// recovery data listed in its `.sha256`: the path of its first part.
    fn split_bundle(dir: &Path, recovery: bool) -> PathBuf {
        use crate::tarball::{write_bundle, WriteOptions};
        let store = crate::cache::BlobStore::open(&dir.join("cache")).unwrap();
        let platforms = ["linux/amd64", "linux/arm64"];
        let images = crate::testutil::intact_images(
            &store,
            &["quay.io/a/b:1", "huawei-csi:4.8.0"],
            &platforms,
        );
        let carried: Vec<crate::image::Platform> =
            platforms.iter().map(|p| p.parse().unwrap()).collect();
        let options = WriteOptions {
            split: Some(1000),
            recovery: recovery.then(|| "5%".parse().unwrap()),
            ..WriteOptions::default()
        };
        let metadata = crate::testutil::metadata(&images, &carried);
        let path = dir.join("b.tar");
        write_bundle(&store, &images, &metadata, &path, &options, &Silent).unwrap();
        dir.join("b.tar.part-000")
    }

    /// Given as its first part, a split base (with or without recovery data) is described as verifying
    /// it whole describes it, and proved against both its checksum files.
    #[test]
    fn a_split_base_is_described_and_proved_part_by_part() {
        for recovery in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let first = split_bundle(dir.path(), recovery);
            let (description, proof) = describe_from_headers(&first).unwrap();
            assert_eq!(description, verified_whole(&first));
            proof.confirm(&Silent).unwrap();
        }
    }

    /// A `.parts.sha256` that disagrees is the one named, with what it expected.
    #[test]
    fn the_checksum_file_that_disagrees_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let first = split_bundle(dir.path(), false);
        let sums = dir.path().join("b.tar.parts.sha256");
        let text = std::fs::read_to_string(&sums).unwrap();
        let without_first: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
        std::fs::write(&sums, without_first).unwrap();
        let (_, proof) = describe_from_headers(&first).unwrap();
        assert_eq!(
            proof.confirm(&Silent).unwrap_err().to_string(),
            format!(
                "--since {}: {} disagrees for b.tar.part-000: expected a line for it, read none; no delta is written against it",
                first.display(),
                sums.display()
            )
        );
    }

    /// What is proved is the file that was described, through the same descriptors: a new bundle renamed
    /// over the base after its new `.sha256` (as a publisher might) does not pass for the one described.
    #[test]
    fn the_file_described_is_the_file_proved() {
        let dir = tempfile::tempdir().unwrap();
        let (_, path) = intact_bundle(dir.path(), &["quay.io/a/b:1"], &["linux/amd64"]);
        let described_sha256 = Digest::of(&std::fs::read(&path).unwrap());
        let other = tempfile::tempdir().unwrap();
        let (_, newer) = intact_bundle(other.path(), &["quay.io/a/c:2"], &["linux/amd64"]);
        let sums = dir.path().join("b.tar.sha256");
        std::fs::copy(other.path().join("b.tar.sha256"), &sums).unwrap();
        let (_, proof) = describe_from_headers(&path).unwrap();
        std::fs::rename(&newer, &path).unwrap();
        assert_eq!(
            proof.confirm(&Silent).unwrap_err().to_string(),
            format!(
                "--since {}: the file hashes to {described_sha256}, not to the {} that {} names: it was damaged or changed since it was written, and no delta is written against it (`ferry verify {}` says where)",
                path.display(),
                Digest::of(&std::fs::read(&path).unwrap()),
                sums.display(),
                path.display()
            )
        );
    }
}
