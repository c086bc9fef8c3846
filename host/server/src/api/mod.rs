//! The HTTP API: deploy components, call actors, inspect the host. Its
//! bodies are the structs of [`types`], which the CLI reads back.
//!
//! Every error is a JSON body `{"error": {"kind": ..., "message": ...}}`
//! with a 4xx status when the caller can fix it and a 5xx when the host or
//! its store failed.

pub mod types;
mod workflows;

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
use self::types::{
    ActorList, ClusterView, ComponentList, ComponentSummary, HostView, JobAdded, JobList, JobsAdded, MessageList, MigrationRequest, MessageRetried, NewProjection, ProjectionList,
    Purged, RolledBack, SnapshotTaken, VersionList,
};
use crate::{Manifest, Node};

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
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::UnknownOutcome => StatusCode::GATEWAY_TIMEOUT,
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
    node: Node,
    access: std::sync::Arc<ApiConfig>,
}

/// Largest JSON body of the routes that take one as a whole (jobs,
/// projections): a bulk of jobs fits, a runaway upload does not. Calls and
/// deploys have their own limits (`--max-payload`, [`MAX_COMPONENT_BYTES`]).
pub const MAX_JSON_BODY: usize = 64 << 20;

/// Most jobs one `POST /v1/jobs` may add.
pub const MAX_JOBS_PER_REQUEST: usize = 100_000;

/// How long a client has to send a request's headers before its connection
/// is closed: a connection that never finishes them (before it could even
/// be authenticated) must not stay open for ever.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Most connections served at once; more are closed on accept, so a flood
/// of idle connections cannot exhaust the host's file descriptors.
pub const MAX_CONNECTIONS: usize = 4096;

/// Who may drive the API: the token, and the host names and origins that
/// requests may come from (see [`router_with`]).
#[derive(Debug, Clone, Default)]
pub struct ApiConfig {
    /// With a token, every `/v1` route and `/metrics` need
    /// `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Names that a request's `Host` may carry besides loopback names
    /// (`localhost`, `127.0.0.1`, `[::1]`) and the listen address
    /// (`quark serve --allow-host`).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://console.example.com`) whose pages may call the
    /// API, besides the host's own (`quark serve --allow-origin`).
    pub allowed_origins: Vec<String>,
    /// The address the API listens on: its IP is an allowed `Host`, and
    /// on an unspecified address (`0.0.0.0`, behind a token) any is.
    pub listen: Option<SocketAddr>,
}

/// The API's routes over `node`. With `token`, every `/v1` route (and
/// `/metrics`) needs `Authorization: Bearer <token>`.
pub fn router(node: Node, token: Option<String>) -> Router {
    router_with(node, ApiConfig { token, ..ApiConfig::default() })
}

/// The API's routes over `node`, open to the requests `access` lets in.
///
/// Every route, token or not, refuses with 403 a request whose `Origin`
/// is another site's (a page on another origin must not run turns through
/// a browser that can reach the host) or whose `Host` is not a name this
/// host serves (DNS rebinding). Every error, axum's own included, is a
/// JSON body `{"error": {"kind", "message"}}`.
pub fn router_with(node: Node, access: ApiConfig) -> Router {
    let state = ApiState { node, access: std::sync::Arc::new(access) };
    let v1 = Router::new()
        .route("/cluster", get(cluster))
        .route("/cluster/migrations", post(migrate))
        .route("/cluster/graph", get(cluster_graph))
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
        .merge(workflows::routes());
    let guarded = Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(guarded)
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { ApiError(ActorError::not_found("no such route; see the README for the API")) })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_JSON_BODY))
        .layer(middleware::from_fn_with_state(state.clone(), same_site_only))
        .layer(middleware::map_response(errors_as_json))
        .with_state(state)
}

/// True for addresses only this machine can reach.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().is_loopback()
}

/// Serves the API on `listener` until the future is dropped. Refuses a
/// non-loopback address without a token: the admin routes would be open.
pub async fn serve(node: Node, listener: tokio::net::TcpListener, token: Option<String>) -> anyhow::Result<()> {
    serve_with(node, listener, ApiConfig { token, ..ApiConfig::default() }).await
}

/// Like [`serve`], with the host names and origins of `access`. Each
/// connection must send its headers within [`HEADER_READ_TIMEOUT`]; at most
/// [`MAX_CONNECTIONS`] are served at once.
pub async fn serve_with(node: Node, listener: tokio::net::TcpListener, mut access: ApiConfig) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if !is_loopback(&addr) && access.token.as_deref().is_none_or(str::is_empty) {
        anyhow::bail!(
            "refusing to listen on {addr} without a token: anyone who can reach it could deploy code. \
             Pass --token (or QUARK_TOKEN), or listen on 127.0.0.1"
        );
    }
    access.listen = Some(addr);
    let app = router_with(node, access);
    let connections = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::warn!(max = MAX_CONNECTIONS, "too many connections; closing a new one");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "a connection ended with an error");
            }
        });
    }
}

/// Constant-time equality of two secrets (of any lengths): compares their
/// SHA-256 digests byte by byte without stopping early, so the time taken
/// says nothing about how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.iter().zip(b.iter()).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.access.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| same_secret(p, token)) {
            return ApiError(ActorError::unauthorized("this host needs `Authorization: Bearer <token>` (quark --token)"))
                .into_response();
        }
    }
    next.run(request).await
}

/// The host part of a `Host` header or an origin's authority, lowercase,
/// without port or IPv6 brackets.
fn host_name(authority: &str) -> String {
    let name = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit())).map_or(authority, |(h, _)| h),
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl ApiConfig {
    /// Whether a request naming `authority` in its `Host` is for this host.
    fn serves_host(&self, authority: &str) -> bool {
        let name = host_name(authority);
        if name == "localhost" || name.ends_with(".localhost") {
            return true;
        }
        if let Ok(ip) = name.parse::<std::net::IpAddr>()
            && (ip.is_loopback() || self.listen.is_some_and(|l| l.ip() == ip))
        {
            return true;
        }
        if self.listen.is_some_and(|l| l.ip().is_unspecified()) && self.allowed_hosts.is_empty() {
            // Listening on every address (behind a token): any name.
            return true;
        }
        self.allowed_hosts.iter().any(|h| host_name(h) == name)
    }
}

/// Refuses cross-site requests (an `Origin` other than the host's own or
/// an allowed one) and requests for names this host does not serve (DNS
/// rebinding), with 403, before anything else runs.
async fn same_site_only(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).or_else(|| request.uri().authority().map(|a| a.as_str()));
    if let Some(host) = host
        && !state.access.serves_host(host)
    {
        return ApiError(ActorError::forbidden(format!(
            "this host does not serve the name {host:?} (a DNS-rebinding guard); allow it with `quark serve --allow-host NAME`"
        )))
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = origin
            .split_once("://")
            .is_some_and(|(_, authority)| host.is_some_and(|h| authority.eq_ignore_ascii_case(h)));
        let allowed = state.access.allowed_origins.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin));
        if !own && !allowed {
            return ApiError(ActorError::forbidden(format!(
                "requests from the web origin {origin:?} are refused (cross-site); allow it with `quark serve --allow-origin ORIGIN`"
            )))
            .into_response();
        }
    }
    next.run(request).await
}

/// Turns every error response that is not JSON yet (axum's rejections of a
/// bad query string or path segment, 405 with an empty body, a body over
/// the limit) into `{"error": {"kind", "message"}}`.
async fn errors_as_json(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, 64 << 10).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let (kind, fallback) = match status {
        StatusCode::NOT_FOUND => (ErrorKind::NotFound, "no such route; see the README for the API".to_string()),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorKind::BadRequest,
            match &allow {
                Some(allow) => format!("this route does not take that HTTP method; it takes {allow}"),
                None => "this route does not take that HTTP method".to_string(),
            },
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorKind::PayloadTooLarge, format!("the request body is over the limit of {MAX_JSON_BODY} bytes")),
        StatusCode::UNAUTHORIZED => (ErrorKind::Unauthorized, "unauthorized".to_string()),
        StatusCode::FORBIDDEN => (ErrorKind::Forbidden, "forbidden".to_string()),
        s if s.is_client_error() => (ErrorKind::BadRequest, format!("bad request ({s})")),
        s => (ErrorKind::Internal, format!("the host failed ({s})")),
    };
    let message = if text.is_empty() || status == StatusCode::METHOD_NOT_ALLOWED { fallback } else { text };
    // axum answers a JSON body of the wrong shape with 422: it is the
    // caller's mistake, so the same 400 `bad-request` as a body that is not
    // JSON (422 is for a valid request the actor refused). 405 keeps its
    // status and `Allow` header.
    if kind == ErrorKind::BadRequest && status != StatusCode::METHOD_NOT_ALLOWED {
        parts.status = StatusCode::BAD_REQUEST;
    }
    let body = serde_json::to_vec(&json!({ "error": { "kind": kind.as_str(), "message": message } })).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
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
    stateless_workers: Option<String>,
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
        .with_journal(params.snapshot_every.as_deref(), params.retention.as_deref())?
        .with_stateless_workers(params.stateless_workers.as_deref())?;
    let bytes = read_body(body, MAX_COMPONENT_BYTES, "the component").await?;
    let outcome = state.node.host().deploy(&actor_type, bytes.to_vec(), manifest).await?;
    if outcome.created {
        state.node.versions_changed().await;
    }
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(outcome)).into_response())
}

async fn list_components(State(state): State<ApiState>) -> ApiResult<Json<ComponentList>> {
    let mut components = Vec::new();
    for actor_type in state.node.host().actor_types() {
        let active = state.node.host().active_version(&actor_type)?;
        components.push(ComponentSummary { actor_type, active_version: active.version, hash: active.hash });
    }
    Ok(Json(ComponentList { components }))
}

async fn versions(State(state): State<ApiState>, Path(actor_type): Path<String>) -> ApiResult<Json<VersionList>> {
    let (versions, active_version) = state.node.host().versions(&actor_type).await?;
    Ok(Json(VersionList { actor_type, active_version, versions }))
}

async fn rollback(State(state): State<ApiState>, Path(actor_type): Path<String>) -> ApiResult<Json<RolledBack>> {
    let version = state.node.host().rollback(&actor_type).await?;
    state.node.versions_changed().await;
    Ok(Json(RolledBack { actor_type, active_version: version.version, version }))
}

async fn cluster(State(state): State<ApiState>) -> ApiResult<Json<ClusterView>> {
    let Some(cluster) = state.node.cluster() else {
        // A host on its own: itself, from what it knows.
        let now = crate::storage::now_ms();
        let this = HostView {
            id: "local".into(),
            api: state.access.listen.map(|a| a.to_string()).unwrap_or_default(),
            peer: String::new(),
            state: crate::storage::cluster::MemberState::Active,
            incarnation: 0,
            started_at_ms: state.node.started_at_ms(),
            last_heartbeat_ms: now,
            heartbeat_age_ms: 0,
            activations: state.node.host().actors().len() as u64,
            memory: state.node.host().memory(),
        };
        return Ok(Json(ClusterView { mode: "single-host".into(), this: this.id.clone(), hosts: vec![this] }));
    };
    let members = cluster.members().await.map_err(ActorError::from)?;
    let mut hosts: Vec<HostView> = members.iter().map(HostView::from).collect();
    for host in hosts.iter_mut().filter(|h| h.id == cluster.id()) {
        host.memory = state.node.host().memory();
        host.activations = host.memory.types.iter().map(|t| t.activations).sum();
    }
    Ok(Json(ClusterView { mode: "cluster".into(), this: cluster.id().to_string(), hosts }))
}

/// `GET /v1/cluster/graph`: the actor-to-actor call graph the hosts
/// sampled, with the share of calls that crossed hosts. A host on its own
/// routes every call to itself: nothing to show.
async fn cluster_graph(State(state): State<ApiState>) -> Json<crate::cluster::locality::GraphView> {
    match state.node.cluster() {
        Some(cluster) => Json(cluster.graph().await),
        None => Json(crate::cluster::locality::GraphView { remote_fraction: 0.0, hosts: Vec::new(), edges: Vec::new(), exchanges: Vec::new() }),
    }
}

/// `POST /v1/cluster/migrations`: moves an actor to another host. Any
/// host takes it: the one that serves the actor moves it; another passes
/// the request on to that one's API (with the caller's credentials).
async fn migrate(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    let asked: MigrationRequest = serde_json::from_slice(&body)
        .map_err(|e| ActorError::bad_request(format!("a migration is {{\"actor\": \"type/key\", \"to\": \"host-id\"}}: {e}")))?;
    let Some(cluster) = state.node.cluster() else {
        return Err(ActorError::bad_request("this host runs on its own (no shared store): there is no other host to move an actor to").into());
    };
    let actor = ActorId::parse(&asked.actor)?;
    match cluster.owner_of(&actor).await? {
        Some((owner, _)) if owner == cluster.id() => {
            let moved = cluster.migrate(&actor, &asked.to, crate::cluster::migration::MIGRATION_DRAIN).await?;
            Ok(Json(moved).into_response())
        }
        Some((owner, api)) if !api.is_empty() => {
            let mut forward = reqwest::Client::new().post(format!("http://{api}/v1/cluster/migrations")).header("content-type", "application/json").body(body);
            if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
                forward = forward.header(axum::http::header::AUTHORIZATION, auth.as_bytes());
            }
            let reply = forward.send().await.map_err(|e| ActorError::unavailable(format!("passing the migration on to host {owner}, which serves {actor}: {e}")))?;
            let status = StatusCode::from_u16(reply.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let bytes = reply.bytes().await.map_err(|e| ActorError::unknown_outcome(format!("host {owner}'s answer to the migration was cut off: {e}")))?;
            Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response())
        }
        Some((owner, _)) => Err(ActorError::unavailable(format!("{actor} is served by host {owner}, whose API address this host does not know yet; retry")).into()),
        None => Err(ActorError::not_found(format!("no host serves {actor}: it is placed when it is next called")).into()),
    }
}

async fn actors(State(state): State<ApiState>) -> Json<ActorList> {
    Json(ActorList { actors: state.node.host().actors() })
}

async fn call(
    State(state): State<ApiState>,
    Path((actor_type, key, method)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let id = ActorId::new(&actor_type, &key)?;
    let limit = state.node.host().config().max_payload;
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
            state.node.host().ask_idempotent(id, &method, payload.to_vec(), key).await?
        }
        None => state.node.host().ask(id, &method, payload.to_vec()).await?,
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
            let limit = params.limit.unwrap_or(crate::runtime::journal::MAX_LISTING);
            let page = state.node.host().journal(&id, params.from.unwrap_or(1), params.to, limit).await?;
            Ok(Json(page).into_response())
        }
        "replay" => {
            let target = match (params.to_version, params.at) {
                (Some(v), None) => crate::runtime::journal::ReplayTarget::Version(v),
                (None, Some(at)) => crate::runtime::journal::ReplayTarget::At(quark_core::time::parse_time(&at)?),
                _ => {
                    return Err(ApiError(ActorError::bad_request(
                        "replay needs exactly one of `to_version` (an event version) or `at` (a time, RFC 3339)",
                    )));
                }
            };
            Ok(Json(state.node.host().replay(&id, target, params.component_version).await?).into_response())
        }
        other => Err(ApiError(ActorError::not_found(format!(
            "GET /v1/actors/{{type}}/{{key}}/{other}: only `journal` and `replay` can be read; methods are called with POST"
        )))),
    }
}

async fn take_snapshot(State(state): State<ApiState>, Path((actor_type, key)): Path<(String, String)>) -> ApiResult<Json<SnapshotTaken>> {
    let id = ActorId::new(&actor_type, &key)?;
    let version = state.node.host().snapshot(&id).await?;
    Ok(Json(SnapshotTaken { actor: id.to_string(), version }))
}

async fn list_projections(State(state): State<ApiState>) -> ApiResult<Json<ProjectionList>> {
    Ok(Json(ProjectionList { projections: state.node.projections().list().await? }))
}

async fn create_projection(State(state): State<ApiState>, body: Bytes) -> ApiResult<Response> {
    let p: NewProjection = serde_json::from_slice(&body).map_err(|e| {
        ActorError::bad_request(format!("a projection is {{\"name\", \"source\", \"target\", \"method\"?}}: {e}"))
    })?;
    let def = crate::storage::ProjectionDef {
        name: p.name,
        source_type: p.source,
        target: p.target,
        method: p.method.unwrap_or_else(|| crate::projections::DEFAULT_METHOD.to_string()),
    };
    let info = state.node.projections().create(def).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

async fn delete_projection(State(state): State<ApiState>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    state.node.projections().delete(&name).await?;
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
    if specs.len() > MAX_JOBS_PER_REQUEST {
        return Err(ApiError(ActorError::limit_exceeded(format!(
            "{} jobs in one request; at most {MAX_JOBS_PER_REQUEST}: send them in several",
            specs.len()
        ))));
    }
    let requests = specs.into_iter().map(crate::jobs::JobSpec::into_request).collect::<Result<Vec<_>, _>>()?;
    let count = requests.len();
    let (jobs, added) = state.node.jobs().add_counted(requests).await?;
    Ok(if bulk {
        let body = JobsAdded { count, added, ids: jobs.into_iter().map(|j| j.id).collect() };
        (StatusCode::CREATED, Json(body)).into_response()
    } else {
        // An idempotency key that names a stored job: that job, 200, `created: false`.
        let created = added > 0;
        let job = jobs.into_iter().next().ok_or_else(|| ActorError::internal("adding one job returned none"))?;
        (if created { StatusCode::CREATED } else { StatusCode::OK }, Json(JobAdded { job, created })).into_response()
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

async fn list_jobs(State(state): State<ApiState>, Query(q): Query<JobQuery>) -> ApiResult<Json<JobList>> {
    let status = parse_status(q.status.as_deref())?;
    let jobs = state.node.jobs().list(status, q.target.as_deref(), q.limit.unwrap_or(1000)).await?;
    Ok(Json(JobList { jobs }))
}

async fn show_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.node.jobs().get(&id).await?).into_response())
}

async fn cancel_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.node.jobs().cancel(&id).await?).into_response())
}

async fn retry_job(State(state): State<ApiState>, Path(id): Path<String>) -> ApiResult<Response> {
    Ok(Json(state.node.jobs().retry(&id).await?).into_response())
}

async fn purge_jobs(State(state): State<ApiState>, Query(q): Query<JobQuery>) -> ApiResult<Json<Purged>> {
    let Some(status) = parse_status(q.status.as_deref())? else {
        return Err(ApiError(ActorError::bad_request("purging needs `?status=dead` (or succeeded, cancelled)")));
    };
    Ok(Json(Purged { purged: state.node.jobs().purge(status).await? }))
}

#[derive(Deserialize)]
struct OutboxQuery {
    status: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/outbox?status=pending|dead`: messages waiting, in flight
/// (`lease_until_ms` set) and dead, with their last error.
async fn list_messages(State(state): State<ApiState>, Query(q): Query<OutboxQuery>) -> ApiResult<Json<MessageList>> {
    let messages = state.node.outbox().messages(q.status.as_deref(), q.limit.unwrap_or(1000)).await?;
    Ok(Json(MessageList { messages }))
}

/// Query of `POST /v1/outbox/{id}/retry`.
#[derive(Debug, Deserialize)]
struct RetryMessageQuery {
    /// The sending actor: ids are unique per sender. Without it, every
    /// dead message with the id is retried.
    sender: Option<String>,
}

/// `POST /v1/outbox/{id}/retry[?sender=type/key]`: dead messages due again.
async fn retry_message(
    State(state): State<ApiState>,
    Path(id): Path<String>,
    Query(q): Query<RetryMessageQuery>,
) -> ApiResult<Json<MessageRetried>> {
    let retried = state.node.outbox().retry_message(&id, q.sender.as_deref()).await?;
    Ok(Json(MessageRetried { id, status: "pending".into(), retried }))
}

/// `DELETE /v1/outbox?status=dead`: purges the dead-letter list.
async fn purge_messages(State(state): State<ApiState>, Query(q): Query<OutboxQuery>) -> ApiResult<Json<Purged>> {
    if q.status.as_deref() != Some("dead") {
        return Err(ApiError(ActorError::bad_request("purging needs `?status=dead`: only dead messages can be purged")));
    }
    Ok(Json(Purged { purged: state.node.outbox().purge_dead_messages().await? }))
}

async fn metrics(State(state): State<ApiState>) -> Response {
    let text = state.node.metrics_text();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}
