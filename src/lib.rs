//! ferry: carry container images across an air gap.
//!
//! The modules follow the pipeline:
//! - naming: `reference` (Docker-normalized image references), `digest`, `image` (descriptors, manifests);
//! - resolving: `k8s` (versions and ranges), `catalog` (vendor tables), `resolve` (rows for a version);
//! - fetching: `registry` (auth, TLS, retries, transfers), `cache` (verified blob store), `pull`,
//!   `vendor` (docker-save tarballs), `fetch` (plans and the two sources together);
//! - the bundle: `tarball` (writer and strict reader), `verify` (proof of integrity and completeness);
//! - delivering: `deliver` (push to a registry, load into a runtime);
//! - the edges: `progress` (the only terminal code), `cli` (arguments), `commands` (one per subcommand),
//!   `error` (exit codes).

// Errors carry their subjects (paths, digests, references) and causes; they are returned once per
// failed run, so their size costs nothing measurable, and boxing them would only blur the types.
#![allow(clippy::result_large_err)]

pub mod cache;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod deliver;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod image;
pub mod io;
pub mod k8s;
pub mod progress;
pub mod pull;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod tarball;
pub mod vendor;
pub mod verify;

pub use error::{Error, Result};
