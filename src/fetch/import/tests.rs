//! Vendor import against small docker-save tarballs built here, in both of docker's layouts.

use std::fs;
use std::os::unix::fs::MetadataExt;

use flate2::read::MultiGzDecoder;
use serde_json::{json, Value};

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

use super::archive::{DockerSave, MAX_LAYERS};
use super::prepare::Prepared;
use super::*;
use super::{layer, members};
use crate::digest::Digest;
use crate::image::{media, ImageSource};
use crate::interrupt::Cancel;
use crate::layer_codec::{Codec, COMPRESSION};
use crate::progress::Silent;

/// An uncompressed layer: a tar holding one file of `size` compressible, seeded pseudo-random bytes.
fn layer_tar(seed: u64, size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let words = [
        "storage ",
        "backend ",
        "volume ",
        "lun ",
        "snapshot ",
        "csi ",
    ];
    let mut content = Vec::with_capacity(size + 16);
    while content.len() < size {
        content.extend_from_slice(words[rng.usize(..words.len())].as_bytes());
    }
    content.truncate(size);
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, format!("opt/file-{seed}"), &content[..])
        .unwrap();
    builder.into_inner().unwrap()
}

fn gzipped(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn gunzipped(bytes: &[u8]) -> Vec<u8> {
    let mut content = Vec::new();
    MultiGzDecoder::new(bytes)
        .read_to_end(&mut content)
        .unwrap();
    content
}

/// An image as a vendor's docker save holds it: the tag as written, the config, the layers' bytes.
struct Saved {
    tag: String,
    config: Vec<u8>,
    layers: Vec<Vec<u8>>,
}

impl Saved {
    fn new(tag: &str, platform: &str, layers: Vec<Vec<u8>>) -> Saved {
        let diff_ids: Vec<Digest> = layers
            .iter()
            .map(|layer| Digest::of(&content(layer)))
            .collect();
        let platform: Platform = platform.parse().unwrap();
        let config = serde_json::to_vec(&json!({
            "architecture": platform.architecture,
            "os": platform.os,
            "variant": platform.variant,
            "config": {"Entrypoint": ["/csi"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        Saved {
            tag: tag.into(),
            config,
            layers,
        }
    }

    /// `huawei-csi:4.8.0` for linux/amd64: the image most tests save.
    fn csi(layers: Vec<Vec<u8>>) -> Saved {
        Saved::new("huawei-csi:4.8.0", "linux/amd64", layers)
    }

    /// Writes this image to `archive` as docker before 25 saved it, and imports its tag from there.
    fn save_and_import(&self, store: &BlobStore, archive: &Path) -> Result<Image, VendorError> {
        write_tar(archive, &legacy(&[self]), false);
        import_one(store, archive, &self.tag)
    }

    fn config_hex(&self) -> String {
        Digest::of(&self.config).hex().to_string()
    }

    /// `<id>/layer.tar`, the id standing for docker's chain ID.
    fn legacy_layer_name(&self, at: usize) -> String {
        format!(
            "{}/layer.tar",
            Digest::of(format!("{}{at}", self.config_hex()).as_bytes()).hex()
        )
    }
}

#[derive(Clone)]
enum Entry {
    File(Vec<u8>),
    Link(String),
}

fn file(name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> (String, Entry) {
    (name.into(), Entry::File(bytes.into()))
}

fn manifest_json(items: Vec<Value>) -> (String, Entry) {
    file("manifest.json", serde_json::to_vec(&items).unwrap())
}

/// What `docker save` of Docker 20 writes: `<id>/layer.tar`, `<config hex>.json`, manifest.json; a layer
/// already saved is a symlink to the first copy, as docker makes it.
fn legacy(images: &[&Saved]) -> Vec<(String, Entry)> {
    let mut entries = Vec::new();
    let mut items = Vec::new();
    let mut saved_at: HashMap<Digest, String> = HashMap::new();
    for image in images {
        let mut layer_names = Vec::new();
        for (at, layer) in image.layers.iter().enumerate() {
            let name = image.legacy_layer_name(at);
            entries.push(file(name.replace("layer.tar", "VERSION"), "1.0"));
            match saved_at.get(&Digest::of(layer)) {
                Some(first) => entries.push((name.clone(), Entry::Link(format!("../{first}")))),
                None => {
                    saved_at.insert(Digest::of(layer), name.clone());
                    entries.push(file(name.clone(), layer.clone()));
                }
            }
            layer_names.push(name);
        }
        entries.push(file(
            format!("{}.json", image.config_hex()),
            image.config.clone(),
        ));
        items.push(
            json!({"Config": format!("{}.json", image.config_hex()), "RepoTags": [image.tag], "Layers": layer_names}),
        );
    }
    entries.push(manifest_json(items));
    entries
}

/// Where an OCI layout keeps a blob.
fn blob(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", Digest::of(bytes).hex())
}

/// The image's layers and config, each as a file under `blobs/sha256/`.
fn layer_and_config_blobs(image: &Saved) -> Vec<(String, Entry)> {
    let mut entries: Vec<_> = image
        .layers
        .iter()
        .map(|layer| file(blob(layer), layer.clone()))
        .collect();
    entries.push(file(blob(&image.config), image.config.clone()));
    entries
}

/// What `docker save` of Docker 25 writes: `blobs/sha256/<hex>` beside oci-layout and index.json.
fn docker_25(image: &Saved) -> Vec<(String, Entry)> {
    let mut entries = layer_and_config_blobs(image);
    entries.push(file("index.json", r#"{"schemaVersion":2,"manifests":[]}"#));
    let layers: Vec<String> = image.layers.iter().map(|layer| blob(layer)).collect();
    entries.push(manifest_json(vec![
        json!({"Config": blob(&image.config), "RepoTags": [image.tag], "Layers": layers}),
    ]));
    entries.push(file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#));
    entries
}

/// Writes the entries with raw header names, so that tests can write what the tar crate would refuse.
fn write_tar(path: &Path, entries: &[(String, Entry)], gzip: bool) {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, entry) in entries {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_mode(0o644);
        let data: &[u8] = match entry {
            Entry::File(bytes) => bytes,
            Entry::Link(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
                &[]
            }
        };
        header.set_size(data.len() as u64);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, if gzip { gzipped(&tar) } else { tar }).unwrap();
}

/// No failure elsewhere stops these imports.
static NEVER: Cancel = Cancel::new();

fn importer(store: &BlobStore) -> Importer<'_> {
    Importer {
        store,
        reporter: &Silent,
        cancel: &NEVER,
    }
}

fn store() -> (tempfile::TempDir, BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(dir.path()).unwrap();
    (dir, store)
}

fn reference(text: &str) -> Reference {
    text.parse().unwrap()
}

/// Imports `tag` from the one archive, as `import_all` does from a directory.
fn import_one(store: &BlobStore, archive: &Path, tag: &str) -> Result<Image, VendorError> {
    let mut vendor = VendorDir {
        dirs: vec![archive.parent().unwrap().to_path_buf()],
        ..VendorDir::default()
    };
    vendor.add(archive)?;
    let wanted = reference(tag);
    let found = vendor.choose(&wanted, &Platform::linux_amd64())?;
    Ok(importer(store)
        .import_each(&[(found, &wanted)], false)?
        .remove(0))
}

/// The content of a layer blob, whatever its compression.
fn content(blob: &[u8]) -> Vec<u8> {
    match Codec::sniff(blob) {
        Codec::Gzip => gunzipped(blob),
        Codec::Zstd => zstd::decode_all(blob).unwrap(),
        Codec::Plain => blob.to_vec(),
    }
}

/// Checks everything a loader will: the stored config is the vendor's, each layer blob hashes to its
/// descriptor and gunzips to its diff_id, and the stored manifest is OCI and names them all.
fn assert_imported(store: &BlobStore, image: &Image, saved: &Saved) {
    assert_eq!(
        image.config.digest,
        Digest::of(&saved.config),
        "the image ID stays the vendor's"
    );
    assert_eq!(store.read(&image.config.digest).unwrap(), saved.config);
    let probe = crate::image::ImageConfig::parse(&saved.config).unwrap();
    assert_eq!(image.layers.len(), probe.rootfs.diff_ids.len());
    for (layer, diff_id) in image.layers.iter().zip(&probe.rootfs.diff_ids) {
        let blob = store.read(&layer.digest).unwrap();
        assert_eq!(
            (Digest::of(&blob), blob.len() as u64),
            (layer.digest.clone(), layer.size)
        );
        let media_type = match Codec::sniff(&blob) {
            Codec::Zstd => media::OCI_LAYER_ZSTD,
            _ => media::OCI_LAYER_GZIP,
        };
        assert_eq!(layer.media_type, media_type);
        assert_eq!(&Digest::of(&content(&blob)), diff_id);
    }
    let manifest_bytes = store.read(&image.manifest.digest).unwrap();
    assert_eq!(Digest::of(&manifest_bytes), image.manifest.digest);
    assert_eq!(image.manifest.media_type, media::OCI_MANIFEST);
    let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], media::OCI_MANIFEST);
    assert_eq!(manifest["config"]["mediaType"], media::OCI_CONFIG);
    assert_eq!(
        manifest["config"]["digest"],
        image.config.digest.to_string()
    );
    let layer_digests: Vec<String> = image.layers.iter().map(|l| l.digest.to_string()).collect();
    let manifest_digests: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(manifest_digests, layer_digests);
    assert_eq!(image.index_digest, None);
}

#[test]
fn scan_finds_every_layout_under_normalized_names() {
    let dir = tempfile::tempdir().unwrap();
    let controller = Saved::new(
        "storage-backend-controller:4.8.0",
        "linux/amd64",
        vec![layer_tar(1, 3000)],
    );
    let csi = Saved::csi(vec![layer_tar(2, 3000)]);
    let extender = Saved::new(
        "example.com/vendor/huawei-csi-extender:4.8.0",
        "linux/amd64",
        vec![layer_tar(3, 3000)],
    );
    write_tar(
        &dir.path().join("controller.tar"),
        &legacy(&[&controller]),
        false,
    );
    write_tar(&dir.path().join("image/csi.tar"), &docker_25(&csi), false);
    write_tar(
        &dir.path().join("image/arm/extender.tar.gz"),
        &legacy(&[&extender]),
        true,
    );
    write_tar(
        &dir.path().join("helm/esdk.tgz"),
        &[file("esdk/Chart.yaml", "name: esdk\n")],
        true,
    );
    fs::write(dir.path().join("README.txt"), "not an archive").unwrap();

    let vendor = VendorDir::scan(dir.path()).unwrap();
    let available: Vec<String> = vendor
        .available()
        .iter()
        .map(Reference::to_string)
        .collect();
    assert_eq!(
        available,
        [
            "docker.io/library/huawei-csi:4.8.0",
            "docker.io/library/storage-backend-controller:4.8.0",
            "example.com/vendor/huawei-csi-extender:4.8.0"
        ]
    );
    let amd64 = Platform::linux_amd64();
    let found = |tag: &str| {
        vendor
            .choose(&reference(tag), &amd64)
            .map(|f| f.archive.clone())
    };
    assert_eq!(
        found("huawei-csi:4.8.0").unwrap(),
        dir.path().join("image/csi.tar")
    );
    assert_eq!(
        found("example.com/vendor/huawei-csi-extender:4.8.0").unwrap(),
        dir.path().join("image/arm/extender.tar.gz")
    );
    assert!(matches!(
        found("huawei-csi:4.5.0"),
        Err(VendorError::Missing { .. })
    ));
    assert_eq!(
        vendor.passed_over,
        [PassedOver {
            file: dir.path().join("helm/esdk.tgz"),
            why: "it is a tar without manifest.json (docker save) or index.json (OCI archive)"
                .into()
        }]
    );
}

#[test]
fn a_legacy_save_imports_with_its_config_kept_and_its_layers_gzipped() {
    let (dir, store) = store();
    let saved = Saved::new(
        "huawei-csi:4.8.0",
        "linux/arm/v7",
        vec![layer_tar(1, 20_000), layer_tar(2, 9_000)],
    );
    let archive = dir.path().join("huawei-csi.tar");
    let image = saved.save_and_import(&store, &archive).unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(
        image.reference.to_string(),
        "docker.io/library/huawei-csi:4.8.0"
    );
    assert_eq!(image.source, ImageSource::Vendor { file: archive });
    assert_eq!(image.platform.to_string(), "linux/arm/v7");
    assert!(
        image.layers[0].size < 20_000 / 2,
        "the layer is compressed: {}",
        image.layers[0].size
    );
}

#[test]
fn a_docker_25_save_imports_through_its_manifest_json() {
    let (dir, store) = store();
    let saved = Saved::new(
        "storage-backend-sidecar:4.8.0",
        "linux/amd64",
        vec![layer_tar(1, 5_000), layer_tar(2, 5_000)],
    );
    let archive = dir.path().join("sidecar.tar");
    write_tar(&archive, &docker_25(&saved), false);
    let image = import_one(
        &store,
        &archive,
        "docker.io/library/storage-backend-sidecar:4.8.0",
    )
    .unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(image.platform, Platform::linux_amd64());
}

#[test]
fn a_gzipped_archive_imports_like_a_plain_one_and_leaves_no_copy() {
    let (dir, store) = store();
    let saved = Saved::new(
        "huawei-csi-extender:4.8.0",
        "linux/amd64",
        vec![layer_tar(1, 5_000)],
    );
    write_tar(&dir.path().join("plain.tar"), &legacy(&[&saved]), false);
    write_tar(&dir.path().join("packed.tgz"), &legacy(&[&saved]), true);
    let plain = import_one(
        &store,
        &dir.path().join("plain.tar"),
        "huawei-csi-extender:4.8.0",
    )
    .unwrap();
    let packed = import_one(
        &store,
        &dir.path().join("packed.tgz"),
        "huawei-csi-extender:4.8.0",
    )
    .unwrap();
    assert_imported(&store, &packed, &saved);
    assert_eq!(packed.manifest, plain.manifest);
    let partial = dir.path().join("ferry-v1/partial");
    assert_eq!(
        fs::read_dir(partial).unwrap().count(),
        0,
        "the gunzipped copy is gone"
    );
}

#[test]
fn an_already_gzipped_layer_is_kept_byte_for_byte() {
    let (dir, store) = store();
    let vendor_gzip = gzipped(&layer_tar(1, 8_000));
    let saved = Saved::csi(vec![vendor_gzip.clone(), layer_tar(2, 8_000)]);
    let archive = dir.path().join("csi.tar");
    let image = saved.save_and_import(&store, &archive).unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(image.layers[0].digest, Digest::of(&vendor_gzip));
}

#[test]
fn a_layer_saved_twice_is_found_through_its_symlink() {
    let (dir, store) = store();
    let saved = Saved::csi(vec![
        layer_tar(1, 4_000),
        layer_tar(2, 4_000),
        layer_tar(1, 4_000),
    ]);
    let entries = legacy(&[&saved]);
    assert!(entries
        .iter()
        .any(|(_, entry)| matches!(entry, Entry::Link(target) if target.starts_with("../"))));
    let archive = dir.path().join("csi.tar");
    write_tar(&archive, &entries, false);
    let image = import_one(&store, &archive, "huawei-csi:4.8.0").unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(image.layers[0], image.layers[2]);
}

#[test]
fn a_warm_import_compresses_nothing_again() {
    let (dir, store) = store();
    let saved = Saved::csi(vec![layer_tar(1, 30_000)]);
    let archive = dir.path().join("csi.tar");
    let cold = saved.save_and_import(&store, &archive).unwrap();
    let layer = &cold.layers[0];
    let diff_id = Digest::of(&saved.layers[0]);
    let note = String::from_utf8(store.note(COMPRESSION, &diff_id).unwrap()).unwrap();
    assert_eq!(note, format!("{} {}\n", layer.digest, layer.size));
    let blob = store.path(&layer.digest);
    let before = fs::metadata(&blob).unwrap();

    std::thread::sleep(std::time::Duration::from_millis(20));
    let warm = import_one(&store, &archive, "huawei-csi:4.8.0").unwrap();
    assert_eq!(warm, cold);
    let after = fs::metadata(&blob).unwrap();
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (before.ino(), before.mtime_nsec()),
        "the blob was not written again"
    );

    fs::remove_file(&blob).unwrap();
    let rebuilt = import_one(&store, &archive, "huawei-csi:4.8.0").unwrap();
    assert_eq!(rebuilt, cold, "a note whose blob is gone is not trusted");
    assert!(store.contains(&layer.digest, Some(layer.size)));
}

#[test]
fn imports_into_fresh_caches_give_the_same_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let saved = Saved::csi(vec![layer_tar(1, 20_000), layer_tar(2, 20_000)]);
    let archive = dir.path().join("csi.tar");
    write_tar(&archive, &legacy(&[&saved]), false);
    let ((_a, first), (_b, second)) = (store(), store());
    let one = import_one(&first, &archive, "huawei-csi:4.8.0").unwrap();
    let two = import_one(&second, &archive, "huawei-csi:4.8.0").unwrap();
    assert_eq!(one.manifest.digest, two.manifest.digest);
    assert_eq!(
        first.read(&one.manifest.digest).unwrap(),
        second.read(&two.manifest.digest).unwrap()
    );
}

#[test]
fn import_all_keeps_request_order_and_gzips_a_shared_base_once() {
    let (dir, store) = store();
    let base = layer_tar(7, 10_000);
    let vendor = dir.path().join("vendor");
    let tags = ["storage-backend-controller:4.8.0", "huawei-csi:4.8.0"];
    let saved: Vec<Saved> = tags
        .iter()
        .enumerate()
        .map(|(at, tag)| {
            Saved::new(
                tag,
                "linux/amd64",
                vec![base.clone(), layer_tar(at as u64, 2_000)],
            )
        })
        .collect();
    let paths: Vec<PathBuf> = tags
        .iter()
        .map(|tag| vendor.join(format!("{}.tar", tag.replace(':', "-"))))
        .collect();
    for (image, path) in saved.iter().zip(&paths) {
        write_tar(path, &legacy(&[image]), false);
    }
    let references: Vec<Reference> = tags.iter().map(|tag| reference(tag)).collect();

    let scanned = VendorDir::scan(&vendor).unwrap();
    let found: Vec<&Found> = references
        .iter()
        .map(|r| scanned.choose(r, &Platform::linux_amd64()).unwrap())
        .collect();
    let archives: Vec<DockerSave> = paths
        .iter()
        .zip(&found)
        .map(|(path, f)| DockerSave::open(path, f.tar_bytes, &store, &NEVER).unwrap())
        .collect();
    let prepared: Vec<Prepared> = archives
        .iter()
        .zip(found)
        .zip(&references)
        .map(|((a, f), r)| prepare(a, f, r).unwrap())
        .collect();
    assert_eq!(
        plan_layers(&store, &prepared).0.len(),
        3,
        "the shared base is one job"
    );

    let images = importer(&store)
        .import_all(
            std::slice::from_ref(&vendor),
            &references,
            &[Platform::linux_amd64()],
            &[],
        )
        .unwrap();
    for ((image, saved), wanted) in images.iter().zip(&saved).zip(&references) {
        assert_eq!(&image.reference, wanted);
        assert_imported(&store, image, saved);
    }
    assert_eq!(images[0].layers[0], images[1].layers[0]);
}

#[test]
fn a_missing_image_is_reported_with_what_the_directory_has() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let saved = Saved::csi(vec![layer_tar(1, 1_000)]);
    write_tar(&vendor.join("csi.tar"), &legacy(&[&saved]), false);
    let amd64 = Platform::linux_amd64();
    let err = importer(&store)
        .import_all(
            std::slice::from_ref(&vendor),
            &[reference("huawei-csi:4.5.0")],
            std::slice::from_ref(&amd64),
            &[],
        )
        .unwrap_err();
    assert!(
        matches!(&err, VendorError::Missing { available, .. } if available == &[reference("huawei-csi:4.8.0")]),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("it has: docker.io/library/huawei-csi:4.8.0"),
        "{err}"
    );
    let err = import_one(&store, &vendor.join("csi.tar"), "huawei-csi:4.5.0").unwrap_err();
    assert!(matches!(err, VendorError::Missing { .. }), "{err}");
}

#[test]
fn a_tampered_layer_is_refused_naming_it() {
    let (dir, store) = store();
    let mut saved = Saved::csi(vec![layer_tar(1, 5_000), layer_tar(2, 5_000)]);
    let expected = Digest::of(&saved.layers[1]);
    saved.layers[1] = layer_tar(3, 5_000);
    let archive = dir.path().join("csi.tar");
    let err = saved.save_and_import(&store, &archive).unwrap_err();
    let VendorError::DiffIdMismatch {
        archive: named,
        entry,
        expected: said,
        actual,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((named, entry), (&archive, &saved.legacy_layer_name(1)));
    assert_eq!((said, actual), (&expected, &Digest::of(&saved.layers[1])));
    let tampered =
        members::with_gzip_pool(|pool| layer::gzip(pool, &saved.layers[1][..], io::sink()))
            .unwrap();
    assert!(
        !store.contains(&tampered.digest, None),
        "the wrong layer is not stored"
    );
    assert!(store.note(COMPRESSION, &expected).is_none());
}

#[test]
fn paths_leading_outside_the_archive_are_refused() {
    let (dir, store) = store();
    let saved = Saved::csi(vec![layer_tar(1, 1_000)]);
    let layer_name = saved.legacy_layer_name(0);
    let cases: Vec<(&str, Vec<(String, Entry)>)> = vec![
        (
            "entry",
            [legacy(&[&saved]), vec![file("../evil", "x")]].concat(),
        ),
        ("manifest.json", {
            let mut entries = legacy(&[&saved]);
            let item = json!({"Config": format!("{}.json", saved.config_hex()), "RepoTags": [saved.tag], "Layers": ["../../etc/passwd"]});
            *entries.last_mut().unwrap() = manifest_json(vec![item]);
            entries
        }),
        ("symlink", {
            let mut entries = legacy(&[&saved]);
            let at = entries
                .iter()
                .position(|(name, _)| name == &layer_name)
                .unwrap();
            entries[at].1 = Entry::Link("../../etc/passwd".into());
            entries
        }),
    ];
    for (case, entries) in cases {
        let archive = dir.path().join(format!("{case}.tar"));
        write_tar(&archive, &entries, false);
        let err = import_one(&store, &archive, "huawei-csi:4.8.0").unwrap_err();
        assert!(
            matches!(&err, VendorError::UnsafePath { archive: named, .. } if named == &archive),
            "{case}: {err}"
        );
        assert!(err.to_string().contains(".."), "{case}: {err}");
    }
}

#[test]
fn entries_missing_from_the_archive_are_refused() {
    let (dir, store) = store();
    let saved = Saved::csi(vec![layer_tar(1, 1_000)]);
    let config_name = format!("{}.json", saved.config_hex());
    for missing in [config_name, saved.legacy_layer_name(0)] {
        let entries: Vec<_> = legacy(&[&saved])
            .into_iter()
            .filter(|(name, _)| name != &missing)
            .collect();
        let archive = dir.path().join("csi.tar");
        write_tar(&archive, &entries, false);
        let err = import_one(&store, &archive, "huawei-csi:4.8.0").unwrap_err();
        assert!(
            matches!(&err, VendorError::MissingEntry { entry, .. } if entry == &missing),
            "{err}"
        );
        assert!(
            matches!(
                VendorDir::scan(dir.path()),
                Err(VendorError::MissingEntry { .. })
            ),
            "scan refuses it too"
        );
    }
}

#[test]
fn oversized_json_and_too_many_layers_are_refused() {
    let (dir, store) = store();
    let saved = Saved::csi(vec![layer_tar(1, 1_000)]);

    let mut entries = legacy(&[&saved]);
    let Entry::File(manifest) = &mut entries.last_mut().unwrap().1 else {
        unreachable!()
    };
    manifest.extend(std::iter::repeat_n(b' ', 1 << 20));
    write_tar(&dir.path().join("big-manifest.tar"), &entries, false);
    let err = import_one(
        &store,
        &dir.path().join("big-manifest.tar"),
        "huawei-csi:4.8.0",
    )
    .unwrap_err();
    assert!(
        matches!(&err, VendorError::TooLarge { entry, .. } if entry == "manifest.json"),
        "{err}"
    );

    let mut big = saved.config.clone();
    big.extend(std::iter::repeat_n(b' ', 4 << 20));
    let big = Saved {
        config: big,
        ..Saved::new(&saved.tag, "linux/amd64", saved.layers.clone())
    };
    write_tar(&dir.path().join("big-config.tar"), &legacy(&[&big]), false);
    let err = import_one(
        &store,
        &dir.path().join("big-config.tar"),
        "huawei-csi:4.8.0",
    )
    .unwrap_err();
    assert!(
        matches!(&err, VendorError::TooLarge { entry, .. } if entry == &format!("{}.json", big.config_hex())),
        "{err}"
    );

    let deep = Saved::csi(
        (0..=MAX_LAYERS as u64)
            .map(|seed| layer_tar(seed, 10))
            .collect(),
    );
    write_tar(&dir.path().join("deep.tar"), &legacy(&[&deep]), false);
    let err = import_one(&store, &dir.path().join("deep.tar"), "huawei-csi:4.8.0").unwrap_err();
    assert!(
        matches!(err, VendorError::TooManyLayers { count: 126, .. }),
        "{err}"
    );
}

#[test]
fn a_zstd_layer_is_kept_as_it_is_and_checked_against_its_diff_id() {
    let (dir, store) = store();
    let zstd = zstd::encode_all(&layer_tar(1, 20_000)[..], 3).unwrap();
    let saved = Saved::csi(vec![zstd.clone(), layer_tar(2, 5_000)]);
    let archive = dir.path().join("csi.tar");
    let image = saved.save_and_import(&store, &archive).unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(
        (
            image.layers[0].digest.clone(),
            image.layers[0].media_type.as_str()
        ),
        (Digest::of(&zstd), media::OCI_LAYER_ZSTD)
    );

    let mut fake = vec![0x28, 0xb5, 0x2f, 0xfd];
    fake.extend(layer_tar(1, 100));
    let saved = Saved {
        layers: vec![fake, saved.layers[1].clone()],
        ..saved
    };
    let err = saved.save_and_import(&store, &archive).unwrap_err();
    assert!(
        matches!(&err, VendorError::Layer { entry, .. } if entry == &saved.legacy_layer_name(0)),
        "{err}"
    );
}

/// `import_all` of one tag from `dir`, for linux/amd64.
fn import_tag(store: &BlobStore, dir: &Path, tag: &str) -> Result<Vec<Image>, VendorError> {
    importer(store).import_all(
        &[dir.to_path_buf()],
        &[reference(tag)],
        &[Platform::linux_amd64()],
        &[],
    )
}

/// Writes `real` where the vendor's package has it and `impostor` in a tarball whose path sorts first;
/// returns the refusal that names both.
fn real_and_impostor(vendor: &Path, real: &Saved, impostor: &Saved) -> String {
    let (real_at, impostor_at) = (
        vendor.join("image/huawei-csi.tar"),
        vendor.join("aaa-anything.tar"),
    );
    write_tar(&real_at, &legacy(&[real]), false);
    write_tar(&impostor_at, &legacy(&[impostor]), false);
    format!(
        "two vendor images are named docker.io/library/huawei-csi:4.8.0, with different content: \
         {} (image sha256:{}) and {} (image sha256:{}); remove the one that is not the vendor's \
         from the vendor directory",
        impostor_at.display(),
        impostor.config_hex(),
        real_at.display(),
        real.config_hex()
    )
}

#[test]
fn two_images_of_one_name_with_different_content_are_refused_naming_both() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let real = Saved::csi(vec![layer_tar(1, 2_000)]);
    let impostor = Saved::csi(vec![layer_tar(9, 2_000)]);
    let conflict = real_and_impostor(&vendor, &real, &impostor);
    let err = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap_err();
    assert_eq!(err.to_string(), conflict);
    assert_eq!(
        crate::Error::from(crate::fetch::FetchStageError::from(err)).exit_code(),
        2
    );

    // Two entries of one manifest.json: the same refusal, naming the file.
    let both = vendor.join("both.tar");
    write_tar(&both, &legacy(&[&real, &impostor]), false);
    let err = import_one(&store, &both, "huawei-csi:4.8.0").unwrap_err();
    assert!(
        matches!(&err, VendorError::Conflict { first, second, .. } if first.0 == both && second.0 == both),
        "{err}"
    );

    // The same image twice, in any archives, is no conflict: the first by path is imported.
    fs::remove_file(vendor.join("aaa-anything.tar")).unwrap();
    fs::remove_file(&both).unwrap();
    write_tar(&vendor.join("copy/again.tgz"), &legacy(&[&real]), true);
    let images = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap();
    assert_imported(&store, &images[0], &real);
    assert_eq!(
        images[0].source,
        ImageSource::Vendor {
            file: vendor.join("copy/again.tgz")
        }
    );
}

#[test]
fn of_one_name_in_two_platforms_the_platform_asked_for_is_imported() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let arm = Saved::new("huawei-csi:4.8.0", "linux/arm64", vec![layer_tar(1, 2_000)]);
    let amd = Saved::csi(vec![layer_tar(2, 2_000)]);
    write_tar(&vendor.join("arm/csi.tar"), &legacy(&[&arm]), false);
    write_tar(&vendor.join("x86/csi.tar"), &legacy(&[&amd]), false);
    for (platform, saved) in [("linux/amd64", &amd), ("linux/arm64", &arm)] {
        let images = importer(&store)
            .import_all(
                std::slice::from_ref(&vendor),
                &[reference("huawei-csi:4.8.0")],
                &[platform.parse().unwrap()],
                &[],
            )
            .unwrap();
        assert_imported(&store, &images[0], saved);
        assert_eq!(images[0].platform.to_string(), platform);
    }
}

/// Two architecture packages, as two directories: each platform from the tarball whose config says it,
/// whatever the files are called; a platform no package has is named with those they have.
#[test]
fn several_platforms_come_from_several_packages_by_their_configs() {
    let (dir, store) = store();
    let (x86, arm) = (dir.path().join("X86_64"), dir.path().join("ARM_64"));
    let amd = Saved::csi(vec![layer_tar(1, 2_000)]);
    let arm64 = Saved::new("huawei-csi:4.8.0", "linux/arm64", vec![layer_tar(2, 2_000)]);
    // The file names lie: only the configs say which is which.
    write_tar(&x86.join("huawei-csi-arm64.tar"), &legacy(&[&amd]), false);
    write_tar(&arm.join("huawei-csi-amd64.tar"), &legacy(&[&arm64]), false);
    let dirs = [arm.clone(), x86.clone()];
    let both: Vec<Platform> = vec![Platform::linux_amd64(), "linux/arm64".parse().unwrap()];
    let wanted = [reference("huawei-csi:4.8.0")];
    let images = importer(&store)
        .import_all(&dirs, &wanted, &both, &[])
        .unwrap();
    assert_eq!(images.len(), 2);
    assert_imported(&store, &images[0], &amd);
    assert_imported(&store, &images[1], &arm64);

    let with_s390x = [Platform::linux_amd64(), "linux/s390x".parse().unwrap()];
    let err = importer(&store)
        .import_all(&dirs, &wanted, &with_s390x, &[])
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "the vendor's packages have no docker.io/library/huawei-csi:4.8.0 for linux/s390x; they have it \
             for: linux/arm64 ({}), linux/amd64 ({}); add the package for linux/s390x with another \
             --vendor-dir, or carry this image as it is with --allow-single-platform \
             docker.io/library/huawei-csi:4.8.0",
            arm.join("huawei-csi-amd64.tar").display(),
            x86.join("huawei-csi-arm64.tar").display()
        )
    );
    let allowed = importer(&store)
        .import_all(&dirs, &wanted, &with_s390x, &wanted)
        .unwrap();
    assert_eq!(allowed.len(), 1, "the platform it has");

    // Another tarball for amd64 with other content is refused, naming both.
    let other = Saved::csi(vec![layer_tar(3, 2_000)]);
    write_tar(&arm.join("extra.tar"), &legacy(&[&other]), false);
    let err = importer(&store)
        .import_all(&dirs, &wanted, &both, &[])
        .unwrap_err();
    assert!(matches!(err, VendorError::Conflict { .. }), "{err}");
}

#[test]
fn files_that_are_no_image_archive_are_named_with_why_and_no_binary() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    fs::create_dir_all(&vendor).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let random: Vec<u8> = (0..20_000).map(|_| rng.u8(..)).collect();
    fs::write(vendor.join("random.tar"), &random).unwrap();
    let saved = Saved::csi(vec![layer_tar(1, 30_000)]);
    write_tar(&vendor.join("full.tar"), &legacy(&[&saved]), false);
    let full = fs::read(vendor.join("full.tar")).unwrap();
    fs::remove_file(vendor.join("full.tar")).unwrap();
    // Cut inside the layer: manifest.json, written last, is gone.
    fs::write(vendor.join("cut.tar"), &full[..full.len() / 2]).unwrap();
    // Cut inside the header of manifest.json, the last entry.
    let end = full.len() - 1024;
    fs::write(vendor.join("cut-end.tar"), &full[..end - 600]).unwrap();
    write_tar(&vendor.join("gz/cut.tar.gz"), &legacy(&[&saved]), true);
    let gz = fs::read(vendor.join("gz/cut.tar.gz")).unwrap();
    fs::write(vendor.join("gz/cut.tar.gz"), &gz[..gz.len() / 2]).unwrap();

    let err = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap_err();
    let layer = saved.legacy_layer_name(0);
    let layer_end = {
        let mut tar = tar::Archive::new(&full[..]);
        let entry = tar
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some(layer.as_str()))
            .unwrap();
        entry.raw_file_position() + entry.size()
    };
    let at = |name: &str| vendor.join(name).display().to_string();
    assert_eq!(
        err.to_string(),
        format!(
            "the vendor directory {} has no image docker.io/library/huawei-csi:4.8.0; it has: no image archives\n\
             passed over {}: the tar is damaged or cut short after its entry '{}.json'\n\
             passed over {}: it is cut short: its entry '{layer}' needs {layer_end} bytes, the file has {}\n\
             passed over {}: the tar is damaged or cut short inside its entry '{layer}'\n\
             passed over {}: it is not a tar file (nor a gzipped one)\n\
             (the tarballs are in the vendor's release package, e.g. its image/ directory)",
            vendor.display(),
            at("cut-end.tar"),
            saved.config_hex(),
            at("cut.tar"),
            full.len() / 2,
            at("gz/cut.tar.gz"),
            at("random.tar"),
        )
    );
    assert!(!err.to_string().contains('\u{fffd}'));
}

/// An OCI archive as `podman save --format oci-archive` and skopeo `oci-archive:` write it: blobs, an
/// index.json whose entry is annotated with `ref_name`, oci-layout; no manifest.json.
fn oci_archive(image: &Saved, ref_name: Option<&str>) -> Vec<(String, Entry)> {
    let descriptor = |media_type: &str, bytes: &[u8]| json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()});
    let layers: Vec<Value> = image
        .layers
        .iter()
        .map(|layer| {
            let media_type = match Codec::sniff(layer) {
                Codec::Gzip => media::OCI_LAYER_GZIP,
                Codec::Zstd => media::OCI_LAYER_ZSTD,
                Codec::Plain => media::OCI_LAYER_TAR,
            };
            descriptor(media_type, layer)
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(media::OCI_CONFIG, &image.config),
        "layers": layers,
    }))
    .unwrap();
    let mut entry = descriptor(media::OCI_MANIFEST, &manifest);
    if let Some(name) = ref_name {
        entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    }
    let mut entries = layer_and_config_blobs(image);
    entries.push(file(blob(&manifest), manifest));
    entries.push(file(
        "index.json",
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": [entry]})).unwrap(),
    ));
    entries.push(file("oci-layout", r#"{"imageLayoutVersion":"1.0.0"}"#));
    entries
}

#[test]
fn an_oci_archive_imports_under_its_ref_name() {
    let (dir, store) = store();
    let saved = Saved::new(
        "example.com/vendor/huawei-csi:4.8.0",
        "linux/amd64",
        vec![gzipped(&layer_tar(1, 9_000)), layer_tar(2, 9_000)],
    );
    let archive = dir.path().join("csi.tar");
    write_tar(
        &archive,
        &oci_archive(&saved, Some("example.com/vendor/huawei-csi:4.8.0")),
        false,
    );
    let image = import_one(&store, &archive, "example.com/vendor/huawei-csi:4.8.0").unwrap();
    assert_imported(&store, &image, &saved);
    assert_eq!(image.layers[0].digest, Digest::of(&saved.layers[0]));

    write_tar(&archive, &oci_archive(&saved, Some("4.8.0")), false);
    let err = import_one(&store, &archive, "example.com/vendor/huawei-csi:4.8.0").unwrap_err();
    assert!(
        matches!(&err, VendorError::Missing { passed_over, .. } if passed_over[0].why.starts_with("it is an OCI archive whose images carry no name")),
        "{err}"
    );

    // A manifest blob that does not hash to its name.
    let mut entries = oci_archive(&saved, Some("example.com/vendor/huawei-csi:4.8.0"));
    let (name, manifest) = entries
        .iter_mut()
        .find(|(_, e)| matches!(e, Entry::File(b) if b.starts_with(b"{\"config\"")))
        .unwrap();
    let Entry::File(bytes) = manifest else {
        unreachable!()
    };
    bytes.extend_from_slice(b" ");
    let name = name.clone();
    write_tar(&archive, &entries, false);
    let err = import_one(&store, &archive, "example.com/vendor/huawei-csi:4.8.0").unwrap_err();
    let Entry::File(bytes) = &entries.iter().find(|(n, _)| n == &name).unwrap().1 else {
        unreachable!()
    };
    assert_eq!(
        err.to_string(),
        format!(
            "vendor archive {}: {name} hashes to {}: the archive was altered or damaged",
            archive.display(),
            Digest::of(bytes)
        )
    );
}

#[test]
fn a_config_that_is_not_json_is_refused_naming_it() {
    let (dir, store) = store();
    let saved = Saved {
        config: b"not a config".to_vec(),
        ..Saved::csi(vec![layer_tar(1, 1_000)])
    };
    let archive = dir.path().join("csi.tar");
    let err = saved.save_and_import(&store, &archive).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "vendor archive {}: {}.json is not JSON",
            archive.display(),
            saved.config_hex()
        )
    );
}

#[test]
fn an_oci_archive_of_a_multi_platform_index_imports_the_platforms_it_holds() {
    let (dir, store) = store();
    let saved = Saved::new("vendor/csi:1", "linux/amd64", vec![layer_tar(1, 4_000)]);
    let mut entries = oci_archive(&saved, None);
    let index_at = entries.iter().position(|(n, _)| n == "index.json").unwrap();
    let Entry::File(index) = &entries[index_at].1 else {
        unreachable!()
    };
    let index: Value = serde_json::from_slice(index).unwrap();
    let mut amd64 = index["manifests"][0].clone();
    amd64["platform"] = json!({"os": "linux", "architecture": "amd64"});
    let arm64 = json!({"mediaType": media::OCI_MANIFEST, "digest": Digest::of(b"absent"), "size": 6,
        "platform": {"os": "linux", "architecture": "arm64"}});
    let nested = serde_json::to_vec(
        &json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [amd64, arm64]}),
    )
    .unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{"mediaType": media::OCI_INDEX,
        "digest": Digest::of(&nested), "size": nested.len(),
        "annotations": {"org.opencontainers.image.ref.name": "example.com/vendor/csi:1"}}]});
    entries[index_at] = file("index.json", serde_json::to_vec(&top).unwrap());
    entries.push(file(blob(&nested), nested));
    let archive = dir.path().join("csi.tar");
    write_tar(&archive, &entries, false);
    let image = import_one(&store, &archive, "example.com/vendor/csi:1").unwrap();
    assert_imported(&store, &image, &saved);
}

#[test]
fn an_archive_replaced_between_scan_and_import_is_refused() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let first = Saved::csi(vec![layer_tar(1, 2_000)]);
    let other = Saved::csi(vec![layer_tar(2, 2_000)]);
    let archive = vendor.join("csi.tar");
    write_tar(&archive, &legacy(&[&first]), false);
    let scanned = VendorDir::scan(&vendor).unwrap();
    let wanted = reference("huawei-csi:4.8.0");
    let found = scanned.choose(&wanted, &Platform::linux_amd64()).unwrap();
    write_tar(&archive, &legacy(&[&other]), false);
    let err = importer(&store)
        .import_each(&[(found, &wanted)], false)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "vendor archive {} changed while ferry read it",
            archive.display()
        )
    );
}

/// One vendor image on two platforms is two tasks, each named with its platform, each counting its own
/// layer's bytes up to its total.
#[test]
fn an_image_on_two_platforms_is_two_tasks_of_progress() {
    let (dir, store) = store();
    let (x86, arm) = (dir.path().join("X86_64"), dir.path().join("ARM_64"));
    let amd = Saved::csi(vec![layer_tar(1, 2_000)]);
    let arm64 = Saved::new("huawei-csi:4.8.0", "linux/arm64", vec![layer_tar(2, 3_000)]);
    write_tar(&x86.join("csi.tar"), &legacy(&[&amd]), false);
    write_tar(&arm.join("csi.tar"), &legacy(&[&arm64]), false);
    let both: Vec<Platform> = vec![Platform::linux_amd64(), "linux/arm64".parse().unwrap()];
    let recorder = crate::testutil::Recorder::default();
    Importer {
        store: &store,
        reporter: &recorder,
        cancel: &NEVER,
    }
    .import_all(&[x86, arm], &[reference("huawei-csi:4.8.0")], &both, &[])
    .unwrap();
    let sizes = [amd.layers[0].len() as u64, arm64.layers[0].len() as u64];
    assert_eq!(
        recorder.started(),
        [
            (
                "import docker.io/library/huawei-csi:4.8.0 (linux/amd64)".to_string(),
                sizes[0],
                0
            ),
            (
                "import docker.io/library/huawei-csi:4.8.0 (linux/arm64)".to_string(),
                sizes[1],
                0
            ),
        ]
    );
    assert_eq!(recorder.bytes(crate::progress::Id(0)), sizes[0]);
    assert_eq!(recorder.bytes(crate::progress::Id(1)), sizes[1]);
}

/// A real image whose config names no platform does not let an impostor for the platform asked for
/// through: every image of the name is compared.
#[test]
fn an_impostor_is_refused_when_the_real_config_names_no_platform() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let mut real = Saved::csi(vec![layer_tar(1, 2_000)]);
    let mut config: Value = serde_json::from_slice(&real.config).unwrap();
    for field in ["os", "architecture", "variant"] {
        config.as_object_mut().unwrap().remove(field);
    }
    real.config = serde_json::to_vec(&config).unwrap();
    let impostor = Saved::csi(vec![layer_tar(9, 2_000)]);
    let conflict = real_and_impostor(&vendor, &real, &impostor);
    let err = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap_err();
    assert_eq!(err.to_string(), conflict);
    let both = [Platform::linux_amd64(), "linux/arm64".parse().unwrap()];
    let err = importer(&store)
        .import_all(
            std::slice::from_ref(&vendor),
            &[reference("huawei-csi:4.8.0")],
            &both,
            &[],
        )
        .unwrap_err();
    assert_eq!(err.to_string(), conflict);
}

/// Like the registry side, vendor import names every image it cannot take in one run: all that are
/// missing in one line, each name two different images claim, each platform a package lacks.
#[test]
fn every_missing_or_ambiguous_vendor_image_is_reported_at_once() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    fs::create_dir_all(&vendor).unwrap();
    let tags = [
        "huawei-csi:4.8.0",
        "storage-backend-controller:4.8.0",
        "storage-backend-sidecar:4.8.0",
        "huawei-csi-extender:4.8.0",
    ];
    let wanted: Vec<Reference> = tags.iter().map(|tag| reference(tag)).collect();
    // The refusal, which is the user's to fix (exit 2).
    let refusal = || {
        let err = importer(&store)
            .import_all(
                std::slice::from_ref(&vendor),
                &wanted,
                &[Platform::linux_amd64()],
                &[],
            )
            .unwrap_err();
        let message = err.to_string();
        let code = crate::Error::from(crate::fetch::FetchStageError::from(err)).exit_code();
        assert_eq!(code, 2, "{message}");
        message
    };
    assert_eq!(
        refusal(),
        format!(
            "the vendor directory {} has none of the images docker.io/library/huawei-csi:4.8.0, \
             docker.io/library/storage-backend-controller:4.8.0, \
             docker.io/library/storage-backend-sidecar:4.8.0, docker.io/library/huawei-csi-extender:4.8.0; \
             it has: no image archives\n\
             (the tarballs are in the vendor's release package, e.g. its image/ directory)",
            vendor.display()
        )
    );

    // Two present, one of them twice with different content, and two missing: the missing ones
    // together, then the conflict.
    let csi = Saved::csi(vec![layer_tar(1, 2_000)]);
    let other = Saved::csi(vec![layer_tar(2, 2_000)]);
    let controller = Saved::new(
        "storage-backend-controller:4.8.0",
        "linux/amd64",
        vec![layer_tar(3, 2_000)],
    );
    write_tar(&vendor.join("a.tar"), &legacy(&[&csi, &controller]), false);
    write_tar(&vendor.join("b.tar"), &legacy(&[&other]), false);
    assert_eq!(
        refusal(),
        format!(
            "3 vendor images cannot be imported:\n  \
             the vendor directory {dir} has none of the images \
             docker.io/library/storage-backend-sidecar:4.8.0, docker.io/library/huawei-csi-extender:4.8.0; \
             it has: docker.io/library/huawei-csi:4.8.0, docker.io/library/storage-backend-controller:4.8.0\n    \
             (the tarballs are in the vendor's release package, e.g. its image/ directory)\n  \
             two vendor images are named docker.io/library/huawei-csi:4.8.0, with different content: \
             {a} (image sha256:{}) and {b} (image sha256:{}); remove the one that is not the vendor's \
             from the vendor directory",
            csi.config_hex(),
            other.config_hex(),
            dir = vendor.display(),
            a = vendor.join("a.tar").display(),
            b = vendor.join("b.tar").display(),
        )
    );
}

/// Writes a gzipped tar whose entries are streamed from readers (larger than a test holds in memory),
/// then `after_end` zeros past the tar's end.
fn write_streamed_tgz(path: &Path, entries: Vec<(String, u64, Box<dyn Read>)>, after_end: u64) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = fs::File::create(path).unwrap();
    let encoder = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut builder = tar::Builder::new(encoder);
    for (name, size, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).unwrap();
    }
    let mut encoder = builder.into_inner().unwrap();
    io::copy(&mut io::repeat(0).take(after_end), &mut encoder).unwrap();
    encoder.finish().unwrap();
}

/// A docker save of one image whose layer is `zeros` zero bytes in one file, as streamed entries.
fn image_of_zeros(tag: &str, zeros: u64) -> Vec<(String, u64, Box<dyn Read>)> {
    use sha2::Digest as _;
    let mut header = tar::Header::new_gnu();
    header.set_path("opt/zeros").unwrap();
    header.set_size(zeros);
    header.set_mode(0o644);
    header.set_cksum();
    let head = header.as_bytes().to_vec();
    // The file's data, padded to a block, then the tar's two end blocks.
    let tail = zeros.div_ceil(512) * 512 + 1024;
    let layer = move || io::Cursor::new(head.clone()).chain(io::repeat(0).take(tail));
    let mut hasher = sha2::Sha256::new();
    io::copy(&mut layer(), &mut hasher).unwrap();
    let diff_id: Digest = format!("sha256:{}", hex::encode(hasher.finalize()))
        .parse()
        .unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let manifest = serde_json::to_vec(
        &json!([{"Config": config_name, "RepoTags": [tag], "Layers": ["zeros/layer.tar"]}]),
    )
    .unwrap();
    vec![
        ("zeros/layer.tar".into(), 512 + tail, Box::new(layer())),
        (
            config_name,
            config.len() as u64,
            Box::new(io::Cursor::new(config)),
        ),
        (
            "manifest.json".into(),
            manifest.len() as u64,
            Box::new(io::Cursor::new(manifest)),
        ),
    ]
}

/// A `.tar.gz` that expands more than a hundredfold (a gzip bomb) is passed over while it is listed,
/// and named with why; nothing of it reaches the cache.
#[test]
fn a_gzipped_tarball_that_expands_a_hundredfold_is_passed_over() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let bomb = vendor.join("csi.tar.gz");
    write_streamed_tgz(&bomb, image_of_zeros("huawei-csi:4.8.0", 128 << 20), 0);
    let length = fs::metadata(&bomb).unwrap().len();
    let limit = length * 100 + (64 << 20);
    assert!(
        limit < 128 << 20,
        "a {length}-byte file expands a thousandfold"
    );
    let err = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the vendor directory {} has no image docker.io/library/huawei-csi:4.8.0; it has: no image \
             archives\npassed over {}: gunzipped, it expands beyond {limit} bytes from its {length}, more \
             than 100 times, as no image tarball does (a gzip bomb?); if it is the vendor's, gunzip it \
             and ferry reads the .tar\n\
             (the tarballs are in the vendor's release package, e.g. its image/ directory)",
            vendor.display(),
            bomb.display()
        )
    );
    let partial = dir.path().join("ferry-v1/partial");
    assert_eq!(fs::read_dir(partial).unwrap().count(), 0);
}

/// What follows a gzipped tar's end is not gunzipped into the cache: import copies the tar its scan
/// listed, and no byte more.
#[test]
fn a_gzipped_tarball_is_gunzipped_no_further_than_its_tar() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let archive = vendor.join("csi.tar.gz");
    write_streamed_tgz(
        &archive,
        image_of_zeros("huawei-csi:4.8.0", 1 << 20),
        48 << 20,
    );
    let scanned = VendorDir::scan(&vendor).unwrap();
    let wanted = reference("huawei-csi:4.8.0");
    let found = scanned.choose(&wanted, &Platform::linux_amd64()).unwrap();
    let opened = DockerSave::open(&archive, found.tar_bytes, &store, &NEVER).unwrap();
    let copies: Vec<u64> = fs::read_dir(dir.path().join("ferry-v1/partial"))
        .unwrap()
        .map(|entry| entry.unwrap().metadata().unwrap().len())
        .collect();
    assert_eq!(copies, [found.tar_bytes]);
    assert!(found.tar_bytes < 2 << 20, "{}", found.tar_bytes);
    drop(opened);
    let images = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap();
    assert_eq!(images.len(), 1);
}

/// A tarball of large JSON documents (data, not images) is passed over like any other file that is no
/// image archive, instead of failing the scan.
#[test]
fn a_tarball_of_large_json_entries_is_passed_over() {
    let (dir, store) = store();
    let vendor = dir.path().join("vendor");
    let data = vendor.join("data.tar.gz");
    let document =
        || -> Box<dyn Read> { Box::new(b"[".chain(io::repeat(b' ').take((4 << 20) - 1))) };
    write_streamed_tgz(
        &data,
        (0..17)
            .map(|at| (format!("data/{at}.json"), 4 << 20, document()))
            .collect(),
        0,
    );
    let err = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "the vendor directory {} has no image docker.io/library/huawei-csi:4.8.0; it has: no image \
             archives\npassed over {}: it is a tar without manifest.json (docker save) or index.json (OCI \
             archive)\n(the tarballs are in the vendor's release package, e.g. its image/ directory)",
            vendor.display(),
            data.display()
        )
    );
    let saved = Saved::csi(vec![layer_tar(1, 2_000)]);
    write_tar(&vendor.join("csi.tar"), &legacy(&[&saved]), false);
    let images = import_tag(&store, &vendor, "huawei-csi:4.8.0").unwrap();
    assert_imported(&store, &images[0], &saved);
}
