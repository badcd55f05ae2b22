//! The operations endpoint: `/healthz` (the process is alive), `/readyz`
//! (connected to NATS and holding issuer keys) and `/metrics` (Prometheus).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use crate::metrics::Metrics;
use crate::service::live::Live;
use crate::service::readiness::Readiness;
use crate::service::ServiceError;

#[derive(Clone)]
pub(super) struct HttpState {
    pub metrics: Arc<Metrics>,
    pub live: Arc<Live>,
    pub readiness: Arc<Readiness>,
}

pub(super) fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Binds first, so a busy port is a startup error rather than a log line;
/// `key` names the setting in it.
pub(super) async fn bind(
    addr: SocketAddr,
    key: &str,
) -> Result<tokio::net::TcpListener, ServiceError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Http(format!("{key} {addr}: {e}")))
}

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let named = crate::service::http_serve::Listener {
        key: "http.listen",
        label: "http",
        metrics: state.metrics.clone(),
    };
    crate::service::http_serve::serve(listener, router(state), shutdown, named).await;
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<HttpState>) -> Response {
    let nats = s.readiness.nats_connected();
    // Ready means every configured issuer can be verified against: a token
    // from an issuer whose keys are missing would be refused.
    let issuers = s.live.issuer_keys();
    let keys = issuers.iter().all(|(_, loaded)| *loaded);
    let per_issuer: serde_json::Map<String, serde_json::Value> = issuers
        .into_iter()
        .map(|(name, loaded)| (name, loaded.into()))
        .collect();
    // Without the grants bucket read once, users would miss grants made there.
    let kv = s.live.grants().is_none_or(|(_, store)| store.is_loaded());
    // Until the revocation list is read once, every token is refused.
    let revocations = s
        .live
        .revocations()
        .is_none_or(|(_, list)| list.is_loaded());
    // A sealed request the service cannot open refuses every client while
    // everything above looks fine; an unsealed one with xkey configured is
    // answered (a FIPS nats-server never seals) and only reported.
    let mismatches = s.readiness.xkey_current(std::time::Instant::now());
    let xkey_ok = !mismatches.iter().any(|m| m.refuses_everyone());
    let ready = nats && keys && kv && revocations && xkey_ok;
    let mut body = json!({
        "ready": ready,
        "nats_connected": nats,
        "issuer_keys": keys,
        "issuers": per_issuer,
        "xkey": mismatches.first().map_or("ok", |m| m.as_str()),
    });
    if !mismatches.is_empty() {
        let mode = s.live.callout();
        body["xkey_problems"] = mismatches
            .iter()
            .map(|m| serde_json::Value::from(m.explain(mode.mode())))
            .collect();
    }
    if s.live.grants().is_some() {
        body["kv_grants"] = kv.into();
    }
    if s.live.revocations().is_some() {
        body["revocation_list"] = revocations.into();
    }
    let body = Json(body);
    if ready {
        body.into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// OpenMetrics when the scraper asks for it (Prometheus does), the
/// Prometheus text format 0.0.4 otherwise.
async fn metrics(State(s): State<HttpState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if crate::metrics::wants_openmetrics(accept) {
        (
            [(
                header::CONTENT_TYPE,
                crate::metrics::OPENMETRICS_CONTENT_TYPE,
            )],
            s.metrics.render(),
        )
            .into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                crate::metrics::PROMETHEUS_CONTENT_TYPE,
            )],
            s.metrics.render_prometheus(),
        )
            .into_response()
    }
}
