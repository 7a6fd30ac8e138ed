//! Requests to registries, over reqwest, authorized by [`super::token`]. Every request that meets a 401 is
//! sent once more with fresh authorization (a token expires mid-run, a challenge is learnt), then the
//! registry's refusal is final and reported in its own words. Blob downloads need the 206/200 distinction
//! and `Retry-After`, uploads need to re-send one chunk: reasons enough to speak HTTP directly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::CredentialStore;
use super::error::{Asked, FetchError, Refusal, RefusalKind, RegistryError};
use super::probe::answers_tls;
use super::response::{host_of, registry_said, retry_after};
use super::route::RegistryOptions;
use super::scope::Scope;
use super::tls::{is_loopback, trusted_certificates, SystemRoots};
use super::token::Authorizer;
use crate::reference::{Reference, DOCKER_HUB};

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled body is a failed attempt; resume then continues from the last byte received.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_REDIRECTS: usize = 10;
/// How long a loopback registry has to answer the probe of its scheme.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    plain_http: Arc<BTreeSet<String>>,
    auth: Authorizer,
}

impl RegistryClient {
    /// Sets up TLS trust and the scheme of each host ferry will contact (`hosts`, as contacted: mirrors
    /// included). Loopback hosts are probed: plain HTTP only when they do not speak TLS.
    pub async fn connect(
        options: &RegistryOptions,
        hosts: &BTreeSet<String>,
    ) -> Result<RegistryClient, RegistryError> {
        let certificates =
            trusted_certificates(&options.ca_certs, hosts.iter().map(String::as_str))?;
        let roots = Arc::new(SystemRoots::new(&certificates)?);
        let store = tokio::task::spawn_blocking(CredentialStore::from_environment);
        let plain_http = Arc::new(plain_http_hosts(options, hosts).await?);
        if hosts.iter().any(|host| !plain_http.contains(host)) {
            // A handshake is ahead: the system's roots are read now, beside what comes before it.
            let roots = roots.clone();
            tokio::task::spawn_blocking(move || roots.load());
        }
        let http = http_client(&roots, redirect_policy(plain_http.clone()))?;
        let store = store
            .await
            .expect("reading credential files does not panic")?;
        Ok(RegistryClient {
            auth: Authorizer::new(http.clone(), store),
            http,
            plain_http,
        })
    }

    /// `https://HOST` or, for insecure and plain loopback registries, `http://HOST`; Docker Hub's API lives
    /// at registry-1.docker.io.
    pub(super) fn base(&self, registry: &str) -> String {
        let scheme = if self.plain_http.contains(registry) {
            "http"
        } else {
            "https"
        };
        let host = if registry == DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            registry
        };
        format!("{scheme}://{host}")
    }

    /// `BASE/v2/REPOSITORY/PATH` for `image`'s registry and repository.
    pub(super) fn url(&self, image: &Reference, path: &str) -> String {
        format!(
            "{}/v2/{}/{path}",
            self.base(image.registry()),
            image.repository()
        )
    }

    /// Sends a request built by `request`, authorized for `scopes`. A 401 to a request sent without
    /// authorization teaches the registry's challenge; a 401 to one sent with a token or credentials gets
    /// one more try with fresh ones. Any other answer, and the second refusal, are the caller's to judge.
    pub(super) async fn send(
        &self,
        registry: &str,
        scopes: &[Scope],
        request: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response, FetchError> {
        let mut renewed = false;
        loop {
            let authorization = self.auth.header(registry, scopes).await?;
            let mut builder = request(&self.http);
            if let Some(value) = &authorization {
                builder = builder.header(AUTHORIZATION, value.clone());
            }
            let response = builder.send().await?;
            if response.status() != StatusCode::UNAUTHORIZED || renewed {
                return Ok(response);
            }
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let again = self
                .auth
                .rejected(
                    registry,
                    &self.base(registry),
                    scopes,
                    challenge.as_deref(),
                    authorization.as_ref(),
                )
                .await?;
            if !again {
                return Ok(response);
            }
            renewed = authorization.is_some();
        }
    }

    /// The error for an answer the caller did not expect: a refusal with its reason for 401, 403 and 404,
    /// the status and the registry's message otherwise.
    pub(super) async fn failure(
        &self,
        response: Response,
        registry: &str,
        access: Scope,
    ) -> FetchError {
        let status = response.status().as_u16();
        let retry_after = retry_after(response.headers());
        let user = self.auth.user(registry).await;
        let kind = match status {
            401 if user.is_none() => RefusalKind::NoCredentials,
            401 | 403 => RefusalKind::NotPermitted,
            404 => RefusalKind::NotFound,
            _ => {
                return FetchError::Status {
                    asked: Asked::Registry,
                    status,
                    retry_after,
                    said: registry_said(response).await,
                }
            }
        };
        FetchError::Refused(Refusal {
            registry: registry.to_string(),
            kind,
            status,
            user,
            said: registry_said(response).await,
            by: registry.to_string(),
            access: Some(access),
        })
    }
}

/// `manifests/DIGEST` or `manifests/TAG`; `by_tag` prefers the tag of a reference that has both (a push
/// by tag files the manifest under its tag and its digest at once).
pub(super) fn manifest_path(image: &Reference, by_tag: bool) -> String {
    let reference = match (image.tag(), image.digest()) {
        (Some(tag), Some(_)) if by_tag => tag.to_string(),
        (_, Some(digest)) => digest.to_string(),
        (Some(tag), None) => tag.to_string(),
        (None, None) => "latest".to_string(),
    };
    format!("manifests/{reference}")
}

fn http_client(
    roots: &Arc<SystemRoots>,
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, RegistryError> {
    reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(redirects)
        .tls_backend_preconfigured(roots.client_config())
        .build()
        .map_err(RegistryError::Client)
}

/// Follows at most [`MAX_REDIRECTS`] redirects, none from HTTPS to plain HTTP but to a host in
/// `plain_http`.
fn redirect_policy(plain_http: Arc<BTreeSet<String>>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error("too many redirects");
        }
        let from = attempt.previous().last().cloned();
        match from {
            Some(from) if !redirect_allowed(&from, attempt.url(), &plain_http) => {
                let refusal = InsecureRedirect {
                    from: host_of(&from),
                    to: attempt.url().to_string(),
                };
                attempt.error(refusal)
            }
            _ => attempt.follow(),
        }
    })
}

/// The hosts to speak plain HTTP to: those declared insecure, and the loopback ones that do not speak TLS.
async fn plain_http_hosts(
    options: &RegistryOptions,
    hosts: &BTreeSet<String>,
) -> Result<BTreeSet<String>, RegistryError> {
    let mut plain_http: BTreeSet<String> = options.insecure.iter().cloned().collect();
    let undeclared_loopback: Vec<&String> = hosts
        .iter()
        .filter(|h| is_loopback(h) && !plain_http.contains(*h))
        .collect();
    if undeclared_loopback.is_empty() {
        return Ok(plain_http);
    }
    // The probe asks over plain HTTP only, so it needs no root certificates.
    let probe = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([])
        .build()
        .map_err(RegistryError::Client)?;
    for host in undeclared_loopback {
        if speaks_plain_http(&probe, host).await {
            plain_http.insert(host.clone());
        }
    }
    Ok(plain_http)
}

/// A registry that answers over HTTPS and sends a blob elsewhere over plain HTTP would have it travel
/// unencrypted; only hosts allowed plain HTTP (`--insecure-registry`, loopback) may be redirected to.
fn redirect_allowed(from: &reqwest::Url, to: &reqwest::Url, plain_http: &BTreeSet<String>) -> bool {
    !(from.scheme() == "https" && to.scheme() == "http" && !plain_http.contains(&host_of(to)))
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{from} redirected to {to}, over plain HTTP: refused, as the data would travel unencrypted; allow \
     that host with --insecure-registry if this is intended"
)]
struct InsecureRedirect {
    from: String,
    to: String,
}

/// Whether a loopback `host` speaks plain HTTP: it does not answer a ClientHello with TLS, and a plain
/// request gets an answer. A TLS server, whatever its certificate, is not one: its requests go over HTTPS
/// and fail naming the certificate, never in clear. (A TLS server answers a plain request too, with a 400,
/// so the order matters.)
async fn speaks_plain_http(probe: &reqwest::Client, host: &str) -> bool {
    !answers_tls(host, PROBE_TIMEOUT).await
        && probe
            .get(format!("http://{host}/v2/"))
            .timeout(PROBE_TIMEOUT)
            .send()
            .await
            .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_is_not_redirected_to_plain_http_unless_allowed() {
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        let allowed: BTreeSet<String> = ["cdn.local:8080".to_string()].into();
        let from = url("https://harbor.local/v2/a/blobs/sha256:0");
        assert!(!redirect_allowed(
            &from,
            &url("http://s3.local/bucket/blob"),
            &allowed
        ));
        assert!(redirect_allowed(
            &from,
            &url("http://cdn.local:8080/blob"),
            &allowed
        ));
        assert!(redirect_allowed(
            &from,
            &url("https://s3.local/bucket/blob"),
            &allowed
        ));
        assert!(redirect_allowed(
            &url("http://127.0.0.1:5000/v2/"),
            &url("http://127.0.0.1:9000/blob"),
            &allowed
        ));
    }
}
