//! The HTTP API's router with its guards, driven in-process (`tower::ServiceExt::oneshot`) with a fake core task:
//! every bad request is a JSON 4xx (axum's own rejections included), no CORS grant, refusals are counted.

use super::api_link::{self, CoreRequest};
use super::events_hub::EventHub;
use super::http::{router, ApiState};
use super::http_guard::{Guard, GuardConfig};
use super::metrics::{Metrics, ScrapeSnapshot};
use crate::core::CommandError;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use tower::ServiceExt;

const TOKEN: &str = "t0k3n-for-router-tests-0123456789";
const HOST: &str = "127.0.0.1:8080";

/// The router on 127.0.0.1:8080 with a core task that knows no lots and refuses every command as a dial refusal.
fn app() -> (axum::Router, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let (client, mut port) = api_link::link(EventHub::new(), metrics.clone());
    tokio::spawn(async move {
        while let Some(req) = port.rx.recv().await {
            match req {
                CoreRequest::Command { reply, .. } => {
                    let _ = reply.send(Err(CommandError::DialNotAllowed { to: "sip:19005550100@127.0.0.3".into(), reason: "not allowed".into() }));
                }
                CoreRequest::Lots { reply } => drop(reply.send(Vec::new())),
                CoreRequest::Lot { reply, .. } => drop(reply.send(None)),
                CoreRequest::Calls { reply } => drop(reply.send(Vec::new())),
                CoreRequest::Scrape { reply } => drop(reply.send(ScrapeSnapshot::default())),
                CoreRequest::Ready { reply } => drop(reply.send(None)),
                CoreRequest::Reload { reply } => drop(reply.send(Err((422, "invalid configuration: lot name \"a\" is used twice".into())))),
            }
        }
    });
    let guard = Guard::new(GuardConfig {
        token: TOKEN.into(),
        listener: HOST.parse().unwrap(),
        hosts: Vec::new(),
        open_metrics: true,
        max_body_bytes: 64,
        auth_failures_per_minute: 10,
    });
    let state = ApiState { core: client, hub: EventHub::new(), metrics: metrics.clone(), guard: Arc::new(guard), draining: Arc::new(AtomicBool::new(false)) };
    (router(state), metrics)
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri).header(header::HOST, HOST);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut r = b.body(Body::from(body.to_string())).unwrap();
    r.extensions_mut().insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    r
}

const AUTH: (&str, &str) = ("authorization", "Bearer t0k3n-for-router-tests-0123456789");
const JSON: (&str, &str) = ("content-type", "application/json");

/// Status, JSON body (panics when the body is not JSON) and the response.
async fn send(app: &axum::Router, r: Request<Body>) -> (StatusCode, serde_json::Value, Response) {
    let resp = app.clone().oneshot(r).await.unwrap();
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let status = parts.status;
    assert!(parts.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "no CORS grant");
    let v: serde_json::Value = if status.is_success() && !parts.headers.get(header::CONTENT_TYPE).is_some_and(|c| c.as_bytes().starts_with(b"application/json")) {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
    };
    (status, v, Response::from_parts(parts, Body::empty()))
}

#[tokio::test]
async fn axum_rejections_are_json_4xx() {
    let (app, _) = app();
    let (s, v, r) = send(&app, req("GET", "/v1/orbits/701/unpark", &[AUTH], "")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")), "{v}");
    assert!(r.headers().get(header::ALLOW).is_some(), "405 keeps its Allow header");
    let (s, v, _) = send(&app, req("GET", "/v1/events?last_event_id=abc", &[AUTH], "")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    assert!(v["cause"].as_str().is_some_and(|c| !c.is_empty()), "{v}");
    let (s, v, _) = send(&app, req("GET", "/v1/lots/%FF/orbits", &[AUTH], "")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, JSON], "{\"to\":")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("bad_request")), "{v}");
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, JSON], "{\"to\":\"sip:a@b\",\"x\":1}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "unknown fields: {v}");
    let (s, v, _) = send(&app, req("GET", "/v2/anything", &[], "")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let (s, _, _) = send(&app, req("OPTIONS", "/v1/lots", &[("origin", "http://attacker.example"), ("access-control-request-method", "POST")], "")).await;
    assert!(s.is_client_error(), "a CORS preflight is not granted: {s}");
    let (s, _, _) = send(&app, req("GET", "/v1/lots", &[AUTH], "")).await;
    assert_eq!(s, StatusCode::OK);
}

/// The attack, step by step: each guard answers with its own 4xx and counts it.
#[tokio::test]
async fn the_cross_site_unpark_is_refused_at_every_step_and_counted() {
    let (app, metrics) = app();
    let attack = [("content-type", "text/plain"), ("origin", "http://attacker.example")];
    let mut rebound = req("POST", "/v1/orbits/701/unpark", &attack, "{\"to\":\"sip:19005550100@127.0.0.3\"}");
    rebound.headers_mut().insert(header::HOST, "rebind.attacker.example:8080".parse().unwrap());
    let (s, v, _) = send(&app, rebound).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::MISDIRECTED_REQUEST, Some("misdirected_request")), "{v}");
    let (s, v, r) = send(&app, req("POST", "/v1/orbits/701/unpark", &attack, "{\"to\":\"sip:19005550100@127.0.0.3\"}")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{v}");
    assert!(r.headers().get(header::WWW_AUTHENTICATE).is_some());
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, attack[0]], "{\"to\":\"sip:19005550100@127.0.0.3\"}")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::UNSUPPORTED_MEDIA_TYPE, Some("unsupported_media_type")), "{v}");
    let big = format!("{{\"to\":\"sip:{}@127.0.0.3\"}}", "1".repeat(100));
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, JSON], &big)).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::PAYLOAD_TOO_LARGE, Some("too_large")), "no Content-Length, the body itself is capped: {v}");
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, JSON, ("content-length", "1000")], "")).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    let (s, v, _) = send(&app, req("POST", "/v1/orbits/701/unpark", &[AUTH, JSON], "{\"to\":\"sip:19005550100@127.0.0.3\"}")).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::FORBIDDEN, Some("dial_not_allowed")), "{v}");
    for _ in 0..10 {
        send(&app, req("GET", "/v1/lots", &[("authorization", "Bearer guess")], "")).await;
    }
    let (s, _, r) = send(&app, req("GET", "/v1/lots", &[AUTH], "")).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get(header::RETRY_AFTER).is_some());

    let text = metrics.encode(&ScrapeSnapshot::default());
    for (reason, n) in [("forbidden_host", 1), ("unauthorized", 11), ("unsupported_media_type", 1), ("too_large", 2), ("dial_not_allowed", 1), ("rate_limited", 1)] {
        let line = format!("parkd_http_refusals_total{{reason=\"{reason}\"}} {n}");
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
}

/// `POST /v1/reload` needs the token and a JSON (or empty) body; a refused reload is a 422 with the reason.
#[tokio::test]
async fn reload_is_a_guarded_post_and_an_invalid_config_is_a_422_with_the_reason() {
    let (app, _) = app();
    let (s, _, _) = send(&app, req("POST", "/v1/reload", &[JSON], "")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "token-protected");
    let (s, _, _) = send(&app, req("POST", "/v1/reload", &[AUTH], "")).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "a cross-site form cannot trigger it");
    let (s, v, _) = send(&app, req("POST", "/v1/reload", &[AUTH, JSON], "")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"], "invalid_config");
    assert!(v["cause"].as_str().unwrap().contains("used twice"), "{v}");
}

#[tokio::test]
async fn hangup_all_is_a_guarded_post_that_reaches_the_core() {
    let (app, _) = app();
    let (s, _, _) = send(&app, req("POST", "/v1/calls/hangup-all", &[JSON], "")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "token-protected");
    let (s, _, _) = send(&app, req("POST", "/v1/calls/hangup-all", &[AUTH], "")).await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "a cross-site form cannot trigger it");
    let (s, _, _) = send(&app, req("POST", "/v1/calls/hangup-all", &[AUTH, JSON], "{\"x\":1}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "no fields");
    // The stub core refuses every command with 403: the request got through to it.
    let (s, v, _) = send(&app, req("POST", "/v1/calls/hangup-all", &[AUTH, JSON], "")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _, _) = send(&app, req("POST", "/v1/calls/some-call-id/park", &[AUTH, JSON], "")).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the park route still matches call ids");
}
