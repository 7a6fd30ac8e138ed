//! Where the bundle's bytes go: one file, or numbered parts. Everything is first written into a hidden
//! directory beside the bundle (`.NAME.XXXXXX.ferry-partial`), locked while this process lives, then
//! renamed into place together with its `sha256sum -c` files once every byte is written and synced. The
//! whole stream is hashed as it passes, on a thread of its own while the next bytes are written, so the
//! checksum costs no second read. Only the part being written is open, so memory and file descriptors
//! stay flat however many parts there are; and the kernel writes each part out as it grows, so that the
//! final sync has little left to wait for and the page cache holds a few MiB of the bundle, not all of it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use super::Signer;
use crate::digest::{BackgroundHasher, Digest, Hashing, Mismatch};
use crate::interrupt;
use crate::recovery::{self, CreateOptions, Created, RecoveryError, Redundancy};

/// FAT32 cannot hold a file of 4 GiB; `--split 4G` means "as large as a FAT32 stick allows".
const FAT32_LIMIT: u64 = 4 * 1024 * 1024 * 1024;

/// Parts are numbered with three digits, so that `cat PATH.part-*` joins them in order: part-1000
/// would sort between part-100 and part-101.
pub const MAX_PARTS: u64 = 1000;

/// The bytes written to a part and hashed at a time: a write syscall per 512 KiB, and the hasher's queue
/// holds a few of them. The copy keeps ahead of the hasher (which hashes each blob beside the output), so
/// its queue is full: a small chunk keeps that to 2 MiB.
const CHUNK: usize = 512 << 10;

/// How much of a part is written before the kernel is told to write it out and let it go from the page
/// cache (see [`Output::pass_on`]).
const WRITEBACK_WINDOW: u64 = 8 << 20;

/// What marks ferry's staging directories, so that a later run can sweep those of a killed one.
const STAGING_SUFFIX: &str = ".ferry-partial";

#[derive(Debug)]
pub enum OutputError {
    Io(io::Error),
    Target(TargetError),
    /// The file system holding the bundle's directory has `free` bytes for a bundle of `needed`.
    NoRoom {
        dir: PathBuf,
        needed: u64,
        free: u64,
    },
    Recovery(RecoveryError),
}

impl From<io::Error> for OutputError {
    fn from(error: io::Error) -> Self {
        OutputError::Io(error)
    }
}

impl From<RecoveryError> for OutputError {
    fn from(error: RecoveryError) -> Self {
        OutputError::Recovery(error)
    }
}

impl From<TargetError> for OutputError {
    fn from(error: TargetError) -> Self {
        OutputError::Target(error)
    }
}

/// An output path ferry will not write to; found before anything is fetched.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{}: exists and is not a regular file; ferry does not replace it with a bundle's file", .0.display())]
    NotAFile(PathBuf),
    #[error("-o {}: directory {} does not exist (end -o with / to have it created)", .path.display(), .dir.display())]
    NoDirectory { path: PathBuf, dir: PathBuf },
    #[error("-o {}: names no file", .0.display())]
    NoName(PathBuf),
    #[error("-o \"{}\": a file name with control characters or bytes that are not UTF-8 cannot be written into the .sha256 file as sha256sum -c and ferry verify read it; choose another name", .0.display().to_string().escape_debug())]
    BadName(PathBuf),
    #[error("{}: a part of an earlier bundle is in the way; remove the earlier bundle's parts first", .0.display())]
    Exists(PathBuf),
    #[error("--split {part_size}: a bundle of {bytes} bytes would be cut into {parts} parts; at most {MAX_PARTS} are numbered so that they rejoin in order, so use --split {smallest} or more")]
    TooManyParts {
        part_size: u64,
        bytes: u64,
        parts: u64,
        smallest: u64,
    },
}

/// `--split SIZE` as written: 4G means the largest file FAT32 holds.
fn part_size(split: u64) -> u64 {
    if split == FAT32_LIMIT {
        split - 1
    } else {
        split
    }
}

/// Checks, before anything is fetched, that a bundle can be written at `path`, and sweeps the staging
/// directories killed runs left beside it.
pub fn prepare(path: &Path, split: Option<u64>) -> Result<(), OutputError> {
    let name = path
        .file_name()
        .ok_or_else(|| TargetError::NoName(path.to_path_buf()))?;
    if name
        .to_str()
        .is_none_or(|name| name.chars().any(char::is_control))
    {
        return Err(TargetError::BadName(path.to_path_buf()).into());
    }
    let dir = dir_of(path);
    if !dir.is_dir() {
        return Err(TargetError::NoDirectory {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        }
        .into());
    }
    for target in targets(path, split) {
        refuse_special(&target)?;
    }
    if split.is_some() {
        let first = sibling(path, &part_suffix(0));
        if first.symlink_metadata().is_ok() {
            return Err(TargetError::Exists(first).into());
        }
    }
    interrupt::sweep(dir, |name| {
        name.starts_with('.') && name.ends_with(STAGING_SUFFIX)
    });
    // Proves the directory writable now rather than after every download.
    staging_dir(path)?;
    Ok(())
}

/// The files a bundle at `path` puts in place (or, for an earlier bundle's signature, removes), besides
/// its parts.
fn targets(path: &Path, split: Option<u64>) -> Vec<PathBuf> {
    let mut targets = vec![sibling(path, ".sha256"), sibling(path, ".sig")];
    match split {
        Some(_) => targets.push(sibling(path, ".parts.sha256")),
        None => targets.push(path.to_path_buf()),
    }
    targets
}

/// Renaming over a device, a FIFO or a symlink would replace it (as root, `-o /dev/null` would turn
/// `/dev/null` into a regular file); only regular files are replaced.
fn refuse_special(target: &Path) -> Result<(), TargetError> {
    match target.symlink_metadata() {
        Ok(metadata) if !metadata.is_file() => Err(TargetError::NotAFile(target.to_path_buf())),
        _ => Ok(()),
    }
}

fn part_suffix(index: u64) -> String {
    format!(".part-{index:03}")
}

fn staging_dir(path: &Path) -> io::Result<TempDir> {
    tempfile::Builder::new()
        .prefix(&format!(".{}.", file_name(path)))
        .suffix(STAGING_SUFFIX)
        .tempdir_in(dir_of(path))
}

/// The hidden, locked directory beside the bundle that holds every file until all are placed together.
/// Dropping it removes whatever was not placed.
pub struct Staging {
    dir: TempDir,
    /// Held open for the lock, which tells a sweeping run that this directory is in use.
    _lock: File,
    /// (name inside the staging directory, where it goes).
    files: Vec<(PathBuf, PathBuf)>,
    /// Files of an earlier bundle that must not outlive the placing of this one.
    stale: Vec<PathBuf>,
}

impl Staging {
    fn create(path: &Path) -> io::Result<Staging> {
        loop {
            let dir = staging_dir(path)?;
            let lock = File::open(dir.path())?;
            if interrupt::hold(&lock, dir.path())? {
                return Ok(Staging {
                    dir,
                    _lock: lock,
                    files: Vec::new(),
                    stale: Vec::new(),
                });
            }
        }
    }

    /// Where the file to be placed at `target` is staged.
    fn staged(&self, target: &Path) -> PathBuf {
        self.dir.path().join(file_name(target))
    }

    /// A new private file, to be placed at `target`.
    fn file(&mut self, target: &Path) -> io::Result<File> {
        let staged = self.staged(target);
        let file = File::options().write(true).create_new(true).open(&staged)?;
        self.files.push((staged, target.to_path_buf()));
        Ok(file)
    }

    /// Has a file written into the staging directory under its target's name placed at `target`.
    fn adopt(&mut self, target: &Path) {
        self.files.push((self.staged(target), target.to_path_buf()));
    }

    /// Stages `bytes` to be placed at `target`, e.g. a checksum or a signature beside the bundle.
    pub fn text(&mut self, target: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.file(target)?;
        file.write_all(bytes)?;
        publishable(&file)
    }

    /// Has [`Staging::place`] remove whatever is at `target` once everything is in place.
    pub fn remove_after(&mut self, target: &Path) {
        self.stale.push(target.to_path_buf());
    }

    /// Renames every staged file into place. Should one rename fail, the files already placed are
    /// removed again: parts without their checksums, or a bundle beside a stale checksum, would mislead
    /// whoever finds them.
    pub fn place(self) -> Result<(), OutputError> {
        interrupt::check()?;
        for (_, target) in &self.files {
            refuse_special(target)?;
        }
        let mut placed = Vec::new();
        for (staged, target) in &self.files {
            if let Err(error) = std::fs::rename(staged, target) {
                for path in &placed {
                    let _ = std::fs::remove_file(path);
                }
                return Err(error.into());
            }
            placed.push(target);
        }
        for stale in &self.stale {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(())
    }
}

pub struct Output {
    staging: Staging,
    path: PathBuf,
    part_size: Option<u64>,
    /// The part being written; the earlier ones are closed.
    part: File,
    /// Bytes of the open part, `pending` included.
    part_bytes: u64,
    /// Let the bytes written go from the page cache as they reach the disk: nothing reads them back.
    pass_on: bool,
    /// The bytes of the open part written to it, those whose writeback was started, and those let go of.
    part_written: u64,
    writeback_started: u64,
    let_go: u64,
    /// Bytes not yet written to the part, the first `filled` of a chunk, handed to the hasher with them.
    pending: Vec<u8>,
    filled: usize,
    /// Parts written so far, the open one included.
    parts: u64,
    /// Every part's hash and the whole's, on a thread of their own.
    hasher: BackgroundHasher,
    bytes: u64,
    /// The bytes the output is to hold, as announced to [`Output::create`].
    total: u64,
    /// Bytes of the full stream this output is cut from that are not in it (see [`Output::shadow`]).
    shadowed: u64,
}

/// An output whose every byte is written and synced, its files staged and not yet placed.
pub struct Sealed {
    pub staging: Staging,
    path: PathBuf,
    pub files: Vec<PathBuf>,
    pub checksum_files: Vec<PathBuf>,
    /// What `PATH.sha256` says, and a signature signs.
    checksum_text: String,
    pub sha256: Digest,
    pub bytes: u64,
    /// The recovery data written beside the files, at the paths it is placed at.
    pub recovery: Option<Created>,
}

impl Output {
    /// Starts writing a bundle of `bytes` bytes at `path`, cut into parts of `split` bytes. Unless the
    /// files are to be read again once written (`reread`: recovery data is computed from them), their
    /// bytes are let go from the page cache as they reach the disk. `cut_from_full`: the bundle is a delta,
    /// whose full bundle is hashed beside it, from its bytes and the [`Output::shadow`] ones.
    pub fn create(
        path: &Path,
        split: Option<u64>,
        bytes: u64,
        reread: bool,
        cut_from_full: bool,
    ) -> Result<Output, OutputError> {
        interrupt::check()?;
        let part_size = split.map(part_size);
        if let (Some(split), Some(size)) = (split, part_size) {
            let parts = bytes.div_ceil(size.max(1));
            if parts > MAX_PARTS {
                return Err(TargetError::TooManyParts {
                    part_size: split,
                    bytes,
                    parts,
                    smallest: bytes.div_ceil(MAX_PARTS),
                }
                .into());
            }
        }
        prepare(path, split)?;
        check_room(dir_of(path), bytes)?;
        let mut staging = Staging::create(path)?;
        let first = match part_size {
            Some(_) => sibling(path, &part_suffix(0)),
            None => path.to_path_buf(),
        };
        let part = staging.file(&first)?;
        preallocate(&part, part_size.map_or(bytes, |size| size.min(bytes)));
        Ok(Output {
            staging,
            path: path.to_path_buf(),
            part_size,
            part,
            part_bytes: 0,
            pass_on: !reread,
            part_written: 0,
            writeback_started: 0,
            let_go: 0,
            pending: vec![0; CHUNK],
            filled: 0,
            parts: 1,
            hasher: match cut_from_full {
                true => BackgroundHasher::start_cut_from_full(),
                false => BackgroundHasher::start(),
            },
            bytes: 0,
            total: bytes,
            shadowed: 0,
        })
    }

    /// Writes what is pending to the open part, and hands it to the hasher.
    fn write_pending(&mut self) -> io::Result<()> {
        self.part.write_all(&self.pending[..self.filled])?;
        self.part_written += self.filled as u64;
        let mut written = std::mem::replace(&mut self.pending, self.hasher.chunk_to_fill(CHUNK));
        written.truncate(std::mem::take(&mut self.filled));
        self.hasher.update(written);
        if self.pass_on {
            self.pass_on();
        }
        Ok(())
    }

    /// With every [`WRITEBACK_WINDOW`] written, has the kernel start writing that window out, and let go of
    /// the window before (written out by now) from the page cache. The disk then writes while the next
    /// bytes are hashed, instead of all at the final sync; and the page cache holds a few windows of the
    /// bundle, not all of it, so the pages let go of are the ones the next bytes are written into (fresh
    /// pages cost more: on a virtual machine, several times the copy). Both are only advice to the kernel
    /// (`posix_fadvise(DONTNEED)` starts the writeback of dirty pages and drops clean ones, never data):
    /// should it refuse, the final sync still writes everything, so its refusal is not an error.
    fn pass_on(&mut self) {
        let written = self.part_written;
        if written - self.writeback_started < WRITEBACK_WINDOW {
            return;
        }
        let advise = |from: u64, to: u64| {
            // An empty range would mean the rest of the file to fadvise.
            if let Some(length) = std::num::NonZeroU64::new(to - from) {
                let _ = rustix::fs::fadvise(
                    &self.part,
                    from,
                    Some(length),
                    rustix::fs::Advice::DontNeed,
                );
            }
        };
        advise(self.writeback_started, written);
        advise(self.let_go, self.writeback_started);
        self.let_go = self.writeback_started;
        self.writeback_started = written;
    }

    fn next_part(&mut self) -> io::Result<()> {
        self.write_pending()?;
        let target = sibling(&self.path, &part_suffix(self.parts));
        let next = self.staging.file(&target)?;
        if let Some(size) = self.part_size {
            preallocate(&next, size.min(self.total.saturating_sub(self.bytes)));
        }
        let done = std::mem::replace(&mut self.part, next);
        publishable(&done)?;
        self.hasher.next_part();
        self.parts += 1;
        self.part_bytes = 0;
        self.part_written = 0;
        self.writeback_started = 0;
        self.let_go = 0;
        Ok(())
    }

    /// The next `size` bytes written (or shadowed) are blob `digest`: hashed on their own too, beside the
    /// output's hash, and checked by [`Output::finish`] (by [`Output::end_full`], in the full stream).
    pub fn blob(&self, digest: &Digest, size: u64) {
        self.hasher.blob(digest, self.bytes + self.shadowed, size);
    }

    /// The blob being written ends here, short of its size.
    pub fn cut(&self) {
        self.hasher.cut(self.bytes + self.shadowed);
    }

    /// Bytes of the full stream this output was created cut from that are not written to it: hashed
    /// with the full stream, in order with the bytes written.
    pub fn shadow(&mut self, bytes: &[u8]) -> io::Result<()> {
        interrupt::check()?;
        if self.filled > 0 {
            self.write_pending()?;
        }
        for piece in bytes.chunks(CHUNK) {
            let mut chunk = self.hasher.buffer(CHUNK);
            chunk.extend_from_slice(piece);
            self.hasher.shadow(chunk);
        }
        self.shadowed += bytes.len() as u64;
        Ok(())
    }

    /// Reads up to `limit` bytes from `reader` straight into what is pending, as writing them would (no
    /// copy on the way; the bytes are hashed and written as any are), and says how many: 0 at its end.
    /// The outer error is the output's, the inner one the reader's.
    pub fn fill_from(
        &mut self,
        reader: &mut dyn Read,
        limit: usize,
    ) -> io::Result<io::Result<usize>> {
        interrupt::check()?;
        let room = self.room()?.min(limit);
        let read = match retried(|| reader.read(&mut self.pending[self.filled..][..room])) {
            Ok(read) => read,
            error => return Ok(error),
        };
        self.advance(read)?;
        Ok(Ok(read))
    }

    /// Reads up to `limit` bytes from `reader` into the full stream only, as [`Output::shadow`] of them
    /// would, and says how many: 0 at its end. The outer error is the output's, the inner the reader's.
    pub fn shadow_from(
        &mut self,
        reader: &mut dyn Read,
        limit: usize,
    ) -> io::Result<io::Result<usize>> {
        interrupt::check()?;
        if self.filled > 0 {
            self.write_pending()?;
        }
        let mut chunk = self.hasher.chunk_to_fill(limit.min(CHUNK));
        let read = match retried(|| reader.read(&mut chunk)) {
            Ok(read) => read,
            error => return Ok(error),
        };
        chunk.truncate(read);
        self.hasher.shadow(chunk);
        self.shadowed += read as u64;
        Ok(Ok(read))
    }

    /// The bytes that can be added to what is pending: to the end of its chunk, and of the part (the next
    /// part is opened when this one is full).
    fn room(&mut self) -> io::Result<usize> {
        let part_room = match self.part_size {
            Some(size) => {
                if self.part_bytes == size {
                    self.next_part()?;
                }
                usize::try_from(size - self.part_bytes).unwrap_or(usize::MAX)
            }
            None => usize::MAX,
        };
        Ok(part_room.min(CHUNK - self.filled))
    }

    /// `n` more bytes are pending; a full chunk is written.
    fn advance(&mut self, n: usize) -> io::Result<()> {
        self.filled += n;
        self.part_bytes += n as u64;
        self.bytes += n as u64;
        if self.filled == CHUNK {
            self.write_pending()?;
        }
        Ok(())
    }

    /// Ends the full stream this output was created cut from: its sha256, its length, and the blobs in
    /// it that are not what their names say. What is written after is the output's alone.
    pub fn end_full(&mut self) -> io::Result<(Digest, u64, Vec<Mismatch>)> {
        if self.filled > 0 {
            self.write_pending()?;
        }
        Ok(self.hasher.end_full())
    }

    /// Writes what is pending and waits for the hashes: of each part, of the whole, and of each blob
    /// announced, whose mismatches the caller refuses before it seals.
    pub fn finish(mut self) -> Result<Finished, OutputError> {
        interrupt::check()?;
        self.write_pending()?;
        publishable(&self.part)?;
        let hashed = self.hasher.finish();
        Ok(Finished {
            staging: self.staging,
            path: self.path,
            part_size: self.part_size,
            parts: self.parts,
            bytes: self.bytes,
            part_digests: hashed.parts,
            whole: hashed.whole,
            mismatches: hashed.mismatches,
        })
    }
}

/// An output whose every byte is written, synced and hashed, not yet sealed.
pub struct Finished {
    staging: Staging,
    path: PathBuf,
    part_size: Option<u64>,
    parts: u64,
    bytes: u64,
    part_digests: Vec<Digest>,
    whole: Digest,
    /// The blobs announced that are not what their names say, in the order written.
    pub mismatches: Vec<Mismatch>,
}

impl Finished {
    /// Writes the recovery data asked for beside the parts, and stages the checksum files, which cover
    /// the recovery files too: signed, a forged recovery file cannot then repair the bundle into something
    /// else. Nothing is visible yet: [`Sealed::sign`], then [`Staging::place`], put it all in place.
    pub fn seal(mut self, recovery: Option<Redundancy>) -> Result<Sealed, OutputError> {
        interrupt::check()?;
        let (digests, whole) = (self.part_digests, self.whole);
        let (files, sha256, part_sums) = match self.part_size {
            // The only part is the whole.
            None => (vec![self.path.clone()], whole, String::new()),
            Some(_) => {
                let files: Vec<PathBuf> = (0..self.parts)
                    .map(|index| sibling(&self.path, &part_suffix(index)))
                    .collect();
                let sums = files
                    .iter()
                    .zip(digests)
                    .map(|(file, digest)| checksum_line(digest, file))
                    .collect();
                (files, whole, sums)
            }
        };
        let (recovery, recovery_sums) = write_recovery(
            &mut self.staging,
            &self.path,
            self.part_size,
            &files,
            recovery,
        )?;
        let mut sums = vec![(
            sibling(&self.path, ".sha256"),
            checksum_line(sha256.clone(), &self.path) + &recovery_sums,
        )];
        if self.part_size.is_some() {
            sums.push((
                sibling(&self.path, ".parts.sha256"),
                part_sums + &recovery_sums,
            ));
        }
        let checksum_text = sums[0].1.clone();
        let mut checksum_files = Vec::new();
        for (target, text) in sums {
            self.staging.text(&target, text.as_bytes())?;
            checksum_files.push(target);
        }
        Ok(Sealed {
            staging: self.staging,
            path: self.path,
            files,
            checksum_files,
            checksum_text,
            sha256,
            bytes: self.bytes,
            recovery,
        })
    }
}

impl Sealed {
    /// With a key, stages `PATH.sig` over `PATH.sha256`; without, has an earlier bundle's signature
    /// removed, as it would be refused beside this one as if it were forged.
    pub fn sign(mut self, signer: Option<&dyn Signer>) -> Result<Sealed, OutputError> {
        let signature = sibling(&self.path, ".sig");
        match signer {
            Some(signer) => {
                let text = signer.signature(self.checksum_text.as_bytes())?;
                self.staging.text(&signature, text.as_bytes())?;
                self.checksum_files.insert(1, signature);
            }
            None => self.staging.remove_after(&signature),
        }
        Ok(self)
    }
}

/// Writes recovery data for the staged `files` of the bundle at `path` (no volume larger than a part),
/// staged to be placed beside them; returns it and its files' `sha256sum -c` lines. An earlier bundle's
/// recovery files at this path are removed once this one is placed: they describe other bytes.
fn write_recovery(
    staging: &mut Staging,
    path: &Path,
    part_size: Option<u64>,
    files: &[PathBuf],
    redundancy: Option<Redundancy>,
) -> Result<(Option<Created>, String), OutputError> {
    let earlier = recovery::files_beside(path);
    let Some(redundancy) = redundancy else {
        for stale in earlier {
            staging.remove_after(&stale);
        }
        return Ok((None, String::new()));
    };
    let staged: Vec<PathBuf> = files.iter().map(|f| staging.staged(f)).collect();
    let mut options = CreateOptions::new(redundancy);
    options.volume_limit = part_size;
    let index = staging.staged(&recovery::index_path(path));
    let mut created = recovery::create(&staged, &index, &options)?;
    let mut sums = String::new();
    for file in &mut created.files {
        let mut hashing = Hashing::new(io::sink());
        io::copy(&mut File::open(&*file)?, &mut hashing)?;
        let target = dir_of(path).join(file_name(file));
        sums.push_str(&checksum_line(hashing.finish().1, &target));
        staging.adopt(&target);
        *file = target;
    }
    for stale in earlier.iter().filter(|e| !created.files.contains(e)) {
        staging.remove_after(stale);
    }
    Ok((Some(created), sums))
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        interrupt::check()?;
        let n = buf.len().min(self.room()?);
        self.pending[self.filled..][..n].copy_from_slice(&buf[..n]);
        self.advance(n)?;
        Ok(n)
    }

    /// What is pending is written when a chunk is full, or at a part's end: the file is the output's
    /// own until it is sealed, so nothing needs it sooner.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A read tried again for as long as a signal interrupts it, as `read_to_end` does.
fn retried(mut read: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match read() {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

/// Reserves a part's `bytes` on the disk before they are written: the filesystem then maps its extents
/// once, not page by page as the bytes arrive (on ext4, 12 ms of CPU less a 200 MB bundle, most of it on
/// the thread that writes). Only advice: where the filesystem cannot (`EOPNOTSUPP`), each write allocates
/// as before, and a full disk is still found by the free-space check and by the writes. The file's length
/// stays what was written (`KEEP_SIZE`), should the run stop early.
fn preallocate(part: &File, bytes: u64) {
    if bytes > 0 {
        let _ = rustix::fs::fallocate(part, rustix::fs::FallocateFlags::KEEP_SIZE, 0, bytes);
    }
}

/// Temporary files are private (0600); the finished bundle is for others to read, like any file `cp` makes.
fn publishable(file: &File) -> io::Result<()> {
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
/// Refuses, before a byte is written, a bundle of `bytes` that the file system of `dir` has no room
/// for (counting what an unprivileged user may use, as `df` shows it).
fn check_room(dir: &Path, bytes: u64) -> Result<(), OutputError> {
    let stats = rustix::fs::statvfs(dir).map_err(io::Error::from)?;
    let free = stats.f_bavail.saturating_mul(stats.f_frsize);
    if bytes > free {
        return Err(OutputError::NoRoom {
            dir: dir.to_path_buf(),
            needed: bytes,
            free,
        });
    }
    Ok(())
}

fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// One line of a `sha256sum -c` file; the name is relative so the check works wherever the files are
/// carried. [`prepare`] refused the names sha256sum would have to escape.
fn checksum_line(digest: Digest, path: &Path) -> String {
    checksum_text(&digest, &file_name(path))
}

/// The text of `NAME.sha256` for a bundle named `name` whose sha256 is `digest`: what a signature signs.
pub fn checksum_text(digest: &Digest, name: &str) -> String {
    format!("{}  {name}\n", digest.hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writing more than a few windows, the page cache let go of as it goes, loses no byte: the files
    /// hold what was written, whole or cut into parts that are no multiple of a window, and the sums say so;
    /// each holds the disk space of its bytes, however much was reserved ahead.
    #[test]
    fn bytes_let_go_of_from_the_page_cache_are_all_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = fastrand::Rng::with_seed(7);
        let bytes: Vec<u8> = (0..3 * WRITEBACK_WINDOW + 12345)
            .map(|_| rng.u8(..))
            .collect();
        for split in [None, Some(WRITEBACK_WINDOW + 4097)] {
            let path = dir.path().join(format!("b-{split:?}.tar"));
            let mut output =
                Output::create(&path, split, bytes.len() as u64, false, false).unwrap();
            for piece in bytes.chunks(300_001) {
                output.write_all(piece).unwrap();
            }
            let sealed = output
                .finish()
                .unwrap()
                .seal(None)
                .unwrap()
                .sign(None)
                .unwrap();
            let (files, sha256) = (sealed.files.clone(), sealed.sha256.clone());
            sealed.staging.place().unwrap();
            let joined: Vec<u8> = files
                .iter()
                .flat_map(|f| std::fs::read(f).unwrap())
                .collect();
            assert!(joined == bytes, "{split:?}: the files hold other bytes");
            for file in &files {
                // The disk space reserved before writing is what each file holds, no more (a file
                // system block at most, and a block of its extent tree).
                let meta = std::fs::metadata(file).unwrap();
                let allocated = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
                assert!(
                    allocated <= meta.len().next_multiple_of(4096) + 4096,
                    "{}: {allocated} bytes allocated for {}",
                    file.display(),
                    meta.len()
                );
            }
            assert_eq!(sha256, Digest::of(&bytes));
            assert_eq!(
                files.len(),
                split.map_or(1, |s| bytes.len().div_ceil(s as usize))
            );
        }
    }
}
