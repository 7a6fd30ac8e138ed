//! From what the user asked for to the bundles to write: one plan per distinct combination of the named
//! releases' image sets (plus any images named directly), and the union that one fetch gets for several
//! bundles.

use std::collections::BTreeSet;

use super::{image_sets, resolve, versions_for, ImageSet, ResolveError};
use crate::catalog::{Catalogs, ImageSource, Release, Service};
use crate::image::Platform;
use crate::k8s::{KubeRange, KubeVersion};
use crate::reference::Reference;

/// An image to carry, as the plan names it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub reference: Reference,
    pub source: ImageSource,
    /// Named directly (`--image`, a list, a manifest, a site file's `extra`), not by a release's table.
    pub named: bool,
}

/// One release's image set in a bundle: the images it needs on a span of Kubernetes versions.
#[derive(Debug, Clone)]
pub struct ReleaseSet {
    pub release: Release,
    /// The Kubernetes versions this image set serves.
    pub span: KubeRange,
    pub service: Option<String>,
}

/// The images of one bundle: the image sets of the releases named (none, one, or several products, such as
/// Kubernetes itself and a storage driver), plus any images named directly.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In the order named.
    pub products: Vec<ReleaseSet>,
    /// The Kubernetes versions every product's image set serves (their overlap), when a release was named.
    pub span: Option<KubeRange>,
    pub images: Vec<Wanted>,
}

/// The longest list of products a file name spells out; beyond it, the first and how many more.
const MAX_NAMED_PRODUCTS: usize = 80;

impl Plan {
    /// A plan of `images` alone, with no release.
    pub fn of_images(images: Vec<Wanted>) -> Plan {
        Plan {
            products: Vec::new(),
            span: None,
            images,
        }
    }

    /// Says what is inside: `huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar`; several products are joined by
    /// `+` (`kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-linux-amd64.tar`, or past 80 characters the first
    /// and `+N-more`), images beyond the releases' tables are counted (`huawei-csi-4.8.0+2-images-…`),
    /// and a bundle that leaves the vendor's images out (`vendor_skipped`) ends in `-incomplete.tar`.
    /// Several platforms are all named: `…-linux-amd64-linux-arm64.tar`; none (`--platform all`, whatever
    /// each image's index lists) is `…-all-platforms.tar`.
    /// The catalog's grammar keeps separators out of its names; this is the check before a path.
    pub fn file_name(
        &self,
        platforms: &[Platform],
        vendor_skipped: bool,
    ) -> Result<String, ResolveError> {
        let name = self.unchecked_file_name(platforms, vendor_skipped);
        match name.contains('/') || name.chars().any(char::is_control) {
            true => Err(ResolveError::FileName(name)),
            false => Ok(name),
        }
    }

    fn unchecked_file_name(&self, platforms: &[Platform], vendor_skipped: bool) -> String {
        let platform = match platforms {
            [] => "all-platforms".to_string(),
            named => named
                .iter()
                .map(|p| p.to_string().replace('/', "-"))
                .collect::<Vec<_>>()
                .join("-"),
        };
        let incomplete = if vendor_skipped && self.has_vendor_images() {
            "-incomplete"
        } else {
            ""
        };
        let extended = match self.extra().count() {
            0 => String::new(),
            n => format!("+{n}-images"),
        };
        // A single product's service comes after the span, as it always did; several products each say
        // their own.
        let (what, service) = match self.products.as_slice() {
            [] => ("images".to_string(), String::new()),
            [one] => (
                format!("{}{extended}", product_name(one)),
                one.service
                    .as_ref()
                    .map(|s| format!("-{s}"))
                    .unwrap_or_default(),
            ),
            several => {
                let mut joined = several
                    .iter()
                    .map(|p| match &p.service {
                        Some(service) => format!("{}-{service}", product_name(p)),
                        None => product_name(p),
                    })
                    .collect::<Vec<_>>()
                    .join("+");
                if joined.len() > MAX_NAMED_PRODUCTS {
                    joined = format!("{}+{}-more", product_name(&several[0]), several.len() - 1);
                }
                (format!("{joined}{extended}"), String::new())
            }
        };
        let span = match self.span {
            Some(span) if span.max.is_none() => format!("-k8s{}-up", span.min),
            Some(span) => format!("-k8s{span}"),
            None => String::new(),
        };
        format!("{what}{span}{service}-{platform}{incomplete}.tar")
    }

    /// The images named directly, beyond what the products' tables list.
    pub fn extra(&self) -> impl Iterator<Item = &Reference> {
        self.images.iter().filter(|w| w.named).map(|w| &w.reference)
    }

    /// Whether some image comes only from the vendor's package.
    pub fn has_vendor_images(&self) -> bool {
        self.images.iter().any(|w| w.source == ImageSource::Vendor)
    }
}

/// `huawei-csi-4.8.0`.
fn product_name(product: &ReleaseSet) -> String {
    format!("{}-{}", product.release.catalog, product.release.release)
}

/// A product as the user named it: `catalog[@release]`, and the one service of it wanted, if any.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProductSpec<'a> {
    pub release: &'a str,
    pub service: Option<&'a str>,
}

/// What the user asked for: releases (for some Kubernetes versions) and/or images by reference.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub products: Vec<ProductSpec<'a>>,
    pub versions: &'a [KubeVersion],
    pub all_versions: bool,
    pub extra: &'a [Reference],
}

/// One plan per distinct combination of the products' image sets that the selection touches, lowest
/// Kubernetes versions first. Two requested versions served by the same sets (1.21 and 1.28 for CSI
/// 4.8.0) give one plan. With several products, a `kubernetes` release among them gives the others their
/// Kubernetes version, and a `--k8s` that disagrees with it is refused.
pub fn plans(catalogs: &Catalogs, selection: &Selection) -> Result<Vec<Plan>, ResolveError> {
    let extra = || {
        selection.extra.iter().map(|r| Wanted {
            reference: r.clone(),
            source: ImageSource::Registry,
            named: true,
        })
    };
    if selection.products.is_empty() {
        if selection.extra.is_empty() {
            return Err(ResolveError::NothingSelected);
        }
        return Ok(vec![Plan::of_images(extra().collect())]);
    }
    let mut found: Vec<(Release, Option<Service>)> = Vec::new();
    for spec in &selection.products {
        let release = catalogs.find(spec.release)?.into_owned();
        if let Some((other, _)) = found.iter().find(|(r, _)| r.catalog == release.catalog) {
            return Err(ResolveError::CatalogTwice {
                first: other.id(),
                second: release.id(),
            });
        }
        let service = spec
            .service
            .map(|name| release.service(name).cloned())
            .transpose()?;
        found.push((release, service));
    }
    let products: Vec<(&Release, Option<&Service>)> =
        found.iter().map(|(r, s)| (r, s.as_ref())).collect();
    let versions = versions_of(&products, selection.versions, selection.all_versions)?;
    let sets: Vec<Vec<ImageSet>> = found
        .iter()
        .map(|(release, service)| image_sets(release, service.as_ref()))
        .collect();
    // Each plan is one image set per product, by index: those of every version asked for, or of all.
    let mut combinations: BTreeSet<Vec<usize>> = BTreeSet::new();
    if selection.all_versions {
        combinations.extend((0..sets[0].len()).map(|i| vec![i]));
    }
    for version in versions {
        let combination: Option<Vec<usize>> = sets
            .iter()
            .map(|of_product| of_product.iter().position(|s| s.span.contains(version)))
            .collect();
        combinations.extend(combination);
    }
    let plans = combinations
        .into_iter()
        .map(|combination| {
            let mut images: Vec<Wanted> = Vec::new();
            let mut products = Vec::new();
            for ((release, service), (of_product, &at)) in
                found.iter().zip(sets.iter().zip(&combination))
            {
                let set = &of_product[at];
                add_once(
                    &mut images,
                    set.images.iter().map(|row| Wanted {
                        reference: row.reference(),
                        source: row.source,
                        named: false,
                    }),
                );
                products.push(ReleaseSet {
                    release: release.clone(),
                    span: set.span,
                    service: service.as_ref().map(|s| s.short.clone()),
                });
            }
            add_once(&mut images, extra());
            Plan {
                span: products.iter().map(|p| p.span).reduce(overlap),
                products,
                images,
            }
        })
        .collect();
    Ok(plans)
}

/// The Kubernetes versions to resolve `products` for: those `asked` for, or a `kubernetes` release's own.
/// Each product must support each of them (a `kubernetes` release only its own); `all` (every version a
/// release supports) is for one release.
pub fn versions_of(
    products: &[(&Release, Option<&Service>)],
    asked: &[KubeVersion],
    all: bool,
) -> Result<Vec<KubeVersion>, ResolveError> {
    let ids = || {
        products
            .iter()
            .map(|(release, _)| release.id())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if all && products.len() > 1 {
        return Err(ResolveError::AllVersionsOfSeveral(ids()));
    }
    let own: Vec<KubeVersion> = products
        .iter()
        .filter_map(|(release, _)| release.kubernetes_version())
        .collect();
    let asked = match asked {
        [] => own.as_slice(),
        asked => asked,
    };
    let mut versions = Vec::new();
    for &(release, service) in products {
        let of_release = match versions_for(release, asked, all) {
            Err(ResolveError::NoVersion(_)) if products.len() > 1 => {
                return Err(ResolveError::NoVersionOfSeveral(ids()))
            }
            result => result?,
        };
        for &version in &of_release {
            // An unsupported version is an error, never an empty set; a kubernetes release refuses
            // another minor than its own.
            resolve(release, version, service)?;
            if !versions.contains(&version) {
                versions.push(version);
            }
        }
    }
    Ok(versions)
}

/// The versions both spans serve; they overlap, as both serve a version asked for.
fn overlap(a: KubeRange, b: KubeRange) -> KubeRange {
    KubeRange {
        min: a.min.max(b.min),
        max: match (a.max, b.max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        },
    }
}

/// Every image of several plans, each once: what one fetch gets for several bundles.
pub fn union(plans: &[Plan]) -> Plan {
    let mut images: Vec<Wanted> = Vec::new();
    add_once(
        &mut images,
        plans.iter().flat_map(|p| p.images.iter().cloned()),
    );
    Plan::of_images(images)
}

/// Appends each image not already listed, keeping the first listing's order.
fn add_once(images: &mut Vec<Wanted>, more: impl IntoIterator<Item = Wanted>) {
    for wanted in more {
        if !images.iter().any(|w| w.reference == wanted.reference) {
            images.push(wanted);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> KubeVersion {
        text.parse().unwrap()
    }

    fn product(release: &str) -> ProductSpec<'_> {
        ProductSpec {
            release,
            service: None,
        }
    }

    fn planned(selection: &Selection) -> Result<Vec<Plan>, ResolveError> {
        plans(&Catalogs::load(&[]).unwrap(), selection)
    }

    #[test]
    fn extra_images_join_the_plan_once() {
        let extra: Vec<Reference> = vec![
            "registry.k8s.io/sig-storage/csi-resizer:v1.9.0"
                .parse()
                .unwrap(),
            "busybox:1.36".parse().unwrap(),
        ];
        let versions = [v("1.28")];
        let selection = Selection {
            products: vec![ProductSpec {
                release: "huawei-csi@4.8.0",
                service: Some("node"),
            }],
            versions: &versions,
            extra: &extra,
            ..Default::default()
        };
        let plan = &planned(&selection).unwrap()[0];
        let names: Vec<String> = plan
            .images
            .iter()
            .map(|w| w.reference.to_string())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names.last().unwrap(), "docker.io/library/busybox:1.36");
        // The resizer is not the node's: named directly, it extends the bundle; busybox too.
        let extended: Vec<String> = plan.extra().map(ToString::to_string).collect();
        assert_eq!(
            extended,
            [
                "registry.k8s.io/sig-storage/csi-resizer:v1.9.0",
                "docker.io/library/busybox:1.36"
            ]
        );
        assert_eq!(
            plan.file_name(&[Platform::linux_amd64()], false).unwrap(),
            "huawei-csi-4.8.0+2-images-k8s1.16-up-node-linux-amd64.tar"
        );
    }

    #[test]
    fn versions_served_by_one_set_make_one_plan() {
        let versions = [v("1.21"), v("1.28"), v("1.18")];
        let selection = Selection {
            products: vec![product("huawei-csi@4.8.0")],
            versions: &versions,
            ..Default::default()
        };
        let spans: Vec<String> = planned(&selection)
            .unwrap()
            .iter()
            .map(|p| p.span.unwrap().to_string())
            .collect();
        assert_eq!(spans, ["1.17-1.19", "1.20+"]);
        let all = planned(&Selection {
            products: vec![product("huawei-csi@4.8.0")],
            all_versions: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            union(&all).images.len(),
            16,
            "every row of the 4.8.0 table once"
        );
    }

    #[test]
    fn file_names_say_what_is_inside() {
        let all = planned(&Selection {
            products: vec![product("huawei-csi@4.8.0")],
            all_versions: true,
            ..Default::default()
        })
        .unwrap();
        let names: Vec<String> = all
            .iter()
            .map(|p| p.file_name(&[Platform::linux_amd64()], false).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "huawei-csi-4.8.0-k8s1.16-linux-amd64.tar",
                "huawei-csi-4.8.0-k8s1.17-1.19-linux-amd64.tar",
                "huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar"
            ]
        );
        // Without the vendor's images, the name says the bundle is incomplete.
        assert_eq!(
            all[2].file_name(&[Platform::linux_amd64()], true).unwrap(),
            "huawei-csi-4.8.0-k8s1.20-up-linux-amd64-incomplete.tar"
        );
        let extra = ["busybox:1".parse().unwrap()];
        let loose = planned(&Selection {
            extra: &extra,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            loose[0]
                .file_name(&["linux/arm/v7".parse().unwrap()], true)
                .unwrap(),
            "images-linux-arm-v7.tar"
        );
    }

    /// Kubernetes and a storage driver make one bundle: the kubernetes release gives the driver its
    /// version, the span is where both sets serve, and the name lists both.
    #[test]
    fn several_products_make_one_plan() {
        let two = planned(&Selection {
            products: vec![product("kubernetes@1.28.3"), product("huawei-csi@4.8.0")],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(two.len(), 1);
        let plan = &two[0];
        assert_eq!(plan.images.len(), 7 + 11);
        assert_eq!(plan.span.unwrap().to_string(), "1.28");
        let spans: Vec<String> = plan.products.iter().map(|p| p.span.to_string()).collect();
        assert_eq!(spans, ["1.28", "1.20+"]);
        let platforms = [Platform::linux_amd64(), "linux/arm64".parse().unwrap()];
        assert_eq!(
            plan.file_name(&platforms, false).unwrap(),
            "kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-linux-amd64-linux-arm64.tar"
        );
        assert_eq!(
            plan.file_name(&platforms[..1], true).unwrap(),
            "kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-linux-amd64-incomplete.tar"
        );
        assert_eq!(
            plan.file_name(&[], false).unwrap(),
            "kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-all-platforms.tar",
            "--platform all"
        );
        // --k8s may say the same version; each service goes with its product.
        let versions = [v("1.28.9")];
        let node = planned(&Selection {
            products: vec![
                ProductSpec {
                    release: "kubernetes@1.28.3",
                    service: Some("node"),
                },
                ProductSpec {
                    release: "huawei-csi@4.8.0",
                    service: Some("node"),
                },
            ],
            versions: &versions,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            node[0].file_name(&platforms[..1], false).unwrap(),
            "kubernetes-1.28.3-node+huawei-csi-4.8.0-node-k8s1.28-linux-amd64.tar"
        );
    }

    #[test]
    fn several_products_refuse_what_they_cannot_mean() {
        let error = |selection: &Selection| planned(selection).unwrap_err().to_string();
        let versions = [v("1.28")];
        assert_eq!(
            error(&Selection {
                products: vec![product("huawei-csi@4.8.0"), product("huawei-csi@4.5.0")],
                versions: &versions,
                ..Default::default()
            }),
            "huawei-csi@4.8.0 and huawei-csi@4.5.0 are two releases of one catalog: a bundle holds one \
             release of each product (--all-releases makes one bundle per release)"
        );
        let versions = [v("1.27")];
        assert_eq!(
            error(&Selection {
                products: vec![product("kubernetes@1.28.3"), product("huawei-csi@4.8.0")],
                versions: &versions,
                ..Default::default()
            }),
            "kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.27 disagrees with it (leave --k8s out, or \
             name a 1.27 release, e.g. kubernetes@1.27)"
        );
        assert_eq!(
            error(&Selection {
                products: vec![product("kubernetes@1.28.3"), product("huawei-csi@4.8.0")],
                all_versions: true,
                ..Default::default()
            }),
            "--all-k8s takes one release (every image set across the Kubernetes versions it supports), \
             and several are named (kubernetes@1.28.3, huawei-csi@4.8.0): give the cluster's version \
             (--k8s VERSION, or a kubernetes@VERSION release among them), or --all-k8s with one release \
             at a time"
        );
        let catalogs = Catalogs::load(&[]).unwrap();
        let csi = catalogs.find("huawei-csi@4.8.0").unwrap();
        let old = catalogs.find("huawei-csi@4.5.0").unwrap();
        assert_eq!(
            versions_of(&[(&csi, None), (&old, None)], &[], false)
                .unwrap_err()
                .to_string(),
            "huawei-csi@4.8.0, huawei-csi@4.5.0: the products need the cluster's Kubernetes version: \
             --k8s VERSION, or a kubernetes@VERSION release among them"
        );
    }

    /// Many products are named by the first and how many more; a name that would be a path is refused.
    #[test]
    fn long_names_are_cut_and_paths_refused() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let mut release = catalogs.find("huawei-csi@4.8.0").unwrap().into_owned();
        let mut set = |catalog: &str, version: &str| {
            release.catalog = catalog.into();
            release.release = version.into();
            ReleaseSet {
                release: release.clone(),
                span: KubeRange {
                    min: v("1.28"),
                    max: Some(v("1.28")),
                },
                service: None,
            }
        };
        let many = Plan {
            products: (0..6)
                .map(|i| set(&format!("product-number-{i}"), "10.20.30"))
                .collect(),
            span: Some(KubeRange {
                min: v("1.28"),
                max: Some(v("1.28")),
            }),
            images: Vec::new(),
        };
        assert_eq!(
            many.file_name(&[Platform::linux_amd64()], false).unwrap(),
            "product-number-0-10.20.30+5-more-k8s1.28-linux-amd64.tar"
        );
        let escape = Plan {
            products: vec![set("huawei-csi", "1/../../escape")],
            span: None,
            images: Vec::new(),
        };
        assert_eq!(
            escape
                .file_name(&[Platform::linux_amd64()], false)
                .unwrap_err()
                .to_string(),
            "the bundle's file name 'huawei-csi-1/../../escape-linux-amd64.tar' would not be a file \
             name: name the output with -o FILE"
        );
    }
}
