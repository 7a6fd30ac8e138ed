//! Images from rendered Kubernetes manifests (`--images-from-manifests`): YAML or JSON, many documents per
//! file, `List` kinds, as `helm template`, `kustomize build` and `kubectl get -o yaml` write them. Every
//! container, init container and ephemeral container of the workload kinds below is read, each with the
//! object it came from. Objects of other kinds are passed over and counted, never searched for strings
//! that look like images.

mod yaml;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::Serialize;

use super::input::Source;
use crate::reference::{Reference, ReferenceError};
use yaml::{Limits, Node, Paths, Reader, YamlError};

/// Far more than `helm template` of any chart; a larger file is not a set of manifests.
pub const MAX_MANIFEST_FILE: u64 = 256 << 20;
/// Containers read across all manifests: a `kubectl get pods -A -o yaml` of 30,000 pods.
pub const MAX_CONTAINERS: usize = 100_000;
/// Kinds counted one by one among the objects passed over; more are counted together.
const MAX_KINDS: usize = 100;

/// The kinds whose pod template ferry reads, the API groups they are served in, and where they keep it.
const WORKLOADS: &[(&str, &[&str], &[&str])] = &[
    ("Pod", &[""], &["spec"]),
    ("ReplicationController", &[""], TEMPLATE),
    ("Deployment", &["apps", "extensions"], TEMPLATE),
    ("DaemonSet", &["apps", "extensions"], TEMPLATE),
    ("ReplicaSet", &["apps", "extensions"], TEMPLATE),
    ("StatefulSet", &["apps"], TEMPLATE),
    ("Job", &["batch"], TEMPLATE),
    (
        "CronJob",
        &["batch"],
        &["spec", "jobTemplate", "spec", "template", "spec"],
    ),
];
const TEMPLATE: &[&str] = &["spec", "template", "spec"];

/// A pod spec's container lists, in the order the kubelet starts them.
const CONTAINER_LISTS: [(&str, ContainerRole); 3] = [
    ("initContainers", ContainerRole::InitContainer),
    ("containers", ContainerRole::Container),
    ("ephemeralContainers", ContainerRole::EphemeralContainer),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerRole {
    Container,
    InitContainer,
    EphemeralContainer,
}

impl fmt::Display for ContainerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ContainerRole::Container => "container",
            ContainerRole::InitContainer => "init container",
            ContainerRole::EphemeralContainer => "ephemeral container",
        })
    }
}

/// The object an image came from: `Deployment kube-system/coredns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Object {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.namespace, &self.name) {
            (Some(namespace), Some(name)) => write!(f, "{} {namespace}/{name}", self.kind),
            (None, Some(name)) => write!(f, "{} {name}", self.kind),
            (_, None) => write!(f, "{} (unnamed)", self.kind),
        }
    }
}

/// One container's image, and where it was written.
#[derive(Debug, Clone)]
pub struct ManifestImage {
    pub reference: Reference,
    pub object: Object,
    pub container: String,
    pub role: ContainerRole,
    pub input: Source,
    /// 1-based, in its file.
    pub document: usize,
    /// Of the image, 1-based.
    pub line: usize,
}

/// What reading manifests found.
#[derive(Debug, Default)]
pub struct Scan {
    pub images: Vec<ManifestImage>,
    pub passed_over: PassedOver,
}

/// What reading manifests passed over, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PassedOver {
    /// Objects of other kinds, by kind (`ConfigMap`, or `Deployment (apps.example.com/v1)` for a kind of
    /// another API group).
    pub objects: BTreeMap<String, usize>,
    /// Files in the folders given that are not named `*.yaml`, `*.yml` or `*.json`.
    pub files: usize,
}

impl PassedOver {
    fn object(&mut self, kind: String, count: usize) {
        let kind = if self.objects.len() >= MAX_KINDS && !self.objects.contains_key(&kind) {
            "(other kinds)".to_string()
        } else {
            kind
        };
        *self.objects.entry(kind).or_default() += count;
    }

    fn add(&mut self, other: PassedOver) {
        for (kind, count) in other.objects {
            self.object(kind, count);
        }
        self.files += other.files;
    }

    /// `passed over 12 objects of other kinds: ConfigMap 5, Service 4, ServiceAccount 3`, the most
    /// frequent first; `None` when nothing was.
    pub fn note(&self) -> Option<String> {
        let total: usize = self.objects.values().sum();
        let mut kinds: Vec<(&String, &usize)> = self.objects.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let mut notes = Vec::new();
        if total > 0 {
            let counts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
            notes.push(format!(
                "passed over {total} object{} of other kinds: {}",
                if total == 1 { "" } else { "s" },
                counts.join(", ")
            ));
        }
        if self.files > 0 {
            notes.push(format!(
                "passed over {} file{} not named *.yaml, *.yml or *.json",
                self.files,
                if self.files == 1 { "" } else { "s" }
            ));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    }
}

/// What is wrong with a container's image.
#[derive(Debug, thiserror::Error)]
pub enum ImageProblem {
    #[error(" has no image")]
    Missing,
    #[error(": {0}")]
    Invalid(ReferenceError),
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}", .path.display())]
    Walk {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("cannot read manifests {input}")]
    Read {
        input: Source,
        #[source]
        cause: std::io::Error,
    },
    #[error("{input} {error}")]
    Yaml { input: Source, error: YamlError },
    #[error("{input} document {document}, line {line}: {object} {role} {container}{problem}")]
    Container {
        input: Source,
        document: usize,
        line: usize,
        object: Object,
        role: ContainerRole,
        container: String,
        problem: ImageProblem,
    },
    #[error(
        "{input} document {document}, line {line}: {object} has no containers in {path}; \
         give ferry complete manifests (helm template, kustomize build), not patches"
    )]
    NoContainers {
        input: Source,
        document: usize,
        line: usize,
        object: Object,
        path: String,
    },
    #[error("{input}: the manifests read so far have more than {MAX_CONTAINERS} containers")]
    TooManyContainers { input: Source },
}

/// Reads every manifest `paths` name: files, folders (every `*.yaml`, `*.yml` and `*.json` in them, at any
/// depth, in name order; hidden ones and symlinked folders left out), or `-` for standard input.
pub fn scan_paths(paths: &[PathBuf]) -> Result<Scan, ManifestError> {
    let mut scan = Scan::default();
    for path in paths {
        let source = Source::from_arg(path);
        let walk_error = |cause| ManifestError::Walk {
            path: path.clone(),
            cause,
        };
        let is_dir = match &source {
            Source::Stdin => false,
            Source::File(path) => std::fs::metadata(path).map_err(walk_error)?.is_dir(),
        };
        if !is_dir {
            scan_source(&source, &mut scan)?;
            continue;
        }
        let (files, others) = files_in(path)?;
        scan.passed_over.files += others;
        for file in files {
            scan_source(&Source::File(file), &mut scan)?;
        }
    }
    Ok(scan)
}

/// The manifest files under `dir`, sorted, and how many other files it holds.
fn files_in(dir: &Path) -> Result<(Vec<PathBuf>, usize), ManifestError> {
    let mut files = Vec::new();
    let mut others = 0;
    let mut folders = vec![dir.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let walk_error = |cause| ManifestError::Walk {
            path: folder.clone(),
            cause,
        };
        for entry in std::fs::read_dir(&folder).map_err(walk_error)? {
            let entry = entry.map_err(walk_error)?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().map_err(walk_error)?;
            if file_type.is_dir() {
                folders.push(path);
            } else if !(file_type.is_file() || (file_type.is_symlink() && path.is_file())) {
                continue;
            } else if is_manifest_name(&path) {
                files.push(path);
            } else {
                others += 1;
            }
        }
    }
    files.sort();
    Ok((files, others))
}

fn is_manifest_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| ["yaml", "yml", "json"].contains(&e.to_ascii_lowercase().as_str()))
}

/// Reads one file (or standard input) into `scan`.
pub fn scan_source(source: &Source, scan: &mut Scan) -> Result<(), ManifestError> {
    let input = source
        .open(MAX_MANIFEST_FILE)
        .map_err(|cause| ManifestError::Read {
            input: source.clone(),
            cause,
        })?;
    scan_reader(input, source, scan)
}

/// Reads the manifests of `input` (named `source` in messages) into `scan`.
pub fn scan_reader(
    input: impl std::io::Read + 'static,
    source: &Source,
    scan: &mut Scan,
) -> Result<(), ManifestError> {
    let mut reader = Reader::new(input, At::Document, Limits::MANIFESTS);
    // A List's items come before its `kind` (kubectl writes keys in order): they count once the
    // document turns out to be a List. Until then their findings, or first failure, wait here.
    let mut items = Scan::default();
    let mut item_error = None;
    loop {
        let unit = reader.next_unit().map_err(|error| ManifestError::Yaml {
            input: source.clone(),
            error,
        })?;
        let Some(unit) = unit else {
            return Ok(());
        };
        let place = Place {
            input: source,
            document: unit.document,
            found_before: scan.images.len(),
        };
        if unit.at == At::Item {
            if item_error.is_none() {
                item_error = read_object(&unit.node, place, &mut items).err();
            }
            continue;
        }
        if kind_of(&unit.node).is_some_and(|kind| kind == "List" || kind.ends_with("List")) {
            if let Some(error) = item_error.take() {
                return Err(error);
            }
            let items = std::mem::take(&mut items);
            scan.images.extend(items.images);
            scan.passed_over.add(items.passed_over);
        } else {
            items = Scan::default();
            item_error = None;
            read_object(
                &unit.node,
                Place {
                    found_before: 0,
                    ..place
                },
                scan,
            )?;
        }
    }
}

#[derive(Clone, Copy)]
struct Place<'a> {
    input: &'a Source,
    document: usize,
    /// Containers found already, besides those in the scan read into.
    found_before: usize,
}

fn kind_of(node: &Node) -> Option<&str> {
    node.get("kind").and_then(Node::text)
}

/// Reads one object: its images if it is a workload, else a count under its kind.
fn read_object(node: &Node, place: Place, scan: &mut Scan) -> Result<(), ManifestError> {
    if node.is_null() {
        return Ok(()); // an empty document: helm writes one for a template that renders nothing
    }
    if !matches!(node, Node::Mapping { .. }) {
        scan.passed_over.object("(not an object)".into(), 1);
        return Ok(());
    }
    let Some(kind) = kind_of(node) else {
        scan.passed_over.object("(no kind)".into(), 1);
        return Ok(());
    };
    let api_version = node.get("apiVersion").and_then(Node::text).unwrap_or("");
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let Some((_, _, template)) = WORKLOADS.iter().find(|(k, _, _)| *k == kind) else {
        scan.passed_over.object(kind.to_string(), 1);
        return Ok(());
    };
    let served = WORKLOADS
        .iter()
        .any(|(k, groups, _)| *k == kind && groups.contains(&group));
    if !served || api_version.is_empty() {
        scan.passed_over
            .object(format!("{kind} ({api_version})"), 1);
        return Ok(());
    }
    let metadata = |key| node.at(&["metadata", key]).and_then(Node::text);
    let object = Object {
        kind: kind.to_string(),
        namespace: metadata("namespace").map(str::to_string),
        name: metadata("name").map(str::to_string),
    };
    let pod_spec = node.at(template);
    let mut containers = 0;
    for (list, role) in CONTAINER_LISTS {
        let Some(list) = pod_spec.and_then(|spec| spec.get(list)) else {
            continue;
        };
        for (index, container) in list.items().iter().enumerate() {
            containers += 1;
            if place.found_before + scan.images.len() >= MAX_CONTAINERS {
                return Err(ManifestError::TooManyContainers {
                    input: place.input.clone(),
                });
            }
            scan.images
                .push(read_container(container, index, role, &object, place)?);
        }
    }
    if containers == 0 {
        return Err(ManifestError::NoContainers {
            input: place.input.clone(),
            document: place.document,
            line: node.line(),
            object,
            path: format!("{}.containers", template.join(".")),
        });
    }
    Ok(())
}

fn read_container(
    container: &Rc<Node>,
    index: usize,
    role: ContainerRole,
    object: &Object,
    place: Place,
) -> Result<ManifestImage, ManifestError> {
    let name = container
        .get("name")
        .and_then(Node::text)
        .map_or_else(|| format!("#{}", index + 1), str::to_string);
    let image = container.get("image");
    let line = image.map_or(container.line(), Node::line);
    let failed = |problem| ManifestError::Container {
        input: place.input.clone(),
        document: place.document,
        line,
        object: object.clone(),
        role,
        container: name.clone(),
        problem,
    };
    let text = image
        .and_then(Node::text)
        .filter(|text| !text.is_empty())
        .ok_or_else(|| failed(ImageProblem::Missing))?;
    let reference = text
        .parse()
        .map_err(|reason| failed(ImageProblem::Invalid(reason)))?;
    Ok(ManifestImage {
        reference,
        object: object.clone(),
        container: name,
        role,
        input: place.input.clone(),
        document: place.document,
        line,
    })
}

/// The paths of a Kubernetes object that lead to its containers' names and images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// A document's top: an object, or a List of them.
    Document,
    /// An item of a List.
    Item,
    Items,
    Metadata,
    /// An object's `spec`: a Pod's pod spec, or a workload's spec with a template.
    Spec,
    Template,
    JobTemplate,
    PodSpec,
    Containers,
    Container,
    /// A value read whole: a kind, name or image.
    Leaf,
}

impl Paths for At {
    fn key(self, key: &str) -> Option<At> {
        Some(match (self, key) {
            (At::Document | At::Item, "kind" | "apiVersion") => At::Leaf,
            (At::Document | At::Item, "metadata") => At::Metadata,
            (At::Document | At::Item, "spec") => At::Spec,
            (At::Document, "items") => At::Items,
            (At::Metadata, "name" | "namespace") => At::Leaf,
            (At::Spec, "template") => At::Template,
            (At::Spec, "jobTemplate") => At::JobTemplate,
            // A Job's template is the CronJob's jobTemplate.spec.template.
            (At::Template, "spec") => At::PodSpec,
            (At::JobTemplate, "spec") => At::Spec,
            (At::Spec | At::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                At::Containers
            }
            (At::Container, "name" | "image") => At::Leaf,
            _ => return None,
        })
    }

    fn item(self) -> Option<At> {
        match self {
            At::Items => Some(At::Item),
            At::Containers => Some(At::Container),
            _ => None,
        }
    }

    fn is_unit(self) -> bool {
        matches!(self, At::Document | At::Item)
    }
}

#[cfg(test)]
mod tests;
