//! Answers in the registry protocol's terms: JSON bodies, its error format, and pagination links.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

/// A refusal in the registry protocol's terms, with the headers it needs (`Content-Range`, `Retry-After`,
/// `WWW-Authenticate`).
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    headers: HeaderMap,
}

pub fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        headers: HeaderMap::new(),
    }
}

impl Refusal {
    pub fn with_header(mut self, name: HeaderName, text: &str) -> Refusal {
        self.headers.insert(name, value(text));
        self
    }

    pub fn into_response(self) -> Response {
        let mut response = json_response(
            &ErrorBody {
                errors: [ErrorEntry {
                    code: self.code,
                    message: &self.message,
                }],
            },
            self.headers,
        );
        *response.status_mut() = self.status;
        response
    }
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

/// A header value from text ferry made (digests, media types from verified manifests, numbers).
pub fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

pub fn json_response(body: &impl Serialize, headers: HeaderMap) -> Response {
    let bytes = serde_json::to_vec(body).expect("serializes");
    let mut response = Response::new(Body::from(bytes));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().extend(headers);
    response
}

/// The page of `items` after `last`, at most `n` long, and whether more follow.
pub fn paginate<'a>(
    items: &'a [String],
    n: Option<&str>,
    last: Option<&str>,
) -> Result<(&'a [String], bool), Refusal> {
    let start = last.map_or(0, |last| {
        items.partition_point(|item| item.as_str() <= last)
    });
    let rest = &items[start..];
    let Some(n) = n else {
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
pub fn next_link(path: &str, page: &[String], more: bool) -> HeaderMap {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_last_and_n() {
        let items: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let (page, more) = paginate(&items, Some("2"), None).unwrap();
        assert_eq!(page, ["a", "b"]);
        assert!(more);
        assert_eq!(
            next_link("/v2/_catalog", page, more)[header::LINK],
            "</v2/_catalog?last=b&n=2>; rel=\"next\""
        );
        let (page, more) = paginate(&items, Some("2"), Some("b")).unwrap();
        assert_eq!(page, ["c", "d"]);
        assert!(!more);
        assert!(paginate(&items, Some("x"), None).is_err());
    }
}
