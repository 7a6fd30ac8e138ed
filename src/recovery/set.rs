//! Reading a bundle's recovery data back from files that may be damaged or forged, and checking the
//! bundle's files against it slice by slice.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use md5::{Digest as _, Md5};

use super::field::{MAX_SOURCE_SLICES, ORDER};
use super::packet::{self, FileDescription, Found, Id, Main, SliceChecksum, SliceChecksums};
use super::{dir_of, index_path, open_regular, RecoveryError, MAX_SLICE_SIZE};

/// Bytes of critical packets kept while looking for the set; a real set needs a few MiB at most.
const CRITICAL_BUDGET: usize = 64 << 20;

/// A bundle's PAR2 recovery set, as far as its files could be read.
pub struct RecoverySet {
    pub(super) bundle: PathBuf,
    /// The recovery files read, the index first; `volumes` holds them open, in the same order.
    files: Vec<PathBuf>,
    pub(super) volumes: Vec<File>,
    /// Recovery files that could not be read, and why.
    skipped: Vec<(PathBuf, RecoveryError)>,
    pub(super) slice_size: u64,
    /// In the order PAR2 numbers their slices.
    pub(super) sources: Vec<Source>,
    /// One checked recovery slice per distinct equation (exponent modulo 65535), by exponent.
    pub(super) recovery: Vec<Slice>,
}

pub(super) struct Source {
    pub path: PathBuf,
    pub description: FileDescription,
    pub checksums: Vec<SliceChecksum>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Slice {
    pub volume: usize,
    pub exponent: u32,
    /// Where its data starts in the volume.
    pub data: u64,
}

/// One distinct Main packet: its set, its body, the first and the last file holding it, and in how
/// many files it is.
struct MainCopies {
    set: Id,
    body: Vec<u8>,
    first: usize,
    last: usize,
    files: usize,
}

/// The critical packets found (the first intact copy of each).
#[derive(Default)]
struct Packets {
    mains: Vec<MainCopies>,
    descriptions: HashMap<(Id, Id), FileDescription>,
    checksums: HashMap<(Id, Id), Vec<SliceChecksum>>,
    kept: usize,
}

impl Packets {
    fn add(&mut self, file: usize, set: Id, kind: Id, body: Vec<u8>) {
        if self.kept > CRITICAL_BUDGET {
            return;
        }
        self.kept += body.len();
        if &kind == packet::MAIN {
            match self
                .mains
                .iter_mut()
                .find(|m| m.set == set && m.body == body)
            {
                Some(main) if main.last != file => {
                    main.last = file;
                    main.files += 1;
                }
                Some(_) => {}
                None => self.mains.push(MainCopies {
                    set,
                    body,
                    first: file,
                    last: file,
                    files: 1,
                }),
            }
        } else if &kind == packet::FILE_DESCRIPTION {
            if let Some(description) = FileDescription::parse(&body) {
                self.descriptions
                    .entry((set, description.id))
                    .or_insert(description);
            }
        } else if &kind == packet::SLICE_CHECKSUMS {
            if let Some(checksums) = SliceChecksums::parse(&body) {
                self.checksums
                    .entry((set, checksums.id))
                    .or_insert(checksums.slices);
            }
        }
    }
}

impl RecoverySet {
    /// Reads the recovery data beside `bundle` (a bundle file, or the path its parts are named after):
    /// `NAME.par2` and `NAME.vol*.par2`. Only packets whose MD5 checks are used; the set is the one the
    /// index file describes, or, without a readable index, the one most volumes describe.
    pub fn load(bundle: &Path) -> Result<RecoverySet, RecoveryError> {
        let dir = dir_of(bundle);
        let name = bundle
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let index = index_path(bundle);
        let candidates = super::files_beside(bundle);
        if candidates.is_empty() {
            return Err(RecoveryError::NotFound {
                bundle: bundle.to_path_buf(),
                name,
            });
        }
        let unusable = |reason: String| RecoveryError::Unusable {
            bundle: bundle.to_path_buf(),
            reason,
        };

        let (mut files, mut opened, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
        let mut packets = Packets::default();
        for path in candidates {
            let (file, length) = match open_regular(&path) {
                Ok(opened) => opened,
                Err(error) => {
                    skipped.push((path, error));
                    continue;
                }
            };
            let at = files.len();
            let scanned = packet::scan(&file, length, None, &mut |found| {
                if let Found::Critical { set, kind, body } = found {
                    packets.add(at, set, kind, body);
                }
            });
            if let Err(source) = scanned {
                stop_if_interrupted(&path)?;
                // What was read before the error stands; the rest of this file is lost.
                skipped.push((
                    path.clone(),
                    RecoveryError::Read {
                        path: path.clone(),
                        source,
                    },
                ));
            }
            files.push(path);
            opened.push((file, length));
        }
        let index_read = files.first() == Some(&index);
        let main = packets
            .mains
            .iter()
            .filter(|main| index_read && main.first == 0)
            .max_by_key(|main| main.files)
            .or_else(|| packets.mains.iter().max_by_key(|main| main.files))
            .ok_or_else(|| {
                unusable(
                    "no intact description of the set (PAR2 Main packet) in any of its files"
                        .into(),
                )
            })?;
        let set = main.set;
        let Main {
            slice_size,
            files: ids,
        } = Main::parse(&main.body)
            .ok_or_else(|| unusable("its description (PAR2 Main packet) is malformed".into()))?;
        if slice_size > MAX_SLICE_SIZE {
            return Err(unusable(format!("its slices of {slice_size} bytes are larger than the {MAX_SLICE_SIZE} bytes ferry reads")));
        }
        if ids.is_empty() {
            return Err(unusable("it covers no file".into()));
        }
        let mut sources = Vec::new();
        let mut total_slices = 0usize;
        for (number, id) in ids.iter().enumerate() {
            let which = || format!("file {} of {}", number + 1, ids.len());
            let description = packets.descriptions.remove(&(set, *id)).ok_or_else(|| {
                unusable(format!(
                    "no intact description of {} (PAR2 FileDesc packet)",
                    which()
                ))
            })?;
            if !plain_name(&description.name) {
                return Err(unusable(format!(
                    "{} is named {:?}, which is not a file name beside it",
                    which(),
                    description.name
                )));
            }
            let checksums = packets.checksums.remove(&(set, *id)).ok_or_else(|| {
                unusable(format!(
                    "no intact slice checksums for {} (PAR2 IFSC packet)",
                    description.name
                ))
            })?;
            let count = description.length.div_ceil(slice_size);
            if checksums.len() as u64 != count {
                return Err(unusable(format!(
                    "{} has {} slice checksums where its {} bytes make {count} slices",
                    description.name,
                    checksums.len(),
                    description.length
                )));
            }
            total_slices += checksums.len();
            if total_slices > MAX_SOURCE_SLICES {
                return Err(unusable(format!(
                    "it has more than the {MAX_SOURCE_SLICES} slices PAR2 allows"
                )));
            }
            sources.push(Source {
                path: dir.join(&description.name),
                description,
                checksums,
            });
        }

        let mut recovery: HashMap<u32, Slice> = HashMap::new();
        for (volume, (file, length)) in opened.iter().enumerate() {
            let scanned = packet::scan(file, *length, Some((&set, slice_size)), &mut |found| {
                if let Found::Recovery { exponent, data } = found {
                    recovery.entry(exponent % ORDER).or_insert(Slice {
                        volume,
                        exponent,
                        data,
                    });
                }
            });
            if let Err(source) = scanned {
                let path = files[volume].clone();
                stop_if_interrupted(&path)?;
                if !skipped.iter().any(|(p, _)| *p == path) {
                    skipped.push((path.clone(), RecoveryError::Read { path, source }));
                }
            }
        }
        let mut recovery: Vec<Slice> = recovery.into_values().collect();
        recovery.sort_by_key(|slice| slice.exponent);
        Ok(RecoverySet {
            bundle: bundle.to_path_buf(),
            files,
            volumes: opened.into_iter().map(|(file, _)| file).collect(),
            skipped,
            slice_size,
            sources,
            recovery,
        })
    }

    /// The recovery files read, the index first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Recovery files that could not be read (or not to their end), and why.
    pub fn skipped(&self) -> &[(PathBuf, RecoveryError)] {
        &self.skipped
    }

    /// The files the set covers, as it names them.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.sources.iter().map(|s| s.description.name.as_str())
    }

    pub fn slice_size(&self) -> u64 {
        self.slice_size
    }

    pub fn source_slices(&self) -> usize {
        self.sources.iter().map(|s| s.checksums.len()).sum()
    }

    /// Recovery slices that checked, one per distinct equation.
    pub fn recovery_slices(&self) -> usize {
        self.recovery.len()
    }

    /// Checks every file the set covers, slice by slice (MD5 and CRC32 of each; bytes missing from a
    /// short file count as zeros, as in the slice's padding). Slices that cannot be read are damaged.
    pub fn check(&self) -> Result<Damage, RecoveryError> {
        let mut files = Vec::new();
        for source in &self.sources {
            let slices = source.checksums.len();
            let (found, damaged) = match open_regular(&source.path) {
                Ok((file, length)) => (Some(length), self.check_file(source, &file, length)?),
                Err(RecoveryError::Read { source: error, .. })
                    if error.kind() == io::ErrorKind::NotFound =>
                {
                    (None, (0..slices).collect())
                }
                Err(error) => return Err(error),
            };
            files.push(FileDamage {
                path: source.path.clone(),
                length: source.description.length,
                found,
                slices,
                damaged,
            });
        }
        Ok(Damage {
            bundle: self.bundle.clone(),
            files,
            slice_size: self.slice_size,
            recovery_slices: self.recovery.len(),
        })
    }

    /// The damaged slices of one file, checked by as many threads as there are cores, each reading its
    /// own run of slices in order.
    fn check_file(
        &self,
        source: &Source,
        file: &File,
        found: u64,
    ) -> Result<Vec<usize>, RecoveryError> {
        let count = source.checksums.len();
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, count.max(1));
        let per_thread = count.div_ceil(threads).max(1);
        let slice_size = self.slice_size;
        let length = source.description.length.min(found);
        let results: Vec<io::Result<Vec<usize>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..count)
                .step_by(per_thread)
                .map(|first| {
                    let slices = first..(first + per_thread).min(count);
                    scope.spawn(move || {
                        damaged_slices(file, length, slice_size, &source.checksums, slices)
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(io::Error::other("a checking thread failed")))
                })
                .collect()
        });
        let mut damaged = Vec::new();
        for result in results {
            damaged.extend(result.map_err(|error| RecoveryError::Read {
                path: source.path.clone(),
                source: error,
            })?);
        }
        Ok(damaged)
    }
}

/// The slices in `slices` whose bytes (the file's first `length` bytes, zeros past them) do not have
/// their recorded checksums.
fn damaged_slices(
    file: &File,
    length: u64,
    slice_size: u64,
    checksums: &[SliceChecksum],
    slices: Range<usize>,
) -> io::Result<Vec<usize>> {
    let mut buffer = vec![0u8; slice_size.min(1 << 20) as usize];
    let mut damaged = Vec::new();
    'slices: for index in slices {
        crate::interrupt::check()?;
        let start = index as u64 * slice_size;
        let end = (start + slice_size).min(length.max(start));
        let (mut md5, mut crc) = (Md5::new(), crc32fast::Hasher::new());
        let mut at = start;
        while at < end {
            let n = (end - at).min(buffer.len() as u64) as usize;
            // A sector the medium cannot read is damage like any other.
            if file.read_exact_at(&mut buffer[..n], at).is_err() {
                damaged.push(index);
                continue 'slices;
            }
            md5.update(&buffer[..n]);
            crc.update(&buffer[..n]);
            at += n as u64;
        }
        if packet::finish_slice(md5, crc, slice_size - (end - start)) != checksums[index] {
            damaged.push(index);
        }
    }
    Ok(damaged)
}

/// What checking found.
#[derive(Debug, Clone)]
pub struct Damage {
    bundle: PathBuf,
    pub files: Vec<FileDamage>,
    pub slice_size: u64,
    /// Recovery slices that checked, one per distinct equation.
    pub recovery_slices: usize,
}

#[derive(Debug, Clone)]
pub struct FileDamage {
    pub path: PathBuf,
    /// The length the recovery data records.
    pub length: u64,
    /// The length found, or None for a missing file.
    pub found: Option<u64>,
    pub slices: usize,
    /// Damaged slices, ascending.
    pub damaged: Vec<usize>,
}

impl FileDamage {
    /// Whether the file must be rewritten: damaged slices, or a length other than the recorded one.
    pub fn needs_repair(&self) -> bool {
        !self.damaged.is_empty() || self.found != Some(self.length)
    }

    /// The byte ranges of the file its damaged slices cover, adjacent ones joined.
    pub fn damaged_ranges(&self, slice_size: u64) -> Vec<Range<u64>> {
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for &slice in &self.damaged {
            let start = slice as u64 * slice_size;
            let end = (start + slice_size).min(self.length);
            match ranges.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => ranges.push(start..end),
            }
        }
        ranges
    }
}

impl Damage {
    pub fn damaged_slices(&self) -> usize {
        self.files.iter().map(|f| f.damaged.len()).sum()
    }

    /// Every file present, at its length, every slice intact.
    pub fn is_intact(&self) -> bool {
        !self.files.iter().any(FileDamage::needs_repair)
    }

    pub fn is_repairable(&self) -> bool {
        self.damaged_slices() <= self.recovery_slices
    }

    /// How many more recovery slices a repair would need.
    pub fn shortfall(&self) -> usize {
        self.damaged_slices().saturating_sub(self.recovery_slices)
    }

    pub fn bundle(&self) -> &Path {
        &self.bundle
    }
}

/// A name PAR2 may give a file beside its recovery data: one path component, no control characters.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// Passes on an interruption as the error reading `path`; any other error is that file's damage.
fn stop_if_interrupted(path: &Path) -> Result<(), RecoveryError> {
    crate::interrupt::check().map_err(|source| RecoveryError::Read {
        path: path.to_path_buf(),
        source,
    })
}
