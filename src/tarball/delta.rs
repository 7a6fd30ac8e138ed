//! Deltas: a bundle that carries only what its bases lack. A delta holds the full bundle's documents
//! byte for byte, every manifest and config, and the blobs no base holds; `ferry-delta.json` (a
//! [`DeltaRecord`]) names the full bundle it stands for (so that a merge proves it rebuilt exactly that),
//! each base by the sha256 of its file, and which blobs come from which base.
//!
//! What the connected side knows of a base is a [`BundleDescription`]: read from the base itself, or
//! from what `ferry inspect --json` printed of it (the same fields, among others).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::reference::Reference;

/// Version of `ferry-delta.json`'s layout.
pub const DELTA_FORMAT: u32 = 1;

/// How many of a base's images are named as holding one blob: places to mount it from, not an inventory.
pub const MOUNT_SOURCES: usize = 4;

/// `ferry-delta.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaRecord {
    pub format: u32,
    /// The full bundle the delta and its bases make.
    pub bundle: FullBundle,
    /// In the order given to `--since`; each blob is expected from the first base that holds it.
    pub bases: Vec<BaseRecord>,
}

/// The bundle a direct `ferry bundle` of the same images writes, which `ferry merge` rebuilds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FullBundle {
    /// Its name as `ferry bundle` gives it by default, the one its signature's checksum line names.
    pub name: String,
    pub sha256: Digest,
    pub bytes: u64,
    /// The mtime of its entries (`SOURCE_DATE_EPOCH` when it was built).
    pub mtime: u64,
    /// With `--sign`: the signature `NAME.sig` of the full bundle would have, so that the merged bundle is
    /// checked like one built directly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One base: a file the far side holds, named by its sha256, and the blobs the delta takes from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseRecord {
    /// Its file name when the delta was made.
    pub name: String,
    pub sha256: Digest,
    pub bytes: u64,
    /// `catalog@release` of what it carries, for people.
    pub release: Option<String>,
    pub blobs: Vec<ExpectedBlob>,
}

impl BaseRecord {
    /// `NAME (sha256 HEX)`: how messages name a base.
    pub fn shown(&self) -> String {
        format!("{} (sha256 {})", self.name, self.sha256.hex())
    }

    /// The bytes of the blobs expected from it.
    pub fn blob_bytes(&self) -> u64 {
        self.blobs.iter().map(|b| b.size).sum()
    }
}

/// A blob the delta leaves to a base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedBlob {
    pub digest: Digest,
    pub size: u64,
    /// A few of the base's images that hold it: where `ferry push` of the base put it in a registry.
    pub images: Vec<Reference>,
}

/// What a delta needs to know of a base: its identity and every blob it holds. `ferry inspect --json`
/// prints these fields (among others), so that its output, kept on the connected side, stands for the
/// base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleDescription {
    /// The bundle's file name (the whole's, for a split bundle).
    pub file: String,
    pub sha256: Digest,
    pub bytes: u64,
    /// `catalog@release`, when it was built from a catalog release.
    pub release: Option<String>,
    /// Every blob inside.
    pub blobs: Vec<HeldBlob>,
    /// Each image (once per platform) and the blobs it references.
    pub images: Vec<DescribedImage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldBlob {
    pub digest: Digest,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DescribedImage {
    pub name: String,
    pub blobs: Vec<Digest>,
}

impl BundleDescription {
    /// How a delta's default name calls it: its release or releases as its own name does
    /// (`huawei-csi-4.5.0`, `kubernetes-1.28.3+huawei-csi-4.5.0`), or, for a bundle of no release or one
    /// whose releases would make a long name, the start of its sha256. The release comes from the base's
    /// `ferry.json`: whatever is not a letter, a digit or one of `.+_-` becomes `-`, so it can never make
    /// a path.
    fn label(&self) -> String {
        match &self.release {
            Some(release) if release.len() <= MAX_LABEL => release
                .chars()
                .map(|c| match c.is_ascii_alphanumeric() || ".+_-".contains(c) {
                    true => c,
                    false => '-',
                })
                .collect(),
            _ => format!("sha256-{}", &self.sha256.hex()[..12]),
        }
    }

    /// The images that reference each blob, in the description's order.
    fn holders(&self) -> BTreeMap<&Digest, Vec<Reference>> {
        let mut holders: BTreeMap<&Digest, Vec<Reference>> = BTreeMap::new();
        for image in &self.images {
            let Ok(reference) = image.name.parse::<Reference>() else {
                continue;
            };
            for digest in &image.blobs {
                let names = holders.entry(digest).or_default();
                if names.len() < MOUNT_SOURCES && !names.contains(&reference) {
                    names.push(reference.clone());
                }
            }
        }
        holders
    }
}

/// Which of `blobs` (the full bundle's, by digest and size) each base supplies: a blob that is not
/// `kept` (manifests, configs and indexes stay in the delta) goes to the first base holding it with the
/// same size. Returns the records of the bases, without the full bundle.
pub fn assign(
    blobs: &BTreeMap<Digest, u64>,
    kept: &std::collections::BTreeSet<Digest>,
    bases: &[BundleDescription],
) -> Vec<BaseRecord> {
    let mut records: Vec<BaseRecord> = bases
        .iter()
        .map(|base| BaseRecord {
            name: base.file.clone(),
            sha256: base.sha256.clone(),
            bytes: base.bytes,
            release: base.release.clone(),
            blobs: Vec::new(),
        })
        .collect();
    let held: Vec<BTreeMap<&Digest, u64>> = bases
        .iter()
        .map(|base| base.blobs.iter().map(|b| (&b.digest, b.size)).collect())
        .collect();
    let holders: Vec<_> = bases.iter().map(BundleDescription::holders).collect();
    for (digest, &size) in blobs.iter().filter(|(d, _)| !kept.contains(*d)) {
        let Some(from) = held.iter().position(|h| h.get(digest) == Some(&size)) else {
            continue;
        };
        records[from].blobs.push(ExpectedBlob {
            digest: digest.clone(),
            size,
            images: holders[from].get(digest).cloned().unwrap_or_default(),
        });
    }
    records
}

/// A base's label longer than this (a site of many products) is its sha256's start instead.
const MAX_LABEL: usize = 64;

/// Bases named in a delta's default name, the others counted: a name stays far below the 255 bytes a
/// file system allows however many bases `--since` gives.
const NAMED_BASES: usize = 2;

/// `huawei-csi-4.8.0-k8s1.20-up-linux-amd64.tar` from a base labelled `huawei-csi-4.5.0` →
/// `huawei-csi-4.8.0-k8s1.20-up-linux-amd64-delta-from-huawei-csi-4.5.0.tar`. Several bases are joined
/// by `-and-` (a label joins a bundle's own products by `+`), past two as `-and-N-more`.
pub fn delta_file_name(full: &str, bases: &[BundleDescription]) -> String {
    let stem = full.strip_suffix(".tar").unwrap_or(full);
    let mut labels: Vec<String> = bases
        .iter()
        .take(NAMED_BASES)
        .map(BundleDescription::label)
        .collect();
    if bases.len() > NAMED_BASES {
        labels.push(format!("{}-more", bases.len() - NAMED_BASES));
    }
    format!("{stem}-delta-from-{}.tar", labels.join("-and-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(file: &str, release: Option<&str>, blobs: &[(&[u8], u64)]) -> BundleDescription {
        BundleDescription {
            file: file.into(),
            sha256: Digest::of(file.as_bytes()),
            bytes: 1,
            release: release.map(str::to_string),
            blobs: blobs
                .iter()
                .map(|(bytes, size)| HeldBlob {
                    digest: Digest::of(bytes),
                    size: *size,
                })
                .collect(),
            images: vec![DescribedImage {
                name: "quay.io/a/b:1".into(),
                blobs: blobs.iter().map(|(bytes, _)| Digest::of(bytes)).collect(),
            }],
        }
    }

    /// A blob goes to the first base that holds it at its size; what must stay in the delta stays.
    #[test]
    fn each_blob_comes_from_the_first_base_that_holds_it() {
        let blobs: BTreeMap<Digest, u64> = [(b"layer" as &[u8], 5), (b"config", 6), (b"new", 3)]
            .iter()
            .map(|(bytes, size)| (Digest::of(bytes), *size))
            .collect();
        let kept = [Digest::of(b"config")].into_iter().collect();
        let bases = [
            base(
                "old.tar",
                Some("huawei-csi@4.5.0"),
                &[(b"layer", 99), (b"config", 6)],
            ),
            base("older.tar", None, &[(b"layer", 5)]),
        ];
        let records = assign(&blobs, &kept, &bases);
        assert!(
            records[0].blobs.is_empty(),
            "a size that differs is not the blob"
        );
        assert_eq!(records[1].blobs.len(), 1);
        assert_eq!(records[1].blobs[0].digest, Digest::of(b"layer"));
        assert_eq!(
            records[1].blobs[0].images,
            ["quay.io/a/b:1".parse::<Reference>().unwrap()]
        );
    }

    /// A delta's name says what it is and from what: each base's releases as its own name gives them, or
    /// its sha256's start; a release that could make a path, or a long name, is never copied into it.
    #[test]
    fn a_deltas_name_says_from_what_and_stays_a_short_file_name() {
        let named = |release: Option<&str>, file: &str| base(file, release, &[]);
        let sha = |file: &str| format!("sha256-{}", &Digest::of(file.as_bytes()).hex()[..12]);
        let full = "kubernetes-1.28.4+huawei-csi-4.8.0-k8s1.28-linux-amd64.tar";
        let site = named(Some("kubernetes@1.28.3+huawei-csi@4.5.0"), "site.tar");
        assert_eq!(
            delta_file_name(full, std::slice::from_ref(&site)),
            "kubernetes-1.28.4+huawei-csi-4.8.0-k8s1.28-linux-amd64-delta-from-kubernetes-1.28.3+huawei-csi-4.5.0.tar"
        );
        let older = named(None, "older.tar");
        assert_eq!(
            delta_file_name("x-linux-amd64.tar", &[site, older]),
            format!(
                "x-linux-amd64-delta-from-kubernetes-1.28.3+huawei-csi-4.5.0-and-{}.tar",
                sha("older.tar")
            )
        );
        let hostile = named(Some("../../etc/x@1\n"), "hostile.tar");
        let long = named(Some(&"kubernetes@1.28.3+".repeat(5)), "long.tar");
        assert_eq!(
            delta_file_name("x.tar", &[hostile, long]),
            format!("x-delta-from-..-..-etc-x-1--and-{}.tar", sha("long.tar"))
        );
        let many: Vec<BundleDescription> = (0..40)
            .map(|i| {
                named(
                    Some("kubernetes@1.28.3+huawei-csi@4.5.0"),
                    &format!("{i}.tar"),
                )
            })
            .collect();
        let name = delta_file_name(full, &many);
        assert_eq!(
            name,
            "kubernetes-1.28.4+huawei-csi-4.8.0-k8s1.28-linux-amd64-delta-from-kubernetes-1.28.3+huawei-csi-4.5.0-and-kubernetes-1.28.3+huawei-csi-4.5.0-and-38-more.tar"
        );
        assert!(name.len() < 255);
    }
}
