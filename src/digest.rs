//! Content digests (`sha256:<64 hex>`), the names every blob, manifest and bundle goes by.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;
use std::sync::Arc;

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

/// An empty buffer of at least `capacity` bytes: one that a hashing thread gave back through `spare`, or
/// a new one.
pub fn reused(spare: &std::sync::mpsc::Receiver<Vec<u8>>, capacity: usize) -> Vec<u8> {
    let mut buffer = spare.try_recv().unwrap_or_default();
    buffer.clear();
    buffer.reserve_exact(capacity);
    buffer
}

/// SHA-256 on a thread of its own, of a stream cut into parts: each part's digest and the whole's, while
/// the caller reads or writes the next chunk. Chunks travel through a bounded queue, so memory stays flat:
/// four chunks keep the hasher busy (it runs at about disk speed) and bound the lag to 4 MiB of 1 MiB chunks.
pub struct BackgroundHasher {
    sender: Option<std::sync::mpsc::SyncSender<Option<Arc<Vec<u8>>>>>,
    worker: Option<std::thread::JoinHandle<(Vec<Digest>, Digest)>>,
    /// Chunks the worker hashed and no one else holds, to be written into again: reused pages, not
    /// fresh ones (a fresh page costs a fault and its zeroing, more than the copy into it).
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// How many hashed chunks wait to be reused, at most: as many as the queue holds.
const SPARE_CHUNKS: usize = 4;

impl BackgroundHasher {
    pub fn start() -> BackgroundHasher {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Option<Arc<Vec<u8>>>>(4);
        let (spare_sender, spare) = std::sync::mpsc::sync_channel(SPARE_CHUNKS);
        let worker = std::thread::spawn(move || {
            // While the first part passes, the whole's hash is that part's too: a stream of one part, the
            // common case, is hashed once. A part hasher starts only with the second part.
            let (mut whole, mut parts, mut part) = (Sha256::new(), Vec::new(), None::<Sha256>);
            for message in receiver {
                match message {
                    None => {
                        let finished = part.replace(Sha256::new()).unwrap_or_else(|| whole.clone());
                        parts.push(Digest::from_hasher(finished));
                    }
                    Some(chunk) => {
                        whole.update(chunk.as_slice());
                        if let Some(part) = part.as_mut() {
                            part.update(chunk.as_slice());
                        }
                        if let Ok(buffer) = Arc::try_unwrap(chunk) {
                            let _ = spare_sender.try_send(buffer);
                        }
                    }
                }
            }
            parts.push(Digest::from_hasher(part.unwrap_or_else(|| whole.clone())));
            (parts, Digest::from_hasher(whole))
        });
        BackgroundHasher {
            sender: Some(sender),
            worker: Some(worker),
            spare,
        }
    }

    /// An empty buffer of at least `capacity` bytes for a chunk to come: one hashed already, or a new one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        reused(&self.spare, capacity)
    }

    /// The bytes that follow belong to the next part.
    pub fn next_part(&self) {
        let _ = self.sender.as_ref().expect("open").send(None);
    }

    /// Hashes `chunk` next: a Vec of its own, or one shared with the caller (who may reuse it once the
    /// hasher has dropped it).
    pub fn update(&self, chunk: impl Into<Arc<Vec<u8>>>) {
        let _ = self.sender.as_ref().expect("open").send(Some(chunk.into()));
    }

    /// Each part's digest, in order, and the whole's.
    pub fn finish(mut self) -> (Vec<Digest>, Digest) {
        drop(self.sender.take());
        self.worker
            .take()
            .expect("started")
            .join()
            .expect("the hasher thread does not panic")
    }
}

/// A writer that keeps nothing: it hashes what it is given, on a [`BackgroundHasher`] thread.
pub struct HashingSink {
    pending: Vec<u8>,
    hasher: BackgroundHasher,
    bytes: u64,
}

impl HashingSink {
    /// The bytes handed to the hasher thread at a time.
    const CHUNK: usize = 1 << 20;

    pub fn new() -> HashingSink {
        HashingSink {
            pending: Vec::with_capacity(Self::CHUNK),
            hasher: BackgroundHasher::start(),
            bytes: 0,
        }
    }

    /// The digest of everything written, and its size.
    pub fn finish(self) -> (Digest, u64) {
        self.hasher.update(self.pending);
        (self.hasher.finish().1, self.bytes)
    }
}

impl Default for HashingSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for HashingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(Self::CHUNK - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() == Self::CHUNK {
            let full = std::mem::replace(&mut self.pending, self.hasher.buffer(Self::CHUNK));
            self.hasher.update(full);
        }
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
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
    fn the_background_hasher_hashes_each_part_and_the_whole() {
        let hasher = BackgroundHasher::start();
        hasher.update(b"ab".to_vec());
        hasher.update(b"c".to_vec());
        hasher.next_part();
        hasher.update(b"de".to_vec());
        let (parts, whole) = hasher.finish();
        assert_eq!(parts, [Digest::of(b"abc"), Digest::of(b"de")]);
        assert_eq!(whole, Digest::of(b"abcde"));
        assert_eq!(BackgroundHasher::start().finish().1, Digest::of(b""));
        let mut sink = HashingSink::new();
        let big = vec![7u8; (1 << 20) + 5];
        sink.write_all(&big).unwrap();
        assert_eq!(sink.finish(), (Digest::of(&big), big.len() as u64));
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
