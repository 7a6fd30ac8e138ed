//! What to carry and getting it into the cache: a release's images for one Kubernetes version (plus any
//! images named directly), registry images pulled, vendor images imported from the vendor's package.

use std::path::PathBuf;

use crate::cache::BlobStore;
use crate::catalog::{Catalogs, ImageSource as CatalogSource, Release};
use crate::error::{Error, Result};
use crate::image::{Image, Platform};
use crate::import::import_all;
use crate::k8s::{KubeRange, KubeVersion};
use crate::progress::Reporter;
use crate::pull::{pull, PullItem, PullReport};
use crate::reference::Reference;
use crate::registry::{Location, RegistryOptions, Target};
use crate::resolve::{image_sets, resolve};

/// An image to carry, as the plan names it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub reference: Reference,
    pub source: CatalogSource,
}

/// The images of one bundle: one release's image set for a span of Kubernetes versions, plus any images
/// named directly.
#[derive(Debug, Clone)]
pub struct Plan {
    pub release: Option<Release>,
    /// The Kubernetes versions this image set serves, when a release was named.
    pub span: Option<KubeRange>,
    pub service: Option<String>,
    pub images: Vec<Wanted>,
}

/// What the user asked for: a release (for some Kubernetes versions) and/or images by reference.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    pub release: Option<&'a str>,
    pub versions: &'a [KubeVersion],
    pub all_versions: bool,
    pub service: Option<&'a str>,
    pub extra: &'a [Reference],
}

/// One plan per distinct image set the selection touches, lowest Kubernetes versions first. Two requested
/// versions served by the same set (1.21 and 1.28 for CSI 4.8.0) give one plan.
pub fn plans(catalogs: &Catalogs, selection: &Selection) -> Result<Vec<Plan>> {
    let extra = || {
        selection.extra.iter().map(|r| Wanted {
            reference: r.clone(),
            source: CatalogSource::Registry,
        })
    };
    let Some(spec) = selection.release else {
        if selection.extra.is_empty() {
            return Err(Error::Usage("nothing to fetch: name a catalog release (e.g. huawei-csi@4.8.0 --k8s 1.28) or --image REF".into()));
        }
        return Ok(vec![Plan {
            release: None,
            span: None,
            service: None,
            images: extra().collect(),
        }]);
    };
    if selection.versions.is_empty() && !selection.all_versions {
        return Err(Error::Usage(format!(
            "{spec} needs --k8s VERSION or --all-k8s"
        )));
    }
    let release = catalogs.find(spec)?;
    let service = selection
        .service
        .map(|name| release.service(name))
        .transpose()?;
    for &version in selection.versions {
        resolve(release, version, service)?; // an unsupported version is an error, never an empty set
    }
    let mut plans = Vec::new();
    for set in image_sets(release, service) {
        if !selection.all_versions && !selection.versions.iter().any(|v| set.span.contains(*v)) {
            continue;
        }
        let mut images: Vec<Wanted> = set
            .images
            .iter()
            .map(|row| Wanted {
                reference: row.reference(),
                source: row.source,
            })
            .collect();
        add_once(&mut images, extra());
        plans.push(Plan {
            release: Some(release.clone()),
            span: Some(set.span),
            service: service.map(|s| s.short.clone()),
            images,
        });
    }
    Ok(plans)
}

/// Every image of several plans, each once: what one fetch gets for several bundles.
pub fn union(plans: &[Plan]) -> Plan {
    let mut images: Vec<Wanted> = Vec::new();
    add_once(
        &mut images,
        plans.iter().flat_map(|p| p.images.iter().cloned()),
    );
    Plan {
        release: plans.first().and_then(|p| p.release.clone()),
        span: None,
        service: None,
        images,
    }
}

/// Appends each image not already listed, keeping the first listing's order.
fn add_once(images: &mut Vec<Wanted>, more: impl IntoIterator<Item = Wanted>) {
    for wanted in more {
        if !images.iter().any(|w| w.reference == wanted.reference) {
            images.push(wanted);
        }
    }
}

/// Where the images that only the vendor's package has come from.
#[derive(Debug, Clone)]
pub enum VendorSource {
    /// Not said: fail if the plan has vendor images.
    Unspecified,
    /// docker-save tarballs in this directory.
    Dir(PathBuf),
    /// A registry (`HOST[:PORT][/PREFIX]`) where an operator pushed them.
    Registry(String),
    /// Leave them out.
    Skip,
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    pub platform: Platform,
    pub jobs: usize,
    pub registry: RegistryOptions,
    pub vendor: VendorSource,
}

/// What a fetch put in the cache.
#[derive(Debug)]
pub struct Fetched {
    /// In plan order.
    pub images: Vec<Image>,
    /// Vendor images left out by `--skip-vendor`.
    pub skipped: Vec<Reference>,
    pub pull: PullReport,
}

/// Pulls the registry images and, at the same time on other threads, imports the vendor's.
pub fn fetch(
    runtime: &tokio::runtime::Runtime,
    store: &BlobStore,
    plan: &Plan,
    settings: &FetchSettings,
    reporter: &dyn Reporter,
) -> Result<Fetched> {
    let vendor: Vec<&Wanted> = plan
        .images
        .iter()
        .filter(|w| w.source == CatalogSource::Vendor)
        .collect();
    let mut pull_items: Vec<PullItem> = plan
        .images
        .iter()
        .filter(|w| w.source == CatalogSource::Registry)
        .map(|w| PullItem {
            upstream: w.reference.clone(),
            location: settings.registry.locate(&w.reference),
        })
        .collect();
    let mut skipped = Vec::new();
    match &settings.vendor {
        _ if vendor.is_empty() => {}
        VendorSource::Unspecified => return Err(missing_vendor_images(&vendor)),
        VendorSource::Skip => skipped.extend(vendor.iter().map(|w| w.reference.clone())),
        VendorSource::Registry(target) => {
            for wanted in &vendor {
                let location = vendor_location(target, &wanted.reference)?;
                pull_items.push(PullItem {
                    upstream: wanted.reference.clone(),
                    location,
                });
            }
        }
        VendorSource::Dir(_) => {}
    }
    let vendor_refs: Vec<Reference> = vendor.iter().map(|w| w.reference.clone()).collect();
    let (report, imported) = std::thread::scope(|scope| {
        let imported = scope.spawn(|| match &settings.vendor {
            VendorSource::Dir(dir) if !vendor_refs.is_empty() => {
                import_all(store, dir, &vendor_refs, reporter)
            }
            _ => Ok(Vec::new()),
        });
        let report = runtime.block_on(pull(
            store,
            &settings.registry,
            &pull_items,
            &settings.platform,
            settings.jobs,
            reporter,
        ));
        (
            report,
            imported.join().expect("vendor import does not panic"),
        )
    });
    let report = report?;
    let mut fetched: Vec<Image> = report.images.iter().cloned().chain(imported?).collect();
    if let Some(wrong) = fetched
        .iter()
        .find(|i| !settings.platform.matches(&i.platform))
    {
        return Err(Error::Usage(format!(
            "{} from the vendor's package is {}, but {} was asked for",
            wrong.reference, wrong.platform, settings.platform
        )));
    }
    // Plan order, so that listings and bundles read like the vendor's table.
    let images = plan
        .images
        .iter()
        .filter_map(|w| {
            fetched
                .iter()
                .position(|i| i.reference == w.reference)
                .map(|at| fetched.swap_remove(at))
        })
        .collect();
    Ok(Fetched {
        images,
        skipped,
        pull: report,
    })
}

/// `--vendor-registry HOST/PREFIX`: `docker.io/library/huawei-csi:4.8.0` is at `HOST/PREFIX/huawei-csi:4.8.0`,
/// the naming `ferry push` uses, so a registry ferry filled serves as a vendor registry.
fn vendor_location(target: &str, upstream: &Reference) -> Result<Location> {
    // A bad --vendor-registry is reported as such, not later as a network error.
    let bad = |why: String| {
        Error::Usage(format!(
            "--vendor-registry '{target}' does not make a valid image reference: {why}"
        ))
    };
    let reference = target
        .parse::<Target>()
        .map_err(bad)?
        .map(upstream)
        .map_err(bad)?;
    Ok(Location {
        reference,
        notes: Vec::new(),
    })
}

fn missing_vendor_images(vendor: &[&Wanted]) -> Error {
    let names: Vec<String> = vendor.iter().map(|w| w.reference.to_string()).collect();
    Error::Usage(format!(
        "{} image(s) come only from the vendor's release package, not from a public registry:\n  {}\n\
         supply them with --vendor-dir DIR (the directory holding the package's image tarballs), or \
         --vendor-registry HOST/PREFIX (a registry where they were pushed), or leave them out with --skip-vendor",
        names.len(),
        names.join("\n  ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_images_map_under_the_vendor_registry() {
        let upstream: Reference = "huawei-csi:4.8.0".parse().unwrap();
        let location = vendor_location("10.0.0.5:5000/huawei", &upstream).unwrap();
        assert_eq!(
            location.reference.to_string(),
            "10.0.0.5:5000/huawei/huawei-csi:4.8.0"
        );
        let bare = vendor_location("10.0.0.5:5000", &upstream).unwrap();
        assert_eq!(bare.reference.to_string(), "10.0.0.5:5000/huawei-csi:4.8.0");
        assert!(vendor_location("10.0.0.5:5000/UPPER", &upstream).is_err());
    }

    #[test]
    fn a_plan_without_vendor_source_names_each_missing_image() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let versions = ["1.28".parse().unwrap()];
        let plan = &plans(
            &catalogs,
            &Selection {
                release: Some("huawei-csi@4.8.0"),
                versions: &versions,
                ..Default::default()
            },
        )
        .unwrap()[0];
        let vendor: Vec<&Wanted> = plan
            .images
            .iter()
            .filter(|w| w.source == CatalogSource::Vendor)
            .collect();
        let message = missing_vendor_images(&vendor).to_string();
        for name in [
            "storage-backend-controller:4.8.0",
            "storage-backend-sidecar:4.8.0",
            "library/huawei-csi:4.8.0",
            "huawei-csi-extender:4.8.0",
        ] {
            assert!(message.contains(name), "{message}");
        }
        assert!(
            message.contains("--vendor-dir") && message.contains("--skip-vendor"),
            "{message}"
        );
    }

    #[test]
    fn extra_images_join_the_plan_once() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let extra: Vec<Reference> = vec![
            "registry.k8s.io/sig-storage/csi-resizer:v1.9.0"
                .parse()
                .unwrap(),
            "busybox:1.36".parse().unwrap(),
        ];
        let versions = ["1.28".parse().unwrap()];
        let selection = Selection {
            release: Some("huawei-csi@4.8.0"),
            versions: &versions,
            service: Some("node"),
            extra: &extra,
            ..Default::default()
        };
        let plan = &plans(&catalogs, &selection).unwrap()[0];
        let names: Vec<String> = plan
            .images
            .iter()
            .map(|w| w.reference.to_string())
            .collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names.last().unwrap(), "docker.io/library/busybox:1.36");
    }

    #[test]
    fn versions_served_by_one_set_make_one_plan() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let versions: Vec<KubeVersion> = ["1.21", "1.28", "1.18"]
            .iter()
            .map(|v| v.parse().unwrap())
            .collect();
        let selection = Selection {
            release: Some("huawei-csi@4.8.0"),
            versions: &versions,
            ..Default::default()
        };
        let spans: Vec<String> = plans(&catalogs, &selection)
            .unwrap()
            .iter()
            .map(|p| p.span.unwrap().to_string())
            .collect();
        assert_eq!(spans, ["1.17-1.19", "1.20+"]);
        let all = plans(
            &catalogs,
            &Selection {
                release: Some("huawei-csi@4.8.0"),
                all_versions: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            union(&all).images.len(),
            16,
            "every row of the 4.8.0 table once"
        );
    }
}
