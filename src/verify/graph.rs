//! The blob graph: index -> manifests -> configs and layers, every descriptor's digest and size, and
//! every blob referenced by some image.

use std::collections::BTreeSet;

use super::documents::{check_docker_manifest, check_metadata};
use super::stream::{Contents, SeenBlob};
use super::{ImageVerdict, Report};
use crate::digest::Digest;
use crate::image::{limits, media, Descriptor, ImageConfig, Index, Manifest, Platform};
use crate::layer_codec::Codec;
use crate::reference::Reference;
use crate::tarball::layout::{
    index_name, name_annotations, platform_index_bytes, BundleIndex, DockerEntry, INDEX_JSON,
    LAYOUT_BYTES, LAYOUT_JSON, MANIFEST_JSON, METADATA_JSON,
};
use crate::tarball::BundleMetadata;
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
        let Some(index) = self.document::<BundleIndex>(INDEX_JSON, problems) else {
            return;
        };
        if index.schema_version != 2 || index.media_type != media::OCI_INDEX {
            problems.push(format!("{INDEX_JSON} is not an OCI image index"));
        }
        let metadata = self.document::<BundleMetadata>(METADATA_JSON, problems);
        let docker = self.document::<Vec<DockerEntry>>(MANIFEST_JSON, problems);
        let pins = index.annotations.as_ref();
        for (name, pinned) in [
            (METADATA_JSON, pins.map(|p| &p.metadata)),
            (MANIFEST_JSON, pins.map(|p| &p.docker_manifest)),
        ] {
            let actual = self.documents.get(name).map(|b| Digest::of(b));
            if pinned != actual.as_ref() {
                problems.push(format!(
                    "{name} does not match the digest {INDEX_JSON} records for it"
                ));
            }
        }
        let descriptors = &index.manifests;
        let mut referenced = BTreeSet::new();
        let mut budget = Budget(MAX_PARSED);
        // Upstream indexes are carried only by a bundle made with `--platform all`, each one ferry.json
        // records (an upstream index may have ferry's own bytes: one that ferry pushed).
        let every = metadata
            .as_ref()
            .is_some_and(BundleMetadata::carries_every_platform);
        let upstream: BTreeSet<&Digest> = metadata
            .iter()
            .filter(|_| every)
            .flat_map(|m| m.images.iter().filter_map(|i| i.index_digest.as_ref()))
            .collect();
        // One verdict per image and platform; each remembers its entry in index.json, and the first of
        // each entry (with every platform, the first that is not an attestation) is what manifest.json
        // describes.
        let (mut entries, mut firsts) = (Vec::new(), Vec::new());
        for (position, descriptor) in descriptors.iter().enumerate() {
            let top = Top {
                position,
                descriptor,
                upstream: upstream.contains(&descriptor.digest),
            };
            let verdicts = self.check_top(&top, deep, &mut referenced, &mut budget);
            let shown = verdicts
                .iter()
                .position(|v| !every || v.platform.as_ref().is_some_and(|p| !p.is_unknown()))
                .unwrap_or(0);
            firsts.push(report.images.len() + shown);
            entries.extend(std::iter::repeat_n(descriptor, verdicts.len()));
            report.images.extend(verdicts);
        }
        for unreferenced in self.blobs.keys().filter(|d| !referenced.contains(*d)) {
            problems.push(format!("blob {unreferenced} is referenced by no image"));
        }
        if let Some(docker) = docker {
            let mut shown: Vec<&mut ImageVerdict> = report
                .images
                .iter_mut()
                .enumerate()
                .filter(|(at, _)| firsts.contains(at))
                .map(|(_, verdict)| verdict)
                .collect();
            check_docker_manifest(&docker, &mut shown);
        }
        if let Some(metadata) = &metadata {
            check_metadata(metadata, &entries, &mut report.images, &mut report.problems);
        }
        report.metadata = metadata;
    }

    /// One entry of index.json: an image's manifest, or an index of its platforms (one verdict each):
    /// ferry's, or with every platform the upstream one.
    fn check_top(
        &self,
        top: &Top,
        deep: bool,
        referenced: &mut BTreeSet<Digest>,
        budget: &mut Budget,
    ) -> Vec<ImageVerdict> {
        let descriptor = top.descriptor;
        let name =
            index_name(descriptor).map_or(format!("image #{}", top.position + 1), str::to_string);
        let mut verdict = ImageVerdict {
            name,
            reference: None,
            manifest: None,
            config: None,
            platform: None,
            index: None,
            upstream_index: false,
            size: 0,
            layers: Vec::new(),
            problems: Vec::new(),
        };
        match top_entry_name(descriptor) {
            Ok(reference) => verdict.reference = reference,
            Err(problem) => verdict.problems.push(problem),
        }
        if !media::is_index(&descriptor.media_type) {
            self.check_image(&mut verdict, descriptor, deep, referenced, budget);
            return vec![verdict];
        }
        referenced.insert(descriptor.digest.clone());
        let index = self
            .check_blob(&descriptor.digest, descriptor.size, "index")
            .and_then(|blob| budget.spend(blob))
            .and_then(|blob| {
                let bytes = blob.kept.as_deref().unwrap_or_default();
                match serde_json::from_slice::<Index>(bytes) {
                    Ok(index) if top.upstream => {
                        verdict.upstream_index = true;
                        upstream_index(descriptor, index)
                    }
                    Ok(index) if platform_index_bytes(index.manifests.clone()) == bytes => {
                        Ok(index)
                    }
                    _ => Err(format!(
                        "index {} is not the index of platforms ferry writes",
                        descriptor.digest
                    )),
                }
            });
        let index = match index {
            Ok(index) if !index.manifests.is_empty() => index,
            Ok(_) => {
                verdict
                    .problems
                    .push(format!("index {} lists no platform", descriptor.digest));
                return vec![verdict];
            }
            Err(problem) => {
                verdict.problems.push(problem);
                return vec![verdict];
            }
        };
        let mut verdicts: Vec<ImageVerdict> = Vec::new();
        verdict.index = Some(descriptor.digest.clone());
        for entry in &index.manifests {
            let mut one = verdict.clone();
            self.check_image(&mut one, entry, deep, referenced, budget);
            // An upstream index is what its registry serves, duplicates and attestations included.
            if !one.upstream_index && verdicts.iter().any(|v| v.platform == one.platform) {
                one.problems.push(format!(
                    "index {} lists platform {} twice",
                    descriptor.digest,
                    one.platform
                        .as_ref()
                        .map_or("?".into(), ToString::to_string)
                ));
            }
            verdicts.push(one);
        }
        verdicts
    }

    /// One single-platform manifest, its config and layers. In ferry's index of platforms its entry
    /// carries the platform, which must be the config's.
    fn check_image(
        &self,
        verdict: &mut ImageVerdict,
        descriptor: &Descriptor,
        deep: bool,
        referenced: &mut BTreeSet<Digest>,
        budget: &mut Budget,
    ) {
        referenced.insert(descriptor.digest.clone());
        verdict.manifest = Some(descriptor.digest.clone());
        let manifest_blob = match self
            .check_blob(&descriptor.digest, descriptor.size, "manifest")
            .and_then(|blob| budget.spend(blob))
        {
            Ok(blob) => blob,
            Err(problem) => {
                verdict.problems.push(problem);
                return;
            }
        };
        let manifest: Manifest = match manifest_blob.kept.as_deref().map(serde_json::from_slice) {
            Some(Ok(manifest)) => manifest,
            _ => {
                verdict.problems.push(format!(
                    "manifest {} is not a readable image manifest",
                    descriptor.digest
                ));
                return;
            }
        };
        if let Err(problem) = check_media_type(descriptor, &manifest) {
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
        let diff_ids = self.check_config(verdict, descriptor, &manifest, budget);
        for (i, layer) in manifest.layers.iter().enumerate() {
            match self.check_blob(&layer.digest, layer.size, "layer") {
                Err(problem) => verdict.problems.push(problem),
                Ok(blob) if deep && !blob.is_elsewhere() => {
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
    }

    /// The config a manifest names: readable, of the platform the index lists it as, with a diff_id for
    /// each layer. Returns the diff_ids, none when the config cannot be read.
    fn check_config(
        &self,
        verdict: &mut ImageVerdict,
        descriptor: &Descriptor,
        manifest: &Manifest,
        budget: &mut Budget,
    ) -> Vec<Digest> {
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
        let config = match config {
            Ok(config) => config,
            Err(problem) => {
                verdict.problems.push(problem);
                return Vec::new();
            }
        };
        let platform = config.platform();
        // ferry writes its index from the configs; an upstream one may say less (no variant, or arm64's
        // implicit v8), as containerd reads it.
        let differs = |listed: &Platform| match verdict.upstream_index {
            true => !listed.matches(&platform),
            false => *listed != platform,
        };
        if let Some(listed) = descriptor.platform.as_ref().filter(|p| differs(p)) {
            verdict.problems.push(format!(
                "its index lists it as {listed}, but its config says {platform}"
            ));
        }
        verdict.platform = Some(platform);
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            verdict.problems.push(format!(
                "its config lists {} diff_ids for {} layers",
                config.rootfs.diff_ids.len(),
                manifest.layers.len()
            ));
        }
        config.rootfs.diff_ids
    }
}

/// An entry of index.json, where it is, and whether ferry.json records it as an upstream index.
struct Top<'a> {
    position: usize,
    descriptor: &'a Descriptor,
    upstream: bool,
}

/// An upstream index, carried whole: of the media type its entry says, and naming manifests only (one
/// level, as `--platform all` takes them).
fn upstream_index(descriptor: &Descriptor, index: Index) -> Result<Index, String> {
    if index.media_type() != descriptor.media_type {
        return Err(format!(
            "its media type in {INDEX_JSON} is {}, but index {} is {}",
            descriptor.media_type,
            descriptor.digest,
            index.media_type()
        ));
    }
    if let Some(nested) = index
        .manifests
        .iter()
        .find(|m| media::is_index(&m.media_type))
    {
        return Err(format!(
            "index {} lists another index, {}",
            descriptor.digest, nested.digest
        ));
    }
    Ok(index)
}

/// A manifest's descriptor must carry the manifest's own media type, as runtimes act on it.
fn check_media_type(descriptor: &Descriptor, manifest: &Manifest) -> Result<(), String> {
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
    Ok(())
}

/// The fields of an index.json entry no digest covers must be what ferry writes: no platform, and either
/// no annotations or the image's name and its tag. The name, when there is one.
fn top_entry_name(descriptor: &Descriptor) -> Result<Option<Reference>, String> {
    if descriptor.platform.is_some() {
        return Err(format!("its entry in {INDEX_JSON} names a platform"));
    }
    if descriptor.annotations.is_none() {
        return Ok(None);
    }
    let reference = index_name(descriptor).and_then(|name| {
        let reference = name.parse::<Reference>().ok()?;
        (reference.tagged_name().as_deref() == Some(name)).then_some(reference)
    });
    match reference {
        Some(reference) if name_annotations(&reference) == descriptor.annotations => {
            Ok(Some(reference))
        }
        _ => Err(format!(
            "its annotations in {INDEX_JSON} are not its name and tag"
        )),
    }
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
