//! Progress: the library reports events through [`Reporter`]; only this module knows about terminals.
//!
//! Each long task (an image pulled or imported, a bundle written, an image pushed, a bundle loaded) is
//! started with [`Reporter::on_start`], which returns the [`Id`] its later events carry, as uv's reporter
//! does: two tasks with the same name (one image on two platforms) are two tasks. On a terminal,
//! [`TerminalReporter`] draws indicatif bars (one per task plus a total, with rate and ETA); otherwise it
//! prints a plain line when a task starts and when it ends, which reads well in CI logs and `tee`.
//!
//! A closed stdout or stderr (`ferry bundle … 2>&1 | head -1`) must not stop a run or panic (`eprintln!`
//! panics when it cannot write): stderr is written through [`Stderr`], which loses what it cannot write,
//! and stdout through [`UntilClosed`], which drops output once its reader is gone, so that the command
//! still finishes and exits with its own code.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, IsTerminal, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Sizes for people, in decimal units as registries and `docker images` print them: `1.50 MB`, `812 B`.
pub use indicatif::DecimalBytes;

/// Which started task an event is about: what [`Reporter::on_start`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id(pub usize);

/// What a task does with its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// An image's blobs from a registry into the cache.
    Pull,
    /// A vendor image's layers from its tarball into the cache (gzipped on the way).
    Import,
    /// A bundle's tar onto disk.
    Write,
    /// An image's blobs from a bundle into a registry.
    Push,
    /// A bundle into a runtime's loader.
    Load,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Pull => "pull",
            Action::Import => "import",
            Action::Write => "write",
            Action::Push => "push",
            Action::Load => "load",
        })
    }
}

/// A task about to start: `total` bytes in all, `done` of them already there (cached blobs).
#[derive(Debug, Clone, Copy)]
pub struct Task<'a> {
    pub action: Action,
    /// The image or file, as people name it.
    pub subject: &'a str,
    pub total: u64,
    pub done: u64,
}

/// stderr as a writer that never fails: what cannot be written is lost, the run is not.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().lock().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

/// Writes `text` on stderr, as [`Stderr`] does.
pub fn to_stderr(text: &str) {
    let _ = Stderr.write_all(text.as_bytes());
}

/// Writes a line on stderr, as [`Stderr`] does.
pub fn line_to_stderr(line: &str) {
    to_stderr(&format!("{line}\n"));
}

/// A writer (stdout) whose reader may go away: once a write finds the pipe closed, this and every later
/// write are dropped as if written. Any other failure (a full disk behind `>`) is still an error.
pub struct UntilClosed<W> {
    inner: W,
    closed: bool,
}

impl<W: Write> UntilClosed<W> {
    pub fn new(inner: W) -> UntilClosed<W> {
        UntilClosed {
            inner,
            closed: false,
        }
    }

    fn dropped<T>(&mut self, result: io::Result<T>, instead: T) -> io::Result<T> {
        match result {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(instead)
            }
            result => result,
        }
    }
}

impl<W: Write> Write for UntilClosed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        let written = self.inner.write(buf);
        self.dropped(written, buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.closed {
            return Ok(());
        }
        let flushed = self.inner.flush();
        self.dropped(flushed, ())
    }
}

/// Events of a long-running job. Every method has a do-nothing default.
pub trait Reporter: Send + Sync {
    /// A task starts; its progress and end are reported under the id returned.
    fn on_start(&self, _task: &Task) -> Id {
        Id(0)
    }
    /// `bytes` more of the task went through.
    fn on_progress(&self, _id: Id, _bytes: u64) {}
    fn on_complete(&self, _id: Id) {}
    /// A request for `what` of `subject` is tried again after a failure.
    fn retry(&self, _subject: &str, _what: &str, _attempt: u32, _cause: &str) {}
    /// Something the user should know that does not stop the job.
    fn note(&self, _message: &str) {}
    /// Something that is probably a mistake of the user's; printed even with `--quiet`.
    fn warning(&self, message: &str) {
        line_to_stderr(&format!("warning: {message}"));
    }
    /// A step of a multi-step job, e.g. "writing bundle".
    fn phase(&self, _message: &str) {}
    /// The tasks are over: clear what is drawn before results are printed.
    fn finish(&self) {}
}

/// Reports nothing but warnings: `--quiet`, and tests.
pub struct Silent;

impl Reporter for Silent {}

/// Holds back what a job reports until it is known to count, then replays it and passes on the rest as
/// it comes: a bundle written ahead, while the registry is still asked what its tags name, is shown only
/// once the answers confirm it ([`Held::release`]); thrown away, it was never shown. Warnings pass at once.
pub struct Held<'r> {
    inner: &'r dyn Reporter,
    state: Mutex<HeldState>,
}

#[derive(Default)]
struct HeldState {
    /// The ids this reporter gave out, and the inner reporter's for each once released.
    given: usize,
    released: Option<HashMap<Id, Id>>,
    /// Until released: the events in order, each task's bytes summed.
    events: Vec<HeldEvent>,
    moved: HashMap<Id, u64>,
}

enum HeldEvent {
    Start {
        id: Id,
        action: Action,
        subject: String,
        total: u64,
        done: u64,
    },
    Complete(Id),
    Note(String),
    Phase(String),
    Retry {
        subject: String,
        what: String,
        attempt: u32,
        cause: String,
    },
}

impl<'r> Held<'r> {
    pub fn new(inner: &'r dyn Reporter) -> Held<'r> {
        Held {
            inner,
            state: Mutex::default(),
        }
    }

    /// Reports everything held, in order; what comes after is passed on as it comes.
    pub fn release(&self) {
        let mut state = self.state.lock().expect("progress lock");
        let mut ids = HashMap::new();
        for event in std::mem::take(&mut state.events) {
            let started = match &event {
                HeldEvent::Start { id, .. } => Some(*id),
                _ => None,
            };
            self.pass(&mut ids, event);
            // A task's bytes so far, before anything that follows its start (its end).
            if let Some(id) = started {
                if let Some(bytes) = state.moved.remove(&id) {
                    self.inner.on_progress(ids[&id], bytes);
                }
            }
        }
        state.released = Some(ids);
    }

    /// Passes `event` on to the inner reporter, which gives `ids` its own id for each task started.
    fn pass(&self, ids: &mut HashMap<Id, Id>, event: HeldEvent) {
        match event {
            HeldEvent::Start {
                id,
                action,
                subject,
                total,
                done,
            } => {
                let task = Task {
                    action,
                    subject: &subject,
                    total,
                    done,
                };
                ids.insert(id, self.inner.on_start(&task));
            }
            HeldEvent::Complete(id) => self.inner.on_complete(ids[&id]),
            HeldEvent::Note(message) => self.inner.note(&message),
            HeldEvent::Phase(message) => self.inner.phase(&message),
            HeldEvent::Retry {
                subject,
                what,
                attempt,
                cause,
            } => self.inner.retry(&subject, &what, attempt, &cause),
        }
    }

    fn pass_or_hold(&self, event: HeldEvent) {
        let mut state = self.state.lock().expect("progress lock");
        match &mut state.released {
            Some(ids) => self.pass(ids, event),
            None => state.events.push(event),
        }
    }
}

impl Reporter for Held<'_> {
    fn on_start(&self, task: &Task) -> Id {
        let id = {
            let mut state = self.state.lock().expect("progress lock");
            state.given += 1;
            Id(state.given)
        };
        self.pass_or_hold(HeldEvent::Start {
            id,
            action: task.action,
            subject: task.subject.to_string(),
            total: task.total,
            done: task.done,
        });
        id
    }

    fn on_progress(&self, id: Id, bytes: u64) {
        let mut state = self.state.lock().expect("progress lock");
        match &state.released {
            Some(ids) => self.inner.on_progress(ids[&id], bytes),
            None => *state.moved.entry(id).or_default() += bytes,
        }
    }

    fn on_complete(&self, id: Id) {
        self.pass_or_hold(HeldEvent::Complete(id));
    }

    fn note(&self, message: &str) {
        self.pass_or_hold(HeldEvent::Note(message.to_string()));
    }

    fn phase(&self, message: &str) {
        self.pass_or_hold(HeldEvent::Phase(message.to_string()));
    }

    fn retry(&self, subject: &str, what: &str, attempt: u32, cause: &str) {
        self.pass_or_hold(HeldEvent::Retry {
            subject: subject.to_string(),
            what: what.to_string(),
            attempt,
            cause: cause.to_string(),
        });
    }

    fn warning(&self, message: &str) {
        self.inner.warning(message);
    }
}

/// Reports the bytes that pass through a reader or writer to one task, in steps of at least
/// [`Counted::STEP`] bytes, so that a tar copying in 8 KiB pieces does not call the reporter per piece.
/// The last step is reported at the end of the input, or by [`Counted::into_inner`].
pub struct Counted<'r, T> {
    inner: T,
    reporter: &'r dyn Reporter,
    id: Id,
    pending: u64,
}

impl<'r, T> Counted<'r, T> {
    const STEP: u64 = 1 << 20;

    pub fn new(inner: T, reporter: &'r dyn Reporter, id: Id) -> Counted<'r, T> {
        Counted {
            inner,
            reporter,
            id,
            pending: 0,
        }
    }

    fn count(&mut self, n: usize) {
        self.pending += n as u64;
        if self.pending >= Self::STEP || (n == 0 && self.pending > 0) {
            self.reporter
                .on_progress(self.id, std::mem::take(&mut self.pending));
        }
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }

    /// `n` bytes went through the reader or writer by another way than this one.
    pub fn passed(&mut self, n: usize) {
        self.count(n);
    }

    /// The reader or writer, after the bytes not yet reported are.
    pub fn into_inner(mut self) -> T {
        self.count(0);
        self.inner
    }
}

impl<T: Read> Read for Counted<'_, T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count(n);
        Ok(n)
    }
}

impl<T: Write> Write for Counted<'_, T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count(n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Progress on stderr: bars on a terminal, plain lines elsewhere.
pub struct TerminalReporter {
    next: AtomicUsize,
    output: Output,
}

enum Output {
    Bars(Bars),
    /// Each task's name and the bytes that went through, for its closing line.
    Lines(Mutex<HashMap<Id, (String, u64)>>),
    /// Tasks unseen; notes and warnings still printed.
    Quiet,
}

struct Bars {
    multi: MultiProgress,
    /// The sum of the tasks under way; made with the first task, and cleared by `finish`.
    total: Mutex<Option<ProgressBar>>,
    tasks: Mutex<HashMap<Id, ProgressBar>>,
}

impl TerminalReporter {
    /// Bars on a terminal, a line per task elsewhere.
    pub fn new() -> TerminalReporter {
        TerminalReporter::with(Output::Lines(Mutex::new(HashMap::new())))
    }

    /// Bars on a terminal, and no word of the tasks elsewhere: for a job whose every step another
    /// program already says in lines of its own (a runtime's loader names each image it loads).
    pub fn bars_only() -> TerminalReporter {
        TerminalReporter::with(Output::Quiet)
    }

    fn with(elsewhere: Output) -> TerminalReporter {
        let output = if std::io::stderr().is_terminal() {
            Output::Bars(Bars {
                multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                total: Mutex::new(None),
                tasks: Mutex::new(HashMap::new()),
            })
        } else {
            elsewhere
        };
        TerminalReporter {
            next: AtomicUsize::new(0),
            output,
        }
    }

    fn print(&self, line: &str) {
        match &self.output {
            Output::Bars(bars) => {
                let _ = bars.multi.println(line);
            }
            Output::Lines(_) | Output::Quiet => line_to_stderr(line),
        }
    }
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-task bars show bytes; rate and ETA only on the total, where cached bytes cannot distort them.
fn style(prefix: &str) -> ProgressStyle {
    let rate = if prefix.is_empty() {
        ""
    } else {
        " {bytes_per_sec:>11} eta {eta:>3}"
    };
    let template = format!("{prefix:>5} {{wide_msg}} {{bytes:>10}}/{{total_bytes:<10}}{rate}");
    ProgressStyle::with_template(&template).expect("valid template")
}

/// The line that says a task starts, where no bar can show it.
fn start_line(task: &Task) -> String {
    let (action, subject) = (task.action, task.subject);
    let todo = DecimalBytes(task.total.saturating_sub(task.done));
    match task.action {
        Action::Pull => format!(
            "{action} {subject}: {todo} to fetch, {} cached",
            DecimalBytes(task.done)
        ),
        Action::Import => format!(
            "{action} {subject}: {todo} to store, {} cached",
            DecimalBytes(task.done)
        ),
        Action::Write | Action::Push | Action::Load => format!("{action} {subject}: {todo}"),
    }
}

impl Bars {
    fn start(&self, task: &Task, id: Id) {
        let mut total = self.total.lock().expect("progress lock");
        let total = total.get_or_insert_with(|| {
            let bar = self
                .multi
                .add(ProgressBar::new(0).with_style(style("total")));
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        let bar = self
            .multi
            .insert_before(total, ProgressBar::new(task.total).with_style(style("")));
        bar.set_message(format!("{} {}", task.action, task.subject));
        bar.set_position(task.done);
        total.inc_length(task.total);
        total.inc(task.done);
        total.reset_eta();
        self.tasks.lock().expect("progress lock").insert(id, bar);
    }

    fn progress(&self, id: Id, bytes: u64) {
        if let Some(bar) = self.tasks.lock().expect("progress lock").get(&id) {
            bar.inc(bytes);
        }
        if let Some(total) = self.total.lock().expect("progress lock").as_ref() {
            total.inc(bytes);
        }
    }

    fn clear(&self) {
        for (_, bar) in self.tasks.lock().expect("progress lock").drain() {
            bar.finish_and_clear();
        }
        if let Some(total) = self.total.lock().expect("progress lock").take() {
            total.finish_and_clear();
        }
    }
}

impl Reporter for TerminalReporter {
    fn on_start(&self, task: &Task) -> Id {
        let id = Id(self.next.fetch_add(1, Ordering::Relaxed));
        match &self.output {
            Output::Bars(bars) => bars.start(task, id),
            Output::Lines(tasks) => {
                line_to_stderr(&start_line(task));
                let name = format!("{} {}", task.action, task.subject);
                tasks.lock().expect("progress lock").insert(id, (name, 0));
            }
            Output::Quiet => {}
        }
        id
    }

    fn on_progress(&self, id: Id, bytes: u64) {
        match &self.output {
            Output::Bars(bars) => bars.progress(id, bytes),
            Output::Lines(tasks) => {
                if let Some((_, moved)) = tasks.lock().expect("progress lock").get_mut(&id) {
                    *moved += bytes;
                }
            }
            Output::Quiet => {}
        }
    }

    fn on_complete(&self, id: Id) {
        match &self.output {
            Output::Bars(bars) => {
                if let Some(bar) = bars.tasks.lock().expect("progress lock").remove(&id) {
                    bar.finish_and_clear();
                }
            }
            Output::Lines(tasks) => {
                if let Some((name, moved)) = tasks.lock().expect("progress lock").remove(&id) {
                    line_to_stderr(&format!("done: {name} ({})", DecimalBytes(moved)));
                }
            }
            Output::Quiet => {}
        }
    }

    fn retry(&self, subject: &str, what: &str, attempt: u32, cause: &str) {
        self.print(&format!("retry {attempt} for {what} of {subject}: {cause}"));
    }

    fn note(&self, message: &str) {
        self.print(&format!("note: {message}"));
    }

    fn warning(&self, message: &str) {
        self.print(&format!("warning: {message}"));
    }

    fn phase(&self, message: &str) {
        self.print(message);
    }

    fn finish(&self) {
        if let Output::Bars(bars) = &self.output {
            bars.clear();
        }
    }
}

impl Drop for TerminalReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reporter was told, in order.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<String>>);

    impl Reporter for Recorded {
        fn on_start(&self, task: &Task) -> Id {
            let mut events = self.0.lock().unwrap();
            events.push(format!("start {} {}", task.subject, task.total));
            Id(100 + events.len())
        }
        fn on_progress(&self, id: Id, bytes: u64) {
            self.0.lock().unwrap().push(format!("{} +{bytes}", id.0));
        }
        fn on_complete(&self, id: Id) {
            self.0.lock().unwrap().push(format!("{} done", id.0));
        }
        fn phase(&self, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
    }

    /// A held job shows nothing until released; then what it reported so far, in order (each task's
    /// bytes summed, under the id the inner reporter gave it), and what follows as it comes. Unreleased,
    /// nothing ever reaches the inner reporter.
    #[test]
    fn held_events_are_replayed_in_order_once_released_and_never_otherwise() {
        let inner = Recorded::default();
        let held = Held::new(&inner);
        let task = |subject| Task {
            action: Action::Write,
            subject,
            total: 10,
            done: 0,
        };
        held.phase("writing a.tar");
        let a = held.on_start(&task("a.tar"));
        held.on_progress(a, 3);
        held.on_progress(a, 4);
        assert!(
            inner.0.lock().unwrap().is_empty(),
            "nothing shown while held"
        );
        held.release();
        held.on_progress(a, 3);
        held.on_complete(a);
        let b = held.on_start(&task("b.tar"));
        held.on_complete(b);
        assert_eq!(
            *inner.0.lock().unwrap(),
            [
                "writing a.tar",
                "start a.tar 10",
                "102 +7",
                "102 +3",
                "102 done",
                "start b.tar 10",
                "106 done",
            ]
        );

        let unseen = Recorded::default();
        let held = Held::new(&unseen);
        let id = held.on_start(&task("c.tar"));
        held.on_progress(id, 10);
        held.on_complete(id);
        drop(held);
        assert!(unseen.0.lock().unwrap().is_empty());
    }

    #[test]
    fn counted_bytes_reach_the_reporter_in_steps_and_all_of_them() {
        let recorder = crate::testutil::Recorder::default();
        let data = vec![7u8; 3 << 20];
        let mut reader = Counted::new(&data[..], &recorder, Id(4));
        let mut sink = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            let n = reader.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            sink.extend_from_slice(&buffer[..n]);
        }
        let events = recorder.events();
        assert_eq!(events.len(), 3, "one event per MiB, not per read");
        assert!(events.iter().all(|(id, _)| *id == Id(4)));
        assert_eq!(events.iter().map(|(_, n)| n).sum::<u64>(), 3 << 20);
    }

    #[test]
    fn a_start_without_a_bar_says_what_is_to_be_done() {
        let task = |action, total, done| Task {
            action,
            subject: "quay.io/a/b:1",
            total,
            done,
        };
        assert_eq!(
            start_line(&task(Action::Pull, 3_000_000, 1_000_000)),
            "pull quay.io/a/b:1: 2.00 MB to fetch, 1.00 MB cached"
        );
        assert_eq!(
            start_line(&task(Action::Push, 5_000, 0)),
            "push quay.io/a/b:1: 5.00 kB"
        );
    }
}
