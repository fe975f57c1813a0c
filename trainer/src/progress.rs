//! Views of a training run: local mode's (a progress bar on a terminal, log lines
//! otherwise, and `rejected_rows.txt`), and the JSON lines a launched run's rank 0
//! writes for the worker.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::distributed::launch;
use absa_domain::RowError;

use crate::data_files::DataFiles;
use crate::training::{EpochRecord, Observer, Split, StepProgress};

/// Local mode's view of a run: progress on the terminal, and the rows it could not
/// use in `OUT/rejected_rows.txt` as `file:line N: reason`.
pub struct TerminalProgress {
    bar: Option<ProgressBar>,
    /// The run's files, and where the rejected rows go.
    files: DataFiles,
    rejected_file: PathBuf,
}

impl TerminalProgress {
    /// Progress of a run on `files` writing into `out`.
    pub fn new(out: &Path, files: &DataFiles) -> Self {
        Self { bar: None, files: files.clone(), rejected_file: out.join("rejected_rows.txt") }
    }
}

impl Observer for TerminalProgress {
    fn on_rejected(&mut self, rows: &[(Split, RowError)]) {
        let lines: Vec<String> = rows
            .iter()
            .map(|(split, e)| {
                let file = self.files.file(*split).map_or_else(|| split.to_string(), |f| f.display().to_string());
                format!("{file}:{e}")
            })
            .collect();
        if let Err(e) = std::fs::write(&self.rejected_file, lines.join("\n")) {
            tracing::warn!(file = %self.rejected_file.display(), error = %e, "could not write the rejected rows");
        }
    }

    fn on_start(&mut self, total_steps: i64, start_step: i64) {
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_steps as u64);
            bar.set_style(ProgressStyle::with_template("{bar:30} step {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]").expect("valid template"));
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

    fn should_stop(&mut self) -> bool {
        launch::stop_requested()
    }
}

impl Drop for TerminalProgress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One line of a launched run's progress (see [`EventPipe`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum RunEvent {
    Rejected {
        rows: Vec<(Split, RowError)>,
    },
    Start {
        total_steps: i64,
        start_step: i64,
    },
    Step {
        epoch: usize,
        global_step: i64,
        total_steps: i64,
        loss: f64,
        samples_per_second: f64,
        step_rows: usize,
    },
    /// The epoch is done and `checkpoint` (checkpoint-last) written: the run waits for
    /// a line on its stdin before the next epoch may replace it.
    Epoch {
        record: EpochRecord,
        checkpoint: PathBuf,
        best_epoch: usize,
    },
}

/// Progress of a run launched by the trainer worker: [`RunEvent`]s as JSON lines on
/// stdout, and after each epoch a wait for the worker's answer on stdin (it stores the
/// checkpoint meanwhile). A closed stdin (the worker is gone) or SIGTERM stops the run.
pub struct EventPipe<W: Write, R: BufRead> {
    out: W,
    answers: R,
    closed: bool,
}

impl EventPipe<std::io::Stdout, std::io::StdinLock<'static>> {
    pub fn stdio() -> Self {
        Self { out: std::io::stdout(), answers: std::io::stdin().lock(), closed: false }
    }
}

impl<W: Write, R: BufRead> EventPipe<W, R> {
    pub fn new(out: W, answers: R) -> Self {
        Self { out, answers, closed: false }
    }

    fn send(&mut self, event: &RunEvent) {
        let line = serde_json::to_string(event).expect("events serialise");
        if writeln!(self.out, "{line}").and_then(|()| self.out.flush()).is_err() {
            self.closed = true;
        }
    }
}

impl<W: Write, R: BufRead> Observer for EventPipe<W, R> {
    fn on_rejected(&mut self, rows: &[(Split, RowError)]) {
        self.send(&RunEvent::Rejected { rows: rows.to_vec() });
    }

    fn on_start(&mut self, total_steps: i64, start_step: i64) {
        self.send(&RunEvent::Start { total_steps, start_step });
    }

    fn on_step(&mut self, p: &StepProgress) {
        self.send(&RunEvent::Step {
            epoch: p.epoch,
            global_step: p.global_step,
            total_steps: p.total_steps,
            loss: p.loss,
            samples_per_second: p.samples_per_second,
            step_rows: p.step_rows,
        });
    }

    fn on_epoch(&mut self, record: &EpochRecord, checkpoint: &Path, best_epoch: usize) {
        self.send(&RunEvent::Epoch { record: record.clone(), checkpoint: checkpoint.to_path_buf(), best_epoch });
        let mut answer = String::new();
        if self.answers.read_line(&mut answer).unwrap_or(0) == 0 || answer.trim() != "ok" {
            self.closed = true;
        }
    }

    fn should_stop(&mut self) -> bool {
        self.closed || launch::stop_requested()
    }
}
