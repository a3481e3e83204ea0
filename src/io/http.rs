//! The HTTP API (axum): lots and orbits as JSON, TAPI-style park / unpark / hang-up commands, the live event
//! stream (SSE), Prometheus metrics, health checks and the attendant page. Documented in `docs/api.md`.
//!
//! Every handler talks to the core through [`CoreClient`] (a channel to the core task); nothing here touches the
//! core or the media thread directly, and a slow HTTP client only ever waits on its own socket.

use super::api_link::{CoreClient, CoreRequest, CoreUnavailable};
use super::events_hub::EventHub;
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

/// Who may call the mutating endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer <token>` required.
    Token(String),
    /// No token configured and a loopback listener: mutating calls are open.
    OpenLoopback,
    /// No token configured on a non-loopback listener: mutating calls are refused (403).
    Closed,
}

impl Auth {
    /// The policy for `token` on a listener at `addr`.
    pub fn for_listener(token: Option<String>, addr: SocketAddr) -> Auth {
        match token.filter(|t| !t.is_empty()) {
            Some(t) => Auth::Token(t),
            None if addr.ip().is_loopback() => Auth::OpenLoopback,
            None => Auth::Closed,
        }
    }
}

/// Everything the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub core: CoreClient,
    pub hub: EventHub,
    pub metrics: Arc<Metrics>,
    pub auth: Auth,
    /// Set once parkd starts shutting down: `/readyz` answers 503.
    pub draining: Arc<AtomicBool>,
}

/// An API error: an HTTP status and a JSON body `{"error": "...", "cause": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    error: &'static str,
    cause: String,
}

impl ApiError {
    fn new(status: StatusCode, error: &'static str, cause: impl Into<String>) -> ApiError {
        ApiError { status, error, cause: cause.into() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.status, Json(serde_json::json!({ "error": self.error, "cause": self.cause }))).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer realm=\"parkd\""));
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
        let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = match e.http_status() {
            400 => "bad_request",
            404 => "not_found",
            409 => "conflict",
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
        .route("/v1/calls/:call_id/park", post(park_call))
        .route("/v1/orbits/:orbit/unpark", post(unpark))
        .route("/v1/orbits/:orbit", delete(hangup))
        .route("/v1/events", get(events))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(listener: tokio::net::TcpListener, state: ApiState, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Err(e) = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown).await {
        tracing::warn!(error = %e, "HTTP server stopped");
    }
}

/// Checks the bearer token of a mutating call: 401 without credentials, 403 with wrong ones.
fn authorize(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let token = match &state.auth {
        Auth::OpenLoopback => return Ok(()),
        Auth::Closed => {
            return Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "no [http] token is configured: mutating calls are refused on a non-loopback listener"))
        }
        Auth::Token(t) => t,
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "missing Authorization: Bearer <token>"));
    };
    let given = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let Some(given) = given else {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "the Authorization header must be Bearer <token>"));
    };
    if constant_time_eq(given.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "wrong bearer token"))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    if !s.core.ask(|reply| CoreRequest::Ready { reply }).await? {
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "draining: new parks are refused (SIGUSR1 toggles)"));
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
    let lots = s.core.ask(|reply| CoreRequest::Lots { reply }).await?;
    match lots.into_iter().find(|l| l.name == lot) {
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

async fn park_call(State(s): State<ApiState>, headers: HeaderMap, Path(call_id): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let b: ParkBody = json_body(&body)?;
    let out = run_command(&s, Command::ParkCall { call_id, orbit: b.orbit, lot: b.lot }).await?;
    Ok(Json(out).into_response())
}

async fn unpark(State(s): State<ApiState>, headers: HeaderMap, Path(orbit): Path<String>, body: Bytes) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let b: UnparkBody = json_body(&body)?;
    let Some(to) = b.to else {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_request", "body must be {\"to\": \"sip:...\"}"));
    };
    let out = run_command(&s, Command::Unpark { orbit, to }).await?;
    // 202: parkd is ringing the destination; the outcome arrives on /v1/events (recall_answered / recall_failed
    // with target "api_unpark").
    Ok((StatusCode::ACCEPTED, Json(out)).into_response())
}

async fn hangup(State(s): State<ApiState>, headers: HeaderMap, Path(orbit): Path<String>) -> Result<Response, ApiError> {
    authorize(&s, &headers)?;
    let out = run_command(&s, Command::Hangup { orbit }).await?;
    Ok(Json(out).into_response())
}

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
