//! From (release, Kubernetes version, service) to the exact rows of the vendor's table. Pure: no I/O.

mod plan;

use std::collections::BTreeSet;

use crate::catalog::{CatalogImage, Release, Service};
use crate::k8s::{KubeRange, KubeVersion};

pub use plan::{plans, union, Plan, Selection, Wanted};

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "{release} does not support Kubernetes {version}: its images cover Kubernetes {supported}"
    )]
    Unsupported {
        release: String,
        version: KubeVersion,
        supported: String,
    },
    #[error("nothing to fetch: name a catalog release (e.g. huawei-csi@4.8.0 --k8s 1.28) or --image REF")]
    NothingSelected,
    #[error("{0} needs --k8s VERSION or --all-k8s")]
    NoVersion(String),
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
    let images = rows_for(release, version, service);
    // A version no row covers is an error even with a service filter: an empty list would read as
    // "nothing to carry", which is never true for a supported version.
    if rows_for(release, version, None).is_empty() {
        return Err(ResolveError::Unsupported {
            release: format!("{} {}", release.catalog, release.release),
            version,
            supported: describe_span(supported_span(release)),
        });
    }
    Ok(images)
}

fn rows_for<'a>(
    release: &'a Release,
    version: KubeVersion,
    service: Option<&Service>,
) -> Vec<&'a CatalogImage> {
    release
        .images
        .iter()
        .filter(|image| image.kubernetes_range.contains(version))
        .filter(|image| service.is_none_or(|s| image.services.contains(&s.name)))
        .collect()
}

/// The versions some row of the release covers, from its lowest to its highest (or open-ended).
pub fn supported_span(release: &Release) -> KubeRange {
    let min = release
        .images
        .iter()
        .map(|i| i.kubernetes_range.min)
        .min()
        .unwrap_or(release.min_kubernetes);
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
    let mut boundaries = BTreeSet::new();
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
        resolve(release, v(version), service)
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
        let err = resolve(release, v("1.15"), None).unwrap_err().to_string();
        assert_eq!(err, "huawei-csi 4.8.0 does not support Kubernetes 1.15: its images cover Kubernetes 1.16 and later");
        let node = release.service("node").unwrap();
        assert!(resolve(release, v("1.15.3"), Some(node)).is_err());
    }

    #[test]
    fn distinct_sets_and_their_spans() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let spans = |id: &str| {
            image_sets(catalogs.find(id).unwrap(), None)
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
}
