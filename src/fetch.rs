//! Getting a plan's images into the cache: registry images pulled and, at the same time, vendor images
//! imported from the vendor's package.

use std::path::PathBuf;

use crate::cache::BlobStore;
use crate::catalog::ImageSource as CatalogSource;
use crate::error::{Error, Result};
use crate::image::{Image, Platform};
use crate::import::import_all;
use crate::interrupt;
use crate::progress::Reporter;
use crate::pull::{pull, PullItem, PullReport};
use crate::reference::Reference;
use crate::registry::{Location, RegistryOptions, Target};
use crate::resolve::{Plan, Wanted};

/// Why the vendor's images cannot be had as the command line says.
#[derive(Debug, thiserror::Error)]
pub enum VendorSourceError {
    #[error(
        "{} image(s) come only from the vendor's release package, not from a public registry:\n  {}\n\
         supply them with --vendor-dir DIR (the directory holding the package's image tarballs), or \
         --vendor-registry HOST/PREFIX (a registry where they were pushed), or leave them out with --skip-vendor",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  ")
    )]
    Missing(Vec<Reference>),
    #[error("--vendor-registry '{target}' does not make a valid image reference: {why}")]
    BadRegistry { target: String, why: String },
    #[error("{image} from the vendor's package is {found}, but {wanted} was asked for")]
    WrongPlatform {
        image: Reference,
        found: Platform,
        wanted: String,
    },
}

/// Where the images that only the vendor's package has come from.
#[derive(Debug, Clone)]
pub enum VendorSource {
    /// Not said: fail if the plan has vendor images.
    Unspecified,
    /// docker-save or OCI archives in these directories (one per architecture package, say).
    Dirs(Vec<PathBuf>),
    /// A registry (`HOST[:PORT][/PREFIX]`) where an operator pushed them.
    Registry(String),
    /// Leave them out.
    Skip,
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Every image is fetched for each, in this order; the first is the one docker's view of a bundle shows.
    pub platforms: Vec<Platform>,
    /// Images carried with the platforms they have when they lack some of `platforms`.
    pub partial_ok: Vec<Reference>,
    pub jobs: usize,
    pub registry: RegistryOptions,
    pub vendor: VendorSource,
}

/// What a fetch put in the cache.
#[derive(Debug)]
pub struct Fetched {
    /// In plan order, each image's platforms in the order asked for.
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
            partial_ok: settings.partial_ok.contains(&w.reference),
        })
        .collect();
    for unused in settings
        .registry
        .misspelt_mirrors(pull_items.iter().map(|item| &item.upstream))
    {
        reporter.warning(&format!(
            "--mirror {}={} matches no image to fetch (they come from {}); is '{}' misspelled?",
            unused.from,
            unused.to,
            registries_of(&pull_items),
            unused.from
        ));
    }
    let mut skipped = Vec::new();
    match &settings.vendor {
        _ if vendor.is_empty() => {}
        VendorSource::Unspecified => return Err(missing_vendor_images(&vendor).into()),
        VendorSource::Skip => skipped.extend(vendor.iter().map(|w| w.reference.clone())),
        VendorSource::Registry(target) => {
            for wanted in &vendor {
                let location = vendor_location(target, &wanted.reference)?;
                pull_items.push(PullItem {
                    upstream: wanted.reference.clone(),
                    location,
                    partial_ok: settings.partial_ok.contains(&wanted.reference),
                });
            }
        }
        VendorSource::Dirs(_) => {}
    }
    let vendor_refs: Vec<Reference> = vendor.iter().map(|w| w.reference.clone()).collect();
    let (report, imported) = std::thread::scope(|scope| {
        let imported = scope.spawn(|| match &settings.vendor {
            VendorSource::Dirs(dirs) if !vendor_refs.is_empty() => import_all(
                store,
                dirs,
                &vendor_refs,
                &settings.platforms,
                &settings.partial_ok,
                reporter,
            ),
            _ => Ok(Vec::new()),
        });
        let pulling = pull(
            store,
            &settings.registry,
            &pull_items,
            &settings.platforms,
            settings.jobs,
            reporter,
        );
        // A signal drops the downloads where they are; their partial files stay, to be resumed.
        let report = runtime.block_on(async {
            tokio::select! {
                report = pulling => Ok(report),
                stop = interrupt::signalled() => Err(stop),
            }
        });
        // The vendor layers being compressed would be thrown away: stop them too.
        if matches!(report, Ok(Err(_))) {
            interrupt::abandon();
        }
        (
            report,
            imported.join().expect("vendor import does not panic"),
        )
    });
    let report = report.map_err(Error::Interrupted)?;
    let (report, imported) = match (report, imported) {
        (Ok(report), Ok(imported)) => (report, imported),
        (Err(pull), Err(import)) if interrupt::is_abandonment(&import) => return Err(pull.into()),
        // Both sources failed on their own: say both, so one run shows everything to fix.
        (Err(pull), Err(import)) => return Err(Error::Several(vec![pull.into(), import.into()])),
        (Err(pull), _) => return Err(pull.into()),
        (_, Err(import)) => return Err(import.into()),
    };
    let mut fetched: Vec<Image> = report.images.iter().cloned().chain(imported).collect();
    if let Some(wrong) = fetched
        .iter()
        .find(|i| !settings.platforms.iter().any(|p| p.matches(&i.platform)))
    {
        return Err(VendorSourceError::WrongPlatform {
            image: wrong.reference.clone(),
            found: wrong.platform.clone(),
            wanted: settings
                .platforms
                .iter()
                .map(Platform::to_string)
                .collect::<Vec<_>>()
                .join(","),
        }
        .into());
    }
    // Plan order, so that listings and bundles read like the vendor's table; then platform order.
    let mut images = Vec::with_capacity(fetched.len());
    for wanted in &plan.images {
        for platform in &settings.platforms {
            if let Some(at) = fetched
                .iter()
                .position(|i| i.reference == wanted.reference && platform.matches(&i.platform))
            {
                images.push(fetched.swap_remove(at));
            }
        }
    }
    Ok(Fetched {
        images,
        skipped,
        pull: report,
    })
}

/// The upstream registries of `items`, for messages: `quay.io, registry.k8s.io`.
fn registries_of(items: &[PullItem]) -> String {
    let registries: std::collections::BTreeSet<&str> =
        items.iter().map(|item| item.upstream.registry()).collect();
    if registries.is_empty() {
        return "no registry".into();
    }
    registries.into_iter().collect::<Vec<_>>().join(", ")
}

/// `--vendor-registry HOST/PREFIX`: `docker.io/library/huawei-csi:4.8.0` is at `HOST/PREFIX/huawei-csi:4.8.0`,
/// the naming `ferry push` uses, so a registry ferry filled serves as a vendor registry.
fn vendor_location(target: &str, upstream: &Reference) -> Result<Location, VendorSourceError> {
    // A bad --vendor-registry is reported as such, not later as a network error.
    let bad = |why: String| VendorSourceError::BadRegistry {
        target: target.to_string(),
        why,
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

fn missing_vendor_images(vendor: &[&Wanted]) -> VendorSourceError {
    VendorSourceError::Missing(vendor.iter().map(|w| w.reference.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;
    use crate::resolve::{plans, Selection};

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
}
