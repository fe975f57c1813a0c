use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use sqlx::PgPool;

use crate::auth::{self, Caller, HasPool};
use crate::routes::{access, data, export, jobs, models, schedules, webhooks};
use crate::settings::{ApiSettings, Settings};

/// The OpenAPI document, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The limits and the rest of `[api]` (README, "Limits and quotas").
    pub api: Arc<ApiSettings>,
    /// Where uploads are spooled while they are read.
    pub upload_dir: PathBuf,
}

impl AppState {
    /// How uploads are read: the readers' row cap, and this API's Parquet cap.
    pub fn reader_options(&self) -> absa_domain::readers::ReaderOptions {
        absa_domain::readers::ReaderOptions { max_uncompressed_bytes: self.api.max_parquet_uncompressed_bytes, ..Default::default() }
    }
}

impl HasPool for AppState {
    fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// A bound, not yet serving, API: tests read [`Application::local_addr`] after binding
/// port 0, then call [`Application::run_until_stopped`].
pub struct Application {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        let pool = absa_platform::db::connect(&settings.database).await?;
        absa_platform::db::migrate(&pool).await?;
        let upload_dir = settings.api.upload_dir.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&upload_dir).map_err(|e| anyhow::anyhow!("upload folder {}: {e}", upload_dir.display()))?;
        absa_platform::metrics::install(absa_platform::metrics::Role::Api);
        let state = AppState { pool, api: Arc::new(settings.api.clone()), upload_dir };
        let router = router(state);
        let listener = tokio::net::TcpListener::bind(&settings.http.bind).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", settings.http.bind))?;
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await?;
        Ok(())
    }
}

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .route("/me", get(access::me))
        .route("/datasets", get(data::list_datasets).post(data::upload_dataset))
        .route("/datasets/{id}", get(data::get_dataset))
        .route("/datasets/{id}/errors", get(data::dataset_errors))
        .route("/corpora", get(data::list_corpora).post(data::upload_corpus))
        .route("/corpora/{id}", get(data::get_corpus))
        .route("/corpora/{id}/errors", get(data::corpus_errors))
        .route("/jobs", get(jobs::list_jobs))
        .route("/jobs/train", post(jobs::submit_train))
        .route("/jobs/score", post(jobs::submit_score))
        .route("/jobs/sweep", post(jobs::submit_sweep))
        .route("/jobs/{id}", get(jobs::get_job))
        .route("/jobs/{id}/events", get(jobs::job_events))
        .route("/jobs/{id}/metrics", get(jobs::job_metrics))
        .route("/jobs/{id}/errors", get(jobs::job_errors))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/jobs/{id}/predictions", get(export::export_predictions))
        .route("/base-models", get(jobs::list_base_models))
        .route("/models", get(models::list_models))
        .route("/models/compare", get(models::compare_models))
        .route("/models/{id}", get(models::get_model))
        .route("/models/{id}/promote", post(models::promote))
        .route("/aliases", get(models::list_aliases))
        .route("/aliases/{name}", put(models::set_alias))
        .route("/schedules", get(schedules::list_schedules).post(schedules::create_schedule))
        .route("/schedules/{id}", get(schedules::get_schedule).delete(schedules::delete_schedule))
        .route("/webhooks", get(webhooks::list_webhooks).post(webhooks::create_webhook))
        .route("/webhooks/{id}", axum::routing::delete(webhooks::delete_webhook))
        .route("/webhooks/{id}/deliveries", get(webhooks::list_deliveries))
        .route("/keys", get(access::list_keys).post(access::create_key))
        .route("/keys/{id}", axum::routing::delete(access::revoke_key))
        .route("/teams", post(access::create_team))
        .route("/bi-logins", get(access::list_bi_logins).post(access::create_bi_login))
        .route("/bi-logins/{name}", axum::routing::delete(access::drop_bi_login))
        // Uploads are capped by `max_upload_bytes` while streaming, JSON bodies by
        // `max_json_bytes` after the role check (`error::read_body`), not by axum's default.
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::dashboard::routes())
        .nest("/v1", v1)
        // Outermost: the request id, the counting and the timing cover everything below.
        .layer(middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}

/// Liveness: the process answers.
async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: Postgres answers too.
async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<serde_json::Value>) {
    match sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool).await {
        Ok(_) => (StatusCode::OK, Json(serde_json::json!({"postgres": "ok"}))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"postgres": e.to_string()}))),
    }
}

/// This process's metrics (OpenMetrics text), for an API key of any role or the
/// scrape key (`api.metrics_key`); anonymous scrapes get 401. Nothing here reads
/// Postgres: service-wide figures (jobs by state) come from the scheduler's leader.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // Compared as hashes: no early exit that times how much of the key matched.
    let scrape_key = state.api.metrics_key.as_ref().is_some_and(|key| auth::bearer(&headers).map(auth::hash_key) == Some(auth::hash_key(key.expose())));
    if !scrape_key {
        if let Err(e) = Caller::of(&state.pool, &headers).await {
            return e.into_response();
        }
    }
    ([(header::CONTENT_TYPE, absa_platform::metrics::CONTENT_TYPE)], absa_platform::metrics::render()).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
