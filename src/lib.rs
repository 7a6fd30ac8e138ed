//! ferry: carry container images across an air gap.
//!
//! The pipeline is resolve → fetch → bundle → verify → deliver, one folder per stage named after it.
//! The module map, from the top down: a module imports only modules on the lines below its own, never
//! one above it, and modules on one line do not import each other.
//!
//! 1. `commands`: one function per subcommand, turning arguments into library calls and printing results;
//! 2. `cli` (arguments, mapped to the library's types; the passphrase prompt is in `commands`), `error`
//!    (every error as one message and an exit code);
//! 3. `bundle` (the pipeline: plans to bundles on disk, one call), `deliver` (push a verified bundle into
//!    a registry, load it into a runtime), `serve` (verified bundles as a read-only registry), `repair`
//!    (a damaged bundle rebuilt from its recovery data, accepted only if it matches its `.sha256`);
//! 4. `trust`: signatures and locks, proof that it is the bundle that was built;
//! 5. `verify` (proof that a bundle is intact and complete, and the only maker of `Verified`), `fetch`
//!    (a plan's images into the cache: `pull` from registries, `import` from the vendor's tarballs);
//! 6. `tarball`: the bundle on disk: its `layout` types, the writer, the strict reader, `ferry.json`;
//! 7. `resolve` (rows for a version, and the plans: which bundles hold which images), `registry` (auth,
//!    TLS, retries, transfers), `cache` (the verified blob store and its notes), `recovery` (PAR2 recovery
//!    data beside a bundle's files: written, checked, and repairing them byte-exact);
//! 8. `catalog` (the vendors' tables), `image` (descriptors, manifests, platforms);
//! 9. `reference` (Docker-normalized image references), `layer_codec` (what a layer's content hashes to,
//!    through gzip or zstd, and the one compression setting);
//! 10. the leaves: `digest`, `k8s` (versions and ranges), `progress` (the `Reporter` trait, and the only
//!     terminal code), `interrupt` (signals, a call's cancellation, sweeping what killed runs left),
//!     `causes` (an error and its causes on one line), `io`.

#![forbid(unsafe_code)]
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

pub mod bundle;
pub mod cache;
pub mod catalog;
pub mod causes;
pub mod cli;
pub mod commands;
pub mod deliver;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod image;
pub mod interrupt;
pub mod io;
pub mod k8s;
pub mod layer_codec;
pub mod progress;
pub mod recovery;
pub mod reference;
pub mod registry;
pub mod repair;
pub mod resolve;
pub mod serve;
pub mod tarball;
#[cfg(test)]
mod testutil;
pub mod trust;
pub mod verify;

pub use error::{Error, Result};
