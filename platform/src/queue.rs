//! RabbitMQ: connections, publishing with confirms, consuming with manual acks.
//!
//! Messages only notify (a job or shard id); Postgres holds the truth, so a lost or
//! repeated message costs a delay, never a result.
//!
//! Long-running processes hold their connection through [`Reconnecting`], which comes
//! back after a broker restart.

use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use crate::config::{redact_url, AmqpSettings};
use crate::{PlatformError, Result};

/// Connects, or says which address did not answer.
pub async fn connect(settings: &AmqpSettings) -> Result<Connection> {
    let url = settings.url.expose();
    Connection::connect(url, ConnectionProperties::default()).await.map_err(|source| PlatformError::AmqpUnreachable { url: redact_url(url), source })
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
    let confirmation =
        channel.basic_publish("".into(), queue.into(), BasicPublishOptions { mandatory: true, ..Default::default() }, payload, properties).await?.await?;
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
    /// Training jobs asking for `n` GPUs go to `train_gpus[n - 1]`; a trainer with G
    /// GPUs consumes the first G of these (and `train`).
    pub train_gpus: Vec<String>,
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
            train_gpus: (1..=absa_jobs::spec::MAX_GPUS_PER_JOB).map(|n| format!("{prefix}.train.gpus-{n}")).collect(),
            score: format!("{prefix}.score"),
            dead_letter_exchange: format!("{prefix}.dead"),
            train_dead: format!("{prefix}.train.dead"),
            score_dead: format!("{prefix}.score.dead"),
            delivery_limit,
        }
    }

    /// Every queue of the deployment (work and dead-letter), for tools that remove them.
    pub fn all_queues(&self) -> Vec<String> {
        [&self.train, &self.score, &self.train_dead, &self.score_dead].into_iter().chain(&self.train_gpus).cloned().collect()
    }

    /// The training queues a trainer with `gpus` GPUs consumes: `train`, and those of
    /// jobs asking for 1 to `gpus` GPUs.
    pub fn train_queues_for(&self, gpus: u32) -> Vec<String> {
        std::iter::once(self.train.clone()).chain(self.train_gpus.iter().take(gpus as usize).cloned()).collect()
    }

    /// Where a training job asking for `gpus` GPUs is sent.
    pub fn train_queue_of(&self, gpus: u32) -> &str {
        match gpus {
            0 => &self.train,
            n => &self.train_gpus[(n.min(absa_jobs::spec::MAX_GPUS_PER_JOB) - 1) as usize],
        }
    }

    /// Deletes every queue and the dead-letter exchange: how tests and benchmarks
    /// remove their throwaway deployments from a shared broker.
    pub async fn delete(&self, channel: &Channel) -> Result<()> {
        for q in self.all_queues() {
            channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        channel.exchange_delete(self.dead_letter_exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
        Ok(())
    }

    /// Declares (idempotently) the durable quorum work queues with their delivery
    /// limit and dead-letter routing, and the dead-letter queues.
    pub async fn declare(&self, channel: &Channel) -> Result<()> {
        channel
            .exchange_declare(
                self.dead_letter_exchange.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await?;
        // A GPU job's message dead-letters into `train.dead` like any training job's.
        let gpu_queues = self.train_gpus.iter().map(|q| (q, &self.train_dead));
        for (work, dead) in [(&self.train, &self.train_dead), (&self.score, &self.score_dead)].into_iter().chain(gpu_queues) {
            let mut dead_args = FieldTable::default();
            dead_args.insert(ShortString::from("x-queue-type"), AMQPValue::LongString(LongString::from("quorum")));
            channel.queue_declare(dead.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, dead_args).await?;
            channel
                .queue_bind(
                    dead.as_str().into(),
                    self.dead_letter_exchange.as_str().into(),
                    work.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
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

/// The first reconnection attempt after a failure waits this long; each further one
/// twice as long, up to [`RECONNECT_MAX`].
pub const RECONNECT_MIN: Duration = Duration::from_millis(500);
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// A broker that accepts the TCP connection but never finishes the handshake counts as
/// down after this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A RabbitMQ connection that comes back after the broker restarts: it hands out a
/// confirmed channel on a live connection and, when the connection died, opens a new
/// one (exponential backoff between failed attempts, 0.5 s doubling to 10 s) and
/// redeclares the [`Topology`] on it before handing it out.
///
/// API:
/// - [`Reconnecting::connect`] makes the first connection and fails at once, naming the
///   address, so a process that cannot reach the broker at start-up says so.
/// - [`Reconnecting::channel`] returns a live confirmed channel, reconnecting as often
///   as needed and sleeping out the backoff in between; it only returns once
///   connected. It is cancel-safe: put it in `tokio::select!` beside a shutdown signal.
///   For consumers: when a consumer stream ends or fails, call [`Reconnecting::reset`]
///   (or just `channel()` again) and consume on the new channel.
/// - [`Reconnecting::try_channel`] is the same with at most one attempt, and none while
///   the backoff after the last failure runs (then `Err(AmqpBackoff)` at once): for
///   loops with other work to do between attempts, like the scheduler.
/// - [`Reconnecting::publish`] is [`publish_confirmed`] on `try_channel()`.
/// - [`Reconnecting::reset`] drops the current connection so the next call reconnects.
/// - [`Reconnecting::connection`] is the live connection, if any (tests close it;
///   consumers can open their own channels on it); [`Reconnecting::connections`]
///   counts successful connections (1 after `connect`).
///
/// The handed-out channel is shared: every clone is the same AMQP channel, in confirm
/// mode. Liveness is lapin's view of the connection and channel state; a publish that
/// fails on a connection lapin still thinks alive fails once more on the next call, by
/// which time lapin has noticed.
pub struct Reconnecting {
    settings: AmqpSettings,
    topology: Topology,
    live: Option<(Connection, Channel)>,
    failures: u32,
    retry_at: Option<Instant>,
    connections: u64,
}

impl Reconnecting {
    /// Connects now, declares `topology`, and fails with the address if it cannot.
    pub async fn connect(settings: AmqpSettings, topology: Topology) -> Result<Self> {
        let mut holder = Self::lazy(settings, topology);
        holder.try_channel().await?;
        Ok(holder)
    }

    /// A holder that connects on first use.
    pub fn lazy(settings: AmqpSettings, topology: Topology) -> Self {
        Self { settings, topology, live: None, failures: 0, retry_at: None, connections: 0 }
    }

    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The live connection, if there is one.
    pub fn connection(&self) -> Option<&Connection> {
        self.live.as_ref().filter(|_| self.is_live()).map(|(c, _)| c)
    }

    /// How many times a connection was opened (reconnections are this minus one).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// Forgets the current connection; the next call opens a new one.
    pub fn reset(&mut self) {
        self.live = None;
    }

    /// A live confirmed channel, reconnecting until it has one.
    pub async fn channel(&mut self) -> Channel {
        loop {
            if let Ok(channel) = self.try_channel().await {
                return channel;
            }
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at.into()).await;
            }
        }
    }

    /// A live confirmed channel, or one connection attempt if the backoff allows it.
    pub async fn try_channel(&mut self) -> Result<Channel> {
        if self.live.is_some() && !self.is_live() {
            tracing::warn!("RabbitMQ connection lost: reconnecting");
            self.live = None;
        }
        if let Some((_, channel)) = &self.live {
            return Ok(channel.clone());
        }
        if let Some(retry_in) = self.retry_at.and_then(|at| at.checked_duration_since(Instant::now())) {
            return Err(PlatformError::AmqpBackoff { retry_in });
        }
        match self.open().await {
            Ok((connection, channel)) => {
                if self.failures > 0 {
                    tracing::info!(failed_attempts = self.failures, "reconnected to RabbitMQ");
                }
                self.failures = 0;
                self.retry_at = None;
                self.connections += 1;
                self.live = Some((connection, channel.clone()));
                Ok(channel)
            }
            Err(e) => {
                self.failures += 1;
                let wait = RECONNECT_MIN.saturating_mul(1 << self.failures.min(16).saturating_sub(1)).min(RECONNECT_MAX);
                self.retry_at = Some(Instant::now() + wait);
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "RabbitMQ connection failed");
                Err(e)
            }
        }
    }

    /// Publishes with a broker confirm on the current channel (see [`publish_confirmed`]).
    pub async fn publish(&mut self, queue: &str, payload: &[u8]) -> Result<()> {
        let channel = self.try_channel().await?;
        publish_confirmed(&channel, queue, payload).await
    }

    fn is_live(&self) -> bool {
        self.live.as_ref().is_some_and(|(c, ch)| c.status().connected() && ch.status().connected())
    }

    async fn open(&self) -> Result<(Connection, Channel)> {
        let url = redact_url(self.settings.url.expose());
        let connection = tokio::time::timeout(CONNECT_TIMEOUT, connect(&self.settings)).await.map_err(|_| PlatformError::AmqpTimeout { url })??;
        let channel = confirmed_channel(&connection).await?;
        self.topology.declare(&channel).await?;
        Ok((connection, channel))
    }
}
