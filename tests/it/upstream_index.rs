//! Pods pinned to an image's upstream index digest (`image@sha256:<index>`): `--platform all` carries that
//! index byte for byte (attestation manifests too), so push and serve answer it under the same digest;
//! with fewer platforms, push and inspect say such pins will not resolve and what to pin instead.

use sha2::{Digest as _, Sha256};

use crate::deliver::load;
use crate::ferry::{command, run, Run};
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{push_image_with_attestation, request, Seeded, OCI_INDEX};
use crate::serve::Served;
use crate::services::{require, Containerd, Podman, Registry};

const IMAGE: &str = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0";
const REPOSITORY: &str = "sig-storage/livenessprobe";

/// An upstream registry holding IMAGE for linux/amd64 and linux/arm64 with an SBOM attestation.
struct Upstream {
    registry: Registry,
    seeded: Seeded,
    work: tempfile::TempDir,
}

impl Upstream {
    fn start() -> Option<Upstream> {
        let registry = require(Registry::plain())?;
        let seeded = push_image_with_attestation(
            registry.addr(),
            REPOSITORY,
            "v2.12.0",
            &["linux/amd64", "linux/arm64"],
            TEST_IMAGE_SIZE,
        );
        Some(Upstream {
            registry,
            seeded,
            work: tempfile::tempdir().unwrap(),
        })
    }

    fn path(&self, name: &str) -> String {
        self.work.path().join(name).to_str().unwrap().to_string()
    }

    /// `ferry bundle --image IMAGE --platform PLATFORMS -o NAME EXTRA`.
    fn bundle(&self, platforms: &str, name: &str, extra: &[&str]) -> Run {
        run(command()
            .args([
                "bundle",
                "--image",
                IMAGE,
                "--platform",
                platforms,
                "--mirror",
                &format!("registry.k8s.io={}", self.registry.addr()),
                "--cache-dir",
                &self.path("cache"),
                "-q",
                "-o",
                &self.path(name),
            ])
            .args(extra))
        .success()
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// GET a manifest from a plain-HTTP registry at `addr`, accepting any kind; (status, body's digest).
fn manifest(addr: &str, repository: &str, reference: &str) -> (u16, String) {
    let accept = format!(
        "{OCI_INDEX}, application/vnd.oci.image.manifest.v1+json, {}, {}",
        crate::seed::DOCKER_LIST,
        crate::seed::DOCKER_MANIFEST
    );
    let (status, _, body) = request(
        addr,
        "GET",
        &format!("/v2/{repository}/manifests/{reference}"),
        &[("Accept", &accept)],
        b"",
    );
    (status, sha256(&body))
}

#[test]
fn platform_all_pushes_and_serves_the_upstream_index_unchanged() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let bundle = upstream.path("all.tar");
    let lock = upstream.path("all.lock");
    upstream.bundle("all", "all.tar", &["--lock", &lock]);
    let (top, seeded) = (&upstream.seeded.top_digest, &upstream.seeded.manifests);
    let verified = run(command().args(["verify", &bundle])).success();
    let mut said = format!("checksum: matches {bundle}.sha256\n");
    for (platform, digest) in seeded {
        said.push_str(&format!("ok    {IMAGE}  {digest}  {platform}\n"));
    }
    said.push_str(
        "intact: 1 images for linux/amd64, linux/arm64 (3 manifests), 12 blobs, 525.31 kB; every byte \
         checked\n",
    );
    assert_eq!(verified.stdout(), said);
    // A site file says the same with platforms = ["all"]: the same bundle, byte for byte.
    let site_file = upstream.path("site.toml");
    std::fs::write(
        &site_file,
        format!(
            "platforms = [\"all\"]\n[images]\nextra = [\"{IMAGE}\"]\n[fetch]\nmirrors = {{ \"registry.k8s.io\" = \"{}\" }}\n",
            upstream.registry.addr()
        ),
    )
    .unwrap();
    let from_site = upstream.path("from-site.tar");
    run(command().args([
        "bundle",
        "--site",
        &site_file,
        "--cache-dir",
        &upstream.path("cache"),
        "-q",
        "-o",
        &from_site,
    ]))
    .success();
    assert!(std::fs::read(&from_site).unwrap() == std::fs::read(&bundle).unwrap());
    let inspected = run(command().args(["inspect", &bundle])).success();
    assert!(
        inspected.stdout().ends_with(
            "platform:   linux/amd64, linux/arm64 (each image's upstream index whole, attestations \
             too)\nmade by:    ferry 0.1.0\nskipped:    nothing\n"
        ),
        "{}",
        inspected.stdout()
    );
    let listed = crate::multiarch::inspected(std::path::Path::new(&bundle));
    let expected: Vec<(String, String, String)> = seeded
        .iter()
        .map(|(platform, digest)| (IMAGE.to_string(), platform.clone(), digest.clone()))
        .collect();
    assert_eq!(listed, expected);

    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let to = format!("{}/site", private.addr());
    let pushed =
        run(command().args(["push", &bundle, "--to", &to, "-q", "--lock", &lock])).success();
    // The tag names the upstream index, the lock pins it, and no note says a pin will not resolve.
    assert_eq!(
        pushed.stdout(),
        format!("{IMAGE} -> {to}/{REPOSITORY}:v2.12.0  {top}\n")
    );
    assert_eq!(
        pushed.stderr(),
        format!("lock: every image matches {lock} (1 images)\n")
    );
    let site = format!("site/{REPOSITORY}");
    assert_eq!(
        manifest(private.addr(), &site, "v2.12.0"),
        (200, top.clone())
    );
    assert_eq!(manifest(private.addr(), &site, top), (200, top.clone()));
    for (_, digest) in seeded {
        assert_eq!(
            manifest(private.addr(), &site, digest),
            (200, digest.clone())
        );
    }

    let served = Served::start(&[&bundle], upstream.work.path().join("serve.log"));
    assert_eq!(
        manifest(&served.addr, REPOSITORY, "v2.12.0"),
        (200, top.clone())
    );
    assert_eq!(manifest(&served.addr, REPOSITORY, top), (200, top.clone()));
    for (_, digest) in seeded {
        assert_eq!(
            manifest(&served.addr, REPOSITORY, digest),
            (200, digest.clone())
        );
    }

    // containerd takes the bundle as it is, upstream index and attestation included.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    containerd.import_all_platforms(&bundle);
    let images = String::from_utf8_lossy(&containerd.ctr(&["images", "ls"]).stdout).into_owned();
    assert!(images.contains(top.as_str()), "{images}");
    // ferry load on an amd64 node: the amd64 image under its name, once.
    let Some(fresh) = require(Containerd::start()) else {
        return;
    };
    let loaded = load(&bundle, "containerd", fresh.socket().to_str().unwrap()).success();
    assert_eq!(
        loaded.stdout(),
        format!(
            "loaded {IMAGE}  {}  linux/amd64  into Containerd\n",
            upstream.seeded.manifest_for("linux/amd64")
        )
    );
    // podman loads the file itself through manifest.json: the amd64 image, not the attestation.
    let Some(podman) = require(Podman::new()) else {
        return;
    };
    podman.load_file(&bundle);
    let inspect = podman.podman(&[
        "image",
        "inspect",
        "--format",
        "{{.Os}}/{{.Architecture}}",
        IMAGE,
    ]);
    assert_eq!(String::from_utf8_lossy(&inspect.stdout), "linux/amd64\n");
}

#[test]
fn fewer_platforms_say_that_pins_to_the_upstream_index_will_not_resolve() {
    let Some(upstream) = Upstream::start() else {
        return;
    };
    let bundle = upstream.path("amd64.tar");
    upstream.bundle("linux/amd64", "amd64.tar", &[]);
    let (index, amd64) = (
        &upstream.seeded.top_digest,
        upstream.seeded.manifest_for("linux/amd64"),
    );
    let note = |place: &str, name: &str| {
        format!(
            "note: a pod pinned to the upstream index of an image below will not pull {place}: this \
             bundle carries linux/amd64 only, not the indexes (`--platform all` carries them whole); pin \
             a platform's manifest instead:\n  {IMAGE} (upstream index {index})\n    linux/amd64  \
             {name}@{amd64}\n"
        )
    };
    let inspected = run(command().args(["inspect", &bundle])).success();
    let said = note(
        "after push or from ferry serve",
        "registry.k8s.io/sig-storage/livenessprobe",
    );
    assert!(
        inspected
            .stdout()
            .ends_with(&format!("skipped:    nothing\n{said}")),
        "{}",
        inspected.stdout()
    );
    let listed = run(command().args(["inspect", &bundle, "--json"]))
        .success()
        .json();
    assert_eq!(
        listed["unresolvable_index_pins"],
        serde_json::json!([{"image": IMAGE, "index": index,
            "pin_instead": [{"platform": "linux/amd64", "manifest": amd64}]}])
    );

    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let to = format!("{}/site", private.addr());
    let pushed = run(command().args(["push", &bundle, "--to", &to])).success();
    let said = note(&format!("from {to}"), &format!("{to}/{REPOSITORY}"));
    assert!(pushed.stderr().contains(&said), "{}", pushed.stderr());
    // What the note says: the index pin finds nothing, the platform's manifest is there.
    assert_eq!(
        manifest(private.addr(), &format!("site/{REPOSITORY}"), index).0,
        404
    );
    assert_eq!(
        manifest(private.addr(), &format!("site/{REPOSITORY}"), amd64),
        (200, amd64.to_string())
    );
}

#[test]
fn platform_all_stands_alone() {
    let work = tempfile::tempdir().unwrap();
    let refused = run(command()
        .args(["bundle", "--image", IMAGE, "--platform", "linux/arm64,all"])
        .current_dir(work.path()))
    .fails_with(2);
    assert_eq!(
        refused.stderr(),
        "error: --platform all carries every platform each image has; name no other platform beside it\n"
    );
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
}

/// An index of indexes is not what `--platform all` can carry byte for byte with what it lists: refused,
/// naming the image and the nested index.
#[test]
fn platform_all_refuses_an_index_of_indexes() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let inner = crate::seed::push_image(
        registry.addr(),
        REPOSITORY,
        "inner",
        crate::seed::Format::OciIndex,
        &["linux/amd64"],
        50_000,
    );
    let outer = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_INDEX, "digest": inner.top_digest, "size": 0}]}),
    )
    .unwrap();
    crate::seed::push_manifest(registry.addr(), REPOSITORY, "v2.12.0", OCI_INDEX, &outer);
    let work = tempfile::tempdir().unwrap();
    let refused = run(command()
        .args(["bundle", "--image", IMAGE, "--platform", "all", "-q"])
        .args(["--mirror", &format!("registry.k8s.io={}", registry.addr())])
        .args(["--cache-dir", work.path().join("cache").to_str().unwrap()])
        .current_dir(work.path()))
    .fails_with(1);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: {IMAGE}: its index lists another index ({}); --platform all carries an index of \
             manifests, not of indexes\n",
            inner.top_digest
        )
    );
}
