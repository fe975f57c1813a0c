use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use absa_domain::records::Columns;
use absa_platform::{cli, config, telemetry};
use absa_trainer::data_files::DataFiles;
use absa_trainer::distributed::{launch, Backend, RankEnv};
use absa_trainer::progress::{EventPipe, TerminalProgress};
use absa_trainer::torch_check;
use absa_trainer::training::{self, DeviceChoice, Hyperparameters, LabelledData, Observer, Recipe, TrainConfig, TrainError};
use absa_trainer_worker::settings::Settings;
use absa_trainer_worker::worker::LaunchedRun;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};

/// Fine-tunes TD-BERT models (XLM-R, BERT family) on libtorch.
#[derive(Parser)]
#[command(name = "absa-trainer", version)]
struct Cli {
    /// TOML configuration file; `ABSA_*` environment variables override it.
    #[arg(long, env = "ABSA_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a libtorch training step and check that Postgres and RabbitMQ answer, then exit.
    Check,
    /// Fine-tune a model on labelled data without any server (local mode); prints a
    /// one-line JSON summary.
    Train(Box<TrainArgs>),
    /// Run training jobs from the queue until SIGTERM (the service's trainer worker).
    Work,
    /// Start this node's ranks of a run, as torchrun does: `absa-trainer launch
    /// --nproc-per-node 2 -- train --base ...`. Each rank is one process (one device);
    /// when one fails the others are stopped and its exit code is this command's.
    Launch(LaunchArgs),
    /// One rank of a job the worker launched: the run's configuration and the job's
    /// dataset snapshot in a JSON file; the rows are read from Postgres, progress goes
    /// to stdout as JSON lines (rank 0).
    #[command(hide = true)]
    TrainFrom { run: PathBuf },
}

#[derive(Args)]
struct LaunchArgs {
    /// Ranks on this node (one per device).
    #[arg(long, default_value_t = 1)]
    nproc_per_node: usize,
    /// Nodes in the run, each running one launcher.
    #[arg(long, default_value_t = 1)]
    nnodes: usize,
    /// This node's place (0 hosts the rendezvous store, as global rank 0).
    #[arg(long, default_value_t = 0)]
    node_rank: usize,
    /// Address of node 0, where the ranks meet.
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    master_addr: String,
    #[arg(long, env = "MASTER_PORT", default_value_t = 29500)]
    master_port: u16,
    /// Seconds the other ranks get to stop after one failed, before SIGKILL.
    #[arg(long, default_value_t = 30)]
    grace_secs: u64,
    /// The trainer command each rank runs (`train ...`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    command: Vec<OsString>,
}

/// Defaults are the reference recipe's.
#[derive(Args)]
struct TrainArgs {
    /// Base HF checkpoint directory (config.json, weights, tokenizer.json).
    #[arg(long)]
    base: PathBuf,
    /// Labelled training data (JSONL: text, aspect, start, end, label).
    #[arg(long)]
    train: PathBuf,
    /// Validation data; without it, a stratified share of train is held out.
    #[arg(long)]
    validation: Option<PathBuf>,
    /// Test data, evaluated once on the selected model.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Output directory (checkpoints, metrics, summary).
    #[arg(long)]
    out: PathBuf,
    /// The recipe's settings (hyperparameters): each unset one keeps the reference
    /// recipe's value; all are checked against the ranges jobs are.
    #[command(flatten)]
    hyperparameters: Hyperparameters,
    /// Label names in output order (comma-separated); default: from the data.
    #[arg(long, value_delimiter = ',')]
    labels: Option<Vec<String>>,
    #[arg(long, default_value = "text")]
    text_column: String,
    #[arg(long, default_value = "aspect")]
    aspect_column: String,
    #[arg(long, default_value = "start")]
    start_column: String,
    #[arg(long, default_value = "end")]
    end_column: String,
    #[arg(long, default_value = "target")]
    target_column: String,
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Continue from OUT/checkpoint-last if it exists.
    #[arg(long)]
    resume: bool,
    /// Stop (resumably) after this many epochs in total.
    #[arg(long)]
    stop_after_epoch: Option<usize>,
    /// libtorch threads (0: one per available CPU).
    #[arg(long, default_value_t = 0)]
    threads: i32,
    /// On the CPU, threads that each train a part of every batch on one core (0: as
    /// many as --threads; 1: libtorch's own threads over whole batches).
    #[arg(long, default_value_t = 0)]
    batch_threads: usize,
    /// Where to train (auto: the GPU when libtorch sees one).
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
    /// Under `launch`: seconds a rank waits for the others before the run fails.
    #[arg(long, default_value_t = 600)]
    collective_timeout_secs: u64,
    /// Under `launch`: the ranks' backend (default NCCL between GPUs, else Gloo; Gloo
    /// also joins ranks sharing one GPU).
    #[arg(long, value_enum)]
    backend: Option<Backend>,
}

impl TrainArgs {
    /// The run's configuration, and the files local mode reads its rows from.
    fn into_run(self) -> (TrainConfig, DataFiles) {
        let a = self;
        let columns =
            Columns { text: a.text_column, aspect: a.aspect_column, start: a.start_column, end: a.end_column, target: a.target_column, label: a.label_column };
        let files = DataFiles { train: a.train, validation: a.validation, test: a.test, columns };
        let config = TrainConfig {
            base: a.base,
            out: a.out,
            labels: a.labels,
            recipe: Recipe::default().with(&a.hyperparameters),
            resume: a.resume,
            stop_after_epoch: a.stop_after_epoch,
            threads: a.threads,
            batch_threads: a.batch_threads,
            device: a.device,
            collective_timeout_secs: a.collective_timeout_secs,
            backend: a.backend,
        };
        (config, files)
    }
}

fn main() -> ExitCode {
    // Before anything else runs: this may execute the program again (see the module).
    absa_trainer::allocator::use_tcmalloc();
    let result = run(Cli::parse());
    if let Err(e) = &result {
        if let Some(e) = e.downcast_ref::<TrainError>() {
            // A stop asked for (SIGTERM: the checkpoint holds the last finished epoch), or
            // a run that no retry can mend: codes a launcher and a worker tell apart.
            if let Some(code) = launch::exit_code_of(e) {
                eprintln!("error: {e:#}");
                return ExitCode::from(code as u8);
            }
        }
    }
    cli::report(result)
}

/// Runs the engine as this process is: one process, or one rank of a launched group
/// (stopping on SIGTERM at the next step, with the other ranks), on the rows `read`
/// gives.
fn train(config: &TrainConfig, read: impl FnOnce() -> anyhow::Result<LabelledData>, observer: &mut dyn Observer) -> anyhow::Result<()> {
    let rank = RankEnv::from_env().map_err(anyhow::Error::msg)?;
    if rank.is_some() {
        launch::install_stop_handler();
    }
    let summary = match read().and_then(|rows| Ok(training::train(config, &rows, observer)?)) {
        Ok(summary) => summary,
        Err(e) => {
            if let Some(rank) = &rank {
                // For whoever launched the group: why this rank stopped.
                launch::record_rank_error(&config.out, rank.rank, format!("{e:#}"));
            }
            return Err(e);
        }
    };
    if rank.is_none_or(|r| r.rank == 0) {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings: Settings = config::load(cli.config.as_deref())?;
    let _telemetry = telemetry::init("absa-trainer", &settings.log);
    if settings.torch.threads > 0 {
        tch::set_num_threads(settings.torch.threads);
    }
    match cli.command {
        Command::Check => {
            let device = tch::Device::cuda_if_available();
            let report = torch_check::train_steps(device, 20).context("libtorch self-test failed")?;
            println!(
                "libtorch: {:?}, {} threads, loss {:.4} -> {:.4} after 20 AdamW steps",
                report.device,
                tch::get_num_threads(),
                report.loss_before,
                report.loss_after
            );
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(cli::check_services(&settings.database, &settings.amqp)).context("service check failed")?;
            Ok(())
        }
        Command::Work => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                absa_platform::metrics::start(absa_platform::metrics::Role::Trainer, &settings.metrics).await?;
                let pool = absa_platform::db::connect(&settings.database).await?;
                let shutdown = absa_store::worker::shutdown_flag();
                let topology = absa_platform::queue::Topology::new(&settings.amqp.prefix, 0);
                let offer = absa_trainer_worker::offer::offer(settings.torch.gpus, settings.torch.gpu_memory_gib).map_err(anyhow::Error::msg)?;
                let worker = absa_trainer_worker::worker::TrainWorker::new(
                    pool,
                    settings.worker.clone(),
                    settings.models_dir.clone(),
                    settings.torch.threads,
                    offer,
                    shutdown,
                )
                .with_collective_timeout(settings.torch.collective_timeout_secs)
                .with_config_file(cli.config.clone());
                absa_trainer_worker::worker::run(&settings.amqp, &topology, worker).await
            })
        }
        Command::Train(args) => {
            // The ranges every job is held to hold here too.
            absa_jobs::check_hyperparameters(&args.hyperparameters.to_map()).map_err(anyhow::Error::msg)?;
            let (config, files) = args.into_run();
            train(&config, || Ok(files.read()?), &mut TerminalProgress::new(&config.out, &files))
        }
        Command::TrainFrom { run } => {
            let text = std::fs::read_to_string(&run).with_context(|| run.display().to_string())?;
            let run: LaunchedRun = serde_json::from_str(&text).with_context(|| run.display().to_string())?;
            let read = || {
                tokio::runtime::Runtime::new()?.block_on(async {
                    let pool = absa_platform::db::connect(&settings.database).await?;
                    absa_trainer_worker::dataset::read_snapshot(&pool, &run.dataset).await
                })
            };
            train(&run.config, read, &mut EventPipe::stdio())
        }
        Command::Launch(args) => {
            let launch = launch::Launch {
                nproc_per_node: args.nproc_per_node.max(1),
                nnodes: args.nnodes.max(1),
                node_rank: args.node_rank,
                master_addr: args.master_addr,
                master_port: args.master_port,
                grace: Duration::from_secs(args.grace_secs),
            };
            if launch.node_rank >= launch.nnodes {
                anyhow::bail!("--node-rank {} is not below --nnodes {}", launch.node_rank, launch.nnodes);
            }
            let program = std::env::current_exe().context("finding the trainer binary")?;
            let code = launch::run(&launch, &program, &args.command)?;
            std::process::exit(code)
        }
    }
}
