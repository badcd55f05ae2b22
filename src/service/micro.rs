//! Announces the service the way NATS micro services do (ADR-32), so
//! `nats micro ls/info/stats/ping` see it.
//!
//! async-nats' own `service` API owns the endpoint's subscription and only
//! offers an unsubscribe that drops requests still on the wire. Shutting down
//! without losing a connect needs the subscription in our hands (see
//! `service`), so this module answers the PING/INFO/STATS verbs itself, with
//! async-nats' response types and our own request counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::service::{endpoint, error, Info, PingResponse, Stats};
use futures::StreamExt;

use crate::service::ServiceError;

/// What `nats micro stats` shows for the one endpoint.
#[derive(Default)]
pub(super) struct EndpointCounters {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_nanos: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl EndpointCounters {
    pub(super) fn record(&self, processing: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.processing_nanos
            .fetch_add(processing.as_nanos() as u64, Ordering::Relaxed);
    }

    pub(super) fn record_error(&self, error: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }
}

pub(super) struct Announcement {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub endpoint_name: &'static str,
    pub endpoint_subject: &'static str,
    pub queue_group: String,
}

/// Answers the micro-service verbs until the returned task is aborted.
pub(super) async fn announce(
    client: async_nats::Client,
    what: Announcement,
    counters: Arc<EndpointCounters>,
) -> Result<tokio::task::JoinHandle<()>, ServiceError> {
    let id = nuid::next().to_string();
    let started = async_nats::datetime::now();
    let mut verbs = Vec::new();
    for verb in ["PING", "INFO", "STATS"] {
        for subject in [
            format!("$SRV.{verb}"),
            format!("$SRV.{verb}.{}", what.name),
            format!("$SRV.{verb}.{}.{id}", what.name),
        ] {
            let sub = client
                .subscribe(subject.clone())
                .await
                .map_err(|e| ServiceError::Subscribe(format!("{subject}: {e}")))?;
            verbs.push(sub.map(move |m| (verb, m)).boxed());
        }
    }
    let mut verbs = futures::stream::select_all(verbs);
    Ok(tokio::spawn(async move {
        while let Some((verb, message)) = verbs.next().await {
            let Some(reply) = message.reply else { continue };
            let body = match verb {
                "PING" => serde_json::to_vec(&PingResponse {
                    kind: "io.nats.micro.v1.ping_response".into(),
                    name: what.name.into(),
                    id: id.clone(),
                    version: what.version.into(),
                    metadata: Default::default(),
                }),
                "INFO" => serde_json::to_vec(&Info {
                    kind: "io.nats.micro.v1.info_response".into(),
                    name: what.name.into(),
                    id: id.clone(),
                    description: what.description.into(),
                    version: what.version.into(),
                    metadata: Default::default(),
                    endpoints: vec![endpoint::Info {
                        name: what.endpoint_name.into(),
                        subject: what.endpoint_subject.into(),
                        queue_group: what.queue_group.clone(),
                        metadata: Default::default(),
                    }],
                }),
                _ => serde_json::to_vec(&Stats {
                    kind: "io.nats.micro.v1.stats_response".into(),
                    name: what.name.into(),
                    id: id.clone(),
                    version: what.version.into(),
                    started,
                    endpoints: vec![endpoint_stats(&what, &counters)],
                }),
            };
            match body {
                Ok(body) => {
                    if let Err(e) = client.publish(reply, body.into()).await {
                        tracing::warn!(error = %e, "cannot answer a micro-service {verb}");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a micro-service {verb}"),
            }
        }
    }))
}

fn endpoint_stats(what: &Announcement, counters: &EndpointCounters) -> endpoint::Stats {
    let requests = counters.requests.load(Ordering::Relaxed);
    let nanos = counters.processing_nanos.load(Ordering::Relaxed);
    let last_error = counters
        .last_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .map(|status| error::Error { status, code: 500 });
    endpoint::Stats {
        name: what.endpoint_name.into(),
        subject: what.endpoint_subject.into(),
        requests: requests as usize,
        errors: counters.errors.load(Ordering::Relaxed) as usize,
        processing_time: Duration::from_nanos(nanos),
        average_processing_time: Duration::from_nanos(nanos / requests.max(1)),
        last_error,
        data: None,
        queue_group: what.queue_group.clone(),
    }
}
