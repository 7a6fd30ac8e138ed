//! Writing a bundle's recovery data.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use md5::{Digest as _, Md5};

use super::combine::{self, Budget, Failure, Job, Piece, Plan};
use super::field::{field, source_logs, MAX_SOURCE_SLICES};
use super::packet::{self, FileDescription, Id, Main, SliceChecksum, SliceChecksums};
use super::MAX_SLICE_SIZE;
use super::{hash_file, open_regular, par2_name, temporary_beside, RecoveryError};

/// How much recovery data to write, as a share of the bundle: `5%`, `0.5%`, `100%`. Kept in hundredths
/// of a percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redundancy(u32);

impl Redundancy {
    /// Recovery slices for `sources` source slices: at least one.
    pub fn slices_for(self, sources: usize) -> usize {
        (sources as u64 * u64::from(self.0)).div_ceil(10_000).max(1) as usize
    }
}

impl FromStr for Redundancy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("'{text}' is not a percentage from 0.01% to 100% (e.g. 5%)");
        let number = text.trim().strip_suffix('%').unwrap_or(text.trim());
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if whole.is_empty() && fraction.is_empty()
            || fraction.len() > 2
            || !(whole.bytes().chain(fraction.bytes())).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let whole: u32 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        let fraction: u32 = format!("{fraction:0<2}").parse().map_err(|_| bad())?;
        match whole.checked_mul(100).and_then(|w| w.checked_add(fraction)) {
            Some(hundredths @ 1..=10_000) => Ok(Redundancy(hundredths)),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Redundancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 % 100 {
            0 => write!(f, "{}%", self.0 / 100),
            cents => write!(f, "{}.{cents:02}%", self.0 / 100),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub redundancy: Redundancy,
    /// How many slices to cut the sources into; par2cmdline's default is 2000.
    pub source_slices: usize,
    /// The largest volume file to write (a split bundle's part size), if any.
    pub volume_limit: Option<u64>,
    pub(super) budget: Budget,
}

impl CreateOptions {
    pub fn new(redundancy: Redundancy) -> CreateOptions {
        CreateOptions {
            redundancy,
            source_slices: 2000,
            volume_limit: None,
            budget: Budget::DEFAULT,
        }
    }
}

/// What [`create`] wrote.
#[derive(Debug, Clone)]
pub struct Created {
    /// The index file first, then the volumes.
    pub files: Vec<PathBuf>,
    pub slice_size: u64,
    pub source_slices: usize,
    pub recovery_slices: usize,
    /// The recovery files' total size.
    pub bytes: u64,
}

/// One source file, opened.
struct Source {
    path: PathBuf,
    file: File,
    length: u64,
    name: String,
    md5_16k: Id,
    id: Id,
}

/// Writes recovery data for `sources` (a bundle, or the parts of a split one, all in one directory)
/// as `index` (`NAME.par2`) and `NAME.volFIRST+COUNT.par2` beside it. Sources are read once, twice
/// when their slices do not fit one window. Every file appears complete, and only once all are
/// written: until then they are locked temporaries, removed on failure.
pub fn create(
    sources: &[PathBuf],
    index: &Path,
    options: &CreateOptions,
) -> Result<Created, RecoveryError> {
    let mut opened = sources
        .iter()
        .map(|path| open_source(path))
        .collect::<Result<Vec<_>, _>>()?;
    // PAR2 numbers slices in the order of the file IDs, read as little-endian 128-bit numbers.
    opened.sort_by_key(|source| u128::from_le_bytes(source.id));
    let slice_size = slice_size(&opened, options.source_slices)?;
    let main = Main {
        slice_size,
        files: opened.iter().map(|s| s.id).collect(),
    };
    let main_body = main.body();
    let set = packet::md5_of(&[&main_body]);

    let mut inputs = Vec::new();
    for (index, source) in opened.iter().enumerate() {
        for offset in (0..source.length).step_by(slice_size as usize) {
            inputs.push(Piece {
                source: index,
                offset,
                length: slice_size.min(source.length - offset),
            });
        }
    }
    let recovery = options.redundancy.slices_for(inputs.len());
    let critical_size = critical_size(&opened, slice_size);
    let volumes = volumes(
        index,
        recovery,
        slice_size,
        critical_size,
        options.volume_limit,
    );
    let mut outputs = vec![(index.to_path_buf(), temporary_beside(index)?)];
    for volume in &volumes {
        outputs.push((volume.path.clone(), temporary_beside(&volume.path)?));
    }

    let plan = Plan::new(slice_size, recovery, options.budget);
    let mut file_hashes = vec![Md5::new(); opened.len()];
    if plan.windows > 1 {
        // The windows visit the sources out of order; their whole MD5s take a pass of their own.
        for (source, hasher) in opened.iter().zip(&mut file_hashes) {
            hash_whole(source, hasher)?;
        }
    }
    let mut slice_hashes = vec![(Md5::new(), crc32fast::Hasher::new()); inputs.len()];
    let mut recovery_hashes: Vec<Md5> = (0..recovery)
        .map(|exponent| packet::recovery_hasher(&set, exponent as u32))
        .collect();
    let logs = source_logs(inputs.len());
    let files: Vec<File> = opened
        .iter()
        .map(|source| {
            source
                .file
                .try_clone()
                .map_err(|error| RecoveryError::Read {
                    path: source.path.clone(),
                    source: error,
                })
        })
        .collect::<Result<_, _>>()?;
    let job = Job {
        plan,
        sources: &files,
        inputs: &inputs,
        slice_size,
        outputs: recovery,
        coefficients: &|input, out| {
            let field = field();
            for (exponent, c) in out.iter_mut().enumerate() {
                *c = field.power(logs[input], exponent as u32);
            }
        },
        mix: None,
    };
    let packet_size = packet::RECOVERY_PREFIX + slice_size;
    combine::run(
        &job,
        &mut |input, bytes| {
            let (md5, crc) = &mut slice_hashes[input];
            md5.update(bytes);
            crc.update(bytes);
            if plan.windows == 1 {
                file_hashes[inputs[input].source].update(bytes);
            }
        },
        &mut |exponent, offset, bytes| {
            recovery_hashes[exponent].update(bytes);
            let volume = exponent / volumes[0].exponents.len();
            let first = volumes[volume].exponents.start;
            let (path, file) = &outputs[1 + volume];
            let at = critical_size
                + (exponent - first) as u64 * packet_size
                + packet::RECOVERY_PREFIX
                + offset;
            file.as_file()
                .write_all_at(bytes, at)
                .map_err(|source| RecoveryError::Write {
                    path: path.clone(),
                    source,
                })
        },
    )
    .map_err(|failure| match failure {
        Failure::Read(index, source) => RecoveryError::Read {
            path: opened[index].path.clone(),
            source,
        },
        Failure::Emit(error) => error,
    })?;

    let checksums: Vec<SliceChecksum> = inputs
        .iter()
        .zip(slice_hashes)
        .map(|(piece, (md5, crc))| packet::finish_slice(md5, crc, slice_size - piece.length))
        .collect();
    let mut critical = packet::packet(&set, packet::MAIN, &main_body);
    let mut first = 0;
    for (source, md5) in opened.iter().zip(file_hashes) {
        let count = slice_count(source.length, slice_size);
        let description = FileDescription {
            id: source.id,
            md5: md5.finalize().into(),
            md5_16k: source.md5_16k,
            length: source.length,
            name: source.name.clone(),
        };
        let slices = SliceChecksums {
            id: source.id,
            slices: checksums[first..first + count].to_vec(),
        };
        first += count;
        critical.extend(packet::packet(
            &set,
            packet::FILE_DESCRIPTION,
            &description.body(),
        ));
        critical.extend(packet::packet(
            &set,
            packet::SLICE_CHECKSUMS,
            &slices.body(),
        ));
    }
    critical.extend(packet::packet(
        &set,
        packet::CREATOR,
        &packet::creator_body(),
    ));
    debug_assert_eq!(critical.len() as u64, critical_size);

    let mut bytes = 0;
    for (slot, (path, temporary)) in outputs.iter().enumerate() {
        let write = |source| RecoveryError::Write {
            path: path.clone(),
            source,
        };
        let file = temporary.as_file();
        file.write_all_at(&critical, 0).map_err(write)?;
        if let Some(volume) = slot.checked_sub(1).map(|v| &volumes[v]) {
            for exponent in volume.exponents.clone() {
                let hash: Id = recovery_hashes[exponent].clone().finalize().into();
                let prefix = packet::recovery_prefix(&set, exponent as u32, slice_size, &hash);
                let at = critical_size + (exponent - volume.exponents.start) as u64 * packet_size;
                file.write_all_at(&prefix, at).map_err(write)?;
            }
        }
        publish(file).map_err(write)?;
        bytes += file.metadata().map_err(write)?.len();
    }
    let mut files = Vec::new();
    for (path, temporary) in outputs {
        temporary.persist(&path).map_err(|e| RecoveryError::Write {
            path: path.clone(),
            source: e.error,
        })?;
        files.push(path);
    }
    Ok(Created {
        files,
        slice_size,
        source_slices: inputs.len(),
        recovery_slices: recovery,
        bytes,
    })
}

fn open_source(path: &Path) -> Result<Source, RecoveryError> {
    let (file, length) = open_regular(path)?;
    if length == 0 {
        return Err(RecoveryError::Empty(path.to_path_buf()));
    }
    let name = par2_name(path)?;
    let mut first = vec![0u8; length.min(packet::HASH_16K) as usize];
    file.read_exact_at(&mut first, 0)
        .map_err(|source| RecoveryError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let md5_16k = packet::md5_of(&[&first]);
    Ok(Source {
        id: FileDescription::id_of(&md5_16k, length, &name),
        path: path.to_path_buf(),
        file,
        length,
        name,
        md5_16k,
    })
}

fn slice_count(length: u64, slice_size: u64) -> usize {
    length.div_ceil(slice_size) as usize
}

/// The smallest multiple of 4 that cuts the sources into `target` slices, as par2cmdline chooses it for
/// one file; doubled while the sources' slices (each source's last one short) would number more than
/// PAR2 allows.
fn slice_size(sources: &[Source], target: usize) -> Result<u64, RecoveryError> {
    let total: u64 = sources.iter().map(|s| s.length).sum();
    let mut size = total.div_ceil(target.max(1) as u64).next_multiple_of(4);
    while sources
        .iter()
        .map(|s| slice_count(s.length, size))
        .sum::<usize>()
        > MAX_SOURCE_SLICES
    {
        size *= 2;
    }
    if size > MAX_SLICE_SIZE {
        return Err(RecoveryError::TooLarge { bytes: total });
    }
    Ok(size)
}

/// The size of the packets every file carries: Main, each source's description and slice checksums,
/// Creator.
fn critical_size(sources: &[Source], slice_size: u64) -> u64 {
    let header = packet::HEADER;
    let main = header + 12 + 16 * sources.len() as u64;
    let per_source: u64 = sources
        .iter()
        .map(|s| {
            let description = header + 56 + (s.name.len() as u64).next_multiple_of(4);
            let checksums = header + 16 + 20 * slice_count(s.length, slice_size) as u64;
            description + checksums
        })
        .sum();
    main + per_source + header + packet::creator_body().len() as u64
}

struct Volume {
    path: PathBuf,
    exponents: std::ops::Range<usize>,
}

/// The volume files: one, or as many as keep each within `limit` bytes (a split bundle's part size),
/// named as par2cmdline names them, `NAME.volFIRST+COUNT.par2`.
fn volumes(
    index: &Path,
    recovery: usize,
    slice_size: u64,
    critical_size: u64,
    limit: Option<u64>,
) -> Vec<Volume> {
    let packet_size = packet::RECOVERY_PREFIX + slice_size;
    let per_volume = limit.map_or(recovery, |limit| {
        (limit.saturating_sub(critical_size) / packet_size).clamp(1, recovery as u64) as usize
    });
    let width = recovery.to_string().len().max(2);
    let base = index.to_string_lossy();
    let base = base.strip_suffix(".par2").unwrap_or(&base);
    (0..recovery)
        .step_by(per_volume)
        .map(|first| {
            let count = per_volume.min(recovery - first);
            Volume {
                path: PathBuf::from(format!("{base}.vol{first:0width$}+{count:0width$}.par2")),
                exponents: first..first + count,
            }
        })
        .collect()
}

/// The MD5 of a whole source, read in order.
fn hash_whole(source: &Source, hasher: &mut Md5) -> Result<(), RecoveryError> {
    hash_file(&source.file, 0..source.length, hasher).map_err(|error| RecoveryError::Read {
        path: source.path.clone(),
        source: error,
    })
}

/// Recovery files are for others to read, like any file `cp` makes, and on disk before they appear.
fn publish(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redundancy_reads_percentages() {
        assert_eq!("5%".parse(), Ok(Redundancy(500)));
        assert_eq!("5".parse(), Ok(Redundancy(500)));
        assert_eq!("0.5%".parse(), Ok(Redundancy(50)));
        assert_eq!("12.25%".parse(), Ok(Redundancy(1225)));
        assert_eq!("100%".parse(), Ok(Redundancy(10_000)));
        for bad in [
            "",
            "%",
            "0%",
            "101%",
            "1.234%",
            "-5%",
            "5 %",
            "abc",
            "99999999999%",
        ] {
            assert!(bad.parse::<Redundancy>().is_err(), "{bad}");
        }
        assert_eq!(Redundancy(50).to_string(), "0.50%");
        assert_eq!(Redundancy(500).to_string(), "5%");
        assert_eq!(Redundancy(500).slices_for(2000), 100);
        assert_eq!(Redundancy(1).slices_for(10), 1);
    }
}
