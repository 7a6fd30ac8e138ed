//! The `kubernetes` catalog checked against its second reading (`manifests/readings/kubernetes.txt`),
//! written apart from it as spans of releases per image, from other sources: the release tags, kubeadm's
//! backport pull requests and cluster-api's registry helper. Both are expanded to the seven references
//! of every release and compared release by release.

use std::collections::{BTreeMap, BTreeSet};

use super::{Catalogs, PatchVersion, KUBERNETES};

const READING: &str = include_str!("../../manifests/readings/kubernetes.txt");

/// What the reading says: every release, the releases tagged after the catalog's record, and the seven
/// references of each release.
struct Reading {
    releases: BTreeSet<PatchVersion>,
    unrecorded: Vec<PatchVersion>,
    images: BTreeMap<PatchVersion, Vec<String>>,
}

fn version(text: &str, line: usize) -> PatchVersion {
    text.parse()
        .unwrap_or_else(|()| panic!("reading line {line}: '{text}' is not a release"))
}

fn read(text: &str) -> Reading {
    let mut releases = BTreeSet::new();
    let mut unrecorded = Vec::new();
    // (image, first, last, value), in file order.
    let mut spans: Vec<(String, PatchVersion, Option<PatchVersion>, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["releases", minor, ref patches @ ..] => {
                for span in patches {
                    let (low, high) = span.split_once('-').unwrap_or((span, span));
                    for patch in low.parse::<u32>().unwrap()..=high.parse::<u32>().unwrap() {
                        releases.insert(version(&format!("{minor}.{patch}"), n + 1));
                    }
                }
            }
            ["unrecorded", ref versions @ ..] => {
                unrecorded.extend(versions.iter().map(|v| version(v, n + 1)));
            }
            [image, span, value] => {
                let (first, last) = span.split_once("..").expect("FIRST..LAST");
                let last = (!last.is_empty()).then(|| version(last, n + 1));
                spans.push((image.into(), version(first, n + 1), last, value.into()));
            }
            _ => panic!("reading line {}: {line}", n + 1),
        }
    }
    let images = releases
        .iter()
        .map(|&release| {
            let value = |image: &str| {
                let covering: Vec<&String> = spans
                    .iter()
                    .filter(|(name, first, last, _)| {
                        name == image && *first <= release && last.is_none_or(|l| release <= l)
                    })
                    .map(|(_, _, _, value)| value)
                    .collect();
                assert_eq!(
                    covering.len(),
                    1,
                    "the reading gives {release} {} values for {image}",
                    covering.len()
                );
                covering[0].clone()
            };
            let registry = value("registry");
            let component = |name: &str| format!("{registry}/{name}:v{release}");
            let refs = vec![
                component("kube-apiserver"),
                component("kube-controller-manager"),
                component("kube-scheduler"),
                component("kube-proxy"),
                format!("{registry}/pause:{}", value("pause")),
                format!("{registry}/etcd:{}", value("etcd")),
                format!("{registry}/{}", value("coredns")),
            ];
            (release, refs)
        })
        .collect();
    Reading {
        releases,
        unrecorded,
        images,
    }
}

/// The references the catalog gives each release, as `ferry list kubernetes@V` shows them.
fn catalog_images(catalogs: &Catalogs) -> BTreeMap<PatchVersion, Vec<String>> {
    catalogs
        .releases()
        .unwrap()
        .into_iter()
        .filter(|r| r.catalog == KUBERNETES)
        .map(|r| {
            (
                r.kubernetes_release
                    .expect("a kubernetes release knows its version"),
                r.images.iter().map(|i| i.image.clone()).collect(),
            )
        })
        .collect()
}

fn differences(
    catalog: &BTreeMap<PatchVersion, Vec<String>>,
    reading: &BTreeMap<PatchVersion, Vec<String>>,
) -> Vec<String> {
    let versions: BTreeSet<&PatchVersion> = catalog.keys().chain(reading.keys()).collect();
    versions
        .into_iter()
        .filter_map(|v| match (catalog.get(v), reading.get(v)) {
            (Some(a), Some(b)) if a == b => None,
            (Some(a), Some(b)) => Some(format!(
                "{v}: catalog {:?}, reading {:?}",
                a.iter().filter(|x| !b.contains(x)).collect::<Vec<_>>(),
                b.iter().filter(|x| !a.contains(x)).collect::<Vec<_>>()
            )),
            (Some(_), None) => Some(format!("{v}: only in the catalog")),
            (None, _) => Some(format!("{v}: only in the reading")),
        })
        .collect()
}

#[test]
fn every_release_agrees_with_the_second_reading() {
    let catalogs = Catalogs::load(&[]).unwrap();
    let reading = read(READING);
    let diff = differences(&catalog_images(&catalogs), &reading.images);
    assert!(
        diff.is_empty(),
        "manifests/kubernetes.toml and its second reading differ:\n{}",
        diff.join("\n")
    );
    assert_eq!(reading.releases.len(), 313);
}

/// Tags made after the catalog's record are not releases it claims to know: they are served from their
/// minor's newest row, with a warning.
#[test]
fn releases_tagged_after_the_record_are_served_with_a_warning() {
    let catalogs = Catalogs::load(&[]).unwrap();
    let reading = read(READING);
    assert!(!reading.unrecorded.is_empty());
    for version in reading.unrecorded {
        assert!(!reading.releases.contains(&version));
        let release = catalogs.find(&format!("kubernetes@{version}")).unwrap();
        assert!(release.assumed.is_some(), "{version}");
    }
}

#[test]
fn a_slip_in_either_reading_is_caught() {
    let catalogs = Catalogs::load(&[]).unwrap();
    let slipped = READING.replace(
        "etcd 1.28.6..1.28.7 3.5.10-0",
        "etcd 1.28.6..1.28.7 3.5.11-0",
    );
    let diff = differences(&catalog_images(&catalogs), &read(&slipped).images);
    assert_eq!(
        diff,
        [
            "1.28.6: catalog [\"registry.k8s.io/etcd:3.5.10-0\"], reading [\"registry.k8s.io/etcd:3.5.11-0\"]",
            "1.28.7: catalog [\"registry.k8s.io/etcd:3.5.10-0\"], reading [\"registry.k8s.io/etcd:3.5.11-0\"]"
        ]
    );
    let dropped = READING.replace("releases 1.17 0-9 11-17", "releases 1.17 0-17");
    assert_eq!(
        differences(&catalog_images(&catalogs), &read(&dropped).images),
        ["1.17.10: only in the reading"]
    );
}
