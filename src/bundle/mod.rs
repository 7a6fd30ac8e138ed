//! The bundle stage: from plans to bundles on disk, as one call any front end makes. Every image of every
//! plan is fetched once (fetch/), the build is held to its lock, then each plan's images are written as
//! one bundle (tarball/) described by its `ferry.json`; a blob found damaged in the cache while writing
//! is fetched anew, once.
//!
//! What a bundle holds is decided by its [`BundleSpec`] entry alone: its plan, its path, and the bases whose
//! blobs it leaves out (then it is a delta). A plan names any set of images (one release's for a span of
//! Kubernetes versions, images named directly).
//!
//! A rebuild from a warm cache spends most of its time hashing what it writes, and before that, waiting
//! for the registry to say what each tag names. So when the cache has noted, for every image of a lone
//! bundle, what it resolved to last time (with every blob still there), the bundle is written ahead from
//! those notes while the registry is asked, and put in place only if the fetch finds exactly those images
//! (and the lock accepts them); otherwise it is thrown away unseen and written again from what was fetched.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::cache::{BlobStore, CacheError};
use crate::catalog::ImageSource as CatalogSource;
use crate::digest::Digest;
use crate::fetch::{fetch, FetchSettings, FetchStageError, Fetched, PullReport, VendorSource};
use crate::image::Image;
use crate::interrupt::{self, Cancel};
use crate::progress::{Held, Reporter};
use crate::reference::Reference;
use crate::resolve::{union, Plan, ResolveError};
use crate::tarball::delta::BundleDescription;
use crate::tarball::{
    check_output, stage_bundle, stage_delta, BlobSource, BundleMetadata, Staged, TarballError,
    WriteOptions, Written,
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
    let ahead = match request.bundles.as_slice() {
        [bundle] => Chosen::recalled(store, bundle, &request.fetch),
        _ => None,
    };
    let held = Held::new(reporter);
    let stop = Cancel::new();
    let (checked, mut written_ahead) = std::thread::scope(|scope| {
        let writing = ahead.as_ref().map(|ahead| {
            let source = Ahead {
                store,
                cancel: &stop,
            };
            let held = &held;
            scope.spawn(move || stage(store, &source, request, &request.bundles[0], ahead, held))
        });
        let checked = fetch_locked(
            runtime,
            store,
            &plans,
            request,
            existing_lock.as_ref(),
            reporter,
        );
        // What is drawn of the fetch goes before the write's progress.
        reporter.finish();
        let confirmed = match (&checked, &ahead) {
            (Ok((fetched, _)), Some(ahead)) => {
                Chosen::fetched(&request.bundles[0], fetched) == *ahead
            }
            _ => false,
        };
        match confirmed {
            true => {
                reporter.note(&format!(
                    "the registry's tags name what the cache noted: writing {} began while they \
                     were asked",
                    request.bundles[0].path.display()
                ));
                held.release();
            }
            false => stop.cancel(),
        }
        let staged = writing.map(|writing| writing.join().expect("the write ahead does not panic"));
        (checked, staged.filter(|_| confirmed))
    });
    let (fetched, lock) = checked?;
    let mut bundles = Vec::with_capacity(request.bundles.len());
    for bundle in &request.bundles {
        bundles.push(write_one(
            runtime,
            store,
            request,
            bundle,
            &fetched,
            written_ahead.take(),
            reporter,
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

/// A lock file asked for, and the lock the images fetched make.
type Made<'r> = Option<(&'r LockFile, Lock)>;

/// Fetches every image of `plans` once and holds them to the lock `existing` (the lock file's, when it
/// is not to be rewritten): the images, and the lock they make when a lock file is asked for.
fn fetch_locked<'r>(
    runtime: &tokio::runtime::Runtime,
    store: &BlobStore,
    plans: &[Plan],
    request: &'r Request,
    existing: Option<&Lock>,
    reporter: &dyn Reporter,
) -> Result<(Fetched, Made<'r>), BundleError> {
    let fetched = fetch(runtime, store, &union(plans), &request.fetch, reporter)?;
    let lock = match &request.lock {
        Some(file) => Some((
            file,
            Lock::of(&fetched.images, request.fetch.platforms.is_empty())?,
        )),
        None => None,
    };
    if let (Some((file, built)), Some(existing)) = (&lock, existing) {
        let changes = existing.changes(built);
        if !changes.is_empty() {
            return Err(TrustError::LockMoved {
                path: file.path.clone(),
                changes,
            }
            .into());
        }
    }
    Ok((fetched, lock))
}

/// The images a bundle holds, in the order of its plan and platforms, and its vendor images that
/// `--skip-vendor` leaves out: all that its bytes depend on besides the request.
#[derive(Debug, PartialEq)]
struct Chosen {
    images: Vec<Image>,
    skipped: Vec<Reference>,
}

impl Chosen {
    /// The images of `bundle` among those fetched.
    fn fetched(bundle: &BundleSpec, fetched: &Fetched) -> Chosen {
        let plan = &bundle.plan;
        Chosen {
            images: plan
                .images
                .iter()
                .flat_map(|w| fetched.images.iter().filter(|i| i.reference == w.reference))
                .cloned()
                .collect(),
            skipped: fetched
                .skipped
                .iter()
                .filter(|s| plan.images.iter().any(|w| &w.reference == *s))
                .cloned()
                .collect(),
        }
    }

    /// The images of `bundle` as the cache noted them when last fetched, each on each platform asked
    /// for, all its blobs still there: what a fetch gives if every tag still names the same image. None
    /// where one is not noted (a first fetch, `--platform all`, an image that lacks a platform).
    fn recalled(
        store: &BlobStore,
        bundle: &BundleSpec,
        settings: &FetchSettings,
    ) -> Option<Chosen> {
        let skip = matches!(settings.vendor, VendorSource::Skip);
        let (skipped, carried): (Vec<_>, Vec<_>) = bundle
            .plan
            .images
            .iter()
            .partition(|w| skip && w.source == CatalogSource::Vendor);
        let images = carried
            .iter()
            .flat_map(|w| settings.platforms.iter().map(move |p| (w, p)))
            .map(|(w, platform)| store.recall_image(&w.reference, platform))
            .collect::<Option<Vec<Image>>>()?;
        let skipped = skipped.into_iter().map(|w| w.reference.clone()).collect();
        (!images.is_empty()).then_some(Chosen { images, skipped })
    }

    fn metadata(&self, bundle: &BundleSpec, settings: &FetchSettings) -> BundleMetadata {
        BundleMetadata::describe(
            &bundle.plan,
            &settings.platforms,
            &self.images,
            &self.skipped,
            &settings.partial_ok,
        )
    }
}

/// Writes `bundle` of `chosen` (its blobs from `source`) and leaves it staged, not yet in place.
fn stage(
    store: &BlobStore,
    source: &dyn BlobSource,
    request: &Request,
    bundle: &BundleSpec,
    chosen: &Chosen,
    reporter: &dyn Reporter,
) -> Result<Staged, BundleError> {
    let metadata = chosen.metadata(bundle, &request.fetch);
    let (images, path, options) = (&chosen.images, &bundle.path, &request.write);
    Ok(match bundle.bases.is_empty() {
        true => stage_bundle(store, source, images, &metadata, path, options, reporter)?,
        // A delta names the bundle a direct build writes, by the name that build gives it.
        false => stage_delta(
            store,
            source,
            images,
            &metadata,
            &bundle.bases,
            &default_name(&bundle.plan, &request.fetch)?,
            path,
            options,
            reporter,
        )?,
    })
}

/// Writes one bundle of the images fetched (or places the one written ahead of them); a cache file
/// found damaged (and removed) on the way is fetched anew, once.
fn write_one(
    runtime: &tokio::runtime::Runtime,
    store: &BlobStore,
    request: &Request,
    bundle: &BundleSpec,
    fetched: &Fetched,
    written_ahead: Option<Result<Staged, BundleError>>,
    reporter: &dyn Reporter,
) -> Result<Built, BundleError> {
    let chosen = Chosen::fetched(bundle, fetched);
    let write = || stage(store, store, request, bundle, &chosen, reporter);
    let staged = match written_ahead {
        Some(Ok(staged)) => Ok(staged),
        Some(Err(stopped)) if interrupt::pending().is_some() => Err(stopped),
        // Else it failed on what the fetch changed in the cache, on damaged blobs it left in the cache
        // (this write finds and evicts every one of them), or as this write will fail too.
        _ => write(),
    };
    let staged = match staged {
        Err(BundleError::Tarball(TarballError::DamagedBlob {
            digest,
            path: damaged,
            ..
        })) => {
            reporter.warning(&format!(
                "cache file {} was damaged (not blob {digest}); fetching it again",
                damaged.display()
            ));
            fetch(runtime, store, &bundle.plan, &request.fetch, reporter)?;
            reporter.finish();
            write()?
        }
        staged => staged?,
    };
    let written = staged.place(request.write.signer.as_deref())?;
    Ok(Built {
        path: bundle.path.clone(),
        metadata: chosen.metadata(bundle, &request.fetch),
        written,
        images: chosen.images,
        skipped: chosen.skipped,
    })
}

/// The cache as a write ahead reads it: its reads fail once `cancel` is cancelled (the fetch found
/// other images, or failed), and a blob it finds damaged is left in the cache, for the write after the
/// fetch to find again, evict and fetch anew (evicted now, it could go missing under the fetch). What it
/// stores in the cache is what any write stores: ferry's own index of an image's platforms (a blob named
/// by its bytes) and the note of the full bundle's sha256 (keyed by the layout it wrote).
struct Ahead<'a> {
    store: &'a BlobStore,
    cancel: &'a Cancel,
}

impl BlobSource for Ahead<'_> {
    fn open(&self, digest: &Digest, size: u64) -> Result<Box<dyn Read + '_>, TarballError> {
        let blob = BlobSource::open(self.store, digest, size)?;
        Ok(Box::new(self.cancel.reader(blob)))
    }

    fn damaged(&self, digest: &Digest, actual: Digest, read: u64) -> TarballError {
        TarballError::DamagedBlob {
            digest: digest.clone(),
            path: self.store.path(digest),
            actual,
            read,
        }
    }

    fn unreadable(&self, digest: &Digest, at: u64, error: io::Error) -> TarballError {
        self.store.unreadable(digest, at, error)
    }
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
