use std::io::Write;
use std::path::PathBuf;

use super::{fetch_images, FetchRun};
use crate::catalog::Catalogs;
use crate::cli::BundleArgs;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::progress::DecimalBytes;
use crate::reference::Reference;
use crate::tarball::{write_bundle, BundleMetadata, WriteOptions};
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
    let FetchRun {
        plans,
        store,
        fetched,
        reporter,
    } = fetch_images(catalogs, &args.images, &args.fetch)?;
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
    if several {
        if let Some(dir) = &args.output {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.clone(),
                source,
            })?;
        }
    }
    for plan in &plans {
        let images: Vec<Image> = plan
            .images
            .iter()
            .filter_map(|w| {
                fetched
                    .images
                    .iter()
                    .find(|i| i.reference == w.reference)
                    .cloned()
            })
            .collect();
        let skipped: Vec<&Reference> = fetched
            .skipped
            .iter()
            .filter(|s| plan.images.iter().any(|w| &w.reference == *s))
            .collect();
        let name = plan.file_name(&args.fetch.platform);
        // -o names the file, or the directory for the default names (always so for several bundles).
        let path = match &args.output {
            Some(dir) if several || dir.is_dir() => dir.join(name),
            Some(path) => path.clone(),
            None => PathBuf::from(name),
        };
        let metadata = BundleMetadata::describe(plan, &args.fetch.platform, &images, &skipped);
        let written = write_bundle(
            &store,
            &images,
            &metadata,
            &path,
            &options,
            reporter.as_ref(),
        )?;
        writeln!(
            out,
            "{}  {} image(s), {}, sha256 {}{}",
            path.display(),
            images.len(),
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
