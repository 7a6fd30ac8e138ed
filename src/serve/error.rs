//! Why `ferry serve` cannot start: each refusal names the bundle, file or flag.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::digest::Digest;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{} is gzipped; serve reads blobs in place from an uncompressed bundle: gunzip it first",
        .0.display()
    )]
    Compressed(PathBuf),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} changed since it was verified; verify it again", .0.display())]
    Changed(PathBuf),
    #[error("{image}: {reason}")]
    Mapping { image: String, reason: String },
    #[error(
        "{image} is {first} in one bundle and {second} in {}: serve them from two servers",
        .bundle.display()
    )]
    Conflict {
        image: String,
        first: Digest,
        second: Digest,
        bundle: PathBuf,
    },
    #[error("--htpasswd {}: {reason}", .path.display())]
    Htpasswd { path: PathBuf, reason: String },
    #[error("--tls-cert {} / --tls-key {}: not a usable certificate and key", .cert.display(), .key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}
