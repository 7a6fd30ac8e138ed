//! Progress: the library reports events through [`Reporter`]; only this module knows about terminals.
//!
//! On a terminal, [`TerminalReporter`] draws indicatif bars (one per image plus a total, with rate and ETA);
//! otherwise it prints one plain line per event, which reads well in CI logs and `tee`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::digest::Digest;

/// Events of a long-running job. Every method has a do-nothing default.
pub trait Reporter: Send + Sync {
    /// An image's blobs are about to be fetched: `bytes` in all, `cached` of them already present.
    fn image_start(&self, _image: &str, _bytes: u64, _cached: u64) {}
    /// `n` more bytes of `blob` arrived for `image`.
    fn bytes(&self, _image: &str, _blob: &Digest, _n: u64) {}
    /// A blob download starts again from `offset` after a failure.
    fn retry(&self, _image: &str, _what: &str, _attempt: u32, _cause: &str) {}
    fn image_done(&self, _image: &str) {}
    /// Something the user should know that does not stop the job.
    fn note(&self, _message: &str) {}
    /// Something that is probably a mistake of the user's; printed even with `--quiet`.
    fn warning(&self, message: &str) {
        eprintln!("warning: {message}");
    }
    /// A step of a multi-step job, e.g. "writing bundle".
    fn phase(&self, _message: &str) {}
    /// The transfers are over: clear what is drawn before results are printed.
    fn finish(&self) {}
}

/// Reports nothing but warnings: `--quiet`, and tests.
pub struct Silent;

impl Reporter for Silent {}

/// Progress on stderr: bars on a terminal, plain lines elsewhere.
pub struct TerminalReporter {
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    images: Mutex<HashMap<String, ProgressBar>>,
}

impl TerminalReporter {
    pub fn new() -> TerminalReporter {
        let bars = std::io::stderr().is_terminal().then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let total = multi.add(ProgressBar::new(0).with_style(style("total")));
            total.enable_steady_tick(Duration::from_millis(200));
            Bars {
                multi,
                total,
                images: Mutex::new(HashMap::new()),
            }
        });
        TerminalReporter { bars }
    }

    fn print(&self, line: &str) {
        match &self.bars {
            Some(bars) => {
                let _ = bars.multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

impl Default for TerminalReporter {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-image bars show bytes; rate and ETA only on the total, where cached bytes cannot distort them.
fn style(prefix: &str) -> ProgressStyle {
    let rate = if prefix.is_empty() {
        ""
    } else {
        " {bytes_per_sec:>11} eta {eta:>3}"
    };
    let template = format!("{prefix:>5} {{wide_msg}} {{bytes:>10}}/{{total_bytes:<10}}{rate}");
    ProgressStyle::with_template(&template).expect("valid template")
}

impl Reporter for TerminalReporter {
    fn image_start(&self, image: &str, bytes: u64, cached: u64) {
        let Some(bars) = &self.bars else {
            eprintln!(
                "pull {image}: {} to fetch, {} cached",
                DecimalBytes(bytes - cached),
                DecimalBytes(cached)
            );
            return;
        };
        let bar = bars
            .multi
            .insert_before(&bars.total, ProgressBar::new(bytes).with_style(style("")));
        bar.set_message(image.to_string());
        bar.set_position(cached);
        bars.total.inc_length(bytes);
        bars.total.inc(cached);
        bars.total.reset_eta();
        bars.images
            .lock()
            .expect("progress lock")
            .insert(image.to_string(), bar);
    }

    fn bytes(&self, image: &str, _blob: &Digest, n: u64) {
        if let Some(bars) = &self.bars {
            if let Some(bar) = bars.images.lock().expect("progress lock").get(image) {
                bar.inc(n);
            }
            bars.total.inc(n);
        }
    }

    fn retry(&self, image: &str, what: &str, attempt: u32, cause: &str) {
        self.print(&format!("retry {attempt} for {what} of {image}: {cause}"));
    }

    fn image_done(&self, image: &str) {
        match &self.bars {
            Some(bars) => {
                if let Some(bar) = bars.images.lock().expect("progress lock").remove(image) {
                    bar.finish_and_clear();
                }
            }
            None => eprintln!("done: {image}"),
        }
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
        if let Some(bars) = &self.bars {
            for (_, bar) in bars.images.lock().expect("progress lock").drain() {
                bar.finish_and_clear();
            }
            bars.total.finish_and_clear();
        }
    }
}

impl Drop for TerminalReporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Sizes for people, in decimal units as registries and `docker images` print them: `1.50 MB`, `812 B`.
pub use indicatif::DecimalBytes;
