//! What a run does when it is told to stop (Ctrl-C, `timeout`, systemd, a cancelled CI job, a closed
//! terminal), and how the next run finds what a run that could not clean up left behind.
//!
//! The first SIGINT, SIGTERM or SIGHUP only sets a flag. Every loop that writes checks it and fails with
//! [`Interrupted`], so the ordinary error path removes what was being written, and the one place that
//! maps errors to exit codes gives 128 + the signal's number, as a shell reports a process the signal
//! killed. A second signal ends the process at once, as if ferry had no handler, for a run that does not
//! stop soon enough. What that leaves, and what `kill -9` or a power cut leaves, is swept by the next
//! run: a temporary is locked while in use, so one that can be locked belongs to no live process.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// The signal that asked this run to stop, 0 while none did.
static RECEIVED: AtomicUsize = AtomicUsize::new(0);
/// Set by the first signal, so that a second one ends the process at once.
static ARMED: AtomicBool = AtomicBool::new(false);
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by {}; the files being written were removed", signal_hook::low_level::signal_name(*.signal).unwrap_or("a signal"))]
pub struct Interrupted {
    pub signal: i32,
}

impl Interrupted {
    /// 128 + the signal's number: 130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP.
    pub fn exit_code(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(u8::MAX)
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into a flag for the rest of the process's life. Only for commands
/// whose every long step checks the flag; the others keep the default, which ends them at once.
/// Should the handlers not register, the default stays too, and the next run sweeps what is left.
pub fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        for signal in [SIGINT, SIGTERM, SIGHUP] {
            // The order matters: the default action must see the flag as it was before this signal.
            let _ = signal_hook::flag::register_conditional_default(signal, &ARMED)
                .and_then(|_| signal_hook::flag::register_usize(signal, &RECEIVED, signal as usize))
                .and_then(|_| signal_hook::flag::register(signal, &ARMED));
        }
    });
}

/// The signal that asked this run to stop, if one did.
pub fn pending() -> Option<Interrupted> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(Interrupted {
            signal: i32::try_from(signal).unwrap_or(SIGTERM),
        }),
    }
}

/// Fails once a signal asked this run to stop. The error is not of kind `Interrupted`: `io::copy` and
/// `write_all` retry those.
pub fn check() -> io::Result<()> {
    match pending() {
        Some(stop) => Err(io::Error::other(stop)),
        None => Ok(()),
    }
}

/// What the parts of one call still working fail with after [`Cancel::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped because another part of the run failed")]
pub struct Abandoned;

/// A stop that belongs to one call, not to the process: when one part of a fetch fails, the parts still
/// working (vendor layers being compressed) stop as they would for a signal, since their work would be
/// thrown away. Whatever runs later in the same process is not touched.
#[derive(Debug, Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub const fn new() -> Cancel {
        Cancel(AtomicBool::new(false))
    }

    /// Tells every reader made with [`Cancel::reader`] to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Fails once a signal asked this run to stop, or this call was cancelled.
    pub fn check(&self) -> io::Result<()> {
        check()?;
        if self.0.load(Ordering::SeqCst) {
            return Err(io::Error::other(Abandoned));
        }
        Ok(())
    }

    /// A reader that fails once [`Cancel::check`] does, for loops that only read and hash or compress
    /// (a vendor layer), so that they end within one buffer.
    pub fn reader<R: Read>(&self, inner: R) -> Checked<'_, R> {
        Checked {
            inner,
            cancel: self,
        }
    }
}

/// Whether `error`, or any of its causes, is the stop [`Cancel::cancel`] asked for.
pub fn is_abandonment(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<Abandoned>()
            || error
                .downcast_ref::<io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<Abandoned>())
        {
            return true;
        }
        cause = error.source();
    }
    false
}

/// Resolves when a signal asks this run to stop; raced against a fetch, it drops the fetch's futures.
pub async fn signalled() -> Interrupted {
    loop {
        if let Some(stop) = pending() {
            return stop;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// See [`Cancel::reader`].
pub struct Checked<'c, R> {
    inner: R,
    cancel: &'c Cancel,
}

impl<R: Read> Read for Checked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.cancel.check()?;
        self.inner.read(buf)
    }
}

/// Locks `file`, opened from `path`, for as long as it stays open, so that [`sweep`] in another process
/// leaves it alone. Returns false when `path` no longer names `file`: a sweep (or the process that made
/// it, committing it) removed it before the lock was taken, and the caller must make a new one.
pub fn hold(file: &File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    file.lock()?;
    let held = file.metadata()?;
    Ok(std::fs::symlink_metadata(path)
        .is_ok_and(|current| current.ino() == held.ino() && current.dev() == held.dev()))
}

/// Removes the temporaries in `dir` that `ours` recognizes by name and no live process holds: left by a
/// run that was killed, or stopped by a second signal. Returns how many were removed. Best effort: a
/// temporary that cannot be inspected or removed is left for the next run.
pub fn sweep(dir: &Path, ours: impl Fn(&str) -> bool) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| entry.file_name().to_str().is_some_and(&ours))
        .filter(|entry| remove_if_abandoned(&entry.path()).unwrap_or(false))
        .count()
}

fn remove_if_abandoned(path: &Path) -> io::Result<bool> {
    let metadata = std::fs::symlink_metadata(path)?;
    if !metadata.is_dir() && !metadata.is_file() {
        return Ok(false);
    }
    // Held until removed: a process that made this file a moment ago and is about to lock it waits,
    // then finds it gone and makes another (see `hold`).
    let file = File::open(path)?;
    if file.try_lock().is_err() {
        return Ok(false);
    }
    if metadata.is_dir() {
        std::fs::remove_dir_all(path)?;
    } else {
        std::fs::remove_file(path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_128_plus_the_signal() {
        let code = |signal| Interrupted { signal }.exit_code();
        assert_eq!((code(SIGINT), code(SIGTERM), code(SIGHUP)), (130, 143, 129));
        assert_eq!(
            Interrupted { signal: SIGTERM }.to_string(),
            "interrupted by SIGTERM; the files being written were removed"
        );
    }

    /// A failed fetch stops its own vendor work, and nothing that runs after it in the same process
    /// (the next bundle's writer checks [`check`]).
    #[test]
    fn a_cancelled_call_stops_its_readers_and_no_one_else() {
        let (cancelled, other) = (Cancel::default(), Cancel::default());
        cancelled.cancel();
        let mut buf = [0u8; 4];
        let error = cancelled.reader(&b"data"[..]).read(&mut buf).unwrap_err();
        assert!(is_abandonment(&error), "{error}");
        assert_eq!(other.reader(&b"data"[..]).read(&mut buf).unwrap(), 4);
        assert!(check().is_ok(), "the process goes on");
    }

    #[test]
    fn a_sweep_removes_abandoned_temporaries_and_keeps_held_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("abandoned.tmp"), b"half a bundle").unwrap();
        std::fs::create_dir(path("abandoned-dir.tmp")).unwrap();
        std::fs::write(path("abandoned-dir.tmp/part-000"), b"x").unwrap();
        std::fs::write(path("held.tmp"), b"being written").unwrap();
        std::fs::create_dir(path("held-dir.tmp")).unwrap();
        std::fs::write(path("held-dir.tmp/part-000"), b"x").unwrap();
        std::fs::write(path("someone-else's"), b"not ours").unwrap();
        // Locks are per open file: these are held as another process's would be.
        let held = File::open(path("held.tmp")).unwrap();
        assert!(hold(&held, &path("held.tmp")).unwrap());
        let held_dir = File::open(path("held-dir.tmp")).unwrap();
        assert!(hold(&held_dir, &path("held-dir.tmp")).unwrap());

        assert_eq!(sweep(dir.path(), |name| name.ends_with(".tmp")), 2);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["held-dir.tmp", "held.tmp", "someone-else's"]);

        // A temporary swept between its creation and its lock is noticed by its maker.
        let late = File::open(path("held.tmp")).unwrap();
        drop(held);
        assert_eq!(sweep(dir.path(), |name| name == "held.tmp"), 1);
        assert!(!hold(&late, &path("held.tmp")).unwrap());
    }
}
