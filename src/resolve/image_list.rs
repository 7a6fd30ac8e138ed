//! Image list files (`--images-from`): one reference per line, as `kubeadm config images list` prints them
//! or as `helm template … | grep image:` leaves them (`image: "repo/x:1"`, `- image: repo/x@sha256:…`).
//! Blank lines and `#` comments are skipped; any other line that names no valid reference is refused with
//! its number, before anything is fetched.

use super::input::Source;
use crate::reference::{Reference, ReferenceError};

/// Far more than any real list (a 4 MiB list names some 40,000 images).
pub const MAX_LIST_FILE: u64 = 4 << 20;

/// One reference and the line that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedImage {
    pub reference: Reference,
    /// 1-based.
    pub line: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("cannot read image list {input}")]
    Read {
        input: Source,
        #[source]
        cause: std::io::Error,
    },
    #[error("{input} line {line}: '{text}' is not an image reference: {}", .reason.reason)]
    BadLine {
        input: Source,
        line: usize,
        /// The line as written (cut when long).
        text: String,
        reason: ReferenceError,
    },
}

/// Reads and parses the list `source` names.
pub fn read_list(source: &Source) -> Result<Vec<ListedImage>, ListError> {
    let text = source
        .read_text(MAX_LIST_FILE)
        .map_err(|cause| ListError::Read {
            input: source.clone(),
            cause,
        })?;
    parse_list(&text, source)
}

/// The references of a list's text, in order, each with its line.
pub fn parse_list(text: &str, source: &Source) -> Result<Vec<ListedImage>, ListError> {
    let mut images = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let Some(reference) = reference_text(line) else {
            continue;
        };
        let reference = reference.parse().map_err(|reason| ListError::BadLine {
            input: source.clone(),
            line: index + 1,
            text: shown(line.trim()),
            reason,
        })?;
        images.push(ListedImage {
            reference,
            line: index + 1,
        });
    }
    Ok(images)
}

/// The reference a line names, with what `grep image:` over YAML or JSON leaves around it taken off;
/// `None` for a blank or comment line.
fn reference_text(line: &str) -> Option<&str> {
    let mut text = line.trim();
    // A comment starts at a `#` after a blank, as in YAML; no reference holds a `#`.
    if let Some(at) = text.find(" #").or_else(|| text.find("\t#")) {
        text = text[..at].trim_end();
    }
    if text.is_empty() || text.starts_with('#') {
        return None;
    }
    if let Some(rest) = text.strip_prefix("- ") {
        text = rest.trim_start();
    }
    for key in ["image:", "\"image\":", "'image':"] {
        if let Some(rest) = text.strip_prefix(key) {
            if rest.is_empty() || rest.starts_with([' ', '\t']) {
                text = rest.trim();
                break;
            }
        }
    }
    text = text.strip_suffix(',').unwrap_or(text).trim_end();
    for quote in ['"', '\''] {
        if let Some(inner) = text
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            text = inner;
        }
    }
    Some(text)
}

/// A line as an error message shows it: whole when short, cut otherwise.
fn shown(line: &str) -> String {
    match line.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &line[..at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(text: &str) -> Vec<(usize, String)> {
        parse_list(text, &Source::File("list.txt".into()))
            .unwrap()
            .into_iter()
            .map(|i| (i.line, i.reference.to_string()))
            .collect()
    }

    /// What `kubeadm config images list --kubernetes-version v1.28.3` prints, verbatim.
    #[test]
    fn kubeadm_output_as_printed() {
        let kubeadm = "registry.k8s.io/kube-apiserver:v1.28.3\n\
                       registry.k8s.io/kube-controller-manager:v1.28.3\n\
                       registry.k8s.io/kube-scheduler:v1.28.3\n\
                       registry.k8s.io/kube-proxy:v1.28.3\n\
                       registry.k8s.io/pause:3.9\n\
                       registry.k8s.io/etcd:3.5.9-0\n\
                       registry.k8s.io/coredns/coredns:v1.10.1\n";
        let images = listed(kubeadm);
        assert_eq!(images.len(), 7);
        assert_eq!(
            images[6],
            (7, "registry.k8s.io/coredns/coredns:v1.10.1".to_string())
        );
        assert_eq!(listed(&kubeadm.replace('\n', "\r\n")), images);
    }

    /// `helm template … | grep image:` and `kubectl get -o json | grep '"image"'` lines, comments and blanks.
    #[test]
    fn grep_lines_comments_and_quotes() {
        let text = "# the CNI, from helm template calico | grep image:\n\
                    \n\
                    \x20         image: docker.io/calico/cni:v3.26.4\n\
                    \x20       - image: \"docker.io/calico/node:v3.26.4\"   # pinned\n\
                    \x20   image: 'quay.io/tigera/operator@sha256:4e1e4fc5d8fcbd5c1e4f8a8e9f4bbf4d0e2bd9c0b1c7e4f0e2e3a6c9c1b2d3e4'\n\
                    \x20 \"image\": \"registry.k8s.io/pause:3.9\",\n\
                    - nginx\n\
                    \timage:\tbusybox:1.36\n";
        assert_eq!(
            listed(text),
            [
                (3, "docker.io/calico/cni:v3.26.4".to_string()),
                (4, "docker.io/calico/node:v3.26.4".to_string()),
                (
                    5,
                    "quay.io/tigera/operator@sha256:4e1e4fc5d8fcbd5c1e4f8a8e9f4bbf4d0e2bd9c0b1c7e4f0e2e3a6c9c1b2d3e4"
                        .to_string()
                ),
                (6, "registry.k8s.io/pause:3.9".to_string()),
                (7, "docker.io/library/nginx:latest".to_string()),
                (8, "docker.io/library/busybox:1.36".to_string()),
            ]
        );
        // A repository named `image` is a reference, not a key.
        assert_eq!(
            listed("image:1.0"),
            [(1, "docker.io/library/image:1.0".to_string())]
        );
    }

    #[test]
    fn a_bad_line_is_refused_with_its_number() {
        let source = Source::File("lists/cni.txt".into());
        let text = "docker.io/calico/cni:v3.26.4\n\n    image: \"{{ .Values.image }}\"\n";
        let error = parse_list(text, &source).unwrap_err().to_string();
        assert_eq!(
            error,
            "lists/cni.txt line 3: 'image: \"{{ .Values.image }}\"' is not an image reference: \
             repository path components must be lowercase [a-z0-9] separated by . _ __ or -"
        );
        let error = parse_list("image: \"\"\n", &source)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "lists/cni.txt line 1: 'image: \"\"' is not an image reference: it is empty or has surrounding spaces"
        );
        let error = parse_list("ok:1\nName: Foo\n", &Source::Stdin)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "standard input line 2: 'Name: Foo' is not an image reference: the tag must be 1-128 of \
             [A-Za-z0-9_.-], not starting with . or -"
        );
    }
}
