//! One attempt at one registry request. Manifests go through oci-client, which handles the token
//! dance; blob bodies are fetched with the same reqwest under oci-client's token, because resuming needs
//! the 206/200 distinction and honouring 429 needs `Retry-After`, both of which oci-client hides.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;
use tokio::sync::Mutex;

use super::auth::CredentialStore;
use super::retry::parse_retry_after;
use super::tls::{is_loopback, trusted_certificates};
use super::{FetchError, RegistryError, RegistryOptions};
use crate::digest::Digest;
use crate::image::media;
use crate::reference::Reference;

const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// A stalled body is a failed attempt; resume then continues from the last byte received.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

pub struct RegistryClient {
    oci: oci_client::Client,
    http: reqwest::Client,
    plain_http: BTreeSet<String>,
    credentials: CredentialStore,
    /// Per (host, repository): the bearer token for blob requests, if the registry uses tokens.
    tokens: Mutex<HashMap<(String, String), Option<String>>>,
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
        let mut http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT);
        for file in &certificates {
            for certificate in reqwest::Certificate::from_pem_bundle(&file.pem).map_err(|_| {
                RegistryError::BadCaCert {
                    path: file.path.clone(),
                }
            })? {
                http = http.add_root_certificate(certificate);
            }
        }
        let http = http.build().map_err(RegistryError::Client)?;
        let mut plain_http: BTreeSet<String> = options.insecure.iter().cloned().collect();
        let undeclared_loopback: Vec<&String> = hosts
            .iter()
            .filter(|h| is_loopback(h) && !plain_http.contains(*h))
            .collect();
        for host in undeclared_loopback {
            if !answers(&http, "https", host).await && answers(&http, "http", host).await {
                plain_http.insert(host.clone());
            }
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain_http.iter().cloned().collect()),
            extra_root_certificates: certificates
                .iter()
                .map(|f| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: f.pem.clone(),
                })
                .collect(),
            // ferry picks platforms itself; never let the client fall back to the host's.
            platform_resolver: None,
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: USER_AGENT,
            ..Default::default()
        };
        Ok(RegistryClient {
            // try_from, not new: new falls back to a default client (no extra CAs, no proxy) on errors.
            oci: oci_client::Client::try_from(config).map_err(RegistryError::OciClient)?,
            http,
            plain_http,
            credentials: CredentialStore::from_environment()?,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn auth_for(&self, host: &str) -> Result<RegistryAuth, FetchError> {
        Ok(match self.credentials.lookup(host)? {
            Some(c) => RegistryAuth::Basic(c.username, c.password.expose().to_string()),
            None => RegistryAuth::Anonymous,
        })
    }

    /// Fetches a manifest or index by tag or digest; returns its exact bytes.
    pub async fn manifest(&self, location: &Reference) -> Result<Vec<u8>, FetchError> {
        let auth = self.auth_for(location.registry())?;
        let (bytes, _digest) = self
            .oci
            .pull_manifest_raw(&to_oci(location), &auth, media::ACCEPTED)
            .await?;
        Ok(bytes.to_vec())
    }

    /// Starts a blob download at `offset`; the response is 206 when the registry resumed, 200 when it sent
    /// the whole blob.
    pub async fn blob(
        &self,
        location: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<reqwest::Response, FetchError> {
        let host = oci_host(location);
        let scheme = if self.plain_http.contains(location.registry()) {
            "http"
        } else {
            "https"
        };
        let url = format!(
            "{scheme}://{host}/v2/{}/blobs/{digest}",
            location.repository()
        );
        let mut request = self.http.get(&url);
        if offset > 0 {
            request = request.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        request = match self.blob_token(location).await? {
            Some(token) => request.bearer_auth(token),
            None => match self.credentials.lookup(location.registry())? {
                Some(c) => request.basic_auth(c.username, Some(c.password.expose())),
                None => request,
            },
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        if status == 401 {
            self.tokens
                .lock()
                .await
                .remove(&(host, location.repository().to_string()));
        }
        if !(status == 200 || status == 206) {
            let retry_after = parse_retry_after(
                response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()),
            );
            return Err(FetchError::Status {
                status,
                retry_after,
            });
        }
        Ok(response)
    }

    async fn blob_token(&self, location: &Reference) -> Result<Option<String>, FetchError> {
        let key = (oci_host(location), location.repository().to_string());
        if let Some(token) = self.tokens.lock().await.get(&key) {
            return Ok(token.clone());
        }
        let auth = self.auth_for(location.registry())?;
        let token = self
            .oci
            .auth(&to_oci(location), &auth, RegistryOperation::Pull)
            .await?;
        self.tokens.lock().await.insert(key, token.clone());
        Ok(token)
    }
}

impl RegistryClient {
    /// Obtains push rights on `target`'s repository (a token, or basic credentials) for what follows.
    pub async fn authorize_push(&self, target: &Reference) -> Result<(), FetchError> {
        let auth = self.auth_for(target.registry())?;
        self.oci
            .auth(&to_oci(target), &auth, RegistryOperation::Push)
            .await?;
        Ok(())
    }

    pub async fn blob_exists(
        &self,
        target: &Reference,
        digest: &Digest,
    ) -> Result<bool, FetchError> {
        Ok(self
            .oci
            .blob_exists(&to_oci(target), &digest.to_string())
            .await?)
    }

    /// Asks the registry to link a blob it holds in `from`'s repository into `target`'s: no upload.
    pub async fn mount_blob(
        &self,
        target: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<(), FetchError> {
        Ok(self
            .oci
            .mount_blob(&to_oci(target), &to_oci(from), &digest.to_string())
            .await?)
    }

    /// Uploads a blob from a reader, in chunks, never holding it whole in memory.
    pub async fn push_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<(), FetchError> {
        let chunks = futures_util::stream::unfold(Some(reader), |reader| async move {
            let mut reader = reader?;
            let mut buffer = vec![0u8; PUSH_CHUNK];
            match crate::io::read_full(&mut reader, &mut buffer) {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok(bytes::Bytes::from(buffer)), Some(reader)))
                }
                Err(e) => Some((
                    Err(oci_client::errors::OciDistributionError::IoError(e)),
                    None,
                )),
            }
        });
        self.oci
            .push_blob_stream(&to_oci(target), chunks, &digest.to_string(), Some(size))
            .await?;
        Ok(())
    }

    /// Puts a manifest's exact bytes, so the registry files it under the same digest. A tagged target is
    /// pushed by tag: oci-client panics on registries that answer a digest push without a Location (ECR).
    pub async fn push_manifest(
        &self,
        target: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), FetchError> {
        let target = &target.by_tag_if_tagged();
        let content_type =
            reqwest::header::HeaderValue::from_str(media_type).map_err(|_| FetchError::Status {
                status: 400,
                retry_after: None,
            })?;
        self.oci
            .push_manifest_raw(&to_oci(target), bytes, content_type)
            .await?;
        Ok(())
    }
}

/// Chunks of an upload: large enough for few round trips, small enough to keep memory flat.
const PUSH_CHUNK: usize = 8 << 20;

/// The host oci-client contacts for a reference (Docker Hub's API lives at index.docker.io).
fn oci_host(location: &Reference) -> String {
    to_oci(location).resolve_registry().to_string()
}

fn to_oci(reference: &Reference) -> oci_client::Reference {
    let (registry, repository) = (
        reference.registry().to_string(),
        reference.repository().to_string(),
    );
    match (reference.tag(), reference.digest()) {
        (_, Some(digest)) => {
            oci_client::Reference::with_digest(registry, repository, digest.to_string())
        }
        (Some(tag), None) => oci_client::Reference::with_tag(registry, repository, tag.to_string()),
        (None, None) => oci_client::Reference::with_tag(registry, repository, "latest".to_string()),
    }
}

/// Whether `host` answers the registry API's root over `scheme` at all (any status will do).
async fn answers(http: &reqwest::Client, scheme: &str, host: &str) -> bool {
    http.get(format!("{scheme}://{host}/v2/"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .is_ok()
}
