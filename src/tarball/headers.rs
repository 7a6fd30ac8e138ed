//! A bundle's table of contents read from its tar headers alone, each data region passed over by
//! seeking: where each blob is and the documents' bytes, for `merge`, which proves what it copies by the
//! output's sha256 rather than by reading every input byte first. Anything this reader does not expect
//! (a gzipped bundle, a header of another type or with a bad checksum, an entry past the end) makes it
//! answer `None`: the caller then reads the bundle the slow, explaining way.

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::layout::{BLOBS_DIR, DOCUMENTS};
use super::read::{accepted_header, Source};
use crate::digest::Digest;

/// A document larger than this is no ferry document.
const MAX_DOCUMENT: u64 = 20 << 20;

/// What a bundle's headers say it holds.
#[derive(Debug, Default)]
pub struct Contents {
    /// Each blob: (offset of its data in the joined parts, size).
    pub blobs: BTreeMap<Digest, (u64, u64)>,
    /// The bytes of each document entry ferry writes, by name.
    pub documents: BTreeMap<&'static str, Vec<u8>>,
}

/// Reads the headers of `source` (read with `read_documents`, the documents too); `Ok(None)` when the
/// bundle is not laid out as ferry writes it.
pub fn contents(source: &Source, read_documents: bool) -> io::Result<Option<Contents>> {
    if source.is_gzipped()? {
        return Ok(None);
    }
    let length = source.files.iter().try_fold(0u64, |total, file| {
        let length = std::fs::metadata(file)?.len();
        total
            .checked_add(length)
            .ok_or_else(|| io::Error::other("the parts' sizes overflow"))
    })?;
    let mut found = Contents::default();
    let mut offset = 0u64;
    loop {
        let Some(data) = offset.checked_add(512).filter(|&end| end <= length) else {
            return Ok(None);
        };
        let mut block = [0u8; 512];
        source.open_range(offset, 512)?.read_exact(&mut block)?;
        if block.iter().all(|&b| b == 0) {
            return Ok(Some(found));
        }
        let Some((name, size)) = accepted_header(&block) else {
            return Ok(None);
        };
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|padded| data.checked_add(padded))
            .filter(|&next| next <= length)
        else {
            return Ok(None);
        };
        if let Some(hex) = name.strip_prefix(BLOBS_DIR) {
            let Ok(digest) = Digest::from_hex(hex) else {
                return Ok(None);
            };
            if found.blobs.insert(digest, (data, size)).is_some() {
                return Ok(None);
            }
        } else {
            let Some(&document) = DOCUMENTS.iter().find(|&&known| known == name) else {
                return Ok(None);
            };
            if size > MAX_DOCUMENT || found.documents.contains_key(document) {
                return Ok(None);
            }
            let mut bytes = Vec::new();
            if read_documents {
                source.open_range(data, size)?.read_to_end(&mut bytes)?;
                if bytes.len() as u64 != size {
                    return Ok(None);
                }
            }
            found.documents.insert(document, bytes);
        }
        offset = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut header = tar::Header::new_ustar();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn source_of(bytes: &[u8]) -> (tempfile::TempDir, Source) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        std::fs::write(&path, bytes).unwrap();
        let source = Source::locate(&path).unwrap();
        (dir, source)
    }

    #[test]
    fn blobs_are_located_and_documents_read() {
        let blob = b"layer bytes";
        let digest = Digest::of(blob);
        let name = format!("{BLOBS_DIR}{}", digest.hex());
        let tar = tar_of(&[("index.json", b"{}"), (&name, blob)]);
        let (_dir, source) = source_of(&tar);
        let found = contents(&source, true).unwrap().unwrap();
        assert_eq!(found.documents["index.json"], b"{}");
        let (offset, size) = found.blobs[&digest];
        assert_eq!(&tar[offset as usize..(offset + size) as usize], blob);
        let unread = contents(&source, false).unwrap().unwrap();
        assert!(unread.documents["index.json"].is_empty());
    }

    #[test]
    fn what_ferry_does_not_write_is_left_to_the_slow_reader() {
        let unknown = tar_of(&[("etc/passwd", b"x")]);
        assert!(contents(&source_of(&unknown).1, true).unwrap().is_none());
        let mut bad_checksum = tar_of(&[("index.json", b"{}")]);
        bad_checksum[0] = b'j';
        assert!(contents(&source_of(&bad_checksum).1, true)
            .unwrap()
            .is_none());
        let whole = tar_of(&[("index.json", b"{}")]);
        let cut = &whole[..600];
        assert!(contents(&source_of(cut).1, true).unwrap().is_none());
    }
}
