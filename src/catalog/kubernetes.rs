//! The `kubernetes` catalog: the seven images `kubeadm config images list` prints, for every Kubernetes
//! release. One compact file (`manifests/kubernetes.toml`: per minor, its .0 values and the patch releases
//! that changed one) is expanded here into one [`Release`] per patch version, so that everything else in
//! ferry treats `kubernetes@1.28.3` like any other product release.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

use super::{CatalogImage, ImageSource, Origin, Release, Service};
use crate::k8s::{KubeRange, KubeVersion};

/// The catalog's name, as users type it (`kubernetes@1.28.3`).
pub const CATALOG: &str = "kubernetes";

/// A Kubernetes release, `1.28.3`: what a `kubernetes` catalog release stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PatchVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl PatchVersion {
    /// The minor version, which every other catalog's rows are written against.
    pub fn minor_version(self) -> KubeVersion {
        KubeVersion::new(self.major, self.minor)
    }
}

impl FromStr for PatchVersion {
    type Err = ();

    /// Accepts `1.28.3` and `v1.28.3`; nothing else (a release name is not a cluster's version string).
    fn from_str(text: &str) -> Result<Self, ()> {
        let text = text.strip_prefix('v').unwrap_or(text);
        let numbers: Vec<u32> = text
            .split('.')
            .map(|part| match part.bytes().all(|b| b.is_ascii_digit()) {
                true => part.parse().map_err(|_| ()),
                false => Err(()),
            })
            .collect::<Result<_, _>>()?;
        match numbers[..] {
            [major, minor, patch] => Ok(PatchVersion {
                major,
                minor,
                patch,
            }),
            _ => Err(()),
        }
    }
}

impl fmt::Display for PatchVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What kubeadm of one release prints besides its own four control-plane images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub version: PatchVersion,
    pub registry: String,
    pub pause: String,
    pub etcd: String,
    /// Path and tag under the registry: `coredns:1.7.0` until 1.20, `coredns/coredns:v1.8.0` from 1.21.
    pub coredns: String,
}

impl Row {
    /// The seven references in the order kubeadm prints them.
    fn images(&self, version: PatchVersion) -> [(&'static str, String); 7] {
        let registry = &self.registry;
        let component = |name: &str| format!("{registry}/{name}:v{version}");
        [
            ("kube-apiserver", component("kube-apiserver")),
            (
                "kube-controller-manager",
                component("kube-controller-manager"),
            ),
            ("kube-scheduler", component("kube-scheduler")),
            ("kube-proxy", component("kube-proxy")),
            ("pause", format!("{registry}/pause:{}", self.pause)),
            ("etcd", format!("{registry}/etcd:{}", self.etcd)),
            ("coredns", format!("{registry}/{}", self.coredns)),
        ]
    }
}

/// Every release the file knows, oldest first.
#[derive(Debug, Clone)]
pub struct Table {
    title: String,
    origin: Origin,
    rows: Vec<Row>,
}

/// A `kubernetes@…` name resolved against the table.
pub enum Lookup {
    /// A release the table holds.
    Known(PatchVersion),
    /// A patch newer than the table knows for a known minor, made from that minor's newest row; its
    /// `assumed` says so.
    Assumed(Box<Release>),
}

#[derive(Debug, thiserror::Error)]
pub enum KubernetesError {
    #[error(
        "'{0}' is not a Kubernetes release: name one as kubernetes@1.28.3, or kubernetes@1.28 for the \
         newest 1.28 release this catalog knows"
    )]
    NotARelease(String),
    #[error(
        "kubernetes has no release {wanted}: this catalog knows Kubernetes {first} to {last} \
         (`ferry catalogs --all` lists every release)"
    )]
    UnknownMinor {
        wanted: String,
        first: PatchVersion,
        last: PatchVersion,
    },
    #[error(
        "kubernetes has no release {wanted}: of {minor} this catalog knows {known} (a tag whose kubeadm \
         was never published is left out)"
    )]
    UnknownPatch {
        wanted: PatchVersion,
        minor: KubeVersion,
        known: String,
    },
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    catalog: String,
    title: String,
    minor: Vec<Minor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Minor {
    minor: KubeVersion,
    /// The published patch releases, e.g. `0-9, 11-17`.
    patches: String,
    registry: String,
    pause: String,
    etcd: String,
    coredns: String,
    #[serde(default)]
    changes: Vec<Change>,
}

/// What one patch release changed, holding until the next change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    from: String,
    registry: Option<String>,
    pause: Option<String>,
    etcd: Option<String>,
    coredns: Option<String>,
}

impl Table {
    /// Parses and checks the file: minors in order, patch lists that parse, changes that fall on a listed
    /// patch of their own minor, in order, and change something.
    pub fn parse(text: &str, origin: Origin) -> Result<Table, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.catalog != CATALOG {
            return Err(format!(
                "catalog must be \"{CATALOG}\", not \"{}\"",
                file.catalog
            ));
        }
        let mut rows = Vec::new();
        for minor in &file.minor {
            let at = |message: String| format!("minor {}: {message}", minor.minor);
            if let Some(last) = rows.last().map(|r: &Row| r.version.minor_version()) {
                if minor.minor <= last {
                    return Err(at(format!("listed after {last}: minors must ascend")));
                }
            }
            let patches = parse_patches(&minor.patches).map_err(at)?;
            let mut current = Row {
                version: PatchVersion {
                    major: minor.minor.major,
                    minor: minor.minor.minor,
                    patch: 0,
                },
                registry: minor.registry.clone(),
                pause: minor.pause.clone(),
                etcd: minor.etcd.clone(),
                coredns: minor.coredns.clone(),
            };
            let mut changes = minor.changes.iter().peekable();
            let mut previous_change = None;
            for patch in patches {
                current.version.patch = patch;
                if let Some(change) = changes.peek() {
                    let from: PatchVersion = change.from.parse().map_err(|()| {
                        at(format!("change from '{}' is not a release", change.from))
                    })?;
                    if from.minor_version() != minor.minor || Some(from) <= previous_change {
                        return Err(at(format!(
                            "change from {from} is not a later release of this minor"
                        )));
                    }
                    if from.patch == patch {
                        let before = current.clone();
                        apply(&mut current, change);
                        if current == before {
                            return Err(at(format!("change from {from} changes nothing")));
                        }
                        previous_change = Some(from);
                        changes.next();
                    }
                }
                rows.push(current.clone());
            }
            if let Some(change) = changes.next() {
                return Err(at(format!(
                    "change from '{}' names no listed patch release",
                    change.from
                )));
            }
        }
        if rows.is_empty() {
            return Err("no releases".into());
        }
        Ok(Table {
            title: file.title,
            origin,
            rows,
        })
    }

    /// Every release the table knows, oldest first; each one's index is its row's, for
    /// [`Table::release_at`].
    pub fn versions(
        &self,
    ) -> impl DoubleEndedIterator<Item = PatchVersion> + ExactSizeIterator + '_ {
        self.rows.iter().map(|row| row.version)
    }

    /// The release of the `index`th row of [`Table::versions`].
    pub fn release_at(&self, index: usize) -> Release {
        let row = &self.rows[index];
        self.release(row, row.version, None)
    }

    /// Finds `wanted`: a known release, the newest of a minor (`1.28`), or a patch newer than the table
    /// knows for a known minor (made from that minor's newest row, with a warning).
    pub fn lookup(&self, wanted: &str) -> Result<Lookup, KubernetesError> {
        let unprefixed = wanted.strip_prefix('v').unwrap_or(wanted);
        let (minor, patch) = match unprefixed.parse::<PatchVersion>() {
            Ok(version) => (version.minor_version(), Some(version)),
            Err(()) => match unprefixed.matches('.').count() {
                1 => (
                    unprefixed
                        .parse::<KubeVersion>()
                        .map_err(|_| KubernetesError::NotARelease(wanted.to_string()))?,
                    None,
                ),
                _ => return Err(KubernetesError::NotARelease(wanted.to_string())),
            },
        };
        let of_minor: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.version.minor_version() == minor)
            .collect();
        let Some(newest) = of_minor.last() else {
            return Err(KubernetesError::UnknownMinor {
                wanted: unprefixed.to_string(),
                first: self.rows[0].version,
                last: self.rows[self.rows.len() - 1].version,
            });
        };
        let Some(patch) = patch else {
            return Ok(Lookup::Known(newest.version));
        };
        if of_minor.iter().any(|r| r.version == patch) {
            return Ok(Lookup::Known(patch));
        }
        if patch < newest.version {
            return Err(KubernetesError::UnknownPatch {
                wanted: patch,
                minor,
                known: describe_patches(&of_minor),
            });
        }
        let images = newest.images(newest.version);
        let warning = format!(
            "kubernetes {patch} is newer than this catalog knows: its kube-apiserver, \
             kube-controller-manager, kube-scheduler and kube-proxy are tagged v{patch}, and pause, etcd \
             and coredns are assumed unchanged since {}, the newest {minor} release it knows ({}, {}, {})",
            newest.version, images[4].1, images[5].1, images[6].1
        );
        Ok(Lookup::Assumed(Box::new(self.release(
            newest,
            patch,
            Some(warning),
        ))))
    }

    fn release(&self, row: &Row, version: PatchVersion, assumed: Option<String>) -> Release {
        let minor = version.minor_version();
        let services = [("control-plane", "control-plane"), ("node", "node")];
        // A worker runs kube-proxy and pause, and may be given a coredns pod; the control plane runs all.
        let on_workers = ["kube-proxy", "pause", "coredns"];
        let images = row
            .images(version)
            .into_iter()
            .map(|(container, image)| CatalogImage {
                container: container.to_string(),
                image,
                kubernetes: format!("v{minor}"),
                kubernetes_range: KubeRange {
                    min: minor,
                    max: Some(minor),
                },
                services: std::iter::once("control-plane")
                    .chain(on_workers.contains(&container).then_some("node"))
                    .map(String::from)
                    .collect(),
                source: ImageSource::Registry,
                helm_value: None,
                description: String::new(),
                in_table: true,
            })
            .collect();
        Release {
            catalog: CATALOG.to_string(),
            release: version.to_string(),
            title: self.title.clone(),
            min_kubernetes: minor,
            newest_validated_kubernetes: None,
            services: services
                .iter()
                .map(|(name, short)| Service {
                    name: name.to_string(),
                    short: short.to_string(),
                })
                .collect(),
            images,
            origin: self.origin.clone(),
            kubernetes_release: Some(version),
            assumed,
        }
    }
}

fn apply(row: &mut Row, change: &Change) {
    for (field, value) in [
        (&mut row.registry, &change.registry),
        (&mut row.pause, &change.pause),
        (&mut row.etcd, &change.etcd),
        (&mut row.coredns, &change.coredns),
    ] {
        if let Some(value) = value {
            field.clone_from(value);
        }
    }
}

/// `0-9, 11-17` to the patch numbers, ascending.
fn parse_patches(text: &str) -> Result<Vec<u32>, String> {
    let bad = || format!("patches = '{text}' is not a list of spans like \"0-9, 11-17\"");
    let mut patches: Vec<u32> = Vec::new();
    for span in text.split(',') {
        let (low, high) = span
            .trim()
            .split_once('-')
            .unwrap_or((span.trim(), span.trim()));
        let low: u32 = low.parse().map_err(|_| bad())?;
        let high: u32 = high.parse().map_err(|_| bad())?;
        if high < low || patches.last().is_some_and(|&last| low <= last) {
            return Err(bad());
        }
        patches.extend(low..=high);
    }
    Ok(patches)
}

/// `1.18.0-1.18.6, 1.18.8-1.18.10 and 1.18.12-1.18.20`, for messages.
fn describe_patches(rows: &[&Row]) -> String {
    let mut spans: Vec<(PatchVersion, PatchVersion)> = Vec::new();
    for row in rows {
        match spans.last_mut() {
            Some((_, end)) if end.patch + 1 == row.version.patch => *end = row.version,
            _ => spans.push((row.version, row.version)),
        }
    }
    let spans: Vec<String> = spans
        .iter()
        .map(|(start, end)| match start == end {
            true => start.to_string(),
            false => format!("{start}-{end}"),
        })
        .collect();
    match spans.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => spans.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(minors: &str) -> Result<Table, String> {
        Table::parse(
            &format!("catalog = \"kubernetes\"\ntitle = \"t\"\n{minors}"),
            Origin::BuiltIn("test.toml"),
        )
    }

    const MINOR: &str = "[[minor]]\nminor = \"1.22\"\npatches = \"0-3, 5-6\"\nregistry = \"k8s.gcr.io\"\n\
                         pause = \"3.5\"\netcd = \"3.5.0-0\"\ncoredns = \"coredns/coredns:v1.8.4\"\n";

    #[test]
    fn changes_hold_from_their_patch_on() {
        let table = table(&format!(
            "{MINOR}changes = [{{ from = \"1.22.2\", etcd = \"3.5.1-0\" }}, \
             {{ from = \"1.22.5\", registry = \"registry.k8s.io\" }}]\n"
        ))
        .unwrap();
        let rows: Vec<(String, &str, &str)> = table
            .rows
            .iter()
            .map(|r| (r.version.to_string(), r.registry.as_str(), r.etcd.as_str()))
            .collect();
        assert_eq!(
            rows,
            [
                ("1.22.0".into(), "k8s.gcr.io", "3.5.0-0"),
                ("1.22.1".into(), "k8s.gcr.io", "3.5.0-0"),
                ("1.22.2".into(), "k8s.gcr.io", "3.5.1-0"),
                ("1.22.3".into(), "k8s.gcr.io", "3.5.1-0"),
                ("1.22.5".into(), "registry.k8s.io", "3.5.1-0"),
                ("1.22.6".into(), "registry.k8s.io", "3.5.1-0"),
            ]
        );
    }

    #[test]
    fn misplaced_or_empty_changes_are_refused() {
        for (changes, message) in [
            (
                "{ from = \"1.22.4\", etcd = \"x\" }",
                "minor 1.22: change from '1.22.4' names no listed patch release",
            ),
            (
                "{ from = \"1.23.1\", etcd = \"x\" }",
                "minor 1.22: change from 1.23.1 is not a later release of this minor",
            ),
            (
                "{ from = \"1.22.1\", etcd = \"3.5.0-0\" }",
                "minor 1.22: change from 1.22.1 changes nothing",
            ),
            (
                "{ from = \"1.22.x\", etcd = \"x\" }",
                "minor 1.22: change from '1.22.x' is not a release",
            ),
        ] {
            let err = table(&format!("{MINOR}changes = [{changes}]\n")).unwrap_err();
            assert_eq!(err, message);
        }
        let err = table(&MINOR.replace("0-3, 5-6", "0-3, 2-6")).unwrap_err();
        assert_eq!(
            err,
            "minor 1.22: patches = '0-3, 2-6' is not a list of spans like \"0-9, 11-17\""
        );
        let twice = format!("{MINOR}{MINOR}");
        assert_eq!(
            table(&twice).unwrap_err(),
            "minor 1.22: listed after 1.22: minors must ascend"
        );
    }

    #[test]
    fn release_names_parse_strictly() {
        assert_eq!(
            "v1.28.3".parse::<PatchVersion>().map(|v| v.to_string()),
            Ok("1.28.3".into())
        );
        for bad in ["1.28", "1.28.3.1", "1.28.x", "1.28.3+k3s1", "", "1..3"] {
            assert!(bad.parse::<PatchVersion>().is_err(), "{bad}");
        }
    }
}
