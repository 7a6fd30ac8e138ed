use std::borrow::Cow;
use std::io::Write;

use serde::Serialize;
use serde_json::{json, Value};

use super::{write_json, write_table};
use crate::catalog::{CatalogImage, Catalogs, Release, Service};
use crate::cli::KubeSelection;
use crate::cli::ListArgs;
use crate::error::{Error, Result};
use crate::k8s::KubeVersion;
use crate::progress::line_to_stderr;
use crate::resolve::manifests::PassedOver;
use crate::resolve::named::{NamedImage, NamedImages};
use crate::resolve::site::Site;
use crate::resolve::{
    describe_span, image_sets, resolve, validation_warning, versions_of, ResolveError,
};

pub fn run(catalogs: &Catalogs, args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    match args.releases.as_slice() {
        [spec] if args.files.is_empty() => list_release(catalogs, spec, args, out),
        _ => list_named(catalogs, args, out),
    }
}

/// A release's images, as its catalog lists them.
fn list_release(
    catalogs: &Catalogs,
    spec: &str,
    args: &ListArgs,
    out: &mut dyn Write,
) -> Result<()> {
    let (release, service) = find(catalogs, spec, args.service.as_deref())?;
    let service = service.as_ref();
    if let Some(version) = version_for(&release, &args.kubernetes)? {
        let images = resolve_warned(&release, version, service)?;
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

/// The release `spec` names, and the service `service` names in it. A kubernetes release newer than the
/// catalog knows is made from a known one, with a warning saying so.
fn find<'a>(
    catalogs: &'a Catalogs,
    spec: &str,
    service: Option<&str>,
) -> Result<(Cow<'a, Release>, Option<Service>)> {
    let release = catalogs.find(spec)?;
    warn_assumed(&release);
    let service = service
        .map(|name| release.service(name).cloned())
        .transpose()?;
    Ok((release, service))
}

fn warn_assumed(release: &Release) {
    if let Some(assumed) = &release.assumed {
        line_to_stderr(&format!("warning: {assumed}"));
    }
}

/// The Kubernetes version to list `release` for: --k8s, or a kubernetes release's own; `None` for
/// --all-k8s. Other releases need one of the two.
fn version_for(release: &Release, kubernetes: &KubeSelection) -> Result<Option<KubeVersion>> {
    match kubernetes.version {
        Some(version) => Ok(Some(version)),
        None if kubernetes.all => Ok(None),
        None => release
            .kubernetes_version()
            .map(Some)
            .ok_or_else(|| ResolveError::NoVersion(release.id()).into()),
    }
}

/// The images of `release` on `version`, with a warning on stderr when the vendor did not validate it.
fn resolve_warned<'a>(
    release: &'a Release,
    version: KubeVersion,
    service: Option<&Service>,
) -> Result<Vec<&'a CatalogImage>> {
    let images = resolve(release, version, service)?;
    if let Some(warning) = validation_warning(release, version) {
        line_to_stderr(&format!("warning: {warning}"));
    }
    Ok(images)
}

fn write_rows(out: &mut dyn Write, images: &[&CatalogImage]) -> Result<()> {
    let rows: Vec<Vec<String>> = images.iter().map(|i| row(i)).collect();
    write_table(out, &rows)
}

fn row(image: &CatalogImage) -> Vec<String> {
    vec![
        image.image.clone(),
        image.container.clone(),
        image.source.to_string(),
    ]
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

/// One product's images on one Kubernetes version (or span of versions).
#[derive(Serialize)]
struct ProductListing {
    release: String,
    service: Option<String>,
    k8s: String,
    images: Vec<Value>,
    #[serde(skip)]
    rows: Vec<Vec<String>>,
}

impl ProductListing {
    /// The images of `release` on `version`.
    fn on_version(
        release: &Release,
        service: Option<&Service>,
        version: KubeVersion,
    ) -> Result<ProductListing> {
        let images = resolve_warned(release, version, service)?;
        Ok(ProductListing::new(
            release,
            service,
            version.to_string(),
            &images,
        ))
    }

    fn new(
        release: &Release,
        service: Option<&Service>,
        k8s: String,
        images: &[&CatalogImage],
    ) -> ProductListing {
        ProductListing {
            release: release.id(),
            service: service.map(|s| s.short.clone()),
            k8s,
            images: images.iter().map(|i| image_json(i)).collect(),
            rows: images.iter().map(|i| row(i)).collect(),
        }
    }
}

/// What `list --json` prints when files or a site name images.
#[derive(Serialize)]
struct Listing<'a> {
    products: &'a [ProductListing],
    images: &'a [NamedImage],
    passed_over: &'a PassedOver,
}

/// The products' images (a release given, or a site's), then the images files name, each with every
/// place that named it.
fn list_named(catalogs: &Catalogs, args: &ListArgs, out: &mut dyn Write) -> Result<()> {
    let site = args.site.as_deref().map(Site::load).transpose()?;
    let mut products = Vec::new();
    if let Some(site) = &site {
        super::site_mirrors(site)?;
        for found in site.releases(catalogs)? {
            warn_assumed(&found.release);
            let service = found.service.as_ref();
            // A kubernetes release is listed for its own version, which the site file names too.
            let versions = match found.release.kubernetes_version() {
                Some(own) => vec![own],
                None => site.kubernetes.clone(),
            };
            for version in versions {
                products.push(ProductListing::on_version(
                    &found.release,
                    service,
                    version,
                )?);
            }
        }
    }
    let found = args
        .releases
        .iter()
        .map(|spec| find(catalogs, spec, args.service.as_deref()))
        .collect::<Result<Vec<_>>>()?;
    match found.as_slice() {
        [(release, service)] if args.kubernetes.all => {
            for set in image_sets(release, service.as_ref()) {
                products.push(ProductListing::new(
                    release,
                    service.as_ref(),
                    set.span.to_string(),
                    &set.images,
                ));
            }
        }
        found => {
            let found: Vec<(&Release, Option<&Service>)> = found
                .iter()
                .map(|(release, service)| (release.as_ref(), service.as_ref()))
                .collect();
            let asked: Vec<KubeVersion> = args.kubernetes.version.into_iter().collect();
            let versions = versions_of(&found, &asked, args.kubernetes.all)?;
            for (release, service) in found {
                for &version in &versions {
                    products.push(ProductListing::on_version(release, service, version)?);
                }
            }
        }
    }
    let named = match &site {
        Some(site) => NamedImages::read_site(site)?,
        None => NamedImages::read(&args.files.lists, &args.files.manifests)?,
    };
    if let Some(note) = named.passed_over.note() {
        line_to_stderr(&note);
    }
    if args.json {
        let listing = Listing {
            products: &products,
            images: &named.images,
            passed_over: &named.passed_over,
        };
        let value = serde_json::to_value(&listing).map_err(|e| Error::Output(e.into()))?;
        return write_json(out, &value);
    }
    for product in &products {
        writeln!(
            out,
            "# {}{}, Kubernetes {} ({} images)",
            product.release,
            product
                .service
                .as_ref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default(),
            product.k8s,
            product.rows.len()
        )
        .map_err(Error::Output)?;
        write_table(out, &product.rows)?;
        writeln!(out).map_err(Error::Output)?;
    }
    if !products.is_empty() && !named.images.is_empty() {
        writeln!(out, "# named in files ({} images)", named.images.len()).map_err(Error::Output)?;
    }
    let rows: Vec<Vec<String>> = named
        .images
        .iter()
        .flat_map(|image| {
            image.origins.iter().enumerate().map(|(i, origin)| {
                let shown = if i == 0 {
                    image.reference.to_string()
                } else {
                    String::new()
                };
                vec![shown, origin.what(), origin.place()]
            })
        })
        .collect();
    write_table(out, &rows)
}
