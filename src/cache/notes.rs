//! Notes: small files of facts derived from blobs, under `notes/<kind>/<hex of a key>`, so that later
//! runs need neither the network nor the work again. Each is written whole or not at all (a temporary
//! file renamed into place), so a reader never sees half a note; a missing or unreadable note is only a
//! fact not known.

use std::fs;
use std::io::{Read, Write};
use std::path::PathBuf;

use super::{io_error, persist, BlobStore, CacheError};
use crate::digest::Digest;
use crate::image::{Image, Platform};
use crate::reference::Reference;

/// Far more than any note: an image's note lists its layers.
const MAX_NOTE: u64 = 1 << 20;
/// The kind of note that says which image a reference resolved to on a platform.
const IMAGES: &str = "images";

impl BlobStore {
    fn note_path(&self, kind: &str, key: &Digest) -> PathBuf {
        self.root.join("notes").join(kind).join(key.hex())
    }

    /// The note of `kind` under `key`, if one was written.
    pub fn note(&self, kind: &str, key: &Digest) -> Option<Vec<u8>> {
        let mut bytes = Vec::new();
        fs::File::open(self.note_path(kind, key))
            .and_then(|file| file.take(MAX_NOTE).read_to_end(&mut bytes))
            .ok()?;
        Some(bytes)
    }

    /// Writes the note of `kind` under `key`, replacing an earlier one whole; a note that already says
    /// `bytes` is left as it is (a warm rebuild notes again what every image resolved to, unchanged).
    pub fn write_note(&self, kind: &str, key: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        if self.note(kind, key).as_deref() == Some(bytes) {
            return Ok(());
        }
        let path = self.note_path(kind, key);
        let dir = path.parent().expect("notes live in a directory");
        fs::create_dir_all(dir).map_err(io_error(dir, "cannot create directory"))?;
        let mut temp = self.temp_file()?;
        temp.write_all(bytes)
            .map_err(io_error(temp.path(), "cannot write note"))?;
        persist(temp, &path, "cannot write note")
    }

    /// Notes what each image's reference resolved to on its platform, so that `diff` can size images
    /// without the network.
    pub fn remember_images(&self, images: &[Image]) -> Result<(), CacheError> {
        for image in images {
            let bytes = serde_json::to_vec(image).expect("an image serializes");
            self.write_note(
                IMAGES,
                &image_key(&image.reference, &image.platform),
                &bytes,
            )?;
        }
        Ok(())
    }

    /// The image `reference` resolved to on `platform` when last fetched, if its blobs are all still
    /// here.
    pub fn recall_image(&self, reference: &Reference, platform: &Platform) -> Option<Image> {
        let bytes = self.note(IMAGES, &image_key(reference, platform))?;
        let image: Image = serde_json::from_slice(&bytes).ok()?;
        let complete = std::iter::once(&image.manifest)
            .chain(image.blobs())
            .all(|blob| self.contains(&blob.digest, Some(blob.size)));
        (complete && &image.reference == reference).then_some(image)
    }
}

fn image_key(reference: &Reference, platform: &Platform) -> Digest {
    Digest::of(format!("{reference} {platform}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{media, Descriptor, ImageSource};

    #[test]
    fn an_image_is_recalled_while_its_blobs_are_all_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let put = |bytes: &[u8]| {
            let digest = Digest::of(bytes);
            store.put(&digest, bytes).unwrap();
            Descriptor {
                media_type: media::OCI_MANIFEST.into(),
                digest,
                size: bytes.len() as u64,
                platform: None,
                annotations: None,
            }
        };
        let image = Image {
            reference: "quay.io/a/b:1".parse().unwrap(),
            source: ImageSource::Registry {
                fetched_from: "quay.io".into(),
            },
            platform: Platform::linux_amd64(),
            index_digest: None,
            manifest: put(b"manifest"),
            config: put(b"config"),
            layers: vec![put(b"layer")],
        };
        store.remember_images(std::slice::from_ref(&image)).unwrap();
        let arm: Platform = "linux/arm64".parse().unwrap();
        assert_eq!(
            store.recall_image(&image.reference, &image.platform),
            Some(image.clone())
        );
        assert_eq!(store.recall_image(&image.reference, &arm), None);
        std::fs::remove_file(store.path(&image.layers[0].digest)).unwrap();
        assert_eq!(store.recall_image(&image.reference, &image.platform), None);
    }
}
