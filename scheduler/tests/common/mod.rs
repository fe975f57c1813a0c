#![allow(dead_code)] // each test binary uses a different subset
//! The real services the tests talk to (started by scripts/services.sh): a throwaway
//! database per test and a unique queue prefix per test.

use absa_platform::config::{AmqpSettings, Secret};
use absa_platform::db::ScratchDb;
use absa_platform::queue::{Reconnecting, Topology};
use absa_store::jobs::{self, NewJob};
use uuid::Uuid;

pub fn admin_url() -> String {
    absa_platform::config::test_database_url()
}

pub fn amqp() -> AmqpSettings {
    AmqpSettings { url: Secret::new(absa_platform::config::test_amqp_url()), ..Default::default() }
}

/// A database of its own (dropped with the value) and a team in it.
pub struct TestDb {
    db: ScratchDb,
    pub team: Uuid,
}

impl std::ops::Deref for TestDb {
    type Target = ScratchDb;
    fn deref(&self) -> &ScratchDb {
        &self.db
    }
}

impl TestDb {
    pub async fn new(prefix: &str) -> Self {
        let db = ScratchDb::new(prefix).await.unwrap();
        let team = db.team().await.unwrap();
        Self { db, team }
    }

    pub fn job(&self, kind: &str, priority: i32, parameters: serde_json::Value) -> NewJob {
        NewJob { priority, ..NewJob::new(self.team, kind.parse().expect("a job kind"), parameters) }
    }

    pub async fn submit(&self, kind: &str, priority: i32, parameters: serde_json::Value) -> Uuid {
        jobs::submit(&self.pool, &self.job(kind, priority, parameters)).await.unwrap().id()
    }

    /// A corpus with documents at `seqs`, and a model version; returns (corpus, model).
    pub async fn corpus(&self, seqs: impl IntoIterator<Item = i64>) -> (Uuid, Uuid) {
        let (corpus, model) = (Uuid::new_v4(), Uuid::new_v4());
        sqlx::query("INSERT INTO corpora (id, team_id, name) VALUES ($1, $2, $3)")
            .bind(corpus)
            .bind(self.team)
            .bind(corpus.to_string())
            .execute(&self.pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO model_versions (id, team_id, base_model, label_names) VALUES ($1, $2, 'm', '{negative,neutral,positive}')")
            .bind(model)
            .bind(self.team)
            .execute(&self.pool)
            .await
            .unwrap();
        let seqs: Vec<i64> = seqs.into_iter().collect();
        sqlx::query("INSERT INTO documents (corpus_id, seq, external_id, text) SELECT $1, s, s::text, 'text' FROM unnest($2::bigint[]) AS s")
            .bind(corpus)
            .bind(&seqs)
            .execute(&self.pool)
            .await
            .unwrap();
        (corpus, model)
    }

    pub async fn events(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar("SELECT kind FROM job_events WHERE job_id = $1 ORDER BY id").bind(id).fetch_all(&self.pool).await.unwrap()
    }
}

/// A unique topology, declared through a fresh holder.
pub async fn broker() -> Reconnecting {
    let topology = Topology::new(&format!("absa_test_{}", Uuid::new_v4().simple()), 5);
    Reconnecting::connect(amqp(), topology).await.unwrap()
}

/// Deletes a test topology's queues and exchange.
pub async fn delete_topology(topology: &Topology) {
    let connection = absa_platform::queue::connect(&amqp()).await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    topology.delete(&channel).await.unwrap();
    connection.close(200, "done".into()).await.unwrap();
}
