//! `ferry diff`: what an upgrade from one release to another adds, removes and keeps, image by image,
//! and, for images the cache has seen, how many bytes must cross the air gap.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::{write_json, write_table};
use crate::cache::BlobStore;
use crate::catalog::{CatalogError, CatalogImage, Catalogs, ImageSource, Release, Service};
use crate::cli::DiffArgs;
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::progress::DecimalBytes;
use crate::resolve::{upgrade, validation_warning};

#[derive(Debug, Serialize)]
struct Report {
    from: String,
    to: String,
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
    let from = catalogs.find(&args.from)?;
    let to = catalogs.find(&args.to)?;
    let service = |release| service_of(release, args.service.as_deref());
    for assumed in [&from.assumed, &to.assumed].into_iter().flatten() {
        eprintln!("warning: {assumed}");
    }
    let change = upgrade((&from, service(&from)?), (&to, service(&to)?), args.version)?;
    if let Some(warning) = validation_warning(&to, change.kubernetes) {
        eprintln!("warning: {warning}");
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
    let cached = |image: &CatalogImage| {
        store
            .as_ref()
            .and_then(|s| s.recall_image(&image.reference(), &args.platform))
    };
    let entry = |image: &CatalogImage| Entry {
        name: image.container.clone(),
        image: image.image.clone(),
        reference: image.reference().to_string(),
        source: image.source,
        bytes: cached(image).map(|i| i.size()),
    };
    let carry = store.as_ref().map(|_| {
        let blobs = |rows: &[&CatalogImage]| -> BTreeMap<Digest, u64> {
            rows.iter()
                .filter_map(|row| cached(row))
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
                .filter_map(|row| cached(row))
                .flat_map(|image| [image.manifest, image.config])
                .map(|d| (d.digest, d.size)),
        );
        Carry {
            bytes,
            delta_bytes: crate::tarball::tar_size(carried.into_values()),
            not_cached: change
                .added
                .iter()
                .filter(|row| cached(row).is_none())
                .map(|row| row.image.clone())
                .collect(),
        }
    });
    let report = Report {
        from: from.id(),
        to: to.id(),
        kubernetes: change.kubernetes.to_string(),
        added: change.added.iter().map(|i| entry(i)).collect(),
        removed: change.removed.iter().map(|i| entry(i)).collect(),
        kept: change.kept.iter().map(|i| entry(i)).collect(),
        carry,
    };
    if args.json {
        let value = serde_json::to_value(&report).map_err(|e| Error::Output(e.into()))?;
        return write_json(out, &value);
    }
    write_text(&report, out)
}

fn service_of<'a>(
    release: &'a Release,
    name: Option<&str>,
) -> std::result::Result<Option<&'a Service>, CatalogError> {
    name.map(|name| release.service(name)).transpose()
}

fn write_text(report: &Report, out: &mut dyn Write) -> Result<()> {
    writeln!(
        out,
        "# {} -> {} on Kubernetes {}: {} added, {} removed, {} kept",
        report.from,
        report.to,
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
