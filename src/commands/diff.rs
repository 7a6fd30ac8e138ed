//! `ferry diff`: what an upgrade from one release (several products, or a site file) to another adds,
//! removes and keeps, image by image,
//! and, for images the cache has seen, how many bytes must cross the air gap.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{write_json, write_table};
use crate::cache::BlobStore;
use crate::catalog::{CatalogError, Catalogs, ImageSource, Release, Service};
use crate::cli::DiffArgs;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::k8s::KubeVersion;
use crate::progress::{line_to_stderr, DecimalBytes};
use crate::reference::Reference;
use crate::resolve::named::NamedImages;
use crate::resolve::site::Site;
use crate::resolve::{upgrade, validation_warning, Item, Side};

#[derive(Debug, Serialize)]
struct Report {
    from: String,
    to: String,
    /// The version FROM's images were resolved for, when it is not TO's.
    #[serde(skip_serializing_if = "Option::is_none")]
    from_kubernetes: Option<String>,
    kubernetes: String,
    added: Vec<Entry>,
    removed: Vec<Entry>,
    kept: Vec<Entry>,
    /// Present when a cache was found: the bytes of the added images' blobs that the kept and
    /// removed images (already on the site) do not share.
    carry: Option<Carry>,
}

#[derive(Debug, Serialize)]
struct Entry {
    name: String,
    image: String,
    reference: String,
    source: ImageSource,
    /// Manifest, config and layers, when the cache has the image.
    bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Carry {
    bytes: u64,
    /// About the size of a delta from a bundle of FROM (`ferry bundle TO --since`): these blobs and
    /// every manifest and config of TO, as a tar; its documents are left out.
    delta_bytes: u64,
    /// Added images the cache has not seen: their bytes are not counted.
    not_cached: Vec<String>,
}

pub fn run(catalogs: &Catalogs, args: &DiffArgs, out: &mut dyn Write) -> Result<()> {
    let (from, to) = match (&args.from, &args.to, args.sites.as_slice()) {
        (Some(from), Some(to), []) => (
            Chosen::named(catalogs, from, args.service.as_deref())?,
            Chosen::named(catalogs, to, args.service.as_deref())?,
        ),
        (None, None, [from, to]) => (
            Chosen::site(catalogs, from, args.version)?,
            Chosen::site(catalogs, to, args.version)?,
        ),
        (_, _, sites) => {
            return Err(Error::Usage(format!(
            "diff takes FROM and TO, or --site twice (the site file running now, then the one to \
                 upgrade to); {} --site given",
            sites.len()
        )))
        }
    };
    let (from_side, to_side) = (from.side(), to.side());
    for release in from.releases.iter().chain(&to.releases) {
        if let Some(assumed) = &release.0.assumed {
            line_to_stderr(&format!("warning: {assumed}"));
        }
    }
    let change = upgrade(&from_side, &to_side, args.version)?;
    for (release, _) in &to.releases {
        if let Some(warning) = validation_warning(release, change.kubernetes) {
            line_to_stderr(&format!("warning: {warning}"));
        }
    }
    let root = args
        .cache_dir
        .clone()
        .unwrap_or_else(BlobStore::default_root);
    // Never create a cache just to find it empty.
    let store = if Path::new(&root).exists() {
        Some(BlobStore::open(&root)?)
    } else {
        None
    };
    let cached = |item: &Item| {
        store
            .as_ref()
            .and_then(|s| s.recall_image(&item.reference(), &args.platform))
    };
    let entry = |item: &Item| Entry {
        name: item.container().to_string(),
        image: item.image(),
        reference: item.reference().to_string(),
        source: item.source(),
        bytes: cached(item).map(|i| i.size()),
    };
    let carry = store.as_ref().map(|_| {
        let blobs = |items: &[Item]| -> BTreeMap<Digest, u64> {
            items
                .iter()
                .filter_map(&cached)
                .flat_map(|image| {
                    std::iter::once(image.manifest.clone())
                        .chain(image.blobs().cloned())
                        .map(|d| (d.digest, d.size))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let mut on_site = blobs(&change.kept);
        on_site.extend(blobs(&change.removed));
        let mut carried: BTreeMap<Digest, u64> = blobs(&change.added)
            .into_iter()
            .filter(|(digest, _)| !on_site.contains_key(digest))
            .collect();
        let bytes = carried.values().sum();
        // A delta carries every manifest and config of TO, those of the kept images too.
        carried.extend(
            change
                .added
                .iter()
                .chain(&change.kept)
                .filter_map(&cached)
                .flat_map(|image| [image.manifest, image.config])
                .map(|d| (d.digest, d.size)),
        );
        Carry {
            bytes,
            delta_bytes: crate::tarball::tar_size(carried.into_values()),
            not_cached: change
                .added
                .iter()
                .filter(|item| cached(item).is_none())
                .map(Item::image)
                .collect(),
        }
    });
    let report = Report {
        from: from.name.clone(),
        to: to.name.clone(),
        from_kubernetes: (change.from_kubernetes != change.kubernetes)
            .then(|| change.from_kubernetes.to_string()),
        kubernetes: change.kubernetes.to_string(),
        added: change.added.iter().map(entry).collect(),
        removed: change.removed.iter().map(entry).collect(),
        kept: change.kept.iter().map(entry).collect(),
        carry,
    };
    if args.json {
        let value = serde_json::to_value(&report).map_err(|e| Error::Output(e.into()))?;
        return write_json(out, &value);
    }
    write_text(&report, out)
}

/// The products of `kubernetes@1.28.3+huawei-csi@4.5.0`. A release may hold a `+` itself (`1.0.0+build2`,
/// which the catalogs allow), so a part starts a new product only when it names a release (`CATALOG@…`) or a
/// catalog; otherwise it belongs to the release before it.
fn products_of(catalogs: &Catalogs, specs: &str) -> Vec<String> {
    let mut products: Vec<String> = Vec::new();
    for part in specs.split('+') {
        match products.last_mut() {
            Some(last) if !part.contains('@') && catalogs.find(part).is_err() => {
                last.push('+');
                last.push_str(part);
            }
            _ => products.push(part.to_string()),
        }
    }
    products
}

/// One side of the diff as named: releases joined by `+` (each with --service), or a site file.
struct Chosen<'a> {
    name: String,
    releases: Vec<(Cow<'a, Release>, Option<Service>)>,
    named: Vec<Reference>,
    kubernetes: Option<KubeVersion>,
}

impl<'a> Chosen<'a> {
    /// `kubernetes@1.28.3+huawei-csi@4.5.0`.
    fn named(catalogs: &'a Catalogs, specs: &str, service: Option<&str>) -> Result<Chosen<'a>> {
        let releases = products_of(catalogs, specs)
            .iter()
            .map(|spec| {
                let release = catalogs.find(spec)?;
                let service = service
                    .map(|name| release.service(name).cloned())
                    .transpose()?;
                Ok((release, service))
            })
            .collect::<std::result::Result<Vec<_>, CatalogError>>()?;
        Ok(Chosen {
            name: specs.to_string(),
            releases,
            named: Vec::new(),
            kubernetes: None,
        })
    }

    /// A site file's products, images, and Kubernetes version (one, unless --k8s chooses).
    fn site(catalogs: &'a Catalogs, path: &Path, asked: Option<KubeVersion>) -> Result<Chosen<'a>> {
        let site = Site::load(path)?;
        let kubernetes = match site.kubernetes.as_slice() {
            [] => None,
            [one] => Some(*one),
            several if asked.is_none() => {
                return Err(Error::Usage(format!(
                    "{} names Kubernetes {}: choose the one to compare with --k8s",
                    path.display(),
                    several
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
            _ => None,
        };
        let releases = site
            .releases(catalogs)?
            .into_iter()
            .map(|found| (Cow::Owned(found.release.into_owned()), found.service))
            .collect();
        let named = NamedImages::read_site(&site)?
            .references()
            .cloned()
            .collect();
        Ok(Chosen {
            name: path.display().to_string(),
            releases,
            named,
            kubernetes,
        })
    }

    fn side(&self) -> Side<'_> {
        Side {
            products: self
                .releases
                .iter()
                .map(|(release, service)| (release.as_ref(), service.as_ref()))
                .collect(),
            named: &self.named,
            kubernetes: self.kubernetes,
        }
    }
}

fn write_text(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "# {} -> {} on Kubernetes {}{}: {} added, {} removed, {} kept",
        report.from,
        report.to,
        report
            .from_kubernetes
            .as_ref()
            .map(|from| format!("{from} -> "))
            .unwrap_or_default(),
        report.kubernetes,
        report.added.len(),
        report.removed.len(),
        report.kept.len()
    )
    .map_err(Error::Output)?;
    let mut rows = Vec::new();
    for (change, entries) in [
        ("added", &report.added),
        ("removed", &report.removed),
        ("kept", &report.kept),
    ] {
        for e in entries {
            rows.push(vec![
                change.to_string(),
                e.image.clone(),
                e.name.clone(),
                e.source.to_string(),
                e.bytes
                    .map_or_else(|| "-".into(), |b| DecimalBytes(b).to_string()),
            ]);
        }
    }
    write_table(out, &rows)?;
    if let Some(carry) = &report.carry {
        let missing = if carry.not_cached.is_empty() {
            String::new()
        } else {
            format!(
                "; not counted, as the cache has not seen them: {}",
                carry.not_cached.join(", ")
            )
        };
        writeln!(
            out,
            "# to carry: {} of blobs the site does not have{missing}\n\
             # a delta from a bundle of {} (ferry bundle {} --since it): about {}, with every manifest and config",
            DecimalBytes(carry.bytes),
            report.from,
            report.to,
            DecimalBytes(carry.delta_bytes)
        )
        .map_err(Error::Output)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_are_joined_by_plus_and_releases_may_hold_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("build.toml");
        std::fs::write(
            &file,
            "catalog = \"demo\"\nrelease = \"1.0.0+build2\"\ntitle = \"Demo\"\nmin_kubernetes = \"1.25\"\n\
             [[services]]\nname = \"demo-app\"\nshort = \"app\"\n\
             [[images]]\ncontainer = \"web\"\nimage = \"nginx:1.27\"\nkubernetes = \"v1.25+\"\n\
             kubernetes_range = { min = \"1.25\" }\nservices = [\"demo-app\"]\nsource = \"registry\"\n",
        )
        .unwrap();
        let catalogs = Catalogs::load(&[file]).unwrap();
        assert_eq!(
            products_of(&catalogs, "demo@1.0.0+build2+kubernetes+huawei-csi@4.8.0"),
            ["demo@1.0.0+build2", "kubernetes", "huawei-csi@4.8.0"]
        );
        assert_eq!(
            products_of(&catalogs, "huawei-csi@4.8.0"),
            ["huawei-csi@4.8.0"]
        );
    }
}
