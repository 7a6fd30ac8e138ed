//! Registries named on the command line: `--to` and `--vendor-registry` ([`Target`]), and `--mirror`
//! ([`Mirror`]); each host held to the rule image references use.

use super::error::RegistryError;
use crate::reference::{is_valid_host, Reference, DOCKER_HUB};

/// `--mirror FROM=HOST[:PORT][/PREFIX]`: fetch FROM's images from HOST, under PREFIX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub from: String,
    /// Where FROM's images are fetched instead, under their full upstream paths.
    pub to: Target,
}

impl std::str::FromStr for Mirror {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| RegistryError::BadMirror {
            text: text.to_string(),
            why,
        };
        let (from, to) = text
            .split_once('=')
            .ok_or_else(|| bad("there is no '='".into()))?;
        registry_host(from).map_err(bad)?;
        let (host, prefix) = host_and_prefix(to).map_err(bad)?;
        Ok(Mirror {
            from: from.to_string(),
            to: Target { host, prefix },
        })
    }
}

/// A private registry and path prefix that images go under by their upstream paths: `ferry push --to`
/// and `--vendor-registry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub prefix: Option<String>,
}

/// `HOST[:PORT][/PREFIX]`, as given.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.host)?;
        if let Some(prefix) = &self.prefix {
            write!(f, "/{prefix}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (host, prefix) = host_and_prefix(text)?;
        Ok(Target { host, prefix })
    }
}

impl Target {
    /// `registry.k8s.io/sig-storage/x:v1` → `HOST/PREFIX/sig-storage/x:v1`; Docker Hub's `library/` is
    /// dropped (`docker.io/library/huawei-csi:4.8.0` → `HOST/PREFIX/huawei-csi:4.8.0`).
    pub fn map(&self, upstream: &Reference) -> Result<Reference, String> {
        let path = match upstream.registry() {
            DOCKER_HUB => upstream
                .repository()
                .strip_prefix("library/")
                .unwrap_or(upstream.repository()),
            _ => upstream.repository(),
        };
        let repository = self
            .prefix
            .as_ref()
            .map_or(path.to_string(), |p| format!("{p}/{path}"));
        let text = format!("{}/{repository}", self.host);
        let name: Reference = format!("{text}:x")
            .parse()
            .map_err(|e: crate::reference::ReferenceError| e.to_string())?;
        Ok(upstream.relocated(name.registry(), name.repository().to_string()))
    }
}

/// `HOST[:PORT][/PREFIX]`, as `--to`, `--mirror` and `--vendor-registry` take it.
fn host_and_prefix(text: &str) -> Result<(String, Option<String>), String> {
    let text = text
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, prefix) = text
        .split_once('/')
        .map_or((text, None), |(h, p)| (h, Some(p.to_string())));
    registry_host(host)?;
    if let Some(prefix) = &prefix {
        // The prefix becomes part of every repository path, so it obeys their grammar.
        format!("{host}/{prefix}/x")
            .parse::<Reference>()
            .map_err(|_| {
                format!("'{prefix}' is not a repository path prefix (lowercase [a-z0-9._-] components separated by '/')")
            })?;
    }
    Ok((host.to_string(), prefix))
}

/// A registry host as image references have one: `HOST[:PORT]` by their grammar, and a host by Docker's
/// rule (it has a '.' or a ':', or is `localhost`): an image named `myregistry/csi/x` is Docker Hub's, so
/// a push "to myregistry" would otherwise go to docker.io, and a mirror "for myregistry" would match none.
fn registry_host(host: &str) -> Result<(), String> {
    if !is_valid_host(host) {
        return Err(format!("'{host}' is not a registry HOST[:PORT]"));
    }
    if !(host.contains(['.', ':']) || host == "localhost") {
        return Err(format!(
            "'{host}' is not a registry host: a name without a '.' or a ':' (other than localhost) is a \
             Docker Hub namespace; write the host with its domain or port, e.g. {host}.local or {host}:5000"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_paths_go_under_the_target() {
        let target: Target = "10.0.0.5:5000/csi".parse().unwrap();
        let map = |s: &str| target.map(&s.parse().unwrap()).unwrap().to_string();
        assert_eq!(
            map("registry.k8s.io/sig-storage/csi-provisioner:v3.6.0"),
            "10.0.0.5:5000/csi/sig-storage/csi-provisioner:v3.6.0"
        );
        assert_eq!(
            map("docker.io/library/huawei-csi:4.8.0"),
            "10.0.0.5:5000/csi/huawei-csi:4.8.0"
        );
        assert_eq!(
            map("quay.io/k8scsi/csi-attacher:v1.2.1"),
            "10.0.0.5:5000/csi/k8scsi/csi-attacher:v1.2.1"
        );
        let bare: Target = "registry.local".parse().unwrap();
        assert_eq!(
            bare.map(&"huawei-csi:4.8.0".parse().unwrap())
                .unwrap()
                .to_string(),
            "registry.local/huawei-csi:4.8.0"
        );
        assert!("host//x".parse::<Target>().is_err());
    }

    #[test]
    fn malformed_mirrors_are_refused() {
        for text in [
            "registry.k8s.io",
            "=host",
            "a=",
            "a/b=host",
            "a=host.local//x",
            "quay.io=mirror",
            "quay=mirror.local",
            "ba$d.io=mirror.local",
        ] {
            assert!(text.parse::<Mirror>().is_err(), "{text}");
        }
        assert_eq!(
            "quay.io=mirror/x".parse::<Mirror>().unwrap_err().to_string(),
            "invalid --mirror 'quay.io=mirror/x': 'mirror' is not a registry host: a name without a '.' or a \
             ':' (other than localhost) is a Docker Hub namespace; write the host with its domain or port, e.g. \
             mirror.local or mirror:5000; expected FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s"
        );
        assert_eq!(
            "ba$d.io=mirror.local".parse::<Mirror>().unwrap_err().to_string(),
            "invalid --mirror 'ba$d.io=mirror.local': 'ba$d.io' is not a registry HOST[:PORT]; expected \
             FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s"
        );
    }

    #[test]
    fn a_target_must_be_a_registry_host_by_dockers_rule() {
        for good in [
            "localhost/csi",
            "myregistry:5000/csi",
            "harbor.local",
            "[::1]:5000/a/b",
        ] {
            assert!(good.parse::<Target>().is_ok(), "{good}");
        }
        assert_eq!(
            "myregistry/csi".parse::<Target>().unwrap_err(),
            "'myregistry' is not a registry host: a name without a '.' or a ':' (other than localhost) is a \
             Docker Hub namespace; write the host with its domain or port, e.g. myregistry.local or myregistry:5000"
        );
        for bad in ["bad host!", "ba$d.io", "-a.local", "a.local:port"] {
            assert_eq!(
                format!("{bad}/x").parse::<Target>().unwrap_err(),
                format!("'{bad}' is not a registry HOST[:PORT]")
            );
        }
        assert_eq!(
            "harbor.local/CSI".parse::<Target>().unwrap_err(),
            "'CSI' is not a repository path prefix (lowercase [a-z0-9._-] components separated by '/')"
        );
    }
}
