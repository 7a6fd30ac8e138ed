//! Recovery data: PAR2 (Parchive 2.0) files beside a bundle, from which a bundle damaged in transit is
//! repaired byte-exact on the far side of the gap.
//!
//! [`create`] writes `NAME.par2` (the set's description: slice size, files, per-slice MD5 and CRC32) and
//! `NAME.volFIRST+COUNT.par2` (recovery slices, each volume repeating the description), for one bundle
//! file or the parts of a split one. [`RecoverySet::load`] reads them back, trusting only packets whose
//! MD5 checks; [`RecoverySet::check`] finds the damaged or missing slices; [`repair`] rebuilds them
//! into temporary files, checks each rebuilt file's MD5, and only then renames it over the damaged one.
//! Debian's `par2` (par2cmdline) verifies and repairs with ferry's files, and ferry repairs with its.
//!
//! Modules: `field` (GF(2^16)), `bitslice` (the vectorised multiply-add), `combine` (streaming linear
//! combinations of slices, shared by creating and repairing), `packet` (PAR2 packets, written and
//! scanned), `create`, `set` (loading and checking), `repair`.

mod bitslice;
mod combine;
mod create;
mod field;
mod packet;
mod repair;
mod set;

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

pub use create::{create, CreateOptions, Created, Redundancy};
pub use field::MAX_SOURCE_SLICES;
pub use repair::{repair, Rebuilt, Repaired, MAX_REPAIR_SLICES};
pub use set::{Damage, FileDamage, RecoverySet};

/// The largest slice ferry reads or writes: a set of 2000 slices of 1 GiB covers 2 TB. A larger one
/// would have ferry hash gigabytes of zero padding for a short file.
pub const MAX_SLICE_SIZE: u64 = 1 << 30;
/// What marks ferry's temporary files, so that a later run sweeps those of a killed one.
const TEMPORARY_SUFFIX: &str = ".ferry-partial";

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write {}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: not a regular file", .0.display())]
    NotAFile(PathBuf),
    #[error("{}: empty; recovery data covers no empty file", .0.display())]
    Empty(PathBuf),
    #[error("{}: a name that PAR2 files cannot carry (control characters, or bytes that are not UTF-8)", .0.display())]
    BadName(PathBuf),
    #[error("{bytes} bytes would need slices of more than {MAX_SLICE_SIZE} bytes; recovery data covers at most {} bytes", MAX_SLICE_SIZE * 2000)]
    TooLarge { bytes: u64 },
    #[error("no recovery data for {}: found no {name}.par2 or {name}.vol*.par2 beside it", .bundle.display())]
    NotFound { bundle: PathBuf, name: String },
    #[error("the recovery data for {} cannot be used: {reason}", .bundle.display())]
    Unusable { bundle: PathBuf, reason: String },
    #[error("{}: {damaged} damaged blocks, but only {available} recovery blocks are usable: {} more would be needed", .bundle.display(), .damaged - .available)]
    NotEnough {
        bundle: PathBuf,
        damaged: usize,
        available: usize,
    },
    #[error("{}: {damaged} damaged blocks; the {available} usable recovery blocks cannot solve them together (PAR2's equations are singular for this damage)", .bundle.display())]
    Unsolvable {
        bundle: PathBuf,
        damaged: usize,
        available: usize,
    },
    #[error("{}: {damaged} damaged blocks; ferry repairs at most {MAX_REPAIR_SLICES} at once", .bundle.display())]
    TooMuchDamage { bundle: PathBuf, damaged: usize },
    #[error("{}: the repaired bytes do not have the MD5 the recovery data records; the recovery data is wrong or the file changed during the repair; nothing was replaced", .0.display())]
    Mismatch(PathBuf),
}

/// `dir/b.tar` → `dir/b.tar.par2`: the index file of a bundle's recovery data.
pub fn index_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".par2");
    PathBuf::from(name)
}

/// The recovery files beside `bundle` (the path a bundle or its parts are named after): `NAME.par2`
/// first, then `NAME.vol*.par2` in name order.
pub fn files_beside(bundle: &Path) -> Vec<PathBuf> {
    let index = index_path(bundle);
    let volumes = format!(
        "{}.vol",
        bundle.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir_of(bundle))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .is_some_and(|name| name.starts_with(&volumes) && name.ends_with(".par2"))
        })
        .map(|entry| dir_of(bundle).join(entry.file_name()))
        .collect();
    files.sort();
    if index.symlink_metadata().is_ok() {
        files.insert(0, index);
    }
    files
}

/// Opens `path` for reading only if it is a regular file (a FIFO would block, a device never end);
/// returns it with its length as it is now, which bounds every read of it.
fn open_regular(path: &Path) -> Result<(File, u64), RecoveryError> {
    use std::os::unix::fs::OpenOptionsExt;
    let read = |source| RecoveryError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::options()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(read)?;
    let metadata = file.metadata().map_err(read)?;
    if !metadata.is_file() {
        return Err(RecoveryError::NotAFile(path.to_path_buf()));
    }
    Ok((file, metadata.len()))
}

/// Hashes bytes `range` of `file` (fewer if it ends first), 1 MiB at a time, stopping for a signal.
fn hash_file(file: &File, range: std::ops::Range<u64>, hasher: &mut md5::Md5) -> io::Result<()> {
    use md5::Digest as _;
    use std::os::unix::fs::FileExt;
    let mut buffer = vec![0u8; (range.end - range.start).min(1 << 20) as usize];
    let mut at = range.start;
    while at < range.end {
        crate::interrupt::check()?;
        let want = (range.end - at).min(buffer.len() as u64) as usize;
        match file.read_at(&mut buffer[..want], at) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buffer[..n]);
                at += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A file's name as PAR2 stores it: UTF-8 without control characters.
fn par2_name(path: &Path) -> Result<String, RecoveryError> {
    path.file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.chars().any(char::is_control))
        .map(str::to_string)
        .ok_or_else(|| RecoveryError::BadName(path.to_path_buf()))
}

/// The directory a path's file is in.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// A temporary file beside `target`, locked while it lives, removed when dropped unless persisted.
fn temporary_beside(target: &Path) -> Result<tempfile::NamedTempFile, RecoveryError> {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    loop {
        let temporary = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(TEMPORARY_SUFFIX)
            .tempfile_in(dir_of(target))
            .map_err(|source| RecoveryError::Write {
                path: target.to_path_buf(),
                source,
            })?;
        match crate::interrupt::hold(temporary.as_file(), temporary.path()) {
            Ok(true) => return Ok(temporary),
            // A sweeping run removed it before the lock was taken.
            Ok(false) => continue,
            Err(source) => {
                return Err(RecoveryError::Write {
                    path: target.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// Removes the temporaries of killed runs beside `target`.
fn sweep_beside(target: &Path) {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let prefix = format!(".{name}.");
    crate::interrupt::sweep(dir_of(target), |entry| {
        entry.starts_with(&prefix) && entry.ends_with(TEMPORARY_SUFFIX)
    });
}

#[cfg(test)]
mod tests;
