//! Hands each authorization request to its own task, at most
//! `MAX_IN_FLIGHT` at a time, and publishes the answer.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::callout::{Arrival, Verdict};
use crate::metrics::Metrics;
use crate::nats::request::XKEY_HEADER;
use crate::service::live::Live;
use crate::service::micro::EndpointCounters;

/// Bounds memory under a connect storm; nats-server's own auth timeout bounds
/// how long any request is worth answering.
const MAX_IN_FLIGHT: usize = 4096;

pub struct Dispatcher {
    client: async_nats::Client,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    counters: Arc<EndpointCounters>,
    permits: Arc<Semaphore>,
    in_flight: JoinSet<()>,
    /// Requests taken from the subscription so far.
    taken: u64,
    /// Turned true at shutdown: every request still waiting stops waiting.
    stop: tokio::sync::watch::Sender<bool>,
}

impl Dispatcher {
    pub fn new(
        client: async_nats::Client,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        counters: Arc<EndpointCounters>,
    ) -> Self {
        Dispatcher {
            client,
            live,
            metrics,
            counters,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            in_flight: JoinSet::new(),
            taken: 0,
            stop: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn taken(&self) -> u64 {
        self.taken
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes requests until `shutdown` resolves or the subscription ends.
    pub async fn serve(
        &mut self,
        requests: &mut async_nats::Subscriber,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) {
        loop {
            tokio::select! {
                _ = &mut *shutdown => break,
                request = requests.next() => {
                    let Some(request) = request else { break };
                    self.dispatch(request).await;
                }
                Some(_) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {}
            }
        }
    }

    /// Starts deciding one request; waits while `MAX_IN_FLIGHT` are running.
    pub async fn dispatch(&mut self, request: async_nats::Message) {
        // The request's time runs from here, waiting for a permit included.
        let arrival = Arrival {
            at: tokio::time::Instant::now(),
            stop: Some(self.stop.subscribe()),
        };
        self.taken += 1;
        let Some(reply) = request.reply.clone() else {
            tracing::warn!("authorization request without a reply subject ignored");
            return;
        };
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let callout = self.live.callout();
        let metrics = self.metrics.clone();
        let counters = self.counters.clone();
        let client = self.client.clone();
        // An atomic read: server_info() would clone the whole INFO for
        // every request.
        let max_payload = client.max_payload();
        self.in_flight.spawn(async move {
            let started = Instant::now();
            let xkey = request
                .headers
                .as_ref()
                .and_then(|h| h.get(XKEY_HEADER))
                .map(|v| v.as_str());
            let decision = callout
                .decide(&request.payload, xkey, max_payload, arrival)
                .await;
            metrics.record_decision(decision.verdict.outcome(), started.elapsed().as_secs_f64());
            if matches!(decision.verdict, Verdict::Dropped { .. }) {
                counters.record(started.elapsed());
                return;
            }
            if let Err(e) = client.publish(reply, decision.body.into()).await {
                tracing::error!(error = %e, "cannot publish the authorization response");
                counters.record_error(e.to_string());
            }
            counters.record(started.elapsed());
            drop(permit);
        });
    }

    /// Waits until every started request is answered; requests waiting for
    /// something slow (a password check, a key fetch) stop waiting now.
    pub async fn finish(&mut self) {
        let _ = self.stop.send(true);
        while self.in_flight.join_next().await.is_some() {}
    }
}
