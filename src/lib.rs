//! ferry: carry container images across an air gap.
//!
//! The modules follow the pipeline:
//! - naming: `reference` (Docker-normalized image references), `digest`, `image` (descriptors, manifests);
//! - resolving: `k8s` (versions and ranges), `catalog` (vendor tables), `resolve` (rows for a version, and
//!   the plans: which bundles hold which images);
//! - fetching: `registry` (auth, TLS, retries, transfers), `cache` (verified blob store), `pull`,
//!   `import` (vendor docker-save tarballs), `fetch` (the two sources together);
//! - the bundle: `tarball` (writer and strict reader), `verify` (proof of integrity and completeness),
//!   `trust` (signatures and locks: proof that it is the bundle that was built);
//!   `layer_codec` (what a layer's content hashes to, through gzip or zstd); `recovery` (PAR2 recovery
//!   data: written beside a bundle, and repairing it byte-exact);
//! - delivering: `deliver` (push to a registry, load into a runtime), `serve` (bundles as a
//!   registry);
//! - the edges: `progress` (the only terminal code), `cli` (arguments), `commands` (one per subcommand),
//!   `error` (exit codes), `interrupt` (signals, and sweeping what killed runs left behind).

// Errors carry their subjects (paths, digests, references) and causes; they are returned once per
// failed run, so their size costs nothing measurable, and boxing them would only blur the types.
#![allow(clippy::result_large_err)]

/// Serializes a type as its `Display` string and deserializes it through `FromStr`, so JSON and TOML
/// carry `sha256:…`, `1.28` and `registry/repo:tag` as people write them, and parsing validates them.
macro_rules! serde_as_string {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

pub mod cache;
pub mod catalog;
pub mod cli;
pub mod commands;
pub mod deliver;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod image;
pub mod import;
pub mod interrupt;
pub mod io;
pub mod k8s;
pub mod layer_codec;
pub mod progress;
pub mod pull;
pub mod recovery;
pub mod reference;
pub mod registry;
pub mod resolve;
pub mod serve;
pub mod tarball;
pub mod trust;
pub mod verify;

pub use error::{Error, Result};
