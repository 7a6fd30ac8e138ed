//! Before any layer is read: each requested image's config, checked against the ID it was found by and
//! its layers' count, and which layers this run must bring into the store.

use std::collections::HashMap;
use std::path::Path;

use super::archive::{DockerSave, MAX_CONFIG};
use super::error::VendorError;
use super::layer::{self, layer_descriptor, SavedLayer};
use super::scan::Found;
use crate::cache::BlobStore;
use crate::digest::Digest;
use crate::image::{Descriptor, ImageConfig, Platform};
use crate::layer_codec::Codec;
use crate::reference::Reference;

/// One requested image, its config read and each layer found in its archive.
pub(super) struct Prepared<'a> {
    pub reference: &'a Reference,
    pub archive: &'a DockerSave,
    pub config: Vec<u8>,
    pub platform: Platform,
    pub layers: Vec<SavedLayer>,
}

/// A layer to bring into the store in this run, for the image at `owner` (whose progress it shows).
pub(super) struct Job<'a> {
    pub archive: &'a DockerSave,
    pub layer: &'a SavedLayer,
    pub owner: usize,
}

/// Where one layer's blob comes from: an earlier run, or a job of this one.
pub(super) enum LayerBlob {
    Stored(Descriptor),
    Job(usize),
}

/// Reads the config of the image `found` names in `archive`, and where each of its layers lies.
pub(super) fn prepare<'a>(
    archive: &'a DockerSave,
    found: &Found,
    reference: &'a Reference,
) -> Result<Prepared<'a>, VendorError> {
    let changed = || VendorError::Changed {
        archive: archive.path.clone(),
    };
    let saved = archive.images().get(found.at).ok_or_else(changed)?;
    let config = archive.read_small(&saved.config, MAX_CONFIG)?;
    if Digest::of(&config) != found.id {
        return Err(changed());
    }
    let mut probe = ImageConfig::parse(&config).map_err(|source| VendorError::Json {
        archive: archive.path.clone(),
        entry: saved.config.clone(),
        source,
    })?;
    let diff_ids = std::mem::take(&mut probe.rootfs.diff_ids);
    if diff_ids.len() != saved.layers.len() {
        return Err(VendorError::LayerCount {
            archive: archive.path.clone(),
            entry: saved.config.clone(),
            layers: saved.layers.len(),
            diff_ids: diff_ids.len(),
        });
    }
    let layers = saved
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(entry, diff_id)| {
            let span = archive.span(entry)?;
            Ok(SavedLayer {
                entry: entry.clone(),
                span,
                diff_id,
                codec: archive.compression(entry, span)?,
            })
        })
        .collect::<Result<_, VendorError>>()?;
    Ok(Prepared {
        reference,
        archive,
        config,
        platform: probe.platform(),
        layers,
    })
}

/// What makes two layers one job: gzipping gives bytes that depend only on the content, so one job per
/// diff_id; a compressed layer is stored as the vendor compressed it, so each copy is its own job.
#[derive(PartialEq, Eq, Hash)]
enum JobKey<'a> {
    Compress(&'a Digest),
    Keep(&'a Path, &'a str),
}

/// Decides where each layer's blob comes from: an uncompressed layer gzipped by an earlier run is
/// reused; every other layer is brought in by a job of this run.
pub(super) fn plan_layers<'a>(
    store: &BlobStore,
    images: &'a [Prepared<'a>],
) -> (Vec<Job<'a>>, Vec<Vec<LayerBlob>>) {
    let mut jobs = Vec::new();
    let mut job_of = HashMap::new();
    let mut blobs = Vec::new();
    for (owner, image) in images.iter().enumerate() {
        let mut image_blobs = Vec::new();
        for layer in &image.layers {
            let key = if layer.codec != Codec::Plain {
                JobKey::Keep(&image.archive.path, &layer.entry)
            } else if let Some((digest, size)) = layer::remembered(store, &layer.diff_id) {
                image_blobs.push(LayerBlob::Stored(layer_descriptor(
                    Codec::Plain,
                    digest,
                    size,
                )));
                continue;
            } else {
                JobKey::Compress(&layer.diff_id)
            };
            let at = *job_of.entry(key).or_insert_with(|| {
                jobs.push(Job {
                    archive: image.archive,
                    layer,
                    owner,
                });
                jobs.len() - 1
            });
            image_blobs.push(LayerBlob::Job(at));
        }
        blobs.push(image_blobs);
    }
    (jobs, blobs)
}
