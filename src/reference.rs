//! Image references, normalized the way Docker does, so that every name ferry writes is the one
//! kubelet and containerd will ask for: `huawei-csi:4.8.0` is `docker.io/library/huawei-csi:4.8.0`.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image reference: registry, repository path, and a tag and/or a digest.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{reference}': {reason}")]
pub struct ReferenceError {
    pub reference: String,
    pub reason: &'static str,
}

impl Reference {
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry, e.g. `sig-storage/csi-provisioner` or `library/huawei-csi`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// The same image in another registry, under another repository path.
    pub fn relocated(&self, registry: &str, repository: String) -> Reference {
        Reference {
            registry: registry.to_string(),
            repository,
            ..self.clone()
        }
    }

    /// The same repository and tag, pinned to `digest`.
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository's manifest `digest`, without a tag: where a registry keeps one platform's
    /// manifest that an index under the tag lists.
    pub fn by_digest(&self, digest: Digest) -> Reference {
        Reference {
            tag: None,
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same reference without its digest when it has a tag (`x:v1@sha256:…` → `x:v1`); a digest-only
    /// reference stays as it is.
    pub fn by_tag_if_tagged(&self) -> Reference {
        match self.tag {
            Some(_) => Reference {
                digest: None,
                ..self.clone()
            },
            None => self.clone(),
        }
    }

    /// `registry/repository:tag` — the name a loader files the image under. Digest-only references
    /// have no such name.
    pub fn tagged_name(&self) -> Option<String> {
        self.tag
            .as_ref()
            .map(|tag| format!("{}/{}:{tag}", self.registry, self.repository))
    }
}

/// Docker's longest repository name, registry included.
const MAX_NAME: usize = 255;

/// The reference as an error message shows it: whole when short, cut otherwise.
fn shown(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ReferenceError {
            reference: shown(text),
            reason,
        };
        // Docker's limits: a name of 255 characters, a tag of 128, and `@sha256:` with 64 hex digits.
        if text.len() > MAX_NAME + 1 + 128 + 72 {
            return Err(fail("it is longer than any valid reference"));
        }
        if text.is_empty() || text.trim() != text {
            return Err(fail("it is empty or has surrounding spaces"));
        }
        let (rest, digest) = match text.split_once('@') {
            Some((rest, digest)) => (
                rest,
                Some(
                    digest
                        .parse::<Digest>()
                        .map_err(|_| fail("the digest is not sha256:<64 hex>"))?,
                ),
            ),
            None => (text, None),
        };
        // A tag's colon comes after the last slash; an earlier colon belongs to a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            if !valid_tag(tag) {
                return Err(fail(
                    "the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -",
                ));
            }
        }
        if name.len() > MAX_NAME {
            return Err(fail("the name must be at most 255 characters, as Docker's"));
        }
        let (registry, repository) = split_registry(name);
        if !is_valid_host(registry) {
            return Err(fail(
                "the registry must be HOST[:PORT]: a DNS name (letters, digits and inner '-', joined by \
                 '.') or an [IPv6] address, then an optional port",
            ));
        }
        let registry = if registry == "index.docker.io" {
            DOCKER_HUB
        } else {
            registry
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_string()
        };
        if !repository.split('/').all(valid_path_component) {
            return Err(fail(
                "repository path components must be lowercase [a-z0-9] separated by . _ __ or -",
            ));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(Reference {
            registry: registry.to_string(),
            repository,
            tag,
            digest,
        })
    }
}

/// Splits `name` into registry and path; the first component is a registry only when it looks like a
/// host (has a `.` or `:`, or is `localhost`), exactly Docker's rule.
fn split_registry(name: &str) -> (&str, &str) {
    match name.split_once('/') {
        Some((first, rest)) if first.contains(['.', ':']) || first == "localhost" => (first, rest),
        _ => (DOCKER_HUB, name),
    }
}

/// Whether `text` is a registry `HOST[:PORT]` by the distribution reference grammar: DNS labels of
/// letters, digits and inner `-`, joined by `.`, or an IPv6 address in brackets; then an optional port.
/// Image references, `--to`, `--mirror` and `--vendor-registry` all hold their hosts to this rule, so a
/// name no URL can hold (`ba$d.io`) is bad input, refused before any request.
pub fn is_valid_host(text: &str) -> bool {
    // The port follows the last ':' outside brackets.
    let after_host = text.rfind(']').map_or(0, |end| end + 1);
    let (host, port) = match text[after_host..].rfind(':') {
        Some(at) => (&text[..after_host + at], Some(&text[after_host + at + 1..])),
        None => (text, None),
    };
    let label = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => !ipv6.is_empty() && ipv6.chars().all(|c| c.is_ascii_hexdigit() || c == ':'),
        None => host.split('.').all(label),
    };
    let port_ok = port.is_none_or(|port| {
        !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) && port.parse::<u16>().is_ok()
    });
    host_ok && port_ok
}

fn valid_tag(tag: &str) -> bool {
    let mut chars = tag.chars();
    tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_path_component(component: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let bytes: Vec<char> = component.chars().collect();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    // Separators are one `.`, one or two `_`, or any run of `-`, always between alphanumerics.
    component
        .split(|c: char| alnum(c))
        .all(|sep| matches!(sep, "" | "." | "_" | "__") || sep.chars().all(|c| c == '-'))
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

serde_as_string!(Reference);

#[cfg(test)]
mod tests {
    use super::*;

    fn normalized(text: &str) -> String {
        text.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn normalizes_like_docker() {
        for (input, expected) in [
            ("huawei-csi:4.8.0", "docker.io/library/huawei-csi:4.8.0"),
            ("busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/library/busybox:1",
                "docker.io/library/busybox:1",
            ),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
            (
                "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
                "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
            ),
            ("localhost/foo", "localhost/foo:latest"),
            ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000/a/b:c"),
            (
                "quay.io/k8scsi/csi-attacher:v1.2.1",
                "quay.io/k8scsi/csi-attacher:v1.2.1",
            ),
        ] {
            assert_eq!(normalized(input), expected, "{input}");
        }
    }

    #[test]
    fn keeps_tag_and_digest() {
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let both: Reference = format!("quay.io/a/b:v1@{digest}").parse().unwrap();
        assert_eq!(both.tag(), Some("v1"));
        assert_eq!(both.digest().unwrap().to_string(), digest);
        let pinned: Reference = format!("quay.io/a/b@{digest}").parse().unwrap();
        assert_eq!(
            pinned.tag(),
            None,
            "a digest reference gets no implicit latest"
        );
        assert_eq!(pinned.tagged_name(), None);
    }

    #[test]
    fn a_tagged_reference_can_drop_its_digest() {
        let digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let both: Reference = format!("quay.io/a/b:v1@{digest}").parse().unwrap();
        assert_eq!(both.by_tag_if_tagged().to_string(), "quay.io/a/b:v1");
        let pinned: Reference = format!("quay.io/a/b@{digest}").parse().unwrap();
        assert_eq!(pinned.by_tag_if_tagged(), pinned);
    }

    #[test]
    fn port_is_not_a_tag() {
        let reference: Reference = "127.0.0.1:5000/csi/livenessprobe".parse().unwrap();
        assert_eq!(reference.registry(), "127.0.0.1:5000");
        assert_eq!(reference.repository(), "csi/livenessprobe");
        assert_eq!(reference.tag(), Some("latest"));
    }

    #[test]
    fn refuses_malformed() {
        for text in [
            "",
            "UPPER/case",
            "a//b",
            "foo:",
            "foo:-bad",
            "foo@sha256:123",
            "a/b c",
            "-a/b",
            "a/b_",
        ] {
            assert!(
                text.parse::<Reference>().is_err(),
                "{text:?} should be refused"
            );
        }
    }

    #[test]
    fn a_registry_host_no_url_can_hold_is_refused_at_parse_time() {
        assert_eq!(
            "ba$d.io/a:1".parse::<Reference>().unwrap_err().to_string(),
            "invalid image reference 'ba$d.io/a:1': the registry must be HOST[:PORT]: a DNS name (letters, \
             digits and inner '-', joined by '.') or an [IPv6] address, then an optional port"
        );
        for bad in [
            "-a.io/x",
            "a..io/x",
            "a.io:/x",
            "a.io:99999/x",
            "a.io:+5/x",
            "a:b:c/x",
            "[]:5/x",
            "[::1/x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad}");
        }
        for good in [
            "[::1]:5000/a/b",
            "[fe80::1]/a",
            "My-Registry.local:443/a",
            "localhost:5000/a",
        ] {
            assert!(good.parse::<Reference>().is_ok(), "{good}");
        }
    }

    #[test]
    fn overlong_references_are_refused_and_shown_cut() {
        let long = format!("registry.k8s.io/{}:v1", "a".repeat(300));
        let error = long.parse::<Reference>().unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "invalid image reference '{}...': the name must be at most 255 characters, as Docker's",
                &long[..80]
            )
        );
        let huge = "a".repeat(1 << 20);
        assert_eq!(
            huge.parse::<Reference>().unwrap_err().reason,
            "it is longer than any valid reference"
        );
    }
}
