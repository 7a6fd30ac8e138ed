//! The `sha256sum -c` files that travel beside a bundle.

use std::path::{Path, PathBuf};

use super::Checksum;
use crate::digest::Digest;
use crate::tarball::read::Source;
use crate::tarball::{file_name, sibling};

/// The lines of a `sha256sum -c` file as (name, digest); None if one does not read as such.
pub fn checksum_lines(text: &str) -> Option<Vec<(String, Digest)>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(checksum_line)
        .collect()
}
/// The most a checksum file may hold: a `.parts.sha256` of the most parts (1000) with the longest file
/// names (255 bytes) is about 330 kB.
const MAX_CHECKSUM_FILE: u64 = 1 << 20;

/// `<hex>  <name>` (or `<hex> *<name>`, binary mode), hex in either case as `sha256sum -c` accepts it.
fn checksum_line(line: &str) -> Option<(String, Digest)> {
    let (hex, name) = line.split_once("  ").or_else(|| line.split_once(" *"))?;
    Some((
        name.trim().to_string(),
        Digest::from_hex(&hex.trim().to_ascii_lowercase()).ok()?,
    ))
}

/// Compares the bytes read with every `sha256sum -c` file beside the bundle. Lines for the bundle's
/// recovery files (`NAME.par2`, `NAME.vol*.par2`) are checked against those files and returned apart:
/// a damaged recovery file does not make the bundle damaged.
pub(super) fn check_sums(
    source: &Source,
    parts: &[Digest],
    whole: &Digest,
) -> (Checksum, Vec<String>) {
    let mut damaged_recovery = Vec::new();
    let checksum = check_sums_of(source, parts, whole, &mut damaged_recovery);
    (checksum, damaged_recovery)
}

fn check_sums_of(
    source: &Source,
    parts: &[Digest],
    whole: &Digest,
    damaged_recovery: &mut Vec<String>,
) -> Checksum {
    let mut expected: Vec<(PathBuf, Vec<(String, Digest)>)> = Vec::new();
    let split = source.files.len() > 1 || source.files[0] != source.whole;
    let whole_sums = sibling(&source.whole, ".sha256");
    // Each file must name what it vouches for: one that names nothing would otherwise pass vacuously.
    let mut candidates = vec![(whole_sums.clone(), vec![file_name(&source.whole)])];
    if split {
        candidates.push((
            sibling(&source.whole, ".parts.sha256"),
            source.files.iter().map(|p| file_name(p)).collect(),
        ));
    }
    let mut files = Vec::new();
    let mut sums = None;
    for (file, required) in candidates {
        let text = match crate::io::read_side_text(&file, MAX_CHECKSUM_FILE) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Checksum::Unreadable {
                    file,
                    reason: e.to_string(),
                }
            }
        };
        let mut lines = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            // A line that does not read as `sha256sum` output must not pass as a checked one.
            let Some(parsed) = checksum_line(line) else {
                return Checksum::Mismatch {
                    file,
                    name: crate::io::shown(line, 200).into_owned(),
                    expected: "a line '<64 hex digits>  <file name>'".into(),
                    actual: "an unreadable line".into(),
                };
            };
            lines.push(parsed);
        }
        if let Some(unnamed) = required
            .iter()
            .find(|r| !lines.iter().any(|(n, _)| n == *r))
        {
            return Checksum::Mismatch {
                file,
                name: unnamed.clone(),
                expected: "a line for it".into(),
                actual: "none".into(),
            };
        }
        if file == whole_sums {
            sums = Some(text.into_bytes());
        }
        expected.push((file.clone(), lines));
        files.push(file);
    }
    if files.is_empty() {
        return Checksum::Absent;
    }
    let mut actual: Vec<(String, &Digest)> = vec![(file_name(&source.whole), whole)];
    if split {
        actual.extend(source.files.iter().map(|p| file_name(p)).zip(parts));
    }
    let recovery_prefix = format!("{}.", file_name(&source.whole));
    for (file, lines) in &expected {
        for (name, digest) in lines {
            if name.starts_with(&recovery_prefix) && name.ends_with(".par2") && !name.contains('/')
            {
                let path = source.whole.with_file_name(name);
                if recovery_digest(&path).as_ref() != Some(digest)
                    && !damaged_recovery.contains(name)
                {
                    damaged_recovery.push(name.clone());
                }
                continue;
            }
            match actual.iter().find(|(n, _)| n == name) {
                Some((_, got)) if *got == digest => {}
                Some((_, got)) => {
                    return Checksum::Mismatch {
                        file: file.clone(),
                        name: name.clone(),
                        expected: digest.to_string(),
                        actual: got.to_string(),
                    }
                }
                None => {
                    return Checksum::Mismatch {
                        file: file.clone(),
                        name: crate::io::shown(name, 200).into_owned(),
                        expected: digest.to_string(),
                        actual: "not read".into(),
                    }
                }
            }
        }
    }
    Checksum::Verified { files, sums }
}

/// The sha256 that `BUNDLE.sha256` beside `source` names for the bundle's whole file; None when there is
/// no such file or it does not read as `sha256sum` output naming the bundle.
pub(super) fn claimed(source: &Source) -> Option<Digest> {
    let file = sibling(&source.whole, ".sha256");
    let text = crate::io::read_side_text(&file, MAX_CHECKSUM_FILE).ok()?;
    let name = file_name(&source.whole);
    checksum_lines(&text)?
        .into_iter()
        .find(|(named, _)| *named == name)
        .map(|(_, digest)| digest)
}

/// The sha256 of a recovery file, if it is a regular file that can be read.
fn recovery_digest(path: &Path) -> Option<Digest> {
    let metadata = std::fs::symlink_metadata(path).ok()?;
    if !metadata.is_file() {
        return None;
    }
    let mut hashing = crate::digest::Hashing::new(std::io::sink());
    std::io::copy(&mut std::fs::File::open(path).ok()?, &mut hashing).ok()?;
    Some(hashing.finish().1)
}
