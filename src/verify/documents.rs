//! The documents that are not blobs: `manifest.json` (docker's view) and `ferry.json` (what was built),
//! each byte for byte what ferry writes and consistent with the index.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::graph::index_name;
use super::stream::Contents;
use super::ImageVerdict;
use crate::image::Platform;
use crate::tarball::{names, pretty, BundleMetadata, MANIFEST_JSON, METADATA_JSON};

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
            Ok(value) if serde_json::to_value(&value).is_ok_and(|v| pretty(&v) == *bytes) => {
                Some(value)
            }
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

/// `manifest.json` must describe exactly the images the index does, with the same blobs.
pub(super) fn check_docker_manifest(docker: &Value, images: &mut [&mut ImageVerdict]) {
    let entries = docker.as_array().cloned().unwrap_or_default();
    let count = images.len();
    if entries.len() != count {
        for image in images.iter_mut() {
            image.problems.push(format!(
                "{MANIFEST_JSON} lists {} images, the index {count}",
                entries.len()
            ));
        }
        return;
    }
    for (entry, image) in entries.iter().zip(images.iter_mut()) {
        let tags: Vec<&str> = entry["RepoTags"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !(tags.is_empty() || tags == [image.name.as_str()]) {
            image
                .problems
                .push(format!("{MANIFEST_JSON} names it {tags:?}"));
        }
        let layers: Vec<String> = image.layers.iter().map(names::blob_path).collect();
        let listed: Vec<&str> = entry["Layers"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if listed != layers.iter().map(String::as_str).collect::<Vec<_>>() {
            image.problems.push(format!(
                "its layers in {MANIFEST_JSON} differ from its manifest's"
            ));
        }
        if !entry["Config"]
            .as_str()
            .is_some_and(|c| c.starts_with(crate::tarball::BLOBS_DIR))
        {
            image.problems.push(format!(
                "its Config in {MANIFEST_JSON} points outside the bundle's blobs"
            ));
        }
    }
}

/// `ferry.json` must list exactly the images inside, in the index's order, with their digests and sizes.
/// It names each by the reference it was pulled as, pin included, which the index cannot hold: the index
/// name is that reference's tagged name, and an image with none takes its name from `ferry.json`.
pub(super) fn check_metadata(
    metadata: &BundleMetadata,
    descriptors: &[&Value],
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
        let tagged = name
            .parse::<crate::reference::Reference>()
            .ok()
            .map(|r| r.tagged_name());
        match (tagged, index_name(descriptor)) {
            (Some(Some(tagged)), Some(indexed)) if tagged == indexed => {}
            (Some(None), None) => image.name = name.to_string(),
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
        if image.platform.is_some() && Some(&entry.platform) != image.platform.as_ref() {
            image.problems.push(format!(
                "{METADATA_JSON} records platform {}",
                entry.platform
            ));
        }
    }
}

/// Each image must come with exactly the platforms `ferry.json` says the bundle carries (fewer only for
/// an image it allows to), each once.
fn check_platforms(metadata: &BundleMetadata, images: &[ImageVerdict], problems: &mut Vec<String>) {
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
            .filter_map(|i| i.platform.as_deref()?.parse().ok())
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
