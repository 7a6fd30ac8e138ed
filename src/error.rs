//! The one error type commands return, and the one place that decides its exit code.

use crate::bundle::BundleError;
use crate::cache::CacheError;
use crate::catalog::CatalogError;
use crate::deliver::load::LoadError;
use crate::deliver::merge::MergeError;
use crate::deliver::push::PushError;
use crate::fetch::{FetchStageError, VendorError};
use crate::interrupt::Interrupted;
use crate::k8s::VersionError;
use crate::reference::ReferenceError;
use crate::registry::RegistryError;
use crate::resolve::named::NamedError;
use crate::resolve::site::SiteError;
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
    /// Images named in list files and manifests.
    #[error(transparent)]
    Named(#[from] NamedError),
    #[error(transparent)]
    Site(#[from] SiteError),
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Fetch(#[from] FetchStageError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Merge(#[from] MergeError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{} is damaged or incomplete", .0.display())]
    Damaged(std::path::PathBuf),
    /// A bundle that cannot be read through: its message names the file, and the part and offset.
    #[error(transparent)]
    Unreadable(ReadError),
    /// A damaged bundle with recovery data beside it, and what that data can do.
    #[error("{} is damaged: {check}", .path.display())]
    DamagedWithRecovery {
        path: std::path::PathBuf,
        check: crate::verify::RecoveryCheck,
        #[source]
        cause: Option<ReadError>,
    },
    #[error(transparent)]
    Recovery(#[from] crate::recovery::RecoveryError),
    #[error(transparent)]
    Repair(#[from] crate::repair::RepairError),
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
            Error::Fetch(error) => fetch_exit_code(error),
            Error::Registry(RegistryError::BadMirror { .. } | RegistryError::CaFile(_)) => {
                EXIT_USAGE
            }
            Error::Tarball(TarballError::Target(_))
            | Error::Merge(
                MergeError::Tarball(TarballError::Target(_))
                | MergeError::NotADelta(_)
                | MergeError::OverInput { .. },
            ) => EXIT_USAGE,
            Error::Interrupted(stop) => stop.exit_code(),
            Error::Unreadable(ReadError::Open { .. } | ReadError::NotABundle { .. })
            | Error::Input { .. } => EXIT_USAGE,
            Error::Push(PushError::Mapping(_) | PushError::Compressed(_))
            | Error::Load(
                LoadError::NoRuntime { .. }
                | LoadError::ContainerdNotFound { .. }
                | LoadError::Platform { .. }
                | LoadError::Compressed(_),
            ) => EXIT_USAGE,
            Error::Serve(
                ServeError::Compressed(_)
                | ServeError::Conflict { .. }
                | ServeError::Htpasswd { .. }
                | ServeError::Tls { .. },
            ) => EXIT_USAGE,
            Error::Trust(
                TrustError::Read { .. }
                | TrustError::EmptyEnvironment
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
            | Error::Cache(_)
            | Error::Tarball(_)
            | Error::Push(_)
            | Error::Load(_)
            | Error::Merge(_)
            | Error::Serve(_)
            | Error::Damaged(_)
            | Error::DamagedWithRecovery { .. }
            | Error::Recovery(_)
            | Error::Repair(_)
            | Error::Unreadable(_)
            | Error::Io { .. }
            | Error::Runtime(_) => EXIT_FAILURE,
            Error::Catalog(_)
            | Error::Resolve(_)
            | Error::Named(_)
            | Error::Site(_)
            | Error::Version(_)
            | Error::Reference(_)
            | Error::Check(_)
            | Error::Usage(_) => EXIT_USAGE,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A fetch fails for the user's input when a source the command line names is wrong; both sources
/// failing give the higher code.
fn fetch_exit_code(error: &FetchStageError) -> u8 {
    match error {
        FetchStageError::Import(import) => vendor_exit_code(import),
        FetchStageError::Both { import, .. } => vendor_exit_code(import),
        FetchStageError::Interrupted(stop) => stop.exit_code(),
        FetchStageError::Source(_) | FetchStageError::WrongPlatform { .. } => EXIT_USAGE,
        FetchStageError::Pull(_) | FetchStageError::Cache(_) => EXIT_FAILURE,
    }
}

/// Vendor images the directories lack or hold twice are the user's input; several failures give the
/// highest code among them.
fn vendor_exit_code(error: &VendorError) -> u8 {
    match error {
        VendorError::Missing { .. } | VendorError::Dir { .. } | VendorError::Conflict { .. } => {
            EXIT_USAGE
        }
        VendorError::Several(errors) => errors
            .iter()
            .map(vendor_exit_code)
            .max()
            .unwrap_or(EXIT_FAILURE),
        _ => EXIT_FAILURE,
    }
}

/// A build's errors are said and counted as those of the stage that failed.
impl From<BundleError> for Error {
    fn from(error: BundleError) -> Self {
        match error {
            BundleError::Fetch(error) => Error::Fetch(error),
            BundleError::Tarball(error) => Error::Tarball(error),
            BundleError::Trust(error) => Error::Trust(error),
            BundleError::Cache(error) => Error::Cache(error),
            BundleError::Resolve(error) => Error::Resolve(error),
            usage @ BundleError::LockOfSeveral(_) => Error::Usage(usage.to_string()),
        }
    }
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
