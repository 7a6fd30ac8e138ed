//! The repair stage: a damaged bundle rebuilt from the recovery data beside it, and accepted only if the
//! result matches the bundle's `.sha256` and `.parts.sha256` (and, when a key must vouch for the bundle,
//! only if `.sha256` is signed by it): a forged recovery file cannot repair a bundle into another one.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::recovery::{self, RecoveryError, RecoverySet};
use crate::tarball::{file_name, sibling};
use crate::trust::allowed_signers::AllowedSigners;
use crate::trust::signature;
use crate::verify::checksum_lines;

/// The largest checksum or signature file read.
const MAX_SIDE_FILE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} cannot vouch for the repair: {reason}; nothing was repaired", .checksum_file.display())]
    Untrusted {
        checksum_file: PathBuf,
        reason: String,
    },
    #[error("the repaired {name} does not match {}: sha256 {actual}, not {expected}; the recovery data was not made from this bundle, or was forged, and nothing was replaced", .checksum_file.display())]
    Rejected {
        checksum_file: PathBuf,
        name: String,
        expected: Digest,
        actual: Digest,
    },
}

/// What a repair did.
#[derive(Debug)]
pub enum Outcome {
    /// Every block matched the recovery data.
    Intact { blocks: usize },
    Repaired {
        files: Vec<PathBuf>,
        damaged_blocks: usize,
        recovery_blocks: usize,
        /// The checksum files the result matched; none beside the bundle means the recovery data's own
        /// MD5s alone vouched for it.
        checked_against: Vec<PathBuf>,
    },
}

/// Repairs the bundle at `path` (or the split bundle whose first part it is) from its recovery data.
/// With `signers`, `PATH.sha256` must carry a signature they accept before anything is rebuilt.
pub fn repair_bundle(
    path: &Path,
    signers: Option<&AllowedSigners>,
) -> Result<Outcome, RepairError> {
    let whole = whole_of(path);
    let set = RecoverySet::load(&whole)?;
    let damage = set.check()?;
    if damage.is_intact() {
        return Ok(Outcome::Intact {
            blocks: set.source_slices(),
        });
    }
    let expected = expected_sums(&whole, signers)?;
    if !damage.is_repairable() {
        return Err(RecoveryError::NotEnough {
            bundle: path.to_path_buf(),
            damaged: damage.damaged_slices(),
            available: damage.recovery_slices,
        }
        .into());
    }
    let rebuilt = recovery::repair(&set, &damage)?;
    // The bundle's files in order, each read from its temporary if it was rebuilt.
    let mut files: Vec<(PathBuf, PathBuf)> = set
        .source_names()
        .map(|name| {
            let path = whole.with_file_name(name);
            let from = rebuilt
                .files()
                .find(|(rebuilt, _)| file_name(rebuilt) == name)
                .map_or(path.clone(), |(_, temporary)| temporary.to_path_buf());
            (path, from)
        })
        .collect();
    files.sort();
    let mut whole_hash = Sha256::new();
    let mut actual: Vec<(String, Digest)> = Vec::new();
    for (path, from) in &files {
        let mut part = Sha256::new();
        hash_into(from, &mut [&mut part, &mut whole_hash])?;
        actual.push((file_name(path), Digest::from_hasher(part)));
    }
    actual.push((file_name(&whole), Digest::from_hasher(whole_hash)));
    for (checksum_file, lines) in &expected {
        for (name, digest) in lines {
            match actual.iter().find(|(n, _)| n == name) {
                Some((_, got)) if got != digest => {
                    return Err(RepairError::Rejected {
                        checksum_file: checksum_file.clone(),
                        name: name.clone(),
                        expected: digest.clone(),
                        actual: got.clone(),
                    })
                }
                _ => {}
            }
        }
    }
    let damaged_blocks = rebuilt.slices();
    let repaired = rebuilt.commit()?;
    Ok(Outcome::Repaired {
        files: repaired.files,
        damaged_blocks,
        recovery_blocks: damage.recovery_slices,
        checked_against: expected.into_iter().map(|(file, _)| file).collect(),
    })
}

/// `x.tar.part-000` → `x.tar`: what a split bundle's recovery and checksum files are named after.
fn whole_of(path: &Path) -> PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    PathBuf::from(std::ffi::OsStr::from_bytes(
        bytes.strip_suffix(b".part-000").unwrap_or(bytes),
    ))
}

/// A checksum file and its lines (name, digest).
type Sums = (PathBuf, Vec<(String, Digest)>);

/// The bundle's checksum files and their lines; with `signers`, `.sha256` must be there and signed.
fn expected_sums(whole: &Path, signers: Option<&AllowedSigners>) -> Result<Vec<Sums>, RepairError> {
    let checksum_file = sibling(whole, ".sha256");
    let untrusted = |reason: String| RepairError::Untrusted {
        checksum_file: checksum_file.clone(),
        reason,
    };
    let mut expected = Vec::new();
    for file in [checksum_file.clone(), sibling(whole, ".parts.sha256")] {
        let Some(text) = read_side_file(&file)? else {
            continue;
        };
        let lines = checksum_lines(&String::from_utf8_lossy(&text)).ok_or_else(|| {
            untrusted(format!(
                "{} has a line that is not sha256sum's",
                file.display()
            ))
        })?;
        if file == checksum_file {
            if let Some(signers) = signers {
                let signature_file = sibling(whole, ".sig");
                let signature = read_side_file(&signature_file)?
                    .ok_or_else(|| untrusted(format!("{} is missing", signature_file.display())))?;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
                signature::check(&signature_file, &signature, &file, &text, signers, now)
                    .map_err(untrusted)?;
            }
        }
        expected.push((file, lines));
    }
    if signers.is_some() && !expected.iter().any(|(file, _)| *file == checksum_file) {
        return Err(untrusted("it is missing".into()));
    }
    Ok(expected)
}

/// A checksum or signature file's bytes; None when there is none.
fn read_side_file(path: &Path) -> Result<Option<Vec<u8>>, RepairError> {
    let read = |source| RepairError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    if !file.metadata().map_err(read)?.is_file() {
        return Err(read(std::io::Error::other("not a regular file")));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SIDE_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_SIDE_FILE {
        return Err(read(std::io::Error::other(format!(
            "larger than {MAX_SIDE_FILE} bytes, which no checksum or signature file is"
        ))));
    }
    Ok(Some(bytes))
}

/// Feeds the file at `path` to every hasher, 1 MiB at a time, stopping for a signal.
fn hash_into(path: &Path, hashers: &mut [&mut Sha256]) -> Result<(), RepairError> {
    let read = |source| RepairError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        crate::interrupt::check().map_err(read)?;
        let n = crate::io::read_full(&mut file, &mut buffer).map_err(read)?;
        if n == 0 {
            return Ok(());
        }
        for hasher in hashers.iter_mut() {
            hasher.update(&buffer[..n]);
        }
    }
}
