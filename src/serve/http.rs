//! The read-only OCI Distribution API over [`Content`]: `/v2/`, manifests, blobs (with `Range`), tag
//! lists, the catalog and referrers. Writes are refused with the protocol's `UNSUPPORTED` error. Every
//! request passes [`admit`] (a `Host`, a read method, credentials) before it is routed; only a blob body
//! takes a transfer slot, after all of that.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::Query;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Version};
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::auth::{Htpasswd, Verdict};
use super::blob::Transfer;
use super::chunks::Chunks;
use super::content::{tags, Content, Referrer, ServedImage, Unknown};
use super::range::byte_range;
use super::response::{json_response, next_link, paginate, refuse, value, Refusal};
use super::routes::{route, Route};
use super::slots::Slots;
use super::stats::Stats;
use crate::digest::Digest;
use crate::image::media;

/// What every request shares.
pub struct Server {
    pub content: Arc<Content>,
    pub auth: Option<Htpasswd>,
    /// Taken by blob bodies only, until sent.
    pub slots: Slots,
    pub chunks: Chunks,
    pub stats: Arc<Stats>,
}

/// The query parameters clients send: containerd's `ns`, pagination, and the referrers filter.
#[derive(Debug, Default, Deserialize)]
struct Params {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
    #[serde(rename = "artifactType")]
    artifact_type: Option<String>,
}

#[derive(Serialize)]
struct Catalog<'a> {
    repositories: &'a [String],
}

#[derive(Serialize)]
struct TagList<'a> {
    name: &'a str,
    tags: &'a [String],
}

/// The answer to a referrers request: an OCI image index.
#[derive(Serialize)]
struct ReferrersIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType")]
    media_type: &'static str,
    manifests: Vec<Referrer>,
}

/// Answers one request from `peer`, and logs it at debug level.
pub async fn handle(server: &Server, peer: SocketAddr, request: &Parts) -> Response {
    let started = Instant::now();
    Stats::count(&server.stats.requests);
    let mut response = match answer(server, peer, request).await {
        Ok(response) => response,
        Err(refusal) => {
            Stats::count(match refusal.status {
                StatusCode::NOT_FOUND => &server.stats.not_found,
                _ => &server.stats.refused,
            });
            refusal.into_response()
        }
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    tracing::debug!(
        "{peer} {} {} -> {}{} in {:.1} ms",
        request.method,
        request.uri,
        response.status().as_u16(),
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .map_or(String::new(), |l| format!(", {l} bytes")),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

async fn answer(server: &Server, peer: SocketAddr, request: &Parts) -> Result<Response, Refusal> {
    admit(server, peer, request).await?;
    let head = request.method == Method::HEAD;
    let params = Query::<Params>::try_from_uri(&request.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let path = request.uri.path();
    let route = route(path).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no such registry API path: {}", path.escape_debug()),
        )
    })?;
    let content = &server.content;
    match route {
        Route::Base => Ok(json_response(&serde_json::json!({}), HeaderMap::new())),
        Route::Catalog => {
            let names = content.catalog();
            let (page, more) = paginate(&names, params.n.as_deref(), params.last.as_deref())?;
            Ok(json_response(
                &Catalog { repositories: page },
                next_link("/v2/_catalog", page, more),
            ))
        }
        Route::Tags(name) => {
            let tags = tags(&repository(content, name, &params)?);
            let (page, more) = paginate(&tags, params.n.as_deref(), params.last.as_deref())?;
            Ok(json_response(
                &TagList { name, tags: page },
                next_link(&format!("/v2/{name}/tags/list"), page, more),
            ))
        }
        Route::Manifest(name, reference) => manifest(server, name, reference, &params, head),
        Route::Referrers(name, reference) => referrers(content, name, reference, &params),
        Route::Blob(name, reference) => {
            let images = repository(content, name, &params)?;
            blob(
                server,
                peer,
                &images,
                name,
                reference,
                &request.headers,
                head,
            )
            .await
        }
    }
}

/// What every request must have before it is routed: a `Host` (HTTP/1.1 requires one), a read method, and
/// credentials when `--htpasswd` asks for them.
async fn admit(server: &Server, peer: SocketAddr, request: &Parts) -> Result<(), Refusal> {
    if request.version == Version::HTTP_11 && !request.headers.contains_key(header::HOST) {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "UNSUPPORTED",
            "an HTTP/1.1 request must carry a Host header",
        ));
    }
    let method = &request.method;
    if method != Method::GET && method != Method::HEAD {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!(
                "ferry serve is read-only: {method} is refused, and the bundles are never written"
            ),
        ));
    }
    let Some(auth) = &server.auth else {
        return Ok(());
    };
    let given = request
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match auth.check(given, peer.ip()).await {
        Verdict::Allowed => Ok(()),
        Verdict::Refused => Err(refuse(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
        )
        .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"ferry serve\"")),
        Verdict::Wait(wait) => {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "TOOMANYREQUESTS",
                format!(
                    "too many failed logins from {}: try again in {seconds} s",
                    peer.ip()
                ),
            )
            .with_header(header::RETRY_AFTER, &seconds.to_string()))
        }
    }
}

/// The images a client means by repository `name` (see [`Content::repository`]); none is a 404.
fn repository<'c>(
    content: &'c Content,
    name: &str,
    params: &Params,
) -> Result<Vec<&'c ServedImage>, Refusal> {
    let ns = params.ns.as_deref();
    let images = content.repository(name, ns);
    if images.is_empty() {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "repository {}{} is not in the bundle(s)",
                name.escape_debug(),
                ns.map_or(String::new(), |ns| format!(" of {}", ns.escape_debug()))
            ),
        ));
    }
    Ok(images)
}

fn digest_of(reference: &str) -> Result<Digest, Refusal> {
    reference.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "DIGEST_INVALID",
            format!("{} is not a sha256 digest", reference.escape_debug()),
        )
    })
}

fn manifest(
    server: &Server,
    name: &str,
    reference: &str,
    params: &Params,
    head: bool,
) -> Result<Response, Refusal> {
    let images = repository(&server.content, name, params)?;
    let unknown = |message: String| refuse(StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN", message);
    let (name, reference_text) = (name.escape_debug(), reference.escape_debug());
    let (digest, document) = server
        .content
        .manifest(&images, reference)
        .map_err(|why| match why {
            Unknown::Manifest => unknown(format!("{name}:{reference_text} is not in the bundle(s)")),
            Unknown::Ambiguous(names) => unknown(format!(
                "{name}:{reference_text} is ambiguous: it may be {}; ask with ?ns=REGISTRY or as REGISTRY/{name}",
                names.join(" or "),
            )),
        })?;
    Stats::count(&server.stats.manifests);
    let mut response = Response::new(if head {
        Body::empty()
    } else {
        Body::from(document.bytes.clone())
    });
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, value(&document.media_type));
    headers.insert(header::CONTENT_LENGTH, document.bytes.len().into());
    headers.insert("docker-content-digest", value(&digest.to_string()));
    Ok(response)
}

/// The manifests that name `reference` as their subject, as an image index (empty when there are none).
fn referrers(
    content: &Content,
    name: &str,
    reference: &str,
    params: &Params,
) -> Result<Response, Refusal> {
    let images = repository(content, name, params)?;
    let digest = digest_of(reference)?;
    let filter = params.artifact_type.as_deref();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(media::OCI_INDEX),
    );
    if filter.is_some() {
        headers.insert(
            "oci-filters-applied",
            HeaderValue::from_static("artifactType"),
        );
    }
    Ok(json_response(
        &ReferrersIndex {
            schema_version: 2,
            media_type: media::OCI_INDEX,
            manifests: content.referrers(&images, &digest, filter),
        },
        headers,
    ))
}

/// A blob, whole or the one range asked; the body waits for a transfer slot of `peer`'s share.
async fn blob(
    server: &Server,
    peer: SocketAddr,
    images: &[&ServedImage],
    name: &str,
    reference: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response, Refusal> {
    let digest = digest_of(reference)?;
    let at = server.content.blob(images, &digest).ok_or_else(|| {
        refuse(
            StatusCode::NOT_FOUND,
            "BLOB_UNKNOWN",
            format!("{name} has no blob {digest}"),
        )
    })?;
    let range = match headers.get(header::RANGE) {
        None => None,
        Some(asked) => Some(
            asked
                .to_str()
                .ok()
                .and_then(|text| byte_range(text, at.size))
                .ok_or_else(|| {
                    refuse(
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        "UNSUPPORTED",
                        format!(
                            "Range {} is not one byte range within blob {digest} ({} bytes): \
                             ask bytes=A-B, bytes=A- or bytes=-N",
                            String::from_utf8_lossy(asked.as_bytes()).escape_debug(),
                            at.size
                        ),
                    )
                    .with_header(header::CONTENT_RANGE, &format!("bytes */{}", at.size))
                })?,
        ),
    };
    let (start, end) = range.unwrap_or((0, at.size));
    Stats::count(&server.stats.blobs);
    let body = if head || start == end {
        Body::empty()
    } else {
        let slot = server.slots.take(peer.ip()).await;
        let hashes = server
            .chunks
            .of(&server.content, &digest, at)
            .await
            .map_err(|_| {
                refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "BLOB_UNKNOWN",
                    format!(
                        "blob {digest} changed in its bundle since it was verified: not served"
                    ),
                )
            })?;
        Body::from_stream(
            Transfer {
                content: server.content.clone(),
                stats: server.stats.clone(),
                at,
                digest: digest.clone(),
                hashes,
                start,
                end,
                _slot: slot,
            }
            .into_stream(),
        )
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, (end - start).into());
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert("docker-content-digest", value(&digest.to_string()));
    if range.is_some() {
        headers.insert(
            header::CONTENT_RANGE,
            value(&format!("bytes {start}-{}/{}", end - 1, at.size)),
        );
        *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    }
    Ok(response)
}
