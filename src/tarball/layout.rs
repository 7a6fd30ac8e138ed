//! The bundle's layout: the names of its entries and the JSON documents beside the blobs, as the one set
//! of types the writer, the verifier, the vendor importer (a docker save and an OCI archive share these
//! formats) and delivery use.
//!
//! - `oci-layout`: [`LAYOUT_BYTES`];
//! - `index.json`: a [`BundleIndex`], one entry per image (its manifest, or ferry's index of its
//!   platforms) named by [`NAME_ANNOTATION`] and [`REF_NAME_ANNOTATION`], and [`Pins`] for the two
//!   documents that are not blobs;
//! - `manifest.json`: docker's view, one [`DockerEntry`] per image;
//! - `ferry.json`: the metadata (metadata.rs);
//! - `ferry-delta.json`: only in a delta, what its bases supply (delta.rs);
//! - `blobs/sha256/<hex>`: [`blob_path`].
//!
//! Every document is serialized one way, [`pretty`]: `verify` re-serializes what it reads and compares
//! bytes, so a flipped byte that still parses is caught too.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

use crate::digest::Digest;
use crate::image::{media, Descriptor, Index};
use crate::reference::Reference;

pub const LAYOUT_JSON: &str = "oci-layout";
pub const LAYOUT_BYTES: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;
pub const METADATA_JSON: &str = "ferry.json";
pub const INDEX_JSON: &str = "index.json";
pub const MANIFEST_JSON: &str = "manifest.json";
pub const DELTA_JSON: &str = "ferry-delta.json";
pub const BLOBS_DIR: &str = "blobs/sha256/";
/// The documents a bundle begins with, in this order (a delta carries the full bundle's, byte for byte).
pub const LEADING_DOCUMENTS: [&str; 4] = [LAYOUT_JSON, METADATA_JSON, INDEX_JSON, MANIFEST_JSON];
/// Every entry of a bundle that is not a blob.
pub const DOCUMENTS: [&str; 5] = [
    LAYOUT_JSON,
    METADATA_JSON,
    INDEX_JSON,
    MANIFEST_JSON,
    DELTA_JSON,
];

/// The index annotation containerd reads an image's full name from.
pub const NAME_ANNOTATION: &str = "io.containerd.image.name";
/// The OCI annotation for an image's name in a layout: its tag, as containerd and podman read it; skopeo
/// and podman write the full name there.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// `blobs/sha256/<hex>`: where a blob lives inside the bundle.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}{}", digest.hex())
}

/// The one serialization of every JSON document in a bundle: pretty, keys sorted, a final newline.
pub fn pretty(value: &impl Serialize) -> Vec<u8> {
    let value = serde_json::to_value(value).expect("bundle documents serialize");
    let mut bytes = serde_json::to_vec_pretty(&value).expect("JSON values serialize");
    bytes.push(b'\n');
    bytes
}

/// `index.json`: an OCI image index of every image, whose own annotations pin the documents that are
/// not blobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<Pins>,
}

/// `ferry.json` and `manifest.json` by digest, so that `verify` can prove every byte of the bundle from
/// the index down.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    #[serde(rename = "io.github.ferry.metadata.digest")]
    pub metadata: Digest,
    #[serde(rename = "io.github.ferry.docker-manifest.digest")]
    pub docker_manifest: Digest,
}

impl BundleIndex {
    pub fn new(manifests: Vec<Descriptor>, pins: Pins) -> BundleIndex {
        BundleIndex {
            schema_version: 2,
            media_type: media::OCI_INDEX.to_string(),
            manifests,
            annotations: Some(pins),
        }
    }
}

/// The annotations of an image's entry in `index.json`: its full name and its tag, the way containerd
/// and podman read names. An image without a tag (pulled by digest alone) has none.
pub fn name_annotations(reference: &Reference) -> Option<BTreeMap<String, String>> {
    let (name, tag) = (reference.tagged_name()?, reference.tag()?);
    Some(BTreeMap::from([
        (NAME_ANNOTATION.to_string(), name),
        (REF_NAME_ANNOTATION.to_string(), tag.to_string()),
    ]))
}

/// The name an index entry gives its image; an image pulled by digest alone has none.
pub fn index_name(descriptor: &Descriptor) -> Option<&str> {
    descriptor
        .annotations
        .as_ref()?
        .get(NAME_ANNOTATION)
        .map(String::as_str)
}

/// The bytes of the index ferry writes to list one image's platforms: the only ones verify accepts.
pub fn platform_index_bytes(manifests: Vec<Descriptor>) -> Vec<u8> {
    pretty(&Index {
        schema_version: 2,
        media_type: Some(media::OCI_INDEX.to_string()),
        manifests,
    })
}

/// One image of docker's `manifest.json` (dockerd's `manifestItem`): paths of entries of the tar. Other
/// fields dockerd writes (`Parent`, `LayerSources`) are not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerEntry {
    #[serde(rename = "Config")]
    pub config: String,
    /// Fully qualified, so that podman does not file them under `localhost/`; `null` reads as none.
    #[serde(rename = "RepoTags", default, deserialize_with = "null_as_empty")]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
}

impl DockerEntry {
    pub fn new<'a>(
        reference: &Reference,
        config: &Digest,
        layers: impl IntoIterator<Item = &'a Digest>,
    ) -> DockerEntry {
        DockerEntry {
            config: blob_path(config),
            repo_tags: reference.tagged_name().into_iter().collect(),
            layers: layers.into_iter().map(blob_path).collect(),
        }
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_named_by_its_tagged_name_and_tag() {
        let reference: Reference = "huawei-csi:4.8.0".parse().unwrap();
        let annotations = name_annotations(&reference).unwrap();
        let descriptor = Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::of(b"m"),
            size: 1,
            platform: None,
            annotations: Some(annotations.clone()),
        };
        assert_eq!(
            index_name(&descriptor),
            Some("docker.io/library/huawei-csi:4.8.0")
        );
        assert_eq!(annotations[REF_NAME_ANNOTATION], "4.8.0");
        let pinned: Reference = format!("quay.io/a/b@{}", Digest::of(b"m")).parse().unwrap();
        assert_eq!(name_annotations(&pinned), None);
    }

    #[test]
    fn docker_manifest_entries_read_as_docker_writes_them() {
        let saved: Vec<DockerEntry> = serde_json::from_str(
            r#"[{"Config":"abc.json","RepoTags":null,"Layers":["a/layer.tar"],"Parent":""}]"#,
        )
        .unwrap();
        assert_eq!(
            saved,
            [DockerEntry {
                config: "abc.json".into(),
                repo_tags: Vec::new(),
                layers: vec!["a/layer.tar".into()],
            }]
        );
    }
}
