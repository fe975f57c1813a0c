//! Training-step benchmark of xlm-roberta-shaped random-weight TD-BERT models on one
//! device: samples/s, peak memory and model FLOPs utilisation (MFU), next to the
//! device plan's estimate. Meant for a GPU machine (bf16 autocast, fp32 master
//! weights); `--device cpu --shape tiny` checks it anywhere.
//!
//! `absa-gpu-bench --shape base --batch 16 --seq-len 100 --steps 30`
//!
//! Every row is `seq-len` tokens long (the recipe's fixed padding), or with `--lengths
//! FILE` each batch takes rows of those token lengths (length-grouped, padded to its
//! longest row: dynamic padding). The FLOPs of a step are known: 6 per parameter of the
//! encoder's matrices per token, plus the attention's `12·layers·seq·hidden` per token
//! (forward and backward), the embeddings' lookups not counted.

use std::time::Instant;

use absa_trainer::model::{EncoderConfig, Pooling, TdBertModel};
use absa_trainer::plan::{self, ModelShape, Precision, GIB};
use absa_trainer::training::optimizer::AdamW;
use absa_trainer::{autocast, gpus};
use clap::Parser;
use serde_json::json;
use tch::{nn, Device, Kind, Tensor};

#[derive(Parser, Debug)]
#[command(about = "Training steps of a random-weight xlm-roberta-shaped model: samples/s, peak memory, MFU")]
struct Args {
    /// tiny, base, large, xl or xxl.
    #[arg(long, default_value = "base")]
    shape: String,
    /// cuda (the first GPU) or cpu.
    #[arg(long, default_value = "cuda")]
    device: String,
    /// bf16 (autocast, fp32 master weights) or fp32.
    #[arg(long, default_value = "bf16")]
    precision: String,
    #[arg(long, default_value_t = 16)]
    batch: i64,
    #[arg(long, default_value_t = 100)]
    seq_len: i64,
    /// Timed steps (after the warm-up ones).
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Token lengths, one per line: batches of rows of these lengths, grouped by
    /// length and padded to their longest row, instead of every row `seq-len` long.
    #[arg(long)]
    lengths: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 3)]
    warmup_steps: usize,
    /// The device's dense peak in TFLOP/s at this precision; by default looked up from
    /// the GPU's name (H100, H200, A100, L4, L40S), none on CPU (no MFU then).
    #[arg(long)]
    peak_tflops: Option<f64>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = EncoderConfig::xlm_roberta(&args.shape).ok_or_else(|| anyhow::anyhow!("--shape is tiny, base, large, xl or xxl, not {:?}", args.shape))?;
    let device = match args.device.as_str() {
        "cpu" => Device::Cpu,
        "cuda" if tch::Cuda::is_available() => Device::Cuda(0),
        "cuda" => anyhow::bail!("libtorch sees no CUDA device (is LIBTORCH a CUDA build, and a GPU visible?)"),
        other => anyhow::bail!("--device is cuda or cpu, not {other:?}"),
    };
    let (precision, reduced) = match args.precision.as_str() {
        "bf16" => (Precision::Bf16Mixed, Some(Kind::BFloat16)),
        "fp32" => (Precision::Fp32, None),
        other => anyhow::bail!("--precision is bf16 or fp32, not {other:?}"),
    };
    let num_labels = 3;
    let shape = ModelShape::from_config(&config, num_labels as u64)?;
    let estimate = plan::estimate(&shape, args.batch as u64, args.seq_len as u64, precision);

    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = TdBertModel::new(&vs.root(), config.clone(), num_labels, Pooling::Max)?;
    let mut optimizer = AdamW::new(&vs, 0.01);
    let b = args.batch;
    // Each step's rows' lengths: all `seq-len`, or batches of the file's lengths.
    let batches: Vec<Vec<i64>> = match &args.lengths {
        None => vec![vec![args.seq_len; b as usize]],
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let lengths: Vec<usize> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
            anyhow::ensure!(!lengths.is_empty(), "{}: no lengths", path.display());
            let order = absa_trainer::training::data::epoch_batches(&lengths, b as usize, absa_trainer::training::data::Order::LengthGrouped, 42);
            order.into_iter().filter(|batch| batch.len() == b as usize).map(|batch| batch.iter().map(|&i| lengths[i].max(8) as i64).collect()).collect()
        }
    };
    // Ids above the special tokens, padding after each row's length; the aspect is
    // tokens 5..8 of every row.
    let inputs: Vec<(Tensor, Tensor, Tensor)> = batches
        .iter()
        .map(|rows| {
            let s = *rows.iter().max().expect("a full batch");
            let input_ids = Tensor::randint_low(5, config.vocab_size, [b, s], (Kind::Int64, device));
            let positions = Tensor::arange(s, (Kind::Int64, device)).unsqueeze(0);
            let attention_mask = positions.lt_tensor(&Tensor::from_slice(rows).to_device(device).unsqueeze(1)).to_kind(Kind::Int64);
            let input_ids = &input_ids * &attention_mask + (1 - &attention_mask) * config.pad_token_id;
            let aspect_mask = Tensor::zeros([b, s], (Kind::Int64, device));
            let _ = aspect_mask.narrow(1, 5, 3.min(s - 5).max(1)).fill_(1);
            (input_ids, attention_mask, aspect_mask)
        })
        .collect();
    // Model FLOPs count the rows' own tokens, not their padding (the same as the HF peer).
    let tokens_per_step: Vec<f64> = batches.iter().map(|rows| rows.iter().sum::<i64>() as f64).collect();
    let labels = Tensor::randint(num_labels, [b], (Kind::Int64, device));
    let mut index = 0usize;

    let mut step = || -> anyhow::Result<f64> {
        let (input_ids, attention_mask, aspect_mask) = &inputs[index % inputs.len()];
        index += 1;
        let forward = || model.forward_t(input_ids, attention_mask, aspect_mask, true).logits;
        let logits = match reduced {
            Some(dtype) => autocast::with_autocast(device, dtype, forward).map_err(anyhow::Error::msg)?,
            None => forward(),
        };
        let loss = logits.to_kind(Kind::Float).cross_entropy_for_logits(&labels);
        loss.backward();
        optimizer.clip_grad_norm(1.0);
        optimizer.step(1e-5);
        optimizer.zero_grad();
        Ok(loss.double_value(&[]))
    };
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut peak_gpu_mib = 0u64;
    for _ in 0..args.warmup_steps {
        step()?;
        peak_gpu_mib = peak_gpu_mib.max(gpu_memory_mib(device));
    }
    sync();
    let started = Instant::now();
    let mut loss = f64::NAN;
    for _ in 0..args.steps {
        loss = step()?;
        peak_gpu_mib = peak_gpu_mib.max(gpu_memory_mib(device));
    }
    sync();
    let seconds = started.elapsed().as_secs_f64();

    let step_seconds = seconds / args.steps.max(1) as f64;
    let samples_per_second = (args.batch as f64) / step_seconds;
    // The timed steps' mean row length (`seq-len` with fixed padding).
    let timed: Vec<f64> = (args.warmup_steps..args.warmup_steps + args.steps).map(|i| tokens_per_step[i % tokens_per_step.len()]).collect();
    let mean_width = timed.iter().sum::<f64>() / timed.len().max(1) as f64 / args.batch as f64;
    let flops_per_step = training_flops_per_step(&shape, args.batch as f64, mean_width);
    let achieved_tflops = flops_per_step / step_seconds / 1e12;
    let gpu_name = match device {
        Device::Cuda(i) => gpus::name(i),
        _ => None,
    };
    let peak = args.peak_tflops.or_else(|| gpu_name.as_deref().and_then(peak_tflops_of));
    let mfu = peak.map(|p| achieved_tflops / p);
    let peak_memory_mib = if device == Device::Cpu { absa_memory::peak_rss_mib().round() as u64 } else { peak_gpu_mib };

    println!("model          xlm-roberta-{} shape, {:.3} B parameters, random weights, {} labels", args.shape, shape.parameters() as f64 / 1e9, num_labels);
    println!("device         {:?} {}", device, gpu_name.as_deref().unwrap_or(""));
    let padding = if args.lengths.is_some() {
        format!("laptops lengths, {mean_width:.1} tokens a row on average, padded per batch")
    } else {
        format!("length {}", args.seq_len)
    };
    println!("precision      {} (batch {}, {padding}, AdamW, clip 1.0)", args.precision, args.batch);
    println!("steps          {} timed after {} warm-up, {:.1} ms each, last loss {:.4}", args.steps, args.warmup_steps, step_seconds * 1e3, loss);
    println!("samples/s      {samples_per_second:.1}");
    println!(
        "peak memory    {} MiB {} (plan's estimate {:.1} GiB + {:.1} GiB per-GPU overhead)",
        peak_memory_mib,
        if device == Device::Cpu { "resident (process)" } else { "on the GPU (nvidia-smi: tensors, allocator cache, CUDA context)" },
        estimate.total() as f64 / GIB,
        if device == Device::Cpu { 0.0 } else { plan::PER_GPU_OVERHEAD_BYTES as f64 / GIB },
    );
    match (mfu, peak) {
        (Some(m), Some(p)) => println!("MFU            {:.1}% ({achieved_tflops:.2} of {p:.0} TFLOP/s)", 100.0 * m),
        _ => println!("MFU            n/a ({achieved_tflops:.3} TFLOP/s achieved; give --peak-tflops)"),
    }
    let summary = json!({
        "shape": args.shape, "device": format!("{device:?}"), "gpu": gpu_name, "precision": args.precision,
        "batch": args.batch, "seq_len": args.seq_len, "padding": if args.lengths.is_some() { "dynamic" } else { "fixed" }, "mean_width": mean_width,
        "steps": args.steps, "parameters": shape.parameters(),
        "step_ms": step_seconds * 1e3, "samples_per_second": samples_per_second, "peak_memory_mib": peak_memory_mib,
        "estimate_gib": estimate.total() as f64 / GIB, "achieved_tflops": achieved_tflops, "peak_tflops": peak, "mfu": mfu, "last_loss": loss,
    });
    println!("{summary}");
    if !loss.is_finite() {
        anyhow::bail!("the loss is {loss}");
    }
    Ok(())
}

/// Model FLOPs of one training step (forward + backward = 3x forward).
fn training_flops_per_step(shape: &ModelShape, batch: f64, seq_len: f64) -> f64 {
    let (h, i, l) = (shape.hidden_size as f64, shape.intermediate_size as f64, shape.num_hidden_layers as f64);
    let matrix_parameters = l * (4.0 * h * h + 2.0 * h * i) + h * h; // layers + the head's dense
    let tokens = batch * seq_len;
    3.0 * (2.0 * matrix_parameters * tokens + 4.0 * l * seq_len * h * tokens)
}

fn gpu_memory_mib(device: Device) -> u64 {
    if device == Device::Cpu {
        0
    } else {
        gpus::process_memory_mib()
    }
}

/// Dense bf16 peaks (TFLOP/s) from the vendors' data sheets.
fn peak_tflops_of(name: &str) -> Option<f64> {
    let name = name.to_ascii_uppercase();
    [("H200", 989.4), ("H100 PCIE", 756.0), ("H100", 989.4), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]
        .iter()
        .find(|(key, _)| name.contains(key))
        .map(|&(_, tflops)| tflops)
}
