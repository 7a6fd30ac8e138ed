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

/// `platform` of a bundle made with `--platform all`: each image is carried with its whole upstream
/// index, whatever platforms that lists.
pub const EVERY_PLATFORM: &str = "all";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleMetadata {
    pub ferry: Producer,
    pub catalog: Option<String>,
    pub release: Option<String>,
    pub kubernetes: Option<KubernetesSpan>,
    pub service: Option<String>,
    /// The one platform, or with several the first: the one `manifest.json` describes. [`EVERY_PLATFORM`]
    /// for `--platform all`, where `manifest.json` describes each image's first platform that is not
    /// `unknown/unknown`.
    pub platform: String,
    /// Every platform carried, when there are several (absent for one, so that such bundles keep their
    /// bytes). Each image is then listed once per platform it has, its upstream manifest digest each time.
    /// With `--platform all`, those of any image but `unknown/unknown` (attestations, listed too).
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

/// An upstream index an image was picked from that the bundle does not carry, and what to pin instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UncarriedIndex {
    /// As `ferry.json` names the image.
    pub image: String,
    pub index: Digest,
    pub pin_instead: Vec<PlatformPin>,
}

/// One platform's manifest of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlatformPin {
    pub platform: String,
    pub manifest: Digest,
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
        let every = platforms.is_empty();
        let mut names: Vec<String> = platforms.iter().map(ToString::to_string).collect();
        if every {
            for platform in images.iter().map(|i| &i.platform) {
                let name = platform.to_string();
                if !platform.is_unknown() && !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        let several = names.len() > 1 || every;
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
            platform: match every {
                true => EVERY_PLATFORM.to_string(),
                false => names.first().cloned().unwrap_or_default(),
            },
            partial_platforms: match several && !every {
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

    /// Whether it was made with `--platform all`: each image with its whole upstream index.
    pub fn carries_every_platform(&self) -> bool {
        self.platform == EVERY_PLATFORM
    }

    /// Every platform the bundle carries.
    pub fn all_platforms(&self) -> Vec<String> {
        self.platforms
            .clone()
            .unwrap_or_else(|| vec![self.platform.clone()])
    }

    /// The upstream indexes its images were picked from and it does not carry (made without
    /// `--platform all`): a pod pinned to one of their digests finds nothing after push or from serve.
    /// Each with the platforms' manifest digests to pin instead, in the bundle's order.
    pub fn uncarried_indexes(&self) -> Vec<UncarriedIndex> {
        let mut uncarried: Vec<UncarriedIndex> = Vec::new();
        if self.carries_every_platform() {
            return uncarried;
        }
        for record in &self.images {
            let Some(index) = &record.index_digest else {
                continue;
            };
            let pin = PlatformPin {
                platform: record.platform.clone(),
                manifest: record.manifest.digest.clone(),
            };
            match uncarried
                .iter_mut()
                .find(|u| u.image == record.name && &u.index == index)
            {
                Some(known) => known.pin_instead.push(pin),
                None => uncarried.push(UncarriedIndex {
                    image: record.name.clone(),
                    index: index.clone(),
                    pin_instead: vec![pin],
                }),
            }
        }
        uncarried
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
