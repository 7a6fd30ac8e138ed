//! Writes the bundle: one plain tar that is at once a docker-archive (`manifest.json`) and an OCI image
//! layout (`oci-layout`, `index.json`, `blobs/sha256/…`), as Docker 25+ `docker save` writes it, so that
//! `docker load`, `ctr images import` and `podman load` all accept it.
//!
//! Blobs are copied from the cache unchanged (upstream digests survive), each once however many images
//! share it. The small JSON documents come first so a streaming reader knows what to expect before the
//! blobs pass. Headers are pinned (uid 0, mode 0644, one mtime, sorted names) so the same inputs give the
//! same bytes. The output is hashed while written and renamed into place only when complete.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::json;

use super::metadata::BundleMetadata;
use super::output::{Output, OutputError};
use super::{
    names, TarballError, DOCKER_MANIFEST_DIGEST, INDEX_JSON, LAYOUT_BYTES, LAYOUT_JSON,
    MANIFEST_JSON, METADATA_DIGEST, METADATA_JSON,
};
use crate::cache::BlobStore;
use crate::digest::Digest;
use crate::image::{media, Descriptor, Image};
use crate::progress::Reporter;
use crate::trust::signature::SigningKey;

#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The mtime of every entry (seconds since the epoch): `SOURCE_DATE_EPOCH`, or 0.
    pub mtime: u64,
    /// Cut the output into parts of at most this many bytes.
    pub split: Option<u64>,
    /// Sign `PATH.sha256` into `PATH.sig`.
    pub signer: Option<SigningKey>,
}

/// What was written.
#[derive(Debug, Clone)]
pub struct Written {
    /// The bundle, or its parts in order.
    pub files: Vec<PathBuf>,
    /// `sha256sum -c` files written beside them.
    pub checksum_files: Vec<PathBuf>,
    pub sha256: Digest,
    pub bytes: u64,
    pub blobs: usize,
    /// Bytes not written because images share blobs.
    pub saved_by_sharing: u64,
}

/// Writes `images` and `metadata` as one bundle at `path` (or its parts).
pub fn write_bundle(
    store: &BlobStore,
    images: &[Image],
    metadata: &BundleMetadata,
    path: &Path,
    options: &WriteOptions,
    reporter: &dyn Reporter,
) -> Result<Written, TarballError> {
    let blobs = distinct_blobs(images);
    for image in images {
        for blob in std::iter::once(&image.manifest).chain(image.blobs()) {
            if !store.contains(&blob.digest, Some(blob.size)) {
                return Err(TarballError::MissingBlob {
                    image: image.reference.to_string(),
                    digest: blob.digest.clone(),
                });
            }
        }
    }
    let referenced: u64 = images.iter().map(Image::size).sum();
    let stored: u64 = blobs.values().map(|d| d.size).sum();
    reporter.phase(&format!(
        "writing {} ({} images, {} blobs)",
        path.display(),
        images.len(),
        blobs.len()
    ));

    let output = Output::create(path, options.split).map_err(|e| output_error(path, e))?;
    let mut tar = tar::Builder::new(output);
    let metadata = metadata.to_bytes();
    let docker = pretty(&docker_manifest(images));
    let index = pretty(&oci_index(
        images,
        &Digest::of(&metadata),
        &Digest::of(&docker),
    ));
    let documents = [
        (LAYOUT_JSON, LAYOUT_BYTES.to_vec()),
        (METADATA_JSON, metadata),
        (INDEX_JSON, index),
        (MANIFEST_JSON, docker),
    ];
    for (name, bytes) in &documents {
        append(
            &mut tar,
            name,
            bytes.len() as u64,
            &mut bytes.as_slice(),
            options.mtime,
        )
        .map_err(|e| write_error(path, e))?;
    }
    for (digest, descriptor) in &blobs {
        let mut file = store.open_blob(digest)?;
        append(
            &mut tar,
            &names::blob_path(digest),
            descriptor.size,
            &mut file,
            options.mtime,
        )
        .map_err(|e| write_error(path, e))?;
    }
    tar.finish().map_err(|e| write_error(path, e))?;
    let output = tar.into_inner().map_err(|e| write_error(path, e))?;
    let finished = output
        .finish(options.signer.as_ref())
        .map_err(|e| output_error(path, e))?;
    Ok(Written {
        files: finished.files,
        checksum_files: finished.checksum_files,
        sha256: finished.sha256,
        bytes: finished.bytes,
        blobs: blobs.len(),
        saved_by_sharing: referenced - stored,
    })
}

/// Every manifest, config and layer of `images`, once, sorted by digest.
fn distinct_blobs(images: &[Image]) -> BTreeMap<Digest, Descriptor> {
    let mut blobs = BTreeMap::new();
    for image in images {
        for blob in std::iter::once(&image.manifest).chain(image.blobs()) {
            blobs
                .entry(blob.digest.clone())
                .or_insert_with(|| blob.clone());
        }
    }
    blobs
}

/// The one serialization of every JSON document in a bundle; `verify` re-serializes what it reads and
/// compares bytes, so a flipped byte that still parses is caught too.
pub fn pretty(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// One descriptor per image, straight at its single-platform manifest, named the way containerd and podman
/// read names. No `platform` field: containerd's filter lets such descriptors through on any host.
/// The index's own annotations pin `ferry.json` and `manifest.json` by digest, so that `verify` can prove
/// every byte of the bundle from the index down.
fn oci_index(images: &[Image], metadata: &Digest, docker: &Digest) -> serde_json::Value {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|image| {
            let mut descriptor = json!({
                "mediaType": image.manifest.media_type,
                "digest": image.manifest.digest,
                "size": image.manifest.size,
            });
            if let (Some(name), Some(tag)) = (image.reference.tagged_name(), image.reference.tag())
            {
                descriptor["annotations"] = json!({
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": tag,
                });
            }
            descriptor
        })
        .collect();
    json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": manifests,
        "annotations": {METADATA_DIGEST: metadata, DOCKER_MANIFEST_DIGEST: docker},
    })
}

/// docker load's view: fully qualified RepoTags, so podman does not file them under `localhost/`.
fn docker_manifest(images: &[Image]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = images
        .iter()
        .map(|image| {
            json!({
                "Config": names::blob_path(&image.config.digest),
                "RepoTags": image.reference.tagged_name().into_iter().collect::<Vec<_>>(),
                "Layers": image.layers.iter().map(|l| names::blob_path(&l.digest)).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!(entries)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: &mut dyn io::Read,
    mtime: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(mtime);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    tar.append(&header, data)
}

fn write_error(path: &Path, source: io::Error) -> TarballError {
    output_error(path, OutputError::Io(source))
}

fn output_error(path: &Path, error: OutputError) -> TarballError {
    match error {
        OutputError::Io(source) if source.kind() == io::ErrorKind::StorageFull => {
            TarballError::DiskFull {
                path: path.to_path_buf(),
            }
        }
        OutputError::Io(source) => TarballError::Write {
            path: path.to_path_buf(),
            source,
        },
        OutputError::Exists(existing) => TarballError::Write {
            path: existing,
            source: io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a part of an earlier bundle is in the way",
            ),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::{ImageSource, Platform};
    use crate::progress::Silent;
    use std::io::Read;

    fn put(store: &BlobStore, bytes: &[u8], media_type: &str) -> Descriptor {
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

    /// Two images sharing a base layer, as the sig-storage images do.
    pub(crate) fn two_images(store: &BlobStore) -> Vec<Image> {
        let base = put(store, b"shared base layer bytes", media::DOCKER_LAYER_GZIP);
        ["registry.k8s.io/sig-storage/a:v1", "huawei-csi:4.8.0"]
            .iter()
            .map(|name| {
                let config = put(store, format!("{{\"config of\":\"{name}\"}}").as_bytes(), media::DOCKER_CONFIG);
                let own = put(store, format!("own layer of {name}").as_bytes(), media::DOCKER_LAYER_GZIP);
                let manifest_bytes = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST, "config": config, "layers": [base, own]})).unwrap();
                let manifest = put(store, &manifest_bytes, media::DOCKER_MANIFEST);
                Image {
                    reference: name.parse().unwrap(),
                    source: ImageSource::Registry { fetched_from: "test".into() },
                    platform: Platform::linux_amd64(),
                    index_digest: None,
                    manifest,
                    config,
                    layers: vec![base.clone(), own],
                }
            })
            .collect()
    }

    fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut entry = e.unwrap();
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                (name, bytes)
            })
            .collect()
    }

    fn write(
        dir: &Path,
        store: &BlobStore,
        images: &[Image],
        name: &str,
        options: &WriteOptions,
    ) -> Result<Written, TarballError> {
        write_bundle(
            store,
            images,
            &crate::tarball::loose_metadata(images),
            &dir.join(name),
            options,
            &Silent,
        )
    }

    #[test]
    fn one_archive_both_docker_and_oci_with_each_blob_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = two_images(&store);
        let written = write(
            dir.path(),
            &store,
            &images,
            "b.tar",
            &WriteOptions::default(),
        )
        .unwrap();
        let entries = entries(&dir.path().join("b.tar"));
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            &names[..4],
            [LAYOUT_JSON, METADATA_JSON, INDEX_JSON, MANIFEST_JSON]
        );
        // 2 manifests + 2 configs + 2 own layers + 1 shared layer.
        assert_eq!(names.len() - 4, 7);
        assert_eq!(written.blobs, 7);
        assert_eq!(
            written.saved_by_sharing,
            "shared base layer bytes".len() as u64
        );
        for (name, bytes) in &entries[4..] {
            assert_eq!(
                *name,
                names::blob_path(&Digest::of(bytes)),
                "every blob hashes to its name"
            );
        }
        let index: serde_json::Value = serde_json::from_slice(&entries[2].1).unwrap();
        assert_eq!(
            index["manifests"][1]["annotations"]["io.containerd.image.name"],
            "docker.io/library/huawei-csi:4.8.0"
        );
        assert_eq!(
            index["manifests"][1]["annotations"]["org.opencontainers.image.ref.name"],
            "4.8.0"
        );
        assert_eq!(
            index["manifests"][0]["digest"],
            images[0].manifest.digest.to_string()
        );
        let manifest: serde_json::Value = serde_json::from_slice(&entries[3].1).unwrap();
        assert_eq!(
            manifest[0]["RepoTags"][0],
            "registry.k8s.io/sig-storage/a:v1"
        );
        for path in manifest[0]["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .chain([&manifest[0]["Config"]])
        {
            assert!(
                names.contains(&path.as_str().unwrap()),
                "{path} is an entry"
            );
        }
    }

    #[test]
    fn checksum_file_matches_and_output_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = two_images(&store);
        let options = WriteOptions {
            mtime: 1_700_000_000,
            ..Default::default()
        };
        let first = write(dir.path(), &store, &images, "one.tar", &options).unwrap();
        write(dir.path(), &store, &images, "two.tar", &options).unwrap();
        let one = std::fs::read(dir.path().join("one.tar")).unwrap();
        assert_eq!(one, std::fs::read(dir.path().join("two.tar")).unwrap());
        assert_eq!(Digest::of(&one), first.sha256);
        let sums = std::fs::read_to_string(dir.path().join("one.tar.sha256")).unwrap();
        assert_eq!(sums, format!("{}  one.tar\n", first.sha256.hex()));
    }

    #[test]
    fn a_missing_blob_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let mut images = two_images(&store);
        images[1].layers[1].digest = Digest::of(b"never stored");
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let err = write(&out, &store, &images, "b.tar", &WriteOptions::default()).unwrap_err();
        assert!(err.to_string().contains("huawei-csi"), "{err}");
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            0,
            "no bundle, no temporary file"
        );
    }

    #[test]
    fn a_file_that_cannot_be_placed_takes_the_whole_bundle_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = two_images(&store);
        // A directory in the way of the checksum file (unsplit) or of the second part (split).
        for (blocked, split) in [("b.tar.sha256", None), ("b.tar.part-001", Some(2048))] {
            let out = dir.path().join(format!("out-{blocked}"));
            std::fs::create_dir_all(out.join(blocked).join("in the way")).unwrap();
            let options = WriteOptions {
                mtime: 0,
                split,
                ..Default::default()
            };
            write(&out, &store, &images, "b.tar", &options).unwrap_err();
            let left: Vec<_> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(
                left,
                [blocked],
                "no bundle, part or checksum without the rest"
            );
        }
    }

    #[test]
    fn split_parts_rejoin_into_the_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join("cache")).unwrap();
        let images = two_images(&store);
        let whole = write(
            dir.path(),
            &store,
            &images,
            "whole.tar",
            &WriteOptions::default(),
        )
        .unwrap();
        let split = write(
            dir.path(),
            &store,
            &images,
            "split.tar",
            &WriteOptions {
                split: Some(2048),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(split.files.len() > 2, "{:?}", split.files);
        let mut joined = Vec::new();
        for part in &split.files {
            let bytes = std::fs::read(part).unwrap();
            assert!(bytes.len() <= 2048);
            joined.extend(bytes);
        }
        assert_eq!(Digest::of(&joined), whole.sha256);
        assert_eq!(split.sha256, whole.sha256);
        let parts = std::fs::read_to_string(dir.path().join("split.tar.parts.sha256")).unwrap();
        assert_eq!(parts.lines().count(), split.files.len());
        assert!(parts.starts_with(&format!(
            "{}  split.tar.part-000\n",
            Digest::of(&std::fs::read(&split.files[0]).unwrap()).hex()
        )));
        let sum = std::fs::read_to_string(dir.path().join("split.tar.sha256")).unwrap();
        assert_eq!(sum, format!("{}  split.tar\n", whole.sha256.hex()));
    }
}
