//! A bundle's table of contents read from its tar headers alone, each data region passed over by
//! seeking: where each blob is and the documents' bytes, for `merge`, which proves what it copies by the
//! output's sha256 rather than by reading every input byte first. Anything this reader does not expect
//! (a gzipped bundle, a header of another type or with a bad checksum, an entry past the end) makes it
//! answer `None`: the caller then reads the bundle the slow, explaining way.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::layout::{BLOBS_DIR, DOCUMENTS};
use super::read::{accepted_header, Source, MAX_ENTRIES};
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
    contents_of(&Parts::open(source)?, read_documents)
}

/// [`contents`], read through `parts` (of a bundle that is not gzipped).
pub fn contents_of(parts: &Parts, read_documents: bool) -> io::Result<Option<Contents>> {
    let length = parts.length;
    let mut found = Contents::default();
    let mut offset = 0u64;
    for _ in 0..=MAX_ENTRIES {
        crate::interrupt::check()?;
        let Some(data) = offset.checked_add(512).filter(|&end| end <= length) else {
            return Ok(None);
        };
        let mut block = [0u8; 512];
        parts.read_exact_at(&mut block, offset)?;
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
                bytes = vec![0; size as usize];
                parts.read_exact_at(&mut bytes, data)?;
            }
            found.documents.insert(document, bytes);
        }
        offset = next;
    }
    // More entries than any bundle ferry reads.
    Ok(None)
}

/// The files of a source, opened once, read at offsets of their joined bytes.
pub struct Parts {
    files: Vec<(File, u64)>,
    length: u64,
}

impl Parts {
    pub fn open(source: &Source) -> io::Result<Parts> {
        let mut files = Vec::new();
        let mut length = 0u64;
        for path in &source.files {
            let file = File::open(path)?;
            let size = file.metadata()?.len();
            length = length
                .checked_add(size)
                .ok_or_else(|| io::Error::other("the parts' sizes overflow"))?;
            files.push((file, size));
        }
        Ok(Parts { files, length })
    }

    /// The bytes of all the parts, as they were when opened.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Fills `buf` from `offset` of the joined parts (a header may span two parts of a split bundle).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let (mut filled, mut start) = (0usize, 0u64);
        for (file, size) in &self.files {
            let end = start + size;
            let at = offset + filled as u64;
            if filled < buf.len() && at < end {
                let take = usize::try_from(end - at)
                    .map_or(buf.len() - filled, |left| left.min(buf.len() - filled));
                file.read_exact_at(&mut buf[filled..filled + take], at - start)?;
                filled += take;
            }
            start = end;
        }
        match filled == buf.len() {
            true => Ok(()),
            false => Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
        }
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

    /// Parts cut at sizes that are no multiple of 512: a header spans two of them.
    #[test]
    fn a_split_bundle_is_read_across_its_parts() {
        let blob = vec![7u8; 3000];
        let digest = Digest::of(&blob);
        let name = format!("{BLOBS_DIR}{}", digest.hex());
        let tar = tar_of(&[("index.json", b"{\"a\":1}"), (&name, &blob)]);
        let dir = tempfile::tempdir().unwrap();
        for (index, part) in tar.chunks(700).enumerate() {
            std::fs::write(dir.path().join(format!("b.tar.part-{index:03}")), part).unwrap();
        }
        let source = Source::locate(&dir.path().join("b.tar.part-000")).unwrap();
        let found = contents(&source, true).unwrap().unwrap();
        assert_eq!(found.documents["index.json"], b"{\"a\":1}");
        let (offset, size) = found.blobs[&digest];
        assert_eq!(&tar[offset as usize..(offset + size) as usize], &blob[..]);
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
