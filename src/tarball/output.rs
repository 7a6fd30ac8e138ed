//! Where the bundle's bytes go: one file, or numbered parts, each a hidden temporary file until every
//! byte is written, then renamed into place together with its `sha256sum -c` file. The whole stream is
//! hashed as it passes, so the checksum costs no second read.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use tempfile::NamedTempFile;

use crate::digest::Digest;

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
        let part_size = split.map(|size| if size == FAT32_LIMIT { size - 1 } else { size.max(1) });
        let mut output = Output { path: path.to_path_buf(), part_size, parts: Vec::new(), whole: Sha256::new(), bytes: 0 };
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
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let temp = tempfile::Builder::new().prefix(&format!(".{name}.")).suffix(".partial").tempfile_in(dir)?;
        self.parts.push(Part { temp: BufWriter::with_capacity(1 << 20, temp), hasher: Sha256::new(), bytes: 0 });
        Ok(())
    }

    /// Flushes and renames every part into place, then writes the checksum files.
    pub fn finish(mut self) -> Result<Finished, OutputError> {
        let mut files = Vec::new();
        let mut part_sums = String::new();
        let parts = std::mem::take(&mut self.parts);
        let split = self.part_size.is_some();
        for (index, part) in parts.into_iter().enumerate() {
            let temp = part.temp.into_inner().map_err(|e| e.into_error())?;
            publishable(temp.as_file())?;
            let target = self.part_path(index);
            temp.persist(&target).map_err(|e| e.error)?;
            part_sums.push_str(&format!("{}  {}\n", hex::encode(part.hasher.finalize()), file_name(&target)));
            files.push(target);
        }
        let sha256 = Digest::from_hasher(std::mem::take(&mut self.whole));
        let whole_sum = format!("{}  {}\n", sha256.hex(), file_name(&self.path));
        let mut checksum_files = vec![write_atomically(&sibling(&self.path, ".sha256"), &whole_sum)?];
        if split {
            checksum_files.push(write_atomically(&sibling(&self.path, ".parts.sha256"), &part_sums)?);
        }
        Ok(Finished { files, checksum_files, sha256, bytes: self.bytes })
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
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

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

fn write_atomically(path: &Path, text: &str) -> io::Result<PathBuf> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new().prefix(".ferry-").tempfile_in(dir)?;
    temp.write_all(text.as_bytes())?;
    publishable(temp.as_file())?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(path.to_path_buf())
}
