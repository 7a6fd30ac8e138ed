//! The read-only OCI Distribution API over [`Content`]: `/v2/`, manifests, blobs (with `Range`), tag lists
//! and the catalog. Writes are refused with the protocol's `UNSUPPORTED` error. One handler parses the
//! path, as repository names contain slashes and routers match segments.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::auth::Htpasswd;
use super::blob::Transfer;
use super::content::{tags, Content, ServedImage, Unknown};
use crate::digest::Digest;

/// What every handler shares.
pub struct Server {
    pub content: Content,
    pub auth: Option<Htpasswd>,
    /// Requests handled at once, blob bodies included until sent; more wait their turn.
    pub transfers: Arc<Semaphore>,
    pub stats: Stats,
}

/// Counters for the summary lines.
#[derive(Debug, Default)]
pub struct Stats {
    pub requests: AtomicU64,
    pub manifests: AtomicU64,
    pub blobs: AtomicU64,
    pub bytes: AtomicU64,
    pub not_found: AtomicU64,
    pub refused: AtomicU64,
}

impl Stats {
    pub fn summary(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} request(s): {} manifest(s), {} blob(s), {} sent; {} not found, {} refused",
            get(&self.requests),
            get(&self.manifests),
            get(&self.blobs),
            crate::progress::DecimalBytes(get(&self.bytes)),
            get(&self.not_found),
            get(&self.refused)
        )
    }
}

/// The query parameters clients send: containerd's `ns`, and pagination.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    ns: Option<String>,
    n: Option<String>,
    last: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    errors: [ErrorEntry<'a>; 1],
}

#[derive(Serialize)]
struct ErrorEntry<'a> {
    code: &'a str,
    message: &'a str,
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

/// A refusal in the registry protocol's terms.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

/// The API paths, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Route<'p> {
    Base,
    Catalog,
    Tags(&'p str),
    Manifest(&'p str, &'p str),
    Blob(&'p str, &'p str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    let (name, kind, reference) = ["/manifests/", "/blobs/"]
        .iter()
        .filter_map(|kind| rest.rfind(kind).map(|at| (at, *kind)))
        .max()
        .map(|(at, kind)| (&rest[..at], kind, &rest[at + kind.len()..]))?;
    if name.is_empty() || reference.is_empty() || reference.contains('/') {
        return None;
    }
    Some(match kind {
        "/manifests/" => Route::Manifest(name, reference),
        _ => Route::Blob(name, reference),
    })
}

pub async fn handle(
    State(server): State<Arc<Server>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let started = Instant::now();
    server.stats.requests.fetch_add(1, Ordering::Relaxed);
    let permit = server
        .transfers
        .clone()
        .acquire_owned()
        .await
        .expect("the semaphore is never closed");
    let params = Query::<Params>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let mut response = match answer(&server, &method, &uri, &params, &headers, permit).await {
        Ok(response) => response,
        Err(refusal) => {
            let counter = match refusal.status {
                StatusCode::NOT_FOUND => &server.stats.not_found,
                _ => &server.stats.refused,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            error_response(&refusal)
        }
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    tracing::debug!(
        "{peer} {method} {uri} -> {}{} in {:.1} ms",
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

async fn answer(
    server: &Arc<Server>,
    method: &Method,
    uri: &Uri,
    params: &Params,
    headers: &HeaderMap,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response, Refusal> {
    if method != Method::GET && method != Method::HEAD {
        return Err(refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "UNSUPPORTED",
            format!(
                "ferry serve is read-only: {method} is refused, and the bundles are never written"
            ),
        ));
    }
    if let Some(auth) = &server.auth {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !auth.allows(given).await {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "authentication required",
            ));
        }
    }
    let head = method == Method::HEAD;
    let path = uri.path();
    let Some(route) = route(path) else {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!("no such registry API path: {}", path.escape_debug()),
        ));
    };
    let ns = params.ns.as_deref();
    let repository = |name: &str| -> Result<Vec<&ServedImage>, Refusal> {
        let images = server.content.repository(name, ns);
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
    };
    match route {
        Route::Base => Ok(json_response(&serde_json::json!({}), HeaderMap::new())),
        Route::Catalog => {
            let names = server.content.catalog();
            let (page, more) = paginate(&names, params)?;
            Ok(json_response(
                &Catalog { repositories: page },
                next_link("/v2/_catalog", page, more),
            ))
        }
        Route::Tags(name) => {
            let images = repository(name)?;
            let tags = tags(&images);
            let (page, more) = paginate(&tags, params)?;
            Ok(json_response(
                &TagList { name, tags: page },
                next_link(&format!("/v2/{name}/tags/list"), page, more),
            ))
        }
        Route::Manifest(name, reference) => {
            let images = repository(name)?;
            let (digest, document) =
                server
                    .content
                    .manifest(&images, reference)
                    .map_err(|unknown| match unknown {
                        Unknown::Manifest => refuse(
                            StatusCode::NOT_FOUND,
                            "MANIFEST_UNKNOWN",
                            format!(
                                "{}:{} is not in the bundle(s)",
                                name.escape_debug(),
                                reference.escape_debug()
                            ),
                        ),
                        Unknown::Ambiguous(names) => refuse(
                            StatusCode::NOT_FOUND,
                            "MANIFEST_UNKNOWN",
                            format!(
                                "{}:{} is ambiguous: it may be {}; ask with ?ns=REGISTRY or as REGISTRY/{}",
                                name.escape_debug(),
                                reference.escape_debug(),
                                names.join(" or "),
                                name.escape_debug()
                            ),
                        ),
                    })?;
            server.stats.manifests.fetch_add(1, Ordering::Relaxed);
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
        Route::Blob(name, reference) => {
            let images = repository(name)?;
            let digest: Digest = reference.parse().map_err(|_| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "DIGEST_INVALID",
                    format!("{} is not a sha256 digest", reference.escape_debug()),
                )
            })?;
            let at = server.content.blob(&images, &digest).ok_or_else(|| {
                refuse(
                    StatusCode::NOT_FOUND,
                    "BLOB_UNKNOWN",
                    format!("{name} has no blob {digest}"),
                )
            })?;
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map_or(Ok(None), |r| byte_range(r, at.size))
                .map_err(|()| Refusal {
                    status: StatusCode::RANGE_NOT_SATISFIABLE,
                    code: "BLOB_UNKNOWN",
                    message: format!("the range is outside blob {digest} ({} bytes)", at.size),
                })?;
            let (start, end) = range.unwrap_or((0, at.size));
            server.stats.blobs.fetch_add(1, Ordering::Relaxed);
            let body = if head || start == end {
                Body::empty()
            } else {
                Body::from_stream(
                    Transfer {
                        server: server.clone(),
                        at,
                        digest: digest.clone(),
                        start,
                        end,
                        _permit: permit,
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
                *response.status_mut() = StatusCode::PARTIAL_CONTENT;
                response.headers_mut().insert(
                    header::CONTENT_RANGE,
                    value(&format!("bytes {start}-{}/{}", end - 1, at.size)),
                );
            }
            Ok(response)
        }
    }
}

/// A header value from text ferry made (digests, media types from verified manifests, numbers).
fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// `Range: bytes=A-B`, `bytes=A-` or `bytes=-N` as `start..end`. A header that is not one such range is
/// ignored (`Ok(None)`: the whole blob, as HTTP allows); one outside the blob is `Err`.
fn byte_range(header: &str, size: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some((first, last)) = header
        .strip_prefix("bytes=")
        .filter(|spec| !spec.contains(','))
        .and_then(|spec| spec.trim().split_once('-'))
    else {
        return Ok(None);
    };
    let number = |text: &str| text.trim().parse::<u64>().ok();
    let (start, end) = match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(suffix)) if suffix > 0 => (size.saturating_sub(suffix), size),
        (false, Some(start), None) if last.trim().is_empty() => (start, size),
        (false, Some(start), Some(last)) if last >= start => {
            (start, last.saturating_add(1).min(size))
        }
        _ => return Ok(None),
    };
    if start >= size {
        return Err(());
    }
    Ok(Some((start, end)))
}

/// The page of `items` after `last`, at most `n` long, and whether more follow.
fn paginate<'a>(items: &'a [String], params: &Params) -> Result<(&'a [String], bool), Refusal> {
    let start = params
        .last
        .as_ref()
        .map_or(0, |last| items.partition_point(|item| item <= last));
    let rest = &items[start..];
    let Some(n) = &params.n else {
        return Ok((rest, false));
    };
    let n: usize = n.parse().map_err(|_| {
        refuse(
            StatusCode::BAD_REQUEST,
            "PAGINATION_NUMBER_INVALID",
            format!("n={} is not a number", n.escape_debug()),
        )
    })?;
    if n >= rest.len() {
        return Ok((rest, false));
    }
    Ok((&rest[..n], true))
}

/// The `Link` to the page after `page`, when `more` follow.
fn next_link(path: &str, page: &[String], more: bool) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let (true, Some(last)) = (more, page.last()) {
        let n = page.len();
        headers.insert(
            header::LINK,
            value(&format!("<{path}?last={last}&n={n}>; rel=\"next\"")),
        );
    }
    headers
}

fn json_response(body: &impl Serialize, headers: HeaderMap) -> Response {
    let bytes = serde_json::to_vec(body).expect("serializes");
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().extend(headers);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error_response(refusal: &Refusal) -> Response {
    let mut response = json_response(
        &ErrorBody {
            errors: [ErrorEntry {
                code: refusal.code,
                message: &refusal.message,
            }],
        },
        HeaderMap::new(),
    );
    *response.status_mut() = refusal.status;
    if refusal.status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"ferry serve\""),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_slashes_in_names_are_routed() {
        assert_eq!(route("/v2/"), Some(Route::Base));
        assert_eq!(route("/v2"), Some(Route::Base));
        assert_eq!(route("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(
            route("/v2/sig-storage/csi-provisioner/manifests/v3.6.0"),
            Some(Route::Manifest("sig-storage/csi-provisioner", "v3.6.0"))
        );
        assert_eq!(
            route("/v2/registry.k8s.io/a/b/tags/list"),
            Some(Route::Tags("registry.k8s.io/a/b"))
        );
        assert_eq!(
            route("/v2/blobs/x/manifests/1"),
            Some(Route::Manifest("blobs/x", "1"))
        );
        assert_eq!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob("a", "sha256:00"))
        );
        assert_eq!(route("/v2/a/blobs/uploads/"), None);
        assert_eq!(route("/v3/a/manifests/1"), None);
    }

    #[test]
    fn ranges_follow_http() {
        assert_eq!(byte_range("bytes=0-9", 100), Ok(Some((0, 10))));
        assert_eq!(byte_range("bytes=90-", 100), Ok(Some((90, 100))));
        assert_eq!(byte_range("bytes=-10", 100), Ok(Some((90, 100))));
        assert_eq!(byte_range("bytes=50-500", 100), Ok(Some((50, 100))));
        assert_eq!(byte_range("bytes=100-", 100), Err(()));
        assert_eq!(byte_range("bytes=0-1,5-6", 100), Ok(None));
        assert_eq!(byte_range("items=0-1", 100), Ok(None));
        assert_eq!(byte_range("bytes=9-1", 100), Ok(None));
    }

    #[test]
    fn pages_follow_last_and_n() {
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let params = |n: Option<&str>, last: Option<&str>| Params {
            ns: None,
            n: n.map(String::from),
            last: last.map(String::from),
        };
        let (page, more) = paginate(&items, &params(Some("2"), None)).ok().unwrap();
        assert_eq!(page, ["a", "b"]);
        assert!(more);
        assert_eq!(
            next_link("/v2/_catalog", page, more)[header::LINK],
            "</v2/_catalog?last=b&n=2>; rel=\"next\""
        );
        let (page, more) = paginate(&items, &params(Some("2"), Some("b")))
            .ok()
            .unwrap();
        assert_eq!(page, ["c", "d"]);
        assert!(!more);
        assert!(paginate(&items, &params(Some("x"), None)).is_err());
    }
}
