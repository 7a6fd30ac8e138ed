//! `ferry merge BASE... DELTA`: the full bundle, rebuilt from a delta and its bases.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::deliver::verified_by;
use super::reporter;
use crate::catalog::Catalogs;
use crate::cli::MergeArgs;
use crate::deliver::merge::{locate, merge, MergeError, Merged, Quick};
use crate::error::{Error, Result};
use crate::progress::{line_to_stderr, DecimalBytes, Stderr};
use crate::tarball::delta::FullBundle;
use crate::tarball::layout::DELTA_JSON;
use crate::trust::{Anchors, Verdicts};

pub fn run(catalogs: &Catalogs, args: &MergeArgs, out: &mut dyn Write) -> Result<()> {
    crate::interrupt::install();
    let (delta, bases) = args
        .paths
        .split_last()
        .expect("clap requires a base and a delta");
    let reporter = reporter(args.quiet);
    let anchors = Anchors::load(args.trust.trust.as_deref(), args.trust.lock.as_deref())?;
    // A lock is checked against every image, which only the byte-for-byte way reads.
    let quick = match anchors.has_lock() {
        true => None,
        false => Some(locate(delta, bases)),
    };
    let declined = match quick {
        None => None,
        Some(Quick::Done(located)) => {
            let full = &located.record().bundle;
            let path = output_path(args.output.as_deref(), &full.name, delta)?;
            match recorded_signature(&anchors, delta, full) {
                Err(reason) => Some(reason),
                Ok(verdicts) => match located.write(&path, args.split, reporter.as_ref())? {
                    Quick::Done(merged) => {
                        reporter.finish();
                        verdicts.write(&mut Stderr).map_err(Error::Output)?;
                        let images = located.metadata().images.iter().map(|i| &i.name);
                        return report(out, &path, &merged, full, images);
                    }
                    Quick::Declined(reason) => Some(reason),
                },
            }
        }
        Some(Quick::Declined(reason)) => Some(reason),
    };
    if let Some(declined) = declined {
        line_to_stderr(&format!(
            "merge: {declined}; verifying the delta and its bases byte for byte to say what is wrong"
        ));
    }
    let bundle = verified_by(catalogs, delta, bases, &anchors, false, out)?;
    let Some(record) = bundle.delta() else {
        return Err(MergeError::NotADelta(delta.clone()).into());
    };
    let full = &record.record.bundle;
    let path = output_path(args.output.as_deref(), &full.name, delta)?;
    let merged = merge(&bundle, &path, args.split, reporter.as_ref())?;
    reporter.finish();
    let images = bundle.metadata().images.iter().map(|i| &i.name);
    report(out, &path, &merged, full, images)
}

/// What the anchors say of the full bundle's signature the delta carries, checked over the checksum file
/// that bundle has: the output's sha256, checked before it is put in place, then carries it over. A
/// refusal is explained by the byte-for-byte way.
fn recorded_signature(
    anchors: &Anchors,
    delta: &Path,
    full: &FullBundle,
) -> std::result::Result<Verdicts, String> {
    let checksum = crate::tarball::checksum_text(&full.sha256, &full.name);
    let signature = full.signature.as_deref().unwrap_or_default();
    let shown = delta.join(DELTA_JSON);
    let verdicts =
        anchors.check_signature_over(&shown, signature.as_bytes(), &shown, checksum.as_bytes());
    match verdicts.refusal(delta) {
        Some(refusal) => Err(format!(
            "the full bundle's signature was refused ({refusal})"
        )),
        None => Ok(verdicts),
    }
}

/// The merged bundle's line, and whether it is signed.
fn report<'a>(
    out: &mut dyn Write,
    path: &Path,
    merged: &Merged,
    full: &FullBundle,
    images: impl Iterator<Item = &'a String>,
) -> Result<()> {
    let written = &merged.written;
    let images: std::collections::BTreeSet<&String> = images.collect();
    let line = format!(
        "{}  {} image(s), {}, sha256 {}, as the delta names it",
        path.display(),
        images.len(),
        DecimalBytes(written.bytes),
        written.sha256.hex()
    );
    writeln!(out, "{line}").map_err(Error::Output)?;
    let note = match (&full.signature, merged.signed) {
        (Some(_), true) => format!(
            "  signed: {} (the signature the delta carries)",
            crate::tarball::sibling(path, ".sig").display()
        ),
        (Some(_), false) => format!(
            "  not signed: the delta carries the signature of {}; merge to that name to keep it",
            full.name
        ),
        (None, _) => return Ok(()),
    };
    writeln!(out, "{note}").map_err(Error::Output)
}

/// `-o` as `ferry bundle` takes it: a file, or a directory (existing, or ending in `/`) for the full
/// bundle's own name, which the current directory gets by default. That name comes from the delta, so it
/// is used only when it is a plain file name: a crafted one must not write elsewhere.
fn output_path(output: Option<&Path>, name: &str, delta: &Path) -> Result<PathBuf> {
    let own_name = || {
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && !name.contains('/')
            && !name.chars().any(char::is_control);
        match plain {
            true => Ok(PathBuf::from(name)),
            false => Err(MergeError::NotAFileName {
                delta: delta.to_path_buf(),
                name: name.to_string(),
            }),
        }
    };
    match output {
        Some(out) if out.is_dir() || out.as_os_str().as_bytes().ends_with(b"/") => {
            let name = own_name()?;
            std::fs::create_dir_all(out).map_err(|source| Error::Io {
                path: out.to_path_buf(),
                source,
            })?;
            Ok(out.join(name))
        }
        Some(out) => Ok(out.to_path_buf()),
        None => Ok(own_name()?),
    }
}
