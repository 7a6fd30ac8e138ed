//! One bundle for a mixed amd64 + arm64 cluster: the 4.8.0 / Kubernetes 1.28 set with the vendor's images
//! from an amd64 and an arm64 package, checked with the real containerd, dockerd, podman, Distribution and
//! skopeo.

use std::collections::BTreeSet;
use std::process::Command;

use crate::bundle::expected_names;
use crate::deliver::{load, push_into, skopeo_digest};
use crate::ferry::{command, run, Run};
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{push_image, seed_csi_480, vendor_dir_480_for, Format, Seeded};
use crate::serve::Served;
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

/// A registry seeded with the public images (4 platforms each), and the vendor's amd64 and arm64 packages
/// in two directories holding files of the same names.
struct Mixed {
    registry: Registry,
    seeded: Vec<(String, Seeded)>,
    mirror: String,
    amd64: tempfile::TempDir,
    arm64: tempfile::TempDir,
    work: tempfile::TempDir,
}

impl Mixed {
    fn start() -> Option<Mixed> {
        let registry = require(Registry::plain())?;
        let seeded = seed_csi_480(registry.addr(), TEST_IMAGE_SIZE);
        let (amd64, arm64) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        vendor_dir_480_for(amd64.path(), TEST_IMAGE_SIZE, "linux/amd64");
        vendor_dir_480_for(arm64.path(), TEST_IMAGE_SIZE, "linux/arm64");
        Some(Mixed {
            mirror: format!("registry.k8s.io={}", registry.addr()),
            registry,
            seeded,
            amd64,
            arm64,
            work: tempfile::tempdir().unwrap(),
        })
    }

    fn path(&self, name: &str) -> String {
        self.work.path().join(name).to_str().unwrap().to_string()
    }

    /// `ferry bundle huawei-csi@4.8.0 --k8s 1.28` for `platforms` into `output`, both vendor packages given.
    fn bundle(&self, platforms: &str, output: &str, extra: &[&str]) -> Run {
        run(command()
            .args([
                "bundle",
                "huawei-csi@4.8.0",
                "--k8s",
                "1.28",
                "--platform",
                platforms,
                "--mirror",
                &self.mirror,
                "--cache-dir",
                &self.path("cache"),
                "--vendor-dir",
                self.arm64.path().to_str().unwrap(),
                "--vendor-dir",
                self.amd64.path().to_str().unwrap(),
                "-o",
                &self.path(output),
            ])
            .args(extra))
    }

    /// The bundle's images as `ferry inspect --json` lists them: (name, platform, manifest digest).
    fn listed(&self, bundle: &str) -> Vec<(String, String, String)> {
        inspected(&self.work.path().join(bundle))
    }
}

/// A bundle's images as `ferry inspect --json` lists them: (name, platform, manifest digest).
pub fn inspected(bundle: &std::path::Path) -> Vec<(String, String, String)> {
    let listed = run(command().args(["inspect", bundle.to_str().unwrap(), "--json"]))
        .success()
        .json();
    listed["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let field = |key: &str| i[key].as_str().unwrap().to_string();
            (field("name"), field("platform"), field("manifest"))
        })
        .collect()
}

#[test]
fn a_two_platform_bundle_keeps_every_digest_and_loads_the_nodes_platform() {
    let Some(mixed) = Mixed::start() else { return };
    let built = mixed
        .bundle("linux/amd64,linux/arm64", "mixed.tar", &[])
        .success();
    assert!(
        built
            .stdout()
            .contains("11 image(s) for linux/amd64, linux/arm64"),
        "{}",
        built.stdout()
    );
    // Matched by config, not by file name: both packages name their files alike.
    for platform in ["linux/amd64", "linux/arm64"] {
        let dir = match platform {
            "linux/amd64" => mixed.amd64.path(),
            _ => mixed.arm64.path(),
        };
        let said = format!(
            "docker.io/library/huawei-csi:4.8.0 for {platform}: took {}",
            dir.join("huawei-csi-4.8.0.tar").display()
        );
        assert!(built.stderr().contains(&said), "{}", built.stderr());
    }
    let bundle = mixed.path("mixed.tar");
    run(command().args(["verify", &bundle, "--k8s", "1.28"])).success();

    let listed = mixed.listed("mixed.tar");
    assert_eq!(listed.len(), 22, "11 images x 2 platforms: {listed:?}");
    for (upstream, seeded) in &mixed.seeded {
        for platform in ["linux/amd64", "linux/arm64"] {
            let entry = (
                upstream.clone(),
                platform.to_string(),
                seeded.manifest_for(platform).to_string(),
            );
            assert!(listed.contains(&entry), "{entry:?} in {listed:?}");
        }
    }
    let vendor_arm64: Vec<&(String, String, String)> = listed
        .iter()
        .filter(|(name, platform, _)| name.starts_with("docker.io/") && platform == "linux/arm64")
        .collect();
    assert_eq!(vendor_arm64.len(), 4, "{listed:?}");

    // containerd with every platform: each upstream per-platform manifest is there under its digest.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    containerd.import_all_platforms(&bundle);
    let content =
        String::from_utf8_lossy(&containerd.ctr(&["content", "ls", "-q"]).stdout).into_owned();
    for (_, _, digest) in &listed {
        assert!(content.contains(digest.as_str()), "{digest} in containerd");
    }
    assert_eq!(containerd.image_names(), expected_names());

    // ferry load on this amd64 node: the names kubelet asks for, amd64.
    let Some(fresh) = require(Containerd::start()) else {
        return;
    };
    let loaded = load(&bundle, "containerd", fresh.socket().to_str().unwrap()).success();
    assert_eq!(loaded.stdout().lines().count(), 11, "{}", loaded.stdout());
    for (upstream, seeded) in &mixed.seeded {
        let line = format!(
            "loaded {upstream}  {}  linux/amd64  into Containerd",
            seeded.manifest_for("linux/amd64")
        );
        assert!(loaded.stdout().contains(&line), "{}", loaded.stdout());
    }
    assert_eq!(fresh.image_names(), expected_names());

    // docker: `docker load` of the bundle itself, and ferry load, give amd64 (manifest.json's platform).
    let Some(dockerd) = require(Dockerd::start(&fresh)) else {
        return;
    };
    load(&bundle, "docker", &dockerd.socket()).success();
    let architectures = |output: std::process::Output| {
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect::<BTreeSet<String>>()
    };
    let names_list: Vec<String> = expected_names().into_iter().collect();
    let mut inspect = vec!["image", "inspect", "--format", "{{.Architecture}}"];
    inspect.extend(names_list.iter().map(String::as_str));
    assert_eq!(
        architectures(dockerd.docker(&inspect)),
        BTreeSet::from(["amd64".to_string()])
    );

    // podman: an arm64 node's load (--platform stands in for the node) gets the arm64 images, by name.
    let Some(podman) = require(Podman::new()) else {
        return;
    };
    let arm = run(command()
        .args([
            "load",
            &bundle,
            "--runtime",
            "podman",
            "--platform",
            "linux/arm64",
        ])
        .env("CONTAINERS_STORAGE_CONF", podman.storage_conf()))
    .success();
    assert!(
        arm.stdout()
            .lines()
            .all(|l| l.contains("  linux/arm64  into Podman")),
        "{}",
        arm.stdout()
    );
    assert_eq!(
        architectures(podman.podman(&inspect)),
        BTreeSet::from(["arm64".to_string()])
    );
    let podman_plain = require(Podman::new()).unwrap();
    podman_plain.load_file(&bundle);
    assert_eq!(
        architectures(podman_plain.podman(&inspect)),
        BTreeSet::from(["amd64".to_string()])
    );
}

/// The manifest a node of `arch` gets for `image`: skopeo copies what it resolves for that architecture
/// into a directory, manifest bytes unchanged, and its digest is theirs.
fn skopeo_digest_for(source_args: &[String], image: &str, arch: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new("skopeo")
        .args(["copy", "--override-arch", arch])
        .args(source_args)
        .arg(format!("docker://{image}"))
        .arg(format!("dir:{}", dir.path().display()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy {image}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let manifest = std::fs::read(dir.path().join("manifest.json")).unwrap();
    format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&manifest))
    )
}

#[test]
fn a_pushed_two_platform_bundle_serves_each_node_its_own() {
    let Some(mixed) = Mixed::start() else { return };
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    mixed
        .bundle("linux/amd64,linux/arm64", "mixed.tar", &[])
        .success();
    let bundle = mixed.path("mixed.tar");
    let to = format!("{}/csi", private.addr());
    let pushed = run(&mut push_into(&private, &bundle, &to, &[])).success();
    assert_eq!(pushed.stdout().lines().count(), 11, "{}", pushed.stdout());
    let listed = mixed.listed("mixed.tar");
    let digest_of = |name: &str, platform: &str| -> String {
        listed
            .iter()
            .find(|(n, p, _)| n == name && p == platform)
            .unwrap_or_else(|| panic!("{name} {platform} in {listed:?}"))
            .2
            .clone()
    };
    let inspected = run(command().args(["verify", &bundle, "--json"]))
        .success()
        .json();
    for image in inspected["report"]["images"].as_array().unwrap() {
        let name = image["name"].as_str().unwrap();
        let target = match name.strip_prefix("docker.io/library/") {
            Some(vendor) => format!("{to}/{vendor}"),
            None => name.replace("registry.k8s.io", &to),
        };
        // The tag names ferry's index, byte for byte as the bundle holds it.
        assert_eq!(
            skopeo_digest(&private, &target),
            image["index"].as_str().unwrap(),
            "{target}"
        );
        for arch in ["amd64", "arm64"] {
            assert_eq!(
                skopeo_digest_for(&private.skopeo_args("src"), &target, arch),
                digest_of(name, &format!("linux/{arch}")),
                "{target} for {arch}"
            );
        }
    }
    for (upstream, seeded) in &mixed.seeded {
        let target = upstream.replace("registry.k8s.io", &to);
        assert_eq!(
            skopeo_digest_for(&private.skopeo_args("src"), &target, "arm64"),
            seeded.manifest_for("linux/arm64"),
            "{target} keeps its upstream arm64 digest"
        );
    }
}

/// `ferry serve` hands out ferry's index under each tag, so a node of each architecture pulls its own.
#[test]
fn a_served_two_platform_bundle_serves_each_node_its_own() {
    let Some(mixed) = Mixed::start() else { return };
    mixed
        .bundle("linux/amd64,linux/arm64", "mixed.tar", &[])
        .success();
    let served = Served::start(
        &[&mixed.path("mixed.tar")],
        mixed.work.path().join("serve.log"),
    );
    let plain = ["--src-tls-verify=false".to_string()];
    for (upstream, seeded) in &mixed.seeded {
        let image = upstream.replace("registry.k8s.io", &served.addr);
        for arch in ["amd64", "arm64"] {
            assert_eq!(
                skopeo_digest_for(&plain, &image, arch),
                seeded.manifest_for(&format!("linux/{arch}")),
                "{image} for {arch}"
            );
        }
    }
}

#[test]
fn an_image_lacking_a_platform_is_named_with_what_it_has() {
    let Some(mixed) = Mixed::start() else { return };
    let refused = mixed
        .bundle("linux/amd64,linux/riscv64", "refused.tar", &[])
        .fails_with(1);
    assert!(
        refused.stderr().contains(
            "registry.k8s.io/sig-storage/csi-attacher:v4.4.0 has no manifest for platform linux/riscv64; \
             it has: linux/amd64, linux/arm64, linux/ppc64le, linux/s390x"
        ),
        "{}",
        refused.stderr()
    );
    assert!(!mixed.work.path().join("refused.tar").exists());
}

/// A vendor-style image that exists for amd64 only is refused in a two-platform bundle, saying what it
/// has, unless --allow-single-platform names it; the bundle then says so and still verifies.
#[test]
fn a_single_platform_image_is_carried_only_when_allowed() {
    let Some(mixed) = Mixed::start() else { return };
    push_image(
        mixed.registry.addr(),
        "vendor/only-amd64",
        "v1",
        Format::DockerSingle,
        &["linux/amd64"],
        TEST_IMAGE_SIZE,
    );
    let image = "registry.k8s.io/vendor/only-amd64:v1";
    let refused = mixed
        .bundle(
            "linux/amd64,linux/arm64",
            "refused.tar",
            &["--image", image],
        )
        .fails_with(1);
    assert!(
        refused.stderr().contains(&format!(
            "{image} is linux/amd64 only, but linux/arm64 was asked for"
        )),
        "{}",
        refused.stderr()
    );
    mixed
        .bundle(
            "linux/amd64,linux/arm64",
            "allowed.tar",
            &["--image", image, "--allow-single-platform", image],
        )
        .success();
    let verified = run(command().args([
        "verify",
        &mixed.path("allowed.tar"),
        "--k8s",
        "1.28",
        "--json",
    ]))
    .success()
    .json();
    let metadata = &verified["report"]["metadata"];
    assert_eq!(
        metadata["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    assert_eq!(metadata["partial_platforms"], serde_json::json!([image]));
    let platforms: Vec<&str> = verified["report"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"] == image)
        .map(|i| i["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64"]);
}
