//! Talking to OCI registries: where to fetch an image from (mirrors, frozen registries), credentials,
//! TLS, retries, and the transfer of manifests and blobs.
//!
//! From the ground up: `scope`, `auth` (credentials), `retry` and `tls` know nothing of the others;
//! `error` names what goes wrong; `response` reads answers and failures; `target` and `route` say where
//! images go and come from; `token` authorizes; `client` sends; `download` and `upload` move the bytes.

pub mod auth;
mod client;
mod download;
mod error;
mod probe;
mod response;
pub mod retry;
mod route;
mod scope;
mod target;
mod tls;
mod token;
mod upload;

pub use client::RegistryClient;
pub use error::{Asked, FetchError, Refusal, RefusalKind, RegistryError};
pub use route::{Location, RegistryOptions};
pub use scope::Scope;
pub use target::{Mirror, Target};
pub use tls::{CaFileError, Untrusted};
pub use upload::Mount;
