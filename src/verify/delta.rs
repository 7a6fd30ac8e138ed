//! A delta and its bases. `ferry-delta.json` must be byte for byte what ferry writes, and consistent: no
//! blob both inside and expected from a base, none expected from two. Each base file given must be one
//! the delta names by sha256 (so it is, every byte, the file the delta was made from), and supplies the
//! blobs the delta expects from it, hashed as they pass; the graph check then sees the union, as the full
//! bundle it stands for. Without bases, the blobs expected are taken as named for the graph, and listed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::stream::{Contents, SeenBlob};
use super::{read, Report, VerifiedDelta, VerifyError};
use crate::digest::Digest;
use crate::progress::DecimalBytes;
use crate::tarball::delta::{DeltaRecord, DELTA_FORMAT};
use crate::tarball::layout::{DELTA_JSON, LEADING_DOCUMENTS};
use crate::tarball::read::ReadError;
use crate::tarball::Documents;

/// What a delta stands for and where its blobs come from.
#[derive(Debug, Clone, Serialize)]
pub struct DeltaReport {
    /// The full bundle it and its bases make: its name, sha256 and size.
    pub full: String,
    pub full_sha256: Digest,
    pub full_bytes: u64,
    pub bases: Vec<BaseVerdict>,
    #[serde(skip)]
    record: DeltaRecord,
    #[serde(skip)]
    documents: Documents,
    /// Blobs expected from bases that were not read: (base, size).
    #[serde(skip)]
    expected: BTreeMap<Digest, (usize, u64)>,
}

/// One base the delta names, and the file that proved to be it, if one was given.
#[derive(Debug, Clone, Serialize)]
pub struct BaseVerdict {
    pub name: String,
    pub sha256: Digest,
    pub release: Option<String>,
    /// The blobs the delta expects from it, and their bytes.
    pub blobs: usize,
    pub bytes: u64,
    pub file: Option<PathBuf>,
}

impl DeltaReport {
    pub(super) fn verified(&self) -> VerifiedDelta {
        VerifiedDelta {
            record: self.record.clone(),
            documents: self.documents.clone(),
            expected: self.expected.clone(),
            files: self.bases.iter().filter_map(|b| b.file.clone()).collect(),
        }
    }

    /// The lines `verify` prints about the delta and each base.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "delta: of {} (sha256 {}, {})",
            self.full,
            self.full_sha256.hex(),
            DecimalBytes(self.full_bytes)
        )];
        for base in &self.bases {
            let from = match &base.file {
                Some(file) => format!("from {}, checked", file.display()),
                None => "expected, not checked (its file was not given)".to_string(),
            };
            lines.push(format!(
                "base:  {} (sha256 {}): {} blob(s), {}, {from}",
                base.name,
                base.sha256.hex(),
                base.blobs,
                DecimalBytes(base.bytes)
            ));
        }
        lines
    }
}

/// Blobs a given base should have supplied and did not hold, to be named with their images once the
/// graph is known.
#[derive(Default)]
pub(super) struct Joined {
    lacking: Vec<(Digest, String)>,
}

impl Joined {
    /// Names each lacking blob with the images that need it.
    pub(super) fn name_images(self, report: &mut Report) {
        for (digest, base) in self.lacking {
            let mut images: Vec<&str> = report
                .images
                .iter()
                .filter(|i| i.config.as_ref() == Some(&digest) || i.layers.contains(&digest))
                .map(|i| i.name.as_str())
                .collect();
            images.dedup();
            let images = match images.is_empty() {
                true => "no image".to_string(),
                false => images.join(", "),
            };
            report.problems.push(format!(
                "blob {digest} of {images} is expected from base {base}, which does not hold it"
            ));
        }
    }
}

/// When the bundle read is a delta: checks its record, reads each base in `bases` and adds the blobs it
/// supplies to `contents` (located after the delta's own files in `report.source`), and records the
/// delta in `report`. A whole bundle given bases is a finding.
pub(super) fn join_bases(
    report: &mut Report,
    contents: &mut Contents,
    bases: &[PathBuf],
    deep: bool,
) -> Result<Joined, VerifyError> {
    if !contents.documents.contains_key(DELTA_JSON) {
        if !bases.is_empty() {
            report.problems.push(format!(
                "{} is a whole bundle, not a delta: it takes no base",
                report.bundle.display()
            ));
        }
        return Ok(Joined::default());
    }
    let Some(record) = contents.document::<DeltaRecord>(DELTA_JSON, &mut report.problems) else {
        return Ok(Joined::default());
    };
    if record.format != DELTA_FORMAT {
        report.problems.push(format!(
            "{DELTA_JSON} is of format {}; this ferry reads format {DELTA_FORMAT}",
            record.format
        ));
        return Ok(Joined::default());
    }
    let mut expected: BTreeMap<Digest, (usize, u64)> = BTreeMap::new();
    for (index, base) in record.bases.iter().enumerate() {
        for blob in &base.blobs {
            if contents.blobs.contains_key(&blob.digest) {
                report.problems.push(format!(
                    "blob {} is inside the delta and expected from base {} too",
                    blob.digest,
                    base.shown()
                ));
            } else if let Some((other, _)) =
                expected.insert(blob.digest.clone(), (index, blob.size))
            {
                report.problems.push(format!(
                    "blob {} is expected from two bases, {} and {}",
                    blob.digest,
                    record.bases[other].shown(),
                    base.shown()
                ));
            }
        }
    }
    let mut files: Vec<Option<PathBuf>> = vec![None; record.bases.len()];
    let mut joined = Joined::default();
    if !bases.is_empty() && report.source.is_gzipped().unwrap_or(false) {
        report.problems.push(format!(
            "{} is gzipped; a delta's blobs are read in place with its bases': gunzip it first",
            report.bundle.display()
        ));
    }
    for path in bases {
        let Some(index) = read_base(report, contents, &record, &files, path, deep, &mut joined)?
        else {
            continue;
        };
        files[index] = Some(path.clone());
        expected.retain(|_, (from, _)| *from != index);
    }
    for (index, base) in record.bases.iter().enumerate() {
        if !bases.is_empty() && files[index].is_none() && !base.blobs.is_empty() {
            report.problems.push(format!(
                "the delta expects {} blob(s) ({}) from base {}, which was not given",
                base.blobs.len(),
                DecimalBytes(base.blob_bytes()),
                base.shown()
            ));
        }
    }
    // Blobs of bases not read stand in for the graph check as they are named; none is at hand.
    for (digest, &(_, size)) in &expected {
        contents
            .blobs
            .entry(digest.clone())
            .or_insert_with(|| SeenBlob::elsewhere(digest, size));
    }
    let documents: Documents = LEADING_DOCUMENTS
        .map(|name| {
            (
                name,
                contents.documents.get(name).cloned().unwrap_or_default(),
            )
        })
        .into();
    report.delta = Some(DeltaReport {
        full: record.bundle.name.clone(),
        full_sha256: record.bundle.sha256.clone(),
        full_bytes: record.bundle.bytes,
        bases: record
            .bases
            .iter()
            .zip(files)
            .map(|(base, file)| BaseVerdict {
                name: base.name.clone(),
                sha256: base.sha256.clone(),
                release: base.release.clone(),
                blobs: base.blobs.len(),
                bytes: base.blob_bytes(),
                file,
            })
            .collect(),
        record,
        documents,
        expected,
    });
    Ok(joined)
}

/// Reads one base file: if it is one of `record`'s bases, by sha256, not matched yet, moves the blobs
/// the delta expects from it into `contents` and its files after the delta's in `report.source`; returns
/// which base it is. Only those blobs are hashed on their own: the sha256 of the whole file proves it is
/// the base the delta was made from, every byte of it. What is wrong is a finding naming the file.
#[allow(clippy::too_many_arguments)]
fn read_base(
    report: &mut Report,
    contents: &mut Contents,
    record: &DeltaRecord,
    matched: &[Option<PathBuf>],
    path: &Path,
    deep: bool,
    joined: &mut Joined,
) -> Result<Option<usize>, VerifyError> {
    let wanted: BTreeSet<Digest> = record
        .bases
        .iter()
        .flat_map(|base| base.blobs.iter().map(|blob| blob.digest.clone()))
        .collect();
    let (base, mut base_contents) = match read(path, deep, Some(&wanted)) {
        Ok(read) => read,
        Err(VerifyError::Read(error)) if !matches!(error, ReadError::Open { .. }) => {
            // Read errors name the file they met, mostly first.
            let cause = crate::causes::chain(&error);
            let shown = path.display().to_string();
            report.problems.push(match cause.starts_with(&shown) {
                true => format!("base {cause}"),
                false => format!("base {shown}: {cause}"),
            });
            return Ok(None);
        }
        Err(error) => return Err(error),
    };
    let Some(index) = record.bases.iter().position(|b| b.sha256 == base.sha256) else {
        let named: Vec<String> = record.bases.iter().map(|b| b.shown()).collect();
        report.problems.push(format!(
            "{} is not a base of this delta: its sha256 is {}, and the delta was made from {}",
            path.display(),
            base.sha256.hex(),
            named.join(", ")
        ));
        return Ok(None);
    };
    let shown = record.bases[index].shown();
    if let Some(other) = &matched[index] {
        report.problems.push(format!(
            "{} and {} are the same base {shown}",
            other.display(),
            path.display()
        ));
        return Ok(None);
    }
    if base.source.is_gzipped().unwrap_or(false) {
        report.problems.push(format!(
            "base {} is gzipped; a base's blobs are read in place: gunzip it first",
            path.display()
        ));
        return Ok(None);
    }
    report.problems.extend(
        base.problems
            .iter()
            .map(|problem| format!("base {}: {problem}", path.display())),
    );
    let shift = joined_length(&report.source.files)?;
    for blob in &record.bases[index].blobs {
        match base_contents.blobs.remove(&blob.digest) {
            Some(seen) => {
                if let Some(&(offset, size)) = base.locations.get(&blob.digest) {
                    report
                        .locations
                        .insert(blob.digest.clone(), (offset + shift, size));
                }
                contents.blobs.insert(blob.digest.clone(), seen);
            }
            _ => joined
                .lacking
                .push((blob.digest.clone(), format!("{shown} ({})", path.display()))),
        }
    }
    report.source.files.extend(base.source.files);
    Ok(Some(index))
}

/// The bytes of `files` read one after another, as `Source::joined` reads them.
fn joined_length(files: &[PathBuf]) -> Result<u64, VerifyError> {
    let mut total = 0u64;
    for file in files {
        let length = std::fs::metadata(file)
            .map_err(|source| {
                VerifyError::Read(crate::tarball::read::ReadError::Open {
                    path: file.clone(),
                    source,
                })
            })?
            .len();
        total = total.checked_add(length).ok_or_else(|| {
            VerifyError::Read(crate::tarball::read::ReadError::Malformed {
                at: crate::tarball::read::Place {
                    file: file.clone(),
                    offset: 0,
                    gunzipped: false,
                },
                reason: "the files read together are longer than any file can be".into(),
            })
        })?;
    }
    Ok(total)
}
