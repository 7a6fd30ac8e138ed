//! Images named outside the catalogs (list files, rendered manifests, a site file's own references),
//! gathered once each with every place that named them: `ferry list` shows the places, and the plan
//! carries the images as it carries `--image` ones.

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Serialize;

use super::image_list::{read_list, ListError};
use super::input::Source;
use super::manifests::{scan_paths, ContainerRole, ManifestError, Object, PassedOver};
use super::site::Site;
use crate::reference::Reference;

/// Where an image was named.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Origin {
    /// A line of an image list file.
    List { file: String, line: usize },
    /// A container of a Kubernetes object.
    Manifest {
        file: String,
        document: usize,
        line: usize,
        #[serde(flatten)]
        object: Object,
        container: String,
        role: ContainerRole,
    },
    /// The `[images] extra` of a site file.
    Site { file: String, line: usize },
}

impl Origin {
    /// What named it: `listed`, `Deployment kube-system/coredns container coredns`, `the site file`.
    pub fn what(&self) -> String {
        match self {
            Origin::List { .. } => "listed".into(),
            Origin::Manifest {
                object,
                container,
                role,
                ..
            } => format!("{object} {role} {container}"),
            Origin::Site { .. } => "site file".into(),
        }
    }

    /// Where: `FILE:LINE`.
    pub fn place(&self) -> String {
        match self {
            Origin::List { file, line }
            | Origin::Manifest { file, line, .. }
            | Origin::Site { file, line } => format!("{file}:{line}"),
        }
    }
}

/// One image, and every place that named it, in the order read.
#[derive(Debug, Clone, Serialize)]
pub struct NamedImage {
    pub reference: Reference,
    pub origins: Vec<Origin>,
}

/// The images named outside the catalogs, each once, in the order first named.
#[derive(Debug, Default)]
pub struct NamedImages {
    pub images: Vec<NamedImage>,
    pub passed_over: PassedOver,
    index: HashMap<Reference, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum NamedError {
    #[error(transparent)]
    List(#[from] ListError),
    #[error(transparent)]
    Manifests(#[from] ManifestError),
    #[error("standard input (-) can be read once, and is named {0} times")]
    StdinTwice(usize),
}

impl NamedImages {
    /// Reads image lists and manifests (files, folders, or `-` for standard input, once).
    pub fn read(lists: &[PathBuf], manifests: &[PathBuf]) -> Result<NamedImages, NamedError> {
        let stdin = lists
            .iter()
            .chain(manifests)
            .filter(|p| Source::from_arg(p) == Source::Stdin)
            .count();
        if stdin > 1 {
            return Err(NamedError::StdinTwice(stdin));
        }
        let mut named = NamedImages::default();
        for path in lists {
            let source = Source::from_arg(path);
            for listed in read_list(&source)? {
                named.add(
                    listed.reference,
                    Origin::List {
                        file: source.to_string(),
                        line: listed.line,
                    },
                );
            }
        }
        let scan = scan_paths(manifests)?;
        for image in scan.images {
            named.add(
                image.reference,
                Origin::Manifest {
                    file: image.input.to_string(),
                    document: image.document,
                    line: image.line,
                    object: image.object,
                    container: image.container,
                    role: image.role,
                },
            );
        }
        named.passed_over = scan.passed_over;
        Ok(named)
    }

    /// What a site file names besides its products: its lists, manifests and references.
    pub fn read_site(site: &Site) -> Result<NamedImages, NamedError> {
        let mut named = NamedImages::read(&site.lists, &site.manifests)?;
        for image in &site.images {
            named.add(
                image.reference.clone(),
                Origin::Site {
                    file: site.path.display().to_string(),
                    line: image.line,
                },
            );
        }
        Ok(named)
    }

    fn add(&mut self, reference: Reference, origin: Origin) {
        match self.index.get(&reference) {
            Some(&at) => self.images[at].origins.push(origin),
            None => {
                self.index.insert(reference.clone(), self.images.len());
                self.images.push(NamedImage {
                    reference,
                    origins: vec![origin],
                });
            }
        }
    }

    /// The images, each once.
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.images.iter().map(|i| &i.reference)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_image_once_with_every_place_that_named_it() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("kubeadm.txt");
        std::fs::write(&list, "registry.k8s.io/pause:3.9\nbusybox:1.36\n").unwrap();
        let manifests = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/manifests/kubectl-pods.yaml");
        let named = NamedImages::read(
            std::slice::from_ref(&list),
            std::slice::from_ref(&manifests),
        )
        .unwrap();
        let shown: Vec<(String, Vec<String>)> = named
            .images
            .iter()
            .map(|i| {
                (
                    i.reference.to_string(),
                    i.origins
                        .iter()
                        .map(|o| format!("{} {}", o.what(), o.place().rsplit('/').next().unwrap()))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "registry.k8s.io/pause:3.9".to_string(),
                    vec!["listed kubeadm.txt:1".to_string()]
                ),
                (
                    "docker.io/library/busybox:1.36".to_string(),
                    vec![
                        "listed kubeadm.txt:2".to_string(),
                        "Pod shop/web-7d4b9c8f5-x2k9p ephemeral container debugger-8xk2q kubectl-pods.yaml:20"
                            .to_string()
                    ]
                ),
                (
                    "docker.io/library/nginx:1.25.3".to_string(),
                    vec!["Pod shop/web-7d4b9c8f5-x2k9p container nginx kubectl-pods.yaml:16".to_string()]
                ),
            ]
        );
        assert_eq!(
            named.passed_over.note().unwrap(),
            "passed over 1 object of other kinds: Service 1"
        );
        let json = serde_json::to_value(&named.images[2].origins[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "from": "manifest", "file": manifests.display().to_string(), "document": 1,
                "line": 16, "kind": "Pod", "namespace": "shop", "name": "web-7d4b9c8f5-x2k9p",
                "container": "nginx", "role": "container"
            })
        );
        let error = NamedImages::read(&["-".into()], &["-".into()]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "standard input (-) can be read once, and is named 2 times"
        );
    }
}
