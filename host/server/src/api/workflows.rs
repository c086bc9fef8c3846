//! `/v1/workflows`: start, status, signal, cancel, history, list, and the
//! replay check of a new version (see docs/workflows.md).

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, read_body};
use crate::error::ActorError;
use crate::runtime::workflow::{WorkflowCheck, WorkflowStatus, WorkflowSummary};

/// The workflow routes, under `/v1`.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/workflows", get(list).post(start))
        .route("/workflows/check", post(check))
        .route("/workflows/{id}", get(status))
        .route("/workflows/{id}/history", get(history))
        .route("/workflows/{id}/signals/{name}", post(signal))
        .route("/workflows/{id}/cancel", post(cancel))
}

#[derive(Deserialize)]
struct StartBody {
    #[serde(rename = "type")]
    workflow_type: String,
    id: String,
    #[serde(default)]
    input: serde_json::Value,
}

fn json_reply(reply: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}

/// `POST /v1/workflows` `{"type", "id", "input"}`: starts it, or returns
/// the instance with that id (an idempotent start).
async fn start(State(state): State<ApiState>, body: Body) -> ApiResult<Response> {
    let limit = state.node.host().config().max_payload;
    let bytes = read_body(body, limit, "the request body").await?;
    let body: StartBody = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError(ActorError::bad_request(format!("a workflow start is {{\"type\", \"id\", \"input\"}}: {e}"))))?;
    let input = serde_json::to_vec(&body.input).unwrap_or_default();
    Ok(json_reply(state.node.host().start_workflow(&body.workflow_type, &body.id, input).await?))
}

/// `GET /v1/workflows/{id}`: `{"id", "type", "version", "status", "output", "error", …}`.
async fn status(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json_reply(state.node.host().workflow_status(&id).await?))
}

/// `GET /v1/workflows/{id}/history`: each step of the current run.
async fn history(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json_reply(state.node.host().workflow_history(&id).await?))
}

/// `POST /v1/workflows/{id}/signals/{name}` with a JSON body (the signal's payload).
async fn signal(State(state): State<ApiState>, Path((id, name)): Path<(String, String)>, body: Body) -> ApiResult<Response> {
    let limit = state.node.host().config().max_payload;
    let bytes = read_body(body, limit, "the signal").await?;
    let payload = if bytes.is_empty() { b"null".to_vec() } else { bytes.to_vec() };
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&payload) {
        return Err(ApiError(ActorError::bad_request(format!("the signal's body is not valid JSON: {e}"))));
    }
    Ok(json_reply(state.node.host().signal_workflow(&id, &name, payload).await?))
}

/// `POST /v1/workflows/{id}/cancel`.
async fn cancel(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(json_reply(state.node.host().cancel_workflow(&id).await?))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    #[serde(rename = "type")]
    workflow_type: Option<String>,
}

/// The body of `GET /v1/workflows`.
#[derive(serde::Serialize)]
struct WorkflowList {
    workflows: Vec<WorkflowSummary>,
}

/// `GET /v1/workflows?status=running|completed|failed|cancelled&type=T`.
async fn list(State(state): State<ApiState>, Query(q): Query<ListQuery>) -> ApiResult<Response> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(WorkflowStatus::parse(s).ok_or_else(|| {
            ApiError(ActorError::bad_request(format!("no workflow status `{s}`: running, completed, failed or cancelled")))
        })?),
    };
    let workflows = state.node.host().list_workflows(status, q.workflow_type.as_deref()).await?;
    Ok(Json(WorkflowList { workflows }).into_response())
}

#[derive(Deserialize)]
struct CheckBody {
    #[serde(rename = "type")]
    workflow_type: String,
    version: u64,
}

/// `POST /v1/workflows/check` `{"type", "version"}`: replays the running
/// instances' histories against that version; the first divergence of each.
async fn check(State(state): State<ApiState>, Json(body): Json<CheckBody>) -> ApiResult<Json<WorkflowCheck>> {
    Ok(Json(state.node.host().check_workflow(&body.workflow_type, body.version).await?))
}
