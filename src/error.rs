//! The one error type commands return, and the one place that decides its exit code.

use crate::cache::CacheError;
use crate::catalog::CatalogError;
use crate::deliver::load::LoadError;
use crate::deliver::push::PushError;
use crate::fetch::VendorSourceError;
use crate::import::VendorError;
use crate::interrupt::Interrupted;
use crate::k8s::VersionError;
use crate::pull::PullError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::resolve::ResolveError;
use crate::serve::ServeError;
use crate::tarball::read::ReadError;
use crate::tarball::TarballError;
use crate::trust::TrustError;
use crate::verify::VerifyError;

/// Exit codes: 0 success, 1 the job failed (network, disk, a damaged bundle), 2 the input was wrong,
/// 128 + N stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error(transparent)]
    Version(#[from] VersionError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Vendor(#[from] VendorError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    VendorSource(#[from] VendorSourceError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{} is damaged or incomplete", .0.display())]
    Damaged(std::path::PathBuf),
    #[error("the bundle is damaged")]
    Unreadable(#[source] ReadError),
    #[error("{0}")]
    Usage(String),
    /// A check the user asked for that cannot be made (`verify --k8s` with a version the release lacks).
    #[error(transparent)]
    Check(VerifyError),
    #[error("cannot read {path}")]
    Input {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|e| chain(e)).collect::<Vec<_>>().join("\n"))]
    Several(Vec<Error>),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write output")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Several(errors) => errors
                .iter()
                .map(Error::exit_code)
                .max()
                .unwrap_or(EXIT_FAILURE),
            Error::Registry(RegistryError::BadMirror { .. } | RegistryError::CaFile(_)) => {
                EXIT_USAGE
            }
            Error::Vendor(
                VendorError::Missing { .. }
                | VendorError::Dir { .. }
                | VendorError::Conflict { .. },
            ) => EXIT_USAGE,
            Error::Tarball(TarballError::Target(_)) => EXIT_USAGE,
            Error::Interrupted(stop) => stop.exit_code(),
            Error::Unreadable(ReadError::Open { .. }) | Error::Input { .. } => EXIT_USAGE,
            Error::Push(PushError::Mapping(_) | PushError::Compressed(_))
            | Error::Load(
                LoadError::NoRuntime | LoadError::Platform { .. } | LoadError::Compressed(_),
            ) => EXIT_USAGE,
            Error::Serve(
                ServeError::Compressed(_)
                | ServeError::Conflict { .. }
                | ServeError::Htpasswd { .. }
                | ServeError::Tls { .. },
            ) => EXIT_USAGE,
            Error::Trust(
                TrustError::Read { .. }
                | TrustError::AllowedSigners { .. }
                | TrustError::Key { .. }
                | TrustError::LockFile { .. },
            ) => EXIT_USAGE,
            Error::Trust(
                TrustError::WriteLock { .. }
                | TrustError::LockMoved { .. }
                | TrustError::Refused { .. },
            ) => EXIT_FAILURE,
            Error::Output(_)
            | Error::Registry(_)
            | Error::Pull(_)
            | Error::Cache(_)
            | Error::Tarball(_)
            | Error::Vendor(_)
            | Error::Push(_)
            | Error::Load(_)
            | Error::Serve(_)
            | Error::Damaged(_)
            | Error::Unreadable(_)
            | Error::Io { .. }
            | Error::Runtime(_) => EXIT_FAILURE,
            Error::Catalog(_)
            | Error::Resolve(_)
            | Error::Version(_)
            | Error::Reference(_)
            | Error::VendorSource(_)
            | Error::Check(_)
            | Error::Usage(_) => EXIT_USAGE,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error and its causes on one line, for lists of several failures.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(source) = cause {
        text.push_str(": ");
        text.push_str(&source.to_string());
        cause = source.source();
    }
    text
}

impl From<VerifyError> for Error {
    fn from(error: VerifyError) -> Self {
        match error {
            VerifyError::Read(ReadError::Open { path, source }) => Error::Input { path, source },
            VerifyError::Read(read) => Error::Unreadable(read),
            check @ (VerifyError::Catalog(_) | VerifyError::Kubernetes(_)) => Error::Check(check),
        }
    }
}
