//! What the user sees while copying: an indicatif bar (bytes, rate, ETA) on
//! a terminal, nothing otherwise; one summary line at the end unless `--quiet`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    bar: ProgressBar,
    /// Bytes moved, including ranges still in flight (a failed range's bytes are taken back).
    moved: AtomicU64,
    started: Instant,
    quiet: bool,
}

impl Progress {
    pub fn new(total: u64, quiet: bool) -> Progress {
        let target = if !quiet && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        Progress {
            bar,
            moved: AtomicU64::new(0),
            started: Instant::now(),
            quiet,
        }
    }

    pub fn add(&self, bytes: u64) {
        self.moved.fetch_add(bytes, Ordering::Relaxed);
        self.bar.inc(bytes);
    }

    /// Takes back bytes of a range that will be moved again.
    pub fn take_back(&self, bytes: u64) {
        self.moved.fetch_sub(bytes, Ordering::Relaxed);
        self.bar.set_position(self.moved.load(Ordering::Relaxed));
    }

    /// Counts bytes an earlier run already moved (resumed ranges).
    pub fn skip(&self, bytes: u64) {
        self.bar.inc(bytes);
        self.bar.reset_eta();
    }

    /// A line above the bar (unless quiet).
    pub fn note(&self, message: &str) {
        if !self.quiet {
            self.bar.suspend(|| eprintln!("{message}"));
        }
    }

    pub fn moved(&self) -> u64 {
        self.moved.load(Ordering::Relaxed)
    }

    /// Clears the bar and prints `summary` on stderr (unless quiet).
    pub fn finish(&self, summary: impl FnOnce(f64) -> String) {
        self.bar.finish_and_clear();
        if !self.quiet {
            eprintln!("{}", summary(self.started.elapsed().as_secs_f64()));
        }
    }

    /// Clears the bar, leaving the terminal to the error message.
    pub fn abandon(&self) {
        self.bar.finish_and_clear();
    }
}
