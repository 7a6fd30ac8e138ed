//! The single pass over the tar stream: every blob hashed as it passes (and, with `--deep`, inflated),
//! manifests and configs kept for the graph check, documents kept whole, the outer file hashed on a second
//! thread for the checksum files.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::digest::{BackgroundHasher, Digest, Hashing};
use crate::layer_codec::{Codec, ContentHasher};
use crate::tarball::read::{Entry, Observer};

/// JSON documents larger than this are refused (containerd's own limit).
const MAX_DOCUMENT: u64 = 20 << 20;
/// Blobs that look like JSON and are at most this large are kept for parsing (manifests and configs):
/// the largest config pull accepts, so that whatever ferry bundles, ferry verifies.
const MAX_KEPT_BLOB: u64 = crate::image::limits::MAX_CONFIG;
/// All kept blobs together; a hostile bundle of many small JSON blobs stops here.
pub(super) const MAX_KEPT_TOTAL: u64 = 256 << 20;

/// A blob as it passed.
#[derive(Default)]
pub(super) struct SeenBlob {
    pub(super) size: u64,
    pub(super) actual: Option<Digest>,
    pub(super) kept: Option<Vec<u8>>,
    /// The digest of its decompressed content (`--deep`, gzip and zstd layers only).
    pub(super) uncompressed: Option<Digest>,
    /// Not read: expected from a delta's base that was not given, as the delta names it.
    elsewhere: bool,
}

impl SeenBlob {
    /// A blob of a delta's base that was not read, standing in as the delta names it.
    pub(super) fn elsewhere(digest: &Digest, size: u64) -> SeenBlob {
        SeenBlob {
            size,
            actual: Some(digest.clone()),
            elsewhere: true,
            ..SeenBlob::default()
        }
    }

    pub(super) fn is_elsewhere(&self) -> bool {
        self.elsewhere
    }
}

#[derive(Default)]
pub(super) struct Contents {
    pub(super) documents: BTreeMap<String, Vec<u8>>,
    pub(super) blobs: BTreeMap<Digest, SeenBlob>,
    pub(super) kept_total: u64,
    pub(super) problems: Vec<String>,
    pub(super) locations: BTreeMap<Digest, (u64, u64)>,
}

/// Hashes the raw file(s) as they are read, on a second thread: per part and whole. The reads come in
/// all sizes (512-byte tar headers, 256 KiB of a blob), so they are gathered into chunks of 1 MiB first:
/// one hand-over per MiB keeps both threads busy instead of waiting on each other.
pub(super) struct OuterHasher {
    hasher: BackgroundHasher,
    pending: Vec<u8>,
}

impl OuterHasher {
    const CHUNK: usize = 1 << 20;

    pub(super) fn start() -> OuterHasher {
        OuterHasher {
            hasher: BackgroundHasher::start(),
            pending: Vec::with_capacity(Self::CHUNK),
        }
    }

    fn hand_over(&mut self) {
        if !self.pending.is_empty() {
            let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(Self::CHUNK));
            self.hasher.update(chunk);
        }
    }

    pub(super) fn finish(mut self) -> (Vec<Digest>, Digest) {
        self.hand_over();
        self.hasher.finish()
    }
}

impl Observer for OuterHasher {
    fn part_started(&mut self, index: usize) {
        if index > 0 {
            self.hand_over();
            self.hasher.next_part();
        }
    }

    fn bytes(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let room = Self::CHUNK - self.pending.len();
            let (now, later) = chunk.split_at(chunk.len().min(room));
            self.pending.extend_from_slice(now);
            if self.pending.len() == Self::CHUNK {
                self.hand_over();
            }
            chunk = later;
        }
    }
}

impl Contents {
    pub(super) fn take(&mut self, entry: Entry<'_>, deep: bool) -> io::Result<()> {
        let Entry {
            name,
            size,
            offset,
            data,
        } = entry;
        let Some(hex) = name.strip_prefix(crate::tarball::layout::BLOBS_DIR) else {
            if size > MAX_DOCUMENT {
                self.problems.push(format!(
                    "{name} is {size} bytes, more than the {MAX_DOCUMENT} allowed"
                ));
                return Ok(());
            }
            let mut bytes = Vec::with_capacity(size as usize);
            data.read_to_end(&mut bytes)?;
            self.documents.insert(name, bytes);
            return Ok(());
        };
        let named = Digest::from_hex(hex).expect("the reader accepts only hex blob names");
        self.locations.insert(named.clone(), (offset, size));
        let mut head = Vec::with_capacity(4);
        (&mut *data).take(4).read_to_end(&mut head)?;
        let keep = head.first() == Some(&b'{')
            && size <= MAX_KEPT_BLOB
            && self.kept_total + size <= MAX_KEPT_TOTAL;
        let codec = Codec::sniff(&head);
        let mut data = head.chain(data);
        let mut kept = keep.then(|| Vec::with_capacity(size as usize));
        let mut inflater = deep.then(|| ContentHasher::new(codec, size)).flatten();
        let mut hashing = Hashing::new(io::sink());
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = data.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            hashing.write_all(&buffer[..n])?;
            if let Some(kept) = kept.as_mut() {
                kept.extend_from_slice(&buffer[..n]);
            }
            if let Some(inflater) = inflater.as_mut() {
                inflater.write(&buffer[..n]);
            }
        }
        let (_, actual, _) = hashing.finish();
        let uncompressed = match inflater.map(ContentHasher::finish) {
            Some(Ok(content)) => Some(content),
            Some(Err(problem)) => {
                self.problems.push(format!("blob {named}: {problem}"));
                None
            }
            None => None,
        };
        if actual != named {
            self.problems.push(format!(
                "blob {named} is damaged: its content hashes to {actual}"
            ));
        }
        self.kept_total += kept.as_ref().map_or(0, |k| k.len() as u64);
        self.blobs.insert(
            named,
            SeenBlob {
                size,
                actual: Some(actual),
                kept,
                uncompressed,
                elsewhere: false,
            },
        );
        Ok(())
    }
}
