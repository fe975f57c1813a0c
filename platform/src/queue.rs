//! RabbitMQ: connections, publishing with confirms, consuming with manual acks.
//!
//! Messages only notify (a job or shard id); Postgres holds the truth, so a lost or
//! repeated message costs a delay, never a result.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::config::{redact_url, AmqpSettings};
use crate::{PlatformError, Result};

/// Connects, or says which address did not answer.
pub async fn connect(settings: &AmqpSettings) -> Result<Connection> {
    let url = settings.url.expose();
    Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|source| PlatformError::AmqpUnreachable { url: redact_url(url), source })
}

/// A channel in confirm mode: every publish on it waits for the broker's ack.
pub async fn confirmed_channel(connection: &Connection) -> Result<Channel> {
    let channel = connection.create_channel().await?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(channel)
}

/// Publishes a persistent message to `queue` through the default exchange and waits
/// until the broker has taken responsibility for it.
pub async fn publish_confirmed(channel: &Channel, queue: &str, payload: &[u8]) -> Result<()> {
    let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
    let confirmation = channel
        .basic_publish("".into(), queue.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, payload, properties)
        .await?
        .await?;
    if confirmation.is_ack() && confirmation.take_message().is_none() {
        Ok(())
    } else {
        Err(PlatformError::NotConfirmed { queue: queue.to_owned() })
    }
}
