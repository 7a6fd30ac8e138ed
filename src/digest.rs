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

    /// The digest a [`sha256_pair::Sha256`] comes to.
    pub fn finished(hasher: sha256_pair::Sha256) -> Digest {
        Digest {
            hex: hex::encode(hasher.finalize()),
        }
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

/// SHA-256 on a thread of its own, of a stream cut into parts, and of blobs within it: each part's digest,
/// each blob's and the whole's, while the caller reads or writes the next chunk. A blob starts at a
/// multiple of 64 bytes in the stream (a tar's entries start at multiples of 512), so its hash and the
/// whole's (and a delta's full bundle's, [`BackgroundHasher::start_cut_from_full`]) advance side by side
/// over the same bytes, for about the price of one ([`sha256_pair::update_all`]). Chunks travel through
/// a bounded queue, so memory stays flat: four chunks keep the hasher busy (it runs at about disk speed)
/// and bound the lag to 4 MiB of 1 MiB chunks.
pub struct BackgroundHasher {
    sender: Option<std::sync::mpsc::SyncSender<Message>>,
    worker: Option<std::thread::JoinHandle<Hashed>>,
    /// Chunks the worker hashed and no one else holds, to be written into again: reused pages, not
    /// fresh ones (a fresh page costs a fault and its zeroing, more than the copy into it). In a mutex,
    /// never contended, so that the hasher can be shared (verify announces blobs while it reads).
    spare: std::sync::Mutex<std::sync::mpsc::Receiver<Vec<u8>>>,
}

enum Message {
    /// The next bytes: the output's, or (not `output`) bytes of the full stream that are not the
    /// output's (a delta leaves out the blobs its bases hold).
    Chunk {
        bytes: Arc<Vec<u8>>,
        output: bool,
    },
    /// The full stream ends here: its digest, its length and the blobs in it that are not what their
    /// names say, back through the channel; what follows is the output's alone.
    EndFull(std::sync::mpsc::SyncSender<(Digest, u64, Vec<Mismatch>)>),
    NextPart,
    Blob(Span),
    /// The blob announced last ends at this offset of the stream, before the end announced: it was cut
    /// short, and what follows it is not its.
    Cut(u64),
}

/// The bytes `at..end` of the stream are blob `digest`.
struct Span {
    digest: Digest,
    at: u64,
    end: u64,
}

/// A blob whose bytes in the stream hash to something else than its name.
#[derive(Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub digest: Digest,
    pub actual: Digest,
    /// Its bytes in the stream.
    pub read: u64,
}

/// What a [`BackgroundHasher`] found.
#[derive(Debug)]
pub struct Hashed {
    /// Each part's digest, in order.
    pub parts: Vec<Digest>,
    pub whole: Digest,
    /// The blobs announced that are not what their names say, in stream order.
    pub mismatches: Vec<Mismatch>,
}

/// How many hashed chunks wait to be reused, at most: as many as the queue holds.
const SPARE_CHUNKS: usize = 4;

/// The hashes a [`BackgroundHasher`]'s thread keeps.
struct Lanes {
    /// The full stream an output is cut from (a delta's full bundle): every byte, the output's and the
    /// shadow ones. Spans are offsets in it while it lasts.
    full: Option<sha256_pair::Sha256>,
    whole: sha256_pair::Sha256,
    /// While the first part passes, the whole's hash is that part's too: a stream of one part, the
    /// common case, is hashed once. A part hasher starts only with the second part.
    part: Option<sha256_pair::Sha256>,
    parts: Vec<Digest>,
    /// The stream offset of the next byte (of the full stream, while there is one).
    at: u64,
    /// Blobs announced and not yet passed, in stream order; the first one's hash is `blob`.
    spans: std::collections::VecDeque<Span>,
    blob: sha256_pair::Sha256,
    mismatches: Vec<Mismatch>,
}

impl Lanes {
    fn new(full: bool) -> Lanes {
        Lanes {
            full: full.then(sha256_pair::Sha256::new),
            whole: sha256_pair::Sha256::new(),
            part: None,
            parts: Vec::new(),
            at: 0,
            spans: std::collections::VecDeque::new(),
            blob: sha256_pair::Sha256::new(),
            mismatches: Vec::new(),
        }
    }

    /// Hashes the next `bytes` of the stream: the output's (`output`), or only the full stream's.
    fn take(&mut self, mut bytes: &[u8], output: bool) {
        use sha256_pair::update_all;
        while !bytes.is_empty() {
            self.close_passed();
            let (in_blob, until) = match self.spans.front() {
                Some(span) if span.at <= self.at => (true, span.end - self.at),
                next => (false, next.map_or(u64::MAX, |span| span.at - self.at)),
            };
            let n = bytes
                .len()
                .min(usize::try_from(until).unwrap_or(usize::MAX));
            let (these, whole, blob) = (&bytes[..n], &mut self.whole, &mut self.blob);
            match (self.full.as_mut(), output, in_blob) {
                (Some(full), true, true) => update_all([full, whole, blob], these),
                (Some(full), true, false) => update_all([full, whole], these),
                (Some(full), false, true) => update_all([full, blob], these),
                (Some(full), false, false) => full.update(these),
                (None, true, true) => update_all([whole, blob], these),
                (None, true, false) => whole.update(these),
                // Bytes of a full stream that ended: no writer sends any (a delta's writes to its output
                // again as soon as the full bundle ends), and none of its hashes would take them.
                (None, false, _) => debug_assert!(false, "bytes of a full stream after its end"),
            }
            if let Some(part) = self.part.as_mut().filter(|_| output) {
                part.update(these);
            }
            self.at += n as u64;
            bytes = &bytes[n..];
        }
        self.close_passed();
    }

    /// Ends the full stream: its digest and length, and the mismatches found so far (every blob in it
    /// passed), which are the caller's now.
    fn end_full(&mut self) -> (Digest, u64, Vec<Mismatch>) {
        self.close_unfinished();
        let full = self
            .full
            .take()
            .expect("a stream cut from a full one, whose end comes once");
        let length = full.length();
        (
            Digest::finished(full),
            length,
            std::mem::take(&mut self.mismatches),
        )
    }

    /// Checks every blob the stream has passed the end of (an empty one as soon as it is reached).
    fn close_passed(&mut self) {
        while let Some(span) = self.spans.front() {
            if span.end > self.at {
                return;
            }
            let span = self.spans.pop_front().expect("there");
            let actual = Digest::finished(std::mem::take(&mut self.blob));
            if actual != span.digest {
                self.mismatches.push(Mismatch {
                    digest: span.digest,
                    actual,
                    read: span.end - span.at,
                });
            }
        }
    }

    fn next_part(&mut self) {
        let finished = self
            .part
            .replace(sha256_pair::Sha256::new())
            .unwrap_or_else(|| self.whole.clone());
        self.parts.push(Digest::finished(finished));
    }

    /// A blob the stream ended before the end of is not what its name says: what it hashed to is what
    /// of it came (nothing, for one not begun).
    fn close_unfinished(&mut self) {
        while let Some(span) = self.spans.pop_front() {
            let read = self.at.saturating_sub(span.at).min(span.end - span.at);
            self.mismatches.push(Mismatch {
                digest: span.digest,
                actual: Digest::finished(std::mem::take(&mut self.blob)),
                read,
            });
        }
    }

    fn finish(mut self) -> Hashed {
        self.close_unfinished();
        let last = self.part.take().unwrap_or_else(|| self.whole.clone());
        self.parts.push(Digest::finished(last));
        Hashed {
            parts: self.parts,
            whole: Digest::finished(self.whole),
            mismatches: self.mismatches,
        }
    }
}

impl BackgroundHasher {
    pub fn start() -> BackgroundHasher {
        Self::start_with(false)
    }

    /// A hasher of a stream cut from a full one, which it hashes too: the output's bytes through
    /// [`BackgroundHasher::update`], the others through [`BackgroundHasher::shadow`], until
    /// [`BackgroundHasher::end_full`]. Blobs are announced at their offsets in the full stream.
    pub fn start_cut_from_full() -> BackgroundHasher {
        Self::start_with(true)
    }

    fn start_with(full: bool) -> BackgroundHasher {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Message>(4);
        let (spare_sender, spare) = std::sync::mpsc::sync_channel(SPARE_CHUNKS);
        let worker = std::thread::spawn(move || {
            let mut lanes = Lanes::new(full);
            for message in receiver {
                match message {
                    Message::NextPart => lanes.next_part(),
                    Message::Chunk { bytes, output } => {
                        lanes.take(bytes.as_slice(), output);
                        if let Ok(buffer) = Arc::try_unwrap(bytes) {
                            let _ = spare_sender.try_send(buffer);
                        }
                    }
                    Message::EndFull(reply) => {
                        let _ = reply.send(lanes.end_full());
                    }
                    Message::Blob(span) => {
                        lanes.spans.push_back(span);
                        lanes.close_passed();
                    }
                    Message::Cut(end) => {
                        if let Some(span) = lanes.spans.back_mut() {
                            span.end = end.clamp(span.at, span.end);
                        }
                        lanes.close_passed();
                    }
                }
            }
            lanes.finish()
        });
        BackgroundHasher {
            sender: Some(sender),
            worker: Some(worker),
            spare: std::sync::Mutex::new(spare),
        }
    }

    fn send(&self, message: Message) {
        // The worker ends only when the sender is dropped: a send cannot fail before `finish`.
        let _ = self.sender.as_ref().expect("open").send(message);
    }

    /// An empty buffer of at least `capacity` bytes for a chunk to come: one hashed already, or a new one.
    pub fn buffer(&self, capacity: usize) -> Vec<u8> {
        match self.spare.lock() {
            Ok(spare) => reused(&spare, capacity),
            Err(_) => Vec::with_capacity(capacity),
        }
    }

    /// A buffer of `len` bytes to be filled before it is handed over: a chunk hashed already, its old
    /// bytes still in it to be written over (its pages are not zeroed again), or a new one.
    pub fn chunk_to_fill(&self, len: usize) -> Vec<u8> {
        let mut buffer = match self.spare.lock() {
            Ok(spare) => spare.try_recv().unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        buffer.resize(len, 0);
        buffer
    }

    /// The bytes that follow belong to the next part.
    pub fn next_part(&self) {
        self.send(Message::NextPart);
    }

    /// Hashes `chunk` next: a Vec of its own, or one shared with the caller (who may reuse it once the
    /// hasher has dropped it).
    pub fn update(&self, chunk: impl Into<Arc<Vec<u8>>>) {
        self.send(Message::Chunk {
            bytes: chunk.into(),
            output: true,
        });
    }

    /// Hashes `chunk` next as bytes of the full stream only (see [`BackgroundHasher::start_cut_from_full`]).
    pub fn shadow(&self, chunk: impl Into<Arc<Vec<u8>>>) {
        self.send(Message::Chunk {
            bytes: chunk.into(),
            output: false,
        });
    }

    /// Ends the full stream, once every byte of it was handed over: its digest, its length, and the
    /// blobs in it that are not what their names say.
    pub fn end_full(&self) -> (Digest, u64, Vec<Mismatch>) {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        self.send(Message::EndFull(reply));
        answer
            .recv()
            .expect("the hasher thread answers while it is open")
    }

    /// The `size` bytes from offset `at` of the stream (a multiple of 64, at or after the end of the blob
    /// announced before) are blob `digest`: they are hashed on their own too, and a blob that is not what
    /// its name says is among [`Hashed::mismatches`]. Announced before its bytes are handed over, or
    /// with its first chunk still to come.
    pub fn blob(&self, digest: &Digest, at: u64, size: u64) {
        self.send(Message::Blob(Span {
            digest: digest.clone(),
            at,
            // A size no stream reaches stays out of reach: the blob ends short of it, a mismatch.
            end: at.saturating_add(size),
        }));
    }

    /// The blob announced last ends at offset `end` of the stream, short of its size: announced before
    /// the bytes after `end` are handed over.
    pub fn cut(&self, end: u64) {
        self.send(Message::Cut(end));
    }

    /// Each part's digest, the whole's, and the blobs that are not what their names say.
    pub fn finish(mut self) -> Hashed {
        drop(self.sender.take());
        self.worker
            .take()
            .expect("started")
            .join()
            .expect("the hasher thread does not panic")
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
        let hashed = hasher.finish();
        assert_eq!(hashed.parts, [Digest::of(b"abc"), Digest::of(b"de")]);
        assert_eq!(hashed.whole, Digest::of(b"abcde"));
        assert_eq!(BackgroundHasher::start().finish().whole, Digest::of(b""));
    }

    /// A delta's stream, cut from its full bundle's: the full one hashed whole, the output only from what
    /// it was given as its own, each blob in either checked (a damaged one in the full stream's part
    /// alone named), and the output going on after the full stream ended.
    #[test]
    fn a_stream_cut_from_a_full_one_hashes_both_and_every_blob_in_them() {
        let bytes: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 253) as u8).collect();
        let (head, held, carried, tail) = (
            &bytes[..512],
            &bytes[512..3584],
            &bytes[3584..8192],
            &bytes[8192..],
        );
        let hasher = BackgroundHasher::start_cut_from_full();
        hasher.update(head.to_vec());
        hasher.blob(&Digest::of(b"not these bytes"), 512, held.len() as u64);
        hasher.shadow(held.to_vec());
        hasher.blob(&Digest::of(carried), 3584, carried.len() as u64);
        for chunk in carried.chunks(1000) {
            hasher.update(chunk.to_vec());
        }
        hasher.shadow(tail.to_vec());
        let (full, length, mismatches) = hasher.end_full();
        assert_eq!((full, length), (Digest::of(&bytes), bytes.len() as u64));
        assert_eq!(
            mismatches,
            [Mismatch {
                digest: Digest::of(b"not these bytes"),
                actual: Digest::of(held),
                read: held.len() as u64,
            }]
        );
        hasher.update(b"record".to_vec());
        let hashed = hasher.finish();
        let output = [head, carried, b"record"].concat();
        assert_eq!(hashed.whole, Digest::of(&output));
        assert_eq!(hashed.parts, [Digest::of(&output)]);
        assert!(hashed.mismatches.is_empty());
    }

    /// Blobs announced at their offsets: each hashed from its own bytes however the chunks cut them, an
    /// empty one, one cut short (hashed as far as it went), and a damaged one named with what it hashed to.
    #[test]
    fn the_background_hasher_checks_each_blob_announced() {
        let stream: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let hasher = BackgroundHasher::start();
        hasher.blob(&Digest::of(&stream[64..1000]), 64, 936);
        hasher.blob(&Digest::of(b""), 1024, 0);
        hasher.blob(&Digest::of(&stream[1024..1600]), 1024, 1000);
        hasher.cut(1600);
        hasher.blob(&Digest::of(b"something else"), 2048, 2000);
        // Past the stream's end: the first begun and cut off by it, the second never begun.
        hasher.blob(&Digest::of(&stream[4608..]), 4608, 1000);
        hasher.blob(&Digest::of(b""), 5120, u64::MAX);
        for chunk in stream.chunks(700) {
            hasher.update(chunk.to_vec());
        }
        let hashed = hasher.finish();
        assert_eq!(hashed.whole, Digest::of(&stream));
        assert_eq!(
            hashed.mismatches,
            [
                Mismatch {
                    digest: Digest::of(b"something else"),
                    actual: Digest::of(&stream[2048..4048]),
                    read: 2000,
                },
                Mismatch {
                    digest: Digest::of(&stream[4608..]),
                    actual: Digest::of(&stream[4608..]),
                    read: 392,
                },
                Mismatch {
                    digest: Digest::of(b""),
                    actual: Digest::of(b""),
                    read: 0,
                },
            ]
        );
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
