//! The site file: one reviewed TOML file that says everything a site carries across the gap, so that a
//! bundle is rebuilt from a file under review, not from a command line someone remembers. It names the
//! products (catalog releases), the clusters' Kubernetes versions and platforms, the images without a
//! catalog (list files, rendered manifests, references), and how to fetch (mirrors, the vendor's images).
//!
//! It maps onto a bundle of several products as: one product selection per `[[product]]` (release and
//! service), the Kubernetes versions and platforms they share, the extra images with their origins, and
//! the fetch settings. Unknown keys are refused with their line, as in the catalogs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::catalog::{CatalogError, Catalogs, Release, Service, KUBERNETES};
use crate::image::Platform;
use crate::k8s::KubeVersion;
use crate::reference::Reference;

/// Far more than any site's file; a larger file is not one.
const MAX_SITE_FILE: u64 = 1 << 20;

/// A site file, checked and with its paths made relative to where ferry runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub path: PathBuf,
    /// The clusters' Kubernetes versions, each once; from the `kubernetes` product when not written.
    pub kubernetes: Vec<KubeVersion>,
    /// The nodes' platforms.
    pub platforms: SitePlatforms,
    pub products: Vec<Product>,
    /// Image list files (`--images-from`).
    pub lists: Vec<PathBuf>,
    /// Manifest files and folders (`--images-from-manifests`).
    pub manifests: Vec<PathBuf>,
    /// Images named by reference (`--image`).
    pub images: Vec<SiteImage>,
    pub fetch: Fetch,
}

/// What a site file says of platforms.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SitePlatforms {
    /// Not written: ferry's default (or `--platform`) applies.
    #[default]
    Unsaid,
    /// These, each once, in the order written.
    Listed(Vec<Platform>),
    /// `["all"]`: each image's whole upstream index, as `--platform all` carries it.
    Every,
}

/// One product: a catalog release, optionally one service of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Product {
    /// `catalog@release`, as `ferry list` takes it.
    pub release: String,
    pub service: Option<String>,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteImage {
    pub reference: Reference,
    pub line: usize,
}

/// How the images are fetched: what `ferry pull` and `bundle` take as flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetch {
    /// `FROM=HOST[:PORT][/PREFIX]`, as `--mirror` takes them, each with its line.
    pub mirrors: Vec<(String, usize)>,
    pub vendor_dirs: Vec<PathBuf>,
    pub vendor_registry: Option<String>,
    pub skip_vendor: bool,
    pub allow_single_platform: Vec<Reference>,
}

#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read site file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} line {line}: {message}", .path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", .path.display())]
    Incomplete { path: PathBuf, message: String },
    #[error("{} line {line}: {release}", .path.display())]
    Product {
        path: PathBuf,
        line: usize,
        release: String,
        #[source]
        source: CatalogError,
    },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SiteFile {
    #[serde(default)]
    kubernetes: Vec<Spanned<KubeVersion>>,
    #[serde(default)]
    platforms: Vec<Spanned<String>>,
    #[serde(default)]
    product: Vec<ProductFile>,
    #[serde(default)]
    images: ImagesFile,
    #[serde(default)]
    fetch: FetchFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductFile {
    release: Spanned<String>,
    service: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImagesFile {
    #[serde(default)]
    lists: Vec<PathBuf>,
    #[serde(default)]
    manifests: Vec<PathBuf>,
    #[serde(default)]
    extra: Vec<Spanned<Reference>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchFile {
    #[serde(default)]
    mirrors: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    vendor_dirs: Vec<PathBuf>,
    vendor_registry: Option<Spanned<String>>,
    #[serde(default)]
    skip_vendor: Option<Spanned<bool>>,
    #[serde(default)]
    allow_single_platform: Vec<Reference>,
}

impl Site {
    /// Reads and checks the site file at `path`.
    pub fn load(path: &Path) -> Result<Site, SiteError> {
        let text = crate::resolve::input::Source::File(path.to_path_buf())
            .read_text(MAX_SITE_FILE)
            .map_err(|source| SiteError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        Site::parse(&text, path)
    }

    /// Checks a site file's `text`; `path` names it in messages, and its folder is where the file's
    /// relative paths start.
    pub fn parse(text: &str, path: &Path) -> Result<Site, SiteError> {
        let line_of = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
        let invalid = |at: usize, message: String| SiteError::Invalid {
            path: path.to_path_buf(),
            line: line_of(at),
            message,
        };
        let file: SiteFile = toml::from_str(text).map_err(|e| {
            // serde's messages quote the offending key or value, which may be the whole line.
            let message = crate::io::shown(e.message().trim_end(), 300).into_owned();
            invalid(e.span().map_or(0, |s| s.start), message)
        })?;
        let base = path.parent().unwrap_or(Path::new(""));
        let relative = |paths: Vec<PathBuf>| -> Vec<PathBuf> {
            paths.into_iter().map(|p| base.join(p)).collect()
        };

        let mut products: Vec<Product> = Vec::new();
        for product in file.product {
            let at = product.release.span().start;
            let release = product.release.into_inner();
            let pinned = release
                .split_once('@')
                .is_some_and(|(catalog, version)| !catalog.is_empty() && !version.is_empty());
            if !pinned || release.contains("..") {
                return Err(invalid(
                    at,
                    format!("release '{release}' must name one release: CATALOG@RELEASE, e.g. huawei-csi@4.8.0"),
                ));
            }
            if products
                .iter()
                .any(|p| p.release == release && p.service == product.service)
            {
                return Err(invalid(at, format!("{release} is named twice")));
            }
            products.push(Product {
                release,
                service: product.service,
                line: line_of(at),
            });
        }

        let mut kubernetes: Vec<KubeVersion> = Vec::new();
        for version in &file.kubernetes {
            if !kubernetes.contains(version.get_ref()) {
                kubernetes.push(*version.get_ref());
            }
        }
        for product in &products {
            let Some(version) = product.release.strip_prefix(&format!("{KUBERNETES}@")) else {
                continue;
            };
            let minor: KubeVersion = version.parse().map_err(|e: crate::k8s::VersionError| {
                invalid_line(path, product.line, e.to_string())
            })?;
            if file.kubernetes.is_empty() {
                if !kubernetes.contains(&minor) {
                    kubernetes.push(minor);
                }
            } else if kubernetes != [minor] {
                // A bundle holds one kubernetes release, so its clusters run that one version.
                return Err(invalid_line(
                    path,
                    product.line,
                    format!(
                        "{} is Kubernetes {minor}, but the site's kubernetes are {}: with a kubernetes \
                         product, leave kubernetes out or write [\"{minor}\"]",
                        product.release,
                        kubernetes
                            .iter()
                            .map(|v| v.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        let needs_version = products
            .iter()
            .any(|p| !p.release.starts_with(&format!("{KUBERNETES}@")));
        if needs_version && kubernetes.is_empty() {
            return Err(SiteError::Incomplete {
                path: path.to_path_buf(),
                message: "its products need the clusters' Kubernetes versions: \
                          kubernetes = [\"1.28\"], or a kubernetes@VERSION product"
                    .into(),
            });
        }

        let every = file.platforms.iter().find(|p| p.get_ref() == "all");
        let platforms =
            match every {
                Some(all) if file.platforms.len() > 1 => return Err(invalid(
                    all.span().start,
                    "platforms = [\"all\"] carries every platform each image has; name no other \
                     platform beside it"
                        .into(),
                )),
                Some(_) => SitePlatforms::Every,
                None if file.platforms.is_empty() => SitePlatforms::Unsaid,
                None => {
                    let mut listed = Vec::new();
                    for platform in file.platforms {
                        let at = platform.span().start;
                        let parsed: Platform = platform
                            .get_ref()
                            .parse()
                            .map_err(|e: crate::image::PlatformError| invalid(at, e.to_string()))?;
                        if !listed.contains(&parsed) {
                            listed.push(parsed);
                        }
                    }
                    SitePlatforms::Listed(listed)
                }
            };

        let fetch = file.fetch;
        let vendor_ways = [
            !fetch.vendor_dirs.is_empty(),
            fetch.vendor_registry.is_some(),
            fetch.skip_vendor.as_ref().is_some_and(|s| *s.get_ref()),
        ];
        if vendor_ways.iter().filter(|&&w| w).count() > 1 {
            let at = fetch
                .vendor_registry
                .as_ref()
                .map(|r| r.span().start)
                .or(fetch.skip_vendor.as_ref().map(|s| s.span().start))
                .unwrap_or(0);
            return Err(invalid(
                at,
                "vendor_dirs, vendor_registry and skip_vendor are three ways to get the vendor's \
                 images: choose one"
                    .into(),
            ));
        }

        let site = Site {
            path: path.to_path_buf(),
            kubernetes,
            platforms,
            products,
            lists: relative(file.images.lists),
            manifests: relative(file.images.manifests),
            images: file
                .images
                .extra
                .into_iter()
                .map(|image| SiteImage {
                    line: line_of(image.span().start),
                    reference: image.into_inner(),
                })
                .collect(),
            fetch: Fetch {
                mirrors: fetch
                    .mirrors
                    .into_iter()
                    .map(|(from, to)| {
                        (format!("{from}={}", to.get_ref()), line_of(to.span().start))
                    })
                    .collect(),
                vendor_dirs: relative(fetch.vendor_dirs),
                vendor_registry: fetch.vendor_registry.map(Spanned::into_inner),
                skip_vendor: fetch.skip_vendor.is_some_and(|s| s.into_inner()),
                allow_single_platform: fetch.allow_single_platform,
            },
        };
        if site.products.is_empty()
            && site.lists.is_empty()
            && site.manifests.is_empty()
            && site.images.is_empty()
        {
            return Err(SiteError::Incomplete {
                path: path.to_path_buf(),
                message:
                    "it names nothing to carry: no [[product]], and no lists, manifests or extra \
                          under [images]"
                        .into(),
            });
        }
        Ok(site)
    }
}

/// A product of a site, found in the catalogs: its release, and the service it is limited to.
#[derive(Debug)]
pub struct FoundProduct<'a> {
    pub product: &'a Product,
    pub release: Cow<'a, Release>,
    pub service: Option<Service>,
}

impl Site {
    /// Each product's release (and service) in `catalogs`, in the file's order.
    pub fn releases<'a>(
        &'a self,
        catalogs: &'a Catalogs,
    ) -> Result<Vec<FoundProduct<'a>>, SiteError> {
        self.products
            .iter()
            .map(|product| {
                let found = catalogs.find(&product.release).and_then(|release| {
                    let service = product
                        .service
                        .as_deref()
                        .map(|name| release.service(name).cloned())
                        .transpose()?;
                    Ok(FoundProduct {
                        product,
                        release,
                        service,
                    })
                });
                found.map_err(|source| SiteError::Product {
                    path: self.path.clone(),
                    line: product.line,
                    release: product.release.clone(),
                    source,
                })
            })
            .collect()
    }
}

fn invalid_line(path: &Path, line: usize, message: String) -> SiteError {
    SiteError::Invalid {
        path: path.to_path_buf(),
        line,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example the README shows.
    const EXAMPLE: &str = r#"# Plant 7: everything its Kubernetes cluster carries across the gap.
# Reviewed by ops@plant7.example, change OPS-1234.

platforms = ["linux/amd64", "linux/arm64"]

[[product]]
release = "kubernetes@1.28.3"

[[product]]
release = "huawei-csi@4.8.0"
service = "node"                    # one service's images only

[images]
lists = ["lists/calico.txt"]        # one reference per line (--images-from)
manifests = ["rendered/"]           # helm template output (--images-from-manifests)
extra = ["docker.io/library/busybox:1.36"]

[fetch]
mirrors = { "registry.k8s.io" = "10.0.0.5:5000/k8s", "docker.io" = "10.0.0.5:5000/hub" }
vendor_dirs = ["package/image"]
"#;

    fn parse(text: &str) -> Result<Site, SiteError> {
        Site::parse(text, Path::new("sites/plant7.toml"))
    }

    fn error(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_whole_site() {
        let site = parse(EXAMPLE).unwrap();
        assert_eq!(
            site,
            Site {
                path: "sites/plant7.toml".into(),
                kubernetes: vec![KubeVersion::new(1, 28)],
                platforms: SitePlatforms::Listed(vec![
                    "linux/amd64".parse().unwrap(),
                    "linux/arm64".parse().unwrap()
                ]),
                products: vec![
                    Product {
                        release: "kubernetes@1.28.3".into(),
                        service: None,
                        line: 7,
                    },
                    Product {
                        release: "huawei-csi@4.8.0".into(),
                        service: Some("node".into()),
                        line: 10,
                    },
                ],
                lists: vec!["sites/lists/calico.txt".into()],
                manifests: vec!["sites/rendered/".into()],
                images: vec![SiteImage {
                    reference: "busybox:1.36".parse().unwrap(),
                    line: 16,
                }],
                fetch: Fetch {
                    mirrors: vec![
                        ("docker.io=10.0.0.5:5000/hub".into(), 19),
                        ("registry.k8s.io=10.0.0.5:5000/k8s".into(), 19),
                    ],
                    vendor_dirs: vec!["sites/package/image".into()],
                    ..Fetch::default()
                },
            }
        );
    }

    #[test]
    fn products_are_found_in_the_catalogs() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let site = parse(
            &EXAMPLE
                .replace("kubernetes@1.28.3", "huawei-csi@4.5.0")
                .replace("platforms", "kubernetes = [\"1.28\"]\nplatforms"),
        )
        .unwrap();
        let releases = site.releases(&catalogs).unwrap();
        let found: Vec<(String, Option<String>)> = releases
            .iter()
            .map(|found| (found.release.id(), found.service.clone().map(|s| s.short)))
            .collect();
        assert_eq!(
            found,
            [
                ("huawei-csi@4.5.0".to_string(), None),
                ("huawei-csi@4.8.0".to_string(), Some("node".to_string()))
            ]
        );
        let site = parse(
            &EXAMPLE
                .replace("kubernetes@1.28.3", "calico@3.26.4")
                .replace("platforms", "kubernetes = [\"1.28\"]\nplatforms"),
        )
        .unwrap();
        let error = crate::causes::chain(&site.releases(&catalogs).unwrap_err());
        assert!(
            error.starts_with(
                "sites/plant7.toml line 8: calico@3.26.4: unknown catalog 'calico'; available: "
            ),
            "{error}"
        );
        let site = parse(
            &EXAMPLE
                .replace("kubernetes@1.28.3", "huawei-csi@4.5.0")
                .replace("platforms", "kubernetes = [\"1.28\"]\nplatforms")
                .replace("\"node\"", "\"nodes\""),
        )
        .unwrap();
        assert_eq!(
            crate::causes::chain(&site.releases(&catalogs).unwrap_err()),
            "sites/plant7.toml line 11: huawei-csi@4.8.0: huawei-csi 4.8.0 has no service 'nodes'; \
             available: controller (huawei-csi-controller), node (huawei-csi-node)"
        );
    }

    /// The README's example is a valid site file.
    #[test]
    fn the_readme_examples() {
        let example = |section: &str| {
            include_str!("../../README.md")
                .split(section)
                .nth(1)
                .and_then(|section| section.split("```toml\n").nth(1))
                .and_then(|block| block.split("```").next())
                .map(|text| Site::parse(text, Path::new("site.toml")).unwrap())
                .unwrap_or_else(|| panic!("README has a site file example under {section}"))
        };
        let site = example("### Site files");
        assert_eq!(site.products.len(), 2);
        assert_eq!(site.kubernetes, [KubeVersion::new(1, 28)]);
        assert!(matches!(&site.platforms, SitePlatforms::Listed(p) if p.len() == 2));
        assert_eq!(site.fetch.mirrors.len(), 2);
        assert_eq!(site.lists, [PathBuf::from("lists/k8s.txt")]);
        let whole = example("### The whole site in one bundle");
        let releases: Vec<&str> = whole.products.iter().map(|p| p.release.as_str()).collect();
        assert_eq!(releases, ["kubernetes@1.28.3", "huawei-csi@4.8.0"]);
        assert_eq!(whole.kubernetes, [KubeVersion::new(1, 28)]);
        assert_eq!(
            (
                whole.lists.len(),
                whole.images.len(),
                whole.fetch.vendor_dirs.len()
            ),
            (1, 1, 1)
        );
    }

    /// serde quotes the offending key: a one-line file of 800 kB was echoed whole (issue 21, item 11).
    #[test]
    fn a_toml_error_quotes_at_most_a_cut_key() {
        let key = "k".repeat(800_000);
        assert_eq!(
            error(&format!("{key} = 1\n")),
            format!(
                "sites/plant7.toml line 1: unknown field `{}…(799789 characters cut)…{}`, expected \
                 one of `kubernetes`, `platforms`, `product`, `images`, `fetch`",
                "k".repeat(135),
                "k".repeat(76)
            )
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        assert_eq!(
            error(&EXAMPLE.replace("service = \"node\"", "servise = \"node\"")),
            "sites/plant7.toml line 11: unknown field `servise`, expected `release` or `service`"
        );
        assert_eq!(
            error(&format!("colour = \"blue\"\n{EXAMPLE}")),
            "sites/plant7.toml line 1: unknown field `colour`, expected one of `kubernetes`, \
             `platforms`, `product`, `images`, `fetch`"
        );
        assert_eq!(
            error(&EXAMPLE.replace("vendor_dirs", "vendor_dir")),
            "sites/plant7.toml line 20: unknown field `vendor_dir`, expected one of `mirrors`, \
             `vendor_dirs`, `vendor_registry`, `skip_vendor`, `allow_single_platform`"
        );
    }

    #[test]
    fn what_a_reviewed_file_may_not_leave_open() {
        assert_eq!(
            error("[[product]]\nrelease = \"huawei-csi\"\n"),
            "sites/plant7.toml line 2: release 'huawei-csi' must name one release: CATALOG@RELEASE, \
             e.g. huawei-csi@4.8.0"
        );
        assert_eq!(
            error("[[product]]\nrelease = \"huawei-csi@4.8.0\"\n"),
            "sites/plant7.toml: its products need the clusters' Kubernetes versions: \
             kubernetes = [\"1.28\"], or a kubernetes@VERSION product"
        );
        assert_eq!(
            error("kubernetes = [\"1.27\"]\n[[product]]\nrelease = \"kubernetes@1.28.3\"\n"),
            "sites/plant7.toml line 3: kubernetes@1.28.3 is Kubernetes 1.28, but the site's \
             kubernetes are 1.27: with a kubernetes product, leave kubernetes out or write [\"1.28\"]"
        );
        assert_eq!(
            error("kubernetes = [\"1.27\", \"1.28\"]\n[[product]]\nrelease = \"kubernetes@1.28.3\"\n"),
            "sites/plant7.toml line 3: kubernetes@1.28.3 is Kubernetes 1.28, but the site's \
             kubernetes are 1.27, 1.28: with a kubernetes product, leave kubernetes out or write [\"1.28\"]"
        );
        assert_eq!(
            error("kubernetes = [\"1.28\"]\n"),
            "sites/plant7.toml: it names nothing to carry: no [[product]], and no lists, manifests \
             or extra under [images]"
        );
        assert_eq!(
            error("[images]\nextra = [\"busybox:1\", \"Busybox:1\"]\n"),
            "sites/plant7.toml line 2: invalid image reference 'Busybox:1': repository path \
             components must be lowercase [a-z0-9] separated by . _ __ or -"
        );
        assert_eq!(
            error("platforms = [\"linux/amd64\", \"all\"]\n[images]\nextra = [\"busybox:1\"]\n"),
            "sites/plant7.toml line 1: platforms = [\"all\"] carries every platform each image has; \
             name no other platform beside it"
        );
        assert_eq!(
            parse("platforms = [\"all\"]\n[images]\nextra = [\"busybox:1\"]\n")
                .unwrap()
                .platforms,
            SitePlatforms::Every
        );
        assert_eq!(
            parse("[images]\nextra = [\"busybox:1\"]\n")
                .unwrap()
                .platforms,
            SitePlatforms::Unsaid
        );
        assert_eq!(
            error("platforms = [\"linux\"]\n[images]\nextra = [\"busybox:1\"]\n"),
            "sites/plant7.toml line 1: 'linux' is not a platform (expected os/architecture[/variant], \
             e.g. linux/amd64 or linux/arm/v7)"
        );
        assert_eq!(
            error(&EXAMPLE.replace("vendor_dirs = [\"package/image\"]", "vendor_dirs = [\"p\"]\nskip_vendor = true")),
            "sites/plant7.toml line 21: vendor_dirs, vendor_registry and skip_vendor are three ways \
             to get the vendor's images: choose one"
        );
        let site = parse(
            "kubernetes = [\"1.28.3\", \"v1.28.9\", \"1.30\"]\n[images]\nextra = [\"busybox:1\"]\n",
        )
        .unwrap();
        assert_eq!(
            site.kubernetes,
            [KubeVersion::new(1, 28), KubeVersion::new(1, 30)]
        );
    }
}
