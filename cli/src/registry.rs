//! `absa registered-models` (named models with a task and a label set, owning versions
//! and aliases) and `absa aliases` (names such as production pointing at a version).

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Map, Value};

use crate::client::{pages, seg, ApiError, Client};
use crate::output::{self, fields, get, list, show, table, time};
use crate::{exit, name_of};

#[derive(Subcommand)]
pub enum RegisteredModelCmd {
    /// List the team's registered models, newest first: task, labels, versions, aliases
    List,
    /// Show a registered model
    Get { name: String },
    /// Create a registered model (mlops); its task and labels never change
    Create {
        name: String,
        #[arg(long, value_enum)]
        task: Task,
        /// The classes in output order, e.g. negative,neutral,positive
        #[arg(long, value_delimiter = ',', required = true)]
        labels: Vec<String>,
        #[command(flatten)]
        about: About,
    },
    /// Change a registered model's description or tags (mlops)
    Update {
        name: String,
        #[command(flatten)]
        about: About,
    },
}

#[derive(Args)]
pub struct About {
    /// What the model is for
    #[arg(long)]
    description: Option<String>,
    /// A tag, KEY=VALUE (repeatable; given tags replace all the model's tags)
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Task {
    Sentiment,
    Stance,
}

#[derive(Subcommand)]
pub enum AliasCmd {
    /// List aliases with their model and version
    List,
    /// Point an alias of the version's registered model at it (unconditionally; see
    /// `absa models promote`) (mlops)
    Set { name: String, version: String },
}

pub fn run_registered_models(c: &Client, cmd: RegisteredModelCmd) -> Result<ExitCode> {
    match cmd {
        RegisteredModelCmd::List => {
            let models = pages(c, "/v1/registered-models", &[], "models", None)?;
            show(&json!({ "models": models }), registered_models_table);
        }
        RegisteredModelCmd::Get { name } => show(&c.get(&path(&name), &[])?, registered_model_details),
        RegisteredModelCmd::Create { name, task, labels, about } => {
            // PUT also updates: looked up first, so an existing model is left as it is.
            match c.get(&path(&name), &[]) {
                Ok(_) => {
                    let taken = format!("registered model {name:?} already exists; `absa registered-models update` changes its description and tags");
                    return Err(exit::Refused::conflict(taken).into());
                }
                Err(e) if e.downcast_ref::<ApiError>().is_some_and(|a| a.status == 404) => {}
                Err(e) => return Err(e),
            }
            let mut body = about.body()?;
            body.insert("task".into(), json!(name_of(task)));
            body.insert("label_names".into(), json!(labels));
            show(&c.put(&path(&name), &Value::Object(body))?, registered_model_details);
        }
        RegisteredModelCmd::Update { name, about } => {
            let body = about.body()?;
            if body.is_empty() {
                bail!("nothing to update: give --description or --tag");
            }
            // Without a task and labels the API creates nothing: an unknown name is a 422.
            show(&c.put(&path(&name), &Value::Object(body))?, registered_model_details);
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl About {
    fn body(&self) -> Result<Map<String, Value>> {
        let mut body = Map::new();
        if let Some(d) = &self.description {
            body.insert("description".into(), json!(d));
        }
        if !self.tags.is_empty() {
            let mut tags = Map::new();
            for tag in &self.tags {
                let Some((k, v)) = tag.split_once('=') else { bail!("--tag {tag:?}: expected KEY=VALUE") };
                tags.insert(k.trim().to_owned(), json!(v));
            }
            body.insert("tags".into(), Value::Object(tags));
        }
        Ok(body)
    }
}

fn path(name: &str) -> String {
    format!("/v1/registered-models/{}", seg(name))
}

pub fn run_aliases(c: &Client, cmd: AliasCmd) -> Result<ExitCode> {
    match cmd {
        AliasCmd::List => {
            let aliases = pages(c, "/v1/aliases", &[], "aliases", None)?;
            show(&json!({ "aliases": aliases }), |v| {
                let rows: Vec<Vec<String>> =
                    list(v, "aliases").iter().map(|a| vec![get(a, "model"), get(a, "name"), get(a, "model_version_id"), time(a, "updated_at")]).collect();
                table(&["MODEL", "NAME", "MODEL_VERSION", "UPDATED"], &rows)
            });
        }
        AliasCmd::Set { name, version } => {
            let v = c.put(&format!("/v1/aliases/{}", seg(&name)), &json!({ "model_version_id": version }))?;
            show(&v, |a| format!("{} {} -> {}\n", get(a, "model"), get(a, "name"), get(a, "model_version_id")));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn registered_models_table(v: &Value) -> String {
    let rows: Vec<Vec<String>> = list(v, "models")
        .iter()
        .map(|m| {
            let aliases = m.get("aliases").and_then(Value::as_object).map(|a| a.keys().cloned().collect::<Vec<_>>().join(",")).unwrap_or_default();
            vec![get(m, "name"), get(m, "task"), get(m, "label_names"), get(m, "versions"), aliases]
        })
        .collect();
    table(&["NAME", "TASK", "LABELS", "VERSIONS", "ALIASES"], &rows)
}

fn registered_model_details(m: &Value) -> String {
    let aliases = m
        .get("aliases")
        .and_then(Value::as_object)
        .map(|a| a.iter().map(|(k, v)| format!("{k} -> {}", output::cell(v))).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    fields(&[
        ("name", get(m, "name")),
        ("task", get(m, "task")),
        ("labels", get(m, "label_names")),
        ("description", get(m, "description")),
        ("tags", get(m, "tags")),
        ("versions", get(m, "versions")),
        ("latest version", get(m, "latest_version_id")),
        ("aliases", aliases),
        ("created", time(m, "created_at")),
    ])
}
