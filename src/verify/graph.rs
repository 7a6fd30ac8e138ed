//! The blob graph: index -> manifests -> configs and layers, every descriptor's digest and size, and
//! every blob referenced by some image.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::documents::{check_docker_manifest, check_metadata};
use super::stream::{Contents, SeenBlob};
use super::{ImageVerdict, Report};
use crate::digest::Digest;
use crate::image::{limits, media, Descriptor, ImageConfig, Manifest};
use crate::layer_codec::Codec;
use crate::reference::Reference;
use crate::tarball::{
    BundleMetadata, DOCKER_MANIFEST_DIGEST, INDEX_JSON, LAYOUT_BYTES, LAYOUT_JSON, MANIFEST_JSON,
    METADATA_DIGEST, METADATA_JSON,
};

/// The index annotations that name an image, as containerd and OCI layout readers read them.
const NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// Manifest and config bytes parsed over all images. Each image parses its own, so an index naming one
/// large manifest a hundred thousand times would otherwise cost hours and gigabytes; a real bundle parses
/// each kept blob about once.
const MAX_PARSED: u64 = super::stream::MAX_KEPT_TOTAL;

impl Contents {
    /// A blob that is present, intact and of the size its descriptor says; else why not.
    fn check_blob(&self, digest: &Digest, size: u64, what: &str) -> Result<&SeenBlob, String> {
        let blob = self
            .blobs
            .get(digest)
            .ok_or_else(|| format!("{what} {digest} is missing"))?;
        if blob.actual.as_ref() != Some(digest) {
            return Err(format!("{what} {digest} is damaged"));
        }
        if blob.size != size {
            return Err(format!(
                "{what} {digest} has {} bytes, but its descriptor says {size}",
                blob.size
            ));
        }
        Ok(blob)
    }

    pub(super) fn cross_check(&self, report: &mut Report, deep: bool) {
        let problems = &mut report.problems;
        if self.documents.get(LAYOUT_JSON).map(Vec::as_slice) != Some(LAYOUT_BYTES) {
            problems.push(format!("{LAYOUT_JSON} is missing or damaged"));
        }
        let Some(index) = self.document::<Value>(INDEX_JSON, problems) else {
            return;
        };
        if index["schemaVersion"] != 2 || index["mediaType"] != media::OCI_INDEX {
            problems.push(format!("{INDEX_JSON} is not an OCI image index"));
        }
        let metadata = self.document::<BundleMetadata>(METADATA_JSON, problems);
        let docker = self.document::<Value>(MANIFEST_JSON, problems);
        for (name, key) in [
            (METADATA_JSON, METADATA_DIGEST),
            (MANIFEST_JSON, DOCKER_MANIFEST_DIGEST),
        ] {
            let actual = self.documents.get(name).map(|b| Digest::of(b).to_string());
            if index["annotations"][key].as_str() != actual.as_deref() {
                problems.push(format!(
                    "{name} does not match the digest {INDEX_JSON} records for it"
                ));
            }
        }
        let descriptors = index["manifests"].as_array().cloned().unwrap_or_default();
        let mut referenced = BTreeSet::new();
        let mut budget = Budget(MAX_PARSED);
        for (position, descriptor) in descriptors.iter().enumerate() {
            let verdict =
                self.check_image(position, descriptor, deep, &mut referenced, &mut budget);
            report.images.push(verdict);
        }
        for unreferenced in self.blobs.keys().filter(|d| !referenced.contains(*d)) {
            problems.push(format!("blob {unreferenced} is referenced by no image"));
        }
        if let Some(docker) = docker {
            check_docker_manifest(&docker, &mut report.images);
        }
        if let Some(metadata) = &metadata {
            check_metadata(
                metadata,
                &descriptors,
                &mut report.images,
                &mut report.problems,
            );
        }
        report.metadata = metadata;
    }

    fn check_image(
        &self,
        position: usize,
        descriptor: &Value,
        deep: bool,
        referenced: &mut BTreeSet<Digest>,
        budget: &mut Budget,
    ) -> ImageVerdict {
        let name =
            index_name(descriptor).map_or(format!("image #{}", position + 1), str::to_string);
        let mut verdict = ImageVerdict {
            name,
            manifest: None,
            config: None,
            platform: None,
            size: 0,
            layers: Vec::new(),
            problems: Vec::new(),
        };
        let parsed: Result<crate::image::Descriptor, _> =
            serde_json::from_value(descriptor.clone());
        let Ok(descriptor) = parsed else {
            verdict.problems.push(format!(
                "its entry in {INDEX_JSON} is not a valid descriptor"
            ));
            return verdict;
        };
        referenced.insert(descriptor.digest.clone());
        verdict.manifest = Some(descriptor.digest.clone());
        let manifest_blob = match self
            .check_blob(&descriptor.digest, descriptor.size, "manifest")
            .and_then(|blob| budget.spend(blob))
        {
            Ok(blob) => blob,
            Err(problem) => {
                verdict.problems.push(problem);
                return verdict;
            }
        };
        let manifest: Manifest = match manifest_blob.kept.as_deref().map(serde_json::from_slice) {
            Some(Ok(manifest)) => manifest,
            _ => {
                verdict.problems.push(format!(
                    "manifest {} is not a readable image manifest",
                    descriptor.digest
                ));
                return verdict;
            }
        };
        if let Err(problem) = check_index_entry(&descriptor, &manifest) {
            verdict.problems.push(problem);
        }
        match manifest
            .claimed_size()
            .and_then(|blobs| blobs.checked_add(descriptor.size))
        {
            Some(size) => verdict.size = size,
            None => verdict.problems.push(format!(
                "manifest {} claims blobs of more than {} bytes in all",
                descriptor.digest,
                limits::MAX_IMAGE_BYTES
            )),
        }
        if descriptor.size > limits::MAX_MANIFEST || manifest.config.size > limits::MAX_CONFIG {
            verdict.problems.push(format!(
                "its manifest ({} bytes) or config ({} bytes) is larger than ferry accepts ({} and {})",
                descriptor.size,
                manifest.config.size,
                limits::MAX_MANIFEST,
                limits::MAX_CONFIG
            ));
        }
        verdict.layers = manifest.layers.iter().map(|l| l.digest.clone()).collect();
        verdict.config = Some(manifest.config.digest.clone());
        referenced.extend(
            std::iter::once(manifest.config.digest.clone()).chain(verdict.layers.iter().cloned()),
        );
        let config = self
            .check_blob(&manifest.config.digest, manifest.config.size, "config")
            .and_then(|blob| budget.spend(blob))
            .and_then(|blob| {
                blob.kept
                    .as_deref()
                    .and_then(|b| ImageConfig::parse(b).ok())
                    .ok_or_else(|| {
                        format!(
                            "config {} is not a readable image config",
                            manifest.config.digest
                        )
                    })
            });
        let diff_ids = match config {
            Ok(config) => {
                verdict.platform = Some(config.platform().to_string());
                if config.rootfs.diff_ids.len() != manifest.layers.len() {
                    verdict.problems.push(format!(
                        "its config lists {} diff_ids for {} layers",
                        config.rootfs.diff_ids.len(),
                        manifest.layers.len()
                    ));
                }
                config.rootfs.diff_ids
            }
            Err(problem) => {
                verdict.problems.push(problem);
                Vec::new()
            }
        };
        for (i, layer) in manifest.layers.iter().enumerate() {
            match self.check_blob(&layer.digest, layer.size, "layer") {
                Err(problem) => verdict.problems.push(problem),
                Ok(blob) if deep => {
                    let content = if Codec::of_media_type(&layer.media_type) != Codec::Plain {
                        blob.uncompressed.clone()
                    } else {
                        Some(layer.digest.clone())
                    };
                    if content.as_ref() != diff_ids.get(i) {
                        verdict.problems.push(format!(
                            "layer {} does not decompress to the diff_id its config records",
                            layer.digest
                        ));
                    }
                }
                Ok(_) => {}
            }
        }
        verdict
    }
}

/// The fields of an index entry no digest covers must be what ferry writes, as runtimes act on them: the
/// manifest's own media type, no platform, and either no annotations or the image's name and its tag.
fn check_index_entry(descriptor: &Descriptor, manifest: &Manifest) -> Result<(), String> {
    let declared = manifest
        .media_type
        .as_deref()
        .unwrap_or(media::OCI_MANIFEST);
    if descriptor.media_type != declared {
        return Err(format!(
            "its media type in {INDEX_JSON} is {}, but its manifest is {declared}",
            descriptor.media_type
        ));
    }
    if descriptor.platform.is_some() {
        return Err(format!("its entry in {INDEX_JSON} names a platform"));
    }
    let Some(annotations) = &descriptor.annotations else {
        return Ok(());
    };
    let name = annotations.get(NAME_ANNOTATION).map_or("", String::as_str);
    let reference = name
        .parse::<Reference>()
        .ok()
        .filter(|r| r.tagged_name().as_deref() == Some(name));
    let expected = reference.as_ref().and_then(Reference::tag).map(|tag| {
        BTreeMap::from([
            (NAME_ANNOTATION.to_string(), name.to_string()),
            (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
        ])
    });
    if expected.as_ref() != Some(annotations) {
        return Err(format!(
            "its annotations in {INDEX_JSON} are not its name and tag"
        ));
    }
    Ok(())
}

/// What is left of [`MAX_PARSED`].
struct Budget(u64);

impl Budget {
    /// Passes `blob` on for parsing if the budget allows it.
    fn spend<'b>(&mut self, blob: &'b SeenBlob) -> Result<&'b SeenBlob, String> {
        self.0 = self.0.checked_sub(blob.size).ok_or_else(|| {
            format!("not checked: {INDEX_JSON} names manifests and configs of more than {MAX_PARSED} bytes in all")
        })?;
        Ok(blob)
    }
}

/// The name the index gives an image; an image pulled by digest alone has none.
pub(super) fn index_name(descriptor: &Value) -> Option<&str> {
    descriptor["annotations"]["io.containerd.image.name"].as_str()
}
