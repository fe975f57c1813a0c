//! Start-up checks: each binary proves its services answer before it claims any work,
//! and `check` subcommands print what they found.

use crate::config::{AmqpSettings, DatabaseSettings};
use crate::{db, queue, Result};

/// Connects to Postgres and returns its version string.
pub async fn postgres(settings: &DatabaseSettings) -> Result<String> {
    let pool = db::connect(settings).await?;
    let version: String = sqlx::query_scalar("SHOW server_version").fetch_one(&pool).await?;
    pool.close().await;
    Ok(version)
}

/// Connects to RabbitMQ and opens a channel; returns the redacted address it reached.
pub async fn rabbitmq(settings: &AmqpSettings) -> Result<String> {
    let connection = queue::connect(settings).await?;
    let channel = connection.create_channel().await?;
    channel.close(200, "check done".into()).await?;
    connection.close(200, "check done".into()).await?;
    Ok(format!("reached {}", crate::config::redact_url(settings.url.expose())))
}
