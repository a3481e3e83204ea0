//! The HTTP API (axum): lots and orbits as JSON, TAPI-style park / unpark / hang-up commands, the live event
//! stream (SSE), Prometheus metrics, health checks and the attendant page. Documented in `docs/api.md`.
//!
//! Every request passes the guards of [`http_guard`] first (Host, bearer token, Content-Type, body size, rate
//! limit); every error is JSON. The security model is described in `docs/api.md`.
//!
//! Every handler talks to the core through [`CoreClient`] (a channel to the core task); nothing here touches the
//! core or the media thread directly, and a slow HTTP client only ever waits on its own socket.

use super::api_link::{CoreClient, CoreRequest, CoreUnavailable};
use super::events_hub::EventHub;
use super::http_guard::{self, Guard};
use super::metrics::Metrics;
use crate::core::{Command, CommandError, CommandOutcome};
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::{Stream, StreamExt};

/// The attendant page, embedded in the binary.
pub const ATTENDANT_HTML: &str = include_str!("attendant.html");

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub core: CoreClient,
    pub hub: EventHub,
    pub metrics: Arc<Metrics>,
    /// Host, token, Content-Type, size and rate checks (http_guard.rs).
    pub guard: Arc<Guard>,
    /// Set once parkd starts shutting down: `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
}

/// An API error: an HTTP status and a JSON body `{"error": "...", "cause": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    cause: String,
    retry_after: Option<u64>,
    refusal: Option<&'static str>,
}

/// Marks a response as a refusal (response extension): the guard middleware logs it as
/// `refused http source=<ip> reason=<reason>` and counts it in `parkd_http_refusals_total{reason}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused(pub &'static str);

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, cause: impl Into<String>) -> ApiError {
        ApiError { status, error, cause: cause.into(), retry_after: None, refusal: None }
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after = Some(secs);
        self
    }

    /// Marks it as a refusal for the log line and the counter.
    pub fn refused(mut self, reason: &'static str) -> ApiError {
        self.refusal = Some(reason);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.error, "cause": self.cause }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"parkd\""));
        }
        if let Some(secs) = self.retry_after {
            r.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if let Some(reason) = self.refusal {
            r.extensions_mut().insert(Refused(reason));
        }
        r
    }
}

impl From<CoreUnavailable> for ApiError {
    fn from(e: CoreUnavailable) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> ApiError {
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        if let CommandError::DialNotAllowed { .. } = e {
            return ApiError::new(status, "dial_not_allowed", e.to_string()).refused("dial_not_allowed");
        }
        if let CommandError::MediaCapacity { retry_after } = e {
            return ApiError::new(status, "unavailable", e.to_string()).retry_after(u64::from(retry_after));
        }
        let error = match e.http_status() {
            400 => "bad_request",
            404 => "not_found",
            409 => "conflict",
            422 => "invalid_config",
            _ => "unavailable",
        };
        ApiError::new(status, error, e.to_string())
    }
}

/// The router with every route; `state` is shared by all handlers.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/", get(|| async { Html(ATTENDANT_HTML) }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/lots", get(lots))
        .route("/v1/lots/:lot/orbits", get(lot_orbits))
        .route("/v1/calls", get(calls))
        .route("/v1/calls/hangup-all", post(hangup_all))
        .route("/v1/calls/:call_id/park", post(park_call))
        .route("/v1/orbits/:orbit/unpark", post(unpark))
        .route("/v1/orbits/:orbit", delete(hangup))
        .route("/v1/events", get(events))
        .route("/v1/reload", post(reload))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_guard::guard))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::warn!(error = %e, "HTTP server stopped");
    }
}

/// Every error answer is JSON `{"error","cause"}`: axum's own rejections (405, a path parameter or query that
/// does not parse, ...) come as plain text or empty and are rewritten here; their status and headers stay.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.map(|b| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("error");
    let error = reason.to_ascii_lowercase().replace([' ', '-'], "_");
    let cause = if text.is_empty() { reason.to_string() } else { text };
    let body = serde_json::json!({ "error": error, "cause": cause }).to_string();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// A JSON body (empty means `{}`), with a JSON 400 when it does not parse.
fn json_body<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("invalid JSON body: {e}")))
}

async fn readyz(State(s): State<ApiState>) -> Result<&'static str, ApiError> {
    if s.draining.load(Ordering::Relaxed) {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "draining"));
    }
    if let Some(why) = s.core.ask(|reply| CoreRequest::Ready { reply }).await? {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", why));
    }
    Ok("ready\n")
}

async fn metrics(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let snap = s.core.ask(|reply| CoreRequest::Scrape { reply }).await?;
    let text = s.metrics.encode(&snap);
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}

async fn lots(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let lots = s.core.ask(|reply| CoreRequest::Lots { reply }).await?;
    Ok(Json(lots).into_response())
}

async fn lot_orbits(State(s): State<ApiState>, Path(lot): Path<String>) -> Result<Response, ApiError> {
    // Only this lot is built on the core task (not every lot's every orbit).
    let name = lot.clone();
    let found = s.core.ask(|reply| CoreRequest::Lot { name, reply }).await?;
    match found {
        Some(l) => Ok(Json(l.orbits).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no lot named {lot:?}"))),
    }
}

async fn calls(State(s): State<ApiState>) -> Result<Response, ApiError> {
    let calls = s.core.ask(|reply| CoreRequest::Calls { reply }).await?;
    Ok(Json(calls).into_response())
}

/// `POST /v1/calls/{call_id}/park` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ParkBody {
    /// ParkDirect: this orbit. Absent: ParkIndirect (parkd chooses and answers the orbit).
    orbit: Option<String>,
    /// ParkIndirect into this lot (default: the lot the call came from).
    lot: Option<String>,
}

/// `POST /v1/orbits/{orbit}/unpark` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnparkBody {
    to: Option<String>,
}

async fn run_command(s: &ApiState, cmd: Command) -> Result<CommandOutcome, ApiError> {
    Ok(s.core.ask(|reply| CoreRequest::Command { cmd, reply }).await??)
}

async fn park_call(State(s): State<ApiState>, Path(call_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let b: ParkBody = json_body(&body)?;
    let out = run_command(&s, Command::ParkCall { call_id: call_id.into(), orbit: b.orbit.map(Into::into), lot: b.lot }).await?;
    Ok(Json(out).into_response())
}

async fn unpark(State(s): State<ApiState>, Path(orbit): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    let b: UnparkBody = json_body(&body)?;
    let Some(to) = b.to else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "body must be {\"to\": \"sip:...\"}"));
    };
    let out = run_command(&s, Command::Unpark { orbit: orbit.into(), to }).await?;
    // 202: parkd is ringing the destination; the outcome arrives on /v1/events (recall_answered / recall_failed
    // with target "api_unpark").
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

async fn hangup(State(s): State<ApiState>, Path(orbit): Path<String>) -> Result<Response, ApiError> {
    let out = run_command(&s, Command::Hangup { orbit: orbit.into() }).await?;
    Ok(Json(out).into_response())
}

/// `POST /v1/calls/hangup-all`: the deliberate "hang up everything" (a restart keeps every call; issue 17).
async fn hangup_all(State(s): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let _: Empty = json_body(&body)?;
    let out = run_command(&s, Command::HangupAll).await?;
    Ok(Json(out).into_response())
}

/// `POST /v1/reload` (issue 21): reads the configuration file again and applies it, as SIGHUP does. 200 with what
/// changed (`lots_added`, `lots_changed`, `lots_removed`, `orbits_retired`, `needs_restart`); 422 with the reason
/// when the file is invalid (nothing changes); 409 when there is no file or, in a cluster, the lots changed.
async fn reload(State(s): State<ApiState>, body: Bytes) -> Result<Response, ApiError> {
    let _: Empty = json_body(&body)?;
    match s.core.ask(|reply| CoreRequest::Reload { reply }).await? {
        Ok(report) => Ok(Json(serde_json::json!({ "result": "reloaded", "lots_added": report.lots_added, "lots_changed": report.lots_changed, "lots_removed": report.lots_removed, "orbits_retired": report.orbits_retired, "needs_restart": report.needs_restart })).into_response()),
        Err((status, cause)) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let error = if status == StatusCode::UNPROCESSABLE_ENTITY { "invalid_config" } else { "conflict" };
            Err(ApiError::new(status, error, cause))
        }
    }
}

/// A body that must be empty or `{}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

#[derive(Debug, Default, Deserialize)]
struct EventsQuery {
    /// Resume after this id (for clients that cannot set the `Last-Event-ID` header).
    last_event_id: Option<u64>,
}

/// `GET /v1/events`: SSE with increasing ids; `Last-Event-ID` (or `?last_event_id=`) replays the kept events
/// after that id first. A client that lags behind the broadcast skips what it missed.
async fn events(State(s): State<ApiState>, headers: HeaderMap, Query(q): Query<EventsQuery>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok()).or(q.last_event_id);
    let (backlog, rx) = s.hub.subscribe_after(last);
    let replayed_up_to = backlog.last().map(|e| e.id).unwrap_or(0);
    let live = BroadcastStream::new(rx).filter_map(|r| r.ok()).filter(move |e| e.id > replayed_up_to);
    let stream = tokio_stream::iter(backlog)
        .chain(live)
        .map(|e| Ok(Event::default().id(e.id.to_string()).event(e.name()).data(e.json())));
    Sse::new(stream).keep_alive(KeepAlive::default())
}
