use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use super::{fetch_images, plan_images, FetchRun};
use crate::catalog::Catalogs;
use crate::cli::BundleArgs;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::layer_codec::Codec;
use crate::progress::DecimalBytes;
use crate::reference::Reference;
use crate::resolve::Plan;
use crate::tarball::{check_output, write_bundle, BundleMetadata, TarballError, WriteOptions};
use crate::trust::lock::Lock;
use crate::trust::signature::SigningKey;
use crate::trust::TrustError;

pub fn run(catalogs: &Catalogs, args: &BundleArgs, out: &mut dyn Write) -> Result<()> {
    // A wrong passphrase or an unreadable lock must fail before minutes of downloads, not after.
    let options = WriteOptions {
        mtime: source_date_epoch()?,
        split: args.split,
        signer: args.sign.as_deref().map(SigningKey::load).transpose()?,
    };
    let existing_lock = match &args.lock {
        Some(path) if !args.update_lock && path.exists() => Some(Lock::load(path)?),
        _ => None,
    };
    let plans = plan_images(catalogs, &args.images)?;
    let paths = output_paths(&plans, args)?;
    let FetchRun {
        plans,
        store,
        fetched,
        reporter,
    } = fetch_images(catalogs, plans, &args.fetch)?;
    let several = plans.len() > 1;
    let lock = match &args.lock {
        Some(_) if several => {
            return Err(Error::Usage(format!(
                "--lock pins the images of one bundle, and this selection makes {}: lock each Kubernetes version's bundle (--k8s) on its own",
                plans.len()
            )))
        }
        Some(path) => Some((path, Lock::of(&fetched.images)?)),
        None => None,
    };
    if let (Some((path, built)), Some(existing)) = (&lock, &existing_lock) {
        let changes = existing.changes(built);
        if !changes.is_empty() {
            return Err(TrustError::LockMoved {
                path: path.to_path_buf(),
                changes,
            }
            .into());
        }
    }
    for (plan, path) in plans.iter().zip(paths) {
        let images: Vec<Image> = plan
            .images
            .iter()
            .flat_map(|w| fetched.images.iter().filter(|i| i.reference == w.reference))
            .cloned()
            .collect();
        let skipped: Vec<&Reference> = fetched
            .skipped
            .iter()
            .filter(|s| plan.images.iter().any(|w| &w.reference == *s))
            .collect();
        let platforms = super::distinct(&args.fetch.platforms);
        let metadata = BundleMetadata::describe(
            plan,
            &platforms,
            &images,
            &skipped,
            &args.fetch.allow_single_platform,
        );
        let write = || {
            write_bundle(
                &store,
                &images,
                &metadata,
                &path,
                &options,
                reporter.as_ref(),
            )
        };
        let written = match write() {
            // A cache file damaged on this machine was removed from the cache: fetch it anew, once.
            Err(TarballError::DamagedBlob {
                digest,
                path: damaged,
                ..
            }) => {
                reporter.warning(&format!(
                    "cache file {} was damaged (not blob {digest}); fetching it again",
                    damaged.display()
                ));
                fetch_images(catalogs, vec![plan.clone()], &args.fetch)?;
                write()?
            }
            written => written?,
        };
        writeln!(
            out,
            "{}  {} image(s){}, {}, sha256 {}{}",
            path.display(),
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
        )
        .map_err(Error::Output)?;
        for skipped in &skipped {
            writeln!(out, "  not included (--skip-vendor): {skipped}").map_err(Error::Output)?;
        }
        for image in images.iter().filter(|image| has_zstd_layers(image)) {
            writeln!(
                out,
                "  {}: zstd-compressed layers, which Docker Engine before 23.0 cannot load \
                 (containerd and podman can)",
                image.reference
            )
            .map_err(Error::Output)?;
        }
        if let Some(signer) = &options.signer {
            writeln!(
                out,
                "  signed: {} ({})",
                crate::tarball::sibling(&path, ".sig").display(),
                signer.fingerprint()
            )
            .map_err(Error::Output)?;
        }
    }
    if let Some((path, built)) = lock {
        let said = if existing_lock.is_some() {
            "every image matches"
        } else {
            built.save(path)?;
            "wrote"
        };
        writeln!(
            out,
            "lock: {said} {} ({} images)",
            path.display(),
            built.images.len()
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

fn has_zstd_layers(image: &Image) -> bool {
    image
        .layers
        .iter()
        .any(|layer| Codec::of_media_type(&layer.media_type) == Codec::Zstd)
}

/// Where each bundle goes, checked before anything is fetched. -o names the file, or the directory for
/// the default names: always so for several bundles, and when it ends with `/`; such a directory is
/// created when missing.
fn output_paths(plans: &[Plan], args: &BundleArgs) -> Result<Vec<PathBuf>> {
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
            let name = plan.file_name(&super::distinct(&args.fetch.platforms));
            let path = match (dir, &args.output) {
                (Some(dir), _) => dir.join(name),
                (None, Some(path)) => path.clone(),
                (None, None) => PathBuf::from(name),
            };
            check_output(&path, args.split)?;
            Ok(path)
        })
        .collect()
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
