//! One platform out of a bundle of several, for the node it is loaded on. containerd resolves the
//! node's platform from ferry's index of platforms itself; docker and podman read `manifest.json`, which
//! can name one image per tag, so they are fed a docker-archive of the node's platform alone, streamed
//! from the bundle's byte ranges: nothing is extracted or held in memory.

use std::collections::BTreeSet;
use std::io::{self, Read, Write};

use crate::digest::Digest;
use crate::image::Platform;
use crate::tarball::layout::{blob_path, pretty, DockerEntry, MANIFEST_JSON};
use crate::tarball::{append, tar_size};
use crate::verify::{Verified, VerifiedImage};

/// The images of `bundle` for `platform`; `None` when the bundle carries one platform (then it loads
/// whole, as it always has).
pub fn images_for<'a>(
    bundle: &'a Verified,
    platform: &Platform,
) -> Result<Option<Vec<&'a VerifiedImage>>, String> {
    if bundle.metadata().platforms.is_none() {
        return Ok(None);
    }
    let carried = bundle.platforms();
    if !carried.iter().any(|p| platform.matches(p)) {
        return Err(format!(
            "the bundle carries {}, not {platform}; name one with --platform",
            carried
                .iter()
                .map(Platform::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    // Each image once: an upstream index (`--platform all`) may list two manifests this platform runs
    // (linux/amd64 and linux/amd64/v2, say), and a tag names one image: the first.
    let mut images: Vec<&VerifiedImage> = Vec::new();
    for image in bundle.images() {
        if platform.matches(image.platform())
            && !images.iter().any(|i| i.reference() == image.reference())
        {
            images.push(image);
        }
    }
    Ok(Some(images))
}

/// What a docker-archive of `images` holds: `manifest.json`, then each config and layer once.
struct OnePlatform<'a> {
    manifest: Vec<u8>,
    blobs: BTreeSet<&'a Digest>,
}

impl<'a> OnePlatform<'a> {
    fn of(images: &[&'a VerifiedImage]) -> OnePlatform<'a> {
        let entries: Vec<DockerEntry> = images
            .iter()
            .map(|image| DockerEntry::new(image.reference(), image.config(), image.layers()))
            .collect();
        OnePlatform {
            manifest: pretty(&entries),
            blobs: images
                .iter()
                .flat_map(|image| std::iter::once(image.config()).chain(image.layers()))
                .collect(),
        }
    }
}

/// The bytes of the docker-archive [`feed_one_platform`] writes.
pub fn one_platform_size(bundle: &Verified, images: &[&VerifiedImage]) -> u64 {
    let archive = OnePlatform::of(images);
    let blobs = archive
        .blobs
        .iter()
        .map(|digest| location(bundle, digest).1);
    tar_size(std::iter::once(archive.manifest.len() as u64).chain(blobs))
}

/// Where a blob of the bundle is: verify proved every blob an image names is there.
fn location(bundle: &Verified, digest: &Digest) -> (u64, u64) {
    bundle
        .location(digest)
        .expect("a verified bundle holds every blob")
}

/// Writes a docker-archive of `images` (manifest.json, then each config and layer once) to `out`, and
/// hands `out` back.
pub fn feed_one_platform<W: Write>(
    bundle: &Verified,
    images: &[&VerifiedImage],
    out: W,
) -> io::Result<W> {
    let archive = OnePlatform::of(images);
    let mut tar = tar::Builder::new(io::BufWriter::new(out));
    append(
        &mut tar,
        MANIFEST_JSON,
        archive.manifest.len() as u64,
        &mut archive.manifest.as_slice(),
        0,
    )?;
    for digest in archive.blobs {
        let (offset, size) = location(bundle, digest);
        let mut blob: Box<dyn Read> = Box::new(bundle.source().open_range(offset, size)?);
        append(&mut tar, &blob_path(digest), size, &mut blob, 0)?;
    }
    tar.into_inner()?.into_inner().map_err(|e| e.into_error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{intact_bundle, verified};

    /// A node's platform is fed whole: every image the bundle has for it, each blob once, and nothing
    /// that is not in the archive's own manifest.json.
    #[test]
    fn one_platform_is_fed_with_every_image_it_has() {
        let dir = tempfile::tempdir().unwrap();
        let both: Vec<Platform> = ["linux/amd64", "linux/arm64"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        let (images, path) = intact_bundle(
            dir.path(),
            &["quay.io/a/b:1", "huawei-csi:4.8.0"],
            &["linux/amd64", "linux/arm64"],
        );
        let bundle = verified(&path);
        let arm = images_for(&bundle, &both[1]).unwrap().unwrap();
        let fed = feed_one_platform(&bundle, &arm, Vec::new()).unwrap();
        assert_eq!(fed.len() as u64, one_platform_size(&bundle, &arm));
        let mut archive = tar::Archive::new(fed.as_slice());
        let mut names = Vec::new();
        let mut manifest = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            if name == MANIFEST_JSON {
                entry.read_to_end(&mut manifest).unwrap();
            }
            names.push(name);
        }
        let listed: Vec<DockerEntry> = serde_json::from_slice(&manifest).unwrap();
        let tags: Vec<&str> = listed.iter().map(|e| e.repo_tags[0].as_str()).collect();
        assert_eq!(
            tags,
            ["quay.io/a/b:1", "docker.io/library/huawei-csi:4.8.0"]
        );
        let arm_images = images.iter().filter(|i| i.platform == both[1]);
        for image in arm_images {
            assert!(names.contains(&blob_path(&image.config.digest)));
            assert!(names.contains(&blob_path(&image.layers[0].digest)));
        }
        assert_eq!(
            names.len(),
            1 + 2 * 2,
            "manifest.json, then two blobs per image"
        );
    }
}
