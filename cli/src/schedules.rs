//! `absa schedules`: retraining on a cron, or when rows are added to a dataset.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Map, Value};

use crate::client::{pages, seg, Client};
use crate::datasets::{id_of, Named};
use crate::jobs::{parse_hyperparameters, Registration};
use crate::output::{self, fields, get, list, show, table, time};

#[derive(Subcommand)]
pub enum ScheduleCmd {
    /// List retrain schedules, newest first
    List,
    /// Show a schedule
    Get { id: String },
    /// Add a retrain schedule (mlops)
    Create {
        #[arg(long)]
        name: String,
        /// Dataset id or name
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        base_model: String,
        /// Cron expression: 5 fields (minute hour day month weekday), or 6 with seconds first
        #[arg(long)]
        cron: Option<String>,
        /// Also retrain when rows are added to the dataset
        #[arg(long)]
        on_new_rows: bool,
        /// Hyperparameters, e.g. --hp epochs=3 (value parsed as JSON, else a string)
        #[arg(long = "hp", value_name = "KEY=VALUE")]
        hyperparameters: Vec<String>,
        // Without --promote, the server promotes to production by macro_f1.
        #[command(flatten)]
        registration: Registration,
    },
    /// Delete a schedule (mlops)
    Delete { id: String },
}

pub fn run(c: &Client, cmd: ScheduleCmd) -> Result<ExitCode> {
    match cmd {
        ScheduleCmd::List => {
            let schedules = pages(c, "/v1/schedules", &[], "schedules", None)?;
            show(&json!({ "schedules": schedules }), schedules_table);
        }
        ScheduleCmd::Get { id } => show(&c.get(&format!("/v1/schedules/{}", seg(&id)), &[])?, schedule_details),
        ScheduleCmd::Create { name, dataset, base_model, cron, on_new_rows, hyperparameters, registration } => {
            let dataset = id_of(c, Named::Dataset, &dataset)?;
            let mut body = json!({ "name": name, "dataset_id": dataset, "base_model": base_model, "on_new_rows": on_new_rows });
            let hp = parse_hyperparameters(&hyperparameters, Map::new())?;
            if !hp.is_empty() {
                body["hyperparameters"] = Value::Object(hp);
            }
            if let Some(c) = cron {
                body["cron"] = json!(c);
            }
            registration.add_to(&mut body);
            show(&c.post("/v1/schedules", &body, &[])?.body, schedule_details);
        }
        ScheduleCmd::Delete { id } => {
            let v = c.delete(&format!("/v1/schedules/{}", seg(&id)))?;
            show(&v, |_| format!("schedule {id} deleted\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn schedules_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "schedules")
        .iter()
        .map(|s| vec![get(s, "id"), get(s, "name"), get(s, "cron"), get(s, "on_new_rows"), get(s, "enabled"), time(s, "next_run_at"), time(s, "last_fired_at")])
        .collect();
    table(&["ID", "NAME", "CRON", "ON_NEW_ROWS", "ENABLED", "NEXT_RUN", "LAST_FIRED"], &rows)
}

fn schedule_details(s: &Value) -> String {
    let mut f = vec![
        ("id", get(s, "id")),
        ("name", get(s, "name")),
        ("cron", get(s, "cron")),
        ("on new rows", get(s, "on_new_rows")),
        ("enabled", get(s, "enabled")),
        ("next run", time(s, "next_run_at")),
        ("last fired", time(s, "last_fired_at")),
    ];
    // The training job a firing submits is under `job_parameters`.
    let job = s.get("job_parameters");
    for key in ["dataset_id", "base_model", "model", "hyperparameters", "promote"] {
        if let Some(v) = s.get(key).or_else(|| job.and_then(|j| j.get(key))).filter(|v| !v.is_null()) {
            f.push((key, output::cell(v)));
        }
    }
    fields(&f)
}
