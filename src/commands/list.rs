use std::io::Write;

use serde_json::{json, Value};

use super::{write_json, write_table};
use crate::catalog::{CatalogImage, Catalogs};
use crate::cli::ListArgs;
use crate::error::{Error, Result};
use crate::progress::line_to_stderr;
use crate::resolve::{describe_span, image_sets, resolve, validation_warning, ResolveError};

pub fn run(catalogs: &Catalogs, args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    let release = catalogs.find(&args.release)?;
    if let Some(assumed) = &release.assumed {
        line_to_stderr(&format!("warning: {assumed}"));
    }
    let service = args
        .service
        .as_deref()
        .map(|name| release.service(name))
        .transpose()?;
    // A release of Kubernetes itself says which version it is for; other releases need --k8s or --all-k8s.
    let version = match args.kubernetes.version {
        Some(version) => Some(version),
        None if args.kubernetes.all => None,
        None => Some(
            release
                .kubernetes_version()
                .ok_or_else(|| ResolveError::NoVersion(release.id()))?,
        ),
    };
    if let Some(version) = version {
        let images = resolve(&release, version, service)?;
        if let Some(warning) = validation_warning(&release, version) {
            line_to_stderr(&format!("warning: {warning}"));
        }
        return if args.json {
            write_json(
                out,
                &json!(images.iter().map(|i| image_json(i)).collect::<Vec<_>>()),
            )
        } else {
            write_rows(out, &images)
        };
    }
    let sets = image_sets(&release, service);
    if sets.is_empty() {
        return Err(Error::Usage(format!("{} has no images", release.id())));
    }
    if args.json {
        let sets: Vec<Value> = sets
            .iter()
            .map(|set| {
                json!({
                    "k8s": set.span.to_string(),
                    "k8s_min": set.span.min.to_string(),
                    "k8s_max": set.span.max.map(|m| m.to_string()),
                    "images": set.images.iter().map(|i| image_json(i)).collect::<Vec<_>>(),
                })
            })
            .collect();
        return write_json(out, &json!(sets));
    }
    for (i, set) in sets.iter().enumerate() {
        if i > 0 {
            writeln!(out).map_err(Error::Output)?;
        }
        writeln!(
            out,
            "# Kubernetes {} ({} images)",
            describe_span(set.span),
            set.images.len()
        )
        .map_err(Error::Output)?;
        write_rows(out, &set.images)?;
    }
    Ok(())
}

fn write_rows(out: &mut dyn Write, images: &[&CatalogImage]) -> Result<()> {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| vec![i.image.clone(), i.container.clone(), i.source.to_string()])
        .collect();
    write_table(out, &rows)
}

fn image_json(image: &CatalogImage) -> Value {
    json!({
        "name": image.container,
        "image": image.image,
        "reference": image.reference().to_string(),
        "services": image.services,
        "source": image.source,
        "k8s": image.kubernetes,
        "k8s_range": image.kubernetes_range.to_string(),
        "helm_value": image.helm_value,
        "in_table": image.in_table,
    })
}
