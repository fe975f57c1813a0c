//! Who may do what: `absa login` and `absa me`, the team's API keys, teams (platform
//! admins), and the Postgres logins BI tools read the team's views with.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use serde_json::json;

use crate::client::{pages, seg, Client};
use crate::output::{fields, get, list, print, show, table, time};
use crate::{config, exit, name_of};

#[derive(Subcommand)]
pub enum KeyCmd {
    /// List the team's API keys, newest first (revoked ones too)
    List,
    /// Create an API key (shown once)
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
    },
    /// Revoke an API key
    #[command(visible_alias = "revoke")]
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum TeamCmd {
    /// Create a team and its first admin key (shown once); needs an admin key of the
    /// platform team (the API's api.platform_team)
    Create { name: String },
}

#[derive(Subcommand)]
pub enum BiLoginCmd {
    /// List the team's BI logins and when they expire
    List,
    /// Create a Postgres login reading only the team's BI views; its password is read
    /// from standard input (so it shows in no process list)
    Create {
        /// The Postgres role name, e.g. bi_marketing
        role_name: String,
        /// Days until the login expires (1 to 365) [server default: 90]
        #[arg(long)]
        valid_days: Option<u32>,
    },
    /// Drop a BI login
    Delete { role_name: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Role {
    Analyst,
    Mlops,
    Admin,
}

pub fn me(c: &Client) -> Result<ExitCode> {
    show(&c.get("/v1/me", &[])?, |v| {
        fields(&[
            ("team", get(v, "team")),
            ("team id", get(v, "team_id")),
            ("role", get(v, "role")),
            ("key id", get(v, "key_id")),
            ("api", c.base().to_owned()),
        ])
    });
    Ok(ExitCode::SUCCESS)
}

/// `absa login`: the key from standard input, checked against the API (`/v1/me`), then
/// saved with the URL (`--api-url`, `ABSA_API_URL` or the default) as the profile.
pub fn login(api_url: Option<String>, config_flag: Option<PathBuf>, profile: Option<String>) -> Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let url = config::normalize_url(&api_url.or_else(|| env(config::ENV_API_URL)).unwrap_or_else(|| config::DEFAULT_API_URL.into()))?;
    let path = config::config_path(config_flag, &env).0.context("no config file to write: set HOME, or name one with --config")?;
    let profile = profile.or_else(|| env(config::ENV_PROFILE));
    let key = secret_from_stdin(&format!("API key for {url}"))?;
    if key.is_empty() {
        return Err(exit::Refused::key("no API key on standard input").into());
    }
    let me = Client::new(&url, Some(key.clone())).get("/v1/me", &[])?;
    config::save_profile(&path, profile.as_deref(), &url, &key)?;
    let name = profile.as_deref().unwrap_or("default");
    print(&format!("logged in to {url} as {} of team {}; profile {name} saved in {}\n", get(&me, "role"), get(&me, "team"), path.display()));
    Ok(ExitCode::SUCCESS)
}

/// One line of standard input, trimmed; a prompt on standard error when it is a terminal.
fn secret_from_stdin(prompt: &str) -> Result<String> {
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprint!("{prompt}: ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).with_context(|| format!("reading the {} from standard input", prompt.to_lowercase()))?;
    Ok(line.trim().to_owned())
}

pub fn run_keys(c: &Client, cmd: KeyCmd) -> Result<ExitCode> {
    match cmd {
        KeyCmd::List => {
            let keys = pages(c, "/v1/keys", &[], "keys", None)?;
            show(&json!({ "keys": keys }), |v| {
                let rows: Vec<Vec<String>> =
                    list(v, "keys").iter().map(|k| vec![get(k, "id"), get(k, "name"), get(k, "role"), time(k, "created_at"), time(k, "revoked_at")]).collect();
                table(&["ID", "NAME", "ROLE", "CREATED", "REVOKED"], &rows)
            });
        }
        KeyCmd::Create { name, role } => show(&c.post("/v1/keys", &json!({ "name": name, "role": name_of(role) }), &[])?.body, |k| {
            let mut s = fields(&[("id", get(k, "id")), ("name", get(k, "name")), ("role", get(k, "role")), ("key", get(k, "key"))]);
            s.push_str("The key is shown only this once: store it now.\n");
            s
        }),
        KeyCmd::Delete { id } => {
            let v = c.delete(&format!("/v1/keys/{}", seg(&id)))?;
            show(&v, |_| format!("key {id} revoked\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_teams(c: &Client, cmd: TeamCmd) -> Result<ExitCode> {
    match cmd {
        TeamCmd::Create { name } => show(&c.post("/v1/teams", &json!({ "name": name }), &[])?.body, |t| {
            let mut s = fields(&[("team", get(t, "name")), ("team id", get(t, "team_id")), ("admin key", get(t, "admin_key"))]);
            s.push_str("The admin key is shown only this once: hand it to the team's admin.\n");
            s
        }),
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_bi_logins(c: &Client, cmd: BiLoginCmd) -> Result<ExitCode> {
    match cmd {
        BiLoginCmd::List => {
            let logins = pages(c, "/v1/bi-logins", &[], "bi_logins", None)?;
            show(&json!({ "bi_logins": logins }), |v| {
                let rows: Vec<Vec<String>> = list(v, "bi_logins").iter().map(|l| vec![get(l, "role_name"), time(l, "valid_until")]).collect();
                table(&["ROLE_NAME", "VALID_UNTIL"], &rows)
            });
        }
        BiLoginCmd::Create { role_name, valid_days } => {
            let password = secret_from_stdin(&format!("Password for {role_name}"))?;
            let mut body = json!({ "role_name": role_name, "password": password });
            if let Some(d) = valid_days {
                body["valid_days"] = json!(d);
            }
            show(&c.post("/v1/bi-logins", &body, &[])?.body, |l| {
                fields(&[("role name", get(l, "role_name")), ("valid until", time(l, "valid_until")), ("views", get(l, "views"))])
            });
        }
        BiLoginCmd::Delete { role_name } => {
            let v = c.delete(&format!("/v1/bi-logins/{}", seg(&role_name)))?;
            show(&v, |_| format!("BI login {role_name} dropped\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}
