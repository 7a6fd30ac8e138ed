//! The fetch stage: getting a plan's images into the cache. Registry images are pulled (pull.rs) and, at
//! the same time on other threads, vendor images are imported from the vendor's package (import/); what
//! each reference resolved to is noted in the cache for `diff`.
//!
//! A fetch is one call with its own stop: when the pull fails, the import still compressing is told to
//! stop through the call's [`Cancel`], and nothing after the call is touched by it.

pub mod import;
mod pull;
mod source;

use std::path::PathBuf;

use self::import::Importer;
pub use self::import::VendorError;
use self::pull::pull;
pub use self::pull::{PullError, PullReport};
pub use self::source::VendorSourceError;
use crate::cache::{BlobStore, CacheError};
use crate::catalog::ImageSource as CatalogSource;
use crate::causes::chain;
use crate::image::{Image, Platform};
use crate::interrupt::{self, Cancel, Interrupted};
use crate::progress::Reporter;
use crate::reference::Reference;
use crate::registry::RegistryOptions;
use crate::resolve::{Plan, Wanted};

/// Why a fetch failed: each source's failures, said together when both failed on their own.
#[derive(Debug, thiserror::Error)]
pub enum FetchStageError {
    #[error(transparent)]
    Pull(#[from] PullError),
    #[error(transparent)]
    Import(#[from] VendorError),
    /// Both sources failed on their own: both are said, so one run shows everything to fix.
    #[error("{}\n{}", chain(.pull), chain(.import))]
    Both {
        pull: Box<PullError>,
        import: Box<VendorError>,
    },
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Source(#[from] VendorSourceError),
    #[error("{image} from the vendor's package is {found}, but {wanted} was asked for")]
    WrongPlatform {
        image: Reference,
        found: Platform,
        wanted: String,
    },
    /// What was fetched could not be noted in the cache.
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// Where the images that only the vendor's package has come from.
#[derive(Debug, Clone)]
pub enum VendorSource {
    /// Not said (on the command line, nor in the site file at `site`): fail if the plan has vendor
    /// images, saying where to say it.
    Unspecified { site: Option<PathBuf> },
    /// docker-save or OCI archives in these directories (one per architecture package, say).
    Dirs(Vec<PathBuf>),
    /// A registry (`HOST[:PORT][/PREFIX]`) where an operator pushed them.
    Registry(String),
    /// Leave them out.
    Skip,
}

#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Every image is fetched for each, in this order; the first is the one docker's view of a bundle shows.
    /// None (`--platform all`): every manifest of each image's upstream index, the index carried as it is;
    /// a vendor image on each platform its tarballs have.
    pub platforms: Vec<Platform>,
    /// Images carried with the platforms they have when they lack some of `platforms`.
    pub partial_ok: Vec<Reference>,
    pub jobs: usize,
    pub registry: RegistryOptions,
    pub vendor: VendorSource,
}

/// What a fetch put in the cache.
#[derive(Debug)]
pub struct Fetched {
    /// In plan order, each image's platforms in the order asked for.
    pub images: Vec<Image>,
    /// Vendor images left out by `--skip-vendor`.
    pub skipped: Vec<Reference>,
    pub pull: PullReport,
}

/// Pulls the registry images and, at the same time on other threads, imports the vendor's; then notes
/// in the cache what each reference resolved to.
pub fn fetch(
    runtime: &tokio::runtime::Runtime,
    store: &BlobStore,
    plan: &Plan,
    settings: &FetchSettings,
    reporter: &dyn Reporter,
) -> Result<Fetched, FetchStageError> {
    let vendor: Vec<&Wanted> = plan
        .images
        .iter()
        .filter(|w| w.source == CatalogSource::Vendor)
        .collect();
    let (pull_items, skipped) = source::pull_items(plan, &vendor, settings, reporter)?;
    let vendor_dirs = match &settings.vendor {
        VendorSource::Dirs(dirs) if !vendor.is_empty() => dirs.as_slice(),
        _ => &[],
    };
    let vendor_refs: Vec<Reference> = vendor.iter().map(|w| w.reference.clone()).collect();
    let cancel = Cancel::new();
    let importer = Importer {
        store,
        reporter,
        cancel: &cancel,
    };
    let (report, imported) = std::thread::scope(|scope| {
        let imported = scope.spawn(|| match vendor_dirs {
            [] => Ok(Vec::new()),
            dirs => importer.import_all(
                dirs,
                &vendor_refs,
                &settings.platforms,
                &settings.partial_ok,
            ),
        });
        let pulling = pull(store, settings, &pull_items, reporter);
        // A signal drops the downloads where they are; their partial files stay, to be resumed.
        let report = runtime.block_on(async {
            tokio::select! {
                report = pulling => Ok(report),
                stop = interrupt::signalled() => Err(stop),
            }
        });
        // The vendor layers being compressed would be thrown away: stop them too.
        if matches!(report, Ok(Err(_))) {
            cancel.cancel();
        }
        let imported = imported.join().expect("vendor import does not panic");
        (report, imported)
    });
    let (report, imported) = match (report?, imported) {
        (Ok(report), Ok(imported)) => (report, imported),
        (Err(pull), Err(import)) if interrupt::is_abandonment(&import) => return Err(pull.into()),
        (Err(pull), Err(import)) => {
            return Err(FetchStageError::Both {
                pull: Box::new(pull),
                import: Box::new(import),
            })
        }
        (Err(pull), _) => return Err(pull.into()),
        (_, Err(import)) => return Err(import.into()),
    };
    let fetched: Vec<Image> = report.images.iter().cloned().chain(imported).collect();
    let images = in_plan_order(plan, &settings.platforms, fetched)?;
    store.remember_images(&images)?;
    Ok(Fetched {
        images,
        skipped,
        pull: report,
    })
}

/// Plan order, so that listings and bundles read like the vendor's table; then platform order (with
/// every platform, the order of each image's index). An image of a platform not asked for (a vendor's
/// tarball of another architecture) is refused.
fn in_plan_order(
    plan: &Plan,
    platforms: &[Platform],
    mut fetched: Vec<Image>,
) -> Result<Vec<Image>, FetchStageError> {
    if platforms.is_empty() {
        let mut images = Vec::with_capacity(fetched.len());
        for wanted in &plan.images {
            let (own, rest) = fetched
                .into_iter()
                .partition(|i: &Image| i.reference == wanted.reference);
            images.extend(own);
            fetched = rest;
        }
        return Ok(images);
    }
    if let Some(wrong) = fetched
        .iter()
        .find(|i| !platforms.iter().any(|p| p.matches(&i.platform)))
    {
        return Err(FetchStageError::WrongPlatform {
            image: wrong.reference.clone(),
            found: wrong.platform.clone(),
            wanted: platforms
                .iter()
                .map(Platform::to_string)
                .collect::<Vec<_>>()
                .join(","),
        });
    }
    let mut images = Vec::with_capacity(fetched.len());
    for wanted in &plan.images {
        for platform in platforms {
            if let Some(at) = fetched
                .iter()
                .position(|i| i.reference == wanted.reference && platform.matches(&i.platform))
            {
                images.push(fetched.swap_remove(at));
            }
        }
    }
    Ok(images)
}
