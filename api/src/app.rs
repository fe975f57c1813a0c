use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, Caller, HasPool};
use crate::routes::{access, data, export, jobs, models, registered_models, schedules, webhooks};
use crate::settings::{ApiSettings, Settings};

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// The limits and the rest of `[api]` (docs/api.md, "Limits and quotas").
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
    let (v1, _) = v1_routes().split_for_parts();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .merge(crate::dashboard::routes())
        .merge(v1)
        // Outermost: the request id, the counting and the timing cover everything below.
        .layer(middleware::from_fn(crate::request_id::layer))
        .with_state(state)
}

/// Every `/v1` route with its OpenAPI description ([`crate::openapi`]).
pub fn v1_routes() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(access::me))
        .routes(routes!(data::list_datasets, data::upload_dataset))
        .routes(routes!(data::get_dataset))
        .routes(routes!(data::dataset_errors))
        .routes(routes!(data::list_corpora, data::upload_corpus))
        .routes(routes!(data::get_corpus))
        .routes(routes!(data::corpus_errors))
        .routes(routes!(jobs::list_jobs))
        .routes(routes!(jobs::submit_train))
        .routes(routes!(jobs::submit_score))
        .routes(routes!(jobs::submit_sweep))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::job_events))
        .routes(routes!(jobs::job_metrics))
        .routes(routes!(jobs::job_errors))
        .routes(routes!(jobs::cancel_job))
        .routes(routes!(export::export_predictions))
        .routes(routes!(jobs::list_base_models))
        .routes(routes!(models::list_models))
        .routes(routes!(models::compare_models))
        .routes(routes!(models::get_model))
        .routes(routes!(models::promote))
        .routes(routes!(models::download_artifact))
        .routes(routes!(registered_models::list_registered_models))
        .routes(routes!(registered_models::get_registered_model, registered_models::put_registered_model))
        .routes(routes!(models::list_aliases))
        .routes(routes!(models::set_alias))
        .routes(routes!(schedules::list_schedules, schedules::create_schedule))
        .routes(routes!(schedules::get_schedule, schedules::delete_schedule))
        .routes(routes!(webhooks::list_webhooks, webhooks::create_webhook))
        .routes(routes!(webhooks::delete_webhook))
        .routes(routes!(webhooks::list_deliveries))
        .routes(routes!(access::list_keys, access::create_key))
        .routes(routes!(access::revoke_key))
        .routes(routes!(access::create_team))
        .routes(routes!(access::list_bi_logins, access::create_bi_login))
        .routes(routes!(access::drop_bi_login))
        // Uploads are capped by `max_upload_bytes` while streaming, JSON bodies by
        // `max_json_bytes` after the role check (`error::read_body`), not by axum's default.
        .layer(DefaultBodyLimit::disable());
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi()).nest("/v1", v1)
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

/// The OpenAPI document generated from the routes, made once.
async fn openapi() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let json = DOCUMENT.get_or_init(|| crate::openapi::document().to_pretty_json().expect("the document serialises"));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str()).into_response()
}
