//! `ferry bundle`, proven with the real loaders: docker load, ctr images import, podman load.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use crate::faults::FaultProxy;
use crate::ferry::{command, ferry, run, Run};
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{
    push_image, push_image_with_long_history, seed_csi_480, vendor_dir_480, vendor_tarball, Format,
    Seeded, PLATFORMS, VENDOR_480,
};
use crate::seeded::registry_with_livenessprobe;
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

pub fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `ferry bundle ARGS... --cache-dir WORK/cache -o OUT -q`: a quiet bundle, its cache in the test's work
/// directory.
pub fn bundle_quietly(work: &Path, out: &Path, args: &[&str]) -> Run {
    run(command()
        .arg("bundle")
        .args(args)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg("-o")
        .arg(out)
        .arg("-q"))
}

pub fn sha256sum_check(dir: &Path, file: &str) {
    let check = Command::new("sha256sum")
        .arg("-c")
        .arg(file)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "sha256sum -c {file}: {}",
        text(&check)
    );
}

/// The fully qualified names of a CSI 4.8.0 / Kubernetes 1.28 bundle.
pub fn expected_names() -> BTreeSet<String> {
    let public = [
        "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
        "registry.k8s.io/sig-storage/csi-resizer:v1.9.0",
        "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0",
        "registry.k8s.io/sig-storage/csi-snapshotter:v6.3.0",
        "registry.k8s.io/sig-storage/snapshot-controller:v6.3.0",
        "registry.k8s.io/sig-storage/csi-provisioner:v3.6.0",
        "registry.k8s.io/sig-storage/csi-attacher:v4.4.0",
    ];
    public
        .iter()
        .map(|s| s.to_string())
        .chain(VENDOR_480.iter().map(|v| format!("docker.io/library/{v}")))
        .collect()
}

/// docker prints Docker Hub names in their short form; it files them under the full one.
fn docker_full_name(name: &str) -> String {
    let first = name.split('/').next().unwrap_or_default();
    if name.contains('/') && (first.contains('.') || first.contains(':')) {
        name.to_string()
    } else {
        format!("docker.io/library/{name}")
    }
}

/// Pushes small two-platform Docker lists, one per (repository, tag).
pub fn seed_small(addr: &str, rows: &[(&str, &str)]) {
    for (repository, tag) in rows {
        push_image(
            addr,
            repository,
            tag,
            Format::DockerList,
            &PLATFORMS[..2],
            60_000,
        );
    }
}

/// The names in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

/// Asserts that the registry behind `proxy` served no blob twice; returns how many it served.
pub fn each_blob_fetched_once(proxy: &FaultProxy) -> usize {
    let blob_gets: Vec<String> = proxy
        .seen()
        .into_iter()
        .filter(|s| s.path.contains("/blobs/"))
        .map(|s| s.path)
        .collect();
    let digests: BTreeSet<&str> = blob_gets
        .iter()
        .map(|p| p.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        digests.len(),
        blob_gets.len(),
        "each blob fetched once across the bundles: {blob_gets:?}"
    );
    digests.len()
}

pub struct Csi480 {
    _registry: Registry,
    pub seeded: Vec<(String, Seeded)>,
    mirror: String,
    vendor: tempfile::TempDir,
    pub work: tempfile::TempDir,
}

impl Csi480 {
    pub fn start() -> Option<Csi480> {
        Csi480::with_vendor_size(TEST_IMAGE_SIZE)
    }

    /// With vendor tarballs of `size` uncompressed bytes each, for tests that need ferry busy a while.
    pub fn with_vendor_size(size: usize) -> Option<Csi480> {
        let registry = require(Registry::plain())?;
        let seeded = seed_csi_480(registry.addr(), TEST_IMAGE_SIZE);
        let vendor = tempfile::tempdir().unwrap();
        vendor_dir_480(vendor.path(), size);
        let mirror = format!("registry.k8s.io={}", registry.addr());
        Some(Csi480 {
            _registry: registry,
            seeded,
            mirror,
            vendor,
            work: tempfile::tempdir().unwrap(),
        })
    }

    pub fn bundle(&self, cache: &str, output: &str, extra: &[&str]) -> Run {
        run(&mut self.bundle_command(cache, output, extra))
    }

    /// The `ferry bundle` command [`Csi480::bundle`] runs, for a test to start and signal.
    pub fn bundle_command(&self, cache: &str, output: &str, extra: &[&str]) -> Command {
        let out = self.work.path().join(output);
        let mut args = vec![
            "bundle",
            "huawei-csi@4.8.0",
            "--k8s",
            "1.28",
            "--mirror",
            &self.mirror,
            "--cache-dir",
            cache,
            "-o",
            out.to_str().unwrap(),
            "-q",
        ];
        let vendor = self.vendor.path().to_str().unwrap().to_string();
        args.extend(["--vendor-dir", &vendor]);
        args.extend_from_slice(extra);
        let mut command = command();
        command.args(&args);
        command
    }
}

/// Vendor tarballs whose two layers are 1.5 MB each: ferry gzips each into 3 members (512 KiB of input each).
const MULTI_MEMBER_VENDOR_SIZE: usize = 3_000_000;

/// How many gzip members `blob` holds (0 if it is no gzip).
fn gzip_members(mut blob: &[u8]) -> usize {
    let mut members = 0;
    while blob.starts_with(&[0x1f, 0x8b]) {
        let mut member = flate2::bufread::GzDecoder::new(blob);
        std::io::copy(&mut member, &mut std::io::sink()).unwrap();
        blob = member.into_inner();
        members += 1;
    }
    members
}

#[test]
fn csi_480_bundle_is_checksummed_reproducible_and_loads_everywhere() {
    let Some(csi) = Csi480::with_vendor_size(MULTI_MEMBER_VENDOR_SIZE) else {
        return;
    };
    let cache = csi.work.path().join("cache");
    let cache = cache.to_str().unwrap();
    let built = csi.bundle(cache, "csi.tar", &[]).success();
    assert!(built.stdout().contains("11 image(s)"), "{}", built.stdout());
    sha256sum_check(csi.work.path(), "csi.tar.sha256");
    let bundle = csi.work.path().join("csi.tar");

    // Determinism: a warm rebuild and a build from an empty cache give the same bytes.
    csi.bundle(cache, "warm.tar", &[]).success();
    let fresh_cache = csi.work.path().join("fresh-cache");
    csi.bundle(fresh_cache.to_str().unwrap(), "fresh.tar", &[])
        .success();
    let bytes = std::fs::read(&bundle).unwrap();
    assert!(
        bytes == std::fs::read(csi.work.path().join("warm.tar")).unwrap(),
        "warm rebuild is byte-identical"
    );
    assert!(
        bytes == std::fs::read(csi.work.path().join("fresh.tar")).unwrap(),
        "cold rebuild is byte-identical"
    );
    // On one core the vendor layers are compressed by one thread, not by every core: the same bytes.
    let one_core_cache = csi.work.path().join("one-core-cache");
    let on_all_cores = csi.bundle_command(one_core_cache.to_str().unwrap(), "one-core.tar", &[]);
    let mut on_one_core = Command::new("taskset");
    on_one_core
        .args(["-c", "0"])
        .arg(on_all_cores.get_program())
        .args(on_all_cores.get_args());
    run(&mut on_one_core).success();
    assert!(
        bytes == std::fs::read(csi.work.path().join("one-core.tar")).unwrap(),
        "a cold build on one core is byte-identical"
    );
    // The 5 distinct vendor layers (a base the 4 images share, one of each's own) are several gzip
    // members each: what the loaders below must read whole.
    let members: Vec<usize> = crate::verify::tar_entries(&bytes)
        .into_iter()
        .filter(|(name, ..)| name.starts_with("blobs/"))
        .map(|(_, _, data, size)| gzip_members(&bytes[data as usize..(data + size) as usize]))
        .filter(|&members| members > 1)
        .collect();
    assert_eq!(members, [3; 5], "vendor layers of 1.5 MB, 512 KiB a member");

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let import = containerd.ctr(&["images", "import", bundle.to_str().unwrap()]);
    assert!(import.status.success(), "ctr import: {}", text(&import));
    let listed = String::from_utf8_lossy(&containerd.ctr(&["images", "ls"]).stdout).into_owned();
    for name in expected_names() {
        assert!(
            listed.lines().any(|l| l.starts_with(&format!("{name} "))),
            "containerd has {name}:\n{listed}"
        );
    }
    for (upstream, seeded) in &csi.seeded {
        let line = listed
            .lines()
            .find(|l| l.starts_with(&format!("{upstream} ")))
            .unwrap();
        assert!(
            line.contains(seeded.manifest_for("linux/amd64")),
            "containerd shows the upstream digest for {upstream}: {line}"
        );
    }

    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    let load = dockerd.docker(&["load", "-i", bundle.to_str().unwrap()]);
    assert!(load.status.success(), "docker load: {}", text(&load));
    let loaded: BTreeSet<String> = String::from_utf8_lossy(&load.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("Loaded image: "))
        .map(docker_full_name)
        .collect();
    assert_eq!(loaded, expected_names());

    let Some(podman) = require(Podman::new()) else {
        return;
    };
    let load = podman.podman(&["load", "-i", bundle.to_str().unwrap()]);
    assert!(load.status.success(), "podman load: {}", text(&load));
    assert_eq!(
        podman.image_names(),
        expected_names(),
        "podman files every image under its fully qualified name"
    );
}

#[test]
fn split_parts_rejoin_and_check() {
    let Some(csi) = Csi480::start() else { return };
    let cache = csi.work.path().join("cache");
    csi.bundle(cache.to_str().unwrap(), "whole.tar", &[])
        .success();
    let run = csi
        .bundle(cache.to_str().unwrap(), "split.tar", &["--split", "512K"])
        .success();
    assert!(run.stdout().contains("parts"), "{}", run.stdout());
    sha256sum_check(csi.work.path(), "split.tar.parts.sha256");
    let mut parts: Vec<_> = std::fs::read_dir(csi.work.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("split.tar.part-")
        })
        .collect();
    parts.sort();
    assert!(parts.len() > 2);
    let mut joined = Vec::new();
    for part in &parts {
        let bytes = std::fs::read(part).unwrap();
        assert!(bytes.len() <= 512 * 1024);
        joined.extend(bytes);
    }
    std::fs::write(csi.work.path().join("split.tar"), &joined).unwrap();
    sha256sum_check(csi.work.path(), "split.tar.sha256");
    assert!(joined == std::fs::read(csi.work.path().join("whole.tar")).unwrap());
}

#[test]
fn all_k8s_writes_one_bundle_per_image_set_fetching_shared_blobs_once() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let rows = [
        ("sig-storage/livenessprobe", "v2.12.0"),
        ("sig-storage/csi-resizer", "v1.9.0"),
        ("sig-storage/csi-node-driver-registrar", "v2.9.0"),
        ("sig-storage/csi-snapshotter", "v6.3.0"),
        ("sig-storage/csi-snapshotter", "v4.2.1"),
        ("sig-storage/snapshot-controller", "v6.3.0"),
        ("sig-storage/snapshot-controller", "v4.2.1"),
        ("sig-storage/csi-provisioner", "v3.6.0"),
        ("sig-storage/csi-provisioner", "v3.0.0"),
        ("sig-storage/csi-attacher", "v4.4.0"),
        ("k8scsi/csi-provisioner", "v1.4.0"),
        ("k8scsi/csi-attacher", "v1.2.1"),
    ];
    seed_small(registry.addr(), &rows);
    let proxy = FaultProxy::start(registry.addr(), Vec::new());
    let work = tempfile::tempdir().unwrap();
    let (k8s, quay) = (
        format!("registry.k8s.io={}", proxy.addr()),
        format!("quay.io={}", proxy.addr()),
    );
    let out = work.path().join("bundles");
    let cache = work.path().join("cache");
    let run = ferry(&[
        "bundle",
        "huawei-csi@4.8.0",
        "--all-k8s",
        "--skip-vendor",
        "--mirror",
        &k8s,
        "--mirror",
        &quay,
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ])
    .success();
    let files = files_in(&out);
    assert_eq!(
        files,
        [
            "huawei-csi-4.8.0-k8s1.16-linux-amd64-incomplete.tar",
            "huawei-csi-4.8.0-k8s1.16-linux-amd64-incomplete.tar.sha256",
            "huawei-csi-4.8.0-k8s1.17-1.19-linux-amd64-incomplete.tar",
            "huawei-csi-4.8.0-k8s1.17-1.19-linux-amd64-incomplete.tar.sha256",
            "huawei-csi-4.8.0-k8s1.20-up-linux-amd64-incomplete.tar",
            "huawei-csi-4.8.0-k8s1.20-up-linux-amd64-incomplete.tar.sha256",
        ],
        "{}",
        run.stdout()
    );
    each_blob_fetched_once(&proxy);
    for file in files.iter().filter(|f| f.ends_with(".sha256")) {
        sha256sum_check(&out, file);
    }
}

#[test]
fn a_failed_bundle_leaves_no_file_at_its_path() {
    let Some((registry, _)) = registry_with_livenessprobe(&PLATFORMS[..1], 50_000) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let out = work.path().join("x.tar");
    let run = bundle_quietly(
        work.path(),
        &out,
        &[
            "--image",
            "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
            "--image",
            "registry.k8s.io/sig-storage/absent:v1",
            "--mirror",
            &mirror,
        ],
    )
    .fails_with(1);
    assert!(run.stderr().contains("absent"), "{}", run.stderr());
    let left: Vec<_> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["cache"], "nothing but the cache");
}

/// One set of size limits for pull and verify: an image whose config is 5 MiB (a long build history) is
/// bundled and verifies; one whose config is beyond the limit is refused when pulled, naming it, and
/// two failing images are both reported.
#[test]
fn large_configs_bundle_and_verify_and_oversized_ones_are_refused_at_pull() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    push_image_with_long_history(registry.addr(), "sig-storage/long", "v1", 5 << 20);
    push_image_with_long_history(registry.addr(), "sig-storage/huge", "v1", 40 << 20);
    push_image_with_long_history(registry.addr(), "sig-storage/huger", "v1", 33 << 20);
    let work = tempfile::tempdir().unwrap();
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let cache = work.path().join("cache");
    let bundle = work.path().join("long.tar");
    let build = |image: &[&str], out: &Path| {
        let mut args = vec!["bundle"];
        for image in image {
            args.extend(["--image", image]);
        }
        args.extend([
            "--mirror",
            &mirror,
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "-q",
        ]);
        ferry(&args)
    };
    build(&["registry.k8s.io/sig-storage/long:v1"], &bundle).success();
    let verified = ferry(&["verify", bundle.to_str().unwrap(), "--deep"]).success();
    assert!(
        verified.stdout().contains("intact: 1 images"),
        "{}",
        verified.stdout()
    );

    let refused = build(
        &[
            "registry.k8s.io/sig-storage/huge:v1",
            "registry.k8s.io/sig-storage/huger:v1",
        ],
        &work.path().join("huge.tar"),
    )
    .fails_with(1);
    let stderr = refused.stderr();
    assert!(stderr.starts_with("error: 2 fetches failed:\n"), "{stderr}");
    for name in ["huge", "huger"] {
        let line = format!("  registry.k8s.io/sig-storage/{name}:v1: its config is ");
        assert!(
            stderr.contains(&line)
                && stderr.contains("bytes, more than the 33554432 bytes ferry accepts"),
            "{stderr}"
        );
    }
    assert!(!work.path().join("huge.tar").exists());
}

/// When the pull fails, the vendor layers still being compressed would be thrown away: the run stops
/// them and reports the pull's failures alone, without compressing the rest.
#[test]
fn a_failed_pull_stops_vendor_compression() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let vendor = work.path().join("vendor");
    std::fs::create_dir(&vendor).unwrap();
    // Large enough that compressing it takes far longer than two failed manifest requests.
    vendor_tarball(
        &vendor.join("huawei-csi.tar"),
        "huawei-csi:4.8.0",
        400 << 20,
    );
    let cache = work.path().join("cache");
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let run = ferry(&[
        "bundle",
        "huawei-csi@4.8.0",
        "--k8s",
        "1.28",
        "--service",
        "node",
        "--vendor-dir",
        vendor.to_str().unwrap(),
        "--mirror",
        &mirror,
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        work.path().join("b.tar").to_str().unwrap(),
        "-q",
    ])
    .fails_with(1);
    let stderr = run.stderr();
    assert!(stderr.starts_with("error: 2 fetches failed:\n"), "{stderr}");
    assert!(
        !stderr.contains("vendor") && !stderr.contains("stopped because"),
        "only the pull's failures are reported: {stderr}"
    );
    let compressed = std::fs::read_dir(cache.join("ferry-v1/notes"))
        .map(|kinds| {
            kinds
                .flatten()
                .map(|kind| std::fs::read_dir(kind.path()).unwrap().count())
                .sum::<usize>()
        })
        .unwrap_or(0);
    assert_eq!(compressed, 0, "no vendor layer was compressed to the end");
}

/// An empty --vendor-dir names every vendor image the release needs, not only the first.
#[test]
fn an_empty_vendor_dir_names_every_vendor_image_missing() {
    let Some(csi) = Csi480::start() else { return };
    for tarball in std::fs::read_dir(csi.vendor.path()).unwrap() {
        std::fs::remove_file(tarball.unwrap().path()).unwrap();
    }
    let cache = csi.work.path().join("cache");
    let run = csi
        .bundle(cache.to_str().unwrap(), "csi.tar", &[])
        .fails_with(2);
    assert_eq!(
        run.stderr(),
        format!(
            "error: the vendor directory {} has none of the images \
             docker.io/library/storage-backend-controller:4.8.0, \
             docker.io/library/storage-backend-sidecar:4.8.0, docker.io/library/huawei-csi:4.8.0, \
             docker.io/library/huawei-csi-extender:4.8.0; it has: no image archives\n\
             (the tarballs are in the vendor's release package, e.g. its image/ directory)\n",
            csi.vendor.path().display()
        )
    );
    assert!(!csi.work.path().join("csi.tar").exists());
}
