//! Reading what registries and token services answer, and what a failed request means: bodies within a
//! limit, their own words in an error body, `Retry-After`, and the failures that no retry can mend (a
//! certificate this machine refuses, a name that does not exist) told apart from those it can.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::Response;

use super::error::FetchError;
use super::retry::parse_retry_after;
use super::tls::{causes, handshake_failure, Untrusted};

/// The most of an error body ferry reads for the registry's message.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// What the name lookup says when a name does not exist (EAI_NONAME, EAI_NODATA), as glibc and musl
/// word it; std hands it on only as text. A resolver that cannot be reached says something else
/// ("Temporary failure in name resolution"), which is worth another try.
const NO_SUCH_NAME: &[&str] = &[
    "Name or service not known",
    "No address associated with hostname",
    "Name does not resolve",
];

impl From<reqwest::Error> for FetchError {
    fn from(error: reqwest::Error) -> Self {
        let host = error.url().map(host_of).unwrap_or_default();
        if let Some(cause @ rustls::Error::InvalidCertificate(_)) = handshake_failure(&error) {
            return FetchError::Untrusted(Untrusted {
                host,
                cause: cause.clone(),
            });
        }
        let lookup = causes(&error)
            .map(|cause| cause.to_string())
            .find(|text| NO_SUCH_NAME.iter().any(|said| text.contains(said)));
        if let Some(cause) = lookup {
            let name = error.url().and_then(|u| u.host_str()).unwrap_or_default();
            return FetchError::NoSuchHost {
                host: name.to_string(),
                cause,
            };
        }
        FetchError::Network(error)
    }
}

/// `HOST[:PORT]` of a URL, as registries are named.
pub(super) fn host_of(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::retry::{Classify, Verdict};

    #[test]
    fn a_request_that_cannot_be_built_is_not_retried() {
        let error = reqwest::Client::new()
            .get("http://bad host/v2/")
            .build()
            .unwrap_err();
        assert!(error.is_builder(), "{error:?}");
        assert_eq!(FetchError::from(error).verdict(), Verdict::Fatal);
    }
}
