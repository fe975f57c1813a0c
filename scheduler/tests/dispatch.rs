//! Dispatch against the real Postgres and RabbitMQ: queued jobs become confirmed
//! messages by priority, expired leases come back after their backoff, one leader.

use std::time::Duration;

use absa_platform::config::{AmqpSettings, DatabaseSettings, Secret};
use absa_platform::jobs::{self, JobStatus, NewJob};
use absa_platform::{db, queue};
use absa_scheduler::dispatch::{Dispatcher, Leadership, PassReport};
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

fn admin_url() -> String {
    std::env::var("ABSA_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://absa:absa@127.0.0.1:5432/absa".into())
}

fn amqp() -> AmqpSettings {
    AmqpSettings { url: Secret::new(std::env::var("ABSA_TEST_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())), ..Default::default() }
}

#[tokio::test]
async fn queued_jobs_are_published_by_priority_and_expired_ones_come_back() -> anyhow::Result<()> {
    let name = format!("absa_test_dispatch_{}", Uuid::new_v4().simple());
    let url = db::create_database(&admin_url(), &name).await?;
    let pool = db::connect(&DatabaseSettings { url: Secret::new(url.clone()), ..Default::default() }).await?;
    db::migrate(&pool).await?;
    let team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 't')").bind(team).execute(&pool).await?;
    let job = |kind: &str, priority: i32| NewJob { team_id: team, kind: kind.into(), priority, parameters: serde_json::json!({}), max_attempts: 3, idempotency_key: None, parent_id: None };
    let low = jobs::submit(&pool, &job("train", 0)).await?.id();
    let high = jobs::submit(&pool, &job("train", 5)).await?.id();
    let shard = jobs::submit(&pool, &job("score_shard", 0)).await?.id();

    let connection = queue::connect(&amqp()).await?;
    let channel = queue::confirmed_channel(&connection).await?;
    let topology = queue::Topology::new(&format!("absa_test_{}", Uuid::new_v4().simple()), 5);
    topology.declare(&channel).await?;
    let dispatcher = Dispatcher::new(pool.clone(), channel.clone(), topology.clone());

    assert_eq!(dispatcher.pass().await?, PassReport { requeued: 0, dispatched: 3 });
    assert_eq!(dispatcher.pass().await?, PassReport::default(), "nothing is sent twice");
    for id in [low, high, shard] {
        assert_eq!(jobs::status(&pool, id).await?, Some(JobStatus::Dispatched));
    }
    let consumer_channel = connection.create_channel().await?;
    let mut train = consumer_channel.basic_consume(topology.train.as_str().into(), "t".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let d = tokio::time::timeout(Duration::from_secs(10), train.next()).await?.expect("message")?;
        let msg: serde_json::Value = serde_json::from_slice(&d.data)?;
        ids.push(msg["job_id"].as_str().unwrap().parse::<Uuid>()?);
        d.ack(BasicAckOptions::default()).await?;
    }
    assert_eq!(ids, vec![high, low], "higher priority first");
    let mut score = consumer_channel.basic_consume(topology.score.as_str().into(), "s".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let d = tokio::time::timeout(Duration::from_secs(10), score.next()).await?.expect("message")?;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&d.data)?["job_id"], serde_json::json!(shard));
    d.ack(BasicAckOptions::default()).await?;

    // A worker claims `high` and dies: after the lease and the backoff it is sent again.
    jobs::claim(&pool, high, "dead-worker", 0.2).await?.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(dispatcher.pass().await?, PassReport { requeued: 1, dispatched: 0 }, "backoff holds it back");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(dispatcher.pass().await?, PassReport { requeued: 0, dispatched: 1 });
    let d = tokio::time::timeout(Duration::from_secs(10), train.next()).await?.expect("message")?;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&d.data)?["job_id"], serde_json::json!(high));
    d.ack(BasicAckOptions::default()).await?;
    assert_eq!(jobs::claim(&pool, high, "new-worker", 30.0).await?.unwrap().attempt, 2);

    for q in [&topology.train, &topology.score, &topology.train_dead, &topology.score_dead] {
        channel.queue_delete(q.as_str().into(), QueueDeleteOptions::default()).await?;
    }
    channel.exchange_delete(topology.dead_letter_exchange.as_str().into(), Default::default()).await?;
    pool.close().await;
    db::drop_database(&admin_url(), &name).await?;
    Ok(())
}

#[tokio::test]
async fn only_one_scheduler_leads_at_a_time() -> anyhow::Result<()> {
    let first = Leadership::try_acquire(&admin_url()).await?;
    assert!(first.is_some());
    assert!(Leadership::try_acquire(&admin_url()).await?.is_none(), "a second replica must not lead");
    drop(first); // connection closed: the lock goes with it
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Leadership::try_acquire(&admin_url()).await?.is_some());
    Ok(())
}
