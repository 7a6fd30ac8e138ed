//! Old releases as first-class citizens: Huawei CSI 3.2.x, whose images come from k8s.gcr.io and
//! quay.io and whose chart names its keys differently, bundled (all four patch releases from one
//! fetch), pushed with that release's Helm keys, loaded into containerd, and diffed with the cache.

use std::collections::BTreeSet;

use crate::bundle::{each_blob_fetched_once, files_in, seed_small};
use crate::deliver::load;
use crate::faults::FaultProxy;
use crate::ferry::{command, ferry, run};
use crate::seed::vendor_tarball;
use crate::services::{require, Containerd, Registry};

/// The public images 3.2.x lists for Kubernetes 1.13 to 1.16, as (registry, repository, tag).
const PUBLIC_32X_116: [(&str, &str, &str); 5] = [
    ("k8s.gcr.io", "sig-storage/livenessprobe", "v2.5.0"),
    ("k8s.gcr.io", "sig-storage/csi-resizer", "v1.4.0"),
    (
        "k8s.gcr.io",
        "sig-storage/csi-node-driver-registrar",
        "v2.3.0",
    ),
    ("quay.io", "k8scsi/csi-provisioner", "v1.4.0"),
    ("quay.io", "k8scsi/csi-attacher", "v1.2.1"),
];
const RELEASES: [&str; 4] = ["3.2.0", "3.2.1", "3.2.2", "3.2.3"];

#[test]
fn csi_32x_bundles_once_pushes_with_its_own_helm_keys_loads_and_diffs() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    let rows: Vec<(&str, &str)> = PUBLIC_32X_116.iter().map(|(_, r, t)| (*r, *t)).collect();
    seed_small(registry.addr(), &rows);
    let work = tempfile::tempdir().unwrap();
    let vendor = work.path().join("package-images");
    std::fs::create_dir(&vendor).unwrap();
    for release in RELEASES {
        // The vendor's images share a base layer, as real releases do.
        vendor_tarball(
            &vendor.join(format!("huawei-csi-{release}.tar")),
            &format!("huawei-csi:{release}"),
            60_000,
        );
    }
    let proxy = FaultProxy::start(registry.addr(), Vec::new());
    let (gcr, quay) = (
        format!("k8s.gcr.io={}", proxy.addr()),
        format!("quay.io={}", proxy.addr()),
    );
    let cache = work.path().join("cache");
    let cache = cache.to_str().unwrap();
    let out = work.path().join("bundles");
    let bundled = ferry(&[
        "bundle",
        "huawei-csi@3.2.0..3.2.3",
        "--all-releases",
        "--k8s",
        "1.16",
        "--mirror",
        &gcr,
        "--mirror",
        &quay,
        "--vendor-dir",
        vendor.to_str().unwrap(),
        "--cache-dir",
        cache,
        "-o",
        out.to_str().unwrap(),
        "-q",
    ])
    .success();
    let expected: Vec<String> = RELEASES
        .iter()
        .flat_map(|r| {
            let name = format!("huawei-csi-{r}-k8s1.13-1.16-linux-amd64.tar");
            [name.clone(), format!("{name}.sha256")]
        })
        .collect();
    assert_eq!(files_in(&out), expected, "{}", bundled.stdout());
    assert_eq!(
        bundled.stdout().matches("6 image(s)").count(),
        4,
        "{}",
        bundled.stdout()
    );
    // 5 configs, 5 layers of their own and the base layer they share, once for all four bundles.
    assert_eq!(each_blob_fetched_once(&proxy), 11);

    let bundle = out.join("huawei-csi-3.2.1-k8s1.13-1.16-linux-amd64.tar");
    let bundle = bundle.to_str().unwrap();
    ferry(&["verify", bundle, "--k8s", "1.16"]).success();

    // Push with 3.2.1's own chart keys (3.1.0 and earlier named them csiProvisioner, csiAttacher, ...).
    let Some(private) = require(Registry::plain()) else {
        return;
    };
    let to = format!("{}/csi", private.addr());
    let values = work.path().join("values.yaml");
    let pushed = ferry(&[
        "push",
        bundle,
        "--to",
        &to,
        "--helm-values",
        values.to_str().unwrap(),
        "-q",
    ])
    .success();
    assert_eq!(pushed.stdout().lines().count(), 6, "{}", pushed.stdout());
    assert!(
        pushed.stdout().contains(&format!(
            "k8s.gcr.io/sig-storage/livenessprobe:v2.5.0 -> {to}/sig-storage/livenessprobe:v2.5.0"
        )),
        "{}",
        pushed.stdout()
    );
    assert_eq!(
        std::fs::read_to_string(&values).unwrap(),
        format!(
            "# Helm values for huawei-csi 3.2.1: images from the private registry (written by ferry)\n\
             images:\n  \
               \"huaweiCSIService\": \"{to}/huawei-csi:3.2.1\"\n  \
               \"sidecar\":\n    \
                 \"attacher\": \"{to}/k8scsi/csi-attacher:v1.2.1\"\n    \
                 \"livenessProbe\": \"{to}/sig-storage/livenessprobe:v2.5.0\"\n    \
                 \"provisioner\": \"{to}/k8scsi/csi-provisioner:v1.4.0\"\n    \
                 \"registrar\": \"{to}/sig-storage/csi-node-driver-registrar:v2.3.0\"\n    \
                 \"resizer\": \"{to}/sig-storage/csi-resizer:v1.4.0\"\n"
        )
    );

    // What upgrading 3.2.0 to 3.2.3 on Kubernetes 1.16 carries: only the driver, less the base layer
    // the site already has.
    let diff = ferry(&[
        "diff",
        "huawei-csi@3.2.0",
        "huawei-csi@3.2.3",
        "--k8s",
        "1.16",
        "--cache-dir",
        cache,
        "--json",
    ])
    .success()
    .json();
    let names = |key: &str| -> Vec<String> {
        diff[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["image"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("added"), ["huawei-csi:3.2.3"]);
    assert_eq!(names("removed"), ["huawei-csi:3.2.0"]);
    assert_eq!(names("kept").len(), 5);
    let added = diff["added"][0]["bytes"].as_u64().unwrap();
    let carry = diff["carry"]["bytes"].as_u64().unwrap();
    assert!(
        carry > 0 && carry < added,
        "the shared base layer is not carried again: {carry} of {added}"
    );
    assert_eq!(diff["carry"]["not_cached"], serde_json::json!([]));

    let Some(containerd) = require(Containerd::start()) else {
        return;
    };
    let socket = containerd.socket().to_str().unwrap().to_string();
    let loaded = load(bundle, "containerd", &socket).success();
    assert_eq!(loaded.stdout().lines().count(), 6, "{}", loaded.stdout());
    let expected: BTreeSet<String> = PUBLIC_32X_116
        .iter()
        .map(|(host, repository, tag)| format!("{host}/{repository}:{tag}"))
        .chain(["docker.io/library/huawei-csi:3.2.1".to_string()])
        .collect();
    assert_eq!(containerd.image_names(), expected);
}

#[test]
fn diff_without_a_cache_lists_the_change_and_no_bytes() {
    let cache = tempfile::tempdir().unwrap();
    let missing = cache.path().join("none");
    let out = ferry(&[
        "diff",
        "huawei-csi@4.5.0",
        "huawei-csi@4.8.0",
        "--k8s",
        "1.18",
        "--service",
        "node",
        "--cache-dir",
        missing.to_str().unwrap(),
    ])
    .success()
    .stdout();
    assert_eq!(
        out,
        "# huawei-csi@4.5.0 -> huawei-csi@4.8.0 on Kubernetes 1.18: 3 added, 3 removed, 0 kept\n\
         added    registry.k8s.io/sig-storage/livenessprobe:v2.12.0             livenessprobe              registry  -\n\
         added    registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.9.0  csi-node-driver-registrar  registry  -\n\
         added    huawei-csi:4.8.0                                              huawei-csi-driver          vendor    -\n\
         removed  k8s.gcr.io/sig-storage/livenessprobe:v2.5.0                   livenessprobe              registry  -\n\
         removed  k8s.gcr.io/sig-storage/csi-node-driver-registrar:v2.3.0       csi-node-driver-registrar  registry  -\n\
         removed  huawei-csi:4.5.0                                              huawei-csi-driver          vendor    -\n"
    );
    assert!(!missing.exists(), "diff does not create a cache");
    let run = ferry(&[
        "diff",
        "huawei-csi@4.0.0",
        "huawei-csi@4.8.0",
        "--k8s",
        "1.16",
    ])
    .fails_with(2);
    assert!(
        run.stderr()
            .contains("huawei-csi 4.0.0 does not support Kubernetes 1.16: it supports Kubernetes 1.18 and later"),
        "{}",
        run.stderr()
    );
}

/// A range typed where one release is expected, or one that is malformed or reversed, is refused before
/// anything is fetched (exit 2), naming what was typed and how a range is written.
#[test]
fn ranges_are_explained_and_malformed_ones_refused() {
    let cache = tempfile::tempdir().unwrap();
    let missing = cache.path().join("none");
    let syntax = "; a range of releases is CATALOG@FROM..TO, both ends included and either left out \
                  (huawei-csi@3.2.0..3.2.3, huawei-csi@4.10.0..), and only pull and bundle take one, \
                  with --all-releases\n";
    for (args, typed, why) in [
        (
            &["bundle", "huawei-csi@4.5.0..4.8.0"][..],
            "huawei-csi@4.5.0..4.8.0",
            "is a range, where one release is expected",
        ),
        (
            &["bundle", "huawei-csi@4.8.0..4.5.0", "--all-releases"],
            "huawei-csi@4.8.0..4.5.0",
            "is reversed: 4.8.0 is newer than 4.5.0 (the older release comes first: 4.5.0..4.8.0)",
        ),
        (
            &["pull", "huawei-csi@4.8.0..4.9.0..5.0.0", "--all-releases"],
            "huawei-csi@4.8.0..4.9.0..5.0.0",
            "has more than one '..'",
        ),
        (
            &["bundle", "huawei-csi@...", "--all-releases"],
            "huawei-csi@...",
            "has '.' as an end, which is no release",
        ),
    ] {
        let run = run(command()
            .args(args)
            .args(["--k8s", "1.28", "--skip-vendor", "--cache-dir"])
            .arg(&missing))
        .fails_with(2);
        assert_eq!(run.stderr(), format!("error: '{typed}' {why}{syntax}"));
        assert!(!missing.exists(), "nothing fetched");
    }
}
