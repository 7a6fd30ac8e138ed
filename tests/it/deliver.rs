//! The air-gapped side: `ferry push` into a TLS + basic-auth Distribution registry, read back with skopeo;
//! `ferry load` into real containerd, dockerd and podman.

use std::collections::BTreeSet;
use std::process::Command;

use crate::bundle::{expected_names, Csi480};
use crate::ferry::{command, run};
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

/// The manifest digest of `image` as an independent client (skopeo) reads it from the registry.
pub fn skopeo_digest(registry: &Registry, image: &str) -> String {
    let output = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .args(
            registry
                .skopeo_args("src")
                .iter()
                .map(|a| a.replace("--src-", "--")),
        )
        .arg(format!("docker://{image}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo inspect {image}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&output.stdout))
    )
}

#[test]
fn push_480_into_a_tls_auth_registry_keeps_upstream_digests() {
    let Some(csi) = Csi480::start() else { return };
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    let bundle = csi.work.path().join("csi.tar");
    let to = format!("{}/csi", private.addr());
    let values = csi.work.path().join("values.yaml");
    let args = [
        "push",
        bundle.to_str().unwrap(),
        "--to",
        &to,
        "--ca-cert",
        private.ca_cert().to_str().unwrap(),
        "--helm-values",
        values.to_str().unwrap(),
    ];
    let first = run(command()
        .args(args)
        .env("DOCKER_CONFIG", private.docker_config()))
    .success();
    assert_eq!(first.stdout().lines().count(), 11, "{}", first.stdout());
    assert!(
        first.stderr().contains("mounted") && !first.stderr().contains("mounted 0,"),
        "shared layers are mounted: {}",
        first.stderr()
    );
    for (upstream, seeded) in &csi.seeded {
        let pushed = upstream.replace("registry.k8s.io", &to);
        assert_eq!(
            skopeo_digest(&private, &pushed),
            seeded.manifest_for("linux/amd64"),
            "{pushed} keeps its upstream digest"
        );
    }
    let listed = run(command().args(["inspect", bundle.to_str().unwrap(), "--json"]))
        .success()
        .json();
    for image in listed["images"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        if let Some(vendor) = name.strip_prefix("docker.io/library/") {
            assert_eq!(
                skopeo_digest(&private, &format!("{to}/{vendor}")),
                image["manifest"].as_str().unwrap()
            );
        }
    }
    let again = run(command()
        .args(args)
        .env("DOCKER_CONFIG", private.docker_config()))
    .success();
    assert!(
        again.stderr().contains("uploaded 0 B in 0 blob(s)"),
        "the second push uploads nothing: {}",
        again.stderr()
    );
    for text in [
        first.stdout(),
        first.stderr(),
        again.stderr(),
        std::fs::read_to_string(&values).unwrap(),
    ] {
        assert!(
            !text.contains(private.password()),
            "the password never appears"
        );
    }
    let values = std::fs::read_to_string(&values).unwrap();
    assert!(values.contains("images:\n"), "{values}");
    assert!(
        values.contains(&format!(
            "  \"huaweiCSIService\": \"{to}/huawei-csi:4.8.0\""
        )),
        "{values}"
    );
    assert!(
        values.contains(&format!(
            "    \"attacher\": \"{to}/sig-storage/csi-attacher:v4.4.0\""
        )),
        "{values}"
    );

    let anonymous = run(command().args(args).env("DOCKER_CONFIG", csi.work.path())).fails_with(1);
    assert!(
        anonymous.stderr().contains(private.addr()),
        "{}",
        anonymous.stderr()
    );
}

#[test]
fn push_refuses_a_damaged_bundle_and_dry_run_prints_the_mapping() {
    let Some(csi) = Csi480::start() else { return };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .success();
    let bundle = csi.work.path().join("csi.tar");
    let dry = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
        "--dry-run",
    ]))
    .success();
    assert!(
        dry.stdout().contains("registry.k8s.io/sig-storage/csi-provisioner:v3.6.0 -> 10.0.0.5:5000/csi/sig-storage/csi-provisioner:v3.6.0"),
        "{}",
        dry.stdout()
    );
    assert!(
        dry.stdout()
            .contains("docker.io/library/huawei-csi:4.8.0 -> 10.0.0.5:5000/csi/huawei-csi:4.8.0"),
        "{}",
        dry.stdout()
    );
    // --json prints JSON, and --helm-values writes the file a dry run promises.
    let values = csi.work.path().join("values.yaml");
    let json = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
        "--dry-run",
        "--json",
        "--helm-values",
        values.to_str().unwrap(),
    ]))
    .success()
    .json();
    assert_eq!(json["dry_run"], true);
    let images = json["images"].as_array().unwrap();
    assert_eq!(images.len(), 11, "{json}");
    assert!(
        images
            .iter()
            .any(|i| i["source"] == "docker.io/library/huawei-csi:4.8.0"
                && i["target"] == "10.0.0.5:5000/csi/huawei-csi:4.8.0"),
        "{json}"
    );
    let values = std::fs::read_to_string(&values).unwrap();
    assert!(
        values.contains("10.0.0.5:5000/csi/sig-storage/csi-provisioner:v3.6.0"),
        "{values}"
    );
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&bundle, bytes).unwrap();
    let refused = run(command().args([
        "push",
        bundle.to_str().unwrap(),
        "--to",
        "10.0.0.5:5000/csi",
    ]))
    .fails_with(1);
    assert!(refused.stderr().contains("damaged"), "{}", refused.stderr());
}

#[test]
fn load_into_containerd_docker_and_podman() {
    let Some(csi) = Csi480::start() else { return };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "csi.tar", &["--split", "1M"])
        .success();
    let first_part = csi.work.path().join("csi.tar.part-000");
    let first_part = first_part.to_str().unwrap();

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    let loaded = run(command().args([
        "load",
        first_part,
        "--runtime",
        "containerd",
        "--address",
        &socket,
    ]))
    .success();
    assert_eq!(loaded.stdout().lines().count(), 11, "{}", loaded.stdout());
    let listed =
        String::from_utf8_lossy(&containerd.ctr(&["images", "ls", "-q"]).stdout).into_owned();
    let names: BTreeSet<String> = listed
        .lines()
        .filter(|l| !l.starts_with("sha256:"))
        .map(str::to_string)
        .collect();
    assert_eq!(
        names,
        expected_names(),
        "containerd's k8s.io namespace has every image"
    );
    for (upstream, seeded) in &csi.seeded {
        assert!(
            loaded.stdout().contains(&format!(
                "loaded {upstream}  {}",
                seeded.manifest_for("linux/amd64")
            )),
            "{}",
            loaded.stdout()
        );
    }

    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    let docker_socket = dockerd.socket();
    run(command().args([
        "load",
        first_part,
        "--runtime",
        "docker",
        "--address",
        &docker_socket,
    ]))
    .success();
    let images = dockerd.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(String::from_utf8_lossy(&images.stdout).lines().count(), 11);

    let Some(podman) = require(Podman::new()) else {
        return;
    };
    run(command()
        .args(["load", first_part, "--runtime", "podman"])
        .env("CONTAINERS_STORAGE_CONF", podman.storage_conf()))
    .success();
    let images = podman.podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let names: BTreeSet<String> = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, expected_names());

    // --address reaches a podman service: its storage gets the images, whatever this shell's podman uses.
    let Some(served) = require(Podman::new()) else {
        return;
    };
    let Some(service) = require(served.serve()) else {
        return;
    };
    run(command().args([
        "load",
        first_part,
        "--runtime",
        "podman",
        "--address",
        service.socket.to_str().unwrap(),
    ]))
    .success();
    let images = served.podman(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let names: BTreeSet<String> = String::from_utf8_lossy(&images.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(names, expected_names());
}

#[test]
fn load_without_a_runtime_says_what_to_do() {
    let Some(csi) = Csi480::start() else { return };
    csi.bundle(
        csi.work.path().join("cache").to_str().unwrap(),
        "csi.tar",
        &[],
    )
    .success();
    let bundle = csi.work.path().join("csi.tar");
    let failed = run(command().args([
        "load",
        bundle.to_str().unwrap(),
        "--runtime",
        "containerd",
        "--address",
        "/nonexistent/containerd.sock",
    ]))
    .fails_with(1);
    assert!(
        failed
            .stderr()
            .contains("ctr --address /nonexistent/containerd.sock -n k8s.io images import"),
        "{}",
        failed.stderr()
    );
}

/// A loader that says a lot before it reads its input (as `ctr` does on a terminal, or any tool in a verbose
/// mood) must not deadlock against ferry writing the bundle to it.
#[test]
fn load_feeds_a_chatty_loader_without_deadlock() {
    use crate::seed::{push_image, Format, PLATFORMS};
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    push_image(
        registry.addr(),
        "sig-storage/livenessprobe",
        "v2.12.0",
        Format::DockerList,
        &PLATFORMS[..1],
        400_000,
    );
    let work = tempfile::tempdir().unwrap();
    let bundle = work.path().join("b.tar");
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let cache = work.path().join("cache");
    run(command()
        .args([
            "bundle",
            "--image",
            "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
            "--mirror",
            &mirror,
        ])
        .args([
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            bundle.to_str().unwrap(),
            "-q",
        ]))
    .success();
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let ctr = bin.join("ctr");
    std::fs::write(
        &ctr,
        "#!/bin/sh\nhead -c 1000000 /dev/zero | tr '\\0' x >&2\ncat > /dev/null\necho imported\n",
    )
    .unwrap();
    std::fs::set_permissions(&ctr, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = command()
        .args([
            "load",
            bundle.to_str().unwrap(),
            "--runtime",
            "containerd",
            "--address",
            "/nonexistent.sock",
        ])
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("ferry load is stuck feeding a loader that writes before it reads");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
}
