//! One platform out of a bundle of several, for the node it is loaded on. containerd resolves the
//! node's platform from ferry's index of platforms itself; docker and podman read `manifest.json`, which
//! can name one image per tag, so they are fed a docker-archive of the node's platform alone, streamed
//! from the bundle's byte ranges: nothing is extracted or held in memory.

use std::borrow::Cow;

use super::feed::Archive;
use crate::image::Platform;
use crate::tarball::layout::{pretty, DockerEntry, MANIFEST_JSON};
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

/// A docker-archive of `images`: each config and layer once, then `manifest.json` naming them.
pub fn one_platform<'a>(bundle: &'a Verified, images: &[&'a VerifiedImage]) -> Archive<'a> {
    let entries: Vec<DockerEntry> = images
        .iter()
        .map(|image| DockerEntry::new(image.reference(), image.config(), image.layers()))
        .collect();
    let blobs = images
        .iter()
        .flat_map(|image| std::iter::once(image.config()).chain(image.layers()));
    Archive::of(
        bundle,
        blobs,
        vec![(MANIFEST_JSON, Cow::Owned(pretty(&entries)))],
    )
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::tarball::layout::blob_path;
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
        let archive = one_platform(&bundle, &arm);
        let fed = archive.write(bundle.source(), Vec::new()).ok().unwrap();
        assert_eq!(fed.len() as u64, archive.size());
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
            2 * 2 + 1,
            "two blobs per image, then manifest.json"
        );
        assert_eq!(names.last().unwrap(), MANIFEST_JSON, "{names:?}");
    }

    /// A blob of the platform fed that changed after verify stops the feed, before manifest.json.
    #[test]
    fn a_changed_blob_stops_the_feed_of_one_platform() {
        let dir = tempfile::tempdir().unwrap();
        let (images, path) = intact_bundle(
            dir.path(),
            &["quay.io/a/b:1"],
            &["linux/amd64", "linux/arm64"],
        );
        let bundle = verified(&path);
        let arm = images_for(&bundle, &"linux/arm64".parse().unwrap())
            .unwrap()
            .unwrap();
        let layer = &images
            .iter()
            .find(|i| i.platform.architecture == "arm64")
            .unwrap()
            .layers[0];
        let (offset, _) = bundle.location(&layer.digest).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[offset as usize] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        let mut fed = Vec::new();
        match one_platform(&bundle, &arm).write(bundle.source(), &mut fed) {
            Err(super::super::feed::Stopped::Bundle(error)) => {
                assert!(
                    error.to_string().starts_with(&blob_path(&layer.digest)),
                    "{error}"
                )
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        let fed = String::from_utf8_lossy(&fed);
        assert!(!fed.contains(MANIFEST_JSON), "{fed}");
    }
}
