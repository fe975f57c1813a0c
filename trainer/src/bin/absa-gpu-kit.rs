//! The GPU run kit's checks that need the model on a device (see `scripts/gpu-kit.sh`),
//! and its build-time preparation.
//!
//! - `round`: a checkpoint's weights rounded to bf16 (what travels to the GPU machine).
//! - `lengths`: each row's token count under a tokenizer (the laptops lengths of the
//!   speed runs with dynamic padding).
//! - `forward`: logits of a labelled file in fp32 and under bf16 autocast, compared.
//! - `score`: the scorer's model run through libtorch: instances/s, sorted batches.
//! - `compare`: two checkpoints' parameters against each other.
//!
//! Each check prints one JSON line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use absa_domain::records::{read_labelled_file, Columns};
use absa_domain::AspectEncoder;
use absa_trainer::checkpoint::{self, copy_tokenizer_files, LoadOptions, LoadedModel};
use absa_trainer::training::data::{collate, encode_rows, eval_batches, Example};
use anyhow::Context;
use clap::{Parser, Subcommand};
use serde_json::json;
use tch::{Device, Kind, Tensor};

#[derive(Parser)]
#[command(about = "The GPU run kit's model checks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes MODEL's float weights in bf16 to OUT (config and tokenizer copied).
    Round {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints each row's token count (at most MAX_LENGTH), one per line.
    Lengths {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 100)]
        max_length: usize,
    },
    /// Logits of DATA's rows in fp32 and under bf16 autocast on DEVICE.
    Forward {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "cuda")]
        device: String,
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Scores DATA's rows repeated to N instances: tokenize, length-sorted batches,
    /// forward, argmax (the scorer's work through libtorch instead of ONNX Runtime).
    Score {
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value = "cuda")]
        device: String,
        #[arg(long, default_value = "bf16")]
        precision: String,
        #[arg(long, default_value_t = 20_000)]
        n: usize,
        #[arg(long, default_value_t = 64)]
        batch: usize,
    },
    /// Compares two checkpoints' parameters: the largest difference of a parameter's
    /// change from START (relative L2, key biases aside) and the largest element one.
    Compare { a: PathBuf, b: PathBuf, start: PathBuf },
}

fn device(name: &str) -> anyhow::Result<Device> {
    match name {
        "cpu" => Ok(Device::Cpu),
        "cuda" if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        "cuda" => anyhow::bail!("libtorch sees no CUDA device"),
        other => anyhow::bail!("--device is cuda or cpu, not {other:?}"),
    }
}

fn examples(model_dir: &Path, data: &Path, model: &LoadedModel) -> anyhow::Result<(Vec<Example>, i64)> {
    let encoder = AspectEncoder::from_file(&model_dir.join("tokenizer.json"), 100).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (rows, _) = read_labelled_file(data, &Columns::default()).with_context(|| data.display().to_string())?;
    let (examples, errors) = encode_rows(&rows, &encoder, model.model.input, &model.labels);
    anyhow::ensure!(errors.is_empty(), "{}: {} rows not encoded", data.display(), errors.len());
    Ok((examples, encoder.pad_id()))
}

/// Logits of every example (in order), in fp32 or under bf16 autocast.
fn logits(model: &LoadedModel, examples: &[Example], batch: usize, pad_id: i64, device: Device, bf16: bool) -> Tensor {
    let lengths: Vec<usize> = examples.iter().map(|e| e.input_ids.len()).collect();
    let out = Tensor::zeros([examples.len() as i64, model.labels.len() as i64], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        for idx in eval_batches(&lengths, batch) {
            let rows: Vec<&Example> = idx.iter().map(|&i| &examples[i]).collect();
            let b = collate(&rows, None, pad_id, device);
            let forward = || model.model.logits_t(&b.input_ids, &b.attention_mask, &b.aspect_mask, false);
            let l = if bf16 { absa_trainer::autocast::with_autocast(device, Kind::BFloat16, forward).expect("bf16 autocast") } else { forward() };
            let l = l.to_kind(Kind::Float).to_device(Device::Cpu);
            for (j, &i) in idx.iter().enumerate() {
                let mut row = out.get(i as i64);
                row.copy_(&l.get(j as i64));
            }
        }
    });
    out
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Round { model, out } => {
            std::fs::create_dir_all(&out)?;
            let mut tensors = Vec::new();
            for file in std::fs::read_dir(&model)? {
                let path = file?.path();
                if path.extension().is_some_and(|e| e == "safetensors") {
                    for (name, t) in Tensor::read_safetensors(&path)? {
                        let t = if t.is_floating_point() { t.to_kind(Kind::BFloat16) } else { t };
                        tensors.push((name, t));
                    }
                }
            }
            anyhow::ensure!(!tensors.is_empty(), "{}: no safetensors files", model.display());
            Tensor::write_safetensors(&tensors, out.join("model.safetensors"))?;
            std::fs::copy(model.join("config.json"), out.join("config.json"))?;
            copy_tokenizer_files(&model, &out)?;
            println!("{}", json!({ "rounded": model, "out": out, "tensors": tensors.len(), "dtype": "bf16" }));
        }
        Command::Lengths { tokenizer, data, max_length } => {
            let encoder = AspectEncoder::from_file(&tokenizer.join("tokenizer.json"), max_length).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (rows, _) = read_labelled_file(&data, &Columns::default()).with_context(|| data.display().to_string())?;
            for row in rows {
                if let Some(Ok(enc)) = row.span.map(|span| encoder.encode(&row.text, span)) {
                    println!("{}", enc.input_ids.len());
                }
            }
        }
        Command::Forward { model: dir, data, device: name, batch } => {
            let device = device(&name)?;
            let model = checkpoint::load(&dir, &LoadOptions::default(), device)?;
            let (examples, pad_id) = examples(&dir, &data, &model)?;
            let fp32 = logits(&model, &examples, batch, pad_id, device, false);
            let bf16 = logits(&model, &examples, batch, pad_id, device, true);
            let max_abs = (&fp32 - &bf16).abs().max().double_value(&[]);
            let scale = fp32.abs().max().double_value(&[]);
            let agree = fp32.argmax(-1, false).eq_tensor(&bf16.argmax(-1, false)).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            let gold = Tensor::from_slice(&examples.iter().map(|e| e.label).collect::<Vec<i64>>());
            let accuracy = |l: &Tensor| l.argmax(-1, false).eq_tensor(&gold).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
            println!(
                "{}",
                json!({ "check": "forward_bf16_vs_fp32", "device": format!("{device:?}"), "rows": examples.len(), "max_abs_logit_difference": max_abs,
                        "largest_logit": scale, "argmax_agreement": agree, "accuracy_fp32": accuracy(&fp32), "accuracy_bf16": accuracy(&bf16) })
            );
        }
        Command::Score { model: dir, data, device: name, precision, n, batch } => {
            let device = device(&name)?;
            let model = checkpoint::load(&dir, &LoadOptions::default(), device)?;
            let encoder = AspectEncoder::from_file(&dir.join("tokenizer.json"), 100).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (rows, _) = read_labelled_file(&data, &Columns::default()).with_context(|| data.display().to_string())?;
            anyhow::ensure!(!rows.is_empty(), "{}: no rows", data.display());
            let bf16 = precision == "bf16";
            // Warm-up (kernels, allocator), untimed.
            let (warm, pad_id) = examples(&dir, &data, &model)?;
            let _ = logits(&model, &warm[..warm.len().min(batch)], batch, pad_id, device, bf16);
            let started = Instant::now();
            let corpus: Vec<_> = (0..n).map(|i| &rows[i % rows.len()]).collect();
            let encoded: Vec<Example> = corpus
                .iter()
                .filter_map(|r| encoder.encode(&r.text, r.span?).ok())
                .map(|e| Example { input_ids: e.input_ids, aspect_mask: e.aspect_mask, token_type_ids: Vec::new(), label: 0 })
                .collect();
            let predicted = logits(&model, &encoded, batch, pad_id, device, bf16).argmax(-1, false);
            let _ = predicted.sum(Kind::Int64).int64_value(&[]);
            if let Device::Cuda(i) = device {
                tch::Cuda::synchronize(i as i64);
            }
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{}",
                json!({ "check": "score_libtorch", "device": format!("{device:?}"), "precision": precision, "instances": encoded.len(),
                        "seconds": seconds, "instances_per_second": encoded.len() as f64 / seconds, "batch": batch })
            );
        }
        Command::Compare { a, b, start } => {
            // By name without the family prefix: a base checkpoint may lack it.
            let bare = |n: String| n.strip_prefix("bert.").or_else(|| n.strip_prefix("roberta.")).map_or(n.clone(), str::to_owned);
            let read = |p: &Path| -> anyhow::Result<BTreeMap<String, Tensor>> {
                Ok(Tensor::read_safetensors(p.join("model.safetensors"))?.into_iter().map(|(n, t)| (bare(n), t.to_kind(Kind::Float))).collect())
            };
            let (a, b, start) = (read(&a)?, read(&b)?, read(&start)?);
            let (mut relative, mut absolute, mut worst, mut fresh) = (0.0f64, 0.0f64, String::new(), Vec::new());
            for (name, x) in a.iter().filter(|(n, _)| !n.ends_with("attention.self.key.bias")) {
                let Some(y) = b.get(name) else { anyhow::bail!("{name} is in one checkpoint only") };
                absolute = absolute.max((x - y).abs().max().double_value(&[]));
                // A head drawn by the runs themselves has no start to measure a change from.
                let Some(s) = start.get(name) else {
                    fresh.push(name.clone());
                    continue;
                };
                let change = (x - s).norm().double_value(&[]);
                let d = (x - y).norm().double_value(&[]) / change.max(1e-30);
                if d > relative {
                    (relative, worst) = (d, name.clone());
                }
            }
            println!(
                "{}",
                json!({ "check": "compare", "relative_l2_of_change": relative, "largest": worst, "max_element_difference": absolute, "not_in_start": fresh })
            );
        }
    }
    Ok(())
}
