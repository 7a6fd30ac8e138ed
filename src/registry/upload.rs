//! Pushing into a registry: blob checks, cross-repository mounts, chunked uploads and manifests, each
//! request authorized (and, after a 401, re-authorized once) through [`RegistryClient::send`].
//!
//! Uploads go in chunks of [`PUSH_CHUNK`] bytes, so a token that expires in the middle of a large blob
//! costs one chunk sent again, not the blob, and memory stays flat.

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION};
use reqwest::{Response, StatusCode, Url};

use super::client::{manifest_path, RegistryClient};
use super::error::FetchError;
use super::scope::Scope;
use crate::digest::Digest;
use crate::reference::Reference;

/// Chunks of an upload: large enough for few round trips, small enough to keep memory flat.
const PUSH_CHUNK: usize = 8 << 20;

/// What a registry did with a mount request.
pub enum Mount {
    Mounted,
    /// It declined (it may not know the source) and opened an upload session instead, to be used.
    Declined(Url),
}

impl RegistryClient {
    pub async fn blob_exists(
        &self,
        target: &Reference,
        digest: &Digest,
    ) -> Result<bool, FetchError> {
        let registry = target.registry();
        let url = self.url(target, &format!("blobs/{digest}"));
        let scope = Scope::push(target.repository());
        let response = self
            .send(registry, std::slice::from_ref(&scope), |http| {
                http.head(&url)
            })
            .await?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            refused => {
                // An answer to HEAD has no body, so the registry's reason is asked for with a GET.
                let said = self
                    .send(registry, std::slice::from_ref(&scope), |http| {
                        http.get(&url)
                    })
                    .await?;
                let response = if said.status() == refused {
                    said
                } else {
                    response
                };
                Err(self.failure(response, registry, scope).await)
            }
        }
    }

    /// Asks the registry to link a blob it holds in `from`'s repository into `target`'s: no upload. The
    /// token must grant `pull` on the source as well as `push` on the target, or the registry refuses.
    pub async fn mount_blob(
        &self,
        target: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Result<Mount, FetchError> {
        let registry = target.registry();
        let mut url = self.uploads_url(target)?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", from.repository());
        let scope = Scope::push(target.repository());
        let scopes = [scope.clone(), Scope::pull(from.repository())];
        let response = self
            .send(registry, &scopes, |http| {
                http.post(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        match response.status() {
            StatusCode::CREATED => Ok(Mount::Mounted),
            StatusCode::ACCEPTED => Ok(Mount::Declined(next_location(registry, &url, &response)?)),
            _ => Err(self.failure(response, registry, scope).await),
        }
    }

    /// Uploads a blob from a reader, chunk by chunk, into `session` (an upload the registry opened when
    /// it declined a mount) or a new one. A failed upload's session is closed, not left open.
    pub async fn push_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        size: u64,
        session: Option<Url>,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<(), FetchError> {
        let registry = target.registry();
        let scopes = [Scope::push(target.repository())];
        let session = match session {
            Some(session) => session,
            None => {
                let url = self.uploads_url(target)?;
                let response = self
                    .send(registry, &scopes, |http| {
                        http.post(url.clone()).header(CONTENT_LENGTH, 0)
                    })
                    .await?;
                if response.status() != StatusCode::ACCEPTED {
                    return Err(self.failure(response, registry, scopes[0].clone()).await);
                }
                next_location(registry, &url, &response)?
            }
        };
        let mut location = session;
        let result = self
            .upload_chunks(target, &mut location, digest, size, reader)
            .await;
        if result.is_err() {
            // Best effort: the registry would expire the session on its own, later.
            let _ = self
                .send(registry, &scopes, |http| http.delete(location.clone()))
                .await;
        }
        result
    }

    async fn upload_chunks(
        &self,
        target: &Reference,
        location: &mut Url,
        digest: &Digest,
        size: u64,
        reader: impl std::io::Read + Send + 'static,
    ) -> Result<(), FetchError> {
        let registry = target.registry();
        let scopes = [Scope::push(target.repository())];
        let mut reader = Some(reader);
        let mut offset: u64 = 0;
        loop {
            let mut source = reader.take().expect("returned by the last read");
            let (source, chunk) = tokio::task::spawn_blocking(move || {
                let mut buffer = vec![0u8; PUSH_CHUNK];
                let n = crate::io::read_full(&mut source, &mut buffer)?;
                buffer.truncate(n);
                Ok::<_, std::io::Error>((source, Bytes::from(buffer)))
            })
            .await
            .expect("reading the bundle does not panic")
            .map_err(FetchError::Bundle)?;
            reader = Some(source);
            if chunk.is_empty() {
                break;
            }
            let end = offset + chunk.len() as u64 - 1;
            let url = location.clone();
            let response = self
                .send(registry, &scopes, |http| {
                    http.patch(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_RANGE, format!("{offset}-{end}"))
                        .header(CONTENT_LENGTH, chunk.len())
                        .body(chunk.clone())
                })
                .await?;
            if response.status() != StatusCode::ACCEPTED {
                return Err(self.failure(response, registry, scopes[0].clone()).await);
            }
            *location = next_location(registry, &url, &response)?;
            offset = end + 1;
        }
        if offset != size {
            return Err(FetchError::Bundle(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("blob {digest} ended after {offset} of {size} bytes"),
            )));
        }
        let mut url = location.clone();
        url.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .send(registry, &scopes, |http| {
                http.put(url.clone()).header(CONTENT_LENGTH, 0)
            })
            .await?;
        if response.status() != StatusCode::CREATED {
            return Err(self.failure(response, registry, scopes[0].clone()).await);
        }
        Ok(())
    }

    /// Puts a manifest's exact bytes, so the registry files it under the same digest; a tagged target is
    /// pushed by tag.
    pub async fn push_manifest(
        &self,
        target: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
    ) -> Result<(), FetchError> {
        let registry = target.registry();
        let url = self.url(target, &manifest_path(target, true));
        let body = Bytes::from(bytes);
        let scope = Scope::push(target.repository());
        let response = self
            .send(registry, std::slice::from_ref(&scope), |http| {
                http.put(&url)
                    .header(CONTENT_TYPE, media_type)
                    .body(body.clone())
            })
            .await?;
        if !response.status().is_success() {
            return Err(self.failure(response, registry, scope).await);
        }
        Ok(())
    }

    fn uploads_url(&self, target: &Reference) -> Result<Url, FetchError> {
        Url::parse(&self.url(target, "blobs/uploads/")).map_err(|_| FetchError::NoLocation {
            registry: target.registry().to_string(),
            what: "an upload",
        })
    }
}

/// Where an upload continues: the `Location` of the last answer, which may be relative.
fn next_location(registry: &str, base: &Url, response: &Response) -> Result<Url, FetchError> {
    response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| base.join(v).ok())
        .ok_or_else(|| FetchError::NoLocation {
            registry: registry.to_string(),
            what: "an upload",
        })
}
