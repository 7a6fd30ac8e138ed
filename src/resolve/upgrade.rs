//! What moving a cluster from one set of products (and images named directly) to another changes, image
//! by image: each side resolved on its own Kubernetes version, then compared by fully qualified reference.

use super::{resolve, ResolveError};
use crate::catalog::{CatalogImage, ImageSource, Release, Service};
use crate::k8s::KubeVersion;
use crate::reference::Reference;

/// One side of an upgrade: the products it runs (a release, and the one service of it, if any), the
/// images named directly, and its cluster's Kubernetes version when known otherwise than by its
/// products (a site file's).
#[derive(Debug, Clone, Default)]
pub struct Side<'a> {
    pub products: Vec<(&'a Release, Option<&'a Service>)>,
    pub named: &'a [Reference],
    pub kubernetes: Option<KubeVersion>,
}

impl Side<'_> {
    /// `huawei-csi@4.8.0`, or several joined by `+`; a site's named images as `N image(s)`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self.products.iter().map(|(r, _)| r.id()).collect();
        if !self.named.is_empty() {
            parts.push(format!("{} image(s)", self.named.len()));
        }
        parts.join("+")
    }

    /// Its version: the one given for both sides, its own, or a `kubernetes` release's among its products.
    fn version(&self, given: Option<KubeVersion>) -> Option<KubeVersion> {
        given.or(self.kubernetes).or_else(|| {
            self.products
                .iter()
                .find_map(|(release, _)| release.kubernetes_version())
        })
    }

    /// Its images on `version`, each once, products' first in their tables' order.
    fn items(&self, version: KubeVersion) -> Result<Vec<Item<'_>>, ResolveError> {
        let mut items: Vec<Item> = Vec::new();
        for &(release, service) in &self.products {
            for row in resolve(release, version, service)? {
                items.push(Item::Row(row));
            }
        }
        items.extend(self.named.iter().map(Item::Named));
        let mut seen = std::collections::HashSet::new();
        items.retain(|item| seen.insert(item.reference()));
        Ok(items)
    }
}

/// An image of one side: a row of a product's table, or an image named directly.
#[derive(Debug, Clone, Copy)]
pub enum Item<'a> {
    Row(&'a CatalogImage),
    Named(&'a Reference),
}

impl Item<'_> {
    pub fn reference(&self) -> Reference {
        match self {
            Item::Row(row) => row.reference(),
            Item::Named(reference) => (*reference).clone(),
        }
    }

    /// The container that runs it (`-` for an image named directly).
    pub fn container(&self) -> &str {
        match self {
            Item::Row(row) => &row.container,
            Item::Named(_) => "-",
        }
    }

    /// As its table writes it (`huawei-csi:4.8.0`), or its reference.
    pub fn image(&self) -> String {
        match self {
            Item::Row(row) => row.image.clone(),
            Item::Named(reference) => reference.to_string(),
        }
    }

    pub fn source(&self) -> ImageSource {
        match self {
            Item::Row(row) => row.source,
            Item::Named(_) => ImageSource::Registry,
        }
    }
}

/// What an upgrade changes, image by image: each list in the target's (or, for `removed`, the source's)
/// order.
#[derive(Debug, Clone)]
pub struct Upgrade<'a> {
    /// The Kubernetes version the source's images were resolved for.
    pub from_kubernetes: KubeVersion,
    /// The Kubernetes version the target's images were resolved for.
    pub kubernetes: KubeVersion,
    /// On the target only: to carry across.
    pub added: Vec<Item<'a>>,
    /// On the source only: no longer needed.
    pub removed: Vec<Item<'a>>,
    /// On both (the same fully qualified reference): already on the site.
    pub kept: Vec<Item<'a>>,
}

/// Compares the images of two sides. Each side is resolved on `version` when given, else on its own
/// (a `kubernetes` release among its products, or a site's), else on the other side's: so that
/// `kubernetes@1.28.3` to `kubernetes@1.29.0` needs no `--k8s`, and `kubernetes@1.28.3+huawei-csi@4.5.0`
/// to `kubernetes@1.29.0+huawei-csi@4.8.0` compares each CSI release on its own cluster's version.
pub fn upgrade<'a>(
    from: &'a Side<'a>,
    to: &'a Side<'a>,
    version: Option<KubeVersion>,
) -> Result<Upgrade<'a>, ResolveError> {
    let no_version =
        || ResolveError::NoVersion(format!("{} -> {}", from.describe(), to.describe()));
    let to_version = to
        .version(version)
        .or(from.version(version))
        .ok_or_else(no_version)?;
    let from_version = from.version(version).unwrap_or(to_version);
    let old = from.items(from_version)?;
    let new = to.items(to_version)?;
    let has = |set: &[Item], item: &Item| {
        let reference = item.reference();
        set.iter().any(|i| i.reference() == reference)
    };
    Ok(Upgrade {
        from_kubernetes: from_version,
        kubernetes: to_version,
        added: new.iter().copied().filter(|i| !has(&old, i)).collect(),
        removed: old.iter().copied().filter(|i| !has(&new, i)).collect(),
        kept: new.iter().copied().filter(|i| has(&old, i)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalogs;

    fn v(text: &str) -> KubeVersion {
        text.parse().unwrap()
    }

    fn images(items: &[Item]) -> Vec<String> {
        items.iter().map(Item::image).collect()
    }

    fn side<'a>(releases: &[&'a Release]) -> Side<'a> {
        Side {
            products: releases.iter().map(|r| (*r, None)).collect(),
            ..Side::default()
        }
    }

    #[test]
    fn an_upgrade_lists_what_to_carry_drop_and_keep() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let from = catalogs.find("huawei-csi@4.10.0").unwrap();
        let to = catalogs.find("huawei-csi@4.11.0").unwrap();
        let (old, new) = (side(&[&from]), side(&[&to]));
        let change = upgrade(&old, &new, Some(v("1.22"))).unwrap();
        // 4.11.0 keeps the v6.3.0 snapshot images for 1.20-1.24.
        assert_eq!(
            images(&change.kept),
            [
                "registry.k8s.io/sig-storage/csi-snapshotter:v6.3.0",
                "registry.k8s.io/sig-storage/snapshot-controller:v6.3.0"
            ]
        );
        assert_eq!((change.added.len(), change.removed.len()), (9, 9));
        // On 1.16 both use the same quay.io sidecars.
        let old = Side {
            products: vec![(&from, Some(from.service("controller").unwrap()))],
            ..Side::default()
        };
        let new = Side {
            products: vec![(&to, Some(to.service("controller").unwrap()))],
            ..Side::default()
        };
        let change = upgrade(&old, &new, Some(v("1.16"))).unwrap();
        assert_eq!(
            images(&change.kept),
            [
                "quay.io/k8scsi/csi-provisioner:v1.4.0",
                "quay.io/k8scsi/csi-attacher:v1.2.1"
            ]
        );
        assert!(images(&change.added).contains(&"huawei-csi:4.11.0".to_string()));
        assert!(images(&change.removed).contains(&"huawei-csi:4.10.0".to_string()));
        let oldest = catalogs.find("huawei-csi@4.0.0").unwrap();
        let (oldest, new) = (side(&[&oldest]), side(&[&to]));
        let err = upgrade(&oldest, &new, Some(v("1.16")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("huawei-csi 4.0.0 does not support Kubernetes 1.16"),
            "{err}"
        );
    }

    /// Each side of a whole-cluster upgrade is resolved on its own Kubernetes version; an image moving
    /// between products is kept, and images named directly are compared too.
    #[test]
    fn a_whole_cluster_upgrade_resolves_each_side_on_its_own_version() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let k128 = catalogs.find("kubernetes@1.28.3").unwrap();
        let k129 = catalogs.find("kubernetes@1.29.0").unwrap();
        let csi = catalogs.find("huawei-csi@4.8.0").unwrap();
        let old = side(&[&k128]);
        let new = side(&[&k129]);
        let change = upgrade(&old, &new, None).unwrap();
        assert_eq!(
            (change.from_kubernetes, change.kubernetes),
            (v("1.28"), v("1.29"))
        );
        assert_eq!((change.added.len(), change.kept.len()), (6, 1));
        let busybox: Vec<Reference> = vec!["busybox:1.36".parse().unwrap()];
        let old = side(&[&k128, &csi]);
        let new = Side {
            named: &busybox,
            ..side(&[&k129, &csi])
        };
        let change = upgrade(&old, &new, None).unwrap();
        assert_eq!(
            new.describe(),
            "kubernetes@1.29.0+huawei-csi@4.8.0+1 image(s)"
        );
        assert_eq!(change.kept.len(), 12, "{:?}", images(&change.kept));
        assert_eq!(
            images(&change.added).last().unwrap(),
            "docker.io/library/busybox:1.36"
        );
        assert_eq!(change.added.last().unwrap().container(), "-");
        // A product alone has no version of its own: it needs one.
        let (csi_old, csi_new) = (side(&[&csi]), side(&[&csi]));
        assert_eq!(
            upgrade(&csi_old, &csi_new, None).unwrap_err().to_string(),
            "huawei-csi@4.8.0 -> huawei-csi@4.8.0 needs --k8s VERSION or --all-k8s"
        );
        // --k8s that disagrees with a kubernetes release is refused.
        let err = upgrade(&old, &new, Some(v("1.29"))).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.29 disagrees"));
    }
}
