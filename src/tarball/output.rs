//! Where the bundle's bytes go: one file, or numbered parts, each a hidden temporary file until every
//! byte is written, then renamed into place together with its `sha256sum -c` file. The whole stream is
//! hashed as it passes, so the checksum costs no second read.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::digest::Digest;
use crate::trust::signature::SigningKey;

/// FAT32 cannot hold a file of 4 GiB; `--split 4G` means "as large as a FAT32 stick allows".
const FAT32_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

#[derive(Debug)]
pub enum OutputError {
    Io(io::Error),
    /// A file of an earlier bundle (a part, say) would be left beside the new one and mislead.
    Exists(PathBuf),
}

impl From<io::Error> for OutputError {
    fn from(error: io::Error) -> Self {
        OutputError::Io(error)
    }
}

struct Part {
    temp: BufWriter<NamedTempFile>,
    hasher: Sha256,
    bytes: u64,
}

pub struct Output {
    /// Set by Ctrl-C while this output is open; the next write fails, and dropping the temporaries removes them.
    interrupted: Arc<AtomicBool>,
    signal: Option<signal_hook::SigId>,
    path: PathBuf,
    part_size: Option<u64>,
    parts: Vec<Part>,
    whole: Sha256,
    bytes: u64,
}

pub struct Finished {
    pub files: Vec<PathBuf>,
    pub checksum_files: Vec<PathBuf>,
    pub sha256: Digest,
    pub bytes: u64,
}

impl Output {
    pub fn create(path: &Path, split: Option<u64>) -> Result<Output, OutputError> {
        let part_size = split.map(|size| {
            if size == FAT32_LIMIT {
                size - 1
            } else {
                size.max(1)
            }
        });
        let interrupted = Arc::new(AtomicBool::new(false));
        let signal =
            signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone()).ok();
        let mut output = Output {
            interrupted,
            signal,
            path: path.to_path_buf(),
            part_size,
            parts: Vec::new(),
            whole: Sha256::new(),
            bytes: 0,
        };
        if split.is_some() && output.part_path(0).exists() {
            return Err(OutputError::Exists(output.part_path(0)));
        }
        output.start_part()?;
        Ok(output)
    }

    fn part_path(&self, index: usize) -> PathBuf {
        match self.part_size {
            Some(_) => sibling(&self.path, &format!(".part-{index:03}")),
            None => self.path.clone(),
        }
    }

    fn start_part(&mut self) -> io::Result<()> {
        let name = file_name(&self.path);
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(".partial")
            .tempfile_in(dir_of(&self.path))?;
        self.parts.push(Part {
            temp: BufWriter::with_capacity(1 << 20, temp),
            hasher: Sha256::new(),
            bytes: 0,
        });
        Ok(())
    }

    /// Writes the checksum files (and, with a key, `PATH.sig` over `PATH.sha256`) beside the parts, then
    /// renames everything into place. Every file is written and synced before the first rename, so a full
    /// disk fails while no new file is visible yet.
    pub fn finish(mut self, signer: Option<&SigningKey>) -> Result<Finished, OutputError> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(OutputError::Io(io::Error::other("interrupted by Ctrl-C")));
        }
        let mut staged = Vec::new();
        let mut part_sums = String::new();
        for (index, part) in std::mem::take(&mut self.parts).into_iter().enumerate() {
            let temp = part.temp.into_inner().map_err(|e| e.into_error())?;
            publishable(temp.as_file())?;
            let target = self.part_path(index);
            part_sums.push_str(&checksum_line(Digest::from_hasher(part.hasher), &target));
            staged.push((temp, target));
        }
        let files = staged.iter().map(|(_, target)| target.clone()).collect();
        let sha256 = Digest::from_hasher(std::mem::take(&mut self.whole));
        let mut sums = vec![(
            sibling(&self.path, ".sha256"),
            checksum_line(sha256.clone(), &self.path),
        )];
        let signature = sibling(&self.path, ".sig");
        if let Some(signer) = signer {
            let text = signer
                .sign(sums[0].1.as_bytes())
                .map_err(io::Error::other)?;
            sums.push((signature.clone(), text));
        }
        if self.part_size.is_some() {
            sums.push((sibling(&self.path, ".parts.sha256"), part_sums));
        }
        let mut checksum_files = Vec::new();
        for (target, text) in sums {
            staged.push((staged_text(&target, &text)?, target.clone()));
            checksum_files.push(target);
        }
        place_all(staged)?;
        if signer.is_none() {
            // An earlier bundle's signature would be refused beside this one, as if it were forged.
            match std::fs::remove_file(&signature) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(Finished {
            files,
            checksum_files,
            sha256,
            bytes: self.bytes,
        })
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Some(signal) = self.signal.take() {
            signal_hook::low_level::unregister(signal);
        }
        // A finished output was placed whole; a Ctrl-C that came too late to stop it changes nothing.
        if self.interrupted.load(Ordering::SeqCst) && !self.parts.is_empty() {
            self.parts.clear(); // removes the temporaries
            eprintln!("interrupted: no bundle was written");
            std::process::exit(130);
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(io::Error::other("interrupted by Ctrl-C"));
        }
        let room = match self.part_size {
            Some(size) => {
                let used = self.parts.last().map_or(0, |p| p.bytes);
                if used == size {
                    self.start_part()?;
                    size
                } else {
                    size - used
                }
            }
            None => u64::MAX,
        };
        let chunk = &buf[..buf.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
        let part = self.parts.last_mut().expect("a part is always open");
        let n = part.temp.write(chunk)?;
        part.hasher.update(&chunk[..n]);
        part.bytes += n as u64;
        self.whole.update(&chunk[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.parts.last_mut().map_or(Ok(()), |p| p.temp.flush())
    }
}

/// Temporary files are private (0600); the finished bundle is for others to read, like any file `cp` makes.
fn publishable(file: &std::fs::File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    file.sync_all()
}

/// `dir/name.tar` + `.sha256` → `dir/name.tar.sha256`.
pub fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The last component of `path` as text, as checksum files name it.
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The directory a file is created in; temporary files must be there for the final rename to be atomic.
fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// One line of a `sha256sum -c` file; the name is relative so the check works wherever the files are carried.
fn checksum_line(digest: Digest, path: &Path) -> String {
    format!("{}  {}\n", digest.hex(), file_name(path))
}

/// A synced temporary file holding `text`, beside `path`, ready to be renamed to it.
fn staged_text(path: &Path, text: &str) -> io::Result<NamedTempFile> {
    let mut temp = tempfile::Builder::new()
        .prefix(".ferry-")
        .tempfile_in(dir_of(path))?;
    temp.write_all(text.as_bytes())?;
    publishable(temp.as_file())?;
    Ok(temp)
}

/// Renames every staged file into place. Should one rename fail, the files already placed are removed
/// again: parts without their checksums, or a bundle beside a stale checksum, would mislead whoever finds them.
fn place_all(staged: Vec<(NamedTempFile, PathBuf)>) -> io::Result<()> {
    let mut placed = Vec::new();
    for (temp, target) in staged {
        if let Err(error) = temp.persist(&target) {
            for path in &placed {
                let _ = std::fs::remove_file(path);
            }
            return Err(error.error);
        }
        placed.push(target);
    }
    Ok(())
}
