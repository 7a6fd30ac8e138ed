//! The whole site in one bundle: Kubernetes itself (kubeadm's images for 1.28.3) and the Huawei CSI driver,
//! built through a mirror of registry.k8s.io, every shared blob once, then loaded into containerd, docker
//! and podman, pushed with the CSI's Helm values, and pulled from `ferry serve` by upstream digest. A site
//! file with lists, manifests, extra images, mirrors and two platforms builds exactly what it says, signed
//! and locked. Bundles that leave the vendor's images out or add images say so in their name and at the
//! top of verify and inspect; what several products cannot mean is refused before anything is fetched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bundle::{bundle_quietly, expected_names, files_in, sha256sum_check, text};
use crate::deliver::{load, load_into_podman, push_into, skopeo_digest};
use crate::ferry::{command, ferry, run, Run};
use crate::kubernetes::KUBEADM_1283;
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{
    push_image, seed_csi_480, vendor_dir_480, vendor_dir_480_for, Format, Seeded, PLATFORMS,
};
use crate::serve::{containerd_hosts, Served};
use crate::services::{require, Containerd, Dockerd, Podman, Registry};

/// The name of the bundle of both products for one linux/amd64 cluster.
const WHOLE: &str = "kubernetes-1.28.3+huawei-csi-4.8.0-k8s1.28-linux-amd64.tar";

/// A registry holding kubeadm's 1.28.3 images and the CSI's public 4.8.0 images, multi-platform, and the
/// vendor's packages for amd64 and arm64.
struct Plant {
    registry: Registry,
    /// Upstream name and what was seeded, kubeadm's first.
    seeded: Vec<(String, Seeded)>,
    work: tempfile::TempDir,
}

impl Plant {
    fn start() -> Option<Plant> {
        let registry = require(Registry::plain())?;
        // The same layer size as the CSI's images: every image of a platform shares its base layer.
        let mut seeded: Vec<(String, Seeded)> = KUBEADM_1283
            .iter()
            .map(|(repository, tag)| {
                let image = push_image(
                    registry.addr(),
                    repository,
                    tag,
                    Format::DockerList,
                    &PLATFORMS[..2],
                    TEST_IMAGE_SIZE,
                );
                (format!("registry.k8s.io/{repository}:{tag}"), image)
            })
            .collect();
        seeded.extend(seed_csi_480(registry.addr(), TEST_IMAGE_SIZE));
        let work = tempfile::tempdir().unwrap();
        for package in ["amd64", "arm64"] {
            std::fs::create_dir_all(work.path().join("package").join(package)).unwrap();
        }
        vendor_dir_480(&work.path().join("package/amd64"), TEST_IMAGE_SIZE);
        vendor_dir_480_for(
            &work.path().join("package/arm64"),
            TEST_IMAGE_SIZE,
            "linux/arm64",
        );
        Some(Plant {
            registry,
            seeded,
            work,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    fn mirror(&self) -> String {
        format!("registry.k8s.io={}", self.registry.addr())
    }

    /// The upstream manifest digest of `image` for `platform`.
    fn digest(&self, image: &str, platform: &str) -> String {
        self.seeded
            .iter()
            .find(|(name, _)| name == image)
            .unwrap_or_else(|| panic!("{image} was not seeded"))
            .1
            .manifest_for(platform)
            .to_string()
    }
}

/// Every entry of a tar file, by name, with its bytes.
fn entries(tar: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(tar).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (name, bytes)
        })
        .collect()
}

/// Checks that the bundle holds each blob its manifests reference exactly once, and nothing else; returns
/// the digests of the layers that more than one manifest references.
fn each_blob_once(bundle: &Path) -> BTreeSet<String> {
    let entries = entries(bundle);
    let names: Vec<&str> = entries.iter().map(|(name, _)| name.as_str()).collect();
    let distinct: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(distinct.len(), names.len(), "an entry twice: {names:?}");
    let blobs: BTreeMap<String, &[u8]> = entries
        .iter()
        .filter_map(|(name, bytes)| {
            let hex = name.strip_prefix("blobs/sha256/")?;
            Some((format!("sha256:{hex}"), bytes.as_slice()))
        })
        .collect();
    let mut referenced: BTreeMap<String, usize> = BTreeMap::new();
    for bytes in blobs.values() {
        // Manifests and indexes; configs are JSON too, but reference nothing.
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(bytes) else {
            continue;
        };
        if document.get("schemaVersion").is_none() {
            continue;
        }
        let descriptors = document["layers"]
            .as_array()
            .into_iter()
            .chain(document["manifests"].as_array())
            .flatten()
            .chain(Some(&document["config"]).filter(|c| c.is_object()));
        for descriptor in descriptors {
            *referenced
                .entry(descriptor["digest"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    let index: serde_json::Value = serde_json::from_slice(
        &entries
            .iter()
            .find(|(name, _)| name == "index.json")
            .unwrap()
            .1,
    )
    .unwrap();
    for top in index["manifests"].as_array().unwrap() {
        *referenced
            .entry(top["digest"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(
        blobs.keys().cloned().collect::<BTreeSet<_>>(),
        referenced.keys().cloned().collect::<BTreeSet<_>>(),
        "the bundle holds exactly the blobs its images reference"
    );
    referenced
        .into_iter()
        .filter(|(_, users)| *users > 1)
        .map(|(digest, _)| digest)
        .collect()
}

/// The bundle's `ferry.json`.
fn metadata(bundle: &Path) -> serde_json::Value {
    let (_, bytes) = entries(bundle)
        .into_iter()
        .find(|(name, _)| name == "ferry.json")
        .expect("ferry.json");
    serde_json::from_slice(&bytes).unwrap()
}

/// Kubernetes 1.28.3 and CSI 4.8.0 in one bundle, delivered every way a site receives images.
#[test]
fn kubernetes_and_the_csi_in_one_bundle_load_push_and_serve() {
    let Some(plant) = Plant::start() else { return };
    let out = plant.path("out/");
    let built = ferry(&[
        "bundle",
        "kubernetes@1.28.3",
        "huawei-csi@4.8.0",
        "--vendor-dir",
        &plant.arg("package/amd64"),
        "--mirror",
        &plant.mirror(),
        "--cache-dir",
        &plant.arg("cache"),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ])
    .success();
    let bundle = out.join(WHOLE);
    assert_eq!(
        files_in(&out),
        [WHOLE.to_string(), format!("{WHOLE}.sha256")],
        "{}",
        built.stdout()
    );
    assert!(
        built
            .stdout()
            .starts_with(&format!("{}  18 image(s), ", bundle.display())),
        "{}",
        built.stdout()
    );
    sha256sum_check(&out, &format!("{WHOLE}.sha256"));

    // Every blob once: the base layer that every amd64 image shares, kubeadm's and the CSI's, is one entry.
    let shared = each_blob_once(&bundle);
    let base_of = |image: &str| -> String {
        let manifest = entries(&bundle)
            .into_iter()
            .find(|(name, _)| {
                *name == format!("blobs/sha256/{}", &plant.digest(image, "linux/amd64")[7..])
            })
            .unwrap()
            .1;
        let manifest: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
        manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let base = base_of("registry.k8s.io/kube-apiserver:v1.28.3");
    assert_eq!(
        base,
        base_of("registry.k8s.io/sig-storage/csi-provisioner:v3.6.0")
    );
    assert!(shared.contains(&base), "{shared:?}");

    // ferry.json names both products; the bundle serves Kubernetes 1.28, where both image sets apply.
    let recorded = metadata(&bundle);
    assert_eq!(
        recorded["products"],
        serde_json::json!([
            {"catalog": "kubernetes", "release": "1.28.3", "service": null,
             "kubernetes": {"span": "1.28", "min": "1.28", "max": "1.28"}},
            {"catalog": "huawei-csi", "release": "4.8.0", "service": null,
             "kubernetes": {"span": "1.20 and later", "min": "1.20", "max": null}},
        ])
    );
    assert_eq!(
        (
            &recorded["catalog"],
            &recorded["release"],
            &recorded["kubernetes"]["span"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &serde_json::json!("1.28")
        )
    );

    // verify --k8s checks both products' tables; another version disagrees with the kubernetes release.
    let verified = ferry(&["verify", bundle.to_str().unwrap(), "--k8s", "1.28"]).success();
    let report = verified.stdout();
    assert!(
        report.contains(&format!(
            "\nintact: 18 images, {} blobs, ",
            each_blob_count(&bundle)
        )),
        "{report}"
    );
    assert!(!report.contains("MISSING"), "{report}");
    let other = ferry(&["verify", bundle.to_str().unwrap(), "--k8s", "1.29"]).fails_with(2);
    assert_eq!(
        other.stderr(),
        "error: --k8s: kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.29 disagrees with it (leave \
         --k8s out, or name a 1.29 release, e.g. kubernetes@1.29)\n"
    );
    let inspected = ferry(&["inspect", bundle.to_str().unwrap()])
        .success()
        .stdout();
    assert!(
        inspected.contains("\nrelease:    kubernetes 1.28.3, huawei-csi 4.8.0\nkubernetes: 1.28\n"),
        "{inspected}"
    );

    // ferry serve: containerd pulls a kubeadm image and a CSI image by their upstream digests.
    let served = Served::start(&[bundle.to_str().unwrap()], plant.path("serve.log"));
    let hosts = plant.path("certs.d");
    containerd_hosts(&bundle, &served, &hosts);
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let by_digest = [
        "registry.k8s.io/kube-apiserver:v1.28.3",
        "registry.k8s.io/sig-storage/csi-provisioner:v3.6.0",
    ];
    for image in by_digest {
        let digest = plant.digest(image, "linux/amd64");
        let pinned = format!("{}@{digest}", image.rsplit_once(':').unwrap().0);
        let pulled = Command::new("ctr")
            .arg("--address")
            .arg(containerd.socket())
            .args(["-n", "served", "images", "pull", "--hosts-dir"])
            .arg(&hosts)
            .arg(&pinned)
            .output()
            .unwrap();
        assert!(
            pulled.status.success(),
            "ctr pull {pinned}: {}",
            text(&pulled)
        );
        let listed = Command::new("ctr")
            .arg("--address")
            .arg(containerd.socket())
            .args(["-n", "served", "images", "ls", "-q"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains(&pinned),
            "{}",
            text(&listed)
        );
    }
    drop(served);
    let log = std::fs::read_to_string(plant.path("serve.log")).unwrap();
    for image in by_digest {
        let repository = image
            .strip_prefix("registry.k8s.io/")
            .unwrap()
            .rsplit_once(':')
            .unwrap()
            .0;
        let digest = plant.digest(image, "linux/amd64");
        assert!(
            log.contains(&format!(
                "/v2/{repository}/manifests/{digest}?ns=registry.k8s.io -> 200"
            )),
            "containerd asked ferry serve for {image} by digest:\n{log}"
        );
    }

    // ferry load into containerd, docker and podman: every image with its upstream digest.
    let mut all_names = expected_names();
    all_names.extend(
        KUBEADM_1283
            .iter()
            .map(|(repository, tag)| format!("registry.k8s.io/{repository}:{tag}")),
    );
    let loaded = load(
        bundle.to_str().unwrap(),
        "containerd",
        containerd.socket().to_str().unwrap(),
    )
    .success();
    assert_eq!(loaded.stdout().lines().count(), 18, "{}", loaded.stdout());
    for (image, _) in &plant.seeded {
        let line = format!(
            "loaded {image}  {}  linux/amd64  into Containerd",
            plant.digest(image, "linux/amd64")
        );
        assert!(
            loaded.stdout().contains(&line),
            "{line}\n{}",
            loaded.stdout()
        );
    }
    assert_eq!(containerd.image_names(), all_names);
    let Some(dockerd) = require(Dockerd::start(&containerd)) else {
        return;
    };
    load(bundle.to_str().unwrap(), "docker", &dockerd.socket()).success();
    let images = dockerd.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(
        String::from_utf8_lossy(&images.stdout).lines().count(),
        18,
        "{}",
        text(&images)
    );
    let Some(podman) = require(Podman::new()) else {
        return;
    };
    load_into_podman(bundle.to_str().unwrap(), &podman).success();
    assert_eq!(podman.image_names(), all_names);
    // docker and podman make their own manifests on load; what they keep is the image ID, the upstream
    // config's digest.
    for image in by_digest {
        let config = config_of(&bundle, &plant.digest(image, "linux/amd64"));
        let id = |output: std::process::Output| {
            let id = String::from_utf8_lossy(&output.stdout).trim().to_string();
            match id.starts_with("sha256:") {
                true => id,
                false => format!("sha256:{id}"),
            }
        };
        assert_eq!(
            id(dockerd.docker(&["image", "inspect", "--format", "{{.Id}}", image])),
            config,
            "docker's {image}"
        );
        assert_eq!(
            id(podman.podman(&["image", "inspect", "--format", "{{.Id}}", image])),
            config,
            "podman's {image}"
        );
    }

    // ferry push: upstream digests in the private registry, and the CSI's Helm values (kubeadm's images
    // have no chart keys).
    let Some(private) = require(Registry::tls_with_auth("ferry", "s3cret-Pa55")) else {
        return;
    };
    let to = format!("{}/site", private.addr());
    let values = plant.path("values.yaml");
    let pushed = run(&mut push_into(
        &private,
        bundle.to_str().unwrap(),
        &to,
        &["--helm-values", values.to_str().unwrap(), "-q"],
    ))
    .success();
    assert_eq!(pushed.stdout().lines().count(), 18, "{}", pushed.stdout());
    for image in by_digest {
        let target = image.replace("registry.k8s.io", &to);
        assert_eq!(
            skopeo_digest(&private, &target),
            plant.digest(image, "linux/amd64"),
            "{target}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(&values).unwrap(),
        format!(
            "# Helm values for huawei-csi 4.8.0: images from the private registry (written by ferry)\n\
             images:\n\
             \x20 \"huaweiCSIExtender\": \"{to}/huawei-csi-extender:4.8.0\"\n\
             \x20 \"huaweiCSIService\": \"{to}/huawei-csi:4.8.0\"\n\
             \x20 \"storageBackendController\": \"{to}/storage-backend-controller:4.8.0\"\n\
             \x20 \"storageBackendSidecar\": \"{to}/storage-backend-sidecar:4.8.0\"\n\
             \x20 \"sidecar\":\n\
             \x20   \"attacher\": \"{to}/sig-storage/csi-attacher:v4.4.0\"\n\
             \x20   \"livenessProbe\": \"{to}/sig-storage/livenessprobe:v2.12.0\"\n\
             \x20   \"provisioner\": \"{to}/sig-storage/csi-provisioner:v3.6.0\"\n\
             \x20   \"registrar\": \"{to}/sig-storage/csi-node-driver-registrar:v2.9.0\"\n\
             \x20   \"resizer\": \"{to}/sig-storage/csi-resizer:v1.9.0\"\n\
             \x20   \"snapshotController\": \"{to}/sig-storage/snapshot-controller:v6.3.0\"\n\
             \x20   \"snapshotter\": \"{to}/sig-storage/csi-snapshotter:v6.3.0\"\n"
        )
    );
}

/// The config digest the manifest `digest` in `bundle` names.
fn config_of(bundle: &Path, digest: &str) -> String {
    let (_, bytes) = entries(bundle)
        .into_iter()
        .find(|(name, _)| *name == format!("blobs/sha256/{}", &digest[7..]))
        .unwrap_or_else(|| panic!("{digest} is in the bundle"));
    let manifest: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    manifest["config"]["digest"].as_str().unwrap().to_string()
}

/// The number of blobs in a bundle, as `verify` counts them.
fn each_blob_count(bundle: &Path) -> usize {
    entries(bundle)
        .iter()
        .filter(|(name, _)| name.starts_with("blobs/sha256/"))
        .count()
}

/// A site file names two products, a list, a manifest folder, an extra image, mirrors, two platforms
/// and the vendor's package for each: `pull --site` and `bundle --site` fetch and write exactly that,
/// signed and locked, and the bundle says it carries images beyond the products' tables.
#[test]
fn a_site_file_builds_exactly_what_it_says() {
    let Some(plant) = Plant::start() else { return };
    let addr = plant.registry.addr();
    for (repository, tag) in [
        ("quay/calico/node", "v3.26.4"),
        ("quay/calico/kube-controllers", "v3.26.4"),
        ("hub/library/busybox", "1.36"),
    ] {
        push_image(
            addr,
            repository,
            tag,
            Format::OciIndex,
            &PLATFORMS[..2],
            60_000,
        );
    }
    std::fs::create_dir_all(plant.path("site/lists")).unwrap();
    std::fs::create_dir_all(plant.path("site/rendered")).unwrap();
    std::fs::write(
        plant.path("site/lists/cni.txt"),
        "# calico, as its operator lists it\nquay.io/calico/node:v3.26.4\n",
    )
    .unwrap();
    std::fs::write(
        plant.path("site/rendered/calico.yaml"),
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: calico-config}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: calico-kube-controllers, namespace: kube-system}\n\
         spec:\n  template:\n    spec:\n      containers:\n      - name: calico-kube-controllers\n\
         \x20       image: quay.io/calico/kube-controllers:v3.26.4\n",
    )
    .unwrap();
    // docker.io's mirror here is unreachable: the --mirror given beside --site is the one used.
    let site = format!(
        "# Plant 7, reviewed\nplatforms = [\"linux/amd64\", \"linux/arm64\"]\n\n\
         [[product]]\nrelease = \"kubernetes@1.28.3\"\n\n[[product]]\nrelease = \"huawei-csi@4.8.0\"\n\n\
         [images]\nlists = [\"lists/cni.txt\"]\nmanifests = [\"rendered/\"]\n\
         extra = [\"docker.io/library/busybox:1.36\"]\n\n\
         [fetch]\nmirrors = {{ \"registry.k8s.io\" = \"{addr}\", \"quay.io\" = \"{addr}/quay\", \
         \"docker.io\" = \"127.0.0.1:9/hub\" }}\n\
         vendor_dirs = [\"../package/amd64\", \"../package/arm64\"]\n"
    );
    std::fs::write(plant.path("site/site.toml"), site).unwrap();
    let hub = format!("docker.io={addr}/hub");
    let site_args = |verb: &str| -> Vec<String> {
        [
            verb,
            "--site",
            &plant.arg("site/site.toml"),
            "--mirror",
            &hub,
            "--cache-dir",
            &plant.arg("cache"),
            "-q",
        ]
        .map(String::from)
        .to_vec()
    };

    let pulled = run(command().args(site_args("pull"))).success();
    let lines: Vec<String> = pulled.stdout().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 21 * 2, "{}", pulled.stdout());
    assert_eq!(
        lines[0],
        format!(
            "registry.k8s.io/kube-apiserver:v1.28.3  linux/amd64  {}",
            plant.digest("registry.k8s.io/kube-apiserver:v1.28.3", "linux/amd64")
        )
    );
    assert!(
        lines[41].starts_with("docker.io/library/busybox:1.36  linux/arm64  sha256:"),
        "{}",
        pulled.stdout()
    );

    // Flags that say what to carry are refused beside the site file, by name, before anything is read.
    let refused = run(command().args(site_args("bundle")).args([
        "--k8s",
        "1.28",
        "--image",
        "busybox:1",
        "--skip-vendor",
    ]))
    .fails_with(2);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: --k8s, --image, --skip-vendor cannot be given with --site: {} says what to carry \
             (write it there, or leave --site out); --mirror, --vendor-dir, --insecure-registry and \
             --ca-cert add to it\n",
            plant.arg("site/site.toml")
        )
    );

    let key = plant.path("builder");
    let keygen = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "builder", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(keygen.success());
    std::fs::write(
        plant.path("allowed_signers"),
        format!(
            "ops@plant7 namespaces=\"ferry\" {}",
            std::fs::read_to_string(plant.path("builder.pub")).unwrap()
        ),
    )
    .unwrap();
    let out = plant.path("out/");
    let bundle_args = |lock: &str| {
        let mut args = site_args("bundle");
        args.extend(
            [
                "--sign",
                key.to_str().unwrap(),
                "--lock",
                &plant.arg(lock),
                "-o",
                out.to_str().unwrap(),
            ]
            .map(String::from),
        );
        args
    };
    let built = run(command().args(bundle_args("site.lock"))).success();
    let name = "kubernetes-1.28.3+huawei-csi-4.8.0+3-images-k8s1.28-linux-amd64-linux-arm64.tar";
    assert_eq!(
        files_in(&out),
        [
            name.to_string(),
            format!("{name}.sha256"),
            format!("{name}.sig")
        ],
        "{}",
        built.stdout()
    );
    assert!(
        built.stdout().contains(&format!(
            "{name}  21 image(s) for linux/amd64, linux/arm64, "
        )),
        "{}",
        built.stdout()
    );
    assert!(
        built.stdout().ends_with(&format!(
            "lock: wrote {} (42 images)\n",
            plant.arg("site.lock")
        )),
        "{}",
        built.stdout()
    );
    let bundle = out.join(name);
    each_blob_once(&bundle);
    let recorded = metadata(&bundle);
    assert_eq!(
        recorded["extra"],
        serde_json::json!([
            "quay.io/calico/node:v3.26.4",
            "quay.io/calico/kube-controllers:v3.26.4",
            "docker.io/library/busybox:1.36"
        ])
    );
    assert_eq!(
        recorded["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );

    // Arrival: signed by a trusted key, every digest as locked, and the extension said first.
    let verified = ferry(&[
        "verify",
        bundle.to_str().unwrap(),
        "--k8s",
        "1.28",
        "--trust",
        &plant.arg("allowed_signers"),
        "--lock",
        &plant.arg("site.lock"),
    ])
    .success()
    .stdout();
    assert!(
        verified.starts_with(
            "extended: 3 image(s) besides those of kubernetes@1.28.3 and huawei-csi@4.8.0: \
             quay.io/calico/node:v3.26.4, quay.io/calico/kube-controllers:v3.26.4, \
             docker.io/library/busybox:1.36\nchecksum: matches "
        ),
        "{verified}"
    );
    assert!(
        verified.contains("intact: 21 images for linux/amd64, linux/arm64 (42 manifests), "),
        "{verified}"
    );

    // A rebuild from the same file is held to the lock, and is byte-identical.
    let first = std::fs::read(&bundle).unwrap();
    std::fs::remove_dir_all(&out).unwrap();
    let again = run(command().args(bundle_args("site.lock"))).success();
    assert!(
        again.stdout().ends_with(&format!(
            "lock: every image matches {} (42 images)\n",
            plant.arg("site.lock")
        )),
        "{}",
        again.stdout()
    );
    assert!(
        std::fs::read(&bundle).unwrap() == first,
        "a rebuild is byte-identical"
    );
}

/// A bundle without the vendor's images, or with images beyond its release's table, says so in its
/// name and first in verify and inspect.
#[test]
fn incomplete_and_extended_bundles_say_so() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_csi_480(registry.addr(), 60_000);
    push_image(
        registry.addr(),
        "kube-proxy",
        "v1.28.3",
        Format::DockerList,
        &PLATFORMS[..1],
        60_000,
    );
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out/");
    let built = bundle_quietly(
        work.path(),
        &out,
        &[
            "huawei-csi@4.8.0",
            "--k8s",
            "1.28",
            "--skip-vendor",
            "--image",
            "registry.k8s.io/kube-proxy:v1.28.3",
            "--mirror",
            &format!("registry.k8s.io={}", registry.addr()),
        ],
    )
    .success();
    let name = "huawei-csi-4.8.0+1-images-k8s1.20-up-linux-amd64-incomplete.tar";
    let bundle = out.join(name);
    assert!(
        built.stdout().ends_with(
            "  not included (--skip-vendor): docker.io/library/storage-backend-controller:4.8.0\n\
             \x20 not included (--skip-vendor): docker.io/library/storage-backend-sidecar:4.8.0\n\
             \x20 not included (--skip-vendor): docker.io/library/huawei-csi:4.8.0\n\
             \x20 not included (--skip-vendor): docker.io/library/huawei-csi-extender:4.8.0\n"
        ) && built
            .stdout()
            .starts_with(&format!("{}  8 image(s), ", bundle.display())),
        "{}",
        built.stdout()
    );
    let caveats = "incomplete: made with --skip-vendor, 4 vendor image(s) are not inside: \
                   docker.io/library/storage-backend-controller:4.8.0, \
                   docker.io/library/storage-backend-sidecar:4.8.0, docker.io/library/huawei-csi:4.8.0, \
                   docker.io/library/huawei-csi-extender:4.8.0 (they come with the vendor's package)\n\
                   extended: 1 image(s) besides those of huawei-csi@4.8.0: \
                   registry.k8s.io/kube-proxy:v1.28.3\n";
    let verified = ferry(&["verify", bundle.to_str().unwrap()])
        .success()
        .stdout();
    assert!(
        verified.starts_with(&format!("{caveats}checksum: matches ")),
        "{verified}"
    );
    let inspected = ferry(&["inspect", bundle.to_str().unwrap()])
        .success()
        .stdout();
    assert!(
        inspected.starts_with(&format!("{caveats}IMAGE ")),
        "{inspected}"
    );
    // verify --k8s lists what the vendor's package must still bring.
    let checked = ferry(&["verify", bundle.to_str().unwrap(), "--k8s", "1.28"]).fails_with(1);
    assert!(
        checked.stdout().contains(
            "MISSING  docker.io/library/huawei-csi:4.8.0 (the catalog lists it for this Kubernetes version)"
        ),
        "{}",
        checked.stdout()
    );
}

/// What several products cannot mean is refused, whole, before a cache is even made.
#[test]
fn several_products_refuse_what_they_cannot_mean_before_any_fetch() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let refused = |args: &[&str]| -> Run {
        let run = run(command()
            .args(args)
            .args(["--cache-dir", cache.to_str().unwrap()]))
        .fails_with(2);
        assert!(!cache.exists(), "nothing fetched for {args:?}");
        run
    };
    assert_eq!(
        refused(&[
            "bundle",
            "kubernetes@1.28.3",
            "huawei-csi@4.8.0",
            "--k8s",
            "1.27",
            "--skip-vendor"
        ])
        .stderr(),
        "error: kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.27 disagrees with it (leave --k8s \
         out, or name a 1.27 release, e.g. kubernetes@1.27)\n"
    );
    assert_eq!(
        refused(&["bundle", "kubernetes@1.28.3", "huawei-csi@4.8.0", "--all-k8s"]).stderr(),
        "error: --all-k8s takes one release (every image set across the Kubernetes versions it \
         supports), and several are named (kubernetes@1.28.3, huawei-csi@4.8.0): give the cluster's \
         version (--k8s VERSION, or a kubernetes@VERSION release among them), or --all-k8s with one \
         release at a time\n"
    );
    assert_eq!(
        refused(&[
            "bundle",
            "huawei-csi",
            "kubernetes@1.28",
            "--all-releases",
            "--k8s",
            "1.28"
        ])
        .stderr(),
        "error: --all-releases makes one bundle per release of one catalog, and 2 are named \
         (huawei-csi, kubernetes@1.28): give --all-releases one catalog (huawei-csi, or a range \
         huawei-csi@3.2.0..3.2.3), or name each release without it to bundle them together\n"
    );
    assert_eq!(
        refused(&["bundle", "huawei-csi@4.8.0", "huawei-csi@4.5.0", "--k8s", "1.28"]).stderr(),
        "error: huawei-csi@4.8.0 and huawei-csi@4.5.0 are two releases of one catalog: a bundle holds \
         one release of each product (--all-releases makes one bundle per release)\n"
    );
    assert_eq!(
        refused(&["bundle", "huawei-csi@4.8.0", "huawei-csi-x@1"]).stderr(),
        ferry(&["list", "huawei-csi-x@1"]).stderr()
    );
    assert_eq!(
        refused(&["pull", "--k8s", "1.28", "--image", "busybox:1"]).stderr(),
        "error: --k8s chooses among a release's images: name one (CATALOG@RELEASE, e.g. \
         huawei-csi@4.8.0)\n"
    );
    // list takes several products the same way.
    let listed = ferry(&["list", "kubernetes@1.28.3", "huawei-csi@4.8.0", "--json"])
        .success()
        .json();
    let products: Vec<(String, String, usize)> = listed["products"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["release"].as_str().unwrap().to_string(),
                p["k8s"].as_str().unwrap().to_string(),
                p["images"].as_array().unwrap().len(),
            )
        })
        .collect();
    assert_eq!(
        products,
        [
            ("kubernetes@1.28.3".to_string(), "1.28".to_string(), 7),
            ("huawei-csi@4.8.0".to_string(), "1.28".to_string(), 11)
        ]
    );
}

/// `diff` of two site files, and of products joined by +: each side on its own Kubernetes version.
#[test]
fn diff_compares_whole_sites() {
    let work = tempfile::tempdir().unwrap();
    let write = |name: &str, kubernetes: &str, csi: &str, extra: &str| {
        let path = work.path().join(name);
        std::fs::write(
            &path,
            format!(
                "[[product]]\nrelease = \"kubernetes@{kubernetes}\"\n[[product]]\n\
                 release = \"huawei-csi@{csi}\"\nservice = \"node\"\n[images]\nextra = [\"{extra}\"]\n"
            ),
        )
        .unwrap();
        path.to_str().unwrap().to_string()
    };
    let old = write("2024.toml", "1.28.3", "4.5.0", "busybox:1.36");
    let new = write("2025.toml", "1.29.0", "4.8.0", "busybox:1.37");
    let diff = ferry(&[
        "diff",
        "--site",
        &old,
        "--site",
        &new,
        "--cache-dir",
        "/nonexistent/ferry-cache",
    ])
    .success()
    .stdout();
    let rows = [
        (
            "added  ",
            "registry.k8s.io/kube-apiserver:v1.29.0",
            "kube-apiserver",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/kube-controller-manager:v1.29.0",
            "kube-controller-manager",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/kube-scheduler:v1.29.0",
            "kube-scheduler",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/kube-proxy:v1.29.0",
            "kube-proxy",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/etcd:3.5.10-0",
            "etcd",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/coredns/coredns:v1.11.1",
            "coredns",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/sig-storage/livenessprobe:v2.12.0",
            "livenessprobe",
            "registry",
        ),
        (
            "added  ",
            "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0",
            "csi-node-driver-registrar",
            "registry",
        ),
        (
            "added  ",
            "huawei-csi:4.8.0",
            "huawei-csi-driver",
            "vendor  ",
        ),
        ("added  ", "docker.io/library/busybox:1.37", "-", "registry"),
        (
            "removed",
            "registry.k8s.io/kube-apiserver:v1.28.3",
            "kube-apiserver",
            "registry",
        ),
        (
            "removed",
            "registry.k8s.io/kube-controller-manager:v1.28.3",
            "kube-controller-manager",
            "registry",
        ),
        (
            "removed",
            "registry.k8s.io/kube-scheduler:v1.28.3",
            "kube-scheduler",
            "registry",
        ),
        (
            "removed",
            "registry.k8s.io/kube-proxy:v1.28.3",
            "kube-proxy",
            "registry",
        ),
        (
            "removed",
            "registry.k8s.io/etcd:3.5.9-0",
            "etcd",
            "registry",
        ),
        (
            "removed",
            "registry.k8s.io/coredns/coredns:v1.10.1",
            "coredns",
            "registry",
        ),
        (
            "removed",
            "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0",
            "livenessprobe",
            "registry",
        ),
        (
            "removed",
            "k8s.gcr.io/sig-storage/csi-node-driver-registrar:v2.3.0",
            "csi-node-driver-registrar",
            "registry",
        ),
        (
            "removed",
            "huawei-csi:4.5.0",
            "huawei-csi-driver",
            "vendor  ",
        ),
        ("removed", "docker.io/library/busybox:1.36", "-", "registry"),
        ("kept   ", "registry.k8s.io/pause:3.9", "pause", "registry"),
    ];
    // The node's share of each release, each side on its own cluster's version; busybox compared too.
    let mut expected =
        format!("# {old} -> {new} on Kubernetes 1.28 -> 1.29: 10 added, 10 removed, 1 kept\n");
    for (change, image, container, source) in rows {
        expected.push_str(&format!(
            "{change}  {image:<60}  {container:<25}  {source}  -\n"
        ));
    }
    assert_eq!(diff, expected);
    let json = ferry(&[
        "diff",
        "kubernetes@1.28.3+huawei-csi@4.5.0",
        "kubernetes@1.29.0+huawei-csi@4.8.0",
        "--cache-dir",
        "/nonexistent/ferry-cache",
        "--json",
    ])
    .success()
    .json();
    assert_eq!(
        (&json["from_kubernetes"], &json["kubernetes"]),
        (&serde_json::json!("1.28"), &serde_json::json!("1.29"))
    );
    assert_eq!(json["kept"].as_array().unwrap().len(), 1, "{json}");
    let once = ferry(&["diff", "--site", &old]).fails_with(2);
    assert_eq!(
        once.stderr(),
        "error: diff takes FROM and TO, or --site twice (the site file running now, then the one to \
         upgrade to); 1 --site given\n"
    );
}

/// With several products whose charts have keys, `push --helm-values FILE` writes one file per product,
/// the catalog's name before FILE's extension, and names each.
#[test]
fn helm_values_of_several_products_go_to_one_file_each() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_csi_480(registry.addr(), 60_000);
    for (repository, tag) in [
        ("kube-proxy", "v1.28.3"),
        ("pause", "3.9"),
        ("coredns/coredns", "v1.10.1"),
    ] {
        push_image(
            registry.addr(),
            repository,
            tag,
            Format::DockerList,
            &PLATFORMS[..1],
            60_000,
        );
    }
    let work = tempfile::tempdir().unwrap();
    let catalog = work.path().join("proxy.toml");
    std::fs::write(
        &catalog,
        "catalog = \"proxy\"\nrelease = \"1.0.0\"\ntitle = \"A proxy chart\"\nmin_kubernetes = \"1.25\"\n\
         [[services]]\nname = \"proxy\"\nshort = \"proxy\"\n\
         [[images]]\ncontainer = \"proxy\"\nimage = \"registry.k8s.io/kube-proxy:v1.28.3\"\n\
         kubernetes = \"v1.25+\"\nkubernetes_range = { min = \"1.25\" }\nservices = [\"proxy\"]\n\
         source = \"registry\"\nhelm_value = \"images.proxy.image\"\n",
    )
    .unwrap();
    let catalog = catalog.to_str().unwrap();
    let mirror = format!("registry.k8s.io={}", registry.addr());
    let cache = work.path().join("cache");
    let bundle = |what: &[&str], output: &Path| {
        run(command()
            .args(["--catalog-file", catalog, "bundle"])
            .args(what)
            .args(["--mirror", &mirror, "--cache-dir", cache.to_str().unwrap()])
            .args(["-q", "-o"])
            .arg(output))
        .success();
    };
    let values = work.path().join("values.yaml");
    let push = |bundle: &Path| {
        run(command()
            .args(["--catalog-file", catalog, "push"])
            .arg(bundle)
            .args(["--to", "10.0.0.5:5000/site", "--dry-run", "--helm-values"])
            .arg(&values))
    };
    let out = work.path().join("out/");
    bundle(
        &[
            "huawei-csi@4.8.0",
            "proxy@1.0.0",
            "--k8s",
            "1.28",
            "--skip-vendor",
        ],
        &out,
    );
    let pushed =
        push(&out.join("huawei-csi-4.8.0+proxy-1.0.0-k8s1.25-up-linux-amd64-incomplete.tar"))
            .success();
    let written = |catalog: &str| work.path().join(format!("values-{catalog}.yaml"));
    // Then the note on index pins (tests/it/upstream_index.rs checks it).
    assert_eq!(
        pushed.stderr().split("note: a pod pinned").next().unwrap(),
        format!(
            "Helm values for huawei-csi: {}\nHelm values for proxy: {}\n",
            written("huawei-csi").display(),
            written("proxy").display()
        )
    );
    assert!(!values.exists());
    assert_eq!(
        std::fs::read_to_string(written("proxy")).unwrap(),
        "# Helm values for proxy 1.0.0: images from the private registry (written by ferry)\n\
         images:\n  \"proxy\":\n    \"image\": \"10.0.0.5:5000/site/kube-proxy:v1.28.3\"\n"
    );
    assert!(std::fs::read_to_string(written("huawei-csi"))
        .unwrap()
        .contains("    \"attacher\": \"10.0.0.5:5000/site/sig-storage/csi-attacher:v4.4.0\"\n"));
    // A bundle whose releases have no chart keys has no values to write, nor one without a release.
    let node = work.path().join("node.tar");
    bundle(&["kubernetes@1.28.3", "--service", "node"], &node);
    assert_eq!(
        push(&node).fails_with(2).stderr(),
        format!(
            "error: --helm-values {}: no release in the bundle (kubernetes@1.28.3) names Helm keys for \
             its images\n",
            values.display()
        )
    );
    let plain = work.path().join("plain.tar");
    bundle(&["--image", "registry.k8s.io/kube-proxy:v1.28.3"], &plain);
    assert_eq!(
        push(&plain).fails_with(2).stderr(),
        format!(
            "error: --helm-values {}: the bundle names no catalog release, so there are no Helm values \
             to write\n",
            values.display()
        )
    );
}

/// A site file that names a product with vendor images and no way to get them is told the file's keys,
/// not the flags it refuses beside it; nothing is fetched (no registry is started).
#[test]
fn vendor_images_without_a_source_are_asked_for_in_the_site_file() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("plant7.toml");
    std::fs::write(
        &site,
        "kubernetes = [\"1.28\"]\n[[product]]\nrelease = \"huawei-csi@4.8.0\"\n",
    )
    .unwrap();
    let cache = dir.path().join("cache");
    let out = format!("{}/", dir.path().display());
    let refused = ferry(&[
        "bundle",
        "--site",
        site.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
        "-o",
        &out,
    ])
    .fails_with(2);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: 4 image(s) come only from the vendor's release package, not from a public registry:\n  \
             docker.io/library/storage-backend-controller:4.8.0\n  \
             docker.io/library/storage-backend-sidecar:4.8.0\n  \
             docker.io/library/huawei-csi:4.8.0\n  \
             docker.io/library/huawei-csi-extender:4.8.0\n\
             supply them under [fetch] in {} with vendor_dirs = [\"DIR\"] (the directory holding the \
             package's image tarballs), or vendor_registry = \"HOST/PREFIX\" (a registry where they were \
             pushed), or leave them out with skip_vendor = true; or give --vendor-dir DIR\n",
            site.display()
        )
    );
}
