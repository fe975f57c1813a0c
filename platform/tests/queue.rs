//! A message goes through the real RabbitMQ with a publisher confirm, is consumed with
//! manual acknowledgement, and an unacked message comes back to the next consumer.

mod common;

use absa_platform::config::{AmqpSettings, Secret};
use absa_platform::queue;
use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;

fn settings() -> AmqpSettings {
    AmqpSettings { url: Secret::new(common::amqp_url()), ..Default::default() }
}

#[tokio::test]
async fn a_confirmed_message_is_consumed_and_acknowledged_once() -> anyhow::Result<()> {
    let connection = queue::connect(&settings()).await?;
    let channel = queue::confirmed_channel(&connection).await?;
    let name = common::unique_name("absa_test_roundtrip");
    channel.queue_declare(name.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default()).await?;

    queue::publish_confirmed(&channel, &name, br#"{"job_id":"one"}"#).await?;

    // First consumer takes the message and drops it without acking: it must come back.
    let first = connection.create_channel().await?;
    first.basic_qos(1, BasicQosOptions::default()).await?;
    let mut consumer = first.basic_consume(name.as_str().into(), "first".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next()).await?.expect("a delivery")?;
    assert_eq!(delivery.data, br#"{"job_id":"one"}"#);
    assert!(!delivery.redelivered);
    first.close(200, "bye".into()).await?;

    let second = connection.create_channel().await?;
    let mut consumer = second.basic_consume(name.as_str().into(), "second".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next()).await?.expect("a redelivery")?;
    assert_eq!(delivery.data, br#"{"job_id":"one"}"#);
    assert!(delivery.redelivered, "an unacked message is redelivered");
    delivery.ack(BasicAckOptions::default()).await?;

    // Acked: the queue is now empty.
    let declared = channel.queue_declare(name.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?;
    assert_eq!(declared.message_count(), 0);
    channel.queue_delete(name.as_str().into(), QueueDeleteOptions::default()).await?;
    connection.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn publishing_to_a_missing_queue_is_not_confirmed() -> anyhow::Result<()> {
    let connection = queue::connect(&settings()).await?;
    let channel = queue::confirmed_channel(&connection).await?;
    let err = queue::publish_confirmed(&channel, &common::unique_name("absa_test_nowhere"), b"{}").await.unwrap_err();
    assert!(err.to_string().contains("did not confirm"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_unreachable_broker_is_reported_with_its_address() {
    let settings = AmqpSettings { url: Secret::new("amqp://guest:secret@127.0.0.1:1/%2f"), ..Default::default() };
    let err = queue::connect(&settings).await.unwrap_err().to_string();
    assert!(err.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{err}");
}

#[tokio::test]
async fn a_message_nacked_past_the_delivery_limit_is_dead_lettered() -> anyhow::Result<()> {
    use lapin::options::BasicNackOptions;
    let connection = queue::connect(&settings()).await?;
    let channel = queue::confirmed_channel(&connection).await?;
    let topology = queue::Topology::new(&common::unique_name("absa_test_topology"), 2);
    topology.declare(&channel).await?;
    topology.declare(&channel).await?; // idempotent
    queue::publish_confirmed(&channel, &topology.score, br#"{"shard":1}"#).await?;

    let consumer_channel = connection.create_channel().await?;
    let mut consumer =
        consumer_channel.basic_consume(topology.score.as_str().into(), "crashy".into(), BasicConsumeOptions::default(), FieldTable::default()).await?;
    // Each delivery is rejected (a worker that crashes on it); past the limit it is gone.
    for _ in 0..3 {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(10), consumer.next()).await?.expect("a delivery")?;
        delivery.nack(BasicNackOptions { requeue: true, ..Default::default() }).await?;
    }
    let mut dead = None;
    for _ in 0..50 {
        let q = channel
            .queue_declare(topology.score_dead.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
            .await?;
        if q.message_count() == 1 {
            dead = Some(q);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(dead.is_some(), "the message never reached the dead-letter queue");
    topology.delete(&channel).await?;
    Ok(())
}

#[tokio::test]
async fn the_reconnecting_holder_comes_back_after_its_connection_closes() -> anyhow::Result<()> {
    let topology = queue::Topology::new(&common::unique_name("absa_test_reconnect"), 5);
    let mut amqp = queue::Reconnecting::connect(settings(), topology.clone()).await?;
    assert_eq!(amqp.connections(), 1);
    let first = amqp.channel().await;
    amqp.publish(&topology.train, b"{}").await?;
    assert_eq!(amqp.connections(), 1, "a live connection is reused");

    // As after a broker restart: connection gone, queues gone.
    let other = queue::connect(&settings()).await?;
    let admin = other.create_channel().await?;
    admin.queue_delete(topology.train.as_str().into(), QueueDeleteOptions::default()).await?;
    amqp.connection().expect("live").close(200, "simulated restart".into()).await?;
    assert!(amqp.connection().is_none(), "a closed connection is not handed out");
    assert!(!first.status().connected());

    let second = amqp.channel().await;
    assert!(second.status().connected() && second.status().confirm());
    assert_eq!(amqp.connections(), 2);
    // The topology was declared again: the deleted queue is back and takes the message.
    amqp.publish(&topology.train, br#"{"after":"reconnect"}"#).await?;
    let q = admin.queue_declare(topology.train.as_str().into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default()).await?;
    assert_eq!(q.message_count(), 1);

    // A consumer-style reset also reconnects.
    amqp.reset();
    amqp.channel().await;
    assert_eq!(amqp.connections(), 3);

    topology.delete(&admin).await?;
    other.close(200, "done".into()).await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_broker_is_retried_with_backoff_not_hammered() {
    let settings = AmqpSettings { url: Secret::new("amqp://guest:guest@127.0.0.1:1/%2f"), ..Default::default() };
    let topology = queue::Topology::new("absa_test_nowhere", 5);
    let err = queue::Reconnecting::connect(settings.clone(), topology.clone()).await.err().unwrap().to_string();
    assert!(err.contains("cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:1/%2f"), "{err}");

    let mut amqp = queue::Reconnecting::lazy(settings, topology);
    assert!(amqp.try_channel().await.is_err());
    // Straight after a failure the holder does not try again: it says when it will.
    let err = amqp.try_channel().await.unwrap_err().to_string();
    assert!(err.contains("next reconnection attempt in"), "{err}");
    assert!(tokio::time::timeout(std::time::Duration::from_millis(300), amqp.channel()).await.is_err(), "channel() keeps waiting");
}
