//! Who may do what at a registry: docker's `Basic` challenge, or the distribution spec's bearer tokens
//! (Harbor, Distribution with `auth: token`, Quay, GitLab, Artifactory, Docker Hub).
//!
//! ferry does this itself rather than through oci-client, which asks for one repository's scope only (a
//! cross-repository mount needs the source's `pull` in the same token), hides `expires_in` and the token
//! service's own refusal message, and tries a wrong password once per parallel request.
//!
//! Per registry: the challenge is learnt from the first 401, credentials are looked up once (credential
//! helpers are programs: they run on a blocking thread, not on an async worker), and a refused credential
//! is remembered, so one run tries a password once, however many `--jobs` there are.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;
use serde::Deserialize;
use tokio::sync::Mutex;

use super::auth::{CredentialStore, Credentials};
use super::error::{Asked, FetchError, Refusal, RefusalKind};
use super::response::{read_limited, registry_said, retry_after};
use super::scope::Scope;

/// A token service that says nothing about lifetime means 60 s (the distribution token spec).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// The most of a token's answer ferry reads: tokens are a few kilobytes.
const MAX_TOKEN_REPLY: u64 = 1 << 20;

/// What a registry's `WWW-Authenticate` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="https://h/token",service="s",scope="a:b:pull,push"`; quoted
/// values may hold commas.
pub fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim_start();
    while let Some((key, after)) = rest.split_once('=') {
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.insert(key, value.to_string());
        rest = after.trim_start_matches([',', ' ']);
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
    })
}

struct Token {
    value: String,
    renew_at: Instant,
}

#[derive(Default)]
struct HostAuth {
    challenge: Option<Challenge>,
    /// Looked up on first need; `Some(None)`: this machine has none for the registry.
    credentials: Option<Option<Credentials>>,
    /// By the space-joined scopes they grant.
    tokens: HashMap<String, Token>,
    /// The registry or its token service refused the credentials: repeated, never tried again.
    refused: Option<Refusal>,
}

pub struct Authorizer {
    http: reqwest::Client,
    store: Arc<CredentialStore>,
    hosts: std::sync::Mutex<HashMap<String, Arc<Mutex<HostAuth>>>>,
}

#[derive(Deserialize)]
struct TokenReply {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl Authorizer {
    pub fn new(http: reqwest::Client, store: CredentialStore) -> Authorizer {
        Authorizer {
            http,
            store: Arc::new(store),
            hosts: std::sync::Mutex::new(HashMap::new()),
        }
    }

    fn host(&self, registry: &str) -> Arc<Mutex<HostAuth>> {
        self.hosts
            .lock()
            .expect("no panic while held")
            .entry(registry.to_string())
            .or_default()
            .clone()
    }

    /// The user ferry authenticates (or would authenticate) as at `registry`, if any, for messages.
    pub async fn user(&self, registry: &str) -> Option<String> {
        let host = self.host(registry);
        let mut state = host.lock().await;
        let credentials = self.credentials(registry, &mut state).await.ok()?;
        credentials.map(|c| c.username)
    }

    /// The `Authorization` header for a request needing `scopes`: none until the registry has asked
    /// for one, basic credentials, or a bearer token renewed before it expires.
    pub async fn header(
        &self,
        registry: &str,
        scopes: &[Scope],
    ) -> Result<Option<HeaderValue>, FetchError> {
        let host = self.host(registry);
        let mut state = host.lock().await;
        if let Some(refused) = &state.refused {
            return Err(FetchError::Refused(refused.clone()));
        }
        let Some(challenge) = state.challenge.clone() else {
            return Ok(None);
        };
        let credentials = self.credentials(registry, &mut state).await?;
        match challenge {
            Challenge::Basic => Ok(credentials.map(|c| basic(&c))),
            Challenge::Bearer { realm, service } => {
                let key = scope_key(scopes);
                if let Some(token) = state.tokens.get(&key) {
                    if Instant::now() < token.renew_at {
                        return Ok(Some(bearer(&token.value)));
                    }
                }
                let token = self
                    .fetch_token(registry, &realm, service.as_deref(), scopes, credentials)
                    .await;
                let token = match token {
                    Ok(token) => token,
                    Err(FetchError::Refused(refusal)) => {
                        if refusal.kind == RefusalKind::BadCredentials {
                            state.refused = Some(refusal.clone());
                        }
                        return Err(FetchError::Refused(refusal));
                    }
                    Err(other) => return Err(other),
                };
                let header = bearer(&token.value);
                state.tokens.insert(key, token);
                Ok(Some(header))
            }
        }
    }

    /// After a 401 to a request that carried `sent`: learns the challenge, drops a refused token. Returns
    /// whether a second try can succeed (false: no credentials, or these credentials were refused).
    /// `base` is the registry's API root (`https://HOST`), where basic credentials are checked.
    pub async fn rejected(
        &self,
        registry: &str,
        base: &str,
        scopes: &[Scope],
        challenge: Option<&str>,
        sent: Option<&HeaderValue>,
    ) -> Result<bool, FetchError> {
        let Some(challenge) = challenge.and_then(parse_challenge) else {
            return Ok(false);
        };
        let host = self.host(registry);
        let mut state = host.lock().await;
        if let Some(refused) = &state.refused {
            return Err(FetchError::Refused(refused.clone()));
        }
        let key = scope_key(scopes);
        // Another request may have renewed the token meanwhile; only the one refused is dropped.
        if let (Some(sent), Some(token)) = (sent, state.tokens.get(&key)) {
            if bearer(&token.value) == sent {
                state.tokens.remove(&key);
            }
        }
        let learnt = state.challenge.is_none();
        state.challenge = Some(challenge.clone());
        let credentials = self.credentials(registry, &mut state).await?;
        match (challenge, credentials) {
            (Challenge::Bearer { .. }, _) => Ok(true),
            (Challenge::Basic, None) => Ok(false),
            // Basic credentials that were sent and refused are wrong.
            (Challenge::Basic, Some(_)) if sent.is_some() && !learnt => Ok(false),
            // Another request learnt the challenge and checked them meanwhile (a refusal would be above).
            (Challenge::Basic, Some(_)) if !learnt => Ok(true),
            // New ones are checked once, here, under the lock, so parallel requests do not each try a
            // wrong password. A check that could not tell leaves the challenge to be learnt again.
            (Challenge::Basic, Some(credentials)) => {
                let checked = self
                    .check_basic(registry, base, &credentials, &mut state)
                    .await;
                if checked.is_err() {
                    state.challenge = None;
                }
                checked.map(|()| true)
            }
        }
    }

    /// Asks the registry's API root whether it accepts `credentials`: only a 2xx says yes, a 401 says
    /// no for the rest of the run, and anything else says nothing yet.
    async fn check_basic(
        &self,
        registry: &str,
        base: &str,
        credentials: &Credentials,
        state: &mut HostAuth,
    ) -> Result<(), FetchError> {
        let response = self
            .http
            .get(format!("{base}/v2/"))
            .header(reqwest::header::AUTHORIZATION, basic(credentials))
            .send()
            .await?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status != reqwest::StatusCode::UNAUTHORIZED {
            return Err(FetchError::Status {
                asked: Asked::CredentialCheck {
                    user: credentials.username.clone(),
                },
                status: status.as_u16(),
                retry_after: retry_after(response.headers()),
                said: registry_said(response).await,
            });
        }
        let refusal = Refusal {
            registry: registry.to_string(),
            kind: RefusalKind::BadCredentials,
            status: 401,
            user: Some(credentials.username.clone()),
            said: registry_said(response).await,
            by: registry.to_string(),
            access: None,
        };
        state.refused = Some(refusal.clone());
        Err(FetchError::Refused(refusal))
    }

    async fn credentials(
        &self,
        registry: &str,
        state: &mut HostAuth,
    ) -> Result<Option<Credentials>, FetchError> {
        if let Some(known) = &state.credentials {
            return Ok(known.clone());
        }
        let (store, name) = (self.store.clone(), registry.to_string());
        let found = tokio::task::spawn_blocking(move || store.lookup(&name))
            .await
            .expect("credential lookup does not panic")?;
        state.credentials = Some(found.clone());
        Ok(found)
    }

    async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[Scope],
        credentials: Option<Credentials>,
    ) -> Result<Token, FetchError> {
        let mut url = reqwest::Url::parse(realm).map_err(|_| FetchError::BadRealm {
            registry: registry.to_string(),
            realm: realm.to_string(),
        })?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            for scope in scopes {
                query.append_pair("scope", &scope.to_string());
            }
            if let Some(c) = &credentials {
                query.append_pair("account", &c.username);
            }
        }
        let mut request = self.http.get(url);
        if let Some(c) = &credentials {
            request = request.header(reqwest::header::AUTHORIZATION, basic(c));
        }
        // The lifetime counts from before the request: the service's clock (and `issued_at`) may disagree
        // with this machine's, so ferry never compares times across machines.
        let asked_at = Instant::now();
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(FetchError::Refused(Refusal {
                registry: registry.to_string(),
                kind: if credentials.is_some() {
                    RefusalKind::BadCredentials
                } else {
                    RefusalKind::NoCredentials
                },
                status,
                user: credentials.map(|c| c.username),
                said: registry_said(response).await,
                by: realm_host(realm),
                access: None,
            }));
        }
        if status != 200 {
            return Err(FetchError::Status {
                asked: Asked::TokenService {
                    host: realm_host(realm),
                },
                status,
                retry_after: retry_after(response.headers()),
                said: registry_said(response).await,
            });
        }
        let body = read_limited(response, MAX_TOKEN_REPLY, "token").await?;
        let reply: TokenReply =
            serde_json::from_slice(&body).map_err(|_| FetchError::BadToken {
                registry: registry.to_string(),
            })?;
        let value = reply
            .token
            .or(reply.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| FetchError::BadToken {
                registry: registry.to_string(),
            })?;
        let lifetime = reply
            .expires_in
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        Ok(Token {
            value,
            renew_at: asked_at + lifetime.saturating_sub(renewal_margin(lifetime)),
        })
    }
}

/// How long before its end a token is renewed: a fifth of its life, between 1 s and 1 min, so a request
/// that starts just before the end does not arrive after it.
fn renewal_margin(lifetime: Duration) -> Duration {
    (lifetime / 5).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

fn scope_key(scopes: &[Scope]) -> String {
    let mut parts: Vec<String> = scopes.iter().map(Scope::to_string).collect();
    parts.sort();
    parts.join(" ")
}

fn realm_host(realm: &str) -> String {
    reqwest::Url::parse(realm)
        .ok()
        .and_then(|u| {
            u.host_str()
                .map(|h| u.port().map_or(h.to_string(), |p| format!("{h}:{p}")))
        })
        .unwrap_or_else(|| realm.to_string())
}

fn basic(credentials: &Credentials) -> HeaderValue {
    use base64::Engine as _;
    let pair = format!("{}:{}", credentials.username, credentials.password.expose());
    secret_header(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    ))
}

fn bearer(token: &str) -> HeaderValue {
    secret_header(&format!("Bearer {token}"))
}

/// A header value marked sensitive, so no debug output of the HTTP stack shows it.
fn secret_header(value: &str) -> HeaderValue {
    let mut header =
        HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    header.set_sensitive(true);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_parsed_with_commas_inside_quotes() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://harbor.local/service/token",service="harbor-registry",scope="repository:csi/a:pull,push",error="insufficient_scope""#
            ),
            Some(Challenge::Bearer {
                realm: "https://harbor.local/service/token".into(),
                service: Some("harbor-registry".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
    }

    #[test]
    fn scopes_read_as_token_services_expect_them() {
        assert_eq!(
            scope_key(&[Scope::push("csi/b"), Scope::pull("csi/a")]),
            "repository:csi/a:pull repository:csi/b:pull,push"
        );
    }

    #[test]
    fn tokens_are_renewed_before_they_end() {
        assert_eq!(
            renewal_margin(Duration::from_secs(1800)),
            Duration::from_secs(60)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            renewal_margin(Duration::from_secs(60)),
            Duration::from_secs(12)
        );
    }
}
