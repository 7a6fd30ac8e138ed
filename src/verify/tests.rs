//! Mutation tests standing in for a fuzzer, and hostile-index cases.

use super::*;
use crate::cache::BlobStore;
use crate::image::media;
use crate::progress::Silent;
use crate::tarball::layout::{blob_path, pretty, INDEX_JSON};
use crate::tarball::{write_bundle, WriteOptions};
use crate::testutil::intact_images;

const BLOCK_SIZE: usize = 512;

fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A small real bundle without its `.sha256`: (its directory, its path, its bytes).
fn fixture_bundle() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("cache")).unwrap();
    let images = crate::testutil::two_images(&store);
    let path = dir.path().join("b.tar");
    write_bundle(
        &store,
        &images,
        &crate::testutil::loose_metadata(&[]),
        &path,
        &WriteOptions::default(),
        &Silent,
    )
    .unwrap();
    std::fs::remove_file(dir.path().join("b.tar.sha256")).unwrap();
    let original = std::fs::read(&path).unwrap();
    (dir, path, original)
}

/// Every finding of a report, to compare a mutation's with the original's.
fn findings(report: &Report) -> (Vec<String>, Vec<Vec<String>>) {
    (
        report.problems.clone(),
        report.images.iter().map(|i| i.problems.clone()).collect(),
    )
}

/// Property test standing in for a fuzzer: thousands of random mutations of a real bundle (bit flips,
/// truncations, inserted and deleted bytes). The reader must never panic, and no mutation may pass.
#[test]
fn no_mutation_of_a_bundle_passes_and_none_panics() {
    let (dir, path, original) = fixture_bundle();
    let catalogs = Catalogs::load(&[]).unwrap();
    let deep = VerifyOptions {
        deep: true,
        ..Default::default()
    };
    let baseline = verify(&path, &deep, &catalogs).unwrap();
    assert!(
        baseline.images.len() == 2
            && baseline
                .problems
                .iter()
                .all(|p| p.contains("ferry.json lists")),
        "{:?}",
        baseline.problems
    );
    // The fixture is not flawless (its ferry.json lists no images, its configs no diff_ids, its layers are not gzip): a mutation
    // passes if it adds no finding to those.
    no_mutation_passes(dir.path(), &original, &findings(&baseline), 1500);
}

/// Mutates `original` `rounds` times; each mutation must add a finding to `baseline`, and none may panic.
fn no_mutation_passes(
    dir: &std::path::Path,
    original: &[u8],
    baseline: &(Vec<String>, Vec<Vec<String>>),
    rounds: usize,
) {
    let catalogs = Catalogs::load(&[]).unwrap();
    let deep = VerifyOptions {
        deep: true,
        ..Default::default()
    };
    let mutated = dir.join("m.tar");
    let mut state = 0x2545_f491_4f6c_dd1d;
    for round in 0..rounds {
        let mut bytes = original.to_vec();
        let at = (next(&mut state) % bytes.len() as u64) as usize;
        match round % 4 {
            0 | 1 => bytes[at] ^= 1 << (next(&mut state) % 8),
            2 => bytes.truncate(at),
            _ => {
                bytes.insert(at, (next(&mut state) % 256) as u8);
            }
        }
        if bytes == original {
            continue;
        }
        std::fs::write(&mutated, &bytes).unwrap();
        if let Ok(report) = verify(&mutated, &deep, &catalogs) {
            assert_ne!(
                &findings(&report),
                baseline,
                "round {round}: a mutation at byte {at} passed unnoticed"
            );
        }
    }
}

/// Every byte of `index.json` matters to some runtime, so none may change unnoticed, even with the tar
/// header's checksum made to agree (as a hostile or a careless edit would).
#[test]
fn no_change_to_any_byte_of_the_index_passes() {
    let (dir, path, original) = fixture_bundle();
    let catalogs = Catalogs::load(&[]).unwrap();
    let baseline = findings(&verify(&path, &VerifyOptions::default(), &catalogs).unwrap());
    // index.json is the third entry: header at 2048, data after it (the first two fit in one block each).
    let header = 4 * BLOCK_SIZE;
    assert_eq!(&original[header..header + 10], b"index.json");
    let size = usize::from_str_radix(
        std::str::from_utf8(&original[header + 124..header + 135]).unwrap(),
        8,
    )
    .unwrap();
    let mutated = dir.path().join("m.tar");
    for at in header + BLOCK_SIZE..header + BLOCK_SIZE + size {
        let mut bytes = original.clone();
        bytes[at] ^= 1 << (at % 8);
        let mut block = bytes[header..header + BLOCK_SIZE].to_vec();
        block[148..156].fill(b' ');
        let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
        bytes[header + 148..header + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        std::fs::write(&mutated, &bytes).unwrap();
        let report = verify(&mutated, &VerifyOptions::default(), &catalogs).unwrap();
        let context = String::from_utf8_lossy(&original[at - 30..at + 5]).replace('\n', " ");
        assert_ne!(
            findings(&report),
            baseline,
            "a change at byte {at} passed unnoticed: {context}"
        );
    }
}
/// Verifies a bundle of `index.json` and `blobs`, made by hand without ferry's writer.
fn verify_handmade(dir: &std::path::Path, index: &serde_json::Value, blobs: &[&[u8]]) -> Report {
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |name: String, bytes: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, name, bytes).unwrap();
    };
    append(INDEX_JSON.into(), &pretty(index));
    for blob in blobs {
        append(blob_path(&Digest::of(blob)), blob);
    }
    let path = dir.join("b.tar");
    std::fs::write(&path, tar.into_inner().unwrap()).unwrap();
    verify(
        &path,
        &VerifyOptions::default(),
        &Catalogs::load(&[]).unwrap(),
    )
    .unwrap()
}

/// A manifest may claim any size for its blobs; sums of them must neither panic nor wrap.
#[test]
fn a_manifest_claiming_u64_max_bytes_is_a_finding_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let layer = b"layer".to_vec();
    let config = br#"{"os":"linux","architecture":"amd64","rootfs":{"diff_ids":[]}}"#.to_vec();
    let descriptor = |bytes: &[u8], media_type: &str, size: u64| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": size});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "config": descriptor(&config, media::OCI_CONFIG, config.len() as u64),
        "layers": [descriptor(&layer, media::OCI_LAYER_TAR, u64::MAX), descriptor(&layer, media::OCI_LAYER_TAR, u64::MAX)],
    }))
    .unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": [descriptor(&manifest, media::OCI_MANIFEST, manifest.len() as u64)]});
    let report = verify_handmade(dir.path(), &index, &[&layer, &config, &manifest]);
    let problems = &report.images[0].problems;
    assert!(
        problems.contains(&format!(
            "manifest {} claims blobs of more than {} bytes in all",
            Digest::of(&manifest),
            crate::image::limits::MAX_IMAGE_BYTES
        )),
        "{problems:?}"
    );
    assert!(!report.intact());
}

/// An index that names one large manifest over and over must not make verify parse it every time: the
/// work stops at a budget, with a finding.
#[test]
fn an_index_repeating_a_large_manifest_is_checked_within_a_budget() {
    let dir = tempfile::tempdir().unwrap();
    let layer = b"layer".to_vec();
    let config = br#"{"os":"linux","architecture":"amd64"}"#.to_vec();
    let descriptor = |bytes: &[u8], media_type: &str| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes), "size": bytes.len()});
    let layers = vec![descriptor(&layer, media::OCI_LAYER_TAR); 9000];
    let manifest = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "config": descriptor(&config, media::OCI_CONFIG), "layers": layers})).unwrap();
    assert!(manifest.len() > 1 << 20);
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": media::OCI_INDEX, "manifests": vec![descriptor(&manifest, media::OCI_MANIFEST); 300]});
    let report = verify_handmade(dir.path(), &index, &[&layer, &config, &manifest]);
    let unchecked = report
        .images
        .iter()
        .filter(|i| i.problems.iter().any(|p| p.starts_with("not checked")))
        .count();
    assert!(
        (1..300).contains(&unchecked),
        "{unchecked} of 300 images not checked"
    );
}

/// A bundle of two platforms is intact with every image on both; one that has an image for one platform
/// only is not, unless ferry.json allows that image fewer.
#[test]
fn every_image_must_have_every_platform_the_bundle_carries() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("cache")).unwrap();
    let both = ["linux/amd64", "linux/arm64"];
    let platforms: Vec<crate::image::Platform> = both.iter().map(|p| p.parse().unwrap()).collect();
    let mut images = intact_images(&store, &["quay.io/a/b:1", "huawei-csi:4.8.0"], &both);
    let plan = crate::resolve::Plan::of_images(Vec::new());
    let check = |images: &[crate::image::Image], partial_ok: &[crate::reference::Reference]| {
        let path = dir.path().join("b.tar");
        let metadata =
            crate::tarball::BundleMetadata::describe(&plan, &platforms, images, &[], partial_ok);
        write_bundle(
            &store,
            images,
            &metadata,
            &path,
            &WriteOptions::default(),
            &Silent,
        )
        .unwrap();
        verify(
            &path,
            &VerifyOptions {
                deep: true,
                ..Default::default()
            },
            &Catalogs::load(&[]).unwrap(),
        )
        .unwrap()
    };
    let report = check(&images, &[]);
    assert!(report.intact(), "{:?} {:?}", report.problems, report.images);
    assert_eq!(report.images.len(), 4);
    assert!(report.images.iter().all(|i| i.index.is_some()));

    images.pop(); // huawei-csi for linux/arm64
    let report = check(&images, &[]);
    assert_eq!(
        report.problems,
        ["docker.io/library/huawei-csi:4.8.0 has platforms linux/amd64, but ferry.json says the bundle carries linux/amd64, linux/arm64"]
    );
    let report = check(&images, &["huawei-csi:4.8.0".parse().unwrap()]);
    assert!(report.intact(), "{:?}", report.problems);

    // ferry's indexes of platforms are read as hostile input too.
    let original = std::fs::read(dir.path().join("b.tar")).unwrap();
    no_mutation_passes(dir.path(), &original, &findings(&report), 600);
}

/// Deliver takes only what verify proved, typed: each image's name and platform as the bundle holds them.
#[test]
fn an_intact_bundle_becomes_proof_with_typed_names_and_platforms() {
    let dir = tempfile::tempdir().unwrap();
    let both = ["linux/amd64", "linux/arm64"];
    let platforms: Vec<crate::image::Platform> = both.iter().map(|p| p.parse().unwrap()).collect();
    let (images, path) =
        crate::testutil::intact_bundle(dir.path(), &["quay.io/a/b:1", "huawei-csi:4.8.0"], &both);
    let verified = crate::testutil::verified(&path);
    assert_eq!(verified.platforms(), platforms);
    let held: Vec<(String, String)> = verified
        .images()
        .iter()
        .map(|i| (i.reference().to_string(), i.platform().to_string()))
        .collect();
    let built: Vec<(String, String)> = images
        .iter()
        .map(|i| (i.reference.to_string(), i.platform.to_string()))
        .collect();
    assert_eq!(held, built);
    assert!(verified.images().iter().all(|i| i.index().is_some()));

    // The fixture of two_images is not intact: no proof is made of it.
    let (_dir, loose, _) = fixture_bundle();
    let catalogs = Catalogs::load(&[]).unwrap();
    let report = verify(&loose, &VerifyOptions::default(), &catalogs).unwrap();
    assert!(report.into_verified().is_err());
}

/// manifest.json's Config must be the image's own config, not any blob of the bundle.
#[test]
fn a_docker_manifest_naming_another_blob_as_config_is_a_finding() {
    use crate::tarball::layout::DockerEntry;
    let config = Digest::of(b"config");
    let layer = Digest::of(b"layer");
    let reference: crate::reference::Reference = "quay.io/a/b:1".parse().unwrap();
    let mut verdict = ImageVerdict {
        name: reference.to_string(),
        reference: Some(reference.clone()),
        manifest: Some(Digest::of(b"manifest")),
        config: Some(config.clone()),
        platform: Some(crate::image::Platform::linux_amd64()),
        index: None,
        upstream_index: false,
        size: 0,
        layers: vec![layer.clone()],
        problems: Vec::new(),
    };
    let right = DockerEntry::new(&reference, &config, [&layer]);
    super::documents::check_docker_manifest(&[right], &mut [&mut verdict]);
    assert_eq!(verdict.problems, Vec::<String>::new());
    let wrong = DockerEntry::new(&reference, &layer, [&layer]);
    super::documents::check_docker_manifest(&[wrong], &mut [&mut verdict]);
    assert_eq!(
        verdict.problems,
        ["its Config in manifest.json is not its manifest's config"]
    );
}

/// `--platform all`: an image's upstream index is carried byte for byte, a Docker list included, and is
/// intact with every manifest it lists; one it lists and the bundle lacks is named.
#[test]
fn an_upstream_index_is_intact_only_with_every_manifest_it_lists() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::open(&dir.path().join("cache")).unwrap();
    let both = ["linux/amd64", "linux/arm64"];
    let images = intact_images(&store, &["quay.io/a/b:1"], &both);
    let entry = |image: &crate::image::Image| {
        serde_json::json!({"mediaType": image.manifest.media_type, "digest": image.manifest.digest,
            "size": image.manifest.size, "platform": {"os": "linux", "architecture": image.platform.architecture}})
    };
    let absent = serde_json::json!({"mediaType": media::OCI_MANIFEST, "size": 3,
        "digest": Digest::of(b"abc"), "platform": {"os": "unknown", "architecture": "unknown"}});
    let write = |images: &[crate::image::Image], listed: Vec<serde_json::Value>| {
        // Upstream's bytes, unlike ferry's: compact, a Docker list.
        let upstream = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": media::DOCKER_LIST, "manifests": listed}))
        .unwrap();
        let digest = Digest::of(&upstream);
        store.put(&digest, &upstream).unwrap();
        let images: Vec<crate::image::Image> = images
            .iter()
            .cloned()
            .map(|mut image| {
                image.index_digest = Some(digest.clone());
                image
            })
            .collect();
        let plan = crate::resolve::Plan::of_images(Vec::new());
        let metadata = crate::tarball::BundleMetadata::describe(&plan, &[], &images, &[], &[]);
        let path = dir.path().join("b.tar");
        crate::testutil::write_plain(&store, &images, &metadata, &path);
        let report = verify(
            &path,
            &VerifyOptions::default(),
            &Catalogs::load(&[]).unwrap(),
        )
        .unwrap();
        (digest, report)
    };
    let (digest, report) = write(&images, images.iter().map(entry).collect());
    assert!(report.intact(), "{:?} {:?}", report.problems, report.images);
    assert!(report
        .images
        .iter()
        .all(|i| i.index == Some(digest.clone()) && i.upstream_index));
    let original = std::fs::read(dir.path().join("b.tar")).unwrap();
    no_mutation_passes(dir.path(), &original, &findings(&report), 300);

    let mut listed: Vec<serde_json::Value> = images.iter().map(entry).collect();
    listed.push(absent);
    let (_, report) = write(&images, listed);
    assert_eq!(
        report.images[2].problems,
        [format!("manifest {} is missing", Digest::of(b"abc"))]
    );
}
