use std::io::Write;

use super::{fetch_setup, load_site, plan_images, runtime, FetchSetup};
use crate::cache::BlobStore;
use crate::catalog::Catalogs;
use crate::cli::PullArgs;
use crate::error::{Error, Result};
use crate::fetch::{fetch, PullReport};
use crate::progress::{DecimalBytes, Reporter};
use crate::resolve::union;

pub fn run(catalogs: &Catalogs, args: &PullArgs, out: &mut dyn Write) -> Result<()> {
    let site = load_site(&args.images, &args.fetch)?;
    let plans = plan_images(catalogs, &args.images, site.as_ref())?;
    let FetchSetup {
        cache,
        settings,
        reporter,
    } = fetch_setup(catalogs, &args.fetch, site.as_ref())?;
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
    say_downloaded(reporter.as_ref(), fetched.images.len(), &fetched.pull);
    Ok(())
}

/// What the fetch of `images` took from registries: on a warm re-run, that nothing was downloaded.
pub(super) fn say_downloaded(reporter: &dyn Reporter, images: usize, pull: &PullReport) {
    reporter.phase(&if pull.downloaded_bytes == 0 {
        format!(
            "{images} image(s): nothing downloaded, every registry blob was already in the cache"
        )
    } else {
        format!(
            "{images} image(s): downloaded {} in {} blob(s); {} blob(s) were already cached",
            DecimalBytes(pull.downloaded_bytes),
            pull.downloaded_blobs,
            pull.cached_blobs
        )
    });
}
