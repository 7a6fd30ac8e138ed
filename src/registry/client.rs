//! Requests to registries, over reqwest, authorized by [`super::token`]. Every request that meets a 401 is
//! sent once more with fresh authorization (a token expires mid-run, a challenge is learnt), then the
//! registry's refusal is final and reported in its own words. Blob downloads need the 206/200 distinction
//! and `Retry-After`, uploads need to re-send one chunk: reasons enough to speak HTTP directly.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::auth::CredentialStore;
use super::retry::parse_retry_after;
use super::tls::{is_loopback, trusted_certificates, PemFile};
use super::token::{Authorizer, Scope};
use super::{FetchError, Refusal, RefusalKind, RegistryError, RegistryOptions};
use crate::digest::Digest;
use crate::image::{limits, media};
use crate::reference::{Reference, DOCKER_HUB};

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled body is a failed attempt; resume then continues from the last byte received.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The most of an error body ferry reads for the registry's message.
const MAX_ERROR_BODY: u64 = 64 << 10;
const MAX_REDIRECTS: usize = 10;

pub struct RegistryClient {
    pub(super) http: reqwest::Client,
    plain_http: Arc<BTreeSet<String>>,
    auth: Authorizer,
}

impl RegistryClient {
    /// Sets up TLS trust and the scheme of each host ferry will contact (`hosts`, as contacted: mirrors
    /// included). Loopback hosts are probed: HTTPS when they answer it, plain HTTP otherwise.
    pub async fn connect(
        options: &RegistryOptions,
        hosts: &BTreeSet<String>,
    ) -> Result<RegistryClient, RegistryError> {
        let certificates =
            trusted_certificates(&options.ca_certs, hosts.iter().map(String::as_str))?;
        let probe = http_client(&certificates, reqwest::redirect::Policy::none())?;
        let mut plain_http: BTreeSet<String> = options.insecure.iter().cloned().collect();
        let undeclared_loopback: Vec<&String> = hosts
            .iter()
            .filter(|h| is_loopback(h) && !plain_http.contains(*h))
            .collect();
        for host in undeclared_loopback {
            if !answers(&probe, "https", host).await && answers(&probe, "http", host).await {
                plain_http.insert(host.clone());
            }
        }
        let plain_http = Arc::new(plain_http);
        let allowed = plain_http.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error("too many redirects");
            }
            let from = attempt.previous().last().cloned();
            match from {
                Some(from) if !redirect_allowed(&from, attempt.url(), &allowed) => {
                    let refusal = InsecureRedirect {
                        from: host_of(&from),
                        to: attempt.url().to_string(),
                    };
                    attempt.error(refusal)
                }
                _ => attempt.follow(),
            }
        });
        let http = http_client(&certificates, policy)?;
        let store = tokio::task::spawn_blocking(CredentialStore::from_environment)
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

    /// Fetches a manifest or index by tag or digest; returns its exact bytes.
    pub async fn manifest(&self, location: &Reference) -> Result<Vec<u8>, FetchError> {
        let registry = location.registry();
        let url = self.url(location, &manifest_path(location, false));
        let scope = Scope::pull(location.repository());
        let response = self
            .send(registry, std::slice::from_ref(&scope), |http| {
                http.get(&url).header(ACCEPT, media::ACCEPTED.join(", "))
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(response, registry, scope).await);
        }
        let bytes = read_limited(response, limits::MAX_MANIFEST, "manifest").await?;
        // Asked for by digest, a manifest must have it; a byte flipped on the way is worth another try.
        if let Some(expected) = location.digest() {
            let actual = Digest::of(&bytes);
            if actual != *expected {
                return Err(FetchError::WrongManifest {
                    expected: expected.clone(),
                    actual,
                });
            }
        }
        Ok(bytes)
    }

    /// Starts a download of blob `digest` (`size` bytes) at `offset`; the response is 206 when the
    /// registry resumed, 200 when it sends the whole blob. A registry whose copy is shorter or longer than
    /// the manifest says is found out here, before any byte is stored.
    pub async fn blob(
        &self,
        location: &Reference,
        digest: &Digest,
        offset: u64,
        size: u64,
    ) -> Result<Response, FetchError> {
        let registry = location.registry();
        let url = self.url(location, &format!("blobs/{digest}"));
        let scope = Scope::pull(location.repository());
        let response = self
            .send(registry, std::slice::from_ref(&scope), |http| {
                let request = http.get(&url);
                if offset > 0 {
                    request.header(RANGE, format!("bytes={offset}-"))
                } else {
                    request
                }
            })
            .await?;
        let short = |served| FetchError::ShortBlob {
            served,
            expected: size,
        };
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => {
                let start = if response.status() == StatusCode::OK {
                    0
                } else {
                    offset
                };
                match response.content_length() {
                    Some(length) if start.checked_add(length) != Some(size) => {
                        Err(short(start.saturating_add(length)))
                    }
                    _ => Ok(response),
                }
            }
            // `Content-Range: bytes */LENGTH`: the registry holds fewer bytes than the resume asked for.
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let served = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, length)| length.trim().parse::<u64>().ok());
                match served {
                    Some(served) if served != size => Err(short(served)),
                    _ => Err(self.failure(response, registry, scope).await),
                }
            }
            _ => Err(self.failure(response, registry, scope).await),
        }
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
    certificates: &[PemFile],
    redirects: reqwest::redirect::Policy,
) -> Result<reqwest::Client, RegistryError> {
    let mut http = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .redirect(redirects);
    for file in certificates {
        for certificate in reqwest::Certificate::from_pem_bundle(&file.pem).map_err(|_| {
            RegistryError::BadCaCert {
                path: file.path.clone(),
            }
        })? {
            http = http.add_root_certificate(certificate);
        }
    }
    http.build().map_err(RegistryError::Client)
}

/// A registry that answers over HTTPS and sends a blob elsewhere over plain HTTP would have it travel
/// unencrypted; only hosts allowed plain HTTP (`--insecure-registry`, loopback) may be redirected to.
fn redirect_allowed(from: &reqwest::Url, to: &reqwest::Url, plain_http: &BTreeSet<String>) -> bool {
    !(from.scheme() == "https" && to.scheme() == "http" && !plain_http.contains(&host_of(to)))
}

fn host_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
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

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(
        headers
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    )
}

/// A response body of at most `limit` bytes (manifests, tokens), refused beyond.
pub(super) async fn read_limited(
    response: Response,
    limit: u64,
    what: &'static str,
) -> Result<Vec<u8>, FetchError> {
    let registry = host_of(response.url());
    let too_large = || FetchError::TooLarge {
        registry: registry.clone(),
        what,
        limit,
    };
    if response.content_length().is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// What a registry or token service said in its error body, as `CODE: message`: the distribution spec's
/// `{"errors": [{"code", "message"}]}`, or the `details`/`message`/`error` of token services. Only printable
/// text is kept.
pub(super) async fn registry_said(response: Response) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Said {
        #[serde(default)]
        errors: Vec<Entry>,
        details: Option<String>,
        message: Option<String>,
        error: Option<String>,
        error_description: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    let body = read_limited(response, MAX_ERROR_BODY, "error message")
        .await
        .ok()?;
    let said: Said = serde_json::from_slice(&body).ok()?;
    let mut parts: Vec<String> = said
        .errors
        .into_iter()
        .map(|e| match (e.code, e.message) {
            (Some(code), Some(message)) if !message.is_empty() => format!("{code}: {message}"),
            (code, message) => code.or(message).unwrap_or_default(),
        })
        .collect();
    parts.extend(
        [
            said.details,
            said.message,
            said.error,
            said.error_description,
        ]
        .into_iter()
        .flatten(),
    );
    let text: String = parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    (!text.is_empty()).then_some(text)
}

/// Whether `host` answers the registry API's root over `scheme` at all (any status will do).
async fn answers(http: &reqwest::Client, scheme: &str, host: &str) -> bool {
    http.get(format!("{scheme}://{host}/v2/"))
        .timeout(Duration::from_secs(5))
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
