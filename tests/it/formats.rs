//! Image formats other tools write, made by those tools: zstd layers (skopeo `--dest-compress-format
//! zstd`), OCI archives (skopeo `oci-archive:`, `podman save --format oci-archive`).

use std::path::Path;
use std::process::Command;

use crate::ferry::ferry;
use crate::seed::{push_image, Format};
use crate::services::{require, Containerd, Dockerd, Registry};

/// Runs skopeo, failing the test with its output if it fails.
fn skopeo(args: &[&str]) {
    let output = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo runs");
    assert!(
        output.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every blob of an uncompressed tar whose content starts with `magic`: (entry name, data offset, size).
fn blobs_starting_with(bundle: &Path, magic: &[u8]) -> Vec<(String, u64, u64)> {
    let file = std::fs::File::open(bundle).unwrap();
    let mut archive = tar::Archive::new(file);
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut head = vec![0u8; magic.len()];
        let (offset, size) = (entry.raw_file_position(), entry.size());
        if size >= magic.len() as u64 {
            std::io::Read::read_exact(&mut entry, &mut head).unwrap();
            if head == magic {
                found.push((name, offset, size));
            }
        }
    }
    found
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

#[test]
fn a_zstd_image_bundles_verifies_deep_and_a_flipped_byte_in_its_layer_is_named() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    push_image(
        registry.addr(),
        "csi/app",
        "v1",
        Format::DockerSingle,
        &["linux/amd64"],
        400_000,
    );
    let (from, to) = (
        format!("docker://{}/csi/app:v1", registry.addr()),
        format!("docker://{}/csi/zstd:v1", registry.addr()),
    );
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        "--dest-compress-format",
        "zstd",
        &from,
        &to,
    ]);
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("zstd.tar");
    let image = format!("{}/csi/zstd:v1", registry.addr());
    let run = ferry(&[
        "bundle",
        "--image",
        &image,
        "--cache-dir",
        work.path().join("cache").to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "-q",
    ])
    .success();
    assert!(
        run.stdout().contains(&format!(
            "  {image}: zstd-compressed layers, which Docker Engine before 23.0 cannot load \
             (containerd and podman can)\n"
        )),
        "{}",
        run.stdout()
    );
    let zstd_layers = blobs_starting_with(&bundle, &ZSTD_MAGIC);
    assert_eq!(
        zstd_layers.len(),
        2,
        "both layers are zstd: {zstd_layers:?}"
    );

    let bundle = bundle.to_str().unwrap();
    let run = ferry(&["verify", bundle, "--deep"]).success();
    assert!(run.stdout().contains("intact"), "{}", run.stdout());

    // dockerd 20.10, the docker.io of Debian 12, is older than 23: the load fails, and ferry says why.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    let run = ferry(&[
        "load",
        bundle,
        "--runtime",
        "docker",
        "--address",
        &dockerd.socket(),
    ])
    .fails_with(1);
    assert!(
        run.stderr().starts_with(
            "error: docker load failed, and the bundle has zstd-compressed layers, which Docker Engine \
             before 23.0 cannot load: use --runtime containerd or --runtime podman, or a newer Docker\n  \
             caused by: \"docker\" failed (exit status: 1): "
        ),
        "{}",
        run.stderr()
    );
    let run = ferry(&[
        "load",
        bundle,
        "--runtime",
        "containerd",
        "--address",
        containerd.socket().to_str().unwrap(),
    ])
    .success();
    assert!(run.stdout().contains(&image), "{}", run.stdout());

    // A byte flipped inside a zstd layer: verify names the layer.
    let (name, offset, size) = &zstd_layers[0];
    let mut bytes = std::fs::read(bundle).unwrap();
    bytes[(offset + size / 2) as usize] ^= 0x10;
    std::fs::write(bundle, &bytes).unwrap();
    std::fs::remove_file(format!("{bundle}.sha256")).unwrap();
    let run = ferry(&["verify", bundle, "--deep"]).fails_with(1);
    let digest = format!("sha256:{}", name.rsplit('/').next().unwrap());
    assert!(
        run.stdout().contains(&format!("blob {digest} is damaged")),
        "{}",
        run.stdout()
    );
}
