use std::io::{IsTerminal, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{fetch_setup, load_site, plan_images, runtime, FetchSetup};
use crate::bundle::{build, default_name, Built, BundleSpec, LockFile, Request};
use crate::catalog::Catalogs;
use crate::cli::BundleArgs;
use crate::error::{Error, Result};
use crate::fetch::FetchSettings;
use crate::image::Image;
use crate::layer_codec::Codec;
use crate::progress::DecimalBytes;
use crate::resolve::Plan;
use crate::tarball::delta::{delta_file_name, BundleDescription};
use crate::tarball::{Signer, WriteOptions};
use crate::trust::signature::SigningKey;
use crate::trust::TrustError;

/// Where scripts put the passphrase of an encrypted signing key.
const PASSPHRASE_ENV: &str = "FERRY_SIGN_PASSPHRASE";

pub fn run(catalogs: &Catalogs, args: &BundleArgs, out: &mut dyn Write) -> Result<()> {
    // A wrong passphrase must fail before minutes of downloads, not after.
    let signer = args
        .sign
        .as_deref()
        .map(|key| SigningKey::load(key, &passphrase))
        .transpose()?
        .map(|key| Arc::new(key) as Arc<dyn Signer>);
    let write = WriteOptions {
        mtime: source_date_epoch()?,
        split: args.split,
        signer,
        recovery: args.recovery,
    };
    let site = load_site(&args.images, &args.fetch)?;
    let plans = plan_images(catalogs, &args.images, site.as_ref())?;
    // A base that cannot be read is refused before anything is fetched.
    let bases = args
        .since
        .iter()
        .map(|base| describe_base(catalogs, base))
        .collect::<Result<Vec<_>>>()?;
    let FetchSetup {
        cache,
        settings,
        reporter,
    } = fetch_setup(catalogs, &args.fetch, site.as_ref())?;
    let paths = output_paths(&plans, &bases, &settings, args)?;
    let request = Request {
        bundles: plans
            .into_iter()
            .zip(paths)
            .map(|(plan, path)| BundleSpec {
                plan,
                path,
                bases: bases.clone(),
            })
            .collect(),
        fetch: settings,
        write,
        lock: args.lock.clone().map(|path| LockFile {
            path,
            update: args.update_lock,
        }),
    };
    let report = build(&runtime()?, &cache, &request, reporter.as_ref())?;
    // Bundles share images (--all-k8s); each was fetched once.
    let images = report
        .bundles
        .iter()
        .flat_map(|built| &built.images)
        .map(|image| (image.reference.to_string(), &image.manifest.digest))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    super::pull::say_downloaded(reporter.as_ref(), images, &report.pull);
    for built in &report.bundles {
        write_built(out, built, request.write.signer.as_deref()).map_err(Error::Output)?;
    }
    if let Some(lock) = &report.lock {
        let said = if lock.written {
            "wrote"
        } else {
            "every image matches"
        };
        writeln!(
            out,
            "lock: {said} {} ({} images)",
            lock.path.display(),
            lock.images
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

/// The lines that say what one bundle is: its file, images, size and sha256, then what it leaves out
/// and what a loader should know.
fn write_built(
    out: &mut dyn Write,
    built: &Built,
    signer: Option<&dyn Signer>,
) -> std::io::Result<()> {
    let (metadata, written) = (&built.metadata, &built.written);
    writeln!(
        out,
        "{}  {} image(s){}, {}, sha256 {}{}",
        built.path.display(),
        metadata
            .images
            .iter()
            .map(|i| &i.name)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        match &metadata.platforms {
            Some(platforms) => format!(" for {}", platforms.join(", ")),
            None => String::new(),
        },
        DecimalBytes(written.bytes),
        written.sha256.hex(),
        if written.files.len() > 1 {
            format!(", {} parts", written.files.len())
        } else {
            String::new()
        }
    )?;
    if let Some(delta) = &written.delta {
        let full = &delta.bundle;
        writeln!(
            out,
            "  a delta of {} ({}, sha256 {}): {} of its blobs inside",
            full.name,
            DecimalBytes(full.bytes),
            full.sha256.hex(),
            written.blobs
        )?;
        for base in &delta.bases {
            writeln!(
                out,
                "  left to base {}: {} blob(s), {}",
                base.shown(),
                base.blobs.len(),
                DecimalBytes(base.blob_bytes())
            )?;
        }
    }
    for skipped in &built.skipped {
        writeln!(out, "  not included (--skip-vendor): {skipped}")?;
    }
    for image in built.images.iter().filter(|image| has_zstd_layers(image)) {
        writeln!(
            out,
            "  {}: zstd-compressed layers, which Docker Engine before 23.0 cannot load \
             (containerd and podman can)",
            image.reference
        )?;
    }
    if let Some(recovery) = &written.recovery {
        let names: Vec<String> = recovery
            .files
            .iter()
            .map(|f| crate::tarball::file_name(f))
            .collect();
        writeln!(
            out,
            "  recovery: {} blocks of {} bytes for {} (repairs up to {} damaged blocks), {}: {}",
            recovery.recovery_slices,
            recovery.slice_size,
            recovery.source_slices,
            recovery.recovery_slices,
            DecimalBytes(recovery.bytes),
            names.join(", ")
        )?;
    }
    if let Some(signer) = signer {
        writeln!(
            out,
            "  signed: {} ({})",
            crate::tarball::sibling(&built.path, ".sig").display(),
            signer.fingerprint()
        )?;
    }
    Ok(())
}

fn has_zstd_layers(image: &Image) -> bool {
    image
        .layers
        .iter()
        .any(|layer| Codec::of_media_type(&layer.media_type) == Codec::Zstd)
}

/// An encrypted signing key's passphrase: from `FERRY_SIGN_PASSPHRASE`, else asked on the terminal.
fn passphrase(key: &Path) -> std::result::Result<Zeroizing<String>, TrustError> {
    if let Ok(passphrase) = std::env::var(PASSPHRASE_ENV) {
        return Ok(Zeroizing::new(passphrase));
    }
    if !std::io::stdin().is_terminal() {
        return Err(TrustError::Key {
            path: key.to_path_buf(),
            reason: format!("it is encrypted: set {PASSPHRASE_ENV}, or run on a terminal"),
        });
    }
    rpassword::prompt_password(format!("passphrase for {}: ", key.display()))
        .map(Zeroizing::new)
        .map_err(|source| TrustError::Read {
            path: key.to_path_buf(),
            source,
        })
}

/// Where each bundle goes. -o names the file, or the directory for the default names: always so for
/// several bundles, and when it ends with `/`; such a directory is created when missing. The library
/// checks each path before anything is fetched.
fn output_paths(
    plans: &[Plan],
    bases: &[BundleDescription],
    fetch: &FetchSettings,
    args: &BundleArgs,
) -> Result<Vec<PathBuf>> {
    let dir = match &args.output {
        Some(out)
            if plans.len() > 1 || out.is_dir() || out.as_os_str().as_bytes().ends_with(b"/") =>
        {
            std::fs::create_dir_all(out).map_err(|source| Error::Io {
                path: out.clone(),
                source,
            })?;
            Some(out)
        }
        _ => None,
    };
    plans
        .iter()
        .map(|plan| {
            let mut name = default_name(plan, fetch)?;
            if !bases.is_empty() {
                name = delta_file_name(&name, bases);
            }
            Ok(match (dir, &args.output) {
                (Some(dir), _) => dir.join(&name),
                (None, Some(path)) => path.clone(),
                (None, None) => PathBuf::from(name),
            })
        })
        .collect()
}

/// The most a base's description (what `ferry inspect --json` printed) may hold: 65536 blobs and images
/// take a few megabytes.
const MAX_DESCRIPTION: u64 = 64 << 20;

/// What `--since BASE` says of the base: what `ferry inspect --json` printed of it (a regular file of
/// JSON, read within a bound), or the bundle itself: read from its tar headers and documents when its
/// `.sha256` is beside it (a delta takes no byte from its base), else verified whole.
fn describe_base(catalogs: &Catalogs, base: &Path) -> Result<BundleDescription> {
    let refused = |e: std::io::Error| Error::Usage(format!("--since {}: {e}", base.display()));
    let mut file = crate::io::open_side_file(base).map_err(refused)?;
    let mut head = [0u8; 1];
    let read = std::io::Read::read(&mut file, &mut head).map_err(refused)?;
    if read == 1 && head[0] == b'{' {
        #[derive(serde::Deserialize)]
        struct Inspected {
            #[serde(flatten)]
            description: BundleDescription,
            intact: bool,
        }
        let text = crate::io::read_side_text(base, MAX_DESCRIPTION).map_err(refused)?;
        let inspected: Inspected = serde_json::from_str(&text).map_err(|e| {
            Error::Usage(format!(
                "--since {}: not what `ferry inspect --json` prints of a bundle ({e})",
                base.display()
            ))
        })?;
        if !inspected.intact {
            return Err(Error::Damaged(base.to_path_buf()));
        }
        return Ok(inspected.description);
    }
    if let Some(description) = crate::verify::describe_from_headers(base) {
        return Ok(description);
    }
    let report = crate::verify::verify(base, &Default::default(), catalogs)?;
    if !report.intact() {
        return Err(Error::Damaged(base.to_path_buf()));
    }
    Ok(report.describe())
}

/// Reproducible builds' convention for "the time to stamp": https://reproducible-builds.org/specs/source-date-epoch/
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.is_empty() => text.trim().parse().map_err(|_| {
            Error::Usage(format!(
                "SOURCE_DATE_EPOCH='{text}' is not a number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}
