//! The progress bar a replay draws on a terminal: bytes, events, rate, ETA.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(super) struct Progress {
    bar: Option<ProgressBar>,
    /// Disk bytes of the files already finished.
    done: u64,
}

impl Progress {
    pub(super) fn new(enabled: bool, total_bytes: u64) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr_with_hz(10));
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta} {msg}",
            )
            .expect("the template is valid")
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        Self { bar, done: 0 }
    }

    /// `file_bytes`: disk bytes read of the current file; `events`: emitted so far.
    pub(super) fn update(&mut self, file_bytes: u64, events: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(self.done + file_bytes);
            bar.set_message(format!("{events} events"));
        }
    }

    pub(super) fn file_done(&mut self, size: u64) {
        self.done += size;
        if let Some(bar) = &self.bar {
            bar.set_position(self.done);
        }
    }

    pub(super) fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
