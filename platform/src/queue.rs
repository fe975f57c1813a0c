//! RabbitMQ: connections, publishing with confirms, consuming with manual acks.
//!
//! Messages only notify (a job or shard id); Postgres holds the truth, so a lost or
//! repeated message costs a delay, never a result.

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

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

/// The queues of one deployment, named from its prefix.
#[derive(Clone, Debug)]
pub struct Topology {
    /// Training work: one message per training job.
    pub train: String,
    /// Scoring work: one message per shard.
    pub score: String,
    /// Where messages go after `delivery_limit` failed deliveries.
    pub dead_letter_exchange: String,
    pub train_dead: String,
    pub score_dead: String,
    /// Deliveries before RabbitMQ dead-letters a message (a worker that keeps
    /// crashing on it).
    pub delivery_limit: i64,
}

impl Topology {
    pub fn new(prefix: &str, delivery_limit: i64) -> Self {
        Self {
            train: format!("{prefix}.train"),
            score: format!("{prefix}.score"),
            dead_letter_exchange: format!("{prefix}.dead"),
            train_dead: format!("{prefix}.train.dead"),
            score_dead: format!("{prefix}.score.dead"),
            delivery_limit,
        }
    }

    /// Declares (idempotently) the durable quorum work queues with their delivery
    /// limit and dead-letter routing, and the dead-letter queues.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        channel
            .exchange_declare(self.dead_letter_exchange.as_str().into(), ExchangeKind::Direct, ExchangeDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
            .await?;
        for (work, dead) in [(&self.train, &self.train_dead), (&self.score, &self.score_dead)] {
            let mut dead_args = FieldTable::default();
            dead_args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
            channel.queue_declare(dead.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, dead_args).await?;
            channel
                .queue_bind(dead.as_str().into(), self.dead_letter_exchange.as_str().into(), work.as_str().into(), QueueBindOptions::default(), FieldTable::default())
                .await?;
            let mut args = FieldTable::default();
            args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
            args.insert(ShortString::from("x-delivery-limit"), AMQPValue::LongLongInt(self.delivery_limit));
            args.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_str())));
            args.insert(ShortString::from("x-dead-letter-routing-key"), AMQPValue::LongString(LongString::from(work.as_str())));
            channel.queue_declare(work.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, args).await?;
        }
        Ok(())
    }
}
