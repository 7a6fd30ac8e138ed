use std::io::Write;

use serde_json::json;

use super::verify::{damaged, verify_or_explain, write_uncarried, write_verdicts};
use super::{runtime, write_json};
use crate::catalog::Catalogs;
use crate::cli::{LoadArgs, PushArgs, TrustArgs};
use crate::deliver::helm_values;
use crate::deliver::load::{
    explain_failure, load as load_bundle, Feed, LoadError, LoadOptions, Loader, Runtime,
};
use crate::deliver::node::Node;
use crate::deliver::platform::images_for;
use crate::deliver::push::{plan, push as push_bundle, Pushed};
use crate::error::{Error, Result};
use crate::image::Platform;
use crate::progress::{
    line_to_stderr, to_stderr, DecimalBytes, Reporter, Silent, Stderr, TerminalReporter,
};
use crate::reference::Reference;
use crate::registry::RegistryOptions;
use crate::tarball::ProductRecord;
use crate::trust::Anchors;
use crate::verify::{Report, Verified, VerifiedImage, VerifyOptions};

/// Nothing is delivered from a bundle that is not provably intact, nor from one its anchors refuse;
/// with `intact_only`, the images of a damaged one that verified are. A delta is verified with `bases`,
/// which must be the files it names.
pub(super) fn verified(
    catalogs: &Catalogs,
    path: &std::path::Path,
    bases: &[std::path::PathBuf],
    trust: &TrustArgs,
    intact_only: bool,
    out: &mut dyn Write,
) -> Result<Verified> {
    let anchors = Anchors::load(trust.trust.as_deref(), trust.lock.as_deref())?;
    verified_by(catalogs, path, bases, &anchors, intact_only, out)
}

/// [`verified`], with the anchors already loaded.
pub(super) fn verified_by(
    catalogs: &Catalogs,
    path: &std::path::Path,
    bases: &[std::path::PathBuf],
    anchors: &Anchors,
    intact_only: bool,
    out: &mut dyn Write,
) -> Result<Verified> {
    let options = VerifyOptions {
        deep: anchors.needs_deep(),
        bases: bases.to_vec(),
        ..Default::default()
    };
    let report = verify_or_explain(path, &options, catalogs)?;
    proven(report, anchors, intact_only, out)
}

/// The proof `report` gives, if it is intact and its anchors accept it (with `intact_only`, the images
/// of a damaged one that verified); its verdicts are printed if not.
pub(super) fn proven(
    report: Report,
    anchors: &Anchors,
    intact_only: bool,
    out: &mut dyn Write,
) -> Result<Verified> {
    let path = report.bundle.clone();
    let verdicts = anchors.check(&report);
    let verified = report.into_verified().or_else(|report| {
        if intact_only {
            if let Ok((intact, left_out)) = report.clone().into_intact_images() {
                for name in left_out {
                    line_to_stderr(&format!("left out (damaged): {name}"));
                }
                return Ok(intact);
            }
        }
        write_verdicts(out, &report).map_err(Error::Output)?;
        Err(damaged(&report))
    })?;
    if let Some(refusal) = verdicts.refusal(&path) {
        return Err(refusal.into());
    }
    // Say who signed on stderr: stdout is the mapping scripts read.
    verdicts.write(&mut Stderr).map_err(Error::Output)?;
    Ok(verified)
}

pub fn push(catalogs: &Catalogs, args: &PushArgs, out: &mut dyn Write) -> Result<()> {
    let report = verified(
        catalogs,
        &args.path,
        &args.bases.bases,
        &args.trust,
        args.intact_only,
        out,
    )?;
    if args.dry_run {
        let planned: Vec<Pushed> = plan(&report, &args.to)?
            .into_iter()
            .map(|planned| Pushed {
                source: planned.upstream.to_string(),
                target: planned.target.to_string(),
                digest: planned.digest,
            })
            .collect();
        write_helm_values(args, &report, &planned, catalogs)?;
        if args.json {
            write_json(out, &json!({"dry_run": true, "images": planned}))?;
        } else {
            write_mapping(out, &planned)?;
        }
        return write_pin_note(args, &report, &planned);
    }
    let options = RegistryOptions {
        insecure: args.insecure.clone(),
        ca_certs: args.ca_certs.clone(),
        ..Default::default()
    };
    let reporter: Box<dyn Reporter> = if args.quiet {
        Box::new(Silent)
    } else {
        Box::new(TerminalReporter::new())
    };
    let summary = runtime()?.block_on(push_bundle(
        &report,
        &args.to,
        &options,
        usize::from(args.jobs),
        reporter.as_ref(),
    ))?;
    reporter.finish();
    write_helm_values(args, &report, &summary.images, catalogs)?;
    if args.json {
        write_json(out, &json!(summary))?;
        return write_pin_note(args, &report, &summary.images);
    }
    write_mapping(out, &summary.images)?;
    write_pin_note(args, &report, &summary.images)?;
    reporter.phase(&format!(
        "pushed {} image(s): uploaded {} in {} blob(s), mounted {}, {} already present",
        summary.images.len(),
        DecimalBytes(summary.uploaded_bytes),
        summary.uploaded_blobs,
        summary.mounted_blobs,
        summary.present_blobs
    ));
    Ok(())
}

/// A delta whose bases were not given holds too little to be loaded or served: say which to give.
pub(super) fn needs_bases(bundle: &Verified, command: &str) -> Result<()> {
    let Some(delta) = bundle.delta().filter(|delta| !delta.complete()) else {
        return Ok(());
    };
    let bases: Vec<String> = delta
        .record
        .bases
        .iter()
        .filter(|base| !base.blobs.is_empty())
        .map(|base| base.shown())
        .collect();
    Err(Error::Usage(format!(
        "{} is a delta: {command} needs the base(s) it was made from as well, {}: give each with --base",
        bundle.bundle().display(),
        bases.join(", ")
    )))
}

/// `--helm-values FILE`: the chart's `images:` section pointing at the pushed (or, dry, planned) names.
/// One product with Helm keys writes FILE; several write one file each, the catalog's name before FILE's
/// extension (`values.yaml`: `values-huawei-csi.yaml`, ...), each said on stderr.
fn write_helm_values(
    args: &PushArgs,
    bundle: &Verified,
    pushed: &[Pushed],
    catalogs: &Catalogs,
) -> Result<()> {
    let Some(file) = &args.helm_values else {
        return Ok(());
    };
    let products = bundle.metadata().products();
    if products.is_empty() {
        return Err(Error::Usage(format!(
            "--helm-values {}: the bundle names no catalog release, so there are no Helm values to write",
            file.display()
        )));
    }
    let values = helm_values(bundle, pushed, catalogs).map_err(|e| {
        Error::Usage(format!(
            "--helm-values {}: {e}: its chart's keys are not known (add its catalog with --catalog-file)",
            file.display()
        ))
    })?;
    let several = values.len() > 1;
    if values.is_empty() {
        return Err(Error::Usage(format!(
            "--helm-values {}: no release in the bundle ({}) names Helm keys for its images",
            file.display(),
            products
                .iter()
                .map(ProductRecord::spec)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    for product in values {
        let path = match several {
            true => helm_values_path(file, &product.catalog),
            false => file.clone(),
        };
        std::fs::write(&path, &product.yaml).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        if several {
            line_to_stderr(&format!(
                "Helm values for {}: {}",
                product.catalog,
                path.display()
            ));
        }
    }
    Ok(())
}

/// `values.yaml` for `huawei-csi`: `values-huawei-csi.yaml`, in the same directory.
fn helm_values_path(file: &std::path::Path, catalog: &str) -> std::path::PathBuf {
    let stem = file.file_stem().unwrap_or_default().to_string_lossy();
    let name = match file.extension() {
        Some(extension) => format!("{stem}-{catalog}.{}", extension.to_string_lossy()),
        None => format!("{stem}-{catalog}"),
    };
    file.with_file_name(name)
}

/// On stderr, after the mapping: which upstream index pins will not resolve in the target registry, as
/// the bundle does not carry those indexes, and the pushed platform manifests to pin instead.
fn write_pin_note(args: &PushArgs, bundle: &Verified, pushed: &[Pushed]) -> Result<()> {
    let pin = |image: &Reference, manifest: &crate::digest::Digest| {
        let source = image.by_tag_if_tagged().to_string();
        pushed.iter().find(|p| p.source == source)?;
        let target = args.to.map(image).ok()?;
        Some(target.by_digest(manifest.clone()).to_string())
    };
    let place = format!("from {}", args.to);
    write_uncarried(&mut std::io::stderr(), bundle.metadata(), &place, pin).map_err(Error::Output)
}

fn write_mapping(out: &mut dyn Write, images: &[Pushed]) -> Result<()> {
    for image in images {
        writeln!(
            out,
            "{} -> {}  {}",
            image.source, image.target, image.digest
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

pub fn load(catalogs: &Catalogs, args: &LoadArgs, out: &mut dyn Write) -> Result<()> {
    let report = verified(
        catalogs,
        &args.path,
        &args.bases.bases,
        &args.trust,
        args.intact_only,
        out,
    )?;
    needs_bases(&report, "load")?;
    let options = LoadOptions {
        runtime: args.runtime.map(Runtime::from),
        namespace: args.namespace.clone(),
        address: args.address.clone(),
    };
    let choice = Node::system().choose(&options)?;
    // Said before the load, on stderr (stdout is what was loaded): where ferry looked, and why this one.
    let told = options.runtime.is_some() || options.address.is_some();
    line_to_stderr(&format!(
        "runtime: {} ({}){}",
        choice.runtime.name(),
        choice.why,
        if told {
            ""
        } else {
            "; --runtime and --address choose another"
        }
    ));
    let (runtime, socket) = (choice.runtime, choice.socket);
    let platform = args.platform.clone().unwrap_or_else(Platform::host);
    let feed = match images_for(&report, &platform).map_err(|why| LoadError::Platform {
        bundle: report.bundle().display().to_string(),
        why,
    })? {
        Some(images) => Feed::Platform {
            platform: platform.clone(),
            images,
        },
        None => Feed::Whole,
    };
    let loader = Loader {
        runtime,
        socket: socket.as_deref(),
        namespace: &args.namespace,
    };
    let reporter = TerminalReporter::bars_only();
    let said = load_bundle(&report, &feed, &loader, &reporter)
        .map_err(|error| explain_failure(error, runtime, &report))?;
    reporter.finish();
    to_stderr(&said);
    let loaded: Vec<&VerifiedImage> = match &feed {
        Feed::Platform { images, .. } => images.clone(),
        Feed::Whole => report.images().iter().collect(),
    };
    for image in &loaded {
        writeln!(
            out,
            "loaded {}  {}  {}  into {runtime:?}",
            image.reference(),
            image.manifest(),
            image.platform()
        )
        .map_err(Error::Output)?;
    }
    if let Feed::Platform { images, .. } = &feed {
        let mut names: Vec<&Reference> = report.images().iter().map(|i| i.reference()).collect();
        names.dedup();
        for lacking in names
            .iter()
            .filter(|n| !images.iter().any(|i| i.reference() == **n))
        {
            writeln!(
                out,
                "not loaded {lacking}: the bundle has it for other platforms only"
            )
            .map_err(Error::Output)?;
        }
    }
    Ok(())
}
