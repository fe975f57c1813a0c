//! `absa-export`: writes a checkpoint as a scorer model directory (ONNX fp32 and
//! int8, tokenizer, labels). A thin wrapper over `absa_trainer::export`.

use std::path::PathBuf;
use std::process::ExitCode;

use absa_domain::LabelSet;
use absa_trainer::checkpoint::{self, LoadOptions};
use absa_trainer::export::{self, ExportOptions, GraphStyle};
use anyhow::Context;
use clap::Parser;
use tch::Device;

/// Exports a TD-BERT checkpoint (HF directory) to ONNX for `absa-scorer`.
#[derive(Parser)]
#[command(name = "absa-export", version)]
struct Cli {
    /// Checkpoint directory (config.json, safetensors, tokenizer files).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Output model directory.
    #[arg(long)]
    out: PathBuf,
    /// Where the tokenizer files are, when not in the checkpoint.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Labels for a checkpoint without a trained head (`sentiment`, `stance`, or
    /// comma-separated names); the head is then initialised from `--seed`.
    #[arg(long)]
    labels: Option<String>,
    #[arg(long, default_value_t = 42)]
    seed: i64,
    #[arg(long, default_value_t = absa_domain::encoding::DEFAULT_MAX_LENGTH)]
    max_length: usize,
    /// Skip the int8 graph.
    #[arg(long)]
    no_int8: bool,
    /// Write attention, residual LayerNorm and bias-GELU as ONNX Runtime contrib
    /// operators (for GPU execution providers; slower than the default on CPU).
    #[arg(long)]
    ort_fused: bool,
}

fn main() -> ExitCode {
    if let Err(err) = run(Cli::parse()) {
        eprintln!("error: {err:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let labels = match cli.labels.as_deref() {
        None => None,
        Some("sentiment") => Some(LabelSet::sentiment()),
        Some("stance") => Some(LabelSet::stance()),
        Some(names) => Some(LabelSet::new(names.split(',').map(|s| s.trim().to_owned()).collect()).map_err(anyhow::Error::msg)?),
    };
    tch::manual_seed(cli.seed);
    let loaded = checkpoint::load(&cli.checkpoint, &LoadOptions { labels, pooling: None, input: None }, Device::Cpu)
        .with_context(|| format!("loading {}", cli.checkpoint.display()))?;
    let tokenizer = cli.tokenizer.unwrap_or_else(|| cli.checkpoint.clone());
    let style = if cli.ort_fused { GraphStyle::OrtFused } else { GraphStyle::Portable };
    let options = ExportOptions { max_length: cli.max_length, int8: !cli.no_int8, style };
    let report = export::export_model_dir(&loaded, &tokenizer, &cli.out, &options).context("export failed")?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
