//! Upgrades carry only what changed. A delta of Huawei CSI 4.5.0 → 4.8.0 (Kubernetes 1.28) and one of
//! Kubernetes 1.28.3 → 1.28.4, each built against the earlier bundle: it holds exactly the blobs the base
//! lacks (and every manifest and config), merges into the bundle a direct build writes, pushes into the
//! registry that holds the pushed base with every upstream digest, loads into containerd, and is served.
//! A tampered base and a registry without the base are refused by name, before anything is pushed. A
//! bundle of several products (Kubernetes and CSI, as a site's) makes a delta named after both sides.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::bundle::sha256sum_check;
use crate::deliver::skopeo_digest;
use crate::ferry::{command, ferry, run, Run};
use crate::kubernetes::KUBEADM_1283;
use crate::pull::TEST_IMAGE_SIZE;
use crate::seed::{
    http, push_image, push_image_as, seed_csi_480, vendor_dir_480, vendor_tarball, Format, Seeded,
    PLATFORMS,
};
use crate::seeded::registry_with_livenessprobe;
use crate::serve::Served;
use crate::services::{require, Containerd, Registry};

/// The public images of Huawei CSI 4.5.0 for Kubernetes 1.28, under k8s.gcr.io.
const PUBLIC_450: [(&str, &str); 7] = [
    ("sig-storage/livenessprobe", "v2.5.0"),
    ("sig-storage/csi-resizer", "v1.4.0"),
    ("sig-storage/csi-node-driver-registrar", "v2.3.0"),
    ("sig-storage/csi-snapshotter", "v4.2.1"),
    ("sig-storage/snapshot-controller", "v4.2.1"),
    ("sig-storage/csi-provisioner", "v3.0.0"),
    ("sig-storage/csi-attacher", "v3.4.0"),
];
const VENDOR_450: [&str; 4] = [
    "storage-backend-controller:4.5.0",
    "storage-backend-sidecar:4.5.0",
    "huawei-csi:4.5.0",
    "huawei-csi-extender:4.5.0",
];

/// A connected side (the registry upstream, a cache) and the files it writes.
struct Upgrade {
    _registry: Registry,
    mirrors: Vec<String>,
    /// Upstream reference → what was seeded.
    seeded: BTreeMap<String, Seeded>,
    work: tempfile::TempDir,
}

impl Upgrade {
    fn path(&self, name: &str) -> PathBuf {
        self.work.path().join(name)
    }

    fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_string()
    }

    /// `ferry bundle RELEASE` with the test's mirrors and cache, and `extra`.
    fn bundle(&self, release: &[&str], extra: &[&str]) -> Run {
        let cache = self.arg("cache");
        run(command()
            .arg("bundle")
            .args(release)
            .args(&self.mirrors)
            .args(["--cache-dir", &cache, "-q"])
            .args(extra))
    }

    /// `ferry bundle RELEASE EXTRA --since BASE -o DIR/`: a delta against `base`, written into `dir`.
    fn delta(&self, release: &[&str], extra: &[&str], base: &Path, dir: &Path) -> Run {
        let (base, into) = (base.to_str().unwrap(), format!("{}/", dir.display()));
        self.bundle(release, &[extra, &["--since", base, "-o", &into]].concat())
    }

    /// The upstream manifest digest of `reference` for linux/amd64.
    fn upstream(&self, reference: &str) -> &str {
        self.seeded[reference].manifest_for("linux/amd64")
    }
}

/// `ferry COMMAND PATHS... ARGS...`.
fn ferry_on(command_name: &str, paths: &[&Path], args: &[&str]) -> Run {
    run(command().arg(command_name).args(paths).args(args))
}

/// What `ferry diff FROM TO --json` says with the test's cache.
fn diff_json(site: &Upgrade, releases: &[&str]) -> Value {
    let cache = site.arg("cache");
    ferry_on(
        "diff",
        &[],
        &[releases, &["--cache-dir", &cache, "--json"]].concat(),
    )
    .success()
    .json()
}

fn inspect(path: &Path) -> Value {
    ferry(&["inspect", path.to_str().unwrap(), "--json"])
        .success()
        .json()
}

/// Every blob a bundle holds.
fn blobs(inspected: &Value) -> BTreeSet<String> {
    inspected["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap().to_string())
        .collect()
}

/// The manifests and configs of a bundle's images (a config is the first blob an image names).
fn manifests_and_configs(inspected: &Value) -> BTreeSet<String> {
    inspected["images"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| [&i["manifest"], &i["blobs"][0]])
        .map(|d| d.as_str().unwrap().to_string())
        .collect()
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        std::fs::read(path).unwrap(),
    ))
}

/// What the delta must hold: every blob of the full bundle the base lacks, and every manifest and config.
fn assert_holds_what_the_base_lacks(delta: &Path, full: &Path, base: &Path) {
    let full = inspect(full);
    let in_base = blobs(&inspect(base));
    let mut expected: BTreeSet<String> = blobs(&full)
        .into_iter()
        .filter(|d| !in_base.contains(d))
        .collect();
    expected.extend(manifests_and_configs(&full));
    assert_eq!(blobs(&inspect(delta)), expected);
}

/// The images of the 4.8.0 bundle with their manifest digests, as `ferry inspect` lists them.
fn manifests_of(inspected: &Value) -> Vec<(String, String)> {
    inspected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["name"].as_str().unwrap().to_string(),
                i["manifest"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The error of a push of `delta` to `to`, where its base was never pushed, whole, for the blob it names:
/// the first image's first blob the base should supply. Before it, the base's repositories holding the
/// blob (up to four, as the delta names them) were tried.
fn refused_for_a_base_blob(stderr: &str, to: &str, base: &Path, base_sha: &str) -> String {
    let digest = stderr
        .strip_prefix("error: blob ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stderr}"));
    let image = stderr
        .split(" of ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let (host, prefix) = to.split_once('/').unwrap();
    let repository = |name: &str| {
        let path = name.split_once('/').unwrap().1.rsplit_once(':').unwrap().0;
        format!("{prefix}/{}", path.trim_start_matches("library/"))
    };
    let own = repository(image);
    let tried: Vec<String> = inspect(base)["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["blobs"].as_array().unwrap().iter().any(|b| b == digest))
        .take(4)
        .map(|i| repository(i["name"].as_str().unwrap()))
        .filter(|r| *r != own)
        .collect();
    assert!(blobs(&inspect(base)).contains(digest), "a blob of the base");
    format!(
        "error: blob {digest} of {image} is expected from base {} (sha256 {base_sha}), but {host} holds \
         it neither in {own} nor in the base's repositories {}; push that base there first, or give it \
         with --base: no manifest was pushed\n",
        base.file_name().unwrap().to_str().unwrap(),
        tried.join(", ")
    )
}

/// Pushes each (repository, tag) as a two-platform Docker list whose own layer is that version's, as
/// `upstream/repository:tag` in `seeded`.
fn seed_versions(
    addr: &str,
    upstream: &str,
    images: &[(&str, &str)],
    seeded: &mut BTreeMap<String, Seeded>,
) {
    for (repository, tag) in images {
        let image = push_image_as(
            addr,
            repository,
            tag,
            &format!("{repository}:{tag}"),
            Format::DockerList,
            &PLATFORMS[..2],
            TEST_IMAGE_SIZE,
        );
        seeded.insert(format!("{upstream}/{repository}:{tag}"), image);
    }
}

#[test]
fn csi_450_to_480_carries_only_what_changed_and_rebuilds_the_direct_bundle() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let addr = registry.addr().to_string();
    let mut seeded: BTreeMap<String, Seeded> =
        seed_csi_480(&addr, TEST_IMAGE_SIZE).into_iter().collect();
    seed_versions(&addr, "k8s.gcr.io", &PUBLIC_450, &mut seeded);
    let work = tempfile::tempdir().unwrap();
    let (vendor_450, vendor_480) = (
        work.path().join("vendor-450"),
        work.path().join("vendor-480"),
    );
    std::fs::create_dir(&vendor_450).unwrap();
    std::fs::create_dir(&vendor_480).unwrap();
    for name_tag in VENDOR_450 {
        let file = vendor_450.join(format!("{}.tar", name_tag.replace(':', "-")));
        vendor_tarball(&file, name_tag, TEST_IMAGE_SIZE);
    }
    vendor_dir_480(&vendor_480, TEST_IMAGE_SIZE);
    let site = Upgrade {
        mirrors: vec![
            "--mirror".into(),
            format!("registry.k8s.io={addr}"),
            "--mirror".into(),
            format!("k8s.gcr.io={addr}"),
        ],
        _registry: registry,
        seeded,
        work,
    };
    let (v450, v480) = (
        ["--vendor-dir", vendor_450.to_str().unwrap()],
        ["--vendor-dir", vendor_480.to_str().unwrap()],
    );
    let release_450 = ["huawei-csi@4.5.0", "--k8s", "1.28"];
    let release_480 = ["huawei-csi@4.8.0", "--k8s", "1.28"];
    let out = site.path("out");
    std::fs::create_dir(&out).unwrap();
    let out_arg = format!("{}/", out.display());
    site.bundle(&release_450, &[&v450[..], &["-o", &out_arg]].concat())
        .success();
    site.bundle(&release_480, &[&v480[..], &["-o", &out_arg]].concat())
        .success();
    let base = out.join("huawei-csi-4.5.0-k8s1.17-up-linux-amd64.tar");
    let full = out.join("huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar");
    let base_sha = sha256_of(&base);

    // The delta, against the base itself, named for what it is.
    let deltas = site.path("deltas");
    let built = site.delta(&release_480, &v480, &base, &deltas).success();
    let delta =
        deltas.join("huawei-csi-4.8.0-k8s1.20-up-linux-amd64-delta-from-huawei-csi-4.5.0.tar");
    let full_sha = sha256_of(&full);
    let delta_sha = sha256_of(&delta);
    let in_delta = blobs(&inspect(&delta)).len();
    let left = left_to_base(&inspect(&full), &inspect(&base));
    assert_eq!(left.0, 2, "the shared base layers, public and vendor");
    assert_eq!(
        built.stdout(),
        format!(
            "{}  11 image(s), {}, sha256 {delta_sha}\n  \
             a delta of huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar ({}, sha256 {full_sha}): {in_delta} \
             of its blobs inside\n  \
             left to base huawei-csi-4.5.0-k8s1.17-up-linux-amd64.tar (sha256 {base_sha}): 2 blob(s), {}\n",
            delta.display(),
            human(size_of(&delta)),
            human(size_of(&full)),
            human(left.1),
        )
    );
    sha256sum_check(
        &deltas,
        &format!("{}.sha256", delta.file_name().unwrap().to_str().unwrap()),
    );
    assert_holds_what_the_base_lacks(&delta, &full, &base);

    // The base described by `ferry inspect --json` (kept on the connected side) gives the same delta.
    let described = site.path("base.json");
    std::fs::write(
        &described,
        run(command().args(["inspect", base.to_str().unwrap(), "--json"]))
            .success()
            .output
            .stdout,
    )
    .unwrap();
    let from_description = site.path("from-description.tar");
    site.bundle(
        &release_480,
        &[
            &v480[..],
            &[
                "--since",
                described.to_str().unwrap(),
                "-o",
                from_description.to_str().unwrap(),
            ],
        ]
        .concat(),
    )
    .success();
    assert_eq!(sha256_of(&from_description), delta_sha, "the same bytes");

    // Sizes, for the README: the delta against the full bundle and against what `ferry diff` says is new.
    let diff = diff_json(
        &site,
        &["huawei-csi@4.5.0", "huawei-csi@4.8.0", "--k8s", "1.28"],
    );
    let delta_bytes = size_of(&delta);
    let (inside, kept, rest) = accounted_by_diff(&delta, &diff, &inspect(&full), 0);
    eprintln!(
        "csi 4.5.0 -> 4.8.0: full {} B, delta {delta_bytes} B: blobs {inside} B (diff's new {} B, kept \
         manifests and configs {kept} B), tar headers and documents {rest} B; diff's estimate {} B",
        size_of(&full),
        diff["carry"]["bytes"],
        diff["carry"]["delta_bytes"]
    );

    // The far side: alone the delta checks what it holds and says what it expects from where.
    let alone = ferry_on("verify", &[&delta], &[]).success();
    assert!(alone.stdout().ends_with(&format!(
        "delta: of huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar (sha256 {full_sha}, {})\n\
         base:  huawei-csi-4.5.0-k8s1.17-up-linux-amd64.tar (sha256 {base_sha}): 2 blob(s), {}, \
         expected, not checked (its file was not given)\n\
         intact: 11 images, {in_delta} blobs, {}; every byte checked; 2 blob(s) it expects from its \
         bases were not (give the bases with --base)\n",
        human(size_of(&full)),
        human(left.1),
        human(delta_bytes),
    )), "{}", alone.stdout());
    let with_base = ["--base", base.to_str().unwrap()];
    let joined = ferry_on(
        "verify",
        &[&delta],
        &[&with_base[..], &["--k8s", "1.28"]].concat(),
    )
    .success();
    assert!(
        joined.stdout().ends_with(&format!(
            "from {}, checked\nintact: 11 images, {} blobs (2 from its bases), {}; every byte checked\n",
            base.display(),
            in_delta + 2,
            human(delta_bytes)
        )),
        "{}",
        joined.stdout()
    );

    // A tampered base is refused, by its file name.
    let tampered = site.path("tampered.tar");
    let mut bytes = std::fs::read(&base).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&tampered, bytes).unwrap();
    let refused =
        ferry_on("verify", &[&delta], &["--base", tampered.to_str().unwrap()]).fails_with(1);
    assert!(
        refused.stdout().contains(&format!(
        "problem: {} is not a base of this delta: its sha256 is {}, and the delta was made from \
         huawei-csi-4.5.0-k8s1.17-up-linux-amd64.tar (sha256 {base_sha})\n",
        tampered.display(),
        sha256_of(&tampered)
    )),
        "{}",
        refused.stdout()
    );

    // Merge copies a blob the delta takes from the base without hashing it first; changed in place, the
    // output hashes otherwise, and merge verifies every byte to name the file. Nothing is written.
    let taken = blobs(&inspect(&full))
        .intersection(&blobs(&inspect(&base)))
        .find(|digest| !blobs(&inspect(&delta)).contains(*digest))
        .cloned()
        .unwrap();
    let header = format!("blobs/sha256/{}", taken.trim_start_matches("sha256:"));
    let mut bytes = std::fs::read(&base).unwrap();
    let at = (0..bytes.len())
        .step_by(512)
        .find(|&at| bytes[at..].starts_with(header.as_bytes()))
        .unwrap();
    bytes[at + 512 + 100] ^= 0x01;
    let changed = site.path("changed.tar");
    std::fs::write(&changed, bytes).unwrap();
    let not_merged = site.path("not-merged.tar");
    let refused = ferry_on(
        "merge",
        &[&changed, &delta],
        &["-o", not_merged.to_str().unwrap(), "-q"],
    )
    .fails_with(1);
    let merge_line = refused
        .stderr()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        merge_line.starts_with("merge: the bundle copied hashes to sha256:")
            && merge_line.ends_with(&format!(
                ", not to the sha256:{full_sha} the delta names; verifying the delta and its bases \
                 byte for byte to say what is wrong"
            )),
        "{}",
        refused.stderr()
    );
    assert!(
        refused.stdout().contains(&format!(
            "problem: {} is not a base of this delta: its sha256 is {}",
            changed.display(),
            sha256_of(&changed)
        )),
        "{}",
        refused.stdout()
    );
    assert!(!not_merged.exists());
    assert_eq!(
        std::fs::read_dir(site.path(""))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("not-merged")
            })
            .count(),
        0
    );

    // A delta crafted to name its full bundle by a path, not a file name, writes nothing anywhere.
    let escape = site.path("escape");
    let crafted = site.path("crafted.tar");
    let mut rebuilt = tar::Builder::new(Vec::new());
    let delta_bytes = std::fs::read(&delta).unwrap();
    let mut archive = tar::Archive::new(delta_bytes.as_slice());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
        if name == "ferry-delta.json" {
            let mut record: Value = serde_json::from_slice(&data).unwrap();
            record["bundle"]["name"] = Value::from(format!("{}/pwned.tar", escape.display()));
            data = serde_json::to_vec(&record).unwrap();
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        header.set_cksum();
        rebuilt.append(&header, data.as_slice()).unwrap();
    }
    std::fs::write(&crafted, rebuilt.into_inner().unwrap()).unwrap();
    let into = site.path("into");
    let refused = ferry_on(
        "merge",
        &[&base, &crafted],
        &["-o", &format!("{}/", into.display()), "-q"],
    )
    .fails_with(1);
    assert_eq!(
        refused.stderr(),
        format!(
            "error: {}: the delta names its full bundle \"{}/pwned.tar\", which is not a file name; \
             give the output with -o FILE\n",
            crafted.display(),
            escape.display()
        )
    );
    assert!(!escape.exists());

    // Nor is a delta built against it without its `.sha256`: the base is then read and verified whole
    // first, and refused by name, and nothing is written. With the `.sha256` written with the base beside
    // it, the base is described from its tar headers and documents: a delta takes no byte from its base,
    // so the same change in a layer changes nothing the delta says, and it is the delta built against the
    // intact base, byte for byte (its sha256 names the far side's intact copy).
    let refused_deltas = site.path("refused-deltas");
    let last_error_of_delta_against = |changed_base: &Path| {
        let refused = site
            .delta(&release_480, &v480, changed_base, &refused_deltas)
            .fails_with(1);
        assert_eq!(
            std::fs::read_dir(&refused_deltas).map_or(0, |d| d.count()),
            0
        );
        refused
            .stderr()
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        last_error_of_delta_against(&changed),
        format!("error: {} is damaged or incomplete", changed.display()),
    );
    let vouched = site.path("vouched");
    std::fs::create_dir_all(&vouched).unwrap();
    let vouched_base = vouched.join(base.file_name().unwrap());
    std::fs::copy(&changed, &vouched_base).unwrap();
    let sums = vouched.join(format!(
        "{}.sha256",
        base.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::copy(format!("{}.sha256", base.display()), &sums).unwrap();
    let vouched_deltas = site.path("vouched-deltas");
    site.delta(&release_480, &v480, &vouched_base, &vouched_deltas)
        .success();
    assert!(
        std::fs::read(vouched_deltas.join(delta.file_name().unwrap())).unwrap()
            == std::fs::read(&delta).unwrap()
    );

    // Merged with its base it is the bundle a direct build wrote, by name and by every byte.
    let merged_dir = site.path("merged");
    let into_dir = format!("{}/", merged_dir.display());
    let merged = ferry_on("merge", &[&base, &delta], &["-o", &into_dir, "-q"]).success();
    let merged_path = merged_dir.join("huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar");
    assert_eq!(
        merged.stdout(),
        format!(
            "{}  11 image(s), {}, sha256 {full_sha}, as the delta names it\n",
            merged_path.display(),
            human(size_of(&full))
        )
    );
    assert_eq!(sha256_of(&merged_path), full_sha);
    sha256sum_check(
        &merged_dir,
        "huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar.sha256",
    );

    // Several products in one bundle, as a site file makes: the delta is named after the full bundle's
    // name (products joined by +) and from the base's products, and merges into the direct build.
    let kubernetes: Vec<(&str, &str)> = KUBEADM_1283.into_iter().chain(KUBERNETES_1284).collect();
    seed_versions(&addr, "registry.k8s.io", &kubernetes, &mut BTreeMap::new());
    let site_old = ["kubernetes@1.28.3", "huawei-csi@4.5.0"];
    let site_new = ["kubernetes@1.28.4", "huawei-csi@4.8.0"];
    let sites = site.path("sites");
    let into_sites = format!("{}/", sites.display());
    site.bundle(&site_old, &[&v450[..], &["-o", &into_sites]].concat())
        .success();
    site.bundle(&site_new, &[&v480[..], &["-o", &into_sites]].concat())
        .success();
    let named = |prefix: &str| {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&sites)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| {
                let name = path.file_name().unwrap().to_str().unwrap();
                name.starts_with(prefix) && name.ends_with(".tar")
            })
            .collect();
        assert_eq!(found.len(), 1, "{found:?}");
        found.remove(0)
    };
    let (site_base, site_full) = (
        named("kubernetes-1.28.3+huawei-csi-4.5.0-k8s1.28-"),
        named("kubernetes-1.28.4+huawei-csi-4.8.0-k8s1.28-"),
    );
    let site_deltas = site.path("site-deltas");
    site.delta(&site_new, &v480, &site_base, &site_deltas)
        .success();
    let site_delta = site_deltas.join(format!(
        "{}-delta-from-kubernetes-1.28.3+huawei-csi-4.5.0.tar",
        site_full
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .strip_suffix(".tar")
            .unwrap()
    ));
    assert!(site_delta.is_file(), "{}", site_delta.display());
    assert_holds_what_the_base_lacks(&site_delta, &site_full, &site_base);
    let site_merged = site.path("site-merged.tar");
    ferry_on(
        "merge",
        &[&site_base, &site_delta],
        &["-o", site_merged.to_str().unwrap(), "-q"],
    )
    .success();
    assert_eq!(sha256_of(&site_merged), sha256_of(&site_full));

    // Pushed into the registry that holds the pushed base: every image with its upstream digest.
    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let to = format!("{}/csi", private.addr());
    ferry_on("push", &[&base], &["--to", &to, "-q"]).success();
    let pushed = ferry_on("push", &[&delta], &["--to", &to, "-q"]).success();
    let listed = manifests_of(&inspect(&full));
    assert_eq!(
        pushed.stdout().lines().count(),
        listed.len(),
        "{}",
        pushed.stdout()
    );
    for (name, manifest) in &listed {
        let target = match name.strip_prefix("docker.io/library/") {
            Some(vendor) => format!("{to}/{vendor}"),
            None => name.replace("registry.k8s.io", &to),
        };
        assert_eq!(&skopeo_digest(&private, &target), manifest, "{target}");
        if let Some(seeded) = site.seeded.get(name) {
            assert_eq!(
                manifest,
                seeded.manifest_for("linux/amd64"),
                "{name} upstream"
            );
        }
    }
    let _ = site.upstream("registry.k8s.io/sig-storage/csi-attacher:v4.4.0");

    // Into a registry path without the base: refused before any manifest is pushed, naming the blob.
    let elsewhere = format!("{}/other", private.addr());
    let missing = ferry_on("push", &[&delta], &["--to", &elsewhere, "-q"]).fails_with(1);
    assert_eq!(
        missing.stderr(),
        refused_for_a_base_blob(&missing.stderr(), &elsewhere, &base, &base_sha)
    );
    let (_, _, catalog) = http(private.addr(), "GET", "/v2/_catalog", "", b"");
    let catalog: Value = serde_json::from_slice(&catalog).unwrap();
    assert!(
        catalog["repositories"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.as_str().unwrap().starts_with("csi/")),
        "nothing pushed under other/: {catalog}"
    );

    // containerd loads the merged bundle, and the delta with its base.
    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    let into_containerd = ["--runtime", "containerd", "--address", &socket];
    let loaded = ferry_on("load", &[&merged_path], &into_containerd).success();
    assert_eq!(loaded.stdout().lines().count(), 11, "{}", loaded.stdout());
    let fed = ferry_on(
        "load",
        &[&delta],
        &[&with_base[..], &into_containerd, &["--namespace", "delta"]].concat(),
    )
    .success();
    assert_eq!(fed.stdout().lines().count(), 11, "{}", fed.stdout());
    let without = ferry_on("load", &[&delta], &into_containerd).fails_with(2);
    assert_eq!(
        without.stderr(),
        format!(
            "error: {} is a delta: load needs the base(s) it was made from as well, \
             huawei-csi-4.5.0-k8s1.17-up-linux-amd64.tar (sha256 {base_sha}): give each with --base\n",
            delta.display()
        )
    );

    // With --base, the base's blobs are served but not its images.
    let configured = ferry_on(
        "serve",
        &[&delta],
        &[
            &with_base[..],
            &["--listen", "127.0.0.1:5000", "--print-config", "docker"],
        ]
        .concat(),
    )
    .success();
    let notes = configured.stderr();
    let pulls: Vec<&str> = notes
        .lines()
        .filter_map(|line| line.strip_prefix("  docker pull 127.0.0.1:5000/"))
        .collect();
    assert_eq!(
        pulls,
        [
            "sig-storage/csi-attacher:v4.4.0",
            "sig-storage/csi-node-driver-registrar:v2.9.0",
            "sig-storage/csi-provisioner:v3.6.0",
            "sig-storage/csi-resizer:v1.9.0",
            "sig-storage/csi-snapshotter:v6.3.0",
            "sig-storage/livenessprobe:v2.12.0",
            "sig-storage/snapshot-controller:v6.3.0"
        ]
    );
    // Served from the delta and its base, both releases: a client pulls the new images by their digests.
    let served = Served::start(
        &[delta.to_str().unwrap(), base.to_str().unwrap()],
        site.path("serve.log"),
    );
    let attacher = site
        .upstream("registry.k8s.io/sig-storage/csi-attacher:v4.4.0")
        .to_string();
    let get = |path: &str| http(&served.addr, "GET", path, "", b"");
    let (status, _, manifest) = get(&format!(
        "/v2/sig-storage/csi-attacher/manifests/{attacher}"
    ));
    assert_eq!(status, 200);
    // Its first layer is the base layer every image shares: the base's file serves it.
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let shared = manifest["layers"][0]["digest"].as_str().unwrap();
    assert!(blobs(&inspect(&base)).contains(shared) && !blobs(&inspect(&delta)).contains(shared));
    let (status, _, layer) = get(&format!("/v2/sig-storage/csi-attacher/blobs/{shared}"));
    let (old, _, _) = get("/v2/sig-storage/csi-attacher/manifests/v3.4.0?ns=k8s.gcr.io");
    assert_eq!(old, 200, "the base's own images are served too");
    assert_eq!(status, 200);
    assert_eq!(
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&layer))
        ),
        shared
    );
}

/// The bytes of the blobs of `image` (its manifest too) that `base` lacks.
fn new_in(full: &Path, base: &Path, image: &str) -> u64 {
    let (full, in_base) = (inspect(full), blobs(&inspect(base)));
    let sizes: BTreeMap<&str, u64> = full["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["digest"].as_str().unwrap(), b["size"].as_u64().unwrap()))
        .collect();
    let image = full["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == image)
        .unwrap();
    let digests: BTreeSet<&str> = std::iter::once(&image["manifest"])
        .chain(image["blobs"].as_array().unwrap())
        .map(|d| d.as_str().unwrap())
        .filter(|d| !in_base.contains(*d))
        .collect();
    digests.iter().map(|d| sizes[d]).sum()
}

fn human(bytes: u64) -> String {
    format!("{}", indicatif::DecimalBytes(bytes))
}

/// How many blobs, of how many bytes, the delta leaves to the base: those of the full bundle the base
/// holds, but for manifests and configs.
fn left_to_base(full: &Value, base: &Value) -> (usize, u64) {
    let in_base = blobs(base);
    let documents = manifests_and_configs(full);
    let left: Vec<u64> = full["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| {
            let digest = b["digest"].as_str().unwrap();
            in_base.contains(digest) && !documents.contains(digest)
        })
        .map(|b| b["size"].as_u64().unwrap())
        .collect();
    (left.len(), left.iter().sum())
}

/// The blobs of the delta are exactly those `ferry diff` counts as new, and the manifests and configs of
/// the images the upgrade keeps; the rest of the file is tar headers and the bundle's JSON documents.
/// `extra` are the bytes the delta carries for images `ferry diff` does not list (`--image`). Returns
/// (blob bytes, kept manifests and configs, the rest), for the README.
fn accounted_by_diff(delta: &Path, diff: &Value, full: &Value, extra: u64) -> (u64, u64, u64) {
    let sizes: BTreeMap<String, u64> = full["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["digest"].as_str().unwrap().to_string(),
                b["size"].as_u64().unwrap(),
            )
        })
        .collect();
    let kept: BTreeSet<&str> = diff["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reference"].as_str().unwrap())
        .collect();
    let kept_documents: BTreeSet<&str> = full["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| kept.contains(i["name"].as_str().unwrap()))
        .flat_map(|i| {
            [
                i["manifest"].as_str().unwrap(),
                i["blobs"][0].as_str().unwrap(),
            ]
        })
        .collect();
    let kept_bytes: u64 = kept_documents.iter().map(|d| sizes[*d]).sum();
    let inside: u64 = inspect(delta)["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    let carry = diff["carry"]["bytes"].as_u64().unwrap();
    assert_eq!(
        inside,
        carry + kept_bytes + extra,
        "the delta's blobs: diff's new ones and the kept images' manifests and configs"
    );
    (inside, kept_bytes, size_of(delta) - inside)
}

/// The four images that 1.28.4 changes from 1.28.3's, as (repository, tag).
const KUBERNETES_1284: [(&str, &str); 4] = [
    ("kube-apiserver", "v1.28.4"),
    ("kube-controller-manager", "v1.28.4"),
    ("kube-scheduler", "v1.28.4"),
    ("kube-proxy", "v1.28.4"),
];

/// An image besides the release's, in a repository the base's push never made: its base layer is
/// mounted from the base's repositories.
const KUBECTL: (&str, &str) = ("kubectl", "v1.28.4");

fn keygen(dir: &Path) -> PathBuf {
    let key = dir.join("builder");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-C", "builder", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success(), "ssh-keygen");
    let allowed = dir.join("allowed_signers");
    let public = std::fs::read_to_string(dir.join("builder.pub")).unwrap();
    std::fs::write(
        &allowed,
        format!("build@example.com namespaces=\"ferry\" {public}"),
    )
    .unwrap();
    key
}

#[test]
fn kubernetes_patch_upgrade_is_a_signed_delta_that_merges_and_pushes() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let addr = registry.addr().to_string();
    let mut seeded = BTreeMap::new();
    let images: Vec<(&str, &str)> = KUBEADM_1283
        .into_iter()
        .chain(KUBERNETES_1284)
        .chain([KUBECTL])
        .collect();
    seed_versions(&addr, "registry.k8s.io", &images, &mut seeded);
    let site = Upgrade {
        mirrors: vec!["--mirror".into(), format!("registry.k8s.io={addr}")],
        _registry: registry,
        seeded,
        work: tempfile::tempdir().unwrap(),
    };
    let key = keygen(site.work.path());
    let allowed = site.path("allowed_signers");
    let allowed = allowed.to_str().unwrap();
    let out = format!("{}/", site.path("out").display());
    site.bundle(&["kubernetes@1.28.3"], &["-o", &out]).success();
    let kubectl = format!("registry.k8s.io/{}:{}", KUBECTL.0, KUBECTL.1);
    let release_1284 = ["kubernetes@1.28.4", "--image", &kubectl];
    site.bundle(
        &release_1284,
        &["-o", &out, "--sign", key.to_str().unwrap()],
    )
    .success();
    let base = site.path("out/kubernetes-1.28.3-k8s1.28-linux-amd64.tar");
    let full = site.path("out/kubernetes-1.28.4+1-images-k8s1.28-linux-amd64.tar");
    let built = site
        .bundle(
            &release_1284,
            &[
                "--since",
                base.to_str().unwrap(),
                "--sign",
                key.to_str().unwrap(),
                "-o",
                &format!("{}/", site.path("deltas").display()),
            ],
        )
        .success();
    let delta = site.path(
        "deltas/kubernetes-1.28.4+1-images-k8s1.28-linux-amd64-delta-from-kubernetes-1.28.3.tar",
    );
    assert!(
        built
            .stdout()
            .starts_with(&format!("{}  8 image(s)", delta.display())),
        "{}",
        built.stdout()
    );
    assert_holds_what_the_base_lacks(&delta, &full, &base);
    let (left, _) = left_to_base(&inspect(&full), &inspect(&base));
    assert_eq!(
        left, 4,
        "pause, etcd and coredns's layers, and the shared base layer"
    );

    let diff = diff_json(&site, &["kubernetes@1.28.3", "kubernetes@1.28.4"]);
    accounted_by_diff(
        &delta,
        &diff,
        &inspect(&full),
        new_in(&full, &base, &kubectl),
    );
    // The release alone, for the README's sizes.
    let (release_full, release_delta) = (site.path("release.tar"), site.path("release-delta.tar"));
    site.bundle(
        &["kubernetes@1.28.4"],
        &["-o", release_full.to_str().unwrap()],
    )
    .success();
    site.bundle(
        &["kubernetes@1.28.4"],
        &[
            "--since",
            base.to_str().unwrap(),
            "-o",
            release_delta.to_str().unwrap(),
        ],
    )
    .success();
    let (inside, kept, rest) = accounted_by_diff(&release_delta, &diff, &inspect(&release_full), 0);
    eprintln!(
        "kubernetes 1.28.3 -> 1.28.4: full {} B, delta {} B: blobs {inside} B (diff's new {} B, kept \
         manifests and configs {kept} B), tar headers and documents {rest} B; diff's estimate {} B",
        size_of(&release_full),
        size_of(&release_delta),
        diff["carry"]["bytes"],
        diff["carry"]["delta_bytes"]
    );

    // Signed: verify --trust proves the delta, and that the base is the one it names.
    let with_base = ["--base", base.to_str().unwrap()];
    let trusted = ferry_on(
        "verify",
        &[&delta],
        &[&with_base[..], &["--trust", allowed]].concat(),
    )
    .success();
    assert!(
        trusted
            .stdout()
            .contains("signature: good, signed by build@example.com"),
        "{}",
        trusted.stdout()
    );
    let other = site.path("other.tar");
    std::fs::copy(&full, &other).unwrap();
    let wrong = ferry_on(
        "verify",
        &[&delta],
        &["--base", other.to_str().unwrap(), "--trust", allowed],
    )
    .fails_with(1);
    assert!(
        wrong.stdout().contains(&format!(
            "problem: {} is not a base of this delta",
            other.display()
        )),
        "{}",
        wrong.stdout()
    );

    // Merged under its own name, it carries the full bundle's signature: the same bytes as the direct
    // build's, checked like them.
    let merged_dir = site.path("merged");
    let into_dir = format!("{}/", merged_dir.display());
    let merged = ferry_on(
        "merge",
        &[&base, &delta],
        &["-o", &into_dir, "--trust", allowed, "-q"],
    )
    .success();
    let merged_path = merged_dir.join("kubernetes-1.28.4+1-images-k8s1.28-linux-amd64.tar");
    assert_eq!(
        merged.stdout(),
        format!(
            "{}  8 image(s), {}, sha256 {}, as the delta names it\n  signed: {}.sig (the signature the delta carries)\n",
            merged_path.display(),
            human(size_of(&full)),
            sha256_of(&full),
            merged_path.display()
        )
    );
    // The quick way: the full bundle's signature the delta carries is checked before anything is written.
    assert!(
        merged
            .stderr()
            .starts_with("signature: good, signed by build@example.com (ssh-ed25519 SHA256:"),
        "{}",
        merged.stderr()
    );
    assert_eq!(merged.stderr().lines().count(), 1, "{}", merged.stderr());
    let stranger_dir = site.path("stranger");
    std::fs::create_dir_all(&stranger_dir).unwrap();
    keygen(&stranger_dir);
    let stranger = stranger_dir.join("allowed_signers");
    let unmerged = site.path("unmerged.tar");
    let refused = ferry_on(
        "merge",
        &[&base, &delta],
        &[
            "-o",
            unmerged.to_str().unwrap(),
            "--trust",
            stranger.to_str().unwrap(),
            "-q",
        ],
    )
    .fails_with(1);
    let stderr = refused.stderr();
    let lines: Vec<&str> = stderr.lines().collect();
    let refusal = format!(
        "{} is not trusted: signature: made by ssh-ed25519 SHA256:",
        delta.display()
    );
    assert!(
        lines.len() == 2
            && lines[1].starts_with(&format!("error: {refusal}"))
            && lines[1].ends_with(&format!(", a key {} does not hold", stranger.display()))
            && lines[0]
                == format!(
                    "merge: the full bundle's signature was refused ({}); verifying the delta and \
                     its bases byte for byte to say what is wrong",
                    &lines[1]["error: ".len()..]
                ),
        "{stderr}"
    );
    assert!(!unmerged.exists());
    for suffix in ["", ".sha256", ".sig"] {
        assert_eq!(
            std::fs::read(format!("{}{suffix}", merged_path.display())).unwrap(),
            std::fs::read(format!("{}{suffix}", full.display())).unwrap(),
            "{suffix}"
        );
    }
    ferry_on(
        "verify",
        &[&merged_path],
        &["--trust", allowed, "--k8s", "1.28"],
    )
    .success();
    let renamed = site.path("renamed.tar");
    let unsigned = ferry_on(
        "merge",
        &[&base, &delta],
        &["-o", renamed.to_str().unwrap(), "-q"],
    )
    .success();
    assert!(unsigned.stdout().ends_with("  not signed: the delta carries the signature of kubernetes-1.28.4+1-images-k8s1.28-linux-amd64.tar; merge to that name to keep it\n"), "{}", unsigned.stdout());
    assert_eq!(sha256_of(&renamed), sha256_of(&full));

    // Pushed after the base: every image with its upstream digest.
    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let to = format!("{}/k8s", private.addr());
    ferry_on("push", &[&base], &["--to", &to, "-q"]).success();
    let pushed = ferry_on("push", &[&delta], &["--to", &to, "--trust", allowed]).success();
    assert_eq!(pushed.stdout().lines().count(), 8, "{}", pushed.stdout());
    // kubectl's repository is new: its base layer is mounted from the base's, the rest is there.
    assert!(
        pushed.stderr().contains(", mounted 1, "),
        "{}",
        pushed.stderr()
    );
    let upstream_digests = |to: &str| {
        for (repository, tag) in KUBEADM_1283
            .iter()
            .skip(4)
            .chain(&KUBERNETES_1284)
            .chain([&KUBECTL])
        {
            let upstream = format!("registry.k8s.io/{repository}:{tag}");
            assert_eq!(
                skopeo_digest(&private, &format!("{to}/{repository}:{tag}")),
                site.upstream(&upstream),
                "{upstream}"
            );
        }
    };
    upstream_digests(&to);
    // With the base file instead, into a path the base never went: its blobs come from the file.
    let fresh = format!("{}/fresh", private.addr());
    ferry_on(
        "push",
        &[&delta],
        &[&with_base[..], &["--to", &fresh, "-q"]].concat(),
    )
    .success();
    upstream_digests(&fresh);
}

/// What stands for a base on the connected side is read as hostile input: a regular file, within a
/// bound, and either a bundle or what `ferry inspect --json` prints.
#[test]
fn a_base_that_is_no_bundle_is_refused_by_name_before_anything_is_fetched() {
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let out = work.path().join("x.tar");
    let bundle = |since: &str| {
        ferry(&[
            "bundle",
            "--image",
            "quay.io/a/b:1",
            "--since",
            since,
            "--cache-dir",
            cache.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ])
    };
    let device = bundle("/dev/zero").fails_with(2);
    assert_eq!(
        device.stderr(),
        "error: --since /dev/zero: it is a character device, not a regular file\n"
    );
    let notes = work.path().join("notes.json");
    std::fs::write(&notes, r#"{"bundle": "old.tar"}"#).unwrap();
    let wrong = bundle(notes.to_str().unwrap()).fails_with(2);
    assert_eq!(
        wrong.stderr(),
        format!(
            "error: --since {}: not what `ferry inspect --json` prints of a bundle (missing field \
             `intact` at line 1 column 21)\n",
            notes.display()
        )
    );
    assert!(!cache.exists(), "nothing fetched");
}

/// A delta built after its full bundle takes the full bundle's sha256 from what that build noted in the
/// cache, so it reads only the blobs it carries: a blob its base holds, damaged in the cache since, is not
/// read, and the delta still merges into the full bundle byte for byte. Without the note (a cache that
/// never built the full bundle), the delta reads every blob to hash the full bundle, and finds the
/// damaged one, which is fetched anew.
#[test]
fn a_delta_after_its_full_bundle_reads_only_the_blobs_it_carries() {
    const PROBE: &str = "registry.k8s.io/sig-storage/livenessprobe:v2.12.0";
    const RESIZER: &str = "registry.k8s.io/sig-storage/csi-resizer:v1.9.0";
    let Some((registry, _)) = registry_with_livenessprobe(&PLATFORMS[..1], 300_000) else {
        return;
    };
    push_image(
        registry.addr(),
        "sig-storage/csi-resizer",
        "v1.9.0",
        Format::DockerList,
        &PLATFORMS[..1],
        200_000,
    );
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let bundle = |out: &str, images: &[&str], extra: &[&str]| {
        let mut command = command();
        command.arg("bundle");
        for image in images {
            command.args(["--image", image]);
        }
        command
            .arg("--mirror")
            .arg(format!("registry.k8s.io={}", registry.addr()))
            .arg("--cache-dir")
            .arg(&cache)
            .arg("-o")
            .arg(work.path().join(out))
            .arg("-q")
            .args(extra);
        run(&mut command)
    };
    let base = work.path().join("base.tar");
    let full = work.path().join("full.tar");
    bundle("base.tar", &[PROBE], &[]).success();
    bundle("full.tar", &[PROBE, RESIZER], &[]).success();
    let since = ["--since", base.to_str().unwrap()];
    let base_layer = blobs(&inspect(&base))
        .into_iter()
        .map(|digest| {
            cache
                .join("ferry-v1/blobs/sha256")
                .join(&digest["sha256:".len()..])
        })
        .filter(|path| path.exists())
        .max_by_key(|path| size_of(path))
        .unwrap();
    let mut bytes = std::fs::read(&base_layer).unwrap();
    bytes[1000] ^= 0x01;
    std::fs::write(&base_layer, &bytes).unwrap();

    let merged = work.path().join("merged.tar");
    let merge = || {
        ferry(&[
            "merge",
            base.to_str().unwrap(),
            work.path().join("delta.tar").to_str().unwrap(),
            "-o",
            merged.to_str().unwrap(),
            "-q",
        ])
        .success();
        sha256_of(&merged)
    };
    let noted = bundle("delta.tar", &[PROBE, RESIZER], &since).success();
    assert_eq!(
        noted.stderr(),
        "",
        "the damaged blob the base holds is not read"
    );
    assert_eq!(merge(), sha256_of(&full));
    let noted_delta = sha256_of(&work.path().join("delta.tar"));

    std::fs::remove_dir_all(cache.join("ferry-v1/notes/full-bundles-v1")).unwrap();
    let hashed = bundle("delta.tar", &[PROBE, RESIZER], &since).success();
    let hex = base_layer.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        hashed.stderr(),
        format!(
            "warning: cache file {} was damaged (not blob sha256:{hex}); fetching it again\n",
            base_layer.display()
        )
    );
    assert_eq!(merge(), sha256_of(&full));
    assert_eq!(
        sha256_of(&work.path().join("delta.tar")),
        noted_delta,
        "the same delta, byte for byte, either way"
    );
}
