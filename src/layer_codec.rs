//! How a layer blob is compressed, and the hash of its content (the diff_id a config records) learned by
//! pushing the blob's bytes through a decompressor as they pass, whatever else reads them.
//!
//! Registries serve gzip and, more and more, zstd layers (`…tar+zstd`: podman push
//! `--compression-format zstd`, BuildKit `compression=zstd`); docker-save writes them uncompressed. The
//! codec is told by the blob's first bytes, which is what the runtimes' loaders do too. Memory is flat: the
//! zstd window is capped at the library's default limit (128 MiB), whatever a frame asks for.
//!
//! Decompressing costs time in proportion to the output, which a hostile blob chooses: deflate cannot
//! expand more than 1032 times, but zstd can expand tens of thousands of times. So the content may be at
//! most [`MAX_EXPANSION`] times the blob (plus [`EXPANSION_MARGIN`]): a zstd layer costs no more time than
//! a gzip layer of its size could, and no honest gzip layer is ever refused.

use std::io::{self, Write};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;

/// Deflate's own limit: a 258-byte match in at most 2 bits, 1032:1 for a long run of one byte.
pub const MAX_EXPANSION: u64 = 1032;
/// Room for small blobs, whose headers weigh more than their content.
pub const EXPANSION_MARGIN: u64 = 64 << 20;
/// zstd's default limit for a frame's window (2^27 bytes): what the zstd CLI and containerd accept.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// The one setting ferry compresses uncompressed (docker-save) layers with, named in every bundle's
/// `ferry.json` and in the cache's notes of what each layer became: another library, level or block size
/// gives other bytes, so the name changes with any of them.
///
/// libdeflate at level [`LEVEL`], one gzip member per [`BLOCK`] bytes of input, the blocks compressed on
/// every core (fetch/import/members.rs). Measured per core (CPU time, release build, one run, libdeflater
/// 1.26 against flate2 1.x on zlib-rs 0.6):
/// - on 90 MB of /usr/lib binaries: libdeflate level 1 keeps 35.0 % at 231 MB/s, level 2 33.6 % at
///   167 MB/s; zlib-rs level 1 (before) kept 43.4 % at 230 MB/s;
/// - on the benchmark's vendor layers: libdeflate level 1 keeps 58.2 %, zlib-rs level 1 63.0 %, at the same
///   speed.
///
/// So libdeflate's level 1 costs what zlib-rs's did for 5-20 % fewer bytes (zlib-rs's level 1 uses static
/// Huffman codes only). Cutting the layer into blocks is what lets one large layer use every core; blocks of
/// 512 KiB give output 0.1 point larger than 1 MiB blocks (58.3 % of the input against 58.2 %, 35.1 % against
/// 35.0 %) and 0.1 point smaller than 256 KiB blocks, at the same speed, and keep the blocks in flight to a few MiB
/// (members.rs): the cold bundle's peak memory stays under its 32 MiB target.
pub const COMPRESSION: &str = "gzip-libdeflate-1-members-512KiB";

/// libdeflate's level, as [`COMPRESSION`] names it.
pub const LEVEL: i32 = 1;

/// The input bytes of each gzip member, as [`COMPRESSION`] names it.
pub const BLOCK: usize = 512 << 10;

/// How a layer is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Plain,
    Gzip,
    Zstd,
}

impl Codec {
    /// From the first bytes of a blob: the gzip and zstd magic numbers; anything else is taken as plain.
    pub fn sniff(head: &[u8]) -> Codec {
        match head {
            [0x1f, 0x8b, ..] => Codec::Gzip,
            [0x28, 0xb5, 0x2f, 0xfd, ..] => Codec::Zstd,
            _ => Codec::Plain,
        }
    }

    /// From a layer's media type, OCI (`…tar+gzip`, `…tar+zstd`) or Docker (`…diff.tar.gzip`).
    pub fn of_media_type(media_type: &str) -> Codec {
        if media_type.ends_with("+zstd") {
            Codec::Zstd
        } else if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Codec::Gzip
        } else {
            Codec::Plain
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Plain => "uncompressed",
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }
}

/// Why a blob's content could not be hashed.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("it is not valid {codec}: {source}", codec = .codec.name())]
    Invalid {
        codec: Codec,
        #[source]
        source: io::Error,
    },
    #[error(
        "it expands more than {MAX_EXPANSION} times its {size} bytes: refused as a decompression bomb"
    )]
    Bomb { size: u64 },
}

/// Takes a compressed blob's bytes in order and hashes its content.
pub struct ContentHasher {
    codec: Codec,
    size: u64,
    /// After the first failure, the failure; later bytes are ignored.
    decoder: io::Result<Decoder>,
}

enum Decoder {
    Gzip(Box<flate2::write::MultiGzDecoder<Content>>),
    Zstd(zstd::stream::write::Decoder<'static, Content>),
}

impl ContentHasher {
    /// For a blob of `size` bytes compressed with `codec`; `None` for [`Codec::Plain`], whose content is
    /// the blob itself.
    pub fn new(codec: Codec, size: u64) -> Option<ContentHasher> {
        let content = Content {
            hasher: Sha256::new(),
            bytes: 0,
            limit: size
                .saturating_mul(MAX_EXPANSION)
                .saturating_add(EXPANSION_MARGIN),
        };
        let decoder = match codec {
            Codec::Plain => return None,
            Codec::Gzip => Ok(Decoder::Gzip(Box::new(flate2::write::MultiGzDecoder::new(
                content,
            )))),
            Codec::Zstd => zstd_decoder(content).map(Decoder::Zstd),
        };
        Some(ContentHasher {
            codec,
            size,
            decoder,
        })
    }

    pub fn write(&mut self, chunk: &[u8]) {
        let written = match &mut self.decoder {
            Ok(Decoder::Gzip(decoder)) => decoder.write_all(chunk),
            Ok(Decoder::Zstd(decoder)) => decoder.write_all(chunk),
            Err(_) => return,
        };
        if let Err(e) = written {
            self.decoder = Err(e);
        }
    }

    /// The digest of the content, once every byte of the blob was written.
    pub fn finish(self) -> Result<Digest, ContentError> {
        let finished = self.decoder.and_then(|decoder| match decoder {
            Decoder::Gzip(decoder) => decoder.finish(),
            Decoder::Zstd(decoder) => decoder.finish(),
        });
        match finished {
            Ok(content) => Ok(Digest::from_hasher(content.hasher)),
            Err(e) if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) => {
                Err(ContentError::Bomb { size: self.size })
            }
            Err(source) => Err(ContentError::Invalid {
                codec: self.codec,
                source,
            }),
        }
    }
}

fn zstd_decoder(content: Content) -> io::Result<zstd::stream::write::Decoder<'static, Content>> {
    let mut decoder = zstd::stream::write::Decoder::new(content)?;
    decoder.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
    Ok(decoder)
}

/// Hashes the content and refuses more than `limit` bytes of it.
struct Content {
    hasher: Sha256,
    bytes: u64,
    limit: u64,
}

impl Write for Content {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes = self.bytes.saturating_add(buf.len() as u64);
        if self.bytes > self.limit {
            return Err(io::Error::other(TooLarge));
        }
        self.hasher.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the content is larger than the bomb guard allows")]
struct TooLarge;

#[cfg(test)]
mod tests {
    use super::*;

    fn content_of(codec: Codec, blob: &[u8]) -> Result<Digest, ContentError> {
        let mut hasher = ContentHasher::new(codec, blob.len() as u64).expect("compressed");
        for chunk in blob.chunks(1000) {
            hasher.write(chunk);
        }
        hasher.finish()
    }

    fn text(size: usize) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..size)
            .map(|_| b"layer bytes "[rng.usize(..12)])
            .collect()
    }

    #[test]
    fn codecs_are_told_by_magic_bytes_and_media_types() {
        assert_eq!(Codec::sniff(&[0x1f, 0x8b, 8, 0]), Codec::Gzip);
        assert_eq!(Codec::sniff(&[0x28, 0xb5, 0x2f, 0xfd]), Codec::Zstd);
        assert_eq!(Codec::sniff(b"usr/"), Codec::Plain);
        assert_eq!(Codec::sniff(&[0x1f]), Codec::Plain);
        for (media_type, codec) in [
            ("application/vnd.oci.image.layer.v1.tar+zstd", Codec::Zstd),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Codec::Gzip),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Codec::Gzip,
            ),
            ("application/vnd.oci.image.layer.v1.tar", Codec::Plain),
        ] {
            assert_eq!(Codec::of_media_type(media_type), codec, "{media_type}");
        }
    }

    #[test]
    fn zstd_and_gzip_blobs_hash_to_their_content() {
        let content = text(300_000);
        let zstd = zstd::encode_all(&content[..], 3).unwrap();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&content).unwrap();
        let gzip = gzip.finish().unwrap();
        assert_eq!(Codec::sniff(&zstd), Codec::Zstd);
        assert_eq!(
            content_of(Codec::Zstd, &zstd).unwrap(),
            Digest::of(&content)
        );
        assert_eq!(
            content_of(Codec::Gzip, &gzip).unwrap(),
            Digest::of(&content)
        );
        assert!(ContentHasher::new(Codec::Plain, 10).is_none());
    }

    #[test]
    fn a_damaged_or_cut_zstd_blob_is_not_valid_zstd() {
        let content = text(300_000);
        let mut encoder = zstd::Encoder::new(Vec::new(), 3).unwrap();
        encoder.include_checksum(true).unwrap();
        encoder.write_all(&content).unwrap();
        let zstd = encoder.finish().unwrap();
        let mut flipped = zstd.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x40;
        let cut = &zstd[..zstd.len() - 10];
        for (case, blob) in [("flipped", &flipped[..]), ("cut", cut)] {
            let err = content_of(Codec::Zstd, blob).unwrap_err();
            assert!(
                err.to_string().starts_with("it is not valid zstd: "),
                "{case}: {err}"
            );
        }
    }

    #[test]
    fn a_zstd_bomb_is_refused_once_it_outgrows_what_gzip_could_do() {
        let zeros = vec![0u8; 200 << 20];
        let bomb = zstd::encode_all(&zeros[..], 19).unwrap();
        assert!(
            (bomb.len() as u64) * MAX_EXPANSION + EXPANSION_MARGIN < zeros.len() as u64,
            "{} bytes expand beyond the guard",
            bomb.len()
        );
        let err = content_of(Codec::Zstd, &bomb).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "it expands more than 1032 times its {} bytes: refused as a decompression bomb",
                bomb.len()
            )
        );
        // The densest gzip passes: deflate cannot outgrow the guard.
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gzip.write_all(&zeros).unwrap();
        let gzip = gzip.finish().unwrap();
        assert_eq!(content_of(Codec::Gzip, &gzip).unwrap(), Digest::of(&zeros));
    }
}
