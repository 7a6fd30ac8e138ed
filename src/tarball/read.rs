//! Reads a bundle that came from outside the trust boundary, in one streaming pass, extracting nothing.
//!
//! Stricter than a general tar reader on purpose: every header's checksum, every padding byte and the
//! end-of-archive blocks are checked, so a byte flipped anywhere in the file is noticed even where no
//! hash covers it. Only the entries a ferry bundle has are accepted: regular files named `oci-layout`,
//! `ferry.json`, `index.json`, `manifest.json`, `ferry-delta.json` (a delta's) or `blobs/sha256/<hex>`,
//! each once. A gzipped bundle is
//! read through a decompressor that refuses implausible expansion; split parts are read as one stream.
//! The raw bytes are read ahead on a thread of their own, in blocks handed as they are (shared, not
//! copied) to the parser, and to an observer once the parser is done with them (the outer checksum runs
//! on a third thread, which then knows where each entry the parser found starts).

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use flate2::bufread::MultiGzDecoder;

use super::layout::{BLOBS_DIR, DOCUMENTS};

const BLOCK: usize = 512;
/// A decompressed bundle may be at most this many times its compressed size (plus a margin): registry
/// layers are already compressed, so a real bundle gzips about 1:1; a gzip bomb expands a thousandfold.
const MAX_EXPANSION: u64 = 100;
const EXPANSION_MARGIN: u64 = 64 << 20;
/// Entries in one bundle: a thousand images of sixty blobs each. What is kept per entry (its name, its
/// digest, where it is) is small, but a hostile tar of empty entries has one every 512 bytes.
pub(super) const MAX_ENTRIES: usize = 1 << 16;
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
    /// One of ferry's other files, a later part, or an image archive, given where a bundle was asked for.
    #[error("{} is {is}, not a bundle: give {give}", .file.display())]
    NotABundle {
        file: PathBuf,
        is: String,
        give: String,
    },
    #[error(
        "{} is missing: {} is there, and a split bundle is read part after part: copy every part",
        .missing.display(),
        .later.display()
    )]
    MissingPart { missing: PathBuf, later: PathBuf },
    #[error("cannot read {} at {}", .at.file.display(), .at.byte())]
    Io {
        at: Place,
        #[source]
        source: io::Error,
    },
    #[error("{}", truncated(.at, .what, .missing))]
    Truncated {
        at: Place,
        what: String,
        /// For a split bundle that ends with its last part: the part that is, or may be, missing.
        missing: String,
    },
    #[error("{} is damaged at {}: {reason}", .at.file.display(), .at.byte())]
    Malformed { at: Place, reason: String },
    #[error(
        "{} is not a ferry bundle, or is damaged at its start: {reason} at byte 0",
        .file.display()
    )]
    NotATar { file: PathBuf, reason: String },
    #[error("{}: entry '{name}' at {} is refused: {reason}", .at.file.display(), .at.byte())]
    Refused {
        at: Place,
        name: String,
        reason: String,
    },
    #[error("{} is a gzip bomb: it expands more than {MAX_EXPANSION} times", .file.display())]
    Bomb { file: PathBuf },
}

/// A file cut short, or a split bundle whose last part ends where another should follow.
fn truncated(at: &Place, what: &str, missing: &str) -> String {
    let file = at.file.display();
    match missing {
        "" => format!(
            "{file} is truncated: it ends inside {what}, at {}",
            at.byte()
        ),
        _ => format!(
            "the bundle ends with {file} ({} bytes), inside {what}: {missing}",
            at.offset
        ),
    }
}

/// Where in the bundle: a file (a part, for a split bundle) and the offset in it, or, for a gzipped
/// bundle, the offset in its decompressed tar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: PathBuf,
    pub offset: u64,
    pub gunzipped: bool,
}

impl Place {
    /// `byte N`, of the decompressed tar when gzipped.
    fn byte(&self) -> String {
        match self.gunzipped {
            false => format!("byte {}", self.offset),
            true => format!("byte {} of its gunzipped tar", self.offset),
        }
    }
}

/// What went wrong in the tar stream, and at which of its offsets.
#[derive(Debug)]
enum Broken {
    Io {
        offset: u64,
        source: io::Error,
    },
    Truncated {
        what: String,
        offset: u64,
    },
    Malformed {
        reason: String,
        offset: u64,
    },
    Refused {
        name: String,
        reason: String,
        offset: u64,
    },
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
        Joined::new(Blocks::Here(self.blocks(offset)), None)
    }

    fn blocks(&self, offset: u64) -> FileBlocks {
        FileBlocks {
            files: self.files.clone().into_iter(),
            current: None,
            index: 0,
            skip: offset,
            lent: VecDeque::new(),
        }
    }

    /// Reads `size` bytes at `offset` of the joined parts; only for uncompressed bundles.
    pub fn open_range(&self, offset: u64, size: u64) -> io::Result<impl Read + Send + 'static> {
        Ok(self.joined(offset).take(size))
    }

    /// Which file holds byte `offset` of the joined parts, and where in it (the last file, past its end,
    /// for an offset beyond them all).
    pub fn place(&self, offset: u64) -> (PathBuf, u64) {
        let mut start = 0u64;
        for (index, file) in self.files.iter().enumerate() {
            // A part that is gone is where the reading stopped.
            let length = std::fs::metadata(file).map_or(u64::MAX, |m| m.len());
            if offset < start.saturating_add(length) || index + 1 == self.files.len() {
                return (file.clone(), offset - start);
            }
            start += length;
        }
        (self.whole.clone(), offset)
    }

    /// Whether the bundle is gzipped (then entries cannot be read in place).
    pub fn is_gzipped(&self) -> io::Result<bool> {
        let mut magic = [0u8; 2];
        let n = File::open(&self.files[0])?.read(&mut magic)?;
        Ok(n == 2 && magic == [0x1f, 0x8b])
    }

    /// `x.tar`, `x.tar.gz`, or `x.tar.part-000` (then every following part is read too). A later part
    /// is refused, naming the first; so is a split bundle with a part missing between others.
    pub fn locate(path: &Path) -> Result<Source, ReadError> {
        // What a bundle is read from must be a regular file: a FIFO would hold ferry on its open forever.
        let regular = |file: &Path| {
            std::fs::metadata(file)
                .and_then(|m| crate::io::refuse_special(m.file_type()))
                .map_err(|source| ReadError::Open {
                    path: file.to_path_buf(),
                    source,
                })
        };
        regular(path)?;
        let Some((whole, index)) = part_of(path) else {
            return Ok(Source {
                files: vec![path.to_path_buf()],
                whole: path.to_path_buf(),
            });
        };
        let part = |index: usize| super::sibling(&whole, &format!(".part-{index:03}"));
        if index > 0 {
            let first = part(0);
            return Err(ReadError::NotABundle {
                file: path.to_path_buf(),
                is: format!("the {} part of a split bundle", ordinal(index + 1)),
                give: format!(
                    "the first, {}{} (the parts after it are read with it)",
                    first.display(),
                    if first.exists() {
                        ""
                    } else {
                        ", which is not beside it"
                    }
                ),
            });
        }
        let files: Vec<PathBuf> = (0..MAX_PARTS)
            .map(part)
            .take_while(|p| p.exists())
            .collect();
        files.iter().try_for_each(|file| regular(file))?;
        if let Some(later) = (files.len() + 1..MAX_PARTS).map(part).find(|p| p.exists()) {
            return Err(ReadError::MissingPart {
                missing: part(files.len()),
                later,
            });
        }
        Ok(Source { files, whole })
    }
}

/// Parts of a split bundle are numbered from 000 to 999.
const MAX_PARTS: usize = 1000;

/// `x.tar` and N for a path `x.tar.part-N` (three digits); bytes, not text, so that a name that is not
/// UTF-8 still finds its parts.
fn part_of(path: &Path) -> Option<(PathBuf, usize)> {
    let bytes = path.as_os_str().as_bytes();
    let (whole, digits) = bytes.split_at(bytes.len().checked_sub(9)?);
    let digits = digits.strip_prefix(b".part-")?;
    if whole.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let index = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((PathBuf::from(OsStr::from_bytes(whole)), index))
}

/// `first`, `second`, … `tenth`, then `11th`, `21st`, `22nd`.
fn ordinal(n: usize) -> String {
    const WORDS: [&str; 10] = [
        "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth",
        "tenth",
    ];
    if let Some(word) = n.checked_sub(1).and_then(|i| WORDS.get(i)) {
        return (*word).to_string();
    }
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// A block of raw bytes as read from a file, shared with the observer rather than copied for it.
pub type Block = Arc<Vec<u8>>;

/// The most read from a file at once: one read call each, and one hand-over to the observer. Small enough
/// to be still in the CPU's caches when the observer's thread hashes it after the reader's.
const READ_BLOCK: usize = 1 << 20;

/// Receives the raw bytes of each file (for the outer checksum), each block once the parser has passed
/// all of it: by then the parser has met every entry that starts in it.
pub trait Observer {
    fn part_started(&mut self, index: usize);
    /// The next bytes read, all of `block`; the reader reuses the block once the observer drops it.
    fn block(&mut self, block: &Block);
}

/// What the reader hands on: a part's start (even of an empty part), or the next block read.
enum Piece {
    Part(usize),
    Block(Block),
}

/// Blocks read ahead of the reader that parses them, on a thread of their own: the kernel's copy into
/// them runs beside the hashing of the blocks before.
const READ_AHEAD: usize = 2;

/// The parts of a source read one after another in blocks.
struct FileBlocks {
    files: std::vec::IntoIter<PathBuf>,
    current: Option<File>,
    index: usize,
    /// Bytes of the whole still to pass over before the first one read.
    skip: u64,
    /// Blocks handed out, oldest first, read into again once everyone has dropped them.
    lent: VecDeque<Block>,
}

impl FileBlocks {
    fn open_next(&mut self) -> io::Result<bool> {
        loop {
            let Some(next) = self.files.next() else {
                return Ok(false);
            };
            let mut file = File::open(&next).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot open {}: {e}", next.display()))
            })?;
            if self.skip > 0 {
                let length = file.metadata()?.len();
                if self.skip >= length {
                    self.skip -= length;
                    continue;
                }
                io::Seek::seek(&mut file, io::SeekFrom::Start(self.skip))?;
                self.skip = 0;
            }
            self.index += 1;
            self.current = Some(file);
            return Ok(true);
        }
    }

    /// The next block of the current file in one read, or the start of the next file when one ends; None
    /// at the end.
    fn next_piece(&mut self) -> io::Result<Option<Piece>> {
        if self.current.is_none() {
            return Ok(self.open_next()?.then(|| Piece::Part(self.index - 1)));
        }
        // Blocks come back in the order they went out: only the oldest can be free.
        let mut block = match self.lent.front() {
            Some(oldest) if Arc::strong_count(oldest) == 1 => self.lent.pop_front().expect("there"),
            _ => Block::default(),
        };
        let buffer = Arc::get_mut(&mut block).expect("a block no one else holds");
        buffer.resize(READ_BLOCK, 0);
        let n = loop {
            match self.current.as_mut().expect("open").read(buffer) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                read => break read?,
            }
        };
        if n == 0 {
            // Not handed out: the next block read goes into it.
            self.lent.push_front(block);
            self.current = None;
            return self.next_piece();
        }
        buffer.truncate(n);
        self.lent.push_back(Arc::clone(&block));
        Ok(Some(Piece::Block(block)))
    }

    /// Reads every block into `ahead`, until the end, an error, or the receiver is gone.
    fn read_ahead(mut self, ahead: SyncSender<io::Result<Piece>>) {
        while let Some(next) = self.next_piece().transpose() {
            let failed = next.is_err();
            if ahead.send(next).is_err() || failed {
                return;
            }
        }
    }
}

/// Where a [`Joined`] gets its blocks.
enum Blocks {
    /// Read on the caller's thread.
    Here(FileBlocks),
    /// Read ahead on another ([`FileBlocks::read_ahead`]); the sender gone is the end.
    Ahead(Receiver<io::Result<Piece>>),
}

/// The parts of a source read one after another as one stream. It buffers itself, in the blocks it
/// shows the observer as they are, so it is a [`BufRead`]: wrapping it in a `BufReader` would only copy.
pub struct Joined<'o> {
    blocks: Blocks,
    /// The block being served, from `served` on.
    block: Block,
    served: usize,
    raw_bytes: u64,
    /// Shown each block once it is served, and each part's start.
    observer: Option<&'o mut (dyn Observer + Send)>,
}

impl<'o> Joined<'o> {
    fn new(blocks: Blocks, observer: Option<&'o mut (dyn Observer + Send)>) -> Self {
        Joined {
            blocks,
            block: Block::default(),
            served: 0,
            raw_bytes: 0,
            observer,
        }
    }

    /// Moves on to the next block, the one served shown to the observer; false at the end.
    fn refill(&mut self) -> io::Result<bool> {
        // Dropped once shown, so that it can be read into again.
        let done = std::mem::take(&mut self.block);
        if let Some(observer) = self.observer.as_mut().filter(|_| !done.is_empty()) {
            observer.block(&done);
        }
        drop(done);
        self.served = 0;
        loop {
            let next = match &mut self.blocks {
                Blocks::Here(files) => files.next_piece()?,
                Blocks::Ahead(ahead) => ahead.recv().ok().transpose()?,
            };
            match next {
                None => return Ok(false),
                Some(Piece::Part(index)) => {
                    if let Some(observer) = self.observer.as_mut() {
                        observer.part_started(index);
                    }
                }
                Some(Piece::Block(block)) => {
                    self.raw_bytes += block.len() as u64;
                    self.block = block;
                    return Ok(true);
                }
            }
        }
    }
}

impl BufRead for Joined<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.served == self.block.len() && !self.refill()? {
            return Ok(&[]);
        }
        Ok(&self.block[self.served..])
    }

    fn consume(&mut self, amount: usize) {
        self.served = (self.served + amount).min(self.block.len());
    }
}

impl Read for Joined<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// What `visit` is given for each entry.
pub struct Entry<'r> {
    pub name: String,
    pub size: u64,
    /// Where the data starts in the (decompressed, parts joined) tar stream.
    pub offset: u64,
    /// Whether the tar stream is the file's bytes (not gzipped), so that `offset` is where the data
    /// starts in the file too.
    pub in_file: bool,
    /// Buffered: what is read can be hashed where it lies, with `fill_buf`.
    pub data: &'r mut dyn BufRead,
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
    std::thread::scope(|scope| {
        let (ahead, blocks) = std::sync::mpsc::sync_channel(READ_AHEAD);
        let files = source.blocks(0);
        scope.spawn(move || files.read_ahead(ahead));
        let mut chained = Joined::new(Blocks::Ahead(blocks), Some(observer));
        // Past the tar's end, what is left (nothing, in a tar that ended well) is shown too.
        let read = read_all(&mut chained, gzipped, &mut visit).and_then(|()| {
            while_refilled(&mut chained).map_err(|e| io_error(chained.raw_bytes, e))
        });
        // Dropped before the scope ends: a reader thread still reading ahead then stops.
        let consumed = chained.raw_bytes;
        drop(chained);
        read.map(|()| consumed)
            .map_err(|broken| source.locate_error(broken, gzipped, consumed))
    })
}

/// Moves through every block left.
fn while_refilled(chained: &mut Joined<'_>) -> io::Result<()> {
    while chained.refill()? {}
    Ok(())
}

/// Every entry of the tar in `chained`, gunzipped first if need be.
fn read_all(
    chained: &mut Joined<'_>,
    gzipped: bool,
    visit: &mut dyn FnMut(Entry<'_>) -> io::Result<()>,
) -> Result<(), Broken> {
    if gzipped {
        read_entries(
            &mut BufReader::with_capacity(
                READ_BLOCK,
                Guarded {
                    inner: MultiGzDecoder::new(chained),
                    out: 0,
                },
            ),
            false,
            visit,
        )
    } else {
        read_entries(chained, true, visit)
    }
}

impl Source {
    /// `broken` said of the file and offset it is at, or of what the file is when it is no tar at all.
    fn locate_error(&self, broken: Broken, gzipped: bool, consumed: u64) -> ReadError {
        let at = |offset: u64| {
            let (file, offset) = match gzipped {
                false => self.place(offset),
                true => (self.files[0].clone(), offset),
            };
            Place {
                file,
                offset,
                gunzipped: gzipped,
            }
        };
        // A failure at the very start: the file may be another one ferry knows, given by mistake.
        let first_entry = match &broken {
            Broken::Refused {
                name, offset: 0, ..
            } => Some(name.as_str()),
            _ => None,
        };
        let at_start = matches!(
            broken,
            Broken::Malformed { offset: 0, .. }
                | Broken::Refused { offset: 0, .. }
                | Broken::Truncated { offset: 0, .. }
        );
        if at_start {
            if let Some((is, give)) = identify(&self.files[0], first_entry) {
                return ReadError::NotABundle {
                    file: self.files[0].clone(),
                    is,
                    give,
                };
            }
        }
        match broken {
            // A gzip stream cut short.
            Broken::Io { offset, source } if source.kind() == io::ErrorKind::UnexpectedEof => {
                self.truncated(at(offset), format!("its gzip stream ({source})"), consumed)
            }
            Broken::Io { offset, source } => ReadError::Io {
                at: at(offset),
                source,
            },
            Broken::Bomb => ReadError::Bomb {
                file: self.files[0].clone(),
            },
            Broken::Malformed { reason, offset: 0 } => ReadError::NotATar {
                file: self.files[0].clone(),
                reason,
            },
            Broken::Malformed { reason, offset } => ReadError::Malformed {
                at: at(offset),
                reason,
            },
            Broken::Refused {
                name,
                reason,
                offset,
            } => ReadError::Refused {
                at: at(offset),
                name,
                reason,
            },
            Broken::Truncated { what, offset } => self.truncated(at(offset), what, consumed),
        }
    }

    /// The bundle ends at `at`, inside `what`; a split bundle read to the end of its last part is said
    /// to end there, its next part being or perhaps being missing.
    fn truncated(&self, at: Place, what: String, consumed: u64) -> ReadError {
        let lengths: Vec<u64> = self
            .files
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .collect();
        let split = self.files.len() > 1 || self.files[0] != self.whole;
        if !split || consumed < lengths.iter().sum::<u64>() {
            return ReadError::Truncated {
                at,
                what,
                missing: String::new(),
            };
        }
        let last = self.files.len() - 1;
        ReadError::Truncated {
            at: Place {
                file: self.files[last].clone(),
                offset: lengths[last],
                gunzipped: false,
            },
            what,
            missing: self.missing_part(),
        }
    }

    /// The part after the last one found, which is missing, or perhaps is.
    fn missing_part(&self) -> String {
        let next = super::sibling(&self.whole, &format!(".part-{:03}", self.files.len()));
        let sums = super::sibling(&self.whole, ".parts.sha256");
        let listed = crate::io::read_side_text(&sums, 1 << 20).is_ok_and(|text| {
            let name = super::file_name(&next);
            text.lines().any(|line| {
                line.trim_end().ends_with(&format!(" {name}"))
                    || line.trim_end().ends_with(&format!("*{name}"))
            })
        });
        match listed {
            true => format!(
                "the next part, {}, is missing ({} lists it)",
                next.display(),
                sums.display()
            ),
            false => format!(
                "is the next part, {}, missing, or is this one cut short?",
                next.display()
            ),
        }
    }
}

/// What a file that is no bundle is, when ferry knows it (one of its side files, an image archive a
/// tool wrote, a Helm chart), and what to give instead. `first_entry` is the tar entry it starts with,
/// if it is a tar.
fn identify(file: &Path, first_entry: Option<&str>) -> Option<(String, String)> {
    let mut head = Vec::with_capacity(4096);
    File::open(file)
        .and_then(|f| f.take(4096).read_to_end(&mut head))
        .ok()?;
    let text = String::from_utf8_lossy(&head);
    let dir = file.parent().unwrap_or(Path::new(""));
    let name = super::file_name(file);
    let beside = |suffix: &str| {
        name.strip_suffix(suffix)
            .filter(|rest| !rest.is_empty())
            .map(|rest| dir.join(rest))
    };
    // A bundle a side file names: the file, or the first part of a split one.
    let bundle = |path: PathBuf| {
        let first = super::sibling(&path, ".part-000");
        match !path.exists() && first.exists() {
            true => format!("its first part, {}", first.display()),
            false => format!("the bundle, {}", path.display()),
        }
    };
    let first_line = text.lines().next().unwrap_or("");
    let hex = first_line
        .get(..64)
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if hex && (first_line[64..].starts_with("  ") || first_line[64..].starts_with(" *")) {
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.get(66..))
            .map(str::trim)
            .collect();
        if let Some(first) = names.iter().find(|n| n.ends_with(".part-000")) {
            return Some((
                "the checksum file of a split bundle's parts".into(),
                format!("its first part, {}", dir.join(first).display()),
            ));
        }
        let give = names
            .first()
            .map_or_else(|| "the bundle".into(), |n| bundle(dir.join(n)));
        return Some(("the checksum file of a bundle".into(), give));
    }
    if text.starts_with("-----BEGIN SSH SIGNATURE-----") {
        let give = beside(".sig").map_or("the bundle it signs".into(), bundle);
        return Some((
            "the signature of a bundle".into(),
            format!("{give} (its .sig is read beside it)"),
        ));
    }
    if text.starts_with("# ferry lock") || text.lines().any(|l| l.trim() == "[[image]]") {
        return Some((
            "a ferry lock file".into(),
            "the bundle, and this file with --lock".into(),
        ));
    }
    if text.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----") {
        return Some(("an SSH private key".into(), "the bundle".into()));
    }
    let key = |line: &str| {
        ["ssh-", "ecdsa-sha2-", "sk-"]
            .iter()
            .any(|p| line.starts_with(p))
    };
    if key(first_line) {
        return Some(("an SSH public key".into(), "the bundle".into()));
    }
    if text
        .lines()
        .any(|l| l.contains("namespaces=") && l.split_whitespace().any(key))
    {
        return Some((
            "an allowed_signers file".into(),
            "the bundle, and this file with --trust".into(),
        ));
    }
    let entry = first_entry?;
    let hex_name = |n: &str| n.len() >= 64 && n[..64].bytes().all(|b| b.is_ascii_hexdigit());
    // docker save's `<id>/`, `<id>.json`, `<id>.tar`; the directories of an OCI layout; `repositories`.
    if hex_name(entry) || ["blobs/", "blobs/sha256/", "repositories"].contains(&entry) {
        return Some((
            "an image archive (from docker save, podman save or skopeo)".into(),
            format!(
                "a ferry bundle; to carry the images in it, run `ferry bundle --vendor-dir DIR` where it \
                 came from, DIR holding {name}"
            ),
        ));
    }
    if entry.ends_with("/Chart.yaml") {
        return Some(("a Helm chart".into(), "the bundle".into()));
    }
    None
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
    inner: &'r mut dyn BufRead,
    offset: u64,
}

impl Read for Position<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset += n as u64;
        Ok(n)
    }
}

impl BufRead for Position<'_> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.inner.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.inner.consume(amount);
        self.offset += amount as u64;
    }
}

/// Passes over the rest of `reader`, without copying it anywhere.
fn skip_rest(reader: &mut impl BufRead) -> io::Result<()> {
    loop {
        let n = reader.fill_buf()?.len();
        if n == 0 {
            return Ok(());
        }
        reader.consume(n);
    }
}

fn io_error(offset: u64, source: io::Error) -> Broken {
    if source.get_ref().is_some_and(|e| e.is::<BombMarker>()) {
        return Broken::Bomb;
    }
    Broken::Io { offset, source }
}

/// Fills `buf` completely, or says how much came before the end.
fn fill(input: &mut Position<'_>, buf: &mut [u8]) -> Result<usize, Broken> {
    crate::io::read_full(input, buf).map_err(|e| io_error(input.offset, e))
}

fn read_entries(
    reader: &mut dyn BufRead,
    in_file: bool,
    visit: &mut dyn FnMut(Entry<'_>) -> io::Result<()>,
) -> Result<(), Broken> {
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
                return Err(Broken::Truncated {
                    what: "the archive (no end-of-archive marker)".into(),
                    offset: at,
                })
            }
            BLOCK => {}
            _ => {
                return Err(Broken::Truncated {
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
            return Err(Broken::Refused {
                name,
                reason: format!("a bundle has at most {MAX_ENTRIES} entries"),
                offset: at,
            });
        }
        if !seen.insert(name.clone()) {
            return Err(Broken::Refused {
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
            in_file,
            data: &mut limited,
        })
        .map_err(|e| io_error(data_start + limited.get_ref().offset, e))?;
        skip_rest(&mut limited).map_err(|e| io_error(data_start + limited.get_ref().offset, e))?;
        if data.offset < size {
            return Err(Broken::Truncated {
                what: format!("the data of {name}"),
                offset: data_start + data.offset,
            });
        }
        let padding = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
        let mut pad = [0u8; BLOCK];
        let at = input.offset;
        if fill(&mut input, &mut pad[..padding])? < padding {
            return Err(Broken::Truncated {
                what: format!("the padding after {name}"),
                offset: at,
            });
        }
        if pad[..padding].iter().any(|&b| b != 0) {
            return Err(Broken::Malformed {
                reason: format!("non-zero padding after {name}"),
                offset: at,
            });
        }
    }
}

/// After the first zero block: a second one, then nothing but a little zero padding.
fn end_of_archive(input: &mut Position<'_>) -> Result<(), Broken> {
    let mut block = [0u8; BLOCK];
    let at = input.offset;
    if fill(input, &mut block)? < BLOCK {
        return Err(Broken::Truncated {
            what: "the end-of-archive marker".into(),
            offset: at,
        });
    }
    if block.iter().any(|&b| b != 0) {
        return Err(Broken::Malformed {
            reason: "a damaged end-of-archive marker".into(),
            offset: at,
        });
    }
    let mut trailing = 0u64;
    loop {
        let at = input.offset;
        let n = fill(input, &mut block)?;
        if block[..n].iter().any(|&b| b != 0) {
            return Err(Broken::Malformed {
                reason: "data after the end-of-archive marker".into(),
                offset: at,
            });
        }
        trailing += n as u64;
        if trailing > MAX_TRAILING_ZEROS {
            return Err(Broken::Malformed {
                reason: "too much padding after the end-of-archive marker".into(),
                offset: at,
            });
        }
        if n < BLOCK {
            return Ok(());
        }
    }
}

/// The entry's name and size, from a header [`read_bundle`] accepts.
pub(super) fn accepted_header(header: &[u8; BLOCK]) -> Option<(String, u64)> {
    parse_header(header, 0).ok()
}

/// Checks one USTAR header and returns the entry's name and size.
fn parse_header(header: &[u8; BLOCK], offset: u64) -> Result<(String, u64), Broken> {
    let malformed = |reason: &str| Broken::Malformed {
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
    let refuse = |reason: &str| Broken::Refused {
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
    let known = DOCUMENTS.contains(&name.as_str())
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
        fn block(&mut self, _: &Block) {}
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

    /// Side files and other tools' files are named for what they are; anything else is not guessed at.
    #[test]
    fn files_ferry_knows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let named = |name: &str, text: &str, entry: Option<&str>| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            identify(&path, entry).map(|(is, _)| is)
        };
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBq builder";
        assert_eq!(named("k.pub", key, None).unwrap(), "an SSH public key");
        assert_eq!(
            named(
                "signers",
                &format!("ops namespaces=\"ferry\" {key}\n"),
                None
            )
            .unwrap(),
            "an allowed_signers file"
        );
        assert_eq!(
            named("k", "-----BEGIN OPENSSH PRIVATE KEY-----\n", None).unwrap(),
            "an SSH private key"
        );
        assert_eq!(
            named("c.tgz", "\x1f", Some("csi/Chart.yaml")).unwrap(),
            "a Helm chart"
        );
        assert_eq!(named("b.tar", "garbage", Some("etc/passwd")), None);
        assert_eq!(named("b.tar", "garbage", Some("blobs/sha256/ab")), None);
    }

    #[test]
    fn parts_are_counted_in_words() {
        let said: Vec<String> = [1, 2, 10, 11, 12, 13, 21, 22, 23, 101, 111]
            .map(ordinal)
            .into();
        assert_eq!(
            said,
            [
                "first", "second", "tenth", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th"
            ]
        );
        assert_eq!(
            part_of(Path::new("/x/b.tar.part-012")),
            Some((PathBuf::from("/x/b.tar"), 12))
        );
        assert_eq!(part_of(Path::new("/x/b.tar.part-1")), None);
        assert_eq!(part_of(Path::new(".part-001")), None);
    }
}
