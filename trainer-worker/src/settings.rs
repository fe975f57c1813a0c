use std::path::PathBuf;

use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use absa_platform::metrics::MetricsSettings;
use absa_store::worker::WorkerSettings;
use serde::Deserialize;

/// `absa-trainer`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    /// `/metrics`, `/healthz` and `/readyz` (`[metrics] bind`; unset: not served).
    pub metrics: MetricsSettings,
    pub torch: TorchSettings,
    pub worker: WorkerSettings,
    /// Where base models live: a job's `base_model` names a folder here.
    pub models_dir: PathBuf,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct TorchSettings {
    /// Intra-op threads for libtorch on CPU; 0 keeps libtorch's default (all cores).
    pub threads: i32,
    /// GPUs this trainer offers for jobs that ask for GPUs; default: every GPU libtorch
    /// sees (none with a CPU build).
    pub gpus: Option<u32>,
    /// Memory of each of those GPUs; default: the smallest one's, from nvidia-smi.
    pub gpu_memory_gib: Option<f64>,
    /// How long a job's rank waits for the others in a collective before the attempt
    /// fails (a rank that died fails it at once; this bounds a hung one); 0: 600 s.
    pub collective_timeout_secs: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            database: DatabaseSettings::default(),
            amqp: AmqpSettings::default(),
            log: LogSettings::default(),
            metrics: MetricsSettings::default(),
            torch: TorchSettings::default(),
            worker: WorkerSettings::default(),
            models_dir: PathBuf::from("models"),
        }
    }
}
