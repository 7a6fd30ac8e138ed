//! `ferry.json`: what a bundle holds and why. Written by `ferry bundle`, read back by verify, inspect, push
//! and load. Nothing machine- or time-specific goes in, so that two people building from the same inputs
//! get the same bytes.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::image::{Descriptor, Image, ImageSource, Platform};
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
    /// With several products (Kubernetes itself and a storage driver, say): each of them, in the order
    /// named, and then `catalog`, `release` and `service` are null and `kubernetes` is the versions every
    /// product's image set serves. Absent for one product, so that such bundles keep their bytes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<ProductRecord>,
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
    /// Images named directly (`--image`, lists, manifests, a site file's `extra`) beyond what the products'
    /// tables list: the bundle is more than its releases. Absent when there are none, or no product.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<Reference>,
    /// Vendor layers are compressed by ferry; the same setting is what makes rebuilds byte-identical.
    pub vendor_layer_compression: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Producer {
    pub version: String,
    pub format: u32,
}

/// One product of a bundle of several: a catalog release, the span its image set serves, and the one
/// service of it carried, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductRecord {
    pub catalog: String,
    pub release: String,
    pub kubernetes: KubernetesSpan,
    pub service: Option<String>,
}

impl ProductRecord {
    /// `catalog@release`.
    pub fn spec(&self) -> String {
        format!("{}@{}", self.catalog, self.release)
    }
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

/// What `platforms` of a bundle made with `--platform all` lists: each platform once, in the order met,
/// attestations' (`unknown/unknown`) left out.
pub fn platforms_met<'a>(platforms: impl IntoIterator<Item = &'a Platform>) -> Vec<String> {
    let mut met: Vec<String> = Vec::new();
    for platform in platforms {
        let name = platform.to_string();
        if !platform.is_unknown() && !met.contains(&name) {
            met.push(name);
        }
    }
    met
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
        let names = match every {
            true => platforms_met(images.iter().map(|i| &i.platform)),
            false => platforms.iter().map(ToString::to_string).collect(),
        };
        let several = names.len() > 1 || every;
        let one = match plan.products.as_slice() {
            [one] => Some(one),
            _ => None,
        };
        BundleMetadata {
            ferry: Producer {
                version: env!("CARGO_PKG_VERSION").to_string(),
                format: METADATA_FORMAT,
            },
            catalog: one.map(|p| p.release.catalog.clone()),
            release: one.map(|p| p.release.release.clone()),
            kubernetes: plan.span.map(KubernetesSpan::of),
            service: one.and_then(|p| p.service.clone()),
            products: match plan.products.len() {
                0 | 1 => Vec::new(),
                _ => plan
                    .products
                    .iter()
                    .map(|p| ProductRecord {
                        catalog: p.release.catalog.clone(),
                        release: p.release.release.clone(),
                        kubernetes: KubernetesSpan::of(p.span),
                        service: p.service.clone(),
                    })
                    .collect(),
            },
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
            extra: match plan.products.is_empty() {
                true => Vec::new(),
                false => plan.extra().cloned().collect(),
            },
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

    /// `catalog@release` when the bundle was built from a catalog release; with several, each joined by
    /// `+` (`kubernetes@1.28.3+huawei-csi@4.8.0`).
    pub fn release_spec(&self) -> Option<String> {
        let products = self.products();
        (!products.is_empty()).then(|| {
            products
                .iter()
                .map(ProductRecord::spec)
                .collect::<Vec<_>>()
                .join("+")
        })
    }

    /// Every catalog release the bundle carries the images of: the one its top-level fields name, or
    /// each of several.
    pub fn products(&self) -> Vec<ProductRecord> {
        if !self.products.is_empty() {
            return self.products.clone();
        }
        match (&self.catalog, &self.release, &self.kubernetes) {
            (Some(catalog), Some(release), Some(kubernetes)) => vec![ProductRecord {
                catalog: catalog.clone(),
                release: release.clone(),
                kubernetes: kubernetes.clone(),
                service: self.service.clone(),
            }],
            _ => Vec::new(),
        }
    }

    /// What a reader must know before trusting the bundle to be what its releases need, for the top of
    /// `verify` and `inspect`: that it leaves the vendor's images out, or holds images beyond its tables.
    pub fn caveats(&self) -> Vec<String> {
        let names = |images: &[Reference]| {
            images
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut caveats = Vec::new();
        if !self.skipped.is_empty() {
            caveats.push(format!(
                "incomplete: made with --skip-vendor, {} vendor image(s) are not inside: {} (they \
                 come with the vendor's package)",
                self.skipped.len(),
                names(&self.skipped)
            ));
        }
        if !self.extra.is_empty() {
            caveats.push(format!(
                "extended: {} image(s) besides those of {}: {}",
                self.extra.len(),
                self.products()
                    .iter()
                    .map(ProductRecord::spec)
                    .collect::<Vec<_>>()
                    .join(" and "),
                names(&self.extra)
            ));
        }
        caveats
    }
}

impl KubernetesSpan {
    fn of(span: crate::k8s::KubeRange) -> KubernetesSpan {
        KubernetesSpan {
            span: describe_span(span),
            min: span.min.to_string(),
            max: span.max.map(|m| m.to_string()),
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;
    use crate::image::Platform;
    use crate::resolve::{plans, ProductSpec, Selection};

    fn described(products: &[&str], extra: &[&str], skipped: &[&str]) -> BundleMetadata {
        let catalogs = Catalogs::load(&[]).unwrap();
        let versions = ["1.28".parse().unwrap()];
        let extra: Vec<Reference> = extra.iter().map(|r| r.parse().unwrap()).collect();
        let plan = &plans(
            &catalogs,
            &Selection {
                products: products
                    .iter()
                    .map(|release| ProductSpec {
                        release,
                        service: None,
                    })
                    .collect(),
                versions: &versions,
                extra: &extra,
                ..Default::default()
            },
        )
        .unwrap()[0];
        let skipped: Vec<Reference> = skipped.iter().map(|r| r.parse().unwrap()).collect();
        BundleMetadata::describe(plan, &[Platform::linux_amd64()], &[], &skipped, &[])
    }

    /// A bundle of one release keeps the keys (and so the bytes) it always had; one of several names each.
    #[test]
    fn one_product_keeps_its_keys_and_several_are_each_recorded() {
        let one = described(&["huawei-csi@4.8.0"], &[], &[]);
        let json: serde_json::Value = serde_json::from_slice(&one.to_bytes()).unwrap();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "catalog",
                "ferry",
                "images",
                "kubernetes",
                "platform",
                "release",
                "service",
                "skipped",
                "vendor_layer_compression"
            ]
        );
        assert_eq!(one.release_spec().as_deref(), Some("huawei-csi@4.8.0"));
        assert_eq!(one.products()[0].kubernetes.span, "1.20 and later");
        assert!(one.caveats().is_empty());

        let two = described(&["kubernetes@1.28.3", "huawei-csi@4.8.0"], &[], &[]);
        assert_eq!((&two.catalog, &two.release), (&None, &None));
        assert_eq!(two.kubernetes.as_ref().unwrap().span, "1.28");
        assert_eq!(
            two.release_spec().as_deref(),
            Some("kubernetes@1.28.3+huawei-csi@4.8.0")
        );
        let read: BundleMetadata = serde_json::from_slice(&two.to_bytes()).unwrap();
        assert_eq!(read, two);
        // What an older ferry wrote, without the new keys, still reads.
        let old: BundleMetadata = serde_json::from_slice(&one.to_bytes()).unwrap();
        assert_eq!((old.products.len(), old.extra.len()), (0, 0));
    }

    #[test]
    fn incomplete_and_extended_bundles_say_so() {
        let metadata = described(
            &["kubernetes@1.28.3", "huawei-csi@4.8.0"],
            &["busybox:1.36", "registry.k8s.io/pause:3.9"],
            &["huawei-csi:4.8.0"],
        );
        assert_eq!(
            metadata.caveats(),
            [
                "incomplete: made with --skip-vendor, 1 vendor image(s) are not inside: \
                 docker.io/library/huawei-csi:4.8.0 (they come with the vendor's package)",
                "extended: 1 image(s) besides those of kubernetes@1.28.3 and huawei-csi@4.8.0: \
                 docker.io/library/busybox:1.36"
            ]
        );
        // Images named without a release are the bundle itself, not an extension of it.
        let catalogs = Catalogs::load(&[]).unwrap();
        let extra: Vec<Reference> = vec!["busybox:1.36".parse().unwrap()];
        let plan = &plans(
            &catalogs,
            &Selection {
                extra: &extra,
                ..Default::default()
            },
        )
        .unwrap()[0];
        let loose = BundleMetadata::describe(plan, &[Platform::linux_amd64()], &[], &[], &[]);
        assert!(loose.extra.is_empty() && loose.caveats().is_empty());
    }
}
