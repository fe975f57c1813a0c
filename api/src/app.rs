use std::future::Future;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;

use crate::settings::Settings;

#[derive(Clone)]
struct AppState {
    pool: PgPool,
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
        let router = router(AppState { pool });
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

fn router(state: AppState) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).with_state(state)
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
