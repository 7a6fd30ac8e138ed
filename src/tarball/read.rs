//! Reads a bundle that came from outside the trust boundary, in one streaming pass, extracting nothing.
//!
//! Stricter than a general tar reader on purpose: every header's checksum, every padding byte and the
//! end-of-archive blocks are checked, so a byte flipped anywhere in the file is noticed even where no
//! hash covers it. Only the entries a ferry bundle has are accepted: regular files named `oci-layout`,
//! `ferry.json`, `index.json`, `manifest.json`, `ferry-delta.json` (a delta's) or `blobs/sha256/<hex>`,
//! each once. A gzipped bundle is
//! read through a decompressor that refuses implausible expansion; split parts are read as one stream.
//! The raw bytes are also handed to an observer (the outer checksum runs on another thread).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::layout::{BLOBS_DIR, DELTA_JSON, INDEX_JSON, LAYOUT_JSON, MANIFEST_JSON, METADATA_JSON};

const BLOCK: usize = 512;
/// A decompressed bundle may be at most this many times its compressed size (plus a margin): registry
/// layers are already compressed, so a real bundle gzips about 1:1; a gzip bomb expands a thousandfold.
const MAX_EXPANSION: u64 = 100;
const EXPANSION_MARGIN: u64 = 64 << 20;
/// Entries in one bundle: a thousand images of sixty blobs each. What is kept per entry (its name, its
/// digest, where it is) is small, but a hostile tar of empty entries has one every 512 bytes.
const MAX_ENTRIES: usize = 1 << 16;
/// Zeros tolerated after the end-of-archive blocks (tar writers pad to records of up to this size).
const MAX_TRAILING_ZEROS: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read failed at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("truncated: the file ends inside {what} at byte {offset}")]
    Truncated { what: String, offset: u64 },
    #[error("not a bundle: {reason} (at byte {offset})")]
    Malformed { reason: String, offset: u64 },
    #[error("refused entry '{name}' at byte {offset}: {reason}")]
    Refused {
        name: String,
        reason: String,
        offset: u64,
    },
    #[error("gzip bomb: the compressed bundle expands more than {MAX_EXPANSION} times")]
    Bomb,
}

/// The files of a bundle as given: one file, or the parts of a split bundle in order.
#[derive(Debug, Clone)]
pub struct Source {
    pub files: Vec<PathBuf>,
    /// The unsplit bundle's path (`x.tar` for `x.tar.part-000`).
    pub whole: PathBuf,
}

impl Source {
    /// The parts read one after another as one stream, from `offset` of the whole.
    pub fn joined(&self, offset: u64) -> Joined<'static> {
        Joined {
            files: self.files.clone().into_iter(),
            current: None,
            index: 0,
            skip: offset,
            observer: None,
            raw_bytes: 0,
        }
    }

    /// Reads `size` bytes at `offset` of the joined parts; only for uncompressed bundles.
    pub fn open_range(&self, offset: u64, size: u64) -> io::Result<impl Read + Send + 'static> {
        Ok(self.joined(offset).take(size))
    }

    /// Whether the bundle is gzipped (then entries cannot be read in place).
    pub fn is_gzipped(&self) -> io::Result<bool> {
        let mut magic = [0u8; 2];
        let n = File::open(&self.files[0])?.read(&mut magic)?;
        Ok(n == 2 && magic == [0x1f, 0x8b])
    }

    /// `x.tar`, `x.tar.gz`, or `x.tar.part-000` (then every following part is read too).
    pub fn locate(path: &Path) -> Result<Source, ReadError> {
        let open_error = |source| ReadError::Open {
            path: path.to_path_buf(),
            source,
        };
        std::fs::metadata(path).map_err(open_error)?;
        // Bytes, not text: a name that is not UTF-8 must still find its parts.
        let Some(whole) = path.as_os_str().as_bytes().strip_suffix(b".part-000") else {
            return Ok(Source {
                files: vec![path.to_path_buf()],
                whole: path.to_path_buf(),
            });
        };
        let whole = PathBuf::from(OsStr::from_bytes(whole));
        let mut files = Vec::new();
        for index in 0.. {
            let part = super::sibling(&whole, &format!(".part-{index:03}"));
            if !part.exists() {
                break;
            }
            files.push(part);
        }
        Ok(Source { files, whole })
    }
}

/// Receives the raw bytes of each file as they are read (for the outer checksum).
pub trait Observer {
    fn part_started(&mut self, index: usize);
    fn bytes(&mut self, chunk: &[u8]);
}

/// The parts of a source read one after another as one stream, each byte shown to the observer if any.
pub struct Joined<'o> {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<BufReader<File>>,
    index: usize,
    /// Bytes of the whole still to pass over before the first one read.
    skip: u64,
    observer: Option<&'o mut (dyn Observer + Send)>,
    raw_bytes: u64,
}

impl Joined<'_> {
    fn open_next(&mut self) -> io::Result<bool> {
        loop {
            let Some(next) = self.files.next() else {
                return Ok(false);
            };
            let mut file = File::open(&next)?;
            if self.skip > 0 {
                let length = file.metadata()?.len();
                if self.skip >= length {
                    self.skip -= length;
                    continue;
                }
                io::Seek::seek(&mut file, io::SeekFrom::Start(self.skip))?;
                self.skip = 0;
            }
            if let Some(observer) = self.observer.as_mut() {
                observer.part_started(self.index);
            }
            self.index += 1;
            self.current = Some(BufReader::with_capacity(1 << 20, file));
            return Ok(true);
        }
    }
}

impl Read for Joined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() && !self.open_next()? {
                return Ok(0);
            }
            let n = self.current.as_mut().expect("opened above").read(buf)?;
            if n == 0 {
                self.current = None;
                continue;
            }
            if let Some(observer) = self.observer.as_mut() {
                observer.bytes(&buf[..n]);
            }
            self.raw_bytes += n as u64;
            return Ok(n);
        }
    }
}

/// What `visit` is given for each entry.
pub struct Entry<'r> {
    pub name: String,
    pub size: u64,
    /// Where the data starts in the (decompressed, parts joined) tar stream.
    pub offset: u64,
    pub data: &'r mut dyn Read,
}

/// Reads every entry of `source`, calling `visit` with each; `visit` may read the data or not (the rest is
/// skipped). Returns the raw size of the input.
pub fn read_bundle(
    source: &Source,
    observer: &mut (dyn Observer + Send),
    mut visit: impl FnMut(Entry<'_>) -> io::Result<()>,
) -> Result<u64, ReadError> {
    let gzipped = source.is_gzipped().map_err(|e| ReadError::Open {
        path: source.files[0].clone(),
        source: e,
    })?;
    let mut chained = Joined {
        observer: Some(observer),
        ..source.joined(0)
    };
    if gzipped {
        read_entries(
            &mut Guarded {
                inner: MultiGzDecoder::new(&mut chained),
                out: 0,
            },
            &mut visit,
        )?;
    } else {
        read_entries(&mut chained, &mut visit)?;
    }
    Ok(chained.raw_bytes)
}

/// Refuses decompression that expands implausibly (a gzip bomb), keeping time bounded.
struct Guarded<'a, 'o> {
    inner: MultiGzDecoder<&'a mut Joined<'o>>,
    out: u64,
}

impl Read for Guarded<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out += n as u64;
        if self.out
            > self.inner.get_ref().raw_bytes.saturating_mul(MAX_EXPANSION) + EXPANSION_MARGIN
        {
            return Err(io::Error::other(BombMarker));
        }
        Ok(n)
    }
}

#[derive(Debug)]
struct BombMarker;

impl std::fmt::Display for BombMarker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gzip bomb")
    }
}

impl std::error::Error for BombMarker {}

/// Counts what was consumed, so errors can say where.
struct Position<'r> {
    inner: &'r mut dyn Read,
    offset: u64,
}

impl Read for Position<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

fn io_error(offset: u64, source: io::Error) -> ReadError {
    if source.get_ref().is_some_and(|e| e.is::<BombMarker>()) {
        return ReadError::Bomb;
    }
    ReadError::Io { offset, source }
}

/// Fills `buf` completely, or says how much came before the end.
fn fill(input: &mut Position<'_>, buf: &mut [u8]) -> Result<usize, ReadError> {
    crate::io::read_full(input, buf).map_err(|e| io_error(input.offset, e))
}

fn read_entries(
    reader: &mut dyn Read,
    visit: &mut dyn FnMut(Entry<'_>) -> io::Result<()>,
) -> Result<(), ReadError> {
    let mut input = Position {
        inner: reader,
        offset: 0,
    };
    let mut seen = HashSet::new();
    let mut header = [0u8; BLOCK];
    loop {
        let at = input.offset;
        match fill(&mut input, &mut header)? {
            0 => {
                return Err(ReadError::Truncated {
                    what: "the archive (no end-of-archive marker)".into(),
                    offset: at,
                })
            }
            BLOCK => {}
            _ => {
                return Err(ReadError::Truncated {
                    what: "a header".into(),
                    offset: at,
                })
            }
        }
        if header.iter().all(|&b| b == 0) {
            return end_of_archive(&mut input);
        }
        let (name, size) = parse_header(&header, at)?;
        if seen.len() == MAX_ENTRIES {
            return Err(ReadError::Refused {
                name,
                reason: format!("a bundle has at most {MAX_ENTRIES} entries"),
                offset: at,
            });
        }
        if !seen.insert(name.clone()) {
            return Err(ReadError::Refused {
                name,
                reason: "a second entry of the same name".into(),
                offset: at,
            });
        }
        let mut data = Position {
            inner: &mut input,
            offset: 0,
        };
        let data_start = at + BLOCK as u64;
        let mut limited = (&mut data).take(size);
        visit(Entry {
            name: name.clone(),
            size,
            offset: data_start,
            data: &mut limited,
        })
        .map_err(|e| io_error(data_start + limited.get_ref().offset, e))?;
        io::copy(&mut limited, &mut io::sink()).map_err(|e| io_error(data_start, e))?;
        if data.offset < size {
            return Err(ReadError::Truncated {
                what: format!("the data of {name}"),
                offset: data_start + data.offset,
            });
        }
        let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        let mut pad = [0u8; BLOCK];
        let at = input.offset;
        if fill(&mut input, &mut pad[..padding])? < padding {
            return Err(ReadError::Truncated {
                what: format!("the padding after {name}"),
                offset: at,
            });
        }
        if pad[..padding].iter().any(|&b| b != 0) {
            return Err(ReadError::Malformed {
                reason: format!("non-zero padding after {name}"),
                offset: at,
            });
        }
    }
}

/// After the first zero block: a second one, then nothing but a little zero padding.
fn end_of_archive(input: &mut Position<'_>) -> Result<(), ReadError> {
    let mut block = [0u8; BLOCK];
    let at = input.offset;
    if fill(input, &mut block)? < BLOCK {
        return Err(ReadError::Truncated {
            what: "the end-of-archive marker".into(),
            offset: at,
        });
    }
    if block.iter().any(|&b| b != 0) {
        return Err(ReadError::Malformed {
            reason: "a damaged end-of-archive marker".into(),
            offset: at,
        });
    }
    let mut trailing = 0u64;
    loop {
        let at = input.offset;
        let n = fill(input, &mut block)?;
        if block[..n].iter().any(|&b| b != 0) {
            return Err(ReadError::Malformed {
                reason: "data after the end-of-archive marker".into(),
                offset: at,
            });
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_ZEROS {
            return Err(ReadError::Malformed {
                reason: "too much padding after the end-of-archive marker".into(),
                offset: at,
            });
        }
        if n < BLOCK {
            return Ok(());
        }
    }
}

/// Checks one USTAR header and returns the entry's name and size.
fn parse_header(header: &[u8; BLOCK], offset: u64) -> Result<(String, u64), ReadError> {
    let malformed = |reason: &str| ReadError::Malformed {
        reason: reason.to_string(),
        offset,
    };
    let recorded = octal(&header[148..156])
        .ok_or_else(|| malformed("a header checksum that is not a number"))?;
    let computed: u64 = header
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u64::from(b)
            }
        })
        .sum();
    if recorded != computed {
        return Err(malformed(
            "a header whose checksum does not match (a damaged header)",
        ));
    }
    if &header[257..262] != b"ustar" {
        return Err(malformed("a header that is not USTAR"));
    }
    let name = {
        let field = |range: std::ops::Range<usize>| {
            let bytes = &header[range];
            let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
            String::from_utf8(bytes[..end].to_vec())
                .map_err(|_| malformed("an entry name that is not UTF-8"))
        };
        let (prefix, name) = (field(345..500)?, field(0..100)?);
        if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        }
    };
    let refuse = |reason: &str| ReadError::Refused {
        name: name.clone(),
        reason: reason.to_string(),
        offset,
    };
    match header[156] {
        b'0' | 0 => {}
        b'1' | b'2' => return Err(refuse("links are not allowed in a bundle")),
        b'3' | b'4' | b'6' => {
            return Err(refuse("device files and FIFOs are not allowed in a bundle"))
        }
        b'5' => return Err(refuse("directories are not allowed in a bundle")),
        other => {
            return Err(refuse(&format!(
                "entry type '{}' is not allowed in a bundle",
                other.escape_ascii()
            )))
        }
    }
    if name.starts_with('/') || name.split('/').any(|part| part == ".." || part == ".") {
        return Err(refuse("the name points outside the bundle"));
    }
    let known = [
        LAYOUT_JSON,
        METADATA_JSON,
        INDEX_JSON,
        MANIFEST_JSON,
        DELTA_JSON,
    ]
    .contains(&name.as_str())
        || name
            .strip_prefix(BLOBS_DIR)
            .is_some_and(|hex| crate::digest::Digest::from_hex(hex).is_ok());
    if !known {
        return Err(refuse("a ferry bundle has no such entry"));
    }
    let size =
        size_field(&header[124..136]).ok_or_else(|| malformed("a size that is not a number"))?;
    Ok((name, size))
}

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field)
        .ok()?
        .trim_matches(|c: char| c == '\0' || c == ' ');
    if text.is_empty() {
        return None;
    }
    u64::from_str_radix(text, 8).ok()
}

/// Octal, or GNU base-256 for sizes of 8 GiB and more.
fn size_field(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return field[1..]
            .iter()
            .try_fold(u64::from(field[0] & 0x7f), |acc, &b| {
                acc.checked_mul(256).map(|a| a + u64::from(b))
            });
    }
    octal(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header of an empty entry, as `tar` writes it.
    fn empty_entry(name: &str) -> [u8; BLOCK] {
        let mut header = tar::Header::new_ustar();
        header.set_path(name).unwrap();
        header.set_size(0);
        header.set_mode(0o644);
        header.set_cksum();
        *header.as_bytes()
    }

    struct Nothing;

    impl Observer for Nothing {
        fn part_started(&mut self, _: usize) {}
        fn bytes(&mut self, _: &[u8]) {}
    }

    /// Memory grows with the entries, and a hostile tar of empty ones has one every 512 bytes.
    #[test]
    fn the_number_of_entries_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        let mut bytes = Vec::with_capacity((MAX_ENTRIES + 3) * BLOCK);
        for i in 0..=MAX_ENTRIES {
            bytes.extend_from_slice(&empty_entry(&format!("{BLOBS_DIR}{i:064x}")));
        }
        bytes.resize(bytes.len() + 2 * BLOCK, 0);
        std::fs::write(&path, bytes).unwrap();
        let source = Source::locate(&path).unwrap();
        let mut entries = 0;
        let err = read_bundle(&source, &mut Nothing, |_| {
            entries += 1;
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, ReadError::Refused { .. }), "{err}");
        assert_eq!(entries, MAX_ENTRIES);
    }

    #[test]
    fn the_parts_of_a_bundle_whose_name_is_not_utf8_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let name = |suffix: &str| {
            dir.path().join(OsStr::from_bytes(
                &[b"b\xff.tar", suffix.as_bytes()].concat(),
            ))
        };
        for suffix in [".part-000", ".part-001"] {
            std::fs::write(name(suffix), b"").unwrap();
        }
        let source = Source::locate(&name(".part-000")).unwrap();
        assert_eq!(source.files, [name(".part-000"), name(".part-001")]);
        assert_eq!(source.whole, name(""));
    }
}
