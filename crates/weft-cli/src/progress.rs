//! Progress of a long operation (a bulk create): a progress bar when stderr is a
//! terminal, otherwise one plain line per item on stdout, so logs and scripts get a
//! readable record of what happened to each item.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports items done out of a known total.
pub enum Progress {
    /// A bar on the terminal; item lines are printed above it.
    Bar(ProgressBar),
    /// One line per item.
    Lines {
        /// How many items there are.
        total: u64,
        /// How many were reported so far.
        done: u64,
    },
}

impl Progress {
    /// A bar if stderr is a terminal, plain lines otherwise.
    pub fn new(total: u64, what: &str) -> Progress {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let style =
                ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
                    .map(|s| s.progress_chars("=> "))
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.to_owned());
            Progress::Bar(bar)
        } else {
            Progress::Lines { total, done: 0 }
        }
    }

    /// One item succeeded; `line` says what was done.
    pub fn ok(&mut self, line: &str) {
        match self {
            Progress::Bar(b) => b.inc(1),
            Progress::Lines { total, done } => {
                *done += 1;
                outln!("[{done}/{total}] {line}");
            }
        }
    }

    /// One item failed; `line` says why (always shown, also above a bar).
    pub fn failed(&mut self, line: &str) {
        match self {
            Progress::Bar(b) => {
                b.println(format!("error: {line}"));
                b.inc(1);
            }
            Progress::Lines { total, done } => {
                *done += 1;
                eprintln!("[{done}/{total}] error: {line}");
            }
        }
    }

    /// Removes the bar (the summary line follows).
    pub fn finish(self) {
        if let Progress::Bar(b) = self {
            b.finish_and_clear();
        }
    }
}
