//! From (release, Kubernetes version, service) to the exact rows of the vendor's table. Pure: no I/O.

pub mod image_list;
pub mod input;
pub mod manifests;
pub mod named;
mod plan;
pub mod site;
mod upgrade;

use std::collections::BTreeSet;

use crate::catalog::{CatalogError, CatalogImage, PatchVersion, Release, Service};
use crate::k8s::{KubeRange, KubeVersion};

pub use plan::{plans, union, versions_of, Plan, ProductSpec, ReleaseSet, Selection, Wanted};
pub use upgrade::{upgrade, Item, Side, Upgrade};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("{release} does not support Kubernetes {version}: it supports Kubernetes {supported}")]
    Unsupported {
        release: String,
        version: KubeVersion,
        supported: String,
    },
    #[error(
        "the bundle's file name '{}' would not be a file name: name the output with -o FILE",
        crate::io::shown(.0, 200)
    )]
    FileName(String),
    #[error("nothing to fetch: name a catalog release (e.g. huawei-csi@4.8.0 --k8s 1.28) or --image REF")]
    NothingSelected,
    #[error("{0} needs --k8s VERSION or --all-k8s")]
    NoVersion(String),
    #[error("{0}: the products need the cluster's Kubernetes version: --k8s VERSION, or a kubernetes@VERSION release among them")]
    NoVersionOfSeveral(String),
    #[error(
        "--all-k8s takes one release (every image set across the Kubernetes versions it supports), and \
         several are named ({0}): give the cluster's version (--k8s VERSION, or a kubernetes@VERSION \
         release among them), or --all-k8s with one release at a time"
    )]
    AllVersionsOfSeveral(String),
    #[error("{first} and {second} are two releases of one catalog: a bundle holds one release of each product (--all-releases makes one bundle per release)")]
    CatalogTwice { first: String, second: String },
    /// The release or service named is not in the catalogs.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "{release} is Kubernetes {stands_for}: --k8s {version} disagrees with it (leave --k8s out, or \
         name a {version} release, e.g. kubernetes@{version})"
    )]
    OtherKubernetes {
        release: String,
        stands_for: PatchVersion,
        version: KubeVersion,
    },
}

/// Images that serve one span of Kubernetes versions identically.
#[derive(Debug, Clone)]
pub struct ImageSet<'a> {
    pub span: KubeRange,
    pub images: Vec<&'a CatalogImage>,
}

/// The rows of `release` that apply to `version` (and `service`, when given), in table order.
pub fn resolve<'a>(
    release: &'a Release,
    version: KubeVersion,
    service: Option<&Service>,
) -> Result<Vec<&'a CatalogImage>, ResolveError> {
    if let Some(stands_for) = release.kubernetes_release {
        if stands_for.minor_version() != version {
            return Err(ResolveError::OtherKubernetes {
                release: release.id(),
                stands_for,
                version,
            });
        }
    }
    let images = rows_for(release, version, service);
    // A version no row covers is an error even with a service filter: an empty list would read as
    // "nothing to carry", which is never true for a supported version.
    if rows_for(release, version, None).is_empty() {
        return Err(ResolveError::Unsupported {
            release: format!("{} {}", release.catalog, release.release),
            version,
            supported: match release.newest_validated_kubernetes {
                Some(newest) => format!(
                    "{} (the vendor validated {}-{newest})",
                    describe_span(supported_span(release)),
                    release.min_kubernetes
                ),
                None => describe_span(supported_span(release)),
            },
        });
    }
    Ok(images)
}

/// The Kubernetes versions to resolve `release` for: those asked for, or, for a release of Kubernetes
/// itself, its own (which any other asked for then disagrees with, see [`resolve`]).
pub fn versions_for(
    release: &Release,
    asked: &[KubeVersion],
    all: bool,
) -> Result<Vec<KubeVersion>, ResolveError> {
    match release.kubernetes_version() {
        Some(own) if asked.is_empty() => Ok(vec![own]),
        None if asked.is_empty() && !all => Err(ResolveError::NoVersion(release.id())),
        _ => Ok(asked.to_vec()),
    }
}

fn rows_for<'a>(
    release: &'a Release,
    version: KubeVersion,
    service: Option<&Service>,
) -> Vec<&'a CatalogImage> {
    release
        .images
        .iter()
        .filter(|image| {
            version >= release.min_kubernetes && image.kubernetes_range.contains(version)
        })
        .filter(|image| service.is_none_or(|s| image.services.contains(&s.name)))
        .collect()
}

/// The versions the release supports: from its floor (or its lowest row, if that starts later) to its
/// highest row, or open-ended.
pub fn supported_span(release: &Release) -> KubeRange {
    let min = release
        .images
        .iter()
        .map(|i| i.kubernetes_range.min)
        .min()
        .unwrap_or(release.min_kubernetes)
        .max(release.min_kubernetes);
    let open = release
        .images
        .iter()
        .any(|i| i.kubernetes_range.max.is_none());
    let max = if open {
        None
    } else {
        release
            .images
            .iter()
            .filter_map(|i| i.kubernetes_range.max)
            .max()
    };
    KubeRange { min, max }
}

/// A warning for a version newer than the newest the vendor validated: served, since the tables say
/// `v1.20+`, but the operator should know.
pub fn validation_warning(release: &Release, version: KubeVersion) -> Option<String> {
    let newest = release.newest_validated_kubernetes?;
    (version > newest).then(|| {
        format!(
            "{} {} was validated by the vendor up to Kubernetes {newest}; {version} uses the images \
             its table lists for later versions",
            release.catalog, release.release
        )
    })
}

/// `1.16`, `1.17-1.19` or `1.20 and later`, for people.
pub fn describe_span(span: KubeRange) -> String {
    match span.max {
        None => format!("{} and later", span.min),
        Some(_) => span.to_string(),
    }
}

/// The distinct image sets across every supported Kubernetes version, each with the span it serves,
/// lowest versions first. For Huawei CSI 4.8.0: 1.16, 1.17-1.19, and 1.20 and later.
pub fn image_sets<'a>(release: &'a Release, service: Option<&Service>) -> Vec<ImageSet<'a>> {
    // Where any row starts or stops, the image set may change; between two such points it cannot.
    let mut boundaries = BTreeSet::from([release.min_kubernetes]);
    for image in &release.images {
        boundaries.insert(image.kubernetes_range.min);
        if let Some(max) = image.kubernetes_range.max {
            boundaries.insert(max.next_minor());
        }
    }
    let boundaries: Vec<KubeVersion> = boundaries.into_iter().collect();
    let mut sets: Vec<ImageSet<'a>> = Vec::new();
    for (i, &start) in boundaries.iter().enumerate() {
        let end = boundaries
            .get(i + 1)
            .map(|next| KubeVersion::new(next.major, next.minor.saturating_sub(1)));
        if rows_for(release, start, None).is_empty() {
            continue;
        }
        let images = rows_for(release, start, service);
        match sets.last_mut() {
            Some(previous)
                if same_images(&previous.images, &images)
                    && previous.span.max.map(|m| m.next_minor()) == Some(start) =>
            {
                previous.span.max = end;
            }
            _ => sets.push(ImageSet {
                span: KubeRange {
                    min: start,
                    max: end,
                },
                images,
            }),
        }
    }
    sets
}

fn same_images(a: &[&CatalogImage], b: &[&CatalogImage]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| std::ptr::eq(*x, *y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;

    fn v(text: &str) -> KubeVersion {
        text.parse().unwrap()
    }

    fn images(release: &str, version: &str, service: Option<&str>) -> Vec<String> {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find(release).unwrap();
        let service = service.map(|s| release.service(s).unwrap());
        resolve(&release, v(version), service)
            .unwrap()
            .iter()
            .map(|i| i.image.clone())
            .collect()
    }

    const LIVENESS_480: &str = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0";
    const RESIZER_480: &str = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0";
    const REGISTRAR_480: &str = "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0";
    const VENDOR_480: [&str; 4] = [
        "storage-backend-controller:4.8.0",
        "storage-backend-sidecar:4.8.0",
        "huawei-csi:4.8.0",
        "huawei-csi-extender:4.8.0",
    ];

    /// The whole 4.8.0 table, per version at each boundary, in table order.
    #[test]
    fn csi_480_every_row_at_its_boundaries() {
        let span_116 = [
            LIVENESS_480,
            RESIZER_480,
            REGISTRAR_480,
            "quay.io/k8scsi/csi-provisioner:v1.4.0",
            "quay.io/k8scsi/csi-attacher:v1.2.1",
        ];
        let span_117 = [
            LIVENESS_480,
            RESIZER_480,
            REGISTRAR_480,
            "registry.k8s.io/sig-storage/csi-snapshotter:v4.2.1",
            "registry.k8s.io/sig-storage/snapshot-controller:v4.2.1",
            "registry.k8s.io/sig-storage/csi-provisioner:v3.0.0",
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        ];
        let span_120 = [
            LIVENESS_480,
            RESIZER_480,
            REGISTRAR_480,
            "registry.k8s.io/sig-storage/csi-snapshotter:v6.3.0",
            "registry.k8s.io/sig-storage/snapshot-controller:v6.3.0",
            "registry.k8s.io/sig-storage/csi-provisioner:v3.6.0",
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        ];
        let with_vendor = |rows: &[&str]| {
            rows.iter()
                .chain(VENDOR_480.iter())
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        for version in ["1.16", "v1.16.0", "1.16.15"] {
            assert_eq!(
                images("huawei-csi@4.8.0", version, None),
                with_vendor(&span_116),
                "{version}"
            );
        }
        for version in ["1.17", "1.18.3", "1.19", "v1.19.16"] {
            assert_eq!(
                images("huawei-csi@4.8.0", version, None),
                with_vendor(&span_117),
                "{version}"
            );
        }
        for version in [
            "1.20",
            "1.20.0-rc.1",
            "1.28",
            "1.28.3+k3s1",
            "v1.27.9-eks-5e0fdde",
            "1.31",
        ] {
            assert_eq!(
                images("huawei-csi@4.8.0", version, None),
                with_vendor(&span_120),
                "{version}"
            );
        }
    }

    #[test]
    fn csi_480_per_service() {
        let node = [LIVENESS_480, REGISTRAR_480, "huawei-csi:4.8.0"];
        for version in ["1.16", "1.18", "1.28"] {
            assert_eq!(
                images("huawei-csi@4.8.0", version, Some("node")),
                node,
                "{version}"
            );
        }
        let controller_128 = [
            LIVENESS_480,
            RESIZER_480,
            "registry.k8s.io/sig-storage/csi-snapshotter:v6.3.0",
            "registry.k8s.io/sig-storage/snapshot-controller:v6.3.0",
            "registry.k8s.io/sig-storage/csi-provisioner:v3.6.0",
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
        ];
        let expected: Vec<String> = controller_128
            .iter()
            .chain(VENDOR_480.iter())
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            images("huawei-csi@4.8.0", "1.28", Some("huawei-csi-controller")),
            expected
        );
        let controller_116 = images("huawei-csi@4.8.0", "1.16", Some("controller"));
        assert!(!controller_116.iter().any(|i| i.contains("registrar")));
        assert!(controller_116.contains(&"quay.io/k8scsi/csi-attacher:v1.2.1".to_string()));
    }

    #[test]
    fn csi_450_every_row_at_its_boundaries() {
        let common = [
            "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0",
            "k8s.gcr.io/sig-storage/csi-resizer:v1.4.0",
            "k8s.gcr.io/sig-storage/csi-node-driver-registrar:v2.3.0",
        ];
        let vendor = [
            "storage-backend-controller:4.5.0",
            "storage-backend-sidecar:4.5.0",
            "huawei-csi:4.5.0",
            "huawei-csi-extender:4.5.0",
        ];
        let expect = |middle: &[&str]| {
            common
                .iter()
                .chain(middle)
                .chain(vendor.iter())
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        };
        // The 4.5.0 table lists no snapshotter for 1.16: transcribed as the vendor wrote it.
        let span_116 = expect(&[
            "quay.io/k8scsi/csi-provisioner:v1.4.0",
            "quay.io/k8scsi/csi-attacher:v1.2.1",
        ]);
        let span_117 = expect(&[
            "k8s.gcr.io/sig-storage/csi-snapshotter:v4.2.1",
            "k8s.gcr.io/sig-storage/snapshot-controller:v4.2.1",
            "k8s.gcr.io/sig-storage/csi-provisioner:v3.0.0",
            "k8s.gcr.io/sig-storage/csi-attacher:v3.4.0",
        ]);
        assert_eq!(images("huawei-csi@4.5.0", "1.16.9", None), span_116);
        for version in ["1.17", "1.19.16", "1.20", "1.30.0-rc.1"] {
            assert_eq!(
                images("huawei-csi@4.5.0", version, None),
                span_117,
                "{version}"
            );
        }
        let node = [
            "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0",
            "k8s.gcr.io/sig-storage/csi-node-driver-registrar:v2.3.0",
            "huawei-csi:4.5.0",
        ];
        assert_eq!(images("huawei-csi@4.5.0", "1.16", Some("node")), node);
        assert_eq!(images("huawei-csi@4.5.0", "1.25", Some("node")), node);
    }

    #[test]
    fn unsupported_version_names_the_supported_span() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find("huawei-csi@4.8.0").unwrap();
        let err = resolve(&release, v("1.15"), None).unwrap_err().to_string();
        assert_eq!(err, "huawei-csi 4.8.0 does not support Kubernetes 1.15: it supports Kubernetes 1.16 and later (the vendor validated 1.16-1.32)");
        let node = release.service("node").unwrap();
        assert!(resolve(&release, v("1.15.3"), Some(node)).is_err());
    }

    #[test]
    fn distinct_sets_and_their_spans() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let spans = |id: &str| {
            image_sets(&catalogs.find(id).unwrap(), None)
                .iter()
                .map(|s| (s.span.to_string(), s.images.len()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            spans("huawei-csi@4.8.0"),
            [
                ("1.16".to_string(), 9),
                ("1.17-1.19".to_string(), 11),
                ("1.20+".to_string(), 11)
            ]
        );
        assert_eq!(
            spans("huawei-csi@4.5.0"),
            [("1.16".to_string(), 9), ("1.17+".to_string(), 11)]
        );
    }

    #[test]
    fn old_releases_resolve_their_own_spans() {
        // 3.2.x: the quay.io rows serve 1.13 to 1.16 ("v1.13.x-v1.16.x"), k8s.gcr.io from 1.17.
        let at_113 = images("huawei-csi@3.2.1", "1.13", None);
        assert!(at_113.contains(&"quay.io/k8scsi/csi-provisioner:v1.4.0".to_string()));
        assert!(at_113.contains(&"huawei-csi:3.2.1".to_string()));
        assert_eq!(at_113.len(), 6, "{at_113:?}");
        assert_eq!(images("huawei-csi@3.2.1", "1.16.15", None), at_113.clone());
        assert_eq!(images("huawei-csi@3.2.3", "1.25", None).len(), 8);
        // 3.1.0: its own 1.19 images, with csiProvisioner-style Helm keys.
        let at_119 = images("huawei-csi@3.1.0", "1.19", None);
        assert!(at_119.contains(&"k8s.gcr.io/sig-storage/csi-snapshotter:v3.0.3".to_string()));
        assert!(at_119.contains(&"quay.io/k8scsi/csi-provisioner:v2.2.2".to_string()));
        // 4.9.0 dropped the 1.17-1.19 snapshot rows: none listed there.
        let at_118 = images("huawei-csi@4.9.0", "1.18", None);
        assert!(!at_118.iter().any(|i| i.contains("snapshot")), "{at_118:?}");
        // 4.12.0 adds the health monitor.
        assert!(images("huawei-csi", "1.31", Some("controller")).contains(
            &"registry.k8s.io/sig-storage/csi-external-health-monitor-controller:v0.17.0"
                .to_string()
        ));
    }

    /// Every release, on every minor from its floor on, resolves to one image per container it runs
    /// there, with the driver always among them; below the floor, nothing.
    #[test]
    fn every_release_resolves_every_version_it_supports() {
        let catalogs = Catalogs::load(&[]).unwrap();
        for release in catalogs
            .releases()
            .unwrap()
            .into_iter()
            .filter(|r| r.kubernetes_release.is_none())
        {
            let floor = release.min_kubernetes;
            for minor in floor.minor..=40 {
                let version = KubeVersion::new(1, minor);
                let rows = resolve(release, version, None)
                    .unwrap_or_else(|e| panic!("{} on {version}: {e}", release.id()));
                let containers: BTreeSet<&str> =
                    rows.iter().map(|r| r.container.as_str()).collect();
                assert_eq!(
                    containers.len(),
                    rows.len(),
                    "{} on {version}",
                    release.id()
                );
                assert!(
                    containers.contains("huawei-csi-driver")
                        && containers.contains("livenessprobe")
                        && containers.contains("csi-provisioner"),
                    "{} on {version}: {containers:?}",
                    release.id()
                );
            }
            let below = KubeVersion::new(1, floor.minor - 1);
            assert!(resolve(release, below, None).is_err(), "{}", release.id());
        }
    }

    #[test]
    fn the_floor_is_the_compatibility_tables_not_the_lowest_row() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find("huawei-csi@4.0.0").unwrap();
        // Its table starts rows at v1.13+, but it supports 1.18 to 1.26.
        let err = resolve(&release, v("1.17"), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "huawei-csi 4.0.0 does not support Kubernetes 1.17: it supports Kubernetes 1.18 and later \
             (the vendor validated 1.18-1.26)"
        );
        let sets: Vec<String> = image_sets(&release, None)
            .iter()
            .map(|s| s.span.to_string())
            .collect();
        assert_eq!(sets, ["1.18+"]);
        assert_eq!(resolve(&release, v("1.18"), None).unwrap().len(), 10);
    }

    #[test]
    fn newer_than_validated_is_served_with_a_warning() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find("huawei-csi@4.2.1").unwrap();
        assert_eq!(validation_warning(&release, v("1.27")), None);
        assert_eq!(
            validation_warning(&release, v("1.31.2")).as_deref(),
            Some(
                "huawei-csi 4.2.1 was validated by the vendor up to Kubernetes 1.27; 1.31 uses the \
                 images its table lists for later versions"
            )
        );
        assert_eq!(resolve(&release, v("1.31"), None).unwrap().len(), 10);
    }

    /// A release of Kubernetes serves its own minor only, is resolved on it when no version is asked
    /// for, and refuses another; a product release still needs one.
    #[test]
    fn a_kubernetes_release_is_its_own_version() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let release = catalogs.find("kubernetes@1.28.3").unwrap();
        assert_eq!(versions_for(&release, &[], false).unwrap(), [v("1.28")]);
        assert_eq!(
            versions_for(&release, &[v("1.28.9")], false).unwrap(),
            [v("1.28")]
        );
        assert_eq!(resolve(&release, v("1.28"), None).unwrap().len(), 7);
        let err = resolve(&release, v("1.27"), None).unwrap_err().to_string();
        assert_eq!(
            err,
            "kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.27 disagrees with it (leave --k8s out, or \
             name a 1.27 release, e.g. kubernetes@1.27)"
        );
        let csi = catalogs.find("huawei-csi@4.8.0").unwrap();
        assert_eq!(
            versions_for(&csi, &[], false).unwrap_err().to_string(),
            "huawei-csi@4.8.0 needs --k8s VERSION or --all-k8s"
        );
        assert!(versions_for(&csi, &[], true).unwrap().is_empty());
    }
}
