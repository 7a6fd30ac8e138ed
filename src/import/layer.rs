//! One layer's bytes on their way into the store, and what an earlier run made of them.
//!
//! docker-save layers are uncompressed tars: they are gzipped in one streaming pass that hashes what goes in
//! (the diff_id, checked against the config) and what comes out (the new blob's digest). A layer that is
//! already gzip or zstd is stored as it is, its content hashed through a decompressor. Which blob an uncompressed
//! layer became is noted per compression setting, so that a warm rebuild never compresses again.

use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;

use flate2::write::GzEncoder;

use crate::cache::{BlobStore, CacheError};
use crate::digest::{Digest, Hashing};
use crate::layer_codec::{Codec, ContentHasher};

/// The one compression setting, part of every note's key: another backend or level gives other bytes.
///
/// zlib-rs at level 1. Measured with flate2 (release build, one core):
/// - on 90 MB of /usr/lib binaries: level 1 keeps 43.4 % at 215 MB/s, level 2 35.7 % at 121 MB/s,
///   level 3 34.4 % at 108 MB/s; on other /usr tars level 1 kept 43-50 %, level 2 36-42 %;
/// - an earlier measurement on another 86 MB layer saw 71 % at level 1 (zlib-rs's level 1 is
///   deflate_quick, static Huffman codes), so a vendor whose layers compress that badly gets a larger bundle.
///
/// The benchmark's targets decide it: a cold bundle must take at most half of skopeo's time, and the
/// bundle at most 0.75x docker save's bytes. With level 2 the cold build measured 0.63x skopeo (vendor
/// compression was 80 % of it) at 0.60x docker's bytes; level 1 makes compression 1.8x faster and still
/// leaves the size far inside its target (see README's benchmark table).
pub const COMPRESSION: &str = "gzip-zlib-rs-1";
const LEVEL: u32 = 1;

/// What went into the store: its digest and size, and the digest of its uncompressed content.
#[derive(Debug)]
pub(super) struct Written {
    pub digest: Digest,
    pub size: u64,
    pub diff_id: Digest,
}

/// Gzips an uncompressed layer from `input` into `output`. flate2 writes a gzip header with mtime 0 and no
/// file name, so the same input and setting always give the same bytes.
pub(super) fn gzip(input: impl Read, output: impl Write) -> io::Result<Written> {
    let mut content = Hashing::new(input);
    let mut encoder = GzEncoder::new(Hashing::new(output), flate2::Compression::new(LEVEL));
    io::copy(&mut content, &mut encoder)?;
    let (_, digest, size) = encoder.finish()?.finish();
    let (_, diff_id, _) = content.finish();
    Ok(Written {
        digest,
        size,
        diff_id,
    })
}

/// Copies a compressed layer of `size` bytes from `input` into `output` as it is, hashing its content
/// on the way.
pub(super) fn keep(
    mut input: impl Read,
    output: impl Write,
    codec: Codec,
    size: u64,
) -> io::Result<Written> {
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
    let note = fs::read_to_string(store.note_path(COMPRESSION, diff_id)).ok()?;
    let (digest, size) = note.trim_end().split_once(' ')?;
    let (digest, size): (Digest, u64) = (digest.parse().ok()?, size.parse().ok()?);
    store
        .contains(&digest, Some(size))
        .then_some((digest, size))
}

/// Notes which blob `diff_id` became.
pub(super) fn remember(
    store: &BlobStore,
    diff_id: &Digest,
    written: &Written,
) -> Result<(), CacheError> {
    let note = store.note_path(COMPRESSION, diff_id);
    write_atomically(
        &note,
        format!("{} {}\n", written.digest, written.size).as_bytes(),
    )
    .map_err(|source| CacheError::Io {
        path: note,
        action: "cannot write note",
        source,
    })
}

/// Writes a temporary file beside `path` and renames it, so that a reader never sees half a file.
fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().expect("notes live in a directory");
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(contents)?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_output_carries_no_time_or_name_and_is_reproducible() {
        let input = b"a layer's bytes, a layer's bytes, a layer's bytes".repeat(100);
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let written = gzip(&input[..], &mut first).unwrap();
        gzip(&input[..], &mut second).unwrap();
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
        gzip(&b"content"[..], &mut gzipped).unwrap();
        let mut stored = Vec::new();
        let written = keep(&gzipped[..], &mut stored, Codec::Gzip, gzipped.len() as u64).unwrap();
        assert_eq!(stored, gzipped);
        assert_eq!(
            (written.digest, written.diff_id),
            (Digest::of(&gzipped), Digest::of(b"content"))
        );
    }
}
