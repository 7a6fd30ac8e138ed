//! The single pass over the tar stream: every blob hashed as it passes (and, with `--deep`, inflated),
//! manifests and configs kept for the graph check, documents kept whole, the outer file hashed on a second
//! thread for the checksum files. In a tar that is not gzipped, each blob's bytes are the file's too: that
//! thread hashes the blob beside the file, two hashes for about the price of one.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::digest::{BackgroundHasher, Digest, Hashed};
use crate::layer_codec::{Codec, ContentHasher};
use crate::tarball::read::{Block, Entry, Observer};

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

    /// A blob of a base described for a delta (base.rs), not read: its tar header names it, and a delta
    /// takes none of its bytes.
    pub(super) fn vouched(digest: &Digest, size: u64, kept: Option<Vec<u8>>) -> SeenBlob {
        SeenBlob {
            size,
            actual: Some(digest.clone()),
            kept,
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

/// Hashes the raw file(s) as they are read, on a second thread: per part and whole, and the blobs
/// announced to it. The reader hands over each block it read (1 MiB) as it is, shared, not copied, once
/// the parser is past it.
pub(super) struct OuterHasher {
    hasher: BackgroundHasher,
}

impl OuterHasher {
    pub(super) fn start() -> OuterHasher {
        OuterHasher {
            hasher: BackgroundHasher::start(),
        }
    }

    /// The `size` bytes at `offset` of the file are blob `digest`: hashed beside the file.
    fn blob(&self, digest: &Digest, offset: u64, size: u64) {
        self.hasher.blob(digest, offset, size);
    }

    pub(super) fn finish(self) -> Hashed {
        self.hasher.finish()
    }
}

impl Observer for &OuterHasher {
    fn part_started(&mut self, index: usize) {
        if index > 0 {
            self.hasher.next_part();
        }
    }

    fn block(&mut self, block: &Block) {
        self.hasher.update(Arc::clone(block));
    }
}

impl Contents {
    fn damaged(&mut self, named: &Digest, actual: &Digest) {
        self.problems.push(format!(
            "blob {named} is damaged: its content hashes to {actual}"
        ));
    }

    /// The blobs announced to the file's hasher that are not what their names say, once it is done.
    pub(super) fn settle(&mut self, hashed: &Hashed) {
        for mismatch in &hashed.mismatches {
            self.damaged(&mismatch.digest, &mismatch.actual);
            if let Some(blob) = self.blobs.get_mut(&mismatch.digest) {
                blob.actual = Some(mismatch.actual.clone());
            }
        }
    }

    /// Whether a blob of `size` that starts with `head` is kept for parsing: a manifest or a config.
    pub(super) fn keeps(&self, head: &[u8], size: u64) -> bool {
        head.first() == Some(&b'{')
            && size <= MAX_KEPT_BLOB
            && self.kept_total + size <= MAX_KEPT_TOTAL
    }

    /// Takes the entry the parser is at. A blob whose bytes are the file's (the tar is not gzipped) is
    /// announced to the file's hasher, which hashes it beside the file; [`Contents::settle`] then reports
    /// what it found. A gzipped tar's blobs are hashed here, as they pass.
    pub(super) fn take(
        &mut self,
        entry: Entry<'_>,
        deep: bool,
        file_hasher: &OuterHasher,
    ) -> io::Result<()> {
        let Entry {
            name,
            size,
            offset,
            in_file,
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
        if in_file {
            file_hasher.blob(&named, offset, size);
        }
        let mut head = Vec::with_capacity(4);
        (&mut *data).take(4).read_to_end(&mut head)?;
        let keep = self.keeps(&head, size);
        let codec = Codec::sniff(&head);
        let mut kept = keep.then(|| Vec::with_capacity(size as usize));
        let mut inflater = deep.then(|| ContentHasher::new(codec, size)).flatten();
        let mut hasher = (!in_file).then(Sha256::new);
        let mut take = |bytes: &[u8]| {
            if let Some(hasher) = hasher.as_mut() {
                hasher.update(bytes);
            }
            if let Some(kept) = kept.as_mut() {
                kept.extend_from_slice(bytes);
            }
            if let Some(inflater) = inflater.as_mut() {
                inflater.write(bytes);
            }
        };
        // Hashed where the reader holds it: no copy on this thread.
        take(&head);
        loop {
            let available = data.fill_buf()?;
            if available.is_empty() {
                break;
            }
            take(available);
            let n = available.len();
            data.consume(n);
        }
        // Announced, it is taken for what it is named until settled.
        let actual = hasher.map_or_else(|| named.clone(), Digest::from_hasher);
        let uncompressed = match inflater.map(ContentHasher::finish) {
            Some(Ok(content)) => Some(content),
            Some(Err(problem)) => {
                self.problems.push(format!("blob {named}: {problem}"));
                None
            }
            None => None,
        };
        if actual != named {
            self.damaged(&named, &actual);
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
