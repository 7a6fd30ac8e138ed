//! Fetching from a registry: manifests (their exact bytes, checked against the digest asked for or the
//! one the registry names) and blob downloads that resume where an earlier answer stopped.

use reqwest::header::{HeaderMap, ACCEPT, CONTENT_RANGE, RANGE};
use reqwest::{Response, StatusCode};

use super::client::{manifest_path, RegistryClient};
use super::error::FetchError;
use super::response::read_limited;
use super::scope::Scope;
use crate::digest::Digest;
use crate::image::{limits, media};
use crate::reference::Reference;

/// The header in which a registry names the digest of the manifest it sends.
const CONTENT_DIGEST: &str = "Docker-Content-Digest";

impl RegistryClient {
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
        let named: Option<Digest> = response
            .headers()
            .get(CONTENT_DIGEST)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let bytes = read_limited(response, limits::MAX_MANIFEST, "manifest").await?;
        let actual = Digest::of(&bytes);
        match (location.digest(), named) {
            // Asked for by digest, a manifest must have it, whatever the header says.
            (Some(expected), _) if actual != *expected => Err(FetchError::WrongManifest {
                expected: expected.clone(),
                actual,
            }),
            // Asked for by tag, the registry's own word on the digest is what containerd holds it to.
            (None, Some(header)) if header != actual => {
                Err(FetchError::DigestHeader { header, actual })
            }
            _ => Ok(bytes),
        }
    }

    /// Starts a download of blob `digest` (`size` bytes) at `offset`; the response is 206 when the
    /// registry resumed, 200 when it sends the whole blob. A registry whose copy is longer than the
    /// manifest says, or shorter when it answers a second time, is found out here, before any byte is
    /// stored. An answer that declares fewer bytes than the blob has is taken: its bytes are kept, and the
    /// rest is asked for with a Range request, as after a cut connection.
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
        let wrong_size = |served| FetchError::BlobSize {
            served,
            expected: size,
        };
        match response.status() {
            status @ (StatusCode::OK | StatusCode::PARTIAL_CONTENT) => {
                let resumed = status == StatusCode::PARTIAL_CONTENT;
                let start = if resumed { offset } else { 0 };
                let end = response
                    .content_length()
                    .map(|length| start.saturating_add(length));
                let whole = resumed.then(|| whole_length(response.headers())).flatten();
                match (whole, end) {
                    (Some(whole), _) if whole != size => Err(wrong_size(whole)),
                    (_, Some(end)) if end > size => Err(wrong_size(end)),
                    // Asked for the rest, it sent its whole copy again, still short.
                    (_, Some(end)) if end < size && offset > 0 && !resumed => Err(wrong_size(end)),
                    _ => Ok(response),
                }
            }
            // `Content-Range: bytes */LENGTH`: the registry holds fewer bytes than the resume asked for.
            StatusCode::RANGE_NOT_SATISFIABLE => match whole_length(response.headers()) {
                Some(served) if served != size => Err(wrong_size(served)),
                _ => Err(self.failure(response, registry, scope).await),
            },
            _ => Err(self.failure(response, registry, scope).await),
        }
    }
}

/// The whole length in `Content-Range: bytes FIRST-LAST/LENGTH` or `bytes */LENGTH`.
fn whole_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit_once('/'))
        .and_then(|(_, length)| length.trim().parse().ok())
}
