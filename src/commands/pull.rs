use std::io::Write;

use super::{fetch_images, plan_images, FetchRun};
use crate::catalog::Catalogs;
use crate::cli::PullArgs;
use crate::error::{Error, Result};
use crate::progress::DecimalBytes;

pub fn run(catalogs: &Catalogs, args: &PullArgs, out: &mut dyn Write) -> Result<()> {
    let FetchRun {
        fetched, reporter, ..
    } = fetch_images(catalogs, plan_images(catalogs, &args.images)?, &args.fetch)?;
    let several = super::distinct(&args.fetch.platforms).len() > 1;
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
