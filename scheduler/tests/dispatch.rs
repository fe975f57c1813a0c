//! Dispatch against the real Postgres and RabbitMQ: queued jobs become confirmed
//! messages by priority, expired leases come back after their backoff, one leader, a
//! submission wakes the loop at once, and a dead broker connection is replaced.

mod common;

use std::time::{Duration, Instant};

use absa_jobs::JobStatus;
use absa_scheduler::dispatch::{run_until_stopped, Dispatcher, Leadership, PassReport};
use absa_store::jobs;
use common::TestDb;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use uuid::Uuid;

#[tokio::test]
async fn queued_jobs_are_published_by_priority_and_expired_ones_come_back() -> anyhow::Result<()> {
    let db = TestDb::new("absa_dispatch").await;
    let pool = db.pool.clone();
    let low = db.submit("train", 0, serde_json::json!({})).await;
    let high = db.submit("train", 5, serde_json::json!({})).await;
    let shard = db.submit("score_shard", 0, serde_json::json!({})).await;

    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let connection = absa_platform::queue::connect(&common::amqp()).await?;
    let dispatcher = Dispatcher::new(pool.clone(), amqp);

    assert_eq!(dispatcher.pass().await?, PassReport { dispatched: 3, ..Default::default() });
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
    assert_eq!(dispatcher.pass().await?, PassReport { requeued: 1, ..Default::default() }, "backoff holds it back");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(dispatcher.pass().await?, PassReport { dispatched: 1, ..Default::default() });
    let d = tokio::time::timeout(Duration::from_secs(10), train.next()).await?.expect("message")?;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&d.data)?["job_id"], serde_json::json!(high));
    d.ack(BasicAckOptions::default()).await?;
    assert_eq!(jobs::claim(&pool, high, "new-worker", 30.0).await?.unwrap().attempt, 2);

    common::delete_topology(&topology).await;
    Ok(())
}

/// Two teams: `a` queues 100 training jobs at priority 100, then `b` queues 5 at
/// priority 0. One worker takes messages in order (claim, complete, next), the
/// scheduler refilling between them. Teams take turns and priority orders a team's own
/// jobs only, so all of b's jobs start among the first 21 (a's 16 waiting messages and
/// b's 5), long before a's backlog ends; ordered by priority alone they would start
/// 101st to 105th.
#[tokio::test]
async fn teams_take_turns_so_one_teams_backlog_does_not_starve_another() -> anyhow::Result<()> {
    let db = TestDb::new("absa_dispatch").await;
    let pool = db.pool.clone();
    let b_team = Uuid::new_v4();
    sqlx::query("INSERT INTO teams (id, name) VALUES ($1, 'b')").bind(b_team).execute(&pool).await?;
    for _ in 0..100 {
        db.submit("train", 100, serde_json::json!({})).await;
    }
    let mut b_jobs = Vec::new();
    for _ in 0..5 {
        b_jobs.push(jobs::submit(&pool, &jobs::NewJob { team_id: b_team, ..db.job("train", 0, serde_json::json!({})) }).await?.id());
    }
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let connection = absa_platform::queue::connect(&common::amqp()).await?;
    let dispatcher = Dispatcher::new(pool.clone(), amqp);
    assert_eq!(dispatcher.pass().await?.dispatched, 16 + 5, "each team's waiting messages are capped at 16");
    let channel = connection.create_channel().await?;
    let mut train = channel.basic_consume(topology.train.as_str().into(), "w".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let mut started = Vec::new();
    while started.len() < 105 {
        let Some(id) = next_job(&mut train, Duration::from_millis(300)).await else {
            dispatcher.pass().await?;
            continue;
        };
        if jobs::claim(&pool, id, "worker", 30.0).await?.is_some() {
            jobs::complete(&pool, id, "worker").await?.expect("the lease is held");
            started.push(id);
        }
    }
    let b_turns: Vec<usize> = b_jobs.iter().map(|b| started.iter().position(|s| s == b).unwrap()).collect();
    assert!(b_turns.iter().all(|&t| t < 21), "b's jobs started at {b_turns:?} of 105");
    common::delete_topology(&topology).await;
    Ok(())
}

/// Quotas: with at most 3 active jobs and 4 GPUs per team, a pass dispatches 3 of a
/// team's 10 CPU jobs, and of its GPU jobs only what fits in 4 GPUs.
#[tokio::test]
async fn a_team_holds_at_most_its_quota_of_jobs_and_gpus() -> anyhow::Result<()> {
    let db = TestDb::new("absa_dispatch").await;
    let pool = db.pool.clone();
    for _ in 0..10 {
        db.submit("score_shard", 0, serde_json::json!({})).await;
    }
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let quotas = jobs::TeamQuotas { max_waiting: 0, max_active: 3, max_gpus: 4 };
    let dispatcher = Dispatcher::new(pool.clone(), amqp).with_quotas(quotas);
    assert_eq!(dispatcher.pass().await?.dispatched, 3);
    assert_eq!(dispatcher.pass().await?.dispatched, 0, "3 are active");
    let active: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'dispatched'").fetch_all(&pool).await?;
    jobs::claim(&pool, active[0], "w", 30.0).await?.unwrap();
    jobs::complete(&pool, active[0], "w").await?.unwrap();
    assert_eq!(dispatcher.pass().await?.dispatched, 1, "one finished, one more goes");
    sqlx::query("UPDATE jobs SET state = 'cancelled' WHERE state IN ('queued', 'dispatched')").execute(&pool).await?;
    // GPU jobs: a live trainer offers 8 GPUs; jobs of 2, 2 and 2 GPUs: two fit in 4.
    absa_store::workers::advertise(&pool, "trainer-eight-gpus", "trainer", absa_store::workers::Offer { gpus: 8, gpu_memory_mib: 81_920 }).await?;
    let quotas = jobs::TeamQuotas { max_waiting: 0, max_active: 0, max_gpus: 4 };
    let amqp = common::broker().await;
    let gpu_topology = amqp.topology().clone();
    let dispatcher = Dispatcher::new(pool.clone(), amqp).with_quotas(quotas);
    for _ in 0..3 {
        db.submit("train", 0, serde_json::json!({ "gpus": 2 })).await;
    }
    assert_eq!(dispatcher.pass().await?.dispatched, 2);
    common::delete_topology(&topology).await;
    common::delete_topology(&gpu_topology).await;
    Ok(())
}

/// The next message on `queue`'s consumer, or `None` within `wait`.
async fn next_job(consumer: &mut lapin::Consumer, wait: Duration) -> Option<Uuid> {
    let d = tokio::time::timeout(wait, consumer.next()).await.ok()??.ok()?;
    d.ack(BasicAckOptions::default()).await.ok()?;
    serde_json::from_slice::<serde_json::Value>(&d.data).ok()?["job_id"].as_str()?.parse().ok()
}

#[tokio::test]
async fn gpu_jobs_wait_for_a_live_trainer_with_enough_gpus_and_go_to_their_queue() -> anyhow::Result<()> {
    use absa_store::workers::{self, Offer};
    let db = TestDb::new("absa_routing").await;
    let pool = db.pool.clone();
    let two = db.submit("train", 0, serde_json::json!({ "gpus": 2 })).await;
    let cpu = db.submit("train", 0, serde_json::json!({})).await;
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let connection = absa_platform::queue::connect(&common::amqp()).await?;
    let dispatcher = Dispatcher::new(pool.clone(), amqp);
    let channel = connection.create_channel().await?;
    let consume = |queue: &str| channel.basic_consume(queue.into(), "".into(), BasicConsumeOptions::default(), FieldTable::default());
    let mut train = consume(&topology.train).await?;
    let mut gpus_2 = consume(&topology.train_gpus[1]).await?;

    // No trainer with GPUs: the CPU job goes, the GPU job waits and says why, once.
    assert_eq!(dispatcher.pass().await?.dispatched, 1);
    assert_eq!(next_job(&mut train, Duration::from_secs(10)).await, Some(cpu));
    assert_eq!(jobs::status(&pool, two).await?, Some(JobStatus::Queued));
    dispatcher.pass().await?;
    assert_eq!(db.events(two).await.iter().filter(|e| *e == "waiting_for_gpus").count(), 1);

    // A trainer with one GPU is not enough; one gone stale (not seen for a minute) neither.
    workers::advertise(&pool, "trainer-one-gpu", "trainer", Offer { gpus: 1, gpu_memory_mib: 81_920 }).await?;
    workers::advertise(&pool, "trainer-stale", "trainer", Offer { gpus: 8, gpu_memory_mib: 81_920 }).await?;
    sqlx::query("UPDATE workers SET last_seen = now() - interval '1 minute' WHERE name = 'trainer-stale'").execute(&pool).await?;
    assert_eq!(dispatcher.pass().await?.dispatched, 0);

    // A live trainer with 4 GPUs of 40 GiB: sent to the 2-GPU queue (which it consumes), not to `train`.
    workers::advertise(&pool, "trainer-four-gpus", "trainer", Offer { gpus: 4, gpu_memory_mib: 40_960 }).await?;
    assert_eq!(topology.train_queues_for(4)[2], topology.train_gpus[1]);
    assert_eq!(dispatcher.pass().await?.dispatched, 1);
    assert_eq!(next_job(&mut gpus_2, Duration::from_secs(10)).await, Some(two));
    assert_eq!(next_job(&mut train, Duration::from_millis(500)).await, None);

    // A job a trainer found needs bigger GPUs than 40 GiB waits for one that has them.
    let big = db.submit("train", 0, serde_json::json!({ "gpus": 2 })).await;
    jobs::require_gpu_memory(&pool, big, 60_000).await?;
    assert_eq!(dispatcher.pass().await?.dispatched, 0);
    workers::advertise(&pool, "trainer-two-big-gpus", "trainer", Offer { gpus: 2, gpu_memory_mib: 81_920 }).await?;
    assert_eq!(dispatcher.pass().await?.dispatched, 1);
    assert_eq!(next_job(&mut gpus_2, Duration::from_secs(10)).await, Some(big));

    // Withdrawn (a clean shutdown): no longer counted.
    for name in ["trainer-four-gpus", "trainer-two-big-gpus"] {
        workers::withdraw(&pool, name).await?;
    }
    let live: Vec<String> = workers::live(&pool).await?.into_iter().map(|w| w.name).collect();
    assert_eq!(live, vec!["trainer-one-gpu".to_string()]);

    connection.close(200, "done".into()).await?;
    common::delete_topology(&topology).await;
    Ok(())
}

#[tokio::test]
async fn only_one_scheduler_leads_at_a_time() -> anyhow::Result<()> {
    let first = Leadership::try_acquire(&common::admin_url()).await?;
    assert!(first.is_some());
    assert!(Leadership::try_acquire(&common::admin_url()).await?.is_none(), "a second replica must not lead");
    drop(first); // connection closed: the lock goes with it
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(Leadership::try_acquire(&common::admin_url()).await?.is_some());
    Ok(())
}

/// Waits until `id` leaves `queued`, or fails after `limit`.
async fn wait_dispatched(pool: &sqlx::PgPool, id: Uuid, limit: Duration) -> Duration {
    let start = Instant::now();
    while jobs::status(pool, id).await.unwrap() == Some(JobStatus::Queued) {
        assert!(start.elapsed() < limit, "job {id} still queued after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test]
async fn a_submission_wakes_the_loop_at_once_even_after_the_listener_lost_its_connection() -> anyhow::Result<()> {
    let db = TestDb::new("absa_notify").await;
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // An interval far longer than the test: only a notification can dispatch in time.
    let dispatcher = Dispatcher::new(db.pool.clone(), amqp);
    let run = tokio::spawn(run_until_stopped(dispatcher, db.url.clone(), Duration::from_secs(3600), async {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(500)).await; // leading and listening

    let first = db.submit("train", 0, serde_json::json!({})).await;
    let waited = wait_dispatched(&db.pool, first, Duration::from_secs(5)).await;
    println!("submit to dispatched: {waited:?}");

    // Kill the listener's session: the loop must reconnect it, not die.
    let killed: i64 =
        sqlx::query_scalar("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
            .fetch_one(&db.pool)
            .await?;
    assert_eq!(killed, 1, "one listener session");
    tokio::time::sleep(Duration::from_millis(1500)).await; // the listener's first backoff
    let second = db.submit("train", 0, serde_json::json!({})).await;
    wait_dispatched(&db.pool, second, Duration::from_secs(5)).await;
    assert!(!run.is_finished());

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), run).await???;
    common::delete_topology(&topology).await;
    Ok(())
}

#[tokio::test]
async fn a_pass_after_the_broker_connection_died_reconnects_and_redeclares_the_queues() -> anyhow::Result<()> {
    let db = TestDb::new("absa_reconnect").await;
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let dispatcher = Dispatcher::new(db.pool.clone(), amqp);

    // As after a broker restart: the connection is gone, and so are the queues.
    common::delete_topology(&topology).await;
    dispatcher.amqp().await.connection().expect("connected").close(200, "simulated restart".into()).await?;
    let id = db.submit("train", 0, serde_json::json!({})).await;
    assert_eq!(dispatcher.pass().await?, PassReport { dispatched: 1, ..Default::default() });
    assert_eq!(dispatcher.amqp().await.connections(), 2, "one reconnection");
    assert_eq!(jobs::status(&db.pool, id).await?, Some(JobStatus::Dispatched));

    let connection = absa_platform::queue::connect(&common::amqp()).await?;
    let channel = connection.create_channel().await?;
    let mut train = channel.basic_consume(topology.train.as_str().into(), "t".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let d = tokio::time::timeout(Duration::from_secs(10), train.next()).await?.expect("message")?;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&d.data)?["job_id"], serde_json::json!(id));
    d.ack(BasicAckOptions::default()).await?;
    connection.close(200, "done".into()).await?;
    common::delete_topology(&topology).await;
    Ok(())
}

#[tokio::test]
async fn a_dispatched_job_nobody_claims_is_published_again() -> anyhow::Result<()> {
    let db = TestDb::new("absa_redispatch").await;
    let pool = db.pool.clone();
    let job = db.submit("train", 0, serde_json::json!({})).await;
    let amqp = common::broker().await;
    let topology = amqp.topology().clone();
    let dispatcher = Dispatcher::new(pool.clone(), amqp).with_redispatch_after(0.5);

    assert_eq!(dispatcher.pass().await?.dispatched, 1);
    assert_eq!(dispatcher.pass().await?, PassReport::default(), "not yet: it may still be claimed");
    // Its message waits behind a busy worker (or was lost): past the limit it goes again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(dispatcher.pass().await?, PassReport { requeued: 1, dispatched: 1, ..Default::default() });
    let events: Vec<String> = sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = $1 ORDER BY id").bind(job).fetch_all(&pool).await?;
    assert!(events.contains(&"redispatched".to_string()), "{events:?}");
    // Two messages, one claim: the second finds the job running and claims nothing.
    assert!(jobs::claim(&pool, job, "w1", 30.0).await?.is_some());
    assert!(jobs::claim(&pool, job, "w2", 30.0).await?.is_none());

    common::delete_topology(&topology).await;
    Ok(())
}
