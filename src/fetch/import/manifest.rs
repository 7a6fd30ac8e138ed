//! What an imported image becomes in the store: its config byte for byte, and a new OCI manifest naming
//! it and the layers' blobs.

use super::error::VendorError;
use super::prepare::Prepared;
use crate::cache::{BlobStore, CacheError};
use crate::digest::Digest;
use crate::image::{media, Descriptor, Image, ImageSource, Manifest};

/// Stores the config as it is and a new OCI manifest naming it and `layers`.
pub(super) fn finish(
    store: &BlobStore,
    image: Prepared,
    layers: Vec<Descriptor>,
) -> Result<Image, VendorError> {
    let config = store_document(store, media::OCI_CONFIG, &image.config)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(media::OCI_MANIFEST.into()),
        config,
        layers,
    };
    // serde_json writes struct fields in declaration order, without spaces: the bytes are fixed.
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest serializes");
    Ok(Image {
        reference: image.reference.clone(),
        source: ImageSource::Vendor {
            file: image.archive.path.clone(),
        },
        platform: image.platform,
        index_digest: None,
        manifest: store_document(store, media::OCI_MANIFEST, &manifest_bytes)?,
        config: manifest.config,
        layers: manifest.layers,
    })
}

fn store_document(
    store: &BlobStore,
    media_type: &str,
    bytes: &[u8],
) -> Result<Descriptor, CacheError> {
    let digest = Digest::of(bytes);
    store.put(&digest, bytes)?;
    Ok(Descriptor {
        media_type: media_type.into(),
        digest,
        size: bytes.len() as u64,
        platform: None,
        annotations: None,
    })
}
