//! Fixtures the tests of several modules share: images in a cache, and the metadata of a bundle of them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::json;

use crate::cache::BlobStore;
use crate::catalog::Catalogs;
use crate::digest::Digest;
use crate::image::{media, Descriptor, Image, ImageSource, Platform};
use crate::progress::{Id, Reporter, Silent, Task};
use crate::resolve::Plan;
use crate::tarball::{write_bundle, BundleMetadata, WriteOptions};
use crate::verify::{verify, Verified, VerifyOptions};

/// Stores `bytes` and describes them as a blob of `media_type`.
pub fn put(store: &BlobStore, bytes: &[u8], media_type: &str) -> Descriptor {
    let digest = Digest::of(bytes);
    store.put(&digest, bytes).unwrap();
    Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    }
}

/// Two images sharing a base layer, as the sig-storage images do. Not intact as a bundle: their configs
/// name no platform and no diff_ids, and their layers are not gzip.
pub fn two_images(store: &BlobStore) -> Vec<Image> {
    let base = put(store, b"shared base layer bytes", media::DOCKER_LAYER_GZIP);
    ["registry.k8s.io/sig-storage/a:v1", "huawei-csi:4.8.0"]
        .iter()
        .map(|name| {
            let config = format!("{{\"config of\":\"{name}\"}}");
            let config = put(store, config.as_bytes(), media::DOCKER_CONFIG);
            let own = put(
                store,
                format!("own layer of {name}").as_bytes(),
                media::DOCKER_LAYER_GZIP,
            );
            let manifest = json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
                "config": config, "layers": [base, own]});
            let manifest = put(
                store,
                &serde_json::to_vec(&manifest).unwrap(),
                media::DOCKER_MANIFEST,
            );
            Image {
                reference: name.parse().unwrap(),
                source: ImageSource::Registry {
                    fetched_from: "test".into(),
                },
                platform: Platform::linux_amd64(),
                index_digest: None,
                manifest,
                config,
                layers: vec![base.clone(), own],
            }
        })
        .collect()
}

/// Images of `names` for each of `platforms`, with configs that say their platform and their layer's
/// diff_id, in the cache: a bundle of them is intact.
pub fn intact_images(store: &BlobStore, names: &[&str], platforms: &[&str]) -> Vec<Image> {
    let mut images = Vec::new();
    for name in names {
        for platform in platforms {
            let platform: Platform = platform.parse().unwrap();
            let layer = put(
                store,
                format!("layer of {name} {platform}").as_bytes(),
                media::OCI_LAYER_TAR,
            );
            let config = json!({"os": platform.os, "architecture": platform.architecture,
                "rootfs": {"type": "layers", "diff_ids": [layer.digest]}});
            let config = put(
                store,
                &serde_json::to_vec(&config).unwrap(),
                media::OCI_CONFIG,
            );
            let manifest = json!({"schemaVersion": 2, "mediaType": media::OCI_MANIFEST,
                "config": config, "layers": [layer]});
            let manifest = put(
                store,
                &serde_json::to_vec(&manifest).unwrap(),
                media::OCI_MANIFEST,
            );
            images.push(Image {
                reference: name.parse().unwrap(),
                source: ImageSource::Registry {
                    fetched_from: "test".into(),
                },
                platform,
                index_digest: None,
                manifest,
                config,
                layers: vec![layer],
            });
        }
    }
    images
}

/// An intact bundle `b.tar` in `dir` of [`intact_images`] of `names` for `platforms`, its cache in
/// `dir/cache`: its images and its path.
pub fn intact_bundle(dir: &Path, names: &[&str], platforms: &[&str]) -> (Vec<Image>, PathBuf) {
    let store = BlobStore::open(&dir.join("cache")).unwrap();
    let images = intact_images(&store, names, platforms);
    let carried: Vec<Platform> = platforms.iter().map(|p| p.parse().unwrap()).collect();
    let path = dir.join("b.tar");
    write_plain(&store, &images, &metadata(&images, &carried), &path);
    (images, path)
}

/// Writes `images` to `path` as `metadata` describes them, with the default options and no progress.
pub fn write_plain(store: &BlobStore, images: &[Image], metadata: &BundleMetadata, path: &Path) {
    write_bundle(
        store,
        images,
        metadata,
        path,
        &WriteOptions::default(),
        &Silent,
    )
    .unwrap();
}

/// The proof verify makes of the intact bundle at `path`.
pub fn verified(path: &Path) -> Verified {
    let catalogs = Catalogs::load(&[]).unwrap();
    verify(path, &VerifyOptions::default(), &catalogs)
        .unwrap()
        .into_verified()
        .unwrap()
}

/// ferry.json for a bundle of `images` for `platforms`, built without a catalog release.
pub fn metadata(images: &[Image], platforms: &[Platform]) -> BundleMetadata {
    let plan = Plan::of_images(Vec::new());
    BundleMetadata::describe(&plan, platforms, images, &[], &[])
}

/// ferry.json for a bundle of single-platform `images` built without a catalog release.
pub fn loose_metadata(images: &[Image]) -> BundleMetadata {
    metadata(images, &[Platform::linux_amd64()])
}

/// A reporter that records what it hears: each task started (`action subject`, total, done), and each
/// progress event.
#[derive(Default)]
pub struct Recorder {
    started: Mutex<Vec<(String, u64, u64)>>,
    events: Mutex<Vec<(Id, u64)>>,
    next: AtomicUsize,
}

impl Recorder {
    pub fn started(&self) -> Vec<(String, u64, u64)> {
        self.started.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<(Id, u64)> {
        self.events.lock().unwrap().clone()
    }

    /// The bytes reported for the task `id`.
    pub fn bytes(&self, id: Id) -> u64 {
        self.events()
            .iter()
            .filter(|(of, _)| *of == id)
            .map(|(_, n)| n)
            .sum()
    }
}

impl Reporter for Recorder {
    fn on_start(&self, task: &Task) -> Id {
        let subject = format!("{} {}", task.action, task.subject);
        self.started
            .lock()
            .unwrap()
            .push((subject, task.total, task.done));
        Id(self.next.fetch_add(1, Ordering::Relaxed))
    }

    fn on_progress(&self, id: Id, bytes: u64) {
        self.events.lock().unwrap().push((id, bytes));
    }
}
