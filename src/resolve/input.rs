//! Where images named outside the catalogs are read from: a regular file, or standard input (`-`), always
//! within a bound, so that a FIFO, a device or `/dev/zero` given by mistake is refused, not read forever.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A file named on the command line or in a site file, or standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    Stdin,
}

impl Source {
    /// `-` is standard input, as for most tools.
    pub fn from_arg(path: &Path) -> Source {
        if path.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(path.to_path_buf())
        }
    }

    /// The input, read through a bound: past `limit` bytes it fails with `InvalidData`.
    pub fn open(&self, limit: u64) -> io::Result<Bounded> {
        let reader: Box<dyn Read> = match self {
            Source::File(path) => Box::new(crate::io::open_side_file(path)?),
            Source::Stdin => Box::new(io::stdin().lock()),
        };
        Ok(Bounded {
            reader,
            left: limit,
            limit,
        })
    }

    /// The whole input as UTF-8 text, of at most `limit` bytes.
    pub fn read_text(&self, limit: u64) -> io::Result<String> {
        let mut text = String::new();
        self.open(limit)?.read_to_string(&mut text)?;
        Ok(text)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Stdin => f.write_str("standard input"),
        }
    }
}

/// A reader that fails once more than its limit has been read, rather than stopping quietly: a file cut
/// short must not read as a shorter list.
pub struct Bounded {
    reader: Box<dyn Read>,
    left: u64,
    limit: u64,
}

impl Read for Bounded {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        // One byte past the limit is asked for, to tell "exactly the limit" from "more".
        let most = usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX);
        let at_most = buffer.len().min(most);
        let read = self.reader.read(&mut buffer[..at_most])?;
        if read as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("it is larger than {} bytes", self.limit),
            ));
        }
        self.left -= read as u64;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_a_folder_and_an_endless_device_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for (path, what) in [
            (fifo.as_path(), "a FIFO (named pipe)"),
            (dir.path(), "a directory"),
            (Path::new("/dev/zero"), "a character device"),
        ] {
            let error = Source::File(path.to_path_buf())
                .read_text(10)
                .err()
                .unwrap();
            assert_eq!(
                error.to_string(),
                format!("it is {what}, not a regular file"),
                "{path:?}"
            );
        }
    }

    #[test]
    fn a_file_over_its_bound_is_refused_and_one_at_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        std::fs::write(&path, "0123456789").unwrap();
        let source = Source::from_arg(&path);
        assert_eq!(source.read_text(10).unwrap(), "0123456789");
        let error = source.read_text(9).err().unwrap();
        assert_eq!(error.to_string(), "it is larger than 9 bytes");
        assert_eq!(Source::from_arg(Path::new("-")), Source::Stdin);
        assert_eq!(Source::Stdin.to_string(), "standard input");
    }
}
