//! Content digests (`sha256:<64 hex>`), the names every blob, manifest and bundle goes by.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// A sha256 content digest. Other algorithms are refused: every registry ferry meets uses sha256,
/// and accepting names we cannot check would defeat verification.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest {
    hex: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a sha256 digest (expected sha256: followed by 64 lowercase hex digits)")]
pub struct DigestError(pub String);

impl Digest {
    /// The digest of a byte slice; only for small documents (manifests, configs).
    pub fn of(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(hasher: Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
    }

    /// The 64 hex digits, as used in `blobs/sha256/<hex>` paths.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The digest of a bare hex string as found in file names.
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        format!("sha256:{hex}").parse()
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let hex = text
            .strip_prefix("sha256:")
            .ok_or_else(|| DigestError(text.to_string()))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError(text.to_string()));
        }
        Ok(Digest {
            hex: hex.to_string(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

serde_as_string!(Digest);

/// Hashes and counts every byte that passes through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// How many bytes passed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> (T, Digest, u64) {
        (self.inner, Digest::from_hasher(self.hasher), self.bytes)
    }

    /// The hasher itself, to go on hashing what follows (a resumed download).
    pub fn into_hasher(self) -> (Sha256, u64) {
        (self.hasher, self.bytes)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sha256() {
        let text = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let digest: Digest = text.parse().unwrap();
        assert_eq!(digest.to_string(), text);
        assert_eq!(Digest::of(b""), digest);
    }

    #[test]
    fn refuses_other_shapes() {
        for text in [
            "sha512:abcd",
            "sha256:ABC",
            "e3b0c442",
            "sha256:../../etc/passwd",
            "",
        ] {
            assert!(text.parse::<Digest>().is_err(), "{text}");
        }
    }

    #[test]
    fn hashing_writer_counts_and_hashes() {
        let mut writer = Hashing::new(Vec::new());
        writer.write_all(b"hello").unwrap();
        let (inner, digest, bytes) = writer.finish();
        assert_eq!(inner, b"hello");
        assert_eq!(bytes, 5);
        assert_eq!(digest, Digest::of(b"hello"));
    }
}
