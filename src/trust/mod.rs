//! Trust on arrival. `verify` proves a bundle agrees with itself; someone holding the stick can still
//! rewrite a bundle consistently. Two independent anchors refuse such a forgery:
//! - `signature`: `BUNDLE.sig`, an SSHSIG over `BUNDLE.sha256`, checked against an `allowed_signers` file;
//! - `lock`: a reviewed file pinning every image's digest.

pub mod allowed_signers;
pub mod lock;
pub mod signature;

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::tarball::sibling;
use crate::verify::{Checksum, Report};
use allowed_signers::AllowedSigners;
use lock::Lock;
use signature::Signed;

/// The most `BUNDLE.sig` may hold: an SSH signature is a few hundred bytes.
const MAX_SIGNATURE_FILE: u64 = 64 << 10;

/// The machine default for `--trust`: an admin sets it system-wide (e.g. in /etc/environment).
pub const TRUST_ENV: &str = "FERRY_TRUST";

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{TRUST_ENV} is set but empty: set it to an allowed_signers file (what --trust takes), or unset it"
    )]
    EmptyEnvironment,
    #[error("{}, line {line}: {reason}", path.display())]
    AllowedSigners {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("signing key {}: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("lock {}: {reason}", path.display())]
    LockFile { path: PathBuf, reason: String },
    #[error("cannot write lock {path}")]
    WriteLock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} image(s) moved since lock {} was written; nothing was written (rebuild with --update-lock to accept the new digests):\n  {}", changes.len(), path.display(), changes.join("\n  "))]
    LockMoved { path: PathBuf, changes: Vec<String> },
    #[error("{} is not trusted: {}", bundle.display(), reasons.join("; "))]
    Refused {
        bundle: PathBuf,
        reasons: Vec<String>,
    },
}

/// What the far side trusts: an `allowed_signers` file, a lock, or both.
#[derive(Debug, Default)]
pub struct Anchors {
    signers: Option<AllowedSigners>,
    lock: Option<(PathBuf, Lock)>,
}

impl Anchors {
    /// Loads `--trust` (or, without it, `FERRY_TRUST`) and `--lock`.
    pub fn load(trust: Option<&Path>, lock: Option<&Path>) -> Result<Anchors, TrustError> {
        let trust = match trust {
            Some(path) => Some(path.to_path_buf()),
            None => trust_from_environment()?,
        };
        Ok(Anchors {
            signers: trust.as_deref().map(AllowedSigners::load).transpose()?,
            lock: lock
                .map(|path| Lock::load(path).map(|lock| (path.to_path_buf(), lock)))
                .transpose()?,
        })
    }

    /// A lock is given: it is checked against every image of a verified bundle.
    pub fn has_lock(&self) -> bool {
        self.lock.is_some()
    }

    /// The signature's verdict on `signature` over `checksum`, the text of a checksum file, as for a
    /// bundle's `.sig` over its `.sha256` (merge checks the full bundle's, which its delta carries,
    /// before writing that bundle); the lock is not checked.
    pub fn check_signature_over(
        &self,
        signature_file: &Path,
        signature: &[u8],
        checksum_file: &Path,
        checksum: &[u8],
    ) -> Verdicts {
        let signature = self.signers.as_ref().map(|signers| {
            match signature::check(
                signature_file,
                signature,
                checksum_file,
                checksum,
                signers,
                now(),
            ) {
                Ok(signed) => SignatureVerdict::Good(signed),
                Err(reason) => SignatureVerdict::Refused { reason },
            }
        });
        Verdicts {
            signature,
            lock: None,
        }
    }

    /// A lock pins vendor images by config digest; only decompressing their layers proves the layers are
    /// the ones the config's diff_ids name.
    pub fn needs_deep(&self) -> bool {
        self.lock
            .as_ref()
            .is_some_and(|(_, lock)| lock.has_vendor_images())
    }

    /// Checks a report of a bundle `verify` read.
    pub fn check(&self, report: &Report) -> Verdicts {
        Verdicts {
            signature: self.signers.as_ref().map(|signers| {
                match check_signature(report, signers) {
                    Ok(signed) => SignatureVerdict::Good(signed),
                    Err(reason) => SignatureVerdict::Refused { reason },
                }
            }),
            lock: self.lock.as_ref().map(|(path, lock)| LockVerdict {
                file: path.clone(),
                images: lock.images.len(),
                problems: lock.check(report),
            }),
        }
    }
}

/// `FERRY_TRUST`, read here rather than by the argument parser, so that an empty value is named as the
/// variable it is: an admin's default that says nothing must not pass as "no signature required".
fn trust_from_environment() -> Result<Option<PathBuf>, TrustError> {
    match std::env::var_os(TRUST_ENV) {
        None => Ok(None),
        Some(value) if value.is_empty() => Err(TrustError::EmptyEnvironment),
        Some(value) => Ok(Some(PathBuf::from(value))),
    }
}

fn check_signature(report: &Report, signers: &AllowedSigners) -> Result<Signed, String> {
    let whole = &report.source.whole;
    let checksum_file = sibling(whole, ".sha256");
    let signature_file = sibling(whole, ".sig");
    let signature = crate::io::read_side_file(&signature_file, MAX_SIGNATURE_FILE)
        .map_err(|e| format!("cannot read {} ({e})", signature_file.display()))?;
    // The signature must cover the checksum file the bundle was checked against (which names the
    // bundle: one that names nothing would pass vacuously), as it was read then: read again, it could
    // be another file by now.
    let checksum = match &report.checksum {
        Checksum::Verified {
            sums: Some(sums), ..
        } => sums,
        Checksum::Mismatch { file, .. } => {
            return Err(format!(
                "{} does not match the bundle, so a signature proves nothing",
                file.display()
            ))
        }
        Checksum::Unreadable { file, reason } => {
            return Err(format!("cannot read {} ({reason})", file.display()))
        }
        Checksum::Verified { sums: None, .. } | Checksum::Absent => {
            return Err(format!(
                "there is no {} for the signature to cover",
                checksum_file.display()
            ))
        }
    };
    signature::check(
        &signature_file,
        &signature,
        &checksum_file,
        checksum,
        signers,
        now(),
    )
}

/// Seconds since the epoch, for signers' validity periods.
fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum SignatureVerdict {
    Good(Signed),
    Refused { reason: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct LockVerdict {
    pub file: PathBuf,
    pub images: usize,
    pub problems: Vec<String>,
}

/// What the anchors said about one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Verdicts {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureVerdict>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<LockVerdict>,
}

impl Verdicts {
    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        match &self.signature {
            Some(SignatureVerdict::Good(signed)) => writeln!(
                out,
                "signature: good, signed by {} ({})",
                signed.signer, signed.key
            )?,
            Some(SignatureVerdict::Refused { reason }) => {
                writeln!(out, "signature: REFUSED: {reason}")?
            }
            None => {}
        }
        match &self.lock {
            Some(lock) if lock.problems.is_empty() => writeln!(
                out,
                "lock: every image matches {} ({} images)",
                lock.file.display(),
                lock.images
            )?,
            Some(lock) => {
                writeln!(out, "lock: REFUSED by {}:", lock.file.display())?;
                for problem in &lock.problems {
                    writeln!(out, "  {problem}")?;
                }
            }
            None => {}
        }
        Ok(())
    }

    /// The refusal, when an anchor refused the bundle.
    pub fn refusal(&self, bundle: &Path) -> Option<TrustError> {
        let mut reasons = Vec::new();
        if let Some(SignatureVerdict::Refused { reason }) = &self.signature {
            reasons.push(format!("signature: {reason}"));
        }
        if let Some(lock) = self.lock.as_ref().filter(|l| !l.problems.is_empty()) {
            reasons.push(format!(
                "lock {}: {}",
                lock.file.display(),
                lock.problems.join("; ")
            ));
        }
        (!reasons.is_empty()).then(|| TrustError::Refused {
            bundle: bundle.to_path_buf(),
            reasons,
        })
    }
}
