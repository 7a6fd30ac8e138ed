use std::collections::BTreeMap;
use std::io::Write;

use serde_json::json;

use super::{write_json, write_table};
use crate::catalog::Catalogs;
use crate::cli::{InspectArgs, VerifyArgs};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::DecimalBytes;
use crate::reference::Reference;
use crate::tarball::BundleMetadata;
use crate::trust::Anchors;
use crate::verify::{check_recovery, verify, Checksum, Report, VerifyError, VerifyOptions};

pub fn run(catalogs: &Catalogs, args: &VerifyArgs, out: &mut dyn Write) -> Result<()> {
    let anchors = Anchors::load(args.trust.trust.as_deref(), args.trust.lock.as_deref())?;
    let options = VerifyOptions {
        deep: args.deep || anchors.needs_deep(),
        kubernetes: args.k8s,
        bases: args.bases.bases.clone(),
    };
    let report = verify_or_explain(&args.path, &options, catalogs)?;
    let trust = anchors.check(&report);
    if args.json {
        write_json(
            out,
            &json!({"intact": report.intact(), "report": report, "trust": trust}),
        )?;
    } else {
        write_verdicts(out, &report).map_err(Error::Output)?;
        trust.write(out).map_err(Error::Output)?;
    }
    if !report.intact() {
        return Err(damaged(&report));
    }
    trust.refusal(&args.path).map_or(Ok(()), |e| Err(e.into()))
}

/// Verifies the bundle at `path`; one that cannot even be read, with recovery data beside it, fails
/// saying what that data can do.
pub(super) fn verify_or_explain(
    path: &std::path::Path,
    options: &VerifyOptions,
    catalogs: &Catalogs,
) -> Result<Report> {
    verify(path, options, catalogs).map_err(|error| match (error, check_recovery(path)) {
        (VerifyError::Read(read), Some(check)) => Error::DamagedWithRecovery {
            path: path.to_path_buf(),
            check,
            cause: Some(read),
        },
        (error, _) => error.into(),
    })
}

/// The error for a damaged bundle: what its recovery data can do, if it has some.
pub(super) fn damaged(report: &Report) -> Error {
    match &report.recovery {
        Some(check) => Error::DamagedWithRecovery {
            path: report.bundle.clone(),
            check: check.clone(),
            cause: None,
        },
        None => Error::Damaged(report.bundle.clone()),
    }
}
/// Problems quote what the bundle says (names, annotations): shown escaped, and cut at this many
/// characters.
const MAX_PROBLEM: usize = 1000;

pub(super) fn write_verdicts(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    write_caveats(out, report)?;
    match &report.checksum {
        Checksum::Verified { files, .. } => {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            writeln!(out, "checksum: matches {}", names.join(", "))?;
        }
        Checksum::Absent => writeln!(out, "checksum: no .sha256 file beside the bundle; every blob and document was checked instead")?,
        Checksum::Unreadable { file, reason } => {
            writeln!(out, "checksum: UNREADABLE {}: {reason}", file.display())?
        }
        Checksum::Mismatch { file, name, expected, actual } => {
            writeln!(out, "checksum: MISMATCH for {name} in {}: expected {expected}, read {actual}", file.display())?
        }
    }
    for image in &report.images {
        let digest = image
            .manifest
            .as_ref()
            .map(Digest::to_string)
            .unwrap_or_default();
        // In a bundle of several platforms each image is checked, and listed, once per platform.
        let platform = match (&image.index, &image.platform) {
            (Some(_), Some(platform)) => format!("  {platform}"),
            _ => String::new(),
        };
        // The name is the bundle's own annotation: shown escaped and cut, as in a table.
        let name = crate::io::shown(&image.name, 200);
        if image.problems.is_empty() {
            writeln!(out, "ok    {name}  {digest}{platform}")?;
        } else {
            writeln!(out, "BAD   {name}  {digest}{platform}")?;
            for problem in &image.problems {
                writeln!(out, "        {}", crate::io::shown(problem, MAX_PROBLEM))?;
            }
        }
    }
    for missing in &report.missing {
        writeln!(
            out,
            "MISSING  {missing} (the catalog lists it for this Kubernetes version)"
        )?;
    }
    for line in report.delta.iter().flat_map(|delta| delta.lines()) {
        writeln!(out, "{line}")?;
    }
    for problem in &report.problems {
        writeln!(out, "problem: {}", crate::io::shown(problem, MAX_PROBLEM))?;
    }
    for file in &report.damaged_recovery_files {
        writeln!(
            out,
            "recovery: {file} does not match its checksum: damaged (its intact blocks are still used)"
        )?;
    }
    if let Some(check) = &report.recovery {
        writeln!(out, "recovery: {check}")?;
    }
    let bad = report
        .images
        .iter()
        .filter(|i| !i.problems.is_empty())
        .count();
    if report.intact() {
        let mut names: Vec<&str> = report.images.iter().map(|i| i.name.as_str()).collect();
        names.dedup();
        let count = match report.metadata.as_ref().and_then(|m| m.platforms.as_ref()) {
            Some(platforms) => format!(
                "{} images for {} ({} manifests)",
                names.len(),
                platforms.join(", "),
                report.images.len()
            ),
            None => format!("{} images", report.images.len()),
        };
        // A delta's blobs: its own, and those its bases supplied (checked) or would (not checked).
        let from_bases = |given: bool| -> usize {
            report
                .delta
                .iter()
                .flat_map(|delta| &delta.bases)
                .filter(|base| base.file.is_some() == given)
                .map(|base| base.blobs)
                .sum()
        };
        let (supplied, unchecked) = (from_bases(true), from_bases(false));
        let blobs = match supplied {
            0 => format!("{} blobs", report.blobs),
            n => format!("{} blobs ({n} from its bases)", report.blobs + n),
        };
        let bases = match unchecked {
            0 => String::new(),
            n => format!(
                "; {n} blob(s) it expects from its bases were not (give the bases with --base)"
            ),
        };
        writeln!(
            out,
            "intact: {count}, {blobs}, {}; every byte checked{bases}",
            DecimalBytes(report.bytes)
        )
    } else {
        writeln!(
            out,
            "DAMAGED or INCOMPLETE: {bad} of {} images bad, {} missing, {} other problem(s)",
            report.images.len(),
            report.missing.len(),
            report.problems.len()
        )
    }
}

/// What the bundle is besides what its releases need (incomplete, extended), first, so that nobody
/// takes it for the whole set.
fn write_caveats(out: &mut dyn Write, report: &Report) -> std::io::Result<()> {
    for caveat in report.metadata.iter().flat_map(|m| m.caveats()) {
        writeln!(out, "{caveat}")?;
    }
    Ok(())
}

pub fn inspect(catalogs: &Catalogs, args: &InspectArgs, out: &mut dyn Write) -> Result<()> {
    let report = verify(&args.path, &VerifyOptions::default(), catalogs)?;
    let mut users: BTreeMap<&Digest, usize> = BTreeMap::new();
    for layer in report.images.iter().flat_map(|i| &i.layers) {
        *users.entry(layer).or_default() += 1;
    }
    let referenced: u64 = report.images.iter().map(|i| i.size).sum();
    let metadata = report.metadata.as_ref();
    if args.json {
        // What `bundle --since` reads of a base (its identity, every blob, each image's blobs), and more.
        let description = report.describe();
        let mut value = serde_json::to_value(&description).map_err(|e| Error::Output(e.into()))?;
        value["images"] = report
            .images
            .iter()
            .zip(&description.images)
            .map(|(i, described)| {
                json!({
                    "name": i.name, "platform": i.platform.as_ref().map(ToString::to_string), "manifest": i.manifest, "index": i.index, "size": i.size,
                    "layers": i.layers.len(), "shared_layers": i.layers.iter().filter(|l| users[l] > 1).count(),
                    "blobs": described.blobs,
                })
            })
            .collect();
        value["referenced_bytes"] = json!(referenced);
        value["metadata"] = json!(metadata);
        value["delta"] = json!(report.delta);
        value["intact"] = json!(report.intact());
        value["unresolvable_index_pins"] = json!(metadata
            .map(BundleMetadata::uncarried_indexes)
            .unwrap_or_default());
        return write_json(out, &value);
    }
    write_caveats(out, &report).map_err(Error::Output)?;
    let mut rows = vec![
        ["IMAGE", "PLATFORM", "MANIFEST", "SIZE", "LAYERS", "SHARED"]
            .map(String::from)
            .to_vec(),
    ];
    for image in &report.images {
        rows.push(vec![
            image.name.clone(),
            image
                .platform
                .as_ref()
                .map_or_else(|| "?".into(), ToString::to_string),
            image
                .manifest
                .as_ref()
                .map(|d| d.to_string()[..19].to_string())
                .unwrap_or_default(),
            DecimalBytes(image.size).to_string(),
            image.layers.len().to_string(),
            image
                .layers
                .iter()
                .filter(|l| users[l] > 1)
                .count()
                .to_string(),
        ]);
    }
    write_table(out, &rows)?;
    write_summary(out, &report, referenced)
}

/// What `inspect` says under its table: the bundle, its sharing, and what its metadata records.
fn write_summary(out: &mut dyn Write, report: &Report, referenced: u64) -> Result<()> {
    let (stored, metadata) = (report.bytes, report.metadata.as_ref());
    let line = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(Error::Output);
    line(out, String::new())?;
    line(
        out,
        format!(
            "bundle:     {} ({}, {} blobs)",
            report.bundle.display(),
            DecimalBytes(stored),
            report.blobs
        ),
    )?;
    line(
        out,
        format!(
            "sharing:    images reference {}; shared blobs save {}",
            DecimalBytes(referenced),
            DecimalBytes(referenced.saturating_sub(stored))
        ),
    )?;
    let dash = || "-".to_string();
    let products = metadata.map(|m| m.products()).unwrap_or_default();
    line(
        out,
        format!(
            "release:    {}",
            match products.as_slice() {
                [] => dash(),
                products => products
                    .iter()
                    .map(|p| match &p.service {
                        Some(service) => format!("{} {} ({service})", p.catalog, p.release),
                        None => format!("{} {}", p.catalog, p.release),
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ),
    )?;
    line(
        out,
        format!(
            "kubernetes: {}",
            metadata
                .and_then(|m| m.kubernetes.as_ref())
                .map_or_else(dash, |k| k.span.clone())
        ),
    )?;
    line(
        out,
        format!(
            "platform:   {}",
            metadata.map_or_else(dash, |m| match m.carries_every_platform() {
                true => format!(
                    "{} (each image's upstream index whole, attestations too)",
                    m.all_platforms().join(", ")
                ),
                false => m.all_platforms().join(", "),
            })
        ),
    )?;
    line(
        out,
        format!(
            "made by:    ferry {}",
            metadata.map_or_else(|| "?".to_string(), |m| m.ferry.version.clone())
        ),
    )?;
    let skipped: Vec<String> = metadata
        .map(|m| m.skipped.iter().map(ToString::to_string).collect())
        .unwrap_or_default();
    line(
        out,
        format!(
            "skipped:    {}",
            if skipped.is_empty() {
                "nothing".to_string()
            } else {
                skipped.join(", ")
            }
        ),
    )?;
    for delta in report.delta.iter().flat_map(|delta| delta.lines()) {
        line(out, delta)?;
    }
    if !report.intact() {
        line(
            out,
            "warning:    this bundle is damaged; run `ferry verify` for the details".into(),
        )?;
    }
    if let Some(metadata) = metadata {
        write_uncarried(
            out,
            metadata,
            "after push or from ferry serve",
            |image, manifest| Some(image.by_digest(manifest.clone()).to_string()),
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// The note that pods pinned to an upstream index the bundle does not carry will not pull (`where_`),
/// and each image's platforms' manifests to pin instead, as `pin` names them in the registry pulled
/// from (an image it gives no name is left out).
pub(super) fn write_uncarried(
    out: &mut dyn Write,
    metadata: &BundleMetadata,
    where_: &str,
    pin: impl Fn(&Reference, &Digest) -> Option<String>,
) -> std::io::Result<()> {
    let mut lines = Vec::new();
    for uncarried in metadata.uncarried_indexes() {
        let Ok(image) = uncarried.image.parse::<Reference>() else {
            continue;
        };
        let pins: Option<Vec<String>> = uncarried
            .pin_instead
            .iter()
            .map(|p| Some(format!("    {}  {}", p.platform, pin(&image, &p.manifest)?)))
            .collect();
        if let Some(pins) = pins {
            lines.push(format!("  {image} (upstream index {})", uncarried.index));
            lines.extend(pins);
        }
    }
    if lines.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "note: a pod pinned to the upstream index of an image below will not pull {where_}: this \
         bundle carries {} only, not the indexes (`--platform all` carries them whole); pin a \
         platform's manifest instead:",
        metadata.all_platforms().join(", ")
    )?;
    for line in lines {
        writeln!(out, "{}", crate::io::shown(&line, MAX_PROBLEM))?;
    }
    Ok(())
}
