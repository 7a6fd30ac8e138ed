//! Rebuilding damaged slices from the intact ones and the recovery slices.
//!
//! With m slices damaged, m recovery slices whose equations are independent give an m×m system
//! `A · damaged = recovery − (the intact slices' share)`, A[k][j] being damaged slice j's constant to
//! recovery slice k's exponent. The rebuild is one streaming pass of [`combine`](super::combine) over the
//! intact slices and the chosen recovery slices, the same work as creating m recovery slices, whose
//! outputs go through A's inverse window by window.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};

use super::combine::{self, Budget, Failure, Job, Piece, Plan};
use super::field::{field, source_logs};
use super::set::{Damage, RecoverySet};
use super::{hash_file, open_regular, sweep_beside, temporary_beside, RecoveryError};

/// The most damaged slices one repair rebuilds: solving for them takes m³ field operations and two m×m
/// matrices (64 MiB at this bound).
pub const MAX_REPAIR_SLICES: usize = 4096;

/// What [`Rebuilt::commit`] rewrote.
#[derive(Debug, Clone)]
pub struct Repaired {
    pub files: Vec<PathBuf>,
    /// Slices rebuilt.
    pub slices: usize,
}

/// Files rebuilt into temporaries beside them, each with the MD5 the recovery data records, not yet in
/// place: the caller may hold them to a stronger checksum first. Dropped, they are removed.
#[must_use = "nothing is repaired until Rebuilt::commit"]
pub struct Rebuilt {
    files: Vec<(PathBuf, tempfile::NamedTempFile)>,
    slices: usize,
}

impl Rebuilt {
    /// Each rebuilt file's path and the temporary that holds it until [`Rebuilt::commit`].
    pub fn files(&self) -> impl Iterator<Item = (&Path, &Path)> {
        self.files
            .iter()
            .map(|(path, temporary)| (path.as_path(), temporary.path()))
    }

    pub fn slices(&self) -> usize {
        self.slices
    }

    /// Renames each rebuilt file over the damaged one (it keeps the damaged one's permissions).
    pub fn commit(self) -> Result<Repaired, RecoveryError> {
        let mut files = Vec::new();
        for (path, temporary) in self.files {
            keep_permissions(&path, temporary.as_file());
            temporary.persist(&path).map_err(|e| RecoveryError::Write {
                path: path.clone(),
                source: e.error,
            })?;
            files.push(path);
        }
        Ok(Repaired {
            files,
            slices: self.slices,
        })
    }
}

/// Rebuilds the files `damage` found damaged, missing, or of the wrong length. Each is rebuilt in a
/// locked temporary file beside it (a copy of what is left of it, the damaged slices rewritten) and its
/// MD5 checked against the recovery data; [`Rebuilt::commit`] then renames them into place, so a failure
/// or a signal leaves every file as it was.
pub fn repair(set: &RecoverySet, damage: &Damage) -> Result<Rebuilt, RecoveryError> {
    repair_within(set, damage, Budget::DEFAULT)
}

pub(super) fn repair_within(
    set: &RecoverySet,
    damage: &Damage,
    budget: Budget,
) -> Result<Rebuilt, RecoveryError> {
    let bundle = set.bundle.clone();
    let slice_size = set.slice_size;
    let damaged = damage.damaged_slices();
    if damage.is_intact() {
        return Ok(Rebuilt {
            files: Vec::new(),
            slices: 0,
        });
    }
    if damaged > set.recovery.len() {
        return Err(RecoveryError::NotEnough {
            bundle,
            damaged,
            available: set.recovery.len(),
        });
    }
    if damaged > MAX_REPAIR_SLICES {
        return Err(RecoveryError::TooMuchDamage { bundle, damaged });
    }

    // The bundle's files that are there are the first sources, the chosen recovery volumes the rest.
    let mut sources: Vec<File> = Vec::new();
    let mut source_paths: Vec<PathBuf> = Vec::new();
    let mut known = Vec::new();
    let mut known_logs = Vec::new();
    let mut missing = Vec::new();
    let mut missing_logs = Vec::new();
    let logs = source_logs(set.source_slices());
    let mut slice_number = 0;
    for (file_index, (source, file)) in set.sources.iter().zip(&damage.files).enumerate() {
        let source_index = match file.found {
            Some(_) => {
                sources.push(open_regular(&source.path)?.0);
                source_paths.push(source.path.clone());
                Some(sources.len() - 1)
            }
            None => None,
        };
        let mut damaged = file.damaged.iter().peekable();
        for slice in 0..file.slices {
            let offset = slice as u64 * slice_size;
            if damaged.next_if_eq(&&slice).is_some() {
                missing.push((file_index, offset));
                missing_logs.push(logs[slice_number]);
            } else if let Some(index) = source_index {
                known.push(Piece {
                    source: index,
                    offset,
                    length: slice_size.min(source.description.length - offset),
                });
                known_logs.push(logs[slice_number]);
            }
            slice_number += 1;
        }
    }
    let exponents: Vec<u32> = set.recovery.iter().map(|slice| slice.exponent).collect();
    let (chosen, inverse) =
        solve(&missing_logs, &exponents).ok_or_else(|| RecoveryError::Unsolvable {
            bundle: bundle.clone(),
            damaged,
            available: set.recovery.len(),
        })?;

    let mut rewrites = Vec::new();
    for (source, file) in set.sources.iter().zip(&damage.files) {
        if !file.needs_repair() {
            rewrites.push(None);
            continue;
        }
        sweep_beside(&source.path);
        let temporary = temporary_beside(&source.path)?;
        let write = |error| RecoveryError::Write {
            path: source.path.clone(),
            source: error,
        };
        if let Some(found) = file.found {
            let (original, _) = open_regular(&source.path)?;
            let mut left = (&original).take(found.min(file.length));
            io::copy(&mut left, &mut temporary.as_file()).map_err(write)?;
        }
        temporary.as_file().set_len(file.length).map_err(write)?;
        rewrites.push(Some(temporary));
    }

    let mut inputs = known.clone();
    for &k in &chosen {
        let slice = set.recovery[k];
        let path = &set.files()[slice.volume];
        sources.push(set.volumes[slice.volume].try_clone().map_err(|error| {
            RecoveryError::Read {
                path: path.clone(),
                source: error,
            }
        })?);
        source_paths.push(path.clone());
        inputs.push(Piece {
            source: sources.len() - 1,
            offset: slice.data,
            length: slice_size,
        });
    }
    let chosen_exponents: Vec<u32> = chosen.iter().map(|&k| exponents[k]).collect();
    let job = Job {
        plan: Plan::new(slice_size, missing.len(), budget),
        sources: &sources,
        inputs: &inputs,
        slice_size,
        outputs: missing.len(),
        // Each intact slice's share in each chosen recovery slice, subtracted; the inverse then turns
        // what is left into the damaged slices.
        coefficients: &|input, out| match known_logs.get(input) {
            Some(&log) => {
                for (c, &exponent) in out.iter_mut().zip(&chosen_exponents) {
                    *c = field().power(log, exponent);
                }
            }
            None => {
                for (k, c) in out.iter_mut().enumerate() {
                    *c = u16::from(k == input - known_logs.len());
                }
            }
        },
        mix: Some(&inverse),
    };
    combine::run(&job, &mut |_, _| {}, &mut |j, offset, bytes| {
        let (file_index, slice_offset) = missing[j];
        let length = set.sources[file_index].description.length;
        let at = slice_offset + offset;
        let keep = length.saturating_sub(at).min(bytes.len() as u64) as usize;
        let temporary = rewrites[file_index]
            .as_ref()
            .expect("a file with damaged slices is rewritten");
        temporary
            .as_file()
            .write_all_at(&bytes[..keep], at)
            .map_err(|error| RecoveryError::Write {
                path: set.sources[file_index].path.clone(),
                source: error,
            })
    })
    .map_err(|failure| match failure {
        Failure::Read(index, error) => RecoveryError::Read {
            path: source_paths[index].clone(),
            source: error,
        },
        Failure::Emit(error) => error,
    })?;

    for (source, temporary) in set.sources.iter().zip(&rewrites) {
        let Some(temporary) = temporary else { continue };
        let write = |error| RecoveryError::Write {
            path: source.path.clone(),
            source: error,
        };
        let file = temporary.as_file();
        file.sync_all().map_err(write)?;
        let mut md5 = Md5::new();
        hash_file(file, 0..u64::MAX, &mut md5).map_err(write)?;
        if <[u8; 16]>::from(md5.finalize()) != source.description.md5 {
            return Err(RecoveryError::Mismatch(source.path.clone()));
        }
    }
    Ok(Rebuilt {
        files: set
            .sources
            .iter()
            .zip(rewrites)
            .filter_map(|(source, temporary)| Some((source.path.clone(), temporary?)))
            .collect(),
        slices: missing.len(),
    })
}

/// The repaired file keeps the damaged one's permissions, or gets those `cp` would give.
fn keep_permissions(path: &Path, file: &File) {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let _ = file.set_permissions(std::fs::Permissions::from_mode(mode));
}

/// Chooses recovery slices (indices into `exponents`) whose equations for the damaged slices (their
/// constants' logarithms in `logs`) are independent, and inverts them: returns the choice and the
/// inverse, row-major m×m. The first m almost always do (consecutive exponents make a Vandermonde
/// matrix); otherwise slices are taken one by one, keeping those that add a new equation.
fn solve(logs: &[u16], exponents: &[u32]) -> Option<(Vec<usize>, Vec<u16>)> {
    let m = logs.len();
    let field = field();
    let row = |k: usize| -> Vec<u16> {
        logs.iter()
            .map(|&log| field.power(log, exponents[k]))
            .collect()
    };
    let first: Vec<usize> = (0..m).collect();
    if let Some(inverse) = invert(first.iter().map(|&k| row(k)).collect()) {
        return Some((first, inverse));
    }
    let mut basis: Vec<(usize, Vec<u16>)> = Vec::new();
    let mut chosen = Vec::new();
    for k in 0..exponents.len() {
        if chosen.len() == m {
            break;
        }
        let mut candidate = row(k);
        for (pivot, base) in &basis {
            let factor = field.mul(candidate[*pivot], field.inverse(base[*pivot]));
            if factor != 0 {
                for (c, &b) in candidate.iter_mut().zip(base) {
                    *c ^= field.mul(factor, b);
                }
            }
        }
        if let Some(pivot) = candidate.iter().position(|&c| c != 0) {
            basis.push((pivot, candidate));
            chosen.push(k);
        }
    }
    if chosen.len() < m {
        return None;
    }
    let inverse = invert(chosen.iter().map(|&k| row(k)).collect())?;
    Some((chosen, inverse))
}

/// The inverse of a square matrix (rows), row-major, by Gauss-Jordan elimination on `[A | I]`; None
/// if singular. Row operations go through logarithms: one table lookup per element.
fn invert(rows: Vec<Vec<u16>>) -> Option<Vec<u16>> {
    let field = field();
    let m = rows.len();
    let width = 2 * m;
    let mut matrix = vec![0u16; m * width];
    for (r, row) in rows.iter().enumerate() {
        matrix[r * width..r * width + m].copy_from_slice(row);
        matrix[r * width + m + r] = 1;
    }
    let mut pivot_logs = vec![None; width];
    for column in 0..m {
        let pivot = (column..m).find(|&r| matrix[r * width + column] != 0)?;
        for c in 0..width {
            matrix.swap(column * width + c, pivot * width + c);
        }
        let scale = field.inverse(matrix[column * width + column]);
        for c in column..width {
            let value = &mut matrix[column * width + c];
            *value = field.mul(*value, scale);
            pivot_logs[c] = (*value != 0).then(|| field.log(*value));
        }
        for r in (0..m).filter(|&r| r != column) {
            let factor = matrix[r * width + column];
            if factor == 0 {
                continue;
            }
            let factor = field.log(factor);
            for c in column..width {
                if let Some(log) = pivot_logs[c] {
                    matrix[r * width + c] ^= field.exp(factor, log);
                }
            }
        }
    }
    Some(
        matrix
            .chunks_exact(width)
            .flat_map(|row| row[m..].iter().copied())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_times_matrix_is_the_identity() {
        let field = field();
        let logs = source_logs(40);
        let picked: Vec<u16> = [3, 7, 19, 38].iter().map(|&i| logs[i]).collect();
        let exponents = [0, 5, 9, 200];
        let (chosen, inverse) = solve(&picked, &exponents).unwrap();
        assert_eq!(chosen, [0, 1, 2, 3]);
        for i in 0..4 {
            for (j, &log) in picked.iter().enumerate() {
                let product = (0..4).fold(0, |sum, k| {
                    sum ^ field.mul(inverse[i * 4 + k], field.power(log, exponents[chosen[k]]))
                });
                assert_eq!(product, u16::from(i == j));
            }
        }
    }

    #[test]
    fn dependent_equations_are_passed_over() {
        // Exponents 1 and 65536 are the same equation: the second is skipped for the next one.
        let logs: Vec<u16> = source_logs(2);
        let (chosen, _) = solve(&logs, &[1, 65536, 2]).unwrap();
        assert_eq!(chosen, [0, 2]);
        assert!(solve(&logs, &[1, 65536]).is_none());
    }
}
