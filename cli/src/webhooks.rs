//! `absa webhooks`: URLs the service POSTs every job state change to, signed with
//! HMAC-SHA256, and the log of those deliveries.

use std::process::ExitCode;

use anyhow::Result;
use clap::Subcommand;
use serde_json::{json, Value};

use crate::client::{seg, Client};
use crate::output::{fields, get, list, show, table, time};

#[derive(Subcommand)]
pub enum WebhookCmd {
    /// List the team's webhooks
    List,
    /// Register a URL (mlops); its signing secret is shown this once
    Create { url: String },
    /// Remove a webhook (mlops)
    Delete { id: String },
    /// A webhook's deliveries, newest first: state, attempts, last status
    Deliveries {
        id: String,
        /// At most this many [default: all, page after page]
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        limit: Option<u32>,
    },
}

pub fn run(c: &Client, cmd: WebhookCmd) -> Result<ExitCode> {
    match cmd {
        WebhookCmd::List => show(&c.get("/v1/webhooks", &[])?, |v| {
            let rows: Vec<Vec<String>> = list(v, "webhooks").iter().map(|w| vec![get(w, "id"), get(w, "url"), time(w, "created_at")]).collect();
            table(&["ID", "URL", "CREATED"], &rows)
        }),
        WebhookCmd::Create { url } => show(&c.post("/v1/webhooks", &json!({ "url": url }), &[])?.body, |w| {
            let mut s = fields(&[("id", get(w, "id")), ("url", get(w, "url")), ("secret", get(w, "secret"))]);
            s.push_str("The secret (the HMAC-SHA256 key of X-Absa-Signature) is shown only this once: store it now.\n");
            s
        }),
        WebhookCmd::Delete { id } => {
            let v = c.delete(&format!("/v1/webhooks/{}", seg(&id)))?;
            show(&v, |_| format!("webhook {id} deleted\n"));
        }
        WebhookCmd::Deliveries { id, limit } => {
            let deliveries = deliveries(c, &id, limit.map(|n| n as usize))?;
            show(&json!({ "deliveries": deliveries }), |v| {
                let rows: Vec<Vec<String>> = list(v, "deliveries")
                    .iter()
                    .map(|d| {
                        vec![
                            get(d, "id"),
                            get(d, "job_id"),
                            d.pointer("/payload/state").map(crate::output::cell).unwrap_or_else(|| "-".into()),
                            get(d, "state"),
                            get(d, "attempts"),
                            get(d, "last_status"),
                            time(d, "delivered_at"),
                        ]
                    })
                    .collect();
                table(&["ID", "JOB", "JOB_STATE", "STATE", "ATTEMPTS", "LAST_STATUS", "DELIVERED"], &rows)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The deliveries page after page (this listing pages by `before`, the smallest id seen).
fn deliveries(c: &Client, id: &str, at_most: Option<usize>) -> Result<Vec<Value>> {
    let path = format!("/v1/webhooks/{}/deliveries", seg(id));
    let mut items = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let want = at_most.map_or(1000, |n| (n - items.len()).min(1000));
        let mut query = vec![("limit", want.to_string())];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let page = c.get(&path, &query)?;
        items.extend(page.get("deliveries").and_then(Value::as_array).cloned().unwrap_or_default());
        before = page.get("next_before").and_then(Value::as_i64);
        if before.is_none() || at_most.is_some_and(|n| items.len() >= n) {
            return Ok(items);
        }
    }
}
