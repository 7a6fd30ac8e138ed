//! Talking to OCI registries: where to fetch an image from (mirrors, frozen registries), credentials,
//! TLS, retries, and the transfer of manifests and blobs.

pub mod auth;
mod client;
pub mod retry;
mod tls;
pub mod token;
mod upload;

use std::path::PathBuf;
use std::time::Duration;

pub use client::RegistryClient;
pub use upload::Mount;

use crate::digest::Digest;
use crate::reference::{Reference, DOCKER_HUB};
use retry::{status_verdict, Classify, Verdict};

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
    pub retry: retry::RetryPolicy,
}

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
        if from.is_empty() || from.contains('/') {
            return Err(bad(format!("'{from}' is not a registry host")));
        }
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

/// `HOST[:PORT][/PREFIX]`, as `--to`, `--mirror` and `--vendor-registry` take it. The host must be one by
/// Docker's rule (it has a '.' or a ':', or is `localhost`): an image named `myregistry/csi/x` is Docker
/// Hub's, so a push "to myregistry" would otherwise go to docker.io.
fn host_and_prefix(text: &str) -> Result<(String, Option<String>), String> {
    let text = text
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/');
    let (host, prefix) = text
        .split_once('/')
        .map_or((text, None), |(h, p)| (h, Some(p.to_string())));
    let host_chars =
        |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']');
    if host.is_empty() || !host.chars().all(host_chars) {
        return Err(format!("'{host}' is not a registry HOST[:PORT]"));
    }
    if !(host.contains(['.', ':']) || host == "localhost") {
        return Err(format!(
            "'{host}' is not a registry host: a name without a '.' or a ':' (other than localhost) is a \
             Docker Hub namespace; write the host with its domain or port, e.g. {host}.local or {host}:5000"
        ));
    }
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

/// Where an upstream image is actually fetched from, and why, when that is not its own registry.
#[derive(Debug, Clone)]
pub struct Location {
    pub reference: Reference,
    pub notes: Vec<String>,
}

impl RegistryOptions {
    /// Maps an upstream reference to the place to fetch it: frozen registries to their successors (unless a
    /// mirror names them), then mirrors. The image keeps its upstream name everywhere else.
    /// The `--mirror` options that no image of `upstreams` is fetched through: most likely typos, which
    /// would otherwise send the fetch to the real upstream without a word.
    pub fn unused_mirrors<'a>(
        &'a self,
        upstreams: impl IntoIterator<Item = &'a Reference>,
    ) -> Vec<&'a Mirror> {
        let used: Vec<&Mirror> = upstreams
            .into_iter()
            .filter_map(|upstream| self.route(upstream).1)
            .collect();
        self.mirrors
            .iter()
            .filter(|m| !used.iter().any(|u| std::ptr::eq(*u, *m)))
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

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid --mirror '{text}': {why}; expected FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s")]
    BadMirror { text: String, why: String },
    #[error("cannot read CA certificate {path}")]
    CaCert {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no PEM certificate")]
    BadCaCert { path: PathBuf },
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot fetch the manifest of {image} from {registry}{}", retry::after_attempts(*attempts))]
    Manifest {
        image: String,
        registry: String,
        attempts: u32,
        #[source]
        cause: FetchError,
    },
    #[error(
        "{image} has a Docker schema 1 manifest, which no current runtime loads and whose digest cannot be \
         preserved; ask its publisher for a schema 2 or OCI image"
    )]
    Schema1 { image: String },
    #[error("{image} has no manifest for platform {wanted}; it has: {available}")]
    PlatformMissing {
        image: String,
        wanted: String,
        available: String,
    },
    #[error("{image} is {actual} only, but {wanted} was asked for")]
    PlatformMismatch {
        image: String,
        wanted: String,
        actual: String,
    },
    #[error("{image}: the registry sent an unreadable manifest ({media_type}): {message}")]
    BadManifest {
        image: String,
        media_type: String,
        message: String,
    },
    #[error("{image}: its {what} is {size} bytes, more than the {limit} bytes ferry accepts")]
    TooLarge {
        image: String,
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

/// Why one attempt at a registry request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the registry answered HTTP {status}{}{}", said_suffix(said), retry_after.map(|d| format!(" (retry after {} s)", d.as_secs())).unwrap_or_default())]
    Status {
        status: u16,
        retry_after: Option<Duration>,
        /// The registry's own words: `CODE: message` from its JSON error body.
        said: Option<String>,
    },
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Network(#[from] reqwest::Error),
    #[error("the connection ended after {received} of {expected} bytes")]
    Truncated { received: u64, expected: u64 },
    #[error(
        "the registry serves this blob as {served} bytes, but the manifest says {expected}: its copy is \
         damaged or the manifest is wrong; ask the registry's operator to push the image again"
    )]
    ShortBlob { served: u64, expected: u64 },
    #[error("{registry} sent a {what} larger than {limit} bytes; refused")]
    TooLarge {
        registry: String,
        what: &'static str,
        limit: u64,
    },
    #[error("the registry sent a manifest whose digest is {actual}, not the {expected} asked for")]
    WrongManifest { expected: Digest, actual: Digest },
    #[error("{registry} names its token service '{realm}', which is not a URL")]
    BadRealm { registry: String, realm: String },
    #[error("the token service of {registry} answered without a token")]
    BadToken { registry: String },
    #[error("{registry} answered {what} without a usable Location header")]
    NoLocation {
        registry: String,
        what: &'static str,
    },
    #[error("cannot read the bundle")]
    Bundle(#[source] std::io::Error),
    #[error(transparent)]
    Credentials(#[from] auth::AuthError),
}

fn said_suffix(said: &Option<String>) -> String {
    said.as_deref()
        .map(|s| format!(", {s}"))
        .unwrap_or_default()
}

/// Why a registry said no for good, which no retry changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// It wants a login and this machine has no credentials for it.
    NoCredentials,
    /// It (or its token service) refused the credentials.
    BadCredentials,
    /// The account may not do this to this repository (or the project does not exist: Harbor says so).
    NotPermitted,
    /// The repository, tag or blob does not exist (on a push: the project or namespace).
    NotFound,
}

/// A final refusal: who refused whom what, in the registry's own words, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub registry: String,
    pub kind: RefusalKind,
    pub status: u16,
    pub user: Option<String>,
    pub said: Option<String>,
    /// Who said no: the registry, or the host of its token service.
    pub by: String,
    /// The repository and whether a push was asked for, when the refusal concerns one.
    pub access: Option<token::Scope>,
}

impl std::error::Error for Refusal {}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Refusal {
            registry,
            status,
            by,
            ..
        } = self;
        let said = said_suffix(&self.said);
        let user = self
            .user
            .as_deref()
            .map_or("anonymous users".to_string(), |u| format!("'{u}'"));
        let (action, repository) = match &self.access {
            Some(scope) => (
                if scope.push { "push" } else { "pull" },
                scope.repository.as_str(),
            ),
            None => ("access", ""),
        };
        let project = repository.split('/').next().unwrap_or_default();
        match self.kind {
            RefusalKind::NoCredentials => write!(
                f,
                "{registry} wants a login and ferry has no credentials for it (HTTP {status}{said}); log in \
                 with `docker login {registry}` (ferry reads DOCKER_CONFIG/config.json with its credential \
                 helpers, and REGISTRY_AUTH_FILE)"
            ),
            RefusalKind::BadCredentials => write!(
                f,
                "{by} refused the credentials of {user} for {registry} (HTTP {status}{said}); ferry tried \
                 them once and not again, so as not to lock the account: correct them with `docker login \
                 {registry}`"
            ),
            RefusalKind::NotPermitted => write!(
                f,
                "{registry} refused {action} on {repository} to {user} (HTTP {status}{said}); use an account \
                 with {action} rights on it, and check that the project '{project}' exists"
            ),
            RefusalKind::NotFound if action == "push" => write!(
                f,
                "{registry} has no project '{project}' for {repository} (HTTP {status}{said}); create it \
                 (in Harbor: Projects, New project) or push under another --to prefix"
            ),
            RefusalKind::NotFound => write!(
                f,
                "{registry} does not have what was asked for in {repository} (HTTP {status}{said}); check \
                 the image's name and tag, and any --mirror prefix"
            ),
        }
    }
}

impl Classify for FetchError {
    fn verdict(&self) -> Verdict {
        match self {
            FetchError::Status {
                status: 429,
                retry_after: Some(delay),
                ..
            } => Verdict::RetryAfter(*delay),
            FetchError::Status { status, .. } => status_verdict(*status),
            // A redirect refused by policy (https to http) stays refused.
            FetchError::Network(e) if e.is_redirect() => Verdict::Fatal,
            FetchError::Network(_)
            | FetchError::Truncated { .. }
            | FetchError::WrongManifest { .. } => Verdict::Transient,
            FetchError::Refused(_)
            | FetchError::ShortBlob { .. }
            | FetchError::TooLarge { .. }
            | FetchError::BadRealm { .. }
            | FetchError::BadToken { .. }
            | FetchError::NoLocation { .. }
            | FetchError::Bundle(_)
            | FetchError::Credentials(_) => Verdict::Fatal,
        }
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
    fn refusals_are_final_and_rate_limits_wait() {
        let status = |status, retry_after| FetchError::Status {
            status,
            retry_after,
            said: None,
        };
        assert_eq!(status(503, None).verdict(), Verdict::Transient);
        assert_eq!(status(404, None).verdict(), Verdict::Fatal);
        assert_eq!(status(401, None).verdict(), Verdict::Fatal);
        assert_eq!(status(403, None).verdict(), Verdict::Fatal);
        assert_eq!(
            status(429, Some(Duration::from_secs(3))).verdict(),
            Verdict::RetryAfter(Duration::from_secs(3))
        );
        assert_eq!(
            status(416, Some(Duration::from_secs(3))).to_string(),
            "the registry answered HTTP 416 (retry after 3 s)"
        );
    }

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
        ] {
            assert!(text.parse::<Mirror>().is_err(), "{text}");
        }
        assert_eq!(
            "quay.io=mirror/x".parse::<Mirror>().unwrap_err().to_string(),
            "invalid --mirror 'quay.io=mirror/x': 'mirror' is not a registry host: a name without a '.' or a \
             ':' (other than localhost) is a Docker Hub namespace; write the host with its domain or port, e.g. \
             mirror.local or mirror:5000; expected FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s"
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
        assert_eq!(
            "bad host!/x".parse::<Target>().unwrap_err(),
            "'bad host!' is not a registry HOST[:PORT]"
        );
        assert_eq!(
            "harbor.local/CSI".parse::<Target>().unwrap_err(),
            "'CSI' is not a repository path prefix (lowercase [a-z0-9._-] components separated by '/')"
        );
    }
}
