use std::io::Write;

use super::{fetch_setup, plan_images, runtime, FetchSetup};
use crate::cache::BlobStore;
use crate::catalog::Catalogs;
use crate::cli::PullArgs;
use crate::error::{Error, Result};
use crate::fetch::fetch;
use crate::progress::DecimalBytes;
use crate::resolve::union;

pub fn run(catalogs: &Catalogs, args: &PullArgs, out: &mut dyn Write) -> Result<()> {
    let plans = plan_images(catalogs, &args.images)?;
    let FetchSetup {
        cache,
        settings,
        reporter,
    } = fetch_setup(catalogs, &args.fetch)?;
    let store = BlobStore::open(&cache)?;
    let fetched = fetch(
        &runtime()?,
        &store,
        &union(&plans),
        &settings,
        reporter.as_ref(),
    )?;
    reporter.finish();
    let several = settings.platforms.len() != 1;
    for image in &fetched.images {
        if several {
            writeln!(
                out,
                "{}  {}  {}",
                image.reference, image.platform, image.manifest.digest
            )
        } else {
            writeln!(out, "{}  {}", image.reference, image.manifest.digest)
        }
        .map_err(Error::Output)?;
    }
    for skipped in &fetched.skipped {
        writeln!(out, "{skipped}  skipped (--skip-vendor)").map_err(Error::Output)?;
    }
    let pull = &fetched.pull;
    if pull.downloaded_bytes == 0 {
        reporter.phase(&format!(
            "{} image(s): nothing downloaded, every blob was already in the cache",
            fetched.images.len()
        ));
    } else {
        reporter.phase(&format!(
            "{} image(s): downloaded {} in {} blob(s); {} blob(s) were already cached",
            fetched.images.len(),
            DecimalBytes(pull.downloaded_bytes),
            pull.downloaded_blobs,
            pull.cached_blobs
        ));
    }
    Ok(())
}
