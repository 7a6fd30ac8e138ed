//! One layer's bytes on their way into the store, and what an earlier run made of them.
//!
//! docker-save layers are uncompressed tars: they are gzipped in one streaming pass that hashes what goes in
//! (the diff_id, checked against the config) and what comes out (the new blob's digest). A layer that is
//! already gzip or zstd is stored as it is, its content hashed through a decompressor. Which blob an uncompressed
//! layer became is noted per compression setting, so that a warm rebuild never compresses again.

use std::io::{self, BufWriter, Read, Write};

use super::archive::{DockerSave, Span};
use super::error::VendorError;
use super::members::GzipPool;
use crate::cache::{BlobStore, CacheError};
use crate::digest::{Digest, Hashing};
use crate::image::{media, Descriptor};
use crate::interrupt::Cancel;
use crate::layer_codec::{Codec, ContentHasher, COMPRESSION};
use crate::progress::{Counted, Id, Reporter};

/// A layer as its archive holds it.
pub(super) struct SavedLayer {
    pub entry: String,
    pub span: Span,
    pub diff_id: Digest,
    /// Compressed layers (docker save writes none, OCI archives may) are stored as they are.
    pub codec: Codec,
}

/// Stores one layer of `saved` (gzipping it unless it is gzip already) into a temporary file in the
/// cache, checks it against its diff_id, then moves it into place under the digest learned while
/// writing. What is read is reported to the task `id`; `cancel` stops the reading.
pub(super) fn bring_in(
    store: &BlobStore,
    pool: &GzipPool,
    cancel: &Cancel,
    reporter: &dyn Reporter,
    saved: &DockerSave,
    layer: &SavedLayer,
    id: Id,
) -> Result<Descriptor, VendorError> {
    let archive = &saved.path;
    let failed = |source| VendorError::Layer {
        archive: archive.clone(),
        entry: layer.entry.clone(),
        source,
    };
    // Unbuffered: gzip reads whole blocks, and keep 256 KiB chunks, straight from the file into their own
    // buffers, with one positioned read each.
    let input = Counted::new(cancel.reader(saved.read(layer.span)), reporter, id);
    let temp = store.temp_file()?;
    // Gzip members (a few hundred KiB of a 512 KiB block) and kept chunks (256 KiB) are larger than the
    // buffer, so they go to the file as they are, without a copy into it; only tiny members (a block of
    // zeros) are gathered.
    let mut output = BufWriter::with_capacity(64 << 10, temp.as_file());
    let written = match layer.codec {
        Codec::Plain => gzip(pool, input, &mut output),
        codec => keep(input, &mut output, codec, layer.span.size),
    };
    let written = written
        .and_then(|written| output.flush().map(|()| written))
        .map_err(failed)?;
    drop(output);
    if written.diff_id != layer.diff_id {
        return Err(VendorError::DiffIdMismatch {
            archive: archive.clone(),
            entry: layer.entry.clone(),
            expected: layer.diff_id.clone(),
            actual: written.diff_id,
        });
    }
    store.adopt(temp, &written.digest)?;
    if layer.codec == Codec::Plain {
        remember(store, &layer.diff_id, &written)?;
    }
    Ok(layer_descriptor(layer.codec, written.digest, written.size))
}

/// What went into the store: its digest and size, and the digest of its uncompressed content.
#[derive(Debug)]
pub(super) struct Written {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Gzips an uncompressed layer from `input` into `output` on the `pool`'s threads, hashing what is read and
/// what is written as it passes. libdeflate writes gzip headers with mtime 0 and no file name, so the same input and
/// setting always give the same bytes.
pub(super) fn gzip(pool: &GzipPool, input: impl Read, output: impl Write) -> io::Result<Written> {
    let mut content = Hashing::new(input);
    let mut stored = Hashing::new(output);
    pool.gzip_members(&mut content, &mut stored)?;
    let (_, digest, size) = stored.finish();
    let (_, diff_id, _) = content.finish();
    Ok(Written {
        digest,
        size,
        diff_id,
    })
}

/// Copies a compressed layer of `size` bytes from `input` into `output` as it is, hashing its content
/// on the way.
fn keep(mut input: impl Read, output: impl Write, codec: Codec, size: u64) -> io::Result<Written> {
    let mut stored = Hashing::new(output);
    let mut content = ContentHasher::new(codec, size).expect("a compressed layer");
    let mut buffer = vec![0u8; 1 << 18];
    loop {
        let n = input.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        stored.write_all(&buffer[..n])?;
        content.write(&buffer[..n]);
    }
    let diff_id = content.finish().map_err(io::Error::other)?;
    let (_, digest, size) = stored.finish();
    Ok(Written {
        digest,
        size,
        diff_id,
    })
}

/// The blob the uncompressed layer `diff_id` became under [`COMPRESSION`] in an earlier run, if it is still
/// stored: the note holds `sha256:<hex> <size>`.
pub(super) fn remembered(store: &BlobStore, diff_id: &Digest) -> Option<(Digest, u64)> {
    let note = String::from_utf8(store.note(COMPRESSION, diff_id)?).ok()?;
    let (digest, size) = note.trim_end().split_once(' ')?;
    let (digest, size): (Digest, u64) = (digest.parse().ok()?, size.parse().ok()?);
    store
        .contains(&digest, Some(size))
        .then_some((digest, size))
}

/// Notes which blob `diff_id` became.
fn remember(store: &BlobStore, diff_id: &Digest, written: &Written) -> Result<(), CacheError> {
    let note = format!("{} {}\n", written.digest, written.size);
    store.write_note(COMPRESSION, diff_id, note.as_bytes())
}

/// The descriptor of a stored layer: gzip, unless it came zstd-compressed and was kept so.
pub(super) fn layer_descriptor(codec: Codec, digest: Digest, size: u64) -> Descriptor {
    let media_type = match codec {
        Codec::Zstd => media::OCI_LAYER_ZSTD,
        Codec::Plain | Codec::Gzip => media::OCI_LAYER_GZIP,
    };
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        platform: None,
        annotations: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::members::with_gzip_pool;
    use super::*;

    #[test]
    fn gzip_output_carries_no_time_or_name_and_is_reproducible() {
        let input = b"a layer's bytes, a layer's bytes, a layer's bytes".repeat(100);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let written = with_gzip_pool(|pool| gzip(pool, &input[..], &mut first)).unwrap();
        with_gzip_pool(|pool| gzip(pool, &input[..], &mut second)).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            &first[..4],
            &[0x1f, 0x8b, 8, 0],
            "deflate, no flags: no file name, comment or extra field"
        );
        assert_eq!(&first[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(
            (written.digest, written.size),
            (Digest::of(&first), first.len() as u64)
        );
        assert_eq!(written.diff_id, Digest::of(&input));
    }

    #[test]
    fn a_gzip_layer_is_kept_as_it_is_and_hashed_inside() {
        let mut gzipped = Vec::new();
        with_gzip_pool(|pool| gzip(pool, &b"content"[..], &mut gzipped)).unwrap();
        let mut stored = Vec::new();
        let written = keep(&gzipped[..], &mut stored, Codec::Gzip, gzipped.len() as u64).unwrap();
        assert_eq!(stored, gzipped);
        assert_eq!(
            (written.digest, written.diff_id),
            (Digest::of(&gzipped), Digest::of(b"content"))
        );
    }
}
