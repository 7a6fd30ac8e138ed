//! What to carry and getting it into the cache: a release's images for one Kubernetes version (plus any
//! images named directly), registry images pulled, vendor images imported from the vendor's package.

use std::path::PathBuf;

use crate::cache::BlobStore;
use crate::catalog::{Catalogs, ImageSource as CatalogSource, Release};
use crate::error::{Error, Result};
use crate::image::{Image, Platform};
use crate::k8s::KubeVersion;
use crate::progress::Reporter;
use crate::pull::{pull, PullItem, PullReport};
use crate::reference::{Reference, DOCKER_HUB};
use crate::registry::{Location, RegistryOptions};
use crate::resolve::resolve;

/// An image to carry, as the plan names it.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub reference: Reference,
    pub source: CatalogSource,
}

/// The images one run carries.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The catalog release and Kubernetes version, when a release was named.
    pub release: Option<(Release, KubeVersion)>,
    pub images: Vec<Wanted>,
}

impl Plan {
    /// The images of `release` (if any) for `version` and `service`, then each `extra` image not already in.
    pub fn new(
        catalogs: &Catalogs,
        release: Option<&str>,
        version: Option<KubeVersion>,
        service: Option<&str>,
        extra: &[Reference],
    ) -> Result<Plan> {
        let mut images = Vec::new();
        let release = match (release, version) {
            (Some(spec), Some(version)) => {
                let release = catalogs.find(spec)?;
                let service = service.map(|name| release.service(name)).transpose()?;
                for row in resolve(release, version, service)? {
                    images.push(Wanted { reference: row.reference(), source: row.source });
                }
                Some((release.clone(), version))
            }
            (Some(_), None) => return Err(Error::Usage("a catalog release needs --k8s VERSION".into())),
            (None, _) => None,
        };
        for reference in extra {
            if !images.iter().any(|w: &Wanted| &w.reference == reference) {
                images.push(Wanted { reference: reference.clone(), source: CatalogSource::Registry });
            }
        }
        if images.is_empty() {
            return Err(Error::Usage("nothing to fetch: name a catalog release (e.g. huawei-csi@4.8.0 --k8s 1.28) or --image REF".into()));
        }
        Ok(Plan { release, images })
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

pub async fn fetch(store: &BlobStore, plan: &Plan, settings: &FetchSettings, reporter: &dyn Reporter) -> Result<Fetched> {
    let vendor: Vec<&Wanted> = plan.images.iter().filter(|w| w.source == CatalogSource::Vendor).collect();
    let mut pull_items: Vec<PullItem> = plan
        .images
        .iter()
        .filter(|w| w.source == CatalogSource::Registry)
        .map(|w| PullItem { upstream: w.reference.clone(), location: settings.registry.locate(&w.reference) })
        .collect();
    let mut skipped = Vec::new();
    match &settings.vendor {
        _ if vendor.is_empty() => {}
        VendorSource::Unspecified => return Err(missing_vendor_images(&vendor)),
        VendorSource::Skip => skipped.extend(vendor.iter().map(|w| w.reference.clone())),
        VendorSource::Registry(target) => {
            for wanted in &vendor {
                let location = vendor_location(target, &wanted.reference)?;
                pull_items.push(PullItem { upstream: wanted.reference.clone(), location });
            }
        }
        VendorSource::Dir(_) => {}
    }
    let report = pull(store, &settings.registry, &pull_items, &settings.platform, settings.jobs, reporter).await?;
    let mut fetched: Vec<Image> = report.images.clone();
    if let VendorSource::Dir(dir) = &settings.vendor {
        // VENDOR-IMPORT: wired up when src/vendor.rs lands.
        return Err(Error::Usage(format!("--vendor-dir {} is not wired up yet", dir.display())));
    }
    // Plan order, so that listings and bundles read like the vendor's table.
    let images = plan
        .images
        .iter()
        .filter_map(|w| fetched.iter().position(|i| i.reference == w.reference).map(|at| fetched.swap_remove(at)))
        .collect();
    Ok(Fetched { images, skipped, pull: report })
}

/// `--vendor-registry HOST/PREFIX`: `docker.io/library/huawei-csi:4.8.0` is at `HOST/PREFIX/huawei-csi:4.8.0`.
fn vendor_location(target: &str, upstream: &Reference) -> Result<Location> {
    let target = target.trim_end_matches('/');
    let (host, prefix) = target.split_once('/').map_or((target, None), |(h, p)| (h, Some(p)));
    let path = if upstream.registry() == DOCKER_HUB {
        upstream.repository().strip_prefix("library/").unwrap_or(upstream.repository())
    } else {
        upstream.repository()
    };
    let repository = prefix.map_or(path.to_string(), |p| format!("{p}/{path}"));
    // Parse what we built so a bad --vendor-registry is reported as such, not as a network error.
    let text = format!("{host}/{repository}:{}", upstream.tag().unwrap_or("latest"));
    let parsed: Reference = text
        .parse()
        .map_err(|_| Error::Usage(format!("--vendor-registry '{target}' does not make a valid image reference ({text})")))?;
    Ok(Location { reference: upstream.relocated(parsed.registry(), parsed.repository().to_string()), notes: Vec::new() })
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
        assert_eq!(location.reference.to_string(), "10.0.0.5:5000/huawei/huawei-csi:4.8.0");
        let bare = vendor_location("10.0.0.5:5000", &upstream).unwrap();
        assert_eq!(bare.reference.to_string(), "10.0.0.5:5000/huawei-csi:4.8.0");
        assert!(vendor_location("10.0.0.5:5000/UPPER", &upstream).is_err());
    }

    #[test]
    fn a_plan_without_vendor_source_names_each_missing_image() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let plan = Plan::new(&catalogs, Some("huawei-csi@4.8.0"), Some("1.28".parse().unwrap()), None, &[]).unwrap();
        let vendor: Vec<&Wanted> = plan.images.iter().filter(|w| w.source == CatalogSource::Vendor).collect();
        let message = missing_vendor_images(&vendor).to_string();
        for name in ["storage-backend-controller:4.8.0", "storage-backend-sidecar:4.8.0", "library/huawei-csi:4.8.0", "huawei-csi-extender:4.8.0"] {
            assert!(message.contains(name), "{message}");
        }
        assert!(message.contains("--vendor-dir") && message.contains("--skip-vendor"), "{message}");
    }

    #[test]
    fn extra_images_join_the_plan_once() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let extra: Vec<Reference> = vec!["registry.k8s.io/sig-storage/csi-resizer:v1.9.0".parse().unwrap(), "busybox:1.36".parse().unwrap()];
        let plan = Plan::new(&catalogs, Some("huawei-csi@4.8.0"), Some("1.28".parse().unwrap()), Some("node"), &extra).unwrap();
        let names: Vec<String> = plan.images.iter().map(|w| w.reference.to_string()).collect();
        assert_eq!(names.len(), 5, "{names:?}");
        assert_eq!(names.last().unwrap(), "docker.io/library/busybox:1.36");
    }
}
