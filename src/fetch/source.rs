//! Where each image of a plan is fetched from: its registry (or the mirror that stands in for it), the
//! registry an operator pushed the vendor's images to, or the vendor's package (import/).

use std::path::{Path, PathBuf};

use super::pull::PullItem;
use super::{FetchSettings, VendorSource};
use crate::catalog::ImageSource;
use crate::progress::Reporter;
use crate::reference::Reference;
use crate::registry::{Location, Target};
use crate::resolve::{Plan, Wanted};

/// Why the vendor's images cannot be had as the command line says.
#[derive(Debug, thiserror::Error)]
pub enum VendorSourceError {
    #[error(
        "{} image(s) come only from the vendor's release package, not from a public registry:\n  {}\n{}",
        .images.len(),
        .images.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "),
        how_to_supply(.site.as_deref())
    )]
    Missing {
        images: Vec<Reference>,
        /// The site file the build follows, where the source is said.
        site: Option<PathBuf>,
    },
    #[error("--vendor-registry '{target}' does not make a valid image reference: {why}")]
    BadRegistry { target: String, why: String },
}

/// The images to pull, from their registries (or mirrors) and, with `--vendor-registry`, the vendor's
/// from there; and the vendor images `--skip-vendor` leaves out.
pub(super) fn pull_items(
    plan: &Plan,
    vendor: &[&Wanted],
    settings: &FetchSettings,
    reporter: &dyn Reporter,
) -> Result<(Vec<PullItem>, Vec<Reference>), VendorSourceError> {
    let item = |wanted: &Wanted, location| PullItem {
        upstream: wanted.reference.clone(),
        location,
        partial_ok: settings.partial_ok.contains(&wanted.reference),
    };
    let mut items: Vec<PullItem> = plan
        .images
        .iter()
        .filter(|w| w.source == ImageSource::Registry)
        .map(|w| item(w, settings.registry.locate(&w.reference)))
        .collect();
    warn_unused_mirrors(settings, &items, reporter);
    let mut skipped = Vec::new();
    match &settings.vendor {
        _ if vendor.is_empty() => {}
        VendorSource::Unspecified { site } => {
            return Err(missing_vendor_images(vendor, site.clone()))
        }
        VendorSource::Skip => skipped.extend(vendor.iter().map(|w| w.reference.clone())),
        VendorSource::Registry(target) => {
            for wanted in vendor {
                items.push(item(wanted, vendor_location(target, &wanted.reference)?));
            }
        }
        VendorSource::Dirs(_) => {}
    }
    Ok((items, skipped))
}

fn warn_unused_mirrors(settings: &FetchSettings, items: &[PullItem], reporter: &dyn Reporter) {
    for unused in settings
        .registry
        .misspelt_mirrors(items.iter().map(|item| &item.upstream))
    {
        reporter.warning(&format!(
            "--mirror {}={} matches no image to fetch (they come from {}); is '{}' misspelled?",
            unused.from,
            unused.to,
            registries_of(items),
            unused.from
        ));
    }
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

fn missing_vendor_images(vendor: &[&Wanted], site: Option<PathBuf>) -> VendorSourceError {
    VendorSourceError::Missing {
        images: vendor.iter().map(|w| w.reference.clone()).collect(),
        site,
    }
}

/// Where the vendor's images are said to come from: the command line's flags, or a site file's keys
/// (a site file refuses --vendor-registry and --skip-vendor beside it).
fn how_to_supply(site: Option<&Path>) -> String {
    match site {
        None => "supply them with --vendor-dir DIR (the directory holding the package's image tarballs), or \
                 --vendor-registry HOST/PREFIX (a registry where they were pushed), or leave them out with \
                 --skip-vendor"
            .into(),
        Some(site) => format!(
            "supply them under [fetch] in {} with vendor_dirs = [\"DIR\"] (the directory holding the \
             package's image tarballs), or vendor_registry = \"HOST/PREFIX\" (a registry where they were \
             pushed), or leave them out with skip_vendor = true; or give --vendor-dir DIR",
            site.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;
    use crate::resolve::{plans, ProductSpec, Selection};

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
                products: vec![ProductSpec {
                    release: "huawei-csi@4.8.0",
                    service: None,
                }],
                versions: &versions,
                ..Default::default()
            },
        )
        .unwrap()[0];
        let vendor: Vec<&Wanted> = plan
            .images
            .iter()
            .filter(|w| w.source == ImageSource::Vendor)
            .collect();
        let message = missing_vendor_images(&vendor, None).to_string();
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
        // A build that follows a site file is told the file's keys (it refuses --vendor-registry and
        // --skip-vendor beside it).
        let in_site = missing_vendor_images(&vendor, Some("sites/plant7.toml".into())).to_string();
        assert_eq!(
            in_site.lines().last().unwrap(),
            "supply them under [fetch] in sites/plant7.toml with vendor_dirs = [\"DIR\"] (the directory \
             holding the package's image tarballs), or vendor_registry = \"HOST/PREFIX\" (a registry where \
             they were pushed), or leave them out with skip_vendor = true; or give --vendor-dir DIR"
        );
        assert_eq!(
            in_site.lines().count(),
            message.lines().count(),
            "the same images named: {in_site}"
        );
    }
}
