use absa_onnx::Precision;
use absa_platform::config::{AmqpSettings, DatabaseSettings, LogSettings};
use absa_platform::metrics::MetricsSettings;
use absa_store::worker::WorkerSettings;
use serde::Deserialize;

/// `absa-scorer`'s configuration (file plus `ABSA_*` overrides).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub database: DatabaseSettings,
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    /// `/metrics`, `/healthz` and `/readyz` (`[metrics] bind`; unset: not served).
    pub metrics: MetricsSettings,
    pub onnx: OnnxSettings,
    pub worker: WorkerSettings,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default)]
pub struct OnnxSettings {
    /// Threads ONNX Runtime uses inside one operator (matrix products).
    pub intra_threads: usize,
    /// The graph workers run unless a job asks for another (`fp32` or `int8`).
    pub precision: Precision,
}

impl Default for OnnxSettings {
    fn default() -> Self {
        Self { intra_threads: std::thread::available_parallelism().map_or(1, |n| n.get()), precision: Precision::Fp32 }
    }
}
