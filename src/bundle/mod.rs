//! The bundle stage: from plans to bundles on disk, as one call any front end makes. Every image of every
//! plan is fetched once (fetch/), the build is held to its lock, then each plan's images are written as
//! one bundle (tarball/) described by its `ferry.json`; a blob found damaged in the cache while writing
//! is fetched anew, once.
//!
//! What a bundle holds is decided by its [`BundleSpec`] entry alone: its plan, its path, and the bases whose
//! blobs it leaves out (then it is a delta). A plan names any set of images (one release's for a span of
//! Kubernetes versions, images named directly).

use std::path::{Path, PathBuf};

use crate::cache::{BlobStore, CacheError};
use crate::fetch::{fetch, FetchSettings, FetchStageError, Fetched, PullReport, VendorSource};
use crate::image::Image;
use crate::progress::Reporter;
use crate::reference::Reference;
use crate::resolve::{union, Plan, ResolveError};
use crate::tarball::delta::BundleDescription;
use crate::tarball::{
    check_output, write_bundle, write_delta, BundleMetadata, TarballError, WriteOptions, Written,
};
use crate::trust::lock::Lock;
use crate::trust::TrustError;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Fetch(#[from] FetchStageError),
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    #[error("--lock pins the images of one bundle, and this selection makes {0}: lock each Kubernetes version's bundle (--k8s) on its own")]
    LockOfSeveral(usize),
}

/// One bundle to build: the images of `plan`, written at `path`; with bases, a delta that leaves out the
/// blobs they hold.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    pub plan: Plan,
    pub path: PathBuf,
    pub bases: Vec<BundleDescription>,
}

/// A lock file to hold the build to: it pins every image's digest, and is written when absent.
#[derive(Debug, Clone)]
pub struct LockFile {
    pub path: PathBuf,
    /// Rewrite it with the digests resolved now instead of holding the build to it.
    pub update: bool,
}

/// What to build, and how.
#[derive(Debug, Clone)]
pub struct Request {
    pub bundles: Vec<BundleSpec>,
    pub fetch: FetchSettings,
    pub write: WriteOptions,
    /// Only for a request of one bundle.
    pub lock: Option<LockFile>,
}

/// One bundle written.
#[derive(Debug)]
pub struct Built {
    pub path: PathBuf,
    pub metadata: BundleMetadata,
    pub written: Written,
    /// Its images, in the order of its plan and platforms.
    pub images: Vec<Image>,
    /// Its vendor images left out by `--skip-vendor`.
    pub skipped: Vec<Reference>,
}

/// What the lock said.
#[derive(Debug)]
pub struct Locked {
    pub path: PathBuf,
    pub images: usize,
    /// Written by this build (it was absent, or to be updated); else every image matched it.
    pub written: bool,
}

/// Everything a build did.
#[derive(Debug)]
pub struct Report {
    pub bundles: Vec<Built>,
    pub lock: Option<Locked>,
    pub pull: PullReport,
}

/// The name `ferry bundle` gives the bundle of `plan` by default: what is inside, for which platforms, and
/// whether the vendor's images are left out.
pub fn default_name(plan: &Plan, fetch: &FetchSettings) -> Result<String, ResolveError> {
    plan.file_name(&fetch.platforms, matches!(fetch.vendor, VendorSource::Skip))
}

/// Builds every bundle of `request` with the cache at `cache`: checks what can be checked before anything
/// is fetched or the cache is opened (the lock, each output path), fetches every image once, holds the
/// images to the lock, then writes the bundles one by one. A lock moved, or a failure, writes nothing
/// further.
pub fn build(
    runtime: &tokio::runtime::Runtime,
    cache: &Path,
    request: &Request,
    reporter: &dyn Reporter,
) -> Result<Report, BundleError> {
    let existing_lock = match &request.lock {
        Some(_) if request.bundles.len() > 1 => {
            return Err(BundleError::LockOfSeveral(request.bundles.len()))
        }
        Some(lock) if !lock.update && lock.path.exists() => Some(Lock::load(&lock.path)?),
        _ => None,
    };
    for bundle in &request.bundles {
        check_output(&bundle.path, request.write.split)?;
    }
    let store = &BlobStore::open(cache)?;
    let plans: Vec<Plan> = request.bundles.iter().map(|b| b.plan.clone()).collect();
    let fetched = fetch(runtime, store, &union(&plans), &request.fetch, reporter)?;
    reporter.finish();
    let lock = match &request.lock {
        Some(file) => Some((
            file,
            Lock::of(&fetched.images, request.fetch.platforms.is_empty())?,
        )),
        None => None,
    };
    if let (Some((file, built)), Some(existing)) = (&lock, &existing_lock) {
        let changes = existing.changes(built);
        if !changes.is_empty() {
            return Err(TrustError::LockMoved {
                path: file.path.clone(),
                changes,
            }
            .into());
        }
    }
    let mut bundles = Vec::with_capacity(request.bundles.len());
    for bundle in &request.bundles {
        bundles.push(write_one(
            runtime, store, request, bundle, &fetched, reporter,
        )?);
    }
    let lock = match lock {
        Some((file, built)) => {
            let written = existing_lock.is_none();
            if written {
                built.save(&file.path)?;
            }
            Some(Locked {
                path: file.path.clone(),
                images: built.images.len(),
                written,
            })
        }
        None => None,
    };
    Ok(Report {
        bundles,
        lock,
        pull: fetched.pull,
    })
}

/// Writes one bundle of the images fetched; a cache file found damaged (and removed) on the way is
/// fetched anew, once.
fn write_one(
    runtime: &tokio::runtime::Runtime,
    store: &BlobStore,
    request: &Request,
    bundle: &BundleSpec,
    fetched: &Fetched,
    reporter: &dyn Reporter,
) -> Result<Built, BundleError> {
    let plan = &bundle.plan;
    let images: Vec<Image> = plan
        .images
        .iter()
        .flat_map(|w| fetched.images.iter().filter(|i| i.reference == w.reference))
        .cloned()
        .collect();
    let skipped: Vec<Reference> = fetched
        .skipped
        .iter()
        .filter(|s| plan.images.iter().any(|w| &w.reference == *s))
        .cloned()
        .collect();
    let metadata = BundleMetadata::describe(
        plan,
        &request.fetch.platforms,
        &images,
        &skipped,
        &request.fetch.partial_ok,
    );
    // A delta names the bundle a direct build writes, by the name that build gives it.
    let full_name = match bundle.bases.is_empty() {
        true => String::new(),
        false => default_name(plan, &request.fetch)?,
    };
    let write = || match bundle.bases.is_empty() {
        true => write_bundle(
            store,
            &images,
            &metadata,
            &bundle.path,
            &request.write,
            reporter,
        ),
        false => write_delta(
            store,
            &images,
            &metadata,
            &bundle.bases,
            &full_name,
            &bundle.path,
            &request.write,
            reporter,
        ),
    };
    let written = match write() {
        Err(TarballError::DamagedBlob {
            digest,
            path: damaged,
            ..
        }) => {
            reporter.warning(&format!(
                "cache file {} was damaged (not blob {digest}); fetching it again",
                damaged.display()
            ));
            fetch(runtime, store, plan, &request.fetch, reporter)?;
            reporter.finish();
            write()?
        }
        written => written?,
    };
    Ok(Built {
        path: bundle.path.clone(),
        metadata,
        written,
        images,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::Platform;
    use crate::progress::Silent;

    /// What can be refused without the network is refused before the cache is even opened: a lock for
    /// several bundles, an output path that cannot be written.
    #[test]
    fn usage_errors_come_before_any_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let plan = Plan::of_images(Vec::new());
        let spec = |name: &str| BundleSpec {
            plan: plan.clone(),
            path: dir.path().join(name),
            bases: Vec::new(),
        };
        let mut request = Request {
            bundles: vec![spec("a.tar"), spec("b.tar")],
            fetch: FetchSettings {
                platforms: vec![Platform::linux_amd64()],
                partial_ok: Vec::new(),
                jobs: 1,
                registry: Default::default(),
                vendor: VendorSource::Unspecified { site: None },
            },
            write: WriteOptions::default(),
            lock: Some(LockFile {
                path: dir.path().join("lock.toml"),
                update: false,
            }),
        };
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let refused = build(&runtime, &cache, &request, &Silent).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "--lock pins the images of one bundle, and this selection makes 2: lock each Kubernetes \
             version's bundle (--k8s) on its own"
        );
        request.lock = None;
        request.bundles = vec![spec("missing/b.tar")];
        let refused = build(&runtime, &cache, &request, &Silent).unwrap_err();
        assert!(
            matches!(refused, BundleError::Tarball(TarballError::Target(_))),
            "{refused}"
        );
        assert!(!cache.exists(), "no cache opened");
    }
}
