//! Progress output: a bar with loss, throughput and ETA on a terminal, log lines otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use recurrent::models::fit::EpochRecord;
use recurrent::models::Progress;
use std::io::IsTerminal;

/// Progress for the CLI.
pub struct CliProgress {
    bar: Option<ProgressBar>,
    quiet: bool,
    epochs: Option<usize>,
    unit: &'static str,
}

impl CliProgress {
    /// A bar when stderr is a terminal (and not `quiet`), else one log line per epoch.
    pub fn new(quiet: bool, epochs: Option<usize>, unit: &'static str) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            b.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            b
        });
        CliProgress {
            bar,
            quiet,
            epochs,
            unit,
        }
    }
}

impl Progress for CliProgress {
    fn batch(&mut self, epoch: usize, batch: usize, batches: usize, loss: f64, per_second: f64) {
        if let Some(b) = &self.bar {
            b.set_length(batches as u64);
            b.set_position(batch as u64);
            let of = self.epochs.map(|e| format!("/{e}")).unwrap_or_default();
            b.set_prefix(format!("{epoch}{of}"));
            b.set_message(format!("loss {loss:.4} | {per_second:.0} {}/s", self.unit));
        }
    }

    fn epoch(&mut self, r: &EpochRecord, improved: bool) {
        let line = format!(
            "epoch {:>4}  train loss {:.4}  val loss {:.4}{}  ({:.1} s)",
            r.epoch,
            r.train_loss,
            r.val_loss,
            if improved { " *" } else { "" },
            r.seconds
        );
        match &self.bar {
            Some(b) => b.println(line),
            None if !self.quiet => eprintln!("{line}"),
            None => {}
        }
    }
}

impl Drop for CliProgress {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
