//! What goes wrong with registries: the errors of a whole job ([`RegistryError`]), of one attempt at one
//! request ([`FetchError`]) and whether another attempt can do better, and the final refusals
//! ([`Refusal`]) told in the registry's own words with what to do about them.

use std::time::Duration;

use super::auth::AuthError;
use super::retry::{after_attempts, status_verdict, Classify, Verdict};
use super::scope::Scope;
use super::tls::{CaFileError, Untrusted};
use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid --mirror '{text}': {why}; expected FROM=HOST[:PORT][/PREFIX], e.g. registry.k8s.io=127.0.0.1:5000/k8s")]
    BadMirror { text: String, why: String },
    #[error(transparent)]
    CaFile(#[from] CaFileError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot fetch the manifest of {image} from {registry}{}", after_attempts(*attempts))]
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
    #[error(
        "{image}: its index lists manifest {manifest} as {listed}, but its config says {actual}"
    )]
    IndexPlatform {
        image: String,
        manifest: Digest,
        listed: String,
        actual: String,
    },
    #[error("{image}: its index lists another index ({digest}); --platform all carries an index of manifests, not of indexes")]
    NestedIndex { image: String, digest: Digest },
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
    #[error(
        "{asked} answered HTTP {status}{}{}",
        said_suffix(said),
        retry_after_suffix(retry_after)
    )]
    Status {
        asked: Asked,
        status: u16,
        retry_after: Option<Duration>,
        /// The registry's own words: `CODE: message` from its JSON error body.
        said: Option<String>,
    },
    #[error(transparent)]
    Refused(Refusal),
    #[error(transparent)]
    Untrusted(Untrusted),
    #[error(
        "the host name {host} does not resolve ({cause}); check its spelling in the image reference or \
         --mirror, and this machine's DNS"
    )]
    NoSuchHost { host: String, cause: String },
    #[error(transparent)]
    Network(reqwest::Error),
    #[error("the answer ended after {received} of {expected} bytes")]
    Truncated { received: u64, expected: u64 },
    #[error(
        "the registry serves this blob as {served} bytes, but the manifest says {expected}: its copy is \
         damaged or the manifest is wrong; ask the registry's operator to push the image again"
    )]
    BlobSize { served: u64, expected: u64 },
    #[error("{registry} sent a {what} larger than {limit} bytes; refused")]
    TooLarge {
        registry: String,
        what: &'static str,
        limit: u64,
    },
    #[error("the registry sent a manifest whose digest is {actual}, not the {expected} asked for")]
    WrongManifest { expected: Digest, actual: Digest },
    #[error(
        "the registry sent a manifest whose digest is {actual}, but its Docker-Content-Digest header says \
         {header}: refused, as containerd refuses it"
    )]
    DigestHeader { header: Digest, actual: Digest },
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
    Credentials(#[from] AuthError),
}

/// Who gave an answer that was not the one hoped for: the registry to a request, its token service, or
/// the registry to the check of basic credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Asked {
    Registry,
    TokenService { host: String },
    CredentialCheck { user: String },
}

impl std::fmt::Display for Asked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Asked::Registry => write!(f, "the registry"),
            Asked::TokenService { host } => write!(f, "the token service {host}"),
            Asked::CredentialCheck { user } => write!(
                f,
                "the registry, asked whether it accepts the credentials of '{user}' (GET /v2/),"
            ),
        }
    }
}

pub(super) fn said_suffix(said: &Option<String>) -> String {
    said.as_deref()
        .map(|s| format!(", {s}"))
        .unwrap_or_default()
}

fn retry_after_suffix(retry_after: &Option<Duration>) -> String {
    retry_after
        .map(|d| format!(" (retry after {} s)", d.as_secs()))
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
    pub access: Option<Scope>,
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
            // A redirect refused by policy (https to http) stays refused, and a request that cannot be
            // built (a URL no client can send) cannot be sent the next time either.
            FetchError::Network(e) if e.is_redirect() || e.is_builder() => Verdict::Fatal,
            // A byte flipped on the way is worth another try.
            FetchError::Network(_)
            | FetchError::Truncated { .. }
            | FetchError::WrongManifest { .. }
            | FetchError::DigestHeader { .. } => Verdict::Transient,
            FetchError::Refused(_)
            | FetchError::Untrusted(_)
            | FetchError::NoSuchHost { .. }
            | FetchError::BlobSize { .. }
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

    #[test]
    fn refusals_are_final_and_rate_limits_wait() {
        let status = |status, retry_after| FetchError::Status {
            asked: Asked::Registry,
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
    fn a_token_service_and_a_credential_check_are_named_as_such() {
        let token = FetchError::Status {
            asked: Asked::TokenService {
                host: "auth.local:5001".into(),
            },
            status: 429,
            retry_after: Some(Duration::from_secs(2)),
            said: Some("TOOMANYREQUESTS: slow down".into()),
        };
        assert_eq!(
            token.to_string(),
            "the token service auth.local:5001 answered HTTP 429, TOOMANYREQUESTS: slow down (retry after 2 s)"
        );
        assert_eq!(token.verdict(), Verdict::RetryAfter(Duration::from_secs(2)));
        let check = FetchError::Status {
            asked: Asked::CredentialCheck {
                user: "ferry".into(),
            },
            status: 503,
            retry_after: None,
            said: None,
        };
        assert_eq!(
            check.to_string(),
            "the registry, asked whether it accepts the credentials of 'ferry' (GET /v2/), answered HTTP 503"
        );
        assert_eq!(check.verdict(), Verdict::Transient);
    }
}
