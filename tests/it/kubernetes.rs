//! The `kubernetes` catalog as a user meets it: `ferry list kubernetes@V` for every release, the patch
//! releases on each side of every etcd, coredns and registry change, the warning for a patch newer than
//! the catalog and the refusals, and a bundle for another platform through a real registry.

use std::collections::BTreeMap;

use crate::bundle::{bundle_quietly, seed_small};
use crate::ferry::ferry;
use crate::services::{require, Registry};

/// What `kubeadm config images list --kubernetes-version v1.28.3` prints, as (repository, tag) under
/// registry.k8s.io.
pub const KUBEADM_1283: [(&str, &str); 7] = [
    ("kube-apiserver", "v1.28.3"),
    ("kube-controller-manager", "v1.28.3"),
    ("kube-scheduler", "v1.28.3"),
    ("kube-proxy", "v1.28.3"),
    ("pause", "3.9"),
    ("etcd", "3.5.9-0"),
    ("coredns/coredns", "v1.10.1"),
];

/// The seven references `ferry list kubernetes@VERSION --json` gives, in order.
fn listed(version: &str) -> Vec<String> {
    ferry(&["list", &format!("kubernetes@{version}"), "--json"])
        .success()
        .json()
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|image| image["image"].as_str().unwrap().to_string())
        .collect()
}

/// The second reading's value of `image` for `release`, from its `IMAGE FIRST..LAST VALUE` spans.
fn reading_value(reading: &str, image: &str, release: (u32, u32, u32)) -> String {
    let version = |text: &str| -> (u32, u32, u32) {
        let n: Vec<u32> = text.split('.').map(|p| p.parse().unwrap()).collect();
        (n[0], n[1], n[2])
    };
    let values: Vec<&str> = reading
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let (name, span, value) = (words.next()?, words.next()?, words.next()?);
            let (first, last) = span.split_once("..")?;
            let inside = name == image
                && version(first) <= release
                && (last.is_empty() || release <= version(last));
            inside.then_some(value)
        })
        .collect();
    assert_eq!(values.len(), 1, "{image} of {release:?}: {values:?}");
    values[0].to_string()
}

/// Every release the catalog knows, listed by the binary, against `manifests/readings/kubernetes.txt`.
#[test]
fn every_release_lists_what_the_second_reading_says() {
    let reading = include_str!("../../manifests/readings/kubernetes.txt");
    let catalogs = ferry(&["catalogs", "--json"]).success().json();
    let releases: Vec<String> = catalogs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["catalog"] == "kubernetes")
        .map(|r| r["release"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(releases.len(), 313);
    for release in releases {
        let n: Vec<u32> = release.split('.').map(|p| p.parse().unwrap()).collect();
        let at = (n[0], n[1], n[2]);
        let registry = reading_value(reading, "registry", at);
        let mut expected: Vec<String> = [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kube-proxy",
        ]
        .iter()
        .map(|name| format!("{registry}/{name}:v{release}"))
        .collect();
        expected.push(format!(
            "{registry}/pause:{}",
            reading_value(reading, "pause", at)
        ));
        expected.push(format!(
            "{registry}/etcd:{}",
            reading_value(reading, "etcd", at)
        ));
        expected.push(format!(
            "{registry}/{}",
            reading_value(reading, "coredns", at)
        ));
        assert_eq!(listed(&release), expected, "kubernetes@{release}");
    }
}

/// Both sides of every change inside a patch series, and of the coredns path change: (release, registry,
/// pause, etcd, coredns) as kubeadm of that release prints them.
const CHANGES: &[(&str, &str, &str, &str, &str)] = &[
    // coredns moved to coredns/coredns and a v-prefixed tag in 1.21.
    ("1.20.15", "k8s.gcr.io", "3.2", "3.4.13-0", "coredns:1.7.0"),
    (
        "1.21.0",
        "k8s.gcr.io",
        "3.4.1",
        "3.4.13-0",
        "coredns/coredns:v1.8.0",
    ),
    // etcd 3.4.13 from 1.19.1.
    ("1.19.0", "k8s.gcr.io", "3.2", "3.4.9-1", "coredns:1.7.0"),
    ("1.19.1", "k8s.gcr.io", "3.2", "3.4.13-0", "coredns:1.7.0"),
    // registry.k8s.io and etcd 3.5.6 in 1.22.17.
    (
        "1.22.16",
        "k8s.gcr.io",
        "3.5",
        "3.5.0-0",
        "coredns/coredns:v1.8.4",
    ),
    (
        "1.22.17",
        "registry.k8s.io",
        "3.5",
        "3.5.6-0",
        "coredns/coredns:v1.8.4",
    ),
    // etcd 3.5.5 in 1.23.14, then registry.k8s.io and etcd 3.5.6 in 1.23.15.
    (
        "1.23.13",
        "k8s.gcr.io",
        "3.6",
        "3.5.1-0",
        "coredns/coredns:v1.8.6",
    ),
    (
        "1.23.14",
        "k8s.gcr.io",
        "3.6",
        "3.5.5-0",
        "coredns/coredns:v1.8.6",
    ),
    (
        "1.23.15",
        "registry.k8s.io",
        "3.6",
        "3.5.6-0",
        "coredns/coredns:v1.8.6",
    ),
    // etcd 3.5.5 in 1.24.8, then registry.k8s.io and etcd 3.5.6 in 1.24.9.
    (
        "1.24.7",
        "k8s.gcr.io",
        "3.7",
        "3.5.3-0",
        "coredns/coredns:v1.8.6",
    ),
    (
        "1.24.8",
        "k8s.gcr.io",
        "3.7",
        "3.5.5-0",
        "coredns/coredns:v1.8.6",
    ),
    (
        "1.24.9",
        "registry.k8s.io",
        "3.7",
        "3.5.6-0",
        "coredns/coredns:v1.8.6",
    ),
    // etcd 3.5.5 in 1.25.4, 3.5.6 in 1.25.5, 3.5.9 in 1.25.15.
    (
        "1.25.3",
        "registry.k8s.io",
        "3.8",
        "3.5.4-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.25.4",
        "registry.k8s.io",
        "3.8",
        "3.5.5-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.25.5",
        "registry.k8s.io",
        "3.8",
        "3.5.6-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.25.14",
        "registry.k8s.io",
        "3.8",
        "3.5.6-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.25.15",
        "registry.k8s.io",
        "3.8",
        "3.5.9-0",
        "coredns/coredns:v1.9.3",
    ),
    // etcd 3.5.9 in 1.26.10, 3.5.10 in 1.26.13.
    (
        "1.26.9",
        "registry.k8s.io",
        "3.9",
        "3.5.6-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.26.10",
        "registry.k8s.io",
        "3.9",
        "3.5.9-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.26.12",
        "registry.k8s.io",
        "3.9",
        "3.5.9-0",
        "coredns/coredns:v1.9.3",
    ),
    (
        "1.26.13",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.9.3",
    ),
    // etcd 3.5.9 in 1.27.7, 3.5.10 in 1.27.10, 3.5.12 in 1.27.12.
    (
        "1.27.6",
        "registry.k8s.io",
        "3.9",
        "3.5.7-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.27.7",
        "registry.k8s.io",
        "3.9",
        "3.5.9-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.27.9",
        "registry.k8s.io",
        "3.9",
        "3.5.9-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.27.10",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.27.11",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.27.12",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.10.1",
    ),
    // etcd 3.5.10 in 1.28.6, 3.5.12 in 1.28.8, 3.5.15 in 1.28.14.
    (
        "1.28.5",
        "registry.k8s.io",
        "3.9",
        "3.5.9-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.28.6",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.28.7",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.28.8",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.28.13",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.10.1",
    ),
    (
        "1.28.14",
        "registry.k8s.io",
        "3.9",
        "3.5.15-0",
        "coredns/coredns:v1.10.1",
    ),
    // etcd 3.5.12 in 1.29.3, 3.5.15 in 1.29.9, 3.5.16 in 1.29.11.
    (
        "1.29.2",
        "registry.k8s.io",
        "3.9",
        "3.5.10-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.29.3",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.29.8",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.29.9",
        "registry.k8s.io",
        "3.9",
        "3.5.15-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.29.10",
        "registry.k8s.io",
        "3.9",
        "3.5.15-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.29.11",
        "registry.k8s.io",
        "3.9",
        "3.5.16-0",
        "coredns/coredns:v1.11.1",
    ),
    // etcd 3.5.15 and coredns v1.11.3 in 1.30.5.
    (
        "1.30.4",
        "registry.k8s.io",
        "3.9",
        "3.5.12-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.30.5",
        "registry.k8s.io",
        "3.9",
        "3.5.15-0",
        "coredns/coredns:v1.11.3",
    ),
    // coredns v1.11.3 in 1.31.1, etcd 3.5.24 in 1.31.14.
    (
        "1.31.0",
        "registry.k8s.io",
        "3.10",
        "3.5.15-0",
        "coredns/coredns:v1.11.1",
    ),
    (
        "1.31.1",
        "registry.k8s.io",
        "3.10",
        "3.5.15-0",
        "coredns/coredns:v1.11.3",
    ),
    (
        "1.31.13",
        "registry.k8s.io",
        "3.10",
        "3.5.15-0",
        "coredns/coredns:v1.11.3",
    ),
    (
        "1.31.14",
        "registry.k8s.io",
        "3.10",
        "3.5.24-0",
        "coredns/coredns:v1.11.3",
    ),
    // etcd 3.5.24 in 1.32.10 and 1.33.6.
    (
        "1.32.9",
        "registry.k8s.io",
        "3.10",
        "3.5.16-0",
        "coredns/coredns:v1.11.3",
    ),
    (
        "1.32.10",
        "registry.k8s.io",
        "3.10",
        "3.5.24-0",
        "coredns/coredns:v1.11.3",
    ),
    (
        "1.33.5",
        "registry.k8s.io",
        "3.10",
        "3.5.21-0",
        "coredns/coredns:v1.12.0",
    ),
    (
        "1.33.6",
        "registry.k8s.io",
        "3.10",
        "3.5.24-0",
        "coredns/coredns:v1.12.0",
    ),
    // etcd 3.6.5 in 1.34.2.
    (
        "1.34.1",
        "registry.k8s.io",
        "3.10.1",
        "3.6.4-0",
        "coredns/coredns:v1.12.1",
    ),
    (
        "1.34.2",
        "registry.k8s.io",
        "3.10.1",
        "3.6.5-0",
        "coredns/coredns:v1.12.1",
    ),
];

#[test]
fn both_sides_of_every_change_in_a_patch_series() {
    for &(release, registry, pause, etcd, coredns) in CHANGES {
        let expected: Vec<String> = [
            format!("{registry}/kube-apiserver:v{release}"),
            format!("{registry}/kube-controller-manager:v{release}"),
            format!("{registry}/kube-scheduler:v{release}"),
            format!("{registry}/kube-proxy:v{release}"),
            format!("{registry}/pause:{pause}"),
            format!("{registry}/etcd:{etcd}"),
            format!("{registry}/{coredns}"),
        ]
        .into();
        assert_eq!(listed(release), expected, "kubernetes@{release}");
    }
}

#[test]
fn the_1_28_3_list_as_a_user_reads_it() {
    let list = ferry(&["list", "kubernetes@1.28.3"]).success();
    assert_eq!(
        list.stdout(),
        "registry.k8s.io/kube-apiserver:v1.28.3           kube-apiserver           registry\n\
         registry.k8s.io/kube-controller-manager:v1.28.3  kube-controller-manager  registry\n\
         registry.k8s.io/kube-scheduler:v1.28.3           kube-scheduler           registry\n\
         registry.k8s.io/kube-proxy:v1.28.3               kube-proxy               registry\n\
         registry.k8s.io/pause:3.9                        pause                    registry\n\
         registry.k8s.io/etcd:3.5.9-0                     etcd                     registry\n\
         registry.k8s.io/coredns/coredns:v1.10.1          coredns                  registry\n"
    );
    assert_eq!(list.stderr(), "");
    // --k8s may repeat the release's own version, in any spelling; another is refused.
    let same = ferry(&["list", "kubernetes@1.28.3", "--k8s", "v1.28.3"]).success();
    assert_eq!(same.stdout(), list.stdout());
    let other = ferry(&["list", "kubernetes@1.28.3", "--k8s", "1.29"]).fails_with(2);
    assert_eq!(
        other.stderr(),
        "error: kubernetes@1.28.3 is Kubernetes 1.28.3: --k8s 1.29 disagrees with it (leave --k8s \
         out, or name a 1.29 release, e.g. kubernetes@1.29)\n"
    );
    // A worker node's share.
    let node = ferry(&["list", "kubernetes@1.28.3", "--service", "node", "--json"]).success();
    let node = node.json();
    let names: Vec<&str> = node
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kube-proxy", "pause", "coredns"]);
    // The bare name is the newest release; a minor its newest patch.
    assert_eq!(listed("1.35")[0], "registry.k8s.io/kube-apiserver:v1.35.7");
    let newest = ferry(&["list", "kubernetes", "--json"]).success();
    assert_eq!(
        newest.json()[0]["image"],
        "registry.k8s.io/kube-apiserver:v1.35.7"
    );
}

#[test]
fn a_newer_patch_is_served_with_a_warning_and_unknown_ones_are_refused() {
    let newer = ferry(&["list", "kubernetes@1.28.99"]).success();
    assert_eq!(
        newer.stderr(),
        "warning: kubernetes 1.28.99 is newer than this catalog knows: its kube-apiserver, \
         kube-controller-manager, kube-scheduler and kube-proxy are tagged v1.28.99, and pause, etcd and \
         coredns are assumed unchanged since 1.28.15, the newest 1.28 release it knows \
         (registry.k8s.io/pause:3.9, registry.k8s.io/etcd:3.5.15-0, \
         registry.k8s.io/coredns/coredns:v1.10.1)\n"
    );
    assert!(
        newer
            .stdout()
            .starts_with("registry.k8s.io/kube-apiserver:v1.28.99  "),
        "{}",
        newer.stdout()
    );
    for (spec, message) in [
        (
            "kubernetes@1.15.3",
            "error: kubernetes has no release 1.15.3: this catalog knows Kubernetes 1.16.0 to 1.35.7 \
             (`ferry catalogs --all` lists every release)\n",
        ),
        (
            "kubernetes@1.99",
            "error: kubernetes has no release 1.99: this catalog knows Kubernetes 1.16.0 to 1.35.7 \
             (`ferry catalogs --all` lists every release)\n",
        ),
        (
            "kubernetes@1.18.7",
            "error: kubernetes has no release 1.18.7: of 1.18 this catalog knows 1.18.0-1.18.6, \
             1.18.8-1.18.10 and 1.18.12-1.18.20 (a tag whose kubeadm was never published is left out)\n",
        ),
        (
            "kubernetes@1.28.3-rc.1",
            "error: '1.28.3-rc.1' is not a Kubernetes release: name one as kubernetes@1.28.3, or \
             kubernetes@1.28 for the newest 1.28 release this catalog knows\n",
        ),
    ] {
        let refused = ferry(&["list", spec]).fails_with(2);
        assert_eq!(refused.stderr(), message, "{spec}");
        assert_eq!(refused.stdout(), "", "{spec}");
    }
}

#[test]
fn catalogs_sums_kubernetes_up_per_minor() {
    let table = ferry(&["catalogs"]).success().stdout();
    let kubernetes: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("kubernetes@"))
        .collect();
    assert_eq!(
        kubernetes.len(),
        20,
        "one line per minor 1.16-1.35:\n{table}"
    );
    assert!(
        kubernetes[0]
            .starts_with("kubernetes@1.35.0..1.35.7 (8 releases) (default: 1.35.7)  1.35  "),
        "{table}"
    );
    assert!(
        kubernetes[10].starts_with("kubernetes@1.25.0..1.25.16 (17 releases)  "),
        "{table}"
    );
    assert!(
        table.ends_with(
            "# kubernetes: one line per minor; `ferry catalogs --all` lists every release, \
             `ferry list kubernetes@1.28.3` one release's images\n"
        ),
        "{table}"
    );
    let all = ferry(&["catalogs", "--all"]).success().stdout();
    assert_eq!(
        all.lines().filter(|l| l.starts_with("kubernetes@")).count(),
        313
    );
    assert!(all.contains("\nkubernetes@1.28.3  "), "{all}");
}

#[test]
fn diff_of_two_kubernetes_releases_needs_no_k8s() {
    let diff = ferry(&[
        "diff",
        "kubernetes@1.28.5",
        "kubernetes@1.28.6",
        "--cache-dir",
        "/nonexistent/ferry-cache",
        "--json",
    ])
    .success()
    .json();
    let changed = |side: &str| -> BTreeMap<String, String> {
        diff[side]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["image"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(diff["kubernetes"], "1.28");
    assert_eq!(changed("added")["etcd"], "registry.k8s.io/etcd:3.5.10-0");
    assert_eq!(changed("removed")["etcd"], "registry.k8s.io/etcd:3.5.9-0");
    assert_eq!(
        changed("kept").keys().collect::<Vec<_>>(),
        ["coredns", "pause"]
    );
}

/// kubeadm's images are multi-platform upstream: a bundle for arm64 nodes picks each image's arm64
/// manifest, through a mirror of registry.k8s.io, and verifies against the release.
#[test]
fn an_arm64_bundle_through_a_mirror_verifies() {
    let Some(registry) = require(Registry::plain()) else {
        return;
    };
    seed_small(registry.addr(), &KUBEADM_1283);
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out/");
    let mirror = format!("registry.k8s.io={}", registry.addr());
    bundle_quietly(
        work.path(),
        &out,
        &[
            "kubernetes@1.28.3",
            "--platform",
            "linux/arm64",
            "--mirror",
            &mirror,
        ],
    )
    .success();
    let bundle = out.join("kubernetes-1.28.3-k8s1.28-linux-arm64.tar");
    let verified = ferry(&[
        "verify",
        bundle.to_str().unwrap(),
        "--k8s",
        "1.28",
        "--json",
    ])
    .success()
    .json();
    assert_eq!(verified["intact"], true, "{verified}");
    assert_eq!(
        verified["report"]["missing"],
        serde_json::json!([]),
        "{verified}"
    );
    let mut names: Vec<&str> = verified["report"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "registry.k8s.io/coredns/coredns:v1.10.1",
            "registry.k8s.io/etcd:3.5.9-0",
            "registry.k8s.io/kube-apiserver:v1.28.3",
            "registry.k8s.io/kube-controller-manager:v1.28.3",
            "registry.k8s.io/kube-proxy:v1.28.3",
            "registry.k8s.io/kube-scheduler:v1.28.3",
            "registry.k8s.io/pause:3.9"
        ]
    );
    assert!(
        verified["report"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["platform"] == "linux/arm64"),
        "{verified}"
    );
}
