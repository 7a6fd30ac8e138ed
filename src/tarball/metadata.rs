//! `ferry.json`: what a bundle holds and why. Written by `ferry bundle`, read back by verify, inspect, push
//! and load. Nothing machine- or time-specific goes in, so that two people building from the same inputs
//! get the same bytes.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::{Descriptor, Image, ImageSource};
use crate::reference::Reference;
use crate::resolve::{describe_span, Plan};

/// Version of ferry.json's layout, for readers of old bundles.
pub const METADATA_FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMetadata {
    pub ferry: Producer,
    pub catalog: Option<String>,
    pub release: Option<String>,
    pub kubernetes: Option<KubernetesSpan>,
    pub service: Option<String>,
    /// The one platform, or with several the first: the one `manifest.json` describes.
    pub platform: String,
    /// Every platform carried, when there are several (absent for one, so that such bundles keep their
    /// bytes). Each image is then listed once per platform it has, its upstream manifest digest each time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platforms: Option<Vec<String>>,
    /// Images allowed (`--allow-single-platform`) to come with fewer platforms than the bundle carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partial_platforms: Vec<Reference>,
    pub images: Vec<ImageRecord>,
    /// Vendor images left out with `--skip-vendor`.
    pub skipped: Vec<Reference>,
    /// Vendor layers are compressed by ferry; the same setting is what makes rebuilds byte-identical.
    pub vendor_layer_compression: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    pub version: String,
    pub format: u32,
}

/// The Kubernetes versions the bundle's image set serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSpan {
    /// For people: `1.20 and later`.
    pub span: String,
    pub min: String,
    pub max: Option<String>,
}

/// One image inside, named by the reference it was pulled as (a digest pin included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRecord {
    pub name: String,
    pub platform: String,
    pub manifest: Descriptor,
    /// The upstream multi-platform index this manifest was picked from, if any.
    pub index_digest: Option<Digest>,
    pub config: Digest,
    pub layers: usize,
    pub size: u64,
    pub source: RecordSource,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RecordSource {
    Registry,
    /// The file name (no directory: that is the build machine's) of the vendor tarball.
    Vendor {
        file: Option<String>,
    },
}

impl BundleMetadata {
    pub fn describe(
        plan: &Plan,
        platforms: &[crate::image::Platform],
        images: &[Image],
        skipped: &[Reference],
        partial_ok: &[Reference],
    ) -> BundleMetadata {
        let names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        let several = names.len() > 1;
        BundleMetadata {
            ferry: Producer {
                version: env!("CARGO_PKG_VERSION").to_string(),
                format: METADATA_FORMAT,
            },
            catalog: plan.release.as_ref().map(|r| r.catalog.clone()),
            release: plan.release.as_ref().map(|r| r.release.clone()),
            kubernetes: plan.span.map(|span| KubernetesSpan {
                span: describe_span(span),
                min: span.min.to_string(),
                max: span.max.map(|m| m.to_string()),
            }),
            service: plan.service.clone(),
            platform: names.first().cloned().unwrap_or_default(),
            partial_platforms: match several {
                true => partial_ok
                    .iter()
                    .filter(|r| images.iter().any(|i| &i.reference == *r))
                    .cloned()
                    .collect(),
                false => Vec::new(),
            },
            platforms: several.then_some(names),
            images: images.iter().map(ImageRecord::describe).collect(),
            skipped: skipped.to_vec(),
            vendor_layer_compression: crate::layer_codec::COMPRESSION.to_string(),
        }
    }

    /// The exact bytes of `ferry.json`: the writer's and the only ones verify accepts.
    pub fn to_bytes(&self) -> Vec<u8> {
        super::layout::pretty(self)
    }

    /// Every platform the bundle carries.
    pub fn all_platforms(&self) -> Vec<String> {
        self.platforms
            .clone()
            .unwrap_or_else(|| vec![self.platform.clone()])
    }

    /// `catalog@release`, when the bundle was built from a catalog release.
    pub fn release_spec(&self) -> Option<String> {
        Some(format!(
            "{}@{}",
            self.catalog.as_deref()?,
            self.release.as_deref()?
        ))
    }
}

impl ImageRecord {
    fn describe(image: &Image) -> ImageRecord {
        ImageRecord {
            name: image.reference.to_string(),
            platform: image.platform.to_string(),
            manifest: image.manifest.clone(),
            index_digest: image.index_digest.clone(),
            config: image.config.digest.clone(),
            layers: image.layers.len(),
            size: image.size(),
            source: match &image.source {
                ImageSource::Registry { .. } => RecordSource::Registry,
                ImageSource::Vendor { file } => RecordSource::Vendor {
                    file: file.file_name().map(|n| n.to_string_lossy().into_owned()),
                },
            },
        }
    }
}
