//! Where an image is fetched from: its own registry, a frozen registry's successor, or a `--mirror`; and
//! the registry settings pull and push share.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::retry::RetryPolicy;
use super::target::Mirror;
use crate::reference::Reference;

/// k8s.gcr.io is frozen; registry.k8s.io serves the same images with the same digests.
const FROZEN_REGISTRIES: &[(&str, &str)] = &[("k8s.gcr.io", "registry.k8s.io")];

/// Registry settings shared by pull and push.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    pub mirrors: Vec<Mirror>,
    /// Hosts reached over plain HTTP (loopback hosts may use it without being listed, as with Docker).
    pub insecure: Vec<String>,
    /// Extra CA certificates (PEM) trusted for every registry.
    pub ca_certs: Vec<PathBuf>,
    pub retry: RetryPolicy,
    /// Of the mirrors' registries, those some catalog release takes images from: a site's standing
    /// `--mirror` for one of them is no typo when this run's images do not need it.
    pub catalog_registries: BTreeSet<String>,
}

/// Where an upstream image is actually fetched from, and why, when that is not its own registry.
#[derive(Debug, Clone)]
pub struct Location {
    pub reference: Reference,
    pub notes: Vec<String>,
}

impl RegistryOptions {
    /// The `--mirror` options that no image of `upstreams` is fetched through and whose registry neither a
    /// catalog release nor a frozen registry's succession names: most likely typos, which would otherwise
    /// send the fetch to the real upstream without a word.
    pub fn misspelt_mirrors<'a>(
        &'a self,
        upstreams: impl IntoIterator<Item = &'a Reference>,
    ) -> Vec<&'a Mirror> {
        let used: Vec<&Mirror> = upstreams
            .into_iter()
            .filter_map(|upstream| self.route(upstream).1)
            .collect();
        let known = |registry: &str| {
            self.catalog_registries.contains(registry)
                || FROZEN_REGISTRIES
                    .iter()
                    .any(|(frozen, successor)| registry == *frozen || registry == *successor)
        };
        self.mirrors
            .iter()
            .filter(|m| !used.iter().any(|u| std::ptr::eq(*u, *m)) && !known(&m.from))
            .collect()
    }

    /// The registry an upstream image is fetched from (a frozen one's successor), and the mirror for it.
    fn route(&self, upstream: &Reference) -> (String, Option<&Mirror>) {
        let registry = upstream.registry().to_string();
        let mirror_for = |registry: &str| self.mirrors.iter().find(|m| m.from == registry);
        if let Some(mirror) = mirror_for(&registry) {
            return (registry, Some(mirror));
        }
        match FROZEN_REGISTRIES
            .iter()
            .find(|(frozen, _)| *frozen == registry)
        {
            Some((_, successor)) => (successor.to_string(), mirror_for(successor)),
            None => (registry, None),
        }
    }

    /// Maps an upstream reference to the place to fetch it: frozen registries to their successors (unless a
    /// mirror names them), then mirrors. The image keeps its upstream name everywhere else.
    pub fn locate(&self, upstream: &Reference) -> Location {
        let mut notes = Vec::new();
        let (registry, mirror) = self.route(upstream);
        if registry != upstream.registry() {
            notes.push(format!(
                "{} is frozen; fetching {upstream} from {registry}, which serves the same digests",
                upstream.registry()
            ));
        }
        let reference = match mirror {
            Some(mirror) => {
                let repository = match &mirror.to.prefix {
                    Some(prefix) => format!("{prefix}/{}", upstream.repository()),
                    None => upstream.repository().to_string(),
                };
                upstream.relocated(&mirror.to.host, repository)
            }
            None => upstream.relocated(&registry, upstream.repository().to_string()),
        };
        Location { reference, notes }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mirrors: &[&str]) -> RegistryOptions {
        RegistryOptions {
            mirrors: mirrors.iter().map(|m| m.parse().unwrap()).collect(),
            ..Default::default()
        }
    }

    fn locate(options: &RegistryOptions, image: &str) -> (String, usize) {
        let location = options.locate(&image.parse().unwrap());
        (location.reference.to_string(), location.notes.len())
    }

    #[test]
    fn mirrors_keep_the_repository_path_under_their_prefix() {
        let options = options(&["registry.k8s.io=127.0.0.1:5000/k8s", "quay.io=mirror.local"]);
        assert_eq!(
            locate(&options, "registry.k8s.io/sig-storage/csi-attacher:v4.4.0"),
            (
                "127.0.0.1:5000/k8s/sig-storage/csi-attacher:v4.4.0".into(),
                0
            )
        );
        assert_eq!(
            locate(&options, "quay.io/k8scsi/csi-attacher:v1.2.1"),
            ("mirror.local/k8scsi/csi-attacher:v1.2.1".into(), 0)
        );
        assert_eq!(
            locate(&options, "docker.io/library/busybox:1"),
            ("docker.io/library/busybox:1".into(), 0)
        );
    }

    #[test]
    fn frozen_k8s_gcr_io_is_fetched_from_its_successor_and_says_so() {
        assert_eq!(
            locate(&options(&[]), "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0"),
            ("registry.k8s.io/sig-storage/livenessprobe:v2.5.0".into(), 1)
        );
        let mirrored = options(&["registry.k8s.io=127.0.0.1:5000"]);
        assert_eq!(
            locate(&mirrored, "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0"),
            ("127.0.0.1:5000/sig-storage/livenessprobe:v2.5.0".into(), 1)
        );
        let explicit = options(&["k8s.gcr.io=127.0.0.1:5001"]);
        assert_eq!(
            locate(&explicit, "k8s.gcr.io/a/b:1"),
            ("127.0.0.1:5001/a/b:1".into(), 0)
        );
    }

    #[test]
    fn only_a_mirror_for_a_registry_no_catalog_uses_is_taken_for_a_typo() {
        let mut options = options(&[
            "registry.k8s.io=127.0.0.1:5000",
            "quay.io=127.0.0.1:5000",
            "k8s.gcr.io=127.0.0.1:5000",
            "regisry.k8s.io=127.0.0.1:5000",
            "harbor.local=127.0.0.1:5000",
        ]);
        options.catalog_registries = ["quay.io".to_string()].into();
        let images: Vec<Reference> = vec!["registry.k8s.io/a/b:1".parse().unwrap()];
        let misspelt: Vec<&str> = options
            .misspelt_mirrors(&images)
            .into_iter()
            .map(|m| m.from.as_str())
            .collect();
        assert_eq!(misspelt, ["regisry.k8s.io", "harbor.local"]);
    }
}
