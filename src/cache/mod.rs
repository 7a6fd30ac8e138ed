//! The content-addressed blob store every pulled byte lands in.
//!
//! ```text
//! <root>/ferry-v1/
//!   CACHEDIR.TAG
//!   blobs/sha256/<hex>      complete, verified blobs (manifests, configs, layers); never modified
//!   partial/<hex>           a download in progress, locked by the process writing it; resumable
//!   partial/.new-*          a blob being made (a vendor layer compressed), locked; swept once its process is gone
//!   notes/<kind>/<hex>      derived facts (what a reference resolved to, what a layer was compressed into)
//! ```
//! A blob reaches `blobs/` only by rename after its size and sha256 were checked, so a reader never
//! sees a half-written or wrong blob, and a crash leaves at most a partial file to resume from.
//! Several ferry processes may share one cache: each partial file is held under an exclusive lock.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::{Digest, Hashing};
use crate::interrupt;

mod notes;

/// Bump when the layout changes; an old cache is then simply ignored.
const LAYOUT: &str = "ferry-v1";

/// Names the temporary files of blobs whose digest is known only once written.
const TEMP_PREFIX: &str = ".new-";

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache {path}: {action}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("blob {expected} does not match its digest: received {actual_size} bytes hashing to {actual}")]
    DigestMismatch {
        expected: Digest,
        actual: Digest,
        actual_size: u64,
    },
    #[error("blob {digest} has {actual} bytes, but its descriptor says {expected}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Renames a finished temporary file to `path`: readers see the whole file or none.
fn persist(
    temp: tempfile::NamedTempFile,
    path: &Path,
    action: &'static str,
) -> Result<(), CacheError> {
    temp.persist(path)
        .map(drop)
        .map_err(|e| io_error(path, action)(e.error))
}

#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// The default location: `$XDG_CACHE_HOME/ferry` (or the platform's cache directory).
    pub fn default_root() -> PathBuf {
        dirs::cache_dir()
            .unwrap_or_else(std::env::temp_dir)
            .join("ferry")
    }

    /// Opens (creating when needed) the store under `root`.
    pub fn open(root: &Path) -> Result<BlobStore, CacheError> {
        let root = root.join(LAYOUT);
        for dir in [root.join("blobs/sha256"), root.join("partial")] {
            fs::create_dir_all(&dir).map_err(io_error(&dir, "cannot create directory"))?;
        }
        // Layers a killed run was compressing; downloads in `partial/` are kept to be resumed.
        interrupt::sweep(&root.join("partial"), |name| name.starts_with(TEMP_PREFIX));
        let tag = root.join("CACHEDIR.TAG");
        if !tag.exists() {
            // Tells backup tools this directory can be rebuilt; see https://bford.info/cachedir/
            let _ = fs::write(
                &tag,
                "Signature: 8a477f597d28d172789f06886806bc55\n# ferry's blob cache\n",
            );
        }
        Ok(BlobStore { root })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// Whether a complete blob is stored. Its content was verified before it was stored, so the size
    /// check only guards against a descriptor that disagrees.
    pub fn contains(&self, digest: &Digest, size: Option<u64>) -> bool {
        fs::metadata(self.path(digest))
            .is_ok_and(|m| m.is_file() && size.is_none_or(|s| s == m.len()))
    }

    /// Reads a small stored blob (a manifest or config) whole.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, CacheError> {
        let path = self.path(digest);
        fs::read(&path).map_err(io_error(&path, "cannot read blob"))
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, CacheError> {
        let path = self.path(digest);
        File::open(&path).map_err(io_error(&path, "cannot open blob"))
    }

    /// Removes a stored blob found damaged, so that the next fetch stores it anew; returns where it was.
    pub fn evict(&self, digest: &Digest) -> Result<PathBuf, CacheError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(io_error(&path, "cannot remove damaged blob")(e))
            }
            _ => Ok(path),
        }
    }

    /// Stores a small document already in memory after checking it against `digest`.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        if self.contains(digest, Some(bytes.len() as u64)) {
            return Ok(());
        }
        let mut partial = self.begin(digest, Some(bytes.len() as u64))?;
        if self.contains(digest, Some(bytes.len() as u64)) {
            return Ok(()); // another process stored it while this one waited for the lock
        }
        partial.restart()?;
        partial.write(bytes)?;
        partial.commit()
    }

    /// A private temporary file on the cache's filesystem, for a blob whose digest is known only once
    /// written (a layer ferry compresses itself); see [`BlobStore::adopt`]. Locked while open, so that
    /// only a killed run's are swept.
    pub fn temp_file(&self) -> Result<tempfile::NamedTempFile, CacheError> {
        let dir = self.root.join("partial");
        loop {
            let temp = tempfile::Builder::new()
                .prefix(TEMP_PREFIX)
                .tempfile_in(&dir)
                .map_err(io_error(&dir, "cannot create temporary file"))?;
            if interrupt::hold(temp.as_file(), temp.path())
                .map_err(io_error(temp.path(), "cannot lock temporary file"))?
            {
                return Ok(temp);
            }
        }
    }

    /// Moves a finished temporary file into the store under `digest`, which the caller computed while
    /// writing it.
    pub fn adopt(&self, temp: tempfile::NamedTempFile, digest: &Digest) -> Result<(), CacheError> {
        let path = self.path(digest);
        temp.as_file()
            .sync_data()
            .map_err(io_error(temp.path(), "cannot flush temporary file"))?;
        persist(temp, &path, "cannot store blob")
    }

    /// Starts or resumes writing `digest`. Blocks while another process writes the same blob; then the
    /// caller should check [`BlobStore::contains`] again, as that process may have finished it.
    pub fn begin(&self, digest: &Digest, size: Option<u64>) -> Result<Partial, CacheError> {
        let path = self.root.join("partial").join(digest.hex());
        let mut file = lock_partial(&path)?;
        // Earlier bytes were hashed by a process that is gone; hash them again to resume.
        let mut hashing = Hashing::new(io::sink());
        io::copy(&mut file, &mut hashing)
            .map_err(io_error(&path, "cannot read partial download"))?;
        let (hasher, len) = hashing.into_hasher();
        let mut partial = Partial {
            file,
            path,
            hasher,
            len,
            digest: digest.clone(),
            size,
            final_path: self.path(digest),
        };
        if size.is_some_and(|s| len > s) {
            partial.restart()?;
        }
        Ok(partial)
    }
}

/// Opens and locks `path`. While this process waited for the lock, the holder may have committed the file
/// (renamed it into the store) or deleted it; a lock on that old inode protects nothing, so open again.
fn lock_partial(path: &Path) -> Result<File, CacheError> {
    loop {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error(path, "cannot open partial download"))?;
        if interrupt::hold(&file, path).map_err(io_error(path, "cannot lock partial download"))? {
            return Ok(file);
        }
    }
}

/// A blob being written; holds the lock on its partial file until committed or dropped.
pub struct Partial {
    file: File,
    path: PathBuf,
    hasher: Sha256,
    len: u64,
    digest: Digest,
    size: Option<u64>,
    final_path: PathBuf,
}

impl Partial {
    /// How many bytes are already stored: where a resumed download starts.
    pub fn offset(&self) -> u64 {
        self.len
    }

    /// Throws away what was stored, for a server that cannot resume or a resume that went wrong.
    pub fn restart(&mut self) -> Result<(), CacheError> {
        self.file
            .set_len(0)
            .map_err(io_error(&self.path, "cannot truncate partial download"))?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    pub fn write(&mut self, chunk: &[u8]) -> Result<(), CacheError> {
        self.file
            .write_all(chunk)
            .map_err(io_error(&self.path, "cannot write partial download"))?;
        self.hasher.update(chunk);
        self.len += chunk.len() as u64;
        if let Some(expected) = self.size {
            if self.len > expected {
                let (digest, actual) = (self.digest.clone(), self.len);
                self.restart()?;
                return Err(CacheError::SizeMismatch {
                    digest,
                    expected,
                    actual,
                });
            }
        }
        Ok(())
    }

    /// Checks size and digest; on success moves the blob into the store, on failure deletes the bytes so
    /// that nothing wrong is ever kept or resumed from.
    pub fn commit(mut self) -> Result<(), CacheError> {
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        let mismatch = if actual != self.digest {
            Some(CacheError::DigestMismatch {
                expected: self.digest.clone(),
                actual,
                actual_size: self.len,
            })
        } else {
            self.size
                .filter(|&s| s != self.len)
                .map(|expected| CacheError::SizeMismatch {
                    digest: self.digest.clone(),
                    expected,
                    actual: self.len,
                })
        };
        if let Some(error) = mismatch {
            let _ = fs::remove_file(&self.path);
            return Err(error);
        }
        self.file
            .sync_data()
            .map_err(io_error(&self.path, "cannot flush partial download"))?;
        fs::rename(&self.path, &self.final_path)
            .map_err(io_error(&self.final_path, "cannot store blob"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, BlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn a_verified_blob_is_stored_by_digest() {
        let (_dir, store) = store();
        let digest = Digest::of(b"layer bytes");
        store.put(&digest, b"layer bytes").unwrap();
        assert!(store.contains(&digest, Some(11)));
        assert_eq!(store.read(&digest).unwrap(), b"layer bytes");
        assert!(
            !store.contains(&digest, Some(12)),
            "a size that disagrees is not a hit"
        );
    }

    #[test]
    fn a_wrong_blob_is_never_stored_nor_kept_for_resume() {
        let (_dir, store) = store();
        let digest = Digest::of(b"the right bytes");
        let mut partial = store.begin(&digest, None).unwrap();
        partial.write(b"the wrong bytes").unwrap();
        let err = partial.commit().unwrap_err();
        assert!(matches!(err, CacheError::DigestMismatch { .. }), "{err}");
        assert!(!store.contains(&digest, None));
        assert_eq!(
            store.begin(&digest, None).unwrap().offset(),
            0,
            "no wrong bytes left to resume from"
        );
    }

    #[test]
    fn an_interrupted_write_resumes_where_it_stopped() {
        let (_dir, store) = store();
        let digest = Digest::of(b"first half, second half");
        let mut partial = store.begin(&digest, Some(23)).unwrap();
        partial.write(b"first half, ").unwrap();
        drop(partial);
        let mut resumed = store.begin(&digest, Some(23)).unwrap();
        assert_eq!(resumed.offset(), 12);
        resumed.write(b"second half").unwrap();
        resumed.commit().unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"first half, second half");
    }

    #[test]
    fn a_writer_that_waited_never_touches_the_stored_blob() {
        let (_dir, store) = store();
        let digest = Digest::of(b"manifest");
        let first = store.begin(&digest, Some(8)).unwrap();
        let waiting = {
            let store = store.clone();
            let digest = digest.clone();
            std::thread::spawn(move || store.put(&digest, b"manifest"))
        };
        std::thread::sleep(std::time::Duration::from_millis(100));
        let mut first = first;
        first.write(b"manifest").unwrap();
        first.commit().unwrap();
        waiting.join().unwrap().unwrap();
        assert_eq!(store.read(&digest).unwrap(), b"manifest");
    }

    #[test]
    fn more_bytes_than_the_descriptor_says_are_refused_early() {
        let (_dir, store) = store();
        let digest = Digest::of(b"abc");
        let mut partial = store.begin(&digest, Some(3)).unwrap();
        assert!(matches!(
            partial.write(b"abcd"),
            Err(CacheError::SizeMismatch { .. })
        ));
        assert_eq!(partial.offset(), 0);
    }
}
