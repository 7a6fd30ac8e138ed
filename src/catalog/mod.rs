//! Product catalogs: per release, which image each container uses on which Kubernetes versions.
//!
//! The shipped catalogs are TOML files in `manifests/`, compiled into the binary so that ferry works alone
//! on any machine; a user may add their own file of the same schema with `--catalog-file`. Every release is
//! validated before it is used (a user's file when it is loaded, a built-in one when first asked for, and
//! every built-in one by the tests), so a typo in a table never becomes a wrong bundle.

mod kubernetes;

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::k8s::{KubeRange, KubeVersion};
use crate::reference::Reference;

pub use kubernetes::{KubernetesError, PatchVersion, CATALOG as KUBERNETES};

/// Kubernetes itself, in its own compact schema (see `kubernetes.rs`), checked against its second reading.
const BUILT_IN_KUBERNETES: (&str, &str) = (
    "kubernetes.toml",
    include_str!("../../manifests/kubernetes.toml"),
);

/// A catalog file compiled into the binary, filed under the catalog and release it holds, so that a run
/// knows every release by name and parses only those it uses (a file saying otherwise is refused).
#[derive(Debug)]
struct BuiltIn {
    catalog: &'static str,
    release: &'static str,
    /// `CATALOG-RELEASE.toml` in manifests/.
    file: &'static str,
    text: &'static str,
}

/// `"huawei-csi" @ "4.8.0"` stands for manifests/huawei-csi-4.8.0.toml.
macro_rules! built_in {
    ($($catalog:literal @ $release:literal,)*) => {
        &[$(BuiltIn {
            catalog: $catalog,
            release: $release,
            file: concat!($catalog, "-", $release, ".toml"),
            text: include_str!(concat!("../../manifests/", $catalog, "-", $release, ".toml")),
        },)*]
    };
}

/// The catalogs built into the binary. Every file in manifests/ must be here (a test says so), each with
/// its second reading in manifests/readings/.
const BUILT_IN: &[BuiltIn] = built_in![
    "huawei-csi" @ "4.12.0",
    "huawei-csi" @ "4.11.0",
    "huawei-csi" @ "4.10.1",
    "huawei-csi" @ "4.10.0",
    "huawei-csi" @ "4.9.0",
    "huawei-csi" @ "4.8.0",
    "huawei-csi" @ "4.7.0",
    "huawei-csi" @ "4.6.0",
    "huawei-csi" @ "4.5.0",
    "huawei-csi" @ "4.4.0",
    "huawei-csi" @ "4.3.0",
    "huawei-csi" @ "4.2.1",
    "huawei-csi" @ "4.2.0",
    "huawei-csi" @ "4.1.1",
    "huawei-csi" @ "4.1.0",
    "huawei-csi" @ "4.0.0",
    "huawei-csi" @ "3.2.3",
    "huawei-csi" @ "3.2.2",
    "huawei-csi" @ "3.2.1",
    "huawei-csi" @ "3.2.0",
    "huawei-csi" @ "3.1.0",
];

/// Where a release's data came from, for messages and `ferry catalogs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    BuiltIn(&'static str),
    File(PathBuf),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::BuiltIn(name) => write!(f, "built-in manifests/{name}"),
            Origin::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One product release: the rows of the vendor's image table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub catalog: String,
    pub release: String,
    pub title: String,
    /// The lowest Kubernetes minor version the release supports, from the vendor's compatibility table.
    /// Rows may be written from an older minor (`v1.13+`), but nothing below this is resolved.
    pub min_kubernetes: KubeVersion,
    /// The newest minor the vendor validated. Tables say `v1.20+`, so newer versions are served with
    /// a warning rather than refused.
    #[serde(default)]
    pub newest_validated_kubernetes: Option<KubeVersion>,
    pub services: Vec<Service>,
    pub images: Vec<CatalogImage>,
    #[serde(skip, default = "unknown_origin")]
    pub origin: Origin,
    /// Set for a release of the `kubernetes` catalog: the Kubernetes release it is. Its images serve that
    /// minor only, and other products' Kubernetes version may be taken from it.
    #[serde(skip)]
    pub kubernetes_release: Option<PatchVersion>,
    /// Set when the release was not in the catalog and was made from a known one: what was assumed, for a
    /// warning.
    #[serde(skip)]
    pub assumed: Option<String>,
}

fn unknown_origin() -> Origin {
    Origin::BuiltIn("?")
}

/// A workload of the product (a Deployment or DaemonSet) whose containers use the images.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub name: String,
    /// The name accepted by `--service`, e.g. `controller`.
    pub short: String,
}

/// One row of a vendor's table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogImage {
    pub container: String,
    /// The reference exactly as the vendor's table writes it.
    pub image: String,
    /// The Kubernetes requirement exactly as the table writes it, kept for traceability.
    pub kubernetes: String,
    pub kubernetes_range: KubeRange,
    pub services: Vec<String>,
    pub source: ImageSource,
    /// The key in the vendor's Helm chart values that sets this image, e.g. `images.sidecar.attacher`.
    #[serde(default)]
    pub helm_value: Option<String>,
    #[serde(default)]
    pub description: String,
    /// False for an image the table leaves out although the services run it: older tables omit
    /// Huawei's own images. Such rows are always `vendor` and say in the file where they came from.
    #[serde(default = "listed")]
    pub in_table: bool,
}

fn listed() -> bool {
    true
}

impl CatalogImage {
    /// The fully qualified reference (validated at load time, so this cannot fail).
    pub fn reference(&self) -> Reference {
        self.image
            .parse()
            .expect("catalog references are validated when loaded")
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSource {
    /// A public registry named in the reference.
    Registry,
    /// The vendor's release package, which ships the image as a docker-save tarball.
    Vendor,
}

impl fmt::Display for ImageSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageSource::Registry => "registry",
            ImageSource::Vendor => "vendor",
        })
    }
}

/// Far more than any vendor table; a larger file is not a catalog.
const MAX_CATALOG_FILE: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a valid catalog: {message}")]
    Parse { origin: Origin, message: String },
    #[error("{origin}: {message}")]
    Invalid { origin: Origin, message: String },
    #[error("unknown catalog '{name}'; available: {available}")]
    UnknownCatalog { name: String, available: String },
    #[error("{catalog} has no release '{release}'; available: {available}")]
    UnknownRelease {
        catalog: String,
        release: String,
        available: String,
    },
    #[error(
        "'{spec}' {why}; a range of releases is CATALOG@FROM..TO, both ends included and either left \
         out (huawei-csi@3.2.0..3.2.3, huawei-csi@4.10.0..), and only pull and bundle take one, with \
         --all-releases"
    )]
    Range { spec: String, why: String },
    #[error(transparent)]
    Kubernetes(#[from] KubernetesError),
    #[error("{catalog} {release} has no service '{service}'; available: {available}")]
    UnknownService {
        catalog: String,
        release: String,
        service: String,
        available: String,
    },
}

/// Every release ferry knows: the built-in ones plus any loaded from files. Each is known by name from the
/// start, but a built-in one is parsed (or expanded from the kubernetes table) and checked only when first
/// asked for: a run uses one or two of hundreds, and every command starts by loading the catalogs.
#[derive(Debug)]
pub struct Catalogs {
    /// Every release but the kubernetes table's, sorted by catalog name, newest first.
    files: Vec<Entry>,
    /// Parsed when a `kubernetes` release is first asked for.
    kubernetes: OnceLock<KubernetesTable>,
}

/// The kubernetes table, for names it does not hold as releases (`1.28`, a newer patch), and its releases.
#[derive(Debug)]
struct KubernetesTable {
    table: kubernetes::Table,
    /// One per row that no user's file replaces, newest first.
    releases: Vec<Entry>,
}

/// A release by name, and where it is made from.
#[derive(Debug)]
struct Entry {
    catalog: Cow<'static, str>,
    release: Cow<'static, str>,
    made: Made,
}

/// Where a release comes from, and the release once made.
#[derive(Debug)]
enum Made {
    /// Parsed and checked when first asked for.
    BuiltIn(&'static BuiltIn, OnceLock<Release>),
    /// The kubernetes table's `index`th row, expanded and checked when first asked for.
    Row {
        index: usize,
        version: PatchVersion,
        release: OnceLock<Release>,
    },
    /// A user's file, read and checked at load: a mistake in it stops any command.
    File(Box<Release>),
}

impl Entry {
    /// The release, if it has been made.
    fn made_yet(&self) -> Option<&Release> {
        match &self.made {
            Made::File(release) => Some(release),
            Made::BuiltIn(_, release) | Made::Row { release, .. } => release.get(),
        }
    }
}

impl Catalogs {
    /// The built-in catalogs, then each user file; a user's release replaces a built-in one of the same
    /// name and version, so an operator can correct a table without waiting for a ferry release.
    pub fn load(user_files: &[PathBuf]) -> Result<Catalogs, CatalogError> {
        Catalogs::with_built_in(BUILT_IN, user_files)
    }

    /// [`Catalogs::load`] with other built-in files (a test's broken ones).
    fn with_built_in(
        built_in: &'static [BuiltIn],
        user_files: &[PathBuf],
    ) -> Result<Catalogs, CatalogError> {
        let mut files: Vec<Entry> = built_in
            .iter()
            .map(|file| Entry {
                catalog: Cow::Borrowed(file.catalog),
                release: Cow::Borrowed(file.release),
                made: Made::BuiltIn(file, OnceLock::new()),
            })
            .collect();
        for path in user_files {
            let text = crate::io::read_side_text(path, MAX_CATALOG_FILE).map_err(|source| {
                CatalogError::Read {
                    path: path.clone(),
                    source,
                }
            })?;
            let release = parse_release(&text, Origin::File(path.clone()))?;
            files.retain(|e| !(e.catalog == release.catalog && e.release == release.release));
            files.push(Entry {
                catalog: Cow::Owned(release.catalog.clone()),
                release: Cow::Owned(release.release.clone()),
                made: Made::File(Box::new(release)),
            });
        }
        files.sort_by(|a, b| {
            a.catalog
                .cmp(&b.catalog)
                .then_with(|| compare_versions(&b.release, &a.release))
        });
        Ok(Catalogs {
            files,
            kubernetes: OnceLock::new(),
        })
    }

    /// Every release, sorted by catalog name, newest first, each made: for `ferry catalogs --json` and
    /// `--all`, and checks of everything.
    pub fn releases(&self) -> Result<Vec<&Release>, CatalogError> {
        self.listed()?.iter().map(Listed::release).collect()
    }

    /// Every release by name, sorted as [`Catalogs::releases`], each made only when asked for.
    pub fn listed(&self) -> Result<Vec<Listed<'_>>, CatalogError> {
        let mut listed = Vec::new();
        for name in self.names() {
            for entry in self.of_catalog(name)? {
                listed.push(Listed {
                    catalogs: self,
                    entry,
                });
            }
        }
        Ok(listed)
    }

    /// Of `registries`, those some release takes images from. The releases already made are looked at
    /// first (a run's mirrors are most often for the images it fetches); the others are made only while
    /// one is left to find.
    pub fn registries_among<'a>(
        &self,
        registries: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeSet<String>, CatalogError> {
        let mut left: BTreeSet<&str> = registries.into_iter().collect();
        let mut found = BTreeSet::new();
        let mut look = |release: &Release, left: &mut BTreeSet<&str>| {
            for image in &release.images {
                if let Some(registry) = left.take(image.reference().registry()) {
                    found.insert(registry.to_string());
                }
            }
        };
        let table = self.kubernetes.get().into_iter();
        for release in self
            .files
            .iter()
            .chain(table.flat_map(|t| &t.releases))
            .filter_map(Entry::made_yet)
        {
            look(release, &mut left);
        }
        'all: for name in self.names() {
            for entry in self.of_catalog(name)? {
                if left.is_empty() {
                    break 'all;
                }
                look(self.made(entry)?, &mut left);
            }
        }
        Ok(found)
    }

    /// Finds `name@release`, or the newest release of `name` when no release is given. A `kubernetes`
    /// release may also be named by its minor (`kubernetes@1.28`, its newest release), or by a patch newer
    /// than the catalog knows, which is made from its minor's newest release and says so in `assumed`.
    pub fn find(&self, spec: &str) -> Result<Cow<'_, Release>, CatalogError> {
        let (name, release) = match spec.split_once('@') {
            Some((name, release)) => (name, Some(release)),
            None => (spec, None),
        };
        let of_catalog = self.of_catalog(name)?;
        let Some(wanted) = release else {
            return self.made(of_catalog[0]).map(Cow::Borrowed);
        };
        if wanted.contains("..") {
            return Err(CatalogError::Range {
                spec: spec.to_string(),
                why: "is a range, where one release is expected".into(),
            });
        }
        let wanted = wanted.strip_prefix('v').unwrap_or(wanted);
        let exact = |wanted: &str| of_catalog.iter().copied().find(|e| e.release == wanted);
        if name == KUBERNETES {
            // A release replaced from a user's file is found as it is; the table knows the rest.
            if let Some(entry) = exact(wanted) {
                return self.made(entry).map(Cow::Borrowed);
            }
            return match self.kubernetes()?.table.lookup(wanted)? {
                kubernetes::Lookup::Known(version) => self
                    .made(exact(&version.to_string()).expect("every row of the table is a release"))
                    .map(Cow::Borrowed),
                kubernetes::Lookup::Assumed(release) => Ok(Cow::Owned(*release)),
            };
        }
        match exact(wanted) {
            Some(entry) => self.made(entry).map(Cow::Borrowed),
            None => Err(CatalogError::UnknownRelease {
                catalog: name.to_string(),
                release: wanted.to_string(),
                available: release_names(&of_catalog),
            }),
        }
    }

    /// The releases `spec` names, newest first: `huawei-csi` (every release), `huawei-csi@3.2.0..3.2.3`
    /// (a range, both ends included; either end may be left out), or one `huawei-csi@4.8.0`.
    pub fn select(&self, spec: &str) -> Result<Vec<&Release>, CatalogError> {
        let Some((name, range)) = spec
            .split_once('@')
            .and_then(|(name, release)| release.split_once("..").map(|range| (name, range)))
        else {
            return match spec.split_once('@') {
                Some(_) => match self.find(spec)? {
                    Cow::Borrowed(release) => Ok(vec![release]),
                    Cow::Owned(release) => Err(CatalogError::UnknownRelease {
                        catalog: release.catalog,
                        release: release.release,
                        available: "the releases `ferry catalogs --all` lists".into(),
                    }),
                },
                None => self.made_all(&self.of_catalog(spec)?),
            };
        };
        let of_catalog = self.of_catalog(name)?;
        let (low, high) = range_bounds(spec, range)?;
        let chosen: Vec<&Entry> = of_catalog
            .iter()
            .copied()
            .filter(|e| low.is_empty() || compare_versions(&e.release, &low) != Ordering::Less)
            .filter(|e| high.is_empty() || compare_versions(&e.release, &high) != Ordering::Greater)
            .collect();
        if chosen.is_empty() {
            return Err(CatalogError::UnknownRelease {
                catalog: name.to_string(),
                release: format!("{}..{}", range.0, range.1),
                available: release_names(&of_catalog),
            });
        }
        self.made_all(&chosen)
    }

    /// Every catalog's name, in order.
    fn names(&self) -> BTreeSet<&str> {
        self.files
            .iter()
            .map(|e| e.catalog.as_ref())
            .chain([KUBERNETES])
            .collect()
    }

    /// The releases of catalog `name`, newest first; an unknown name is refused listing the known ones.
    fn of_catalog(&self, name: &str) -> Result<Vec<&Entry>, CatalogError> {
        let files = self.files.iter().filter(|e| e.catalog == name);
        if name != KUBERNETES {
            let of_catalog: Vec<&Entry> = files.collect();
            if of_catalog.is_empty() {
                return Err(CatalogError::UnknownCatalog {
                    name: name.to_string(),
                    available: self.names().into_iter().collect::<Vec<_>>().join(", "),
                });
            }
            return Ok(of_catalog);
        }
        let mut of_catalog: Vec<&Entry> = self.kubernetes()?.releases.iter().collect();
        let table = of_catalog.len();
        of_catalog.extend(files);
        // The table's releases are in order; a user's go among them.
        if of_catalog.len() > table {
            of_catalog.sort_by(|a, b| compare_versions(&b.release, &a.release));
        }
        Ok(of_catalog)
    }

    /// The kubernetes table, parsed the first time a `kubernetes` release is asked for.
    fn kubernetes(&self) -> Result<&KubernetesTable, CatalogError> {
        once(&self.kubernetes, || {
            let (name, text) = BUILT_IN_KUBERNETES;
            let origin = Origin::BuiltIn(name);
            let table = kubernetes::Table::parse(text, origin.clone())
                .map_err(|message| CatalogError::Parse { origin, message })?;
            let replaced = |release: &str| {
                self.files
                    .iter()
                    .any(|e| e.catalog == KUBERNETES && e.release == release)
            };
            let releases = table
                .versions()
                .enumerate()
                .rev()
                .map(|(index, version)| (index, version, version.to_string()))
                .filter(|(_, _, release)| !replaced(release))
                .map(|(index, version, release)| Entry {
                    catalog: Cow::Borrowed(KUBERNETES),
                    release: Cow::Owned(release),
                    made: Made::Row {
                        index,
                        version,
                        release: OnceLock::new(),
                    },
                })
                .collect();
            Ok(KubernetesTable { table, releases })
        })
    }

    /// The release `entry` names, made (parsed or expanded, and checked) the first time it is asked for.
    fn made<'a>(&'a self, entry: &'a Entry) -> Result<&'a Release, CatalogError> {
        match &entry.made {
            Made::File(release) => Ok(release),
            Made::BuiltIn(file, release) => once(release, || file.parse()),
            Made::Row { index, release, .. } => once(release, || {
                let release = self.kubernetes()?.table.release_at(*index);
                validate(&release)?;
                Ok(release)
            }),
        }
    }

    fn made_all<'a>(&'a self, entries: &[&'a Entry]) -> Result<Vec<&'a Release>, CatalogError> {
        entries.iter().map(|entry| self.made(entry)).collect()
    }
}

/// A release by name, made when asked for: `ferry catalogs` sums a kubernetes minor's releases up from
/// the newest alone.
#[derive(Debug, Clone, Copy)]
pub struct Listed<'a> {
    catalogs: &'a Catalogs,
    entry: &'a Entry,
}

impl<'a> Listed<'a> {
    pub fn catalog(&self) -> &'a str {
        &self.entry.catalog
    }

    /// `catalog@release`, the name users type.
    pub fn id(&self) -> String {
        format!("{}@{}", self.entry.catalog, self.entry.release)
    }

    /// The Kubernetes release a release of the kubernetes table stands for, as its `kubernetes_release`
    /// says (a user's file says none).
    pub fn kubernetes_release(&self) -> Option<PatchVersion> {
        match self.entry.made {
            Made::Row { version, .. } => Some(version),
            Made::BuiltIn(..) | Made::File(_) => None,
        }
    }

    /// The release, made (parsed or expanded, and checked) the first time it is asked for.
    pub fn release(&self) -> Result<&'a Release, CatalogError> {
        self.catalogs.made(self.entry)
    }
}

/// What `cell` holds, made by `make` the first time. A failure is not kept: it is made, and fails, again
/// when asked again, so every caller gets the typed error.
fn once<T>(
    cell: &OnceLock<T>,
    make: impl FnOnce() -> Result<T, CatalogError>,
) -> Result<&T, CatalogError> {
    if let Some(made) = cell.get() {
        return Ok(made);
    }
    let made = make()?;
    Ok(cell.get_or_init(|| made))
}

/// `4.12.0, 4.11.0, …`, for messages.
fn release_names(entries: &[&Entry]) -> String {
    entries
        .iter()
        .map(|e| e.release.as_ref())
        .collect::<Vec<_>>()
        .join(", ")
}

impl BuiltIn {
    fn parse(&self) -> Result<Release, CatalogError> {
        let release = parse_release(self.text, Origin::BuiltIn(self.file))?;
        if (release.catalog.as_str(), release.release.as_str()) != (self.catalog, self.release) {
            return Err(CatalogError::Invalid {
                message: format!(
                    "holds {}, but is built in as {}@{}",
                    release.id(),
                    self.catalog,
                    self.release
                ),
                origin: release.origin,
            });
        }
        Ok(release)
    }
}

/// The ends of a range `FROM..TO` as release names (a leading `v` dropped), `spec` being what was typed:
/// each end empty or a version (`4.8.0`, `1.28.3`, `4.9.0-rc1`), one `..` between them, at least one
/// end, and the older first.
fn range_bounds(spec: &str, (from, to): (&str, &str)) -> Result<(String, String), CatalogError> {
    let refused = |why: String| CatalogError::Range {
        spec: spec.to_string(),
        why,
    };
    let bound = |text: &str| text.strip_prefix('v').unwrap_or(text).to_string();
    let (low, high) = (bound(from), bound(to));
    if to.contains("..") {
        return Err(refused("has more than one '..'".into()));
    }
    if low.is_empty() && high.is_empty() {
        return Err(refused(
            "names neither end (the catalog alone names every release)".into(),
        ));
    }
    let is_version = |end: &str| {
        end.is_empty()
            || (end.starts_with(|c: char| c.is_ascii_digit())
                && end
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                && !end.contains("..")
                && !end.ends_with('.'))
    };
    for (end, text) in [(&low, from), (&high, to)] {
        if !is_version(end) {
            return Err(refused(format!(
                "has '{text}' as an end, which is no release"
            )));
        }
    }
    if !low.is_empty() && !high.is_empty() && compare_versions(&low, &high) == Ordering::Greater {
        return Err(refused(format!(
            "is reversed: {from} is newer than {to} (the older release comes first: {to}..{from})"
        )));
    }
    Ok((low, high))
}

impl Release {
    /// `catalog@release`, the name users type.
    pub fn id(&self) -> String {
        format!("{}@{}", self.catalog, self.release)
    }

    /// For a release of Kubernetes itself, the minor version its images serve.
    pub fn kubernetes_version(&self) -> Option<KubeVersion> {
        self.kubernetes_release.map(PatchVersion::minor_version)
    }

    /// Finds a service by its full or short name.
    pub fn service(&self, name: &str) -> Result<&Service, CatalogError> {
        self.services
            .iter()
            .find(|s| s.name == name || s.short == name)
            .ok_or_else(|| CatalogError::UnknownService {
                catalog: self.catalog.clone(),
                release: self.release.clone(),
                service: name.to_string(),
                available: self
                    .services
                    .iter()
                    .map(|s| format!("{} ({})", s.short, s.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

fn parse_release(text: &str, origin: Origin) -> Result<Release, CatalogError> {
    let mut release: Release = toml::from_str(text).map_err(|e| CatalogError::Parse {
        origin: origin.clone(),
        message: crate::io::toml_error(text, &e),
    })?;
    release.origin = origin;
    validate(&release)?;
    Ok(release)
}

/// Checks what a table can get wrong: unparseable references or requirements, a parsed range that
/// disagrees with the written one, rows below the release's minimum, unknown services, and two images
/// for one container on the same Kubernetes version.
fn validate(release: &Release) -> Result<(), CatalogError> {
    let invalid = |message: String| CatalogError::Invalid {
        origin: release.origin.clone(),
        message,
    };
    check_name("catalog name", &release.catalog).map_err(invalid)?;
    check_release(&release.release).map_err(invalid)?;
    check_text("title", &release.title).map_err(invalid)?;
    for service in &release.services {
        check_name("service name", &service.name).map_err(invalid)?;
        check_name("service short name", &service.short).map_err(invalid)?;
    }
    if release.images.is_empty() {
        return Err(invalid("a release needs at least one image".into()));
    }
    if let Some(newest) = release.newest_validated_kubernetes {
        if newest < release.min_kubernetes {
            return Err(invalid(format!(
                "newest_validated_kubernetes {newest} is below min_kubernetes {}",
                release.min_kubernetes
            )));
        }
    }
    for image in &release.images {
        let row = |message: String| {
            invalid(format!(
                "image {} ({}): {message}",
                quoted(&image.image),
                crate::io::shown(&image.container, 80)
            ))
        };
        check_name("container name", &image.container).map_err(row)?;
        check_text("image", &image.image).map_err(row)?;
        check_text("kubernetes", &image.kubernetes).map_err(row)?;
        check_text("description", &image.description).map_err(row)?;
        if let Some(key) = &image.helm_value {
            check_helm_value(key).map_err(row)?;
        }
        image
            .image
            .parse::<Reference>()
            .map_err(|e| row(e.to_string()))?;
        let written: KubeRange = image
            .kubernetes
            .parse()
            .map_err(|e: crate::k8s::VersionError| row(e.to_string()))?;
        if written != image.kubernetes_range {
            return Err(row(format!(
                "kubernetes = '{}' means {written}, but kubernetes_range says {}",
                image.kubernetes, image.kubernetes_range
            )));
        }
        if image
            .kubernetes_range
            .max
            .is_some_and(|max| max < release.min_kubernetes)
        {
            return Err(row(format!(
                "its range {} ends below the release's min_kubernetes {}",
                image.kubernetes_range, release.min_kubernetes
            )));
        }
        if !image.in_table && image.source != ImageSource::Vendor {
            return Err(row(
                "in_table = false is only for the vendor's own images (source = \"vendor\")".into(),
            ));
        }
        if image.services.is_empty() {
            return Err(row("names no service".into()));
        }
        if let Some(unknown) = image
            .services
            .iter()
            .find(|s| !release.services.iter().any(|known| &known.name == *s))
        {
            return Err(row(format!(
                "service {} is not declared in [[services]]",
                quoted(unknown)
            )));
        }
    }
    check_helm_groups(release).map_err(invalid)?;
    for (i, a) in release.images.iter().enumerate() {
        for b in &release.images[i + 1..] {
            if a.container == b.container && ranges_overlap(a.kubernetes_range, b.kubernetes_range)
            {
                return Err(invalid(format!(
                    "container '{}' has two images for the same Kubernetes version: '{}' ({}) and '{}' ({})",
                    a.container, a.image, a.kubernetes_range, b.image, b.kubernetes_range
                )));
            }
        }
    }
    Ok(())
}

/// A value from a catalog file as a message quotes it: escaped and cut.
fn quoted(text: &str) -> String {
    format!("'{}'", crate::io::shown(text, 80))
}

/// Text shown on a terminal and written into files: no control characters, which would reach the
/// terminal as commands or break the lines they are written into.
fn check_text(what: &str, text: &str) -> Result<(), String> {
    match text.chars().any(char::is_control) {
        true => Err(format!("{what} {} holds control characters", quoted(text))),
        false => Ok(()),
    }
}

/// Names users type and ferry writes into file names (catalogs, services, containers): nothing that
/// could be a path, an option or a range.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.contains("..");
    match valid {
        true => Ok(()),
        false => Err(format!(
            "{what} {} must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or \
             digit, without '..'",
            quoted(name)
        )),
    }
}

/// A release is a version, typed after `@` and written into the bundle's file name: never a path, and
/// never with `..`, which on the command line means a range of releases.
fn check_release(release: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&release.len())
        && release.starts_with(|c: char| c.is_ascii_digit())
        && release
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+'))
        && !release.contains("..");
    match valid {
        true => Ok(()),
        false => Err(format!(
            "release {} must be a version (e.g. 4.8.0): 1 to 64 letters, digits, '.', '_', '-' or \
             '+', starting with a digit, without '..'",
            quoted(release)
        )),
    }
}

/// `push --helm-values` writes the key as the `images:` section of the chart's values: `images.KEY` or
/// `images.GROUP.KEY`, each a plain identifier, so nothing in it can change the YAML around it.
fn check_helm_value(key: &str) -> Result<(), String> {
    let identifier = |part: &str| {
        (1..=64).contains(&part.len())
            && part.starts_with(|c: char| c.is_ascii_alphabetic())
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    };
    let parts: Vec<&str> = key.split('.').collect();
    match parts.split_first() {
        Some((&"images", rest))
            if (1..=2).contains(&rest.len()) && rest.iter().all(|p| identifier(p)) =>
        {
            Ok(())
        }
        _ => Err(format!(
            "helm_value {} must be images.KEY or images.GROUP.KEY, each a name of letters, digits, \
             '_' or '-' starting with a letter",
            quoted(key)
        )),
    }
}

/// A key cannot be both a value and a group of values (`images.sidecar` and `images.sidecar.attacher`).
fn check_helm_groups(release: &Release) -> Result<(), String> {
    let keys: BTreeSet<&str> = release
        .images
        .iter()
        .filter_map(|i| i.helm_value.as_deref())
        .collect();
    for key in &keys {
        if let Some(inner) = keys.iter().find(|other| {
            other
                .strip_prefix(*key)
                .is_some_and(|rest| rest.starts_with('.'))
        }) {
            return Err(format!(
                "helm_value '{key}' is also the group of '{inner}': a Helm value cannot be both"
            ));
        }
    }
    Ok(())
}

fn ranges_overlap(a: KubeRange, b: KubeRange) -> bool {
    a.contains(b.min) || b.contains(a.min)
}

/// Orders release strings numerically where they are numbers (4.10.0 after 4.8.0).
fn compare_versions(a: &str, b: &str) -> Ordering {
    let key = |s: &str| {
        s.split(['.', '-'])
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect::<Vec<_>>()
    };
    key(a).cmp(&key(b))
}

#[cfg(test)]
mod kubernetes_reading;
#[cfg(test)]
mod readings;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_file_is_valid() {
        let catalogs = Catalogs::load(&[]).expect("built-in catalogs load");
        let kubernetes = catalogs
            .releases()
            .unwrap()
            .into_iter()
            .filter(|r| r.catalog == KUBERNETES)
            .count();
        assert_eq!(
            kubernetes, 313,
            "published Kubernetes releases 1.16.0-1.35.7"
        );
        assert_eq!(
            catalogs.releases().unwrap().len(),
            BUILT_IN.len() + kubernetes
        );
    }

    /// A built-in file is known by the name it is filed under before it is parsed: what it holds must
    /// be that release.
    #[test]
    fn every_built_in_file_holds_the_release_it_is_filed_under() {
        for file in BUILT_IN {
            let release = file
                .parse()
                .unwrap_or_else(|e| panic!("{}: {e}", file.file));
            assert_eq!(
                (release.catalog.as_str(), release.release.as_str()),
                (file.catalog, file.release),
                "{}",
                file.file
            );
        }
    }

    /// A run makes the releases it names and no other: `list huawei-csi@4.8.0` parses one file and not
    /// the kubernetes table.
    #[test]
    fn only_the_releases_asked_for_are_made() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let made = |catalogs: &Catalogs| {
            let table = catalogs.kubernetes.get().into_iter();
            (catalogs.files.iter())
                .chain(table.flat_map(|t| &t.releases))
                .filter_map(Entry::made_yet)
                .map(Release::id)
                .collect::<Vec<_>>()
        };
        assert_eq!(catalogs.find("huawei-csi@4.8.0").unwrap().release, "4.8.0");
        assert_eq!(made(&catalogs), ["huawei-csi@4.8.0"]);
        assert!(catalogs.kubernetes.get().is_none());
        let listed = catalogs.listed().unwrap();
        assert_eq!(listed.len(), 21 + 313);
        assert_eq!(listed[0].id(), "huawei-csi@4.12.0");
        assert_eq!(listed[21].id(), "kubernetes@1.35.7");
        assert_eq!(made(&catalogs), ["huawei-csi@4.8.0"]);
        assert_eq!(catalogs.find("kubernetes@1.28").unwrap().release, "1.28.15");
        assert_eq!(made(&catalogs), ["huawei-csi@4.8.0", "kubernetes@1.28.15"]);
        // A mirror's registry is found among the releases made before any other is parsed; one that no
        // release names takes them all.
        let registries = catalogs.registries_among(["registry.k8s.io"]).unwrap();
        assert_eq!(Vec::from_iter(registries), ["registry.k8s.io"]);
        assert_eq!(made(&catalogs).len(), 2);
        let registries = catalogs
            .registries_among(["quay.io", "docker.io", "k8s.gcr.io", "regisry.k8s.io"])
            .unwrap();
        assert_eq!(
            Vec::from_iter(registries),
            ["docker.io", "k8s.gcr.io", "quay.io"]
        );
    }

    /// A built-in file that does not parse, or holds another release than it is filed under, is refused
    /// with the same typed error as at load, each time it is asked for; the other releases still serve.
    #[test]
    fn a_broken_built_in_file_is_refused_when_asked_for() {
        let leak = |text: String| -> &'static str { Box::leak(text.into_boxed_str()) };
        let valid = release_with_rows(&row("a", "a:1", "v1.16+", "{ min = \"1.16\" }"));
        let built_in: &'static [BuiltIn] = Box::leak(Box::new([
            BuiltIn {
                catalog: "x",
                release: "2.0",
                file: "x-2.0.toml",
                text: "catalog = \"x\"\nrelease = ",
            },
            BuiltIn {
                catalog: "x",
                release: "1.1",
                file: "x-1.1.toml",
                text: leak(valid.clone()),
            },
            BuiltIn {
                catalog: "x",
                release: "1.0",
                file: "x-1.0.toml",
                text: leak(valid),
            },
        ]));
        let catalogs = Catalogs::with_built_in(built_in, &[]).unwrap();
        let listed: Vec<String> = catalogs.listed().unwrap().iter().map(Listed::id).collect();
        assert_eq!(listed[313..], ["x@2.0", "x@1.1", "x@1.0"]);
        assert_eq!(catalogs.find("x@1.0").unwrap().release, "1.0");
        for _ in 0..2 {
            let err = catalogs.find("x").unwrap_err();
            assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
            assert_eq!(
                err.to_string(),
                "built-in manifests/x-2.0.toml: not a valid catalog: line 2, column 11: string \
                 values must be quoted, expected literal string (at the end of the line)"
            );
        }
        let err = catalogs.find("x@1.1").unwrap_err();
        assert!(matches!(err, CatalogError::Invalid { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "built-in manifests/x-1.1.toml: holds x@1.0, but is built in as x@1.1"
        );
        assert_eq!(
            catalogs.select("x@..1.1").unwrap_err().to_string(),
            err.to_string()
        );
        assert!(catalogs.releases().is_err());
    }

    /// A user's file replaces the built-in release of the same catalog and release, a kubernetes table
    /// row too, in its place among the others.
    #[test]
    fn a_users_file_replaces_the_built_in_release() {
        let dir = tempfile::tempdir().unwrap();
        let file = |catalog: &str, release: &str| {
            let path = dir.path().join(format!("{catalog}-{release}.toml"));
            let text = release_with_rows(&row("a", "a:1", "v1.16+", "{ min = \"1.16\" }"))
                .replace("catalog = \"x\"", &format!("catalog = \"{catalog}\""))
                .replace("release = \"1.0\"", &format!("release = \"{release}\""));
            std::fs::write(&path, text).unwrap();
            path
        };
        let files = [
            file("huawei-csi", "4.8.0"),
            file("kubernetes", "1.28.15"),
            file("kubernetes", "1.28.16"),
        ];
        let catalogs = Catalogs::load(&files).unwrap();
        let from_file = |spec: &str| {
            let release = catalogs.find(spec).unwrap();
            (release.id(), matches!(release.origin, Origin::File(_)))
        };
        assert_eq!(
            from_file("huawei-csi@4.8.0"),
            ("huawei-csi@4.8.0".into(), true)
        );
        assert_eq!(
            from_file("huawei-csi@4.9.0"),
            ("huawei-csi@4.9.0".into(), false)
        );
        assert_eq!(
            from_file("kubernetes@1.28.15"),
            ("kubernetes@1.28.15".into(), true)
        );
        // The table's newest 1.28 release, as the file replaces it; 1.28.16 only by its name.
        assert_eq!(
            from_file("kubernetes@1.28"),
            ("kubernetes@1.28.15".into(), true)
        );
        assert_eq!(
            from_file("kubernetes@1.28.16"),
            ("kubernetes@1.28.16".into(), true)
        );
        assert_eq!(
            from_file("kubernetes@1.28.14"),
            ("kubernetes@1.28.14".into(), false)
        );
        let ids: Vec<String> = catalogs
            .releases()
            .unwrap()
            .into_iter()
            .map(Release::id)
            .collect();
        assert_eq!(ids.len(), 21 + 313 + 1);
        let mut sorted = ids.clone();
        sorted.sort_by(|a, b| {
            let (a, b) = (a.split_once('@').unwrap(), b.split_once('@').unwrap());
            a.0.cmp(b.0).then_with(|| compare_versions(b.1, a.1))
        });
        sorted.dedup();
        assert_eq!(ids, sorted);
        let at = |id: &str| ids.iter().position(|i| i == id).unwrap();
        assert_eq!(at("kubernetes@1.28.16") + 1, at("kubernetes@1.28.15"));
        assert_eq!(at("kubernetes@1.29.0") + 1, at("kubernetes@1.28.16"));
    }

    #[test]
    fn bare_name_means_newest_release() {
        let catalogs = Catalogs::load(&[]).unwrap();
        assert_eq!(catalogs.find("huawei-csi").unwrap().release, "4.12.0");
        assert_eq!(catalogs.find("huawei-csi@4.5.0").unwrap().release, "4.5.0");
        assert_eq!(catalogs.find("huawei-csi@v4.5.0").unwrap().release, "4.5.0");
    }

    #[test]
    fn unknown_names_list_what_exists() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let err = catalogs.find("huawei-csi@9.9.9").unwrap_err().to_string();
        assert!(err.contains("4.8.0") && err.contains("4.5.0"), "{err}");
        let err = catalogs.find("nope").unwrap_err().to_string();
        assert!(err.contains("huawei-csi"), "{err}");
    }

    #[test]
    fn a_range_selects_releases_newest_first() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let ids = |spec: &str| {
            catalogs
                .select(spec)
                .unwrap()
                .iter()
                .map(|r| r.release.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids("huawei-csi@3.2.0..3.2.3"),
            ["3.2.3", "3.2.2", "3.2.1", "3.2.0"]
        );
        assert_eq!(
            ids("huawei-csi@4.10.0.."),
            ["4.12.0", "4.11.0", "4.10.1", "4.10.0"]
        );
        assert_eq!(ids("huawei-csi@..3.2.0"), ["3.2.0", "3.1.0"]);
        assert_eq!(ids("huawei-csi@4.8.0"), ["4.8.0"]);
        assert_eq!(ids("huawei-csi").len(), 21);
        let err = catalogs
            .select("huawei-csi@5.0..6.0")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("huawei-csi has no release '5.0..6.0'; available: 4.12.0"),
            "{err}"
        );
    }

    /// A range with two `..`, no end, an end that is no version, or its ends reversed is refused naming
    /// what was typed and how a range is written; so is a range where one release is asked for.
    #[test]
    fn malformed_ranges_are_refused_with_the_syntax() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let syntax = "; a range of releases is CATALOG@FROM..TO, both ends included and either left out \
                      (huawei-csi@3.2.0..3.2.3, huawei-csi@4.10.0..), and only pull and bundle take one, \
                      with --all-releases";
        for (spec, why) in [
            ("huawei-csi@4.8.0..4.9.0..5.0.0", "has more than one '..'"),
            ("huawei-csi@...", "has '.' as an end, which is no release"),
            ("huawei-csi@4.8.0..latest", "has 'latest' as an end, which is no release"),
            (
                "huawei-csi@..",
                "names neither end (the catalog alone names every release)",
            ),
            (
                "huawei-csi@4.8.0..4.5.0",
                "is reversed: 4.8.0 is newer than 4.5.0 (the older release comes first: 4.5.0..4.8.0)",
            ),
            (
                "kubernetes@v1.29..v1.28.3",
                "is reversed: v1.29 is newer than v1.28.3 (the older release comes first: v1.28.3..v1.29)",
            ),
        ] {
            let err = catalogs.select(spec).unwrap_err();
            assert_eq!(err.to_string(), format!("'{spec}' {why}{syntax}"));
        }
        let err = catalogs.find("huawei-csi@4.5.0..4.8.0").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("'huawei-csi@4.5.0..4.8.0' is a range, where one release is expected{syntax}")
        );
        let ids: Vec<String> = catalogs
            .select("kubernetes@1.28.14..v1.29.0")
            .unwrap()
            .iter()
            .map(|r| r.id())
            .collect();
        assert_eq!(
            ids,
            [
                "kubernetes@1.29.0",
                "kubernetes@1.28.15",
                "kubernetes@1.28.14"
            ]
        );
    }

    /// `push --helm-values` writes the keys of the release pushed: the chart renamed them in 3.2.0.
    #[test]
    fn every_row_names_its_releases_own_helm_key() {
        let catalogs = Catalogs::load(&[]).unwrap();
        for release in catalogs
            .releases()
            .unwrap()
            .into_iter()
            .filter(|r| r.catalog == "huawei-csi")
        {
            let key = |container: &str| {
                release
                    .images
                    .iter()
                    .find(|i| i.container == container)
                    .and_then(|i| i.helm_value.clone())
                    .unwrap_or_else(|| panic!("{}: {container}", release.id()))
            };
            assert!(
                release.images.iter().all(|i| i.helm_value.is_some()),
                "{}",
                release.id()
            );
            let provisioner = if release.release == "3.1.0" {
                "images.sidecar.csiProvisioner"
            } else {
                "images.sidecar.provisioner"
            };
            assert_eq!(key("csi-provisioner"), provisioner, "{}", release.id());
            assert_eq!(key("huawei-csi-driver"), "images.huaweiCSIService");
        }
        let old = catalogs.find("huawei-csi@3.1.0").unwrap();
        let keys: BTreeSet<&str> = old
            .images
            .iter()
            .filter_map(|i| i.helm_value.as_deref())
            .collect();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            [
                "images.huaweiCSIService",
                "images.sidecar.csiAttacher",
                "images.sidecar.csiProvisioner",
                "images.sidecar.csiResizer",
                "images.sidecar.csiSnapshotter",
                "images.sidecar.livenessProbe",
                "images.sidecar.registrar",
                "images.sidecar.snapshotController"
            ]
        );
    }

    #[test]
    fn newer_release_numbers_sort_first() {
        assert_eq!(compare_versions("4.10.0", "4.8.0"), Ordering::Greater);
        assert_eq!(compare_versions("4.5.0", "4.8.0"), Ordering::Less);
    }

    fn release_with_rows(rows: &str) -> String {
        format!(
            "catalog = \"x\"\nrelease = \"1.0\"\ntitle = \"t\"\nmin_kubernetes = \"1.16\"\n\
             [[services]]\nname = \"svc\"\nshort = \"s\"\n{rows}"
        )
    }

    fn row(container: &str, image: &str, written: &str, range: &str) -> String {
        format!(
            "[[images]]\ncontainer = \"{container}\"\nimage = \"{image}\"\nkubernetes = \"{written}\"\n\
             kubernetes_range = {range}\nservices = [\"svc\"]\nsource = \"registry\"\n"
        )
    }

    fn load_err(text: &str) -> String {
        parse_release(text, Origin::BuiltIn("test.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn overlapping_rows_of_one_container_are_refused() {
        let text = release_with_rows(&format!(
            "{}{}",
            row("a", "a:1", "v1.16+", "{ min = \"1.16\" }"),
            row(
                "a",
                "a:2",
                "v1.17-v1.19",
                "{ min = \"1.17\", max = \"1.19\" }"
            )
        ));
        assert!(load_err(&text).contains("two images for the same Kubernetes version"));
    }

    #[test]
    fn rows_wholly_below_the_release_minimum_are_refused() {
        let text = release_with_rows(&row(
            "a",
            "a:1",
            "v1.13.x-v1.15.x",
            "{ min = \"1.13\", max = \"1.15\" }",
        ));
        assert_eq!(
            load_err(&text),
            "built-in manifests/test.toml: image 'a:1' (a): its range 1.13-1.15 ends below the \
             release's min_kubernetes 1.16"
        );
        // A row written from an older minor still serves the release's own range.
        let text = release_with_rows(&row("a", "a:1", "v1.13+", "{ min = \"1.13\" }"));
        assert!(parse_release(&text, Origin::BuiltIn("test.toml")).is_ok());
    }

    #[test]
    fn an_unknown_requirement_spelling_names_the_file_and_row() {
        let text = release_with_rows(&row("a", "a:1", "1.16~1.34", "{ min = \"1.16\" }"));
        assert_eq!(
            load_err(&text),
            "built-in manifests/test.toml: image 'a:1' (a): '1.16~1.34' is not a Kubernetes version \
             requirement (expected e.g. v1.16+, v1.17-v1.19, v1.16.x)"
        );
    }

    #[test]
    fn only_vendor_rows_may_be_missing_from_the_table() {
        let text = release_with_rows(&format!(
            "{}in_table = false\n",
            row("a", "a:1", "v1.16+", "{ min = \"1.16\" }")
        ));
        assert!(load_err(&text).contains("only for the vendor's own images"));
    }

    #[test]
    fn written_and_parsed_ranges_must_agree() {
        let text = release_with_rows(&row("a", "a:1", "v1.17+", "{ min = \"1.16\" }"));
        assert!(load_err(&text).contains("means 1.17+"));
    }

    /// What ends up in file names, YAML and on the terminal has a strict grammar (issue 20, item 5).
    #[test]
    fn names_releases_and_helm_keys_that_could_escape_are_refused() {
        let good = release_with_rows(&format!(
            "{}helm_value = \"images.sidecar.attacher\"\n",
            row("a", "a:1", "v1.16+", "{ min = \"1.16\" }")
        ));
        assert!(parse_release(&good, Origin::BuiltIn("test.toml")).is_ok());
        let names = "must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or \
                     digit, without '..'";
        let helm =
            "must be images.KEY or images.GROUP.KEY, each a name of letters, digits, '_' or \
                    '-' starting with a letter";
        for (from, to, message) in [
            (
                "release = \"1.0\"",
                "release = \"1.0..2.0\"",
                "release '1.0..2.0' must be a version (e.g. 4.8.0): 1 to 64 letters, digits, '.', \
                 '_', '-' or '+', starting with a digit, without '..'"
                    .to_string(),
            ),
            (
                "catalog = \"x\"",
                "catalog = \"x/y\"",
                format!("catalog name 'x/y' {names}"),
            ),
            (
                "catalog = \"x\"",
                "catalog = \"..\"",
                format!("catalog name '..' {names}"),
            ),
            (
                "short = \"s\"",
                "short = \"../s\"",
                format!("service short name '../s' {names}"),
            ),
            (
                "container = \"a\"",
                "container = \"a\\u001b[2J\"",
                format!("image 'a:1' (a\\u{{1b}}[2J): container name 'a\\u{{1b}}[2J' {names}"),
            ),
            (
                "title = \"t\"",
                "title = \"t\\u001b]0;owned\\u0007\"",
                "title 't\\u{1b}]0;owned\\u{7}' holds control characters".to_string(),
            ),
            (
                "images.sidecar.attacher",
                "images.sidecar.attacher\\nsecurityContext:\\n  privileged: true",
                format!(
                    "image 'a:1' (a): helm_value 'images.sidecar.attacher\\nsecurityContext:\\n  \
                     privileged: true' {helm}"
                ),
            ),
            (
                "images.sidecar.attacher",
                "images.a.b.c",
                format!("image 'a:1' (a): helm_value 'images.a.b.c' {helm}"),
            ),
            (
                "images.sidecar.attacher",
                "values.attacher",
                format!("image 'a:1' (a): helm_value 'values.attacher' {helm}"),
            ),
        ] {
            assert!(good.contains(from), "{from}");
            let text = good.replacen(from, to, 1);
            assert_eq!(
                load_err(&text),
                format!("built-in manifests/test.toml: {message}"),
                "{to}"
            );
        }
        let both = release_with_rows(&format!(
            "{}helm_value = \"images.sidecar\"\n{}helm_value = \"images.sidecar.attacher\"\n",
            row("a", "a:1", "v1.16+", "{ min = \"1.16\" }"),
            row("b", "b:1", "v1.16+", "{ min = \"1.16\" }")
        ));
        assert_eq!(
            load_err(&both),
            "built-in manifests/test.toml: helm_value 'images.sidecar' is also the group of \
             'images.sidecar.attacher': a Helm value cannot be both"
        );
    }

    #[test]
    fn a_toml_error_names_where_it_is_without_echoing_the_line() {
        let text = format!("catalog = \"{}", "x".repeat(800_000));
        assert_eq!(
            load_err(&text),
            "built-in manifests/test.toml: not a valid catalog: line 1, column 800012: invalid \
             basic string, expected `\"` (at the end of the line)"
        );
    }

    #[test]
    fn bad_references_and_unknown_fields_are_refused() {
        let text = release_with_rows(&row("a", "Bad:Ref:", "v1.16+", "{ min = \"1.16\" }"));
        assert!(load_err(&text).contains("invalid image reference"));
        let text = release_with_rows(&format!(
            "{}colour = \"red\"\n",
            row("a", "a:1", "v1.16+", "{ min = \"1.16\" }")
        ));
        assert!(load_err(&text).contains("colour"));
    }
}
