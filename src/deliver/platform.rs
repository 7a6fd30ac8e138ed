//! One platform out of a bundle of several, for the node it is loaded on. containerd resolves the
//! node's platform from ferry's index of platforms itself; docker and podman read `manifest.json`, which
//! can name one image per tag, so they are fed a docker-archive of the node's platform alone, streamed
//! from the bundle's byte ranges: nothing is extracted or held in memory.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use crate::digest::Digest;
use crate::image::Platform;
use crate::reference::Reference;
use crate::tarball::{append, docker_entry, names, pretty, MANIFEST_JSON};
use crate::verify::{Verified, VerifiedImage};

/// The images of `bundle` for `platform`; `None` when the bundle carries one platform (then it loads
/// whole, as it always has).
pub fn images_for<'a>(
    bundle: &'a Verified,
    platform: &Platform,
) -> Result<Option<Vec<&'a VerifiedImage>>, String> {
    let Some(carried) = &bundle.metadata.platforms else {
        return Ok(None);
    };
    if !carried
        .iter()
        .filter_map(|p| p.parse::<Platform>().ok())
        .any(|p| platform.matches(&p))
    {
        return Err(format!(
            "the bundle carries {}, not {platform}; name one with --platform",
            carried.join(", ")
        ));
    }
    Ok(Some(
        bundle
            .images
            .iter()
            .filter(|image| {
                image
                    .platform
                    .as_deref()
                    .and_then(|p| p.parse::<Platform>().ok())
                    .is_some_and(|p| platform.matches(&p))
            })
            .collect(),
    ))
}

/// Writes a docker-archive of `images` (manifest.json, then each config and layer once) to `out`.
pub fn feed_one_platform(
    bundle: &Verified,
    images: &[&VerifiedImage],
    out: impl Write,
) -> io::Result<()> {
    let entries: Vec<serde_json::Value> = images
        .iter()
        .filter_map(|image| {
            let reference: Reference = image.name.parse().ok()?;
            Some(docker_entry(
                &reference,
                image.config.as_ref()?,
                image.layers.iter(),
            ))
        })
        .collect();
    let manifest = pretty(&serde_json::Value::Array(entries));
    let blobs: BTreeSet<&Digest> = images
        .iter()
        .flat_map(|image| image.config.iter().chain(&image.layers))
        .collect();
    let mut tar = tar::Builder::new(io::BufWriter::new(out));
    append(
        &mut tar,
        MANIFEST_JSON,
        manifest.len() as u64,
        &mut manifest.as_slice(),
        0,
    )?;
    for digest in blobs {
        let (offset, size) = bundle.locations[digest];
        let mut blob: Box<dyn Read> = Box::new(bundle.source.open_range(offset, size)?);
        append(&mut tar, &names::blob_path(digest), size, &mut blob, 0)?;
    }
    tar.into_inner()?.flush()
}
