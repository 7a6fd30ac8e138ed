//! The documents that are not blobs: `manifest.json` (docker's view) and `ferry.json` (what was built),
//! each byte for byte what ferry writes and consistent with the index.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::stream::Contents;
use super::ImageVerdict;
use crate::image::{Descriptor, Platform};
use crate::reference::Reference;
use crate::tarball::layout::{
    blob_path, index_name, pretty, DockerEntry, MANIFEST_JSON, METADATA_JSON,
};
use crate::tarball::{platforms_met, BundleMetadata};

impl Contents {
    /// A document that must be exactly as ferry writes it; `None` (with a problem recorded) otherwise.
    pub(super) fn document<T: DeserializeOwned + Serialize>(
        &self,
        name: &str,
        problems: &mut Vec<String>,
    ) -> Option<T> {
        let Some(bytes) = self.documents.get(name) else {
            problems.push(format!("{name} is missing"));
            return None;
        };
        match serde_json::from_slice::<T>(bytes) {
            Ok(value) if pretty(&value) == *bytes => Some(value),
            Ok(_) => {
                problems.push(format!(
                    "{name} is damaged: it is not byte for byte what ferry writes"
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{name} is damaged: {e}"));
                None
            }
        }
    }
}

/// `manifest.json` must describe exactly the images the index does, with the same config and layers.
pub(super) fn check_docker_manifest(docker: &[DockerEntry], images: &mut [&mut ImageVerdict]) {
    let count = images.len();
    if docker.len() != count {
        for image in images.iter_mut() {
            image.problems.push(format!(
                "{MANIFEST_JSON} lists {} images, the index {count}",
                docker.len()
            ));
        }
        return;
    }
    for (entry, image) in docker.iter().zip(images.iter_mut()) {
        if !(entry.repo_tags.is_empty() || entry.repo_tags == [image.name.as_str()]) {
            image
                .problems
                .push(format!("{MANIFEST_JSON} names it {:?}", entry.repo_tags));
        }
        let layers: Vec<String> = image.layers.iter().map(blob_path).collect();
        if entry.layers != layers {
            image.problems.push(format!(
                "its layers in {MANIFEST_JSON} differ from its manifest's"
            ));
        }
        if image.config.as_ref().map(blob_path).as_ref() != Some(&entry.config) {
            image.problems.push(format!(
                "its Config in {MANIFEST_JSON} is not its manifest's config"
            ));
        }
    }
}

/// `ferry.json` must list exactly the images inside, in the index's order, with their digests and sizes.
/// It names each by the reference it was pulled as, pin included, which the index cannot hold: the index
/// name is that reference's tagged name, and an image with none takes its name from `ferry.json`.
pub(super) fn check_metadata(
    metadata: &BundleMetadata,
    descriptors: &[&Descriptor],
    images: &mut [ImageVerdict],
    problems: &mut Vec<String>,
) {
    check_platforms(metadata, images, problems);
    let listed = &metadata.images;
    if listed.len() != images.len() {
        problems.push(format!(
            "{METADATA_JSON} lists {} images, but the bundle holds {}",
            listed.len(),
            images.len()
        ));
    }
    for ((entry, descriptor), image) in listed.iter().zip(descriptors).zip(images.iter_mut()) {
        let name = entry.name.as_str();
        let parsed = name.parse::<Reference>().ok();
        let tagged = parsed.as_ref().map(Reference::tagged_name);
        match (tagged, index_name(descriptor)) {
            (Some(Some(tagged)), Some(indexed)) if tagged == indexed => {}
            (Some(None), None) => {
                image.name = name.to_string();
                image.reference = parsed;
            }
            _ => {
                problems.push(format!(
                    "{METADATA_JSON} lists {name} where the bundle holds {}",
                    image.name
                ));
                continue;
            }
        }
        if image.manifest.as_ref() != Some(&entry.manifest.digest) {
            image.problems.push(format!(
                "{METADATA_JSON} records another manifest digest for it"
            ));
        }
        if entry.size != image.size {
            image.problems.push(format!(
                "{METADATA_JSON} records {} bytes for it, the bundle holds {}",
                entry.size, image.size
            ));
        }
        // With every platform, an image's index is its upstream one exactly when ferry.json says it
        // came from one.
        let carried = image
            .upstream_index
            .then_some(image.index.as_ref())
            .flatten();
        if metadata.carries_every_platform() && carried != entry.index_digest.as_ref() {
            image.problems.push(format!(
                "{METADATA_JSON} records {} as its upstream index, the bundle holds {}",
                entry
                    .index_digest
                    .as_ref()
                    .map_or("none".into(), ToString::to_string),
                carried.map_or("none".into(), ToString::to_string)
            ));
        }
        if image
            .platform
            .as_ref()
            .is_some_and(|platform| platform.to_string() != entry.platform)
        {
            image.problems.push(format!(
                "{METADATA_JSON} records platform {}",
                entry.platform
            ));
        }
    }
}

/// Each image must come with exactly the platforms `ferry.json` says the bundle carries (fewer only for
/// an image it allows to), each once. With every platform, each image has those its index lists, and
/// `ferry.json` names all of them but attestations' (`unknown/unknown`), in the order first met.
fn check_platforms(metadata: &BundleMetadata, images: &[ImageVerdict], problems: &mut Vec<String>) {
    if metadata.carries_every_platform() {
        let met = platforms_met(images.iter().filter_map(|i| i.platform.as_ref()));
        if metadata.platforms.as_ref() != Some(&met) {
            problems.push(format!(
                "the images have platforms {}, but {METADATA_JSON} says the bundle carries {}",
                met.join(", "),
                metadata.all_platforms().join(", ")
            ));
        }
        return;
    }
    let carried: Vec<Platform> = metadata
        .all_platforms()
        .iter()
        .filter_map(|p| p.parse().ok())
        .collect();
    let mut names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
    names.dedup();
    for name in names {
        let has: Vec<Platform> = images
            .iter()
            .filter(|i| i.name == name)
            .filter_map(|i| i.platform.clone())
            .collect();
        if has.is_empty() {
            continue; // no readable config: said where the config is checked
        }
        let partial_ok = metadata
            .partial_platforms
            .iter()
            .any(|r| r.to_string() == name || r.tagged_name().as_deref() == Some(name));
        let lacking: Vec<String> = carried
            .iter()
            .filter(|wanted| !has.iter().any(|p| wanted.matches(p)))
            .map(Platform::to_string)
            .collect();
        let extra = has
            .iter()
            .any(|p| !carried.iter().any(|wanted| wanted.matches(p)));
        if extra || has.len() > carried.len() || (!lacking.is_empty() && !partial_ok) {
            problems.push(format!(
                "{name} has platforms {}, but {METADATA_JSON} says the bundle carries {}",
                has.iter()
                    .map(Platform::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                metadata.all_platforms().join(", ")
            ));
        }
    }
}
