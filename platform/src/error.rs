use thiserror::Error;

pub type Result<T, E = PlatformError> = std::result::Result<T, E>;

/// Everything that can go wrong while reaching the platform's services.
///
/// Messages name the service and address so an operator can act on them without a
/// backtrace; secrets in URLs are redacted before they get here.
#[derive(Debug, Error)]
pub enum PlatformError {
    #[error("configuration: {0}")]
    Config(#[from] ::config::ConfigError),
    #[error("cannot reach Postgres at {url}: {source}")]
    PostgresUnreachable { url: String, source: sqlx::Error },
    #[error("Postgres query failed: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot reach RabbitMQ at {url}: {source}")]
    AmqpUnreachable { url: String, source: lapin::Error },
    #[error("RabbitMQ operation failed: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("{0}")]
    Artifact(String),
    /// Data the database cannot store as given (a NUL in text, say).
    #[error("{0}")]
    InvalidData(String),
    #[error("RabbitMQ closed the consumer of {0}")]
    ConsumerClosed(String),
    #[error("RabbitMQ is unreachable; next reconnection attempt in {retry_in:?}")]
    AmqpBackoff { retry_in: std::time::Duration },
    #[error("RabbitMQ at {url} did not complete the connection handshake in time")]
    AmqpTimeout { url: String },
    #[error("RabbitMQ did not confirm the message published to {queue}")]
    NotConfirmed { queue: String },
}
