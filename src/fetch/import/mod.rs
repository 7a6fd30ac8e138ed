//! Vendor images: the docker-save tarballs a vendor ships inside its release package (Huawei's
//! storage-backend-controller, huawei-csi, ...), or OCI archives (podman, skopeo), imported into the cache
//! as proper OCI images.
//!
//! A name must mean one image: when two archives (or two entries of one) claim it with different configs,
//! so different content, the import is refused naming both, unless exactly one of them is for the platform
//! asked for. Files that are no image archive are passed over, and named if an image is then missing.
//!
//! The config is stored byte for byte, so the image ID docker shows stays the vendor's. Each uncompressed
//! layer is gzipped into the cache (layer.rs) on every core (members.rs), each distinct layer once, while
//! layers that come compressed are hashed in parallel, one per core; a new OCI manifest then names config
//! and layers. Its bytes depend only on the tarballs and [`COMPRESSION`](crate::layer_codec::COMPRESSION)
//! (with the libdeflate version Cargo.lock pins), never on the number of cores, so importing the same
//! package twice, into any cache, on any machine, gives the same manifest digest.
//!
//! The steps, one file each: scan.rs finds the archives and the images they hold, prepare.rs reads each
//! requested image's config and decides which layers this run must bring in, layer.rs brings one in (in
//! parallel.rs's threads; members.rs gzips on every core), manifest.rs stores the image's config and new manifest; error.rs names what
//! can go wrong, and archive.rs reads a tarball in place.

mod archive;
mod error;
mod layer;
mod manifest;
mod members;
mod parallel;
mod prepare;
mod scan;

use std::collections::BTreeMap;
use std::path::PathBuf;

use self::archive::DockerSave;
pub use self::error::PassedOver;
pub use self::error::VendorError;
use self::layer::bring_in;
use self::manifest::finish;
use self::members::with_gzip_pool;
use self::parallel::in_parallel;
use self::prepare::{plan_layers, prepare, LayerBlob};
pub use self::scan::{Found, VendorDir};
use crate::cache::BlobStore;
use crate::image::{Image, Platform};
use crate::interrupt::Cancel;
use crate::progress::{Action, Id, Reporter, Task};
use crate::reference::Reference;

/// What every step of an import works with: the cache it fills, where it reports, and the call's own
/// stop, which a failure elsewhere in the fetch sets.
#[derive(Clone, Copy)]
pub struct Importer<'a> {
    pub store: &'a BlobStore,
    pub reporter: &'a dyn Reporter,
    pub cancel: &'a Cancel,
}

impl Importer<'_> {
    /// Imports every image of `references` from the tarballs under `dirs`, in the order given, each for
    /// each of `platforms` (by its config's platform: file names mean nothing).
    ///
    /// With several platforms, each image is imported once per platform, the tarball taken for each is
    /// said, and `partial_ok` images may lack some. With none (`--platform all`), each image is imported
    /// for every platform its tarballs have. Every image is looked for before any is imported: all that
    /// are missing or ambiguous are refused together.
    pub fn import_all(
        &self,
        dirs: &[PathBuf],
        references: &[Reference],
        platforms: &[Platform],
        partial_ok: &[Reference],
    ) -> Result<Vec<Image>, VendorError> {
        let vendor = VendorDir::scan_all(dirs)?;
        let mut requests = Vec::new();
        let mut missing = Vec::new();
        let mut refused = Vec::new();
        for reference in references {
            let own;
            let platforms = match platforms {
                [] => {
                    own = vendor.platforms_of(reference);
                    own.as_slice()
                }
                asked => asked,
            };
            let chosen = match platforms {
                [platform] => vendor.choose(reference, platform).map(|found| vec![found]),
                _ => vendor.choose_each(reference, platforms, partial_ok.contains(reference)),
            };
            match chosen {
                Ok(found) => requests.extend(found.into_iter().map(|found| (found, reference))),
                Err(VendorError::Missing { .. }) => missing.push(reference.clone()),
                Err(error) => refused.push(error),
            }
        }
        if !missing.is_empty() {
            refused.insert(0, vendor.missing(missing));
        }
        match refused.len() {
            0 => {}
            1 => return Err(refused.remove(0)),
            _ => return Err(VendorError::Several(refused)),
        }
        if platforms.len() != 1 {
            for (found, reference) in &requests {
                self.reporter.note(&format!(
                    "{reference} for {}: took {}",
                    found
                        .platform
                        .as_ref()
                        .map_or("?".into(), Platform::to_string),
                    found.archive.display()
                ));
            }
        }
        self.import_each(&requests, platforms.len() != 1)
    }

    /// Imports each requested image: every layer not brought in by an earlier run, in parallel, then
    /// each image's manifest. Progress names the platform too when `several` platforms are fetched.
    fn import_each(
        &self,
        requests: &[(&Found, &Reference)],
        several: bool,
    ) -> Result<Vec<Image>, VendorError> {
        let mut archives = BTreeMap::new();
        for &(found, _) in requests {
            let path = found.archive.as_path();
            if !archives.contains_key(path) {
                let archive = DockerSave::open(path, found.tar_bytes, self.store, self.cancel)?;
                archives.insert(path, archive);
            }
        }
        let images = requests
            .iter()
            .map(|&(found, reference)| {
                prepare(&archives[found.archive.as_path()], found, reference)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (jobs, blobs) = plan_layers(self.store, &images);
        let ids: Vec<Id> = images
            .iter()
            .enumerate()
            .map(|(at, image)| {
                let total: u64 = image.layers.iter().map(|l| l.span.size).sum();
                let to_store: u64 = jobs
                    .iter()
                    .filter(|job| job.owner == at)
                    .map(|job| job.layer.span.size)
                    .sum();
                let subject = match several {
                    true => format!("{} ({})", image.reference, image.platform),
                    false => image.reference.to_string(),
                };
                self.reporter.on_start(&Task {
                    action: Action::Import,
                    subject: &subject,
                    total,
                    done: total - to_store,
                })
            })
            .collect();
        let stored = with_gzip_pool(|pool| {
            in_parallel(&jobs, |job| {
                let id = ids[job.owner];
                bring_in(
                    self.store,
                    pool,
                    self.cancel,
                    self.reporter,
                    job.archive,
                    job.layer,
                    id,
                )
            })
        })?;
        let mut imported = Vec::with_capacity(images.len());
        for ((image, blobs), id) in images.into_iter().zip(blobs).zip(ids) {
            let layers = blobs
                .into_iter()
                .map(|blob| match blob {
                    LayerBlob::Stored(descriptor) => descriptor,
                    LayerBlob::Job(at) => stored[at].clone(),
                })
                .collect();
            imported.push(finish(self.store, image, layers)?);
            self.reporter.on_complete(id);
        }
        Ok(imported)
    }
}

#[cfg(test)]
mod tests;
