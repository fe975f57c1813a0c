//! The CLI's view of a training run: a progress bar on a terminal, log lines otherwise.

use std::io::IsTerminal;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};

use crate::training::{EpochRecord, Observer, StepProgress};

pub struct TerminalProgress {
    bar: Option<ProgressBar>,
}

impl TerminalProgress {
    pub fn new() -> Self {
        Self { bar: None }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

impl Observer for TerminalProgress {
    fn on_start(&mut self, total_steps: i64, start_step: i64) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_steps as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]")
                    .expect("valid template"),
            );
            bar.set_position(start_step as u64);
            bar.reset_eta();
            self.bar = Some(bar);
        }
    }

    fn on_step(&mut self, p: &StepProgress) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(p.global_step as u64);
                bar.set_message(format!("epoch {} loss {:.4} {:.1} samples/s", p.epoch, p.loss, p.samples_per_second));
            }
            None if p.step_in_epoch.is_multiple_of(50) => {
                tracing::info!(epoch = p.epoch, step = p.global_step, total = p.total_steps, loss = p.loss, samples_per_s = p.samples_per_second, "training");
            }
            None => {}
        }
    }

    fn on_epoch(&mut self, record: &EpochRecord, _checkpoint: &Path, _best_epoch: usize) {
        if let Some(bar) = &self.bar {
            bar.println(format!(
                "epoch {}: train loss {:.4}, validation loss {:.4} accuracy {:.4} macro-F1 {:.4}",
                record.epoch, record.train_loss, record.validation.loss, record.validation.accuracy, record.validation.macro_f1
            ));
        }
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
