//! ferry: carry container images across an air gap.
//!
//! The modules follow the pipeline: `reference` and `digest` name things; `k8s`, `catalog` and
//! `resolve` decide which images a release needs; `commands` run each subcommand over them.

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
