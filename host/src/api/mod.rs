//! The HTTP API: deploy components, call actors, inspect the host.
//!
//! Every error is a JSON body `{"error": {"kind": ..., "message": ...}}`
//! with a 4xx status when the caller can fix it and a 5xx when the host or
//! its store failed.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::error::{ActorError, ErrorKind};
use crate::id::ActorId;
use crate::runtime::MAX_COMPONENT_BYTES;
use crate::{Host, Manifest};

/// An [`ActorError`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub ActorError);

impl From<ActorError> for ApiError {
    fn from(e: ActorError) -> Self {
        ApiError(e)
    }
}

/// The HTTP status for an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::LimitExceeded => StatusCode::INSUFFICIENT_STORAGE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "kind": self.0.kind.as_str(), "message": self.0.message } });
        (status_of(self.0.kind), Json(body)).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone)]
struct ApiState {
    host: Host,
    token: Option<String>,
}

/// The API's routes over `host`. With `token`, every `/v1` route needs
/// `Authorization: Bearer <token>`.
pub fn router(host: Host, token: Option<String>) -> Router {
    let state = ApiState { host, token };
    let v1 = Router::new()
        .route("/components", get(list_components))
        .route("/components/{actor_type}", put(deploy))
        .route("/components/{actor_type}/versions", get(versions))
        .route("/components/{actor_type}/rollback", post(rollback))
        .route("/actors", get(actors))
        .route("/actors/{actor_type}/{key}/{method}", get(inspect_actor).post(call))
        .route("/snapshots/{actor_type}/{key}", post(take_snapshot))
        .route("/projections", get(list_projections).post(create_projection))
        .route("/projections/{name}", delete(delete_projection))
        .route("/jobs", get(list_jobs).post(add_jobs).delete(purge_jobs))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/outbox", get(list_messages).delete(purge_messages))
        .route("/outbox/{id}/retry", post(retry_message))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError(ActorError::not_found("no such route; see the README for the API")) })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// True for addresses only this machine can reach.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves the API on `listener` until the future is dropped. Refuses a
/// non-loopback address without a token: the admin routes would be open.
pub async fn serve(host: Host, listener: tokio::net::TcpListener, token: Option<String>) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if !is_loopback(&addr) && token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "refusing to listen on {addr} without a token: anyone who can reach it could deploy code. \
             Pass --token (or QUARK_TOKEN), or listen on 127.0.0.1"
        );
    }
    axum::serve(listener, router(host, token)).await?;
    Ok(())
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if presented != Some(token.as_str()) {
            return ApiError(ActorError::unauthorized("this host needs `Authorization: Bearer <token>` (quark --token)"))
                .into_response();
        }
    }
    next.run(request).await
}

async fn read_body(body: Body, limit: usize, what: &str) -> ApiResult<Bytes> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        ApiError(if too_large {
            ActorError::payload_too_large(format!("{what} is over the limit of {limit} bytes"))
        } else {
            ActorError::bad_request(format!("reading {what}: {e}"))
        })
    })
}

#[derive(Deserialize)]
struct DeployParams {
    memory_limit: Option<String>,
    turn_timeout: Option<String>,
    snapshot_every: Option<String>,
    retention: Option<String>,
}

async fn deploy(
    State(state): State<ApiState>,
    Path(actor_type): Path<String>,
    Query(params): Query<DeployParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let memory_limit = params.memory_limit.or_else(|| header("x-quark-memory-limit"));
    let turn_timeout = params.turn_timeout.or_else(|| header("x-quark-turn-timeout"));
    let manifest = Manifest::parse(memory_limit.as_deref(), turn_timeout.as_deref())?
        .with_journal(params.snapshot_every.as_deref(), params.retention.as_deref())?;
    let bytes = read_body(body, MAX_COMPONENT_BYTES, "the component").await?;
    let outcome = state.host.deploy(&actor_type, bytes.to_vec(), manifest).await?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome)).into_response())
}

async fn list_components(State(state): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    let mut types = Vec::new();
    for name in state.host.actor_types() {
        let active = state.host.active_version(&name)?;
        types.push(json!({ "type": name, "active_version": active.version, "hash": active.hash }));
    }
    Ok(Json(json!({ "components": types })))
}

async fn versions(State(state): State<ApiState>, Path(actor_type): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let (versions, active) = state.host.versions(&actor_type).await?;
    Ok(Json(json!({ "type": actor_type, "active_version": active, "versions": versions })))
}

async fn rollback(State(state): State<ApiState>, Path(actor_type): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    let version = state.host.rollback(&actor_type).await?;
    Ok(Json(json!({ "type": actor_type, "active_version": version.version, "version": version })))
}

async fn actors(State(state): State<ApiState>) -> Json<serde_json::Value> {
    Json(json!({ "actors": state.host.actors() }))
}

async fn call(
    State(state): State<ApiState>,
    Path((actor_type, key, method)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = ActorId::new(&actor_type, &key)?;
    let limit = state.host.config().max_payload;
    let payload = read_body(body, limit, "the request body").await?;
    if !payload.is_empty()
        && let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
    {
        return Err(ApiError(ActorError::bad_request(format!("the request body is not valid JSON: {e}"))));
    }
    // `Idempotency-Key`: the turn runs once; a repeat gets the first reply.
    let reply = match headers.get("idempotency-key") {
        Some(key) => {
            let key = key.to_str().map_err(|_| ApiError(ActorError::bad_request("the Idempotency-Key header is not visible ASCII")))?;
            state.host.ask_idempotent(id, &method, payload.to_vec(), key).await?
        }
        None => state.host.ask(id, &method, payload.to_vec()).await?,
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], reply).into_response())
}

#[derive(Deserialize)]
struct InspectParams {
    from: Option<u64>,
    to: Option<u64>,
    limit: Option<usize>,
    to_version: Option<u64>,
    at: Option<String>,
    component_version: Option<u64>,
}

/// `GET /v1/actors/{type}/{key}/journal` lists events (`from`, `to`,
/// `limit`); `GET …/replay` computes the state at `to_version` or `at`
/// (RFC 3339 or ms since the epoch), optionally on `component_version`.
async fn inspect_actor(
    State(state): State<ApiState>,
    Path((actor_type, key, what)): Path<(String, String, String)>,
    Query(params): Query<InspectParams>,
) -> ApiResult<Response> {
    let id = ActorId::new(&actor_type, &key)?;
    match what.as_str() {
        "journal" => {
            let limit = params.limit.unwrap_or(crate::journal::MAX_LISTING);
            let page = state.host.journal(&id, params.from.unwrap_or(1), params.to, limit).await?;
            Ok(Json(page).into_response())
        }
        "replay" => {
            let target = match (params.to_version, params.at) {
                (Some(v), None) => crate::journal::ReplayTarget::Version(v),
                (None, Some(at)) => crate::journal::ReplayTarget::At(parse_time(&at)?),
                _ => {
                    return Err(ApiError(ActorError::bad_request(
                        "replay needs exactly one of `to_version` (an event version) or `at` (a time, RFC 3339)",
                    )));
                }
            };
            Ok(Json(state.host.replay(&id, target, params.component_version).await?).into_response())
        }
        other => Err(ApiError(ActorError::not_found(format!(
            "GET /v1/actors/{{type}}/{{key}}/{other}: only `journal` and `replay` can be read; methods are called with POST"
        )))),
    }
}

/// Milliseconds since the epoch from RFC 3339 (`2026-11-01T12:00:00Z`) or a number.
pub fn parse_time(s: &str) -> Result<i64, ActorError> {
    if let Ok(ms) = s.trim().parse::<i64>() {
        return Ok(ms);
    }
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| ActorError::bad_request(format!("bad time {s:?} (try 2026-11-01T12:00:00Z): {e}")))?;
    Ok(t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
}

async fn take_snapshot(State(state): State<ApiState>, Path((actor_type, key)): Path<(String, String)>) -> ApiResult<Json<serde_json::Value>> {
    let id = ActorId::new(&actor_type, &key)?;
    let version = state.host.snapshot(&id).await?;
    Ok(Json(json!({ "actor": id.to_string(), "version": version })))
}

async fn list_projections(State(state): State<ApiState>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(json!({ "projections": state.host.projections().await? })))
}

#[derive(Deserialize)]
struct NewProjection {
    name: String,
    source: String,
    target: String,
    method: Option<String>,
}

async fn create_projection(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let p: NewProjection = serde_json::from_slice(&body).map_err(|e| {
        ActorError::bad_request(format!("a projection is {{\"name\", \"source\", \"target\", \"method\"?}}: {e}"))
    })?;
    let def = crate::storage::ProjectionDef {
        name: p.name,
        source_type: p.source,
        target: p.target,
        method: p.method.unwrap_or_else(|| crate::journal::projection::DEFAULT_METHOD.to_string()),
    };
    let info = state.host.create_projection(def).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn delete_projection(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    state.host.delete_projection(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/jobs`: one job object, or an array of them (bulk).
async fn add_jobs(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let value: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| ActorError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let bulk = value.is_array();
    let specs: Vec<crate::jobs::JobSpec> = if bulk {
        serde_json::from_value(value)
    } else {
        serde_json::from_value(value).map(|one| vec![one])
    }
    .map_err(|e| {
        ActorError::bad_request(format!(
            "a job is {{\"target\", \"method\", \"payload\"?, \"run_at\"? | \"delay_ms\"? | \"cron\"?, \"time_zone\"?, \
             \"max_attempts\"?, \"backoff_ms\"?, \"max_backoff_ms\"?, \"timeout_ms\"?, \"priority\"?, \"queue\"?, \
             \"idempotency_key\"?, \"catch_up\"?}}: {e}"
        ))
    })?;
    let requests = specs.into_iter().map(crate::jobs::JobSpec::into_request).collect::<Result<Vec<_>, _>>()?;
    let count = requests.len();
    let jobs = state.host.add_jobs(requests).await?;
    Ok(if bulk {
        (StatusCode::CREATED, Json(json!({ "count": count, "ids": jobs.iter().map(|j| &j.id).collect::<Vec<_>>() }))).into_response()
    } else {
        (StatusCode::CREATED, Json(&jobs[0])).into_response()
    })
}

#[derive(Deserialize)]
struct JobQuery {
    status: Option<String>,
    target: Option<String>,
    limit: Option<usize>,
}

fn parse_status(status: Option<&str>) -> Result<Option<crate::storage::jobs::JobStatus>, ActorError> {
    status.map(|s| s.parse().map_err(ActorError::bad_request)).transpose()
}

async fn list_jobs(State(state): State<ApiState>, Query(q): Query<JobQuery>) -> ApiResult<Json<serde_json::Value>> {
    let status = parse_status(q.status.as_deref())?;
    let jobs = state.host.jobs(status, q.target.as_deref(), q.limit.unwrap_or(1000)).await?;
    Ok(Json(json!({ "jobs": jobs })))
}

async fn show_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.host.job(&id).await?).into_response())
}

async fn cancel_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.host.cancel_job(&id).await?).into_response())
}

async fn retry_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.host.retry_job(&id).await?).into_response())
}

async fn purge_jobs(State(state): State<ApiState>, Query(q): Query<JobQuery>) -> ApiResult<Json<serde_json::Value>> {
    let Some(status) = parse_status(q.status.as_deref())? else {
        return Err(ApiError(ActorError::bad_request("purging needs `?status=dead` (or succeeded, cancelled)")));
    };
    Ok(Json(json!({ "purged": state.host.purge_jobs(status).await? })))
}

#[derive(Deserialize)]
struct OutboxQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/outbox?status=pending|dead`: messages waiting, in flight
/// (`lease_until_ms` set) and dead, with their last error.
async fn list_messages(State(state): State<ApiState>, Query(q): Query<OutboxQuery>) -> ApiResult<Json<serde_json::Value>> {
    let messages = state.host.outbox_messages(q.status.as_deref(), q.limit.unwrap_or(1000)).await?;
    Ok(Json(json!({ "messages": messages })))
}

async fn retry_message(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Json<serde_json::Value>> {
    state.host.retry_message(&id).await?;
    Ok(Json(json!({ "id": id, "status": "pending" })))
}

/// `DELETE /v1/outbox?status=dead`: purges the dead-letter list.
async fn purge_messages(State(state): State<ApiState>, Query(q): Query<OutboxQuery>) -> ApiResult<Json<serde_json::Value>> {
    if q.status.as_deref() != Some("dead") {
        return Err(ApiError(ActorError::bad_request("purging needs `?status=dead`: only dead messages can be purged")));
    }
    Ok(Json(json!({ "purged": state.host.purge_dead_messages().await? })))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.host.metrics_text();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
