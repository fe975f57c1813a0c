//! `/v1/jobs`: submit training and scoring jobs (idempotent with `Idempotency-Key`),
//! their status with progress and events, per-epoch metrics, row errors, cancellation.

use absa_jobs::promotion::{valid_alias, PromotionMetric, PromotionPolicy};
use absa_jobs::score::Precision;
use absa_jobs::{spec, ScoreParams, TrainParams};
use absa_jobs::{JobKind, JobStatus};
use absa_store::jobs::views::{self, Job, JobEvent, JobSummary};
use absa_store::jobs::{self, NewJob, Submitted};
use absa_store::registry;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::paging;
use crate::app::AppState;
use crate::auth::{Caller, Role};
use crate::error::{parse_json, read_body, ApiError, ApiResult};
use crate::idempotency;

/// A fine-tuning job: a dataset, a base model a trainer has (`GET /v1/base-models`),
/// and the settings that differ from the recipe's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"dataset_id": "0b5c2f3e-8a41-4f6e-9d1c-7e2a5b9c4d10", "base_model": "xlm-roberta-base",
    "hyperparameters": {"learning_rate": 1e-5, "epochs": 8}, "promote": {"alias": "production"}}))]
pub struct TrainRequest {
    dataset_id: Uuid,
    base_model: String,
    #[serde(default)]
    #[schema(schema_with = absa_jobs::spec::hyperparameters_schema)]
    hyperparameters: Map<String, Value>,
    /// The classes, in order (default: the dataset's labels).
    labels: Option<Vec<String>>,
    /// The registered model the new version joins (created on first use with the
    /// labels' task); default: the team's model named after the task (`sentiment`, `stance`).
    model: Option<String>,
    /// GPUs to shard the model over (0: CPU).
    #[serde(default)]
    gpus: u32,
    /// Without GPUs: CPU processes that train together (one rank each).
    #[serde(default)]
    ranks: u32,
    /// Move this alias to the new version if it beats the current one.
    promote: Option<PromotionPolicy>,
    /// Orders the team's own queued jobs (-10 to 10, default 0).
    priority: Option<i32>,
    /// Free-form `key: value` strings (at most 50), e.g. `{"owner": "ana"}`; `GET /v1/jobs?tag=owner:ana` finds them.
    tags: Option<Map<String, Value>>,
}

/// Scoring a corpus with one model version, named by id or by alias.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"corpus_id": "6f1d0c2a-3b4e-4c5d-8e9f-0a1b2c3d4e5f", "alias": "production"}))]
pub struct ScoreRequest {
    corpus_id: Uuid,
    /// Exactly one of `model_version_id` and `alias`.
    model_version_id: Option<Uuid>,
    alias: Option<String>,
    /// The registered model whose `alias` it is; needed only when several of the team's
    /// models have an alias of that name.
    model: Option<String>,
    /// `given`: the targets in the documents; `lexicon`: also every occurrence of these terms.
    target_mode: Option<String>,
    lexicon: Option<Vec<String>>,
    /// Stance targets every document is scored toward, mentioned or not; kept in this
    /// (the parent) job only, as the lexicon is.
    targets: Option<Vec<spec::score::StanceTarget>>,
    /// Documents per shard (the unit scorers take).
    shard_size: Option<i64>,
    /// fp32 (default) or int8.
    precision: Option<String>,
    priority: Option<i32>,
    /// Free-form `key: value` strings (at most 50); `GET /v1/jobs?tag=KEY:VALUE` finds them.
    tags: Option<Map<String, Value>>,
}

fn check_priority(priority: Option<i32>) -> ApiResult<i32> {
    let p = priority.unwrap_or(0);
    if !spec::PRIORITY_RANGE.contains(&p) {
        return Err(ApiError::Unprocessable(format!(
            "priority {p}: {} to {} (it orders a team's own jobs)",
            spec::PRIORITY_RANGE.start(),
            spec::PRIORITY_RANGE.end()
        )));
    }
    Ok(p)
}

/// A request's idempotency: its key (if any) and what the key stands for.
struct Idempotency {
    key: Option<String>,
    hash: Option<String>,
}

impl Idempotency {
    /// The key, and the request it stands for: the route and the JSON body (parsed, so
    /// spacing does not count).
    fn of(headers: &HeaderMap, kind: &str, body: &[u8]) -> ApiResult<Self> {
        let key = idempotency::client_key(headers)?;
        let canonical = serde_json::from_slice::<Value>(body).map(|v| v.to_string()).unwrap_or_default();
        let hash = key.as_ref().map(|_| idempotency::digest(&[kind.as_bytes(), canonical.as_bytes()]));
        Ok(Self { key, hash })
    }
}

async fn submit(
    state: &AppState,
    caller: &Caller,
    kind: JobKind,
    parameters: Value,
    tags: Option<Map<String, Value>>,
    priority: i32,
    idempotency: Idempotency,
) -> ApiResult<(StatusCode, Json<Job>)> {
    if let Some(tags) = &tags {
        super::tags::check(tags)?;
    }
    let queued = views::queued(&state.pool, caller.team_id).await?;
    if queued >= state.api.max_queued_per_team {
        return Err(ApiError::TooMany(format!("the team has {queued} jobs queued, its quota (api.max_queued_per_team); submit again when some have started")));
    }
    let job = NewJob {
        team_id: caller.team_id,
        kind,
        priority,
        parameters,
        max_attempts: 3,
        idempotency_key: idempotency.key,
        parent_id: None,
        request_hash: idempotency.hash,
        tags: tags.map(Value::Object).unwrap_or(Value::Null),
    };
    let submitted = jobs::submit(&state.pool, &job).await?;
    let status = match submitted {
        Submitted::Created(_) => StatusCode::CREATED,
        Submitted::Existing(_) => StatusCode::OK,
        Submitted::KeyReused(id) => return Err(idempotency::reused(&format!("job {id}"))),
    };
    absa_platform::metrics::API.jobs_submitted.get_or_create(&absa_platform::metrics::labels(&[("kind", kind.as_str())])).inc();
    Ok((status, job_json(state, caller, submitted.id()).await?))
}

/// 422 for a base model no trainer has (once any trainer has recorded its models).
pub(crate) async fn check_base_model(state: &AppState, name: &str) -> ApiResult<()> {
    absa_store::base_models::check_known(&state.pool, name).await?.map_err(ApiError::Unprocessable)
}

/// A model a trainer can fine-tune, as the trainer recorded it at start.
#[derive(Serialize, ToSchema)]
pub struct BaseModel {
    /// The name train jobs give as `base_model`.
    name: String,
    /// The family (`bert`, `xlm-roberta`).
    model_type: String,
    /// Weights in its checkpoint.
    parameters: Option<i64>,
    advertised_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct BaseModelList {
    base_models: Vec<BaseModel>,
}

/// `GET /v1/base-models`: what the trainers can fine-tune.
#[utoipa::path(get, path = "/base-models", tag = "jobs", responses((status = 200, body = BaseModelList)))]
pub async fn list_base_models(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<BaseModelList>> {
    let base_models = absa_store::base_models::list(&state.pool)
        .await?
        .into_iter()
        .map(|(name, model_type, parameters, advertised_at)| BaseModel { name, model_type, parameters, advertised_at })
        .collect();
    Ok(Json(BaseModelList { base_models }))
}

/// A version joins its registered model only with the model's labels: a job whose
/// labels (given, else its dataset's) differ is refused now rather than after training.
pub(crate) async fn check_model_labels(state: &AppState, caller: &Caller, model: Option<&str>, dataset: Uuid, labels: Option<&[String]>) -> ApiResult<()> {
    let Some(model) = model else { return Ok(()) };
    let existing: Option<Vec<String>> = sqlx::query_scalar("SELECT label_names FROM registered_models WHERE team_id = $1 AND name = $2")
        .bind(caller.team_id)
        .bind(model)
        .fetch_optional(&state.pool)
        .await?;
    let Some(existing) = existing else { return Ok(()) };
    let labels = match labels {
        Some(labels) => labels.to_vec(),
        None => sqlx::query_scalar("SELECT label_names FROM datasets WHERE id = $1 AND team_id = $2")
            .bind(dataset)
            .bind(caller.team_id)
            .fetch_optional(&state.pool)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("dataset {dataset}")))?,
    };
    if labels != existing {
        return Err(ApiError::Unprocessable(format!(
            "model {model:?}: its versions have the labels {}; this job's are {} (name another model, or give labels)",
            existing.join(", "),
            labels.join(", ")
        )));
    }
    Ok(())
}

/// A dataset of the caller's team with its row count; 404 for others' and unknown ids.
pub(crate) async fn dataset_rows(state: &AppState, caller: &Caller, dataset: Uuid) -> ApiResult<i64> {
    let rows: Option<i64> =
        sqlx::query_scalar("SELECT (SELECT count(*) FROM dataset_rows r WHERE r.dataset_id = d.id) FROM datasets d WHERE d.id = $1 AND d.team_id = $2")
            .bind(dataset)
            .bind(caller.team_id)
            .fetch_optional(&state.pool)
            .await?;
    rows.ok_or_else(|| ApiError::NotFound(format!("dataset {dataset}")))
}

/// Stance's F_avg needs `against` and `favor` among the labels a job trains with (the
/// ones it names, else its dataset's): a job asking to compare versions on it is refused
/// here rather than after training. `metrics`: what asks for which metric.
pub(crate) async fn check_metrics_fit(
    state: &AppState,
    caller: &Caller,
    dataset: Uuid,
    labels: Option<&[String]>,
    metrics: &[(&str, PromotionMetric)],
) -> ApiResult<()> {
    if metrics.iter().all(|(_, m)| *m != PromotionMetric::FAvg) {
        return Ok(());
    }
    let labels = match labels {
        Some(labels) => labels.to_vec(),
        None => {
            let found: Option<Vec<String>> = sqlx::query_scalar("SELECT label_names FROM datasets WHERE id = $1 AND team_id = $2")
                .bind(dataset)
                .bind(caller.team_id)
                .fetch_optional(&state.pool)
                .await?;
            found.ok_or_else(|| ApiError::NotFound(format!("dataset {dataset}")))?
        }
    };
    for (what, metric) in metrics {
        metric.check_labels(&labels).map_err(|e| ApiError::Unprocessable(format!("{what}: {e}")))?;
    }
    Ok(())
}

/// Queues a fine-tuning job (mlops). An `Idempotency-Key` header makes a retry answer
/// the first submission (200) instead of queueing a second job.
#[utoipa::path(post, path = "/jobs/train", tag = "jobs", request_body = TrainRequest, params(IdempotencyKey),
    responses((status = 201, body = Job), (status = 200, description = "the same Idempotency-Key and body again: the job it made", body = Job)))]
pub async fn submit_train(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: axum::body::Body) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Mlops)?;
    let body = read_body(&headers, body, state.api.max_json_bytes).await?;
    let idempotency = Idempotency::of(&headers, "train", &body)?;
    let req: TrainRequest = parse_json(&body)?;
    let priority = check_priority(req.priority)?;
    let mut parameters = json!({ "dataset_id": req.dataset_id, "base_model": req.base_model, "hyperparameters": req.hyperparameters, "gpus": req.gpus });
    if req.ranks > 1 {
        parameters["ranks"] = json!(req.ranks);
    }
    if let Some(labels) = &req.labels {
        parameters["labels"] = json!(labels);
    }
    if let Some(policy) = &req.promote {
        parameters["promote"] = serde_json::to_value(policy).expect("a policy serialises");
    }
    if let Some(model) = &req.model {
        parameters["model"] = json!(model);
    }
    // The same check the scheduler and the trainer make; stored as the trainer reads it.
    let parameters = serde_json::to_value(TrainParams::from_value(&parameters).map_err(ApiError::Unprocessable)?).expect("training parameters serialise");
    check_base_model(&state, &req.base_model).await?;
    check_model_labels(&state, &caller, req.model.as_deref(), req.dataset_id, req.labels.as_deref()).await?;
    if let Some(policy) = &req.promote {
        check_metrics_fit(&state, &caller, req.dataset_id, req.labels.as_deref(), &[("promote", policy.metric)]).await?;
    }
    if dataset_rows(&state, &caller, req.dataset_id).await? == 0 {
        return Err(ApiError::Unprocessable(format!("dataset {} has no rows", req.dataset_id)));
    }
    submit(&state, &caller, JobKind::Train, parameters, req.tags, priority, idempotency).await
}

/// Queues a scoring job (analyst); the scheduler splits it into shards.
#[utoipa::path(post, path = "/jobs/score", tag = "jobs", request_body = ScoreRequest, params(IdempotencyKey),
    responses((status = 201, body = Job), (status = 200, description = "the same Idempotency-Key and body again: the job it made", body = Job)))]
pub async fn submit_score(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: axum::body::Body) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Analyst)?;
    let body = read_body(&headers, body, state.api.max_json_bytes).await?;
    let idempotency = Idempotency::of(&headers, "score", &body)?;
    let req: ScoreRequest = parse_json(&body)?;
    let priority = check_priority(req.priority)?;
    // Bounds first, then the lookups.
    let lexicon = match (req.target_mode.as_deref().unwrap_or("given"), req.lexicon) {
        ("given", None) => None,
        ("lexicon", Some(terms)) => {
            spec::score::check_lexicon(&terms).map_err(ApiError::Unprocessable)?;
            Some(terms)
        }
        ("lexicon", None) => return Err(ApiError::Unprocessable("target_mode lexicon needs a lexicon".into())),
        ("given", Some(_)) => return Err(ApiError::Unprocessable("a lexicon needs target_mode \"lexicon\"".into())),
        (other, _) => return Err(ApiError::Unprocessable(format!("target_mode {:?}: expected given or lexicon", spec::truncate(other, 40)))),
    };
    if let Some(targets) = &req.targets {
        spec::score::check_targets(targets).map_err(ApiError::Unprocessable)?;
    }
    if let Some(size) = req.shard_size {
        spec::score::check_shard_size(size).map_err(ApiError::Unprocessable)?;
    }
    let precision = match req.precision.as_deref() {
        None => None,
        Some("fp32") => Some(Precision::Fp32),
        Some("int8") => Some(Precision::Int8),
        Some(other) => return Err(ApiError::Unprocessable(format!("precision {:?}: expected fp32 or int8", spec::truncate(other, 40)))),
    };
    let corpus: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM corpora WHERE id = $1 AND team_id = $2").bind(req.corpus_id).bind(caller.team_id).fetch_optional(&state.pool).await?;
    if corpus.is_none() {
        return Err(ApiError::NotFound(format!("corpus {}", req.corpus_id)));
    }
    if req.model.is_some() && req.alias.is_none() {
        return Err(ApiError::Unprocessable("model: names the model of an alias; give alias too".into()));
    }
    let model = match (req.model_version_id, &req.alias) {
        (Some(id), None) => {
            let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM model_versions WHERE id = $1 AND team_id = $2")
                .bind(id)
                .bind(caller.team_id)
                .fetch_optional(&state.pool)
                .await?;
            found.map(|_| id).ok_or_else(|| ApiError::NotFound(format!("model version {id}")))?
        }
        (None, Some(alias)) => {
            if !valid_alias(alias) {
                return Err(ApiError::Unprocessable(format!("alias {:?}: 1 to 63 lower-case letters, digits, '-' and '_'", spec::truncate(alias, 70))));
            }
            let mut conn = state.pool.acquire().await?;
            let named = req.model.as_deref().map(|m| format!(" of the model {m:?}")).unwrap_or_default();
            registry::resolve_alias(&mut conn, caller.team_id, alias, req.model.as_deref())
                .await?
                .ok_or_else(|| ApiError::NotFound(format!("alias {alias:?}{named}")))?
        }
        _ => return Err(ApiError::Unprocessable("give exactly one of model_version_id and alias".into())),
    };
    // Stored as the scheduler and the scorer read it.
    let parameters = ScoreParams {
        corpus_id: req.corpus_id,
        model_version_id: model,
        alias: req.alias,
        shard_size: req.shard_size,
        precision,
        lexicon,
        targets: req.targets,
    };
    let parameters = serde_json::to_value(parameters).expect("score parameters serialise");
    submit(&state, &caller, JobKind::Score, parameters, req.tags, priority, idempotency).await
}

/// A sweep: the spec is checked (its grid sized before it is built, every child as the
/// training job it will be) here, the scheduler runs it.
#[utoipa::path(post, path = "/jobs/sweep", tag = "jobs", request_body = absa_jobs::sweep::SweepSpec, params(IdempotencyKey),
    responses((status = 201, body = Job), (status = 200, description = "the same Idempotency-Key and body again: the job it made", body = Job)))]
pub async fn submit_sweep(State(state): State<AppState>, caller: Caller, headers: HeaderMap, body: axum::body::Body) -> ApiResult<(StatusCode, Json<Job>)> {
    caller.require(Role::Mlops)?;
    let body = read_body(&headers, body, state.api.max_json_bytes).await?;
    let idempotency = Idempotency::of(&headers, "sweep", &body)?;
    let spec: absa_jobs::sweep::SweepSpec = parse_json(&body)?;
    let trials = spec.expand().map_err(ApiError::Unprocessable)?;
    check_base_model(&state, &spec.base_model).await?;
    dataset_rows(&state, &caller, spec.dataset_id).await?;
    let mut metrics = vec![("metric", spec.metric)];
    metrics.extend(spec.promote.as_ref().map(|p| ("promote", p.metric)));
    check_metrics_fit(&state, &caller, spec.dataset_id, spec.labels.as_deref(), &metrics).await?;
    check_model_labels(&state, &caller, spec.model.as_deref(), spec.dataset_id, spec.labels.as_deref()).await?;
    let parameters = serde_json::to_value(&spec).expect("a spec serialises");
    let (status, Json(mut job)) = submit(&state, &caller, JobKind::Sweep, parameters, spec.tags.clone(), 0, idempotency).await?;
    job.trials = Some(trials.len());
    Ok((status, Json(job)))
}

/// A job as the API shows it: state, progress, events and, by kind, its model version
/// or its shards. 404 for unknown ids and for other teams' jobs alike.
pub async fn job_json(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<Json<Job>> {
    views::job(&state.pool, caller.team_id, id).await?.map(Json).ok_or_else(|| ApiError::NotFound(format!("job {id}")))
}

#[utoipa::path(get, path = "/jobs/{id}", tag = "jobs", params(("id" = Uuid, Path, description = "the job's id")), responses((status = 200, body = Job)))]
pub async fn get_job(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Job>> {
    job_json(&state, &caller, id).await
}

/// The optional `Idempotency-Key` header of submissions and uploads.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKey {
    /// A client's key for this request (at most 200 characters): the same key and body
    /// again answer the first result; the same key with another body is a 422.
    #[param(rename = "Idempotency-Key")]
    idempotency_key: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct JobFilter {
    state: Option<JobStatus>,
    /// train, score or sweep (shards are listed with their scoring job, not here).
    kind: Option<JobKind>,
    /// At most this many, newest first (1 to 1000, default 100).
    limit: Option<i64>,
    /// The previous page's `next_after`: only jobs older than its last one.
    after: Option<String>,
    /// Only jobs created at or after / before these instants (RFC 3339).
    created_after: Option<chrono::DateTime<chrono::Utc>>,
    created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// Only jobs tagged so: `KEY:VALUE`.
    tag: Option<String>,
}

/// A page of jobs, newest first; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct JobPage {
    jobs: Vec<JobSummary>,
    has_more: bool,
    next_after: Option<String>,
}

/// The team's jobs (shards excepted), newest first, a page at a time: `has_more` and
/// `next_after` (pass it as `after`) when there is another page.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(JobFilter), responses((status = 200, body = JobPage)))]
pub async fn list_jobs(State(state): State<AppState>, caller: Caller, Query(f): Query<JobFilter>) -> ApiResult<Json<JobPage>> {
    let limit = paging::limit(f.limit, 100, 1000)?;
    let before = f.after.as_deref().map(paging::parse_time_cursor).transpose()?;
    let tag = f.tag.as_deref().map(super::tags::filter).transpose()?;
    let filter =
        views::JobFilter { state: f.state, kind: f.kind, before, created_after: f.created_after, created_before: f.created_before, tag, limit: limit + 1 };
    let rows = views::list(&state.pool, caller.team_id, &filter).await?;
    let (jobs, next_after) = paging::split(rows, limit, |r| paging::time_cursor(r.created_at, r.id));
    Ok(Json(JobPage { jobs, has_more: next_after.is_some(), next_after }))
}

/// The kind of the caller's job `id`; 404 for unknown ids and other teams' jobs alike.
async fn owned_job(state: &AppState, caller: &Caller, id: Uuid) -> ApiResult<JobKind> {
    views::kind_of(&state.pool, caller.team_id, id).await?.ok_or_else(|| ApiError::NotFound(format!("job {id}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventPage {
    /// At most this many, oldest first (1 to 10,000, default 1,000).
    limit: Option<i64>,
    /// The previous page's `next_after`: only later events.
    after: Option<i64>,
}

/// A page of a job's events, oldest first; while `has_more`, pass `next_after` as `after`.
#[derive(Serialize, ToSchema)]
pub struct JobEventPage {
    events: Vec<JobEvent>,
    has_more: bool,
    next_after: Option<i64>,
}

/// A job's event log, oldest first, a page at a time (`has_more`, `next_after`).
#[utoipa::path(get, path = "/jobs/{id}/events", tag = "jobs", params(("id" = Uuid, Path, description = "the job's id"), EventPage),
    responses((status = 200, body = JobEventPage)))]
pub async fn job_events(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>, Query(page): Query<EventPage>) -> ApiResult<Json<JobEventPage>> {
    owned_job(&state, &caller, id).await?;
    let limit = paging::limit(page.limit, 1000, 10_000)?;
    let rows = views::events(&state.pool, id, page.after.unwrap_or(0), limit + 1).await?;
    let (events, next_after) = paging::split(rows, limit, |e| e.id.expect("paged events carry their ids"));
    Ok(Json(JobEventPage { events, has_more: next_after.is_some(), next_after }))
}

/// One epoch's figures: training loss, and loss, accuracy and macro-F1 on the validation split.
#[derive(Serialize, ToSchema)]
pub struct EpochMetrics {
    epoch: i32,
    train_loss: f64,
    validation_loss: f64,
    accuracy: f64,
    macro_f1: f64,
    /// Stance's F_avg (mean F1 of against and favor), where the labels have both.
    #[serde(skip_serializing_if = "Option::is_none")]
    f_avg: Option<f64>,
    /// The per-class report and the epoch's timings.
    detail: Value,
}

#[derive(Serialize, ToSchema)]
pub struct EpochMetricsList {
    epochs: Vec<EpochMetrics>,
}

/// A training job's figures per epoch.
#[utoipa::path(get, path = "/jobs/{id}/metrics", tag = "jobs", params(("id" = Uuid, Path, description = "the job's id")),
    responses((status = 200, body = EpochMetricsList)))]
pub async fn job_metrics(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<EpochMetricsList>> {
    owned_job(&state, &caller, id).await?;
    let rows = absa_store::training_metrics::of_job(&state.pool, id).await?;
    let epochs = rows
        .into_iter()
        .map(|f| {
            // Stance's F_avg (mean F1 of against and favor) is in the epoch's report when
            // the labels have both; shown beside accuracy and macro-F1 then, else absent.
            let f_avg = f.detail.pointer("/report/f_avg").and_then(Value::as_f64);
            let (epoch, train_loss, validation_loss, accuracy, macro_f1) = (f.epoch, f.train_loss, f.validation_loss, f.accuracy, f.macro_f1);
            EpochMetrics { epoch, train_loss, validation_loss, accuracy, macro_f1, f_avg, detail: f.detail }
        })
        .collect();
    Ok(Json(EpochMetricsList { epochs }))
}

/// Rows a job rejected (its shards' included), by line, paged like the uploads' errors.
#[utoipa::path(get, path = "/jobs/{id}/errors", tag = "jobs", params(("id" = Uuid, Path, description = "the job's id"), super::data::ErrorPage),
    responses((status = 200, body = super::data::RowErrorPage)))]
pub async fn job_errors(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
    Query(page): Query<super::data::ErrorPage>,
) -> ApiResult<Json<super::data::RowErrorPage>> {
    owned_job(&state, &caller, id).await?;
    super::data::error_page(&state, absa_store::row_errors::Listed::Job(id), page).await
}

/// Cancels a job that has not finished (scoring: analyst; training and sweeps: mlops).
#[utoipa::path(post, path = "/jobs/{id}/cancel", tag = "jobs", params(("id" = Uuid, Path, description = "the job's id")), responses((status = 200, body = Job)))]
pub async fn cancel_job(State(state): State<AppState>, caller: Caller, Path(id): Path<Uuid>) -> ApiResult<Json<Job>> {
    caller.require(Role::Analyst)?;
    let kind = owned_job(&state, &caller, id).await?;
    // Analysts may cancel scoring; training and sweeps are mlops' business.
    if kind == JobKind::Train || kind == JobKind::Sweep {
        caller.require(Role::Mlops)?;
    }
    if !jobs::cancel(&state.pool, id).await? {
        return Err(ApiError::Conflict(format!("job {id} has already finished")));
    }
    job_json(&state, &caller, id).await
}
