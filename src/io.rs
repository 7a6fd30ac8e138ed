//! Small I/O helpers shared by the stages: reading until full, the one way to read a side file, and
//! showing what was read in a message.
//!
//! Side files are the small files ferry reads beside its real input: `.sha256`, `.parts.sha256`, `.sig`,
//! locks, `allowed_signers` (`--trust`, `FERRY_TRUST`), signing keys, `--catalog-file`, `--htpasswd`, TLS
//! and CA PEM files. Many travel with a bundle, so they are hostile input: a FIFO in their place would
//! block ferry forever and a symlink to `/dev/zero` would be read until memory runs out.

use std::borrow::Cow;
use std::fs::{File, FileType, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::OFlags;

/// Reads until `buffer` is full or the input ends; returns how many bytes were read.
pub fn read_full(reader: &mut (impl Read + ?Sized), buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Opens a side file for reading: a regular file, or a symlink to one. A FIFO, device, socket or
/// directory is refused before it is opened, and again after (the open cannot block: O_NONBLOCK), so a
/// file swapped in between is refused too. A missing file is `NotFound`; a symlink to nothing is not.
pub fn open_side_file(path: &Path) -> io::Result<File> {
    let before = std::fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound if path.symlink_metadata().is_ok() => io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link to a file that does not exist",
        ),
        _ => e,
    })?;
    refuse_special(before.file_type())?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)?;
    refuse_special(file.metadata()?.file_type())?;
    Ok(file)
}

/// Refuses what is not a regular file (a FIFO would block its reader, a device never ends), naming what
/// it is.
pub fn refuse_special(kind: FileType) -> io::Result<()> {
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "a special file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("it is {what}, not a regular file"),
    ))
}

/// Reads a side file whole, refusing one larger than `limit` bytes.
pub fn read_side_file(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    open_side_file(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is larger than {limit} bytes, which no such file is"),
        ));
    }
    Ok(bytes)
}

/// Reads a side file of UTF-8 text whole, refusing one larger than `limit` bytes.
pub fn read_side_text(path: &Path, limit: u64) -> io::Result<String> {
    String::from_utf8(read_side_file(path, limit)?).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it is not UTF-8 text (byte {} is not)",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// `text` as a message may show it: control characters escaped (so nothing read reaches the terminal
/// as a command), and cut to about `max` characters, keeping both ends.
pub fn shown(text: &str, max: usize) -> Cow<'_, str> {
    if text.chars().count() <= max && !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let escape = |part: &str| -> String {
        part.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect()
    };
    let count = text.chars().count();
    if count <= max {
        return Cow::Owned(escape(text));
    }
    let head = max.div_ceil(2);
    let tail = max - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(count - tail).collect();
    Cow::Owned(format!(
        "{}…({} characters cut)…{}",
        escape(&start),
        count - head - tail,
        escape(&end)
    ))
}

/// A TOML error as one short message: where it is, what is wrong, and the start of the offending text,
/// never a whole line (a one-line file of 800 kB would otherwise be echoed whole).
pub fn toml_error(text: &str, error: &toml::de::Error) -> String {
    let message = shown(error.message().trim_end(), 300);
    let Some(span) = error.span() else {
        return message.into_owned();
    };
    let start = span.start.min(text.len());
    let Some(before) = text.get(..start) else {
        return message.into_owned();
    };
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let column = before[line_start..].chars().count() + 1;
    let mut rest = text[start..].chars().take_while(|&c| c != '\n');
    let excerpt: String = rest.by_ref().take(40).collect();
    let at = match (excerpt.is_empty(), rest.next().is_some()) {
        (true, _) => "the end of the line".to_string(),
        (false, more) => format!("'{}{}'", shown(&excerpt, 40), if more { "…" } else { "" }),
    };
    format!("line {line}, column {column}: {message} (at {at})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for (path, message) in [
            (&fifo, "it is a FIFO (named pipe), not a regular file"),
            (&zero, "it is a character device, not a regular file"),
            (
                &dir.path().to_path_buf(),
                "it is a directory, not a regular file",
            ),
            (
                &dangling,
                "it is a symbolic link to a file that does not exist",
            ),
        ] {
            let error = read_side_file(path, 10).unwrap_err();
            assert_eq!(error.to_string(), message, "{}", path.display());
            assert_ne!(error.kind(), io::ErrorKind::NotFound);
        }
        assert_eq!(
            read_side_file(&dir.path().join("absent"), 10)
                .unwrap_err()
                .kind(),
            io::ErrorKind::NotFound
        );
        let big = dir.path().join("big");
        std::fs::write(&big, [b'a'; 11]).unwrap();
        assert_eq!(
            read_side_file(&big, 10).unwrap_err().to_string(),
            "it is larger than 10 bytes, which no such file is"
        );
        std::fs::write(&big, [b'a'; 10]).unwrap();
        assert_eq!(read_side_text(&big, 10).unwrap(), "aaaaaaaaaa");
        std::fs::write(&big, b"ab\xffc").unwrap();
        assert_eq!(
            read_side_text(&big, 10).unwrap_err().to_string(),
            "it is not UTF-8 text (byte 2 is not)"
        );
    }

    #[test]
    fn shown_text_is_escaped_and_cut_keeping_both_ends() {
        assert_eq!(shown("plain", 10), "plain");
        assert_eq!(shown("a\u{1b}[2Jb\n", 20), "a\\u{1b}[2Jb\\n");
        assert_eq!(
            shown(&format!("start{}end", "x".repeat(1000)), 10),
            "start…(998 characters cut)…xxend"
        );
    }

    #[test]
    fn a_toml_error_names_line_and_column_and_never_echoes_a_whole_line() {
        let text = "k".repeat(800_000);
        let error = toml::from_str::<toml::Table>(&text).unwrap_err();
        assert_eq!(
            toml_error(&text, &error),
            "line 1, column 800001: key with no value, expected `=` (at the end of the line)"
        );
        let text = format!("version = 1\nname = \"{}\u{1b}[2J\"\n", "n".repeat(100));
        let error = toml::from_str::<toml::Table>(&text).unwrap_err();
        assert_eq!(
            toml_error(&text, &error),
            "line 2, column 109: invalid basic string, expected non-double-quote visible characters, `\\` (at '\\u{1b}[2J\"')"
        );
    }
}
