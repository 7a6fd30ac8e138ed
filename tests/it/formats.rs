//! Image formats other tools write, made by those tools: zstd layers (skopeo `--dest-compress-format
//! zstd`), OCI archives (skopeo `oci-archive:`, `podman save --format oci-archive`), docker-archives
//! (skopeo `docker-archive:`, `docker save`).

use std::path::Path;
use std::process::{Command, Output};

use crate::bundle::expected_names;
use crate::deliver::{load, load_into_podman};
use crate::ferry::{ferry, Run};
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{push_image, seed_csi_480, Format, VENDOR_480};
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

/// Fails the test with the tool's output unless it succeeded.
fn succeeded(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn skopeo(args: &[&str]) {
    let output = Command::new("skopeo")
        .args(["--insecure-policy"])
        .args(args)
        .output()
        .expect("skopeo runs");
    succeeded(output, &format!("skopeo {args:?}"));
}

/// `skopeo copy` between plain-HTTP registries into an OCI image with zstd layers (`extra`: `--all` for
/// every platform).
pub fn copy_as_zstd(from: &str, to: &str, extra: &[&str]) {
    let args = [
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "oci",
        "--dest-compress-format",
        "zstd",
    ];
    skopeo(&[&args[..], extra, &[from, to]].concat());
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

/// `ferry bundle ARGS -o BUNDLE`, quietly, with its cache in `work`.
fn bundle_into(work: &Path, bundle: &Path, args: &[&str]) -> Run {
    let cache = work.join("cache");
    let tail = [
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        bundle.to_str().unwrap(),
        "-q",
    ];
    ferry(&[&["bundle"][..], args, &tail].concat())
}

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
    copy_as_zstd(&from, &to, &[]);
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("zstd.tar");
    let image = format!("{}/csi/zstd:v1", registry.addr());
    let run = bundle_into(work.path(), &bundle, &["--image", &image]).success();
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
    let run = load(bundle, "docker", &dockerd.socket()).fails_with(1);
    let told = format!(
        "runtime: docker (--runtime docker --address {})\n",
        dockerd.socket()
    );
    assert!(
        run.stderr().starts_with(&(told
            + "error: docker load failed, and the bundle has zstd-compressed layers, which Docker Engine \
             before 23.0 cannot load: use --runtime containerd or --runtime podman, or a newer Docker\n  \
             caused by: \"docker\" failed (exit status: 1): ")
        ),
        "{}",
        run.stderr()
    );
    let run = load(bundle, "containerd", containerd.socket().to_str().unwrap()).success();
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

/// The vendor's four images of CSI 4.8.0 as four other tools write them: an OCI archive by skopeo and one
/// by podman save, a docker-archive by skopeo and one by docker save. ferry bundles them with the public
/// images, the bundle verifies, and containerd, dockerd and podman load it under the vendor's names.
#[test]
fn oci_and_docker_archives_from_real_tools_bundle_verify_and_load_everywhere() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    let Some(podman) = require(Podman::new()) else {
        return;
    };
    seed_csi_480(registry.addr(), TEST_IMAGE_SIZE);
    let work = tempfile::tempdir().unwrap();
    let vendor = work.path().join("package/image");
    std::fs::create_dir_all(&vendor).unwrap();
    // The vendor's images, from the registry they were seeded into, each under its Docker Hub name.
    let [controller, sidecar, csi, extender] = VENDOR_480.map(|name_tag| {
        let (name, tag) = name_tag.split_once(':').unwrap();
        push_image(
            registry.addr(),
            &format!("vendor/{name}"),
            tag,
            Format::DockerSingle,
            &["linux/amd64"],
            TEST_IMAGE_SIZE,
        );
        (
            format!("{}/vendor/{name_tag}", registry.addr()),
            format!("docker.io/library/{name_tag}"),
        )
    });
    let at = |file: &str| vendor.join(file).display().to_string();
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}", controller.0),
        &format!("oci-archive:{}:{}", at("controller.tar"), controller.1),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{}", csi.0),
        &format!("docker-archive:{}:{}", at("huawei-csi.tar"), csi.1),
    ]);
    let podman_run = |args: &[&str]| succeeded(podman.podman(args), &format!("podman {args:?}"));
    podman_run(&["pull", "--tls-verify=false", &sidecar.0]);
    podman_run(&["tag", &sidecar.0, &sidecar.1]);
    podman_run(&[
        "save",
        "--format",
        "oci-archive",
        "-o",
        &at("sidecar.tar"),
        &sidecar.1,
    ]);
    let docker_run = |args: &[&str]| succeeded(dockerd.docker(args), &format!("docker {args:?}"));
    docker_run(&["pull", &extender.0]);
    docker_run(&["tag", &extender.0, &extender.1]);
    docker_run(&["save", "-o", &at("extender.tar"), &extender.1]);
    docker_run(&["rmi", &extender.0, &extender.1]);

    let bundle = work.path().join("csi.tar");
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let package = vendor.parent().unwrap().to_str().unwrap();
    let run_bundle = bundle_into(
        work.path(),
        &bundle,
        &[
            "huawei-csi@4.8.0",
            "--k8s",
            "1.28",
            "--mirror",
            &mirror,
            "--vendor-dir",
            package,
        ],
    )
    .success();
    assert!(
        run_bundle.stdout().contains("11 image(s)"),
        "{}",
        run_bundle.stdout()
    );
    let bundle = bundle.to_str().unwrap();
    ferry(&["verify", bundle, "--deep", "--k8s", "1.28"]).success();

    let loaded = load(bundle, "containerd", containerd.socket().to_str().unwrap()).success();
    assert_eq!(
        containerd.image_names(),
        expected_names(),
        "{}",
        loaded.stdout()
    );

    load(bundle, "docker", &dockerd.socket()).success();
    let docker_names = dockerd.image_names();
    for (_, name) in [&controller, &sidecar, &csi, &extender] {
        let short = name.trim_start_matches("docker.io/library/");
        assert!(docker_names.contains(short), "{short}: {docker_names:?}");
    }

    load_into_podman(bundle, &podman).success();
    let podman_names = podman.image_names();
    for name in expected_names() {
        assert!(podman_names.contains(&name), "{name}: {podman_names:?}");
    }
}
