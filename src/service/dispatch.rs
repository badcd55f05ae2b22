//! Decides each authorization request and publishes the answer, at most
//! `MAX_IN_FLIGHT` at a time. The requests read together are decided
//! right here, on the worker that read them, up to `DECIDED_HERE` of them:
//! a task per request cost 6–11 µs of CPU per authorization in wake-ups
//! between workers (measured under connect load). Beyond that many, the
//! oldest get tasks, which the other workers decide in parallel; and a
//! decision that has to wait (for keys, for a password check) moves to a
//! task of its own at its first wait, so no request waits behind it for
//! more than a few decisions' CPU time.

use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::callout::{Arrival, Callout, Decision, Verdict, XkeyMismatch};
use crate::metrics::{Metrics, XkeyLabels};
use crate::nats::request::XKEY_HEADER;
use crate::service::kick::Kicker;
use crate::service::live::Live;
use crate::service::micro::EndpointCounters;
use crate::service::readiness::{Readiness, XkeyReport, XKEY_WINDOW};

/// Bounds memory under a connect storm; nats-server's own auth timeout bounds
/// how long any request is worth answering.
const MAX_IN_FLIGHT: usize = 4096;
/// At most this many requests wait for one another here; more go to
/// tasks that other workers take.
const DECIDED_HERE: usize = 8;
/// The most requests taken from the subscription in one go.
const READ_AT_ONCE: usize = 64;
/// The longest an answer may wait to be handed to the NATS client.
const PUBLISH_WAIT: Duration = Duration::from_secs(2);
/// The longest shutdown waits for the requests in flight: a key fetch one
/// waits for ends by the request's deadline, 3 s with nats-server's default
/// auth timeout.
const FINISH_WAIT: Duration = Duration::from_secs(3);

// Requests that wait for something slow hold their place in flight; the
// waits are bounded so that together they never take all of it, and a
// fast request always finds room (no client can make another wait).
const _: () = assert!(
    crate::oidc::key_manager::MAX_REFETCH_WAITERS + crate::policy::passwords::MAX_ADMITTED
        < MAX_IN_FLIGHT / 2
);

/// Deciding one request and publishing its answer.
type Work = Pin<Box<dyn Future<Output = ()> + Send>>;

pub(super) struct Dispatcher {
    client: async_nats::Client,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    counters: Arc<EndpointCounters>,
    readiness: Arc<Readiness>,
    /// Closes revoked connections, when a system-account login is set.
    kicker: Option<Arc<Kicker>>,
    permits: Arc<Semaphore>,
    in_flight: JoinSet<()>,
    /// Requests taken from the subscription so far.
    taken: u64,
    /// Turned true at shutdown: every request still waiting stops waiting.
    stop: tokio::sync::watch::Sender<bool>,
}

/// What deciding and answering one request needs: the callout running
/// when it arrived, and where to record and publish.
struct Answerer {
    callout: Arc<Callout>,
    metrics: Arc<Metrics>,
    counters: Arc<EndpointCounters>,
    readiness: Arc<Readiness>,
    client: async_nats::Client,
    /// Where admitted connections are remembered for revocations.
    kicker: Option<Arc<Kicker>>,
}

impl Answerer {
    /// Decides, records the outcome, and publishes the answer (unless the
    /// request is dropped unanswered).
    async fn answer(
        self,
        request: async_nats::Message,
        reply: async_nats::Subject,
        arrival: Arrival,
    ) {
        let started = Instant::now();
        let xkey = request
            .headers
            .as_ref()
            .and_then(|h| h.get(XKEY_HEADER))
            .map(|v| v.as_str());
        // An atomic read: server_info() would clone the whole INFO for
        // every request.
        let max_payload = self.client.max_payload();
        let decision = self
            .callout
            .decide(&request.payload, xkey, max_payload, arrival)
            .await;
        self.record(&decision, started);
        if matches!(decision.verdict, Verdict::Dropped { .. }) {
            self.counters.record(started.elapsed());
            return;
        }
        // With nats-server gone the client's outbound queue fills and a
        // publish would wait for the reconnect; an answer that late is
        // useless anyway.
        let published = tokio::time::timeout(
            PUBLISH_WAIT,
            self.client.publish(reply, decision.body.into()),
        )
        .await;
        let failed = match published {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("not sent within {PUBLISH_WAIT:?}")),
        };
        if let Some(e) = failed {
            tracing::error!(error = %e, "cannot publish the authorization response");
            self.counters.record_error(e);
        }
        self.counters.record(started.elapsed());
    }

    /// The decision's metrics, and a report of an xkey mismatch.
    fn record(&self, decision: &Decision, started: Instant) {
        let metrics = &self.metrics;
        metrics.record_decision(decision.verdict.outcome(), started.elapsed().as_secs_f64());
        if let Verdict::Allowed {
            bindings,
            issuer,
            user,
            expires,
            session,
            ..
        } = &decision.verdict
        {
            for b in bindings {
                metrics.record_binding(b);
            }
            if let Some(kicker) = &self.kicker {
                kicker.admitted(issuer, user, *expires, session);
            }
        }
        if let Some(mismatch) = decision.xkey {
            report_xkey(mismatch, &self.callout, metrics, &self.readiness);
        }
    }
}

impl Dispatcher {
    pub(super) fn new(
        client: async_nats::Client,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        counters: Arc<EndpointCounters>,
        readiness: Arc<Readiness>,
        kicker: Option<Arc<Kicker>>,
    ) -> Self {
        Dispatcher {
            client,
            live,
            metrics,
            counters,
            readiness,
            kicker,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            in_flight: JoinSet::new(),
            taken: 0,
            stop: tokio::sync::watch::channel(false).0,
        }
    }

    pub(super) fn taken(&self) -> u64 {
        self.taken
    }

    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Takes requests until `shutdown` resolves or the subscription ends.
    pub(super) async fn serve(
        &mut self,
        requests: &mut async_nats::Subscriber,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
    ) {
        loop {
            tokio::select! {
                _ = &mut *shutdown => break,
                request = requests.next() => {
                    let Some(request) = request else { break };
                    // Every request's time runs from when it is taken.
                    let mut here = VecDeque::new();
                    here.extend(self.prepare(request).await);
                    let mut ended = false;
                    // Bounded, so that shutdown is seen in a flood too.
                    for _ in 1..READ_AT_ONCE {
                        let next = match requests.next().now_or_never() {
                            Some(Some(next)) => next,
                            Some(None) => {
                                ended = true;
                                break;
                            }
                            None => break,
                        };
                        // Those waiting here must not wait for a permit too.
                        if self.permits.available_permits() == 0 {
                            self.decide_here(&mut here).await;
                        }
                        here.extend(self.prepare(next).await);
                        if here.len() > DECIDED_HERE {
                            let oldest = here.pop_front().expect("more than one");
                            self.in_flight.spawn(oldest);
                        }
                    }
                    self.decide_here(&mut here).await;
                    if ended {
                        break;
                    }
                }
                Some(_) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {}
            }
        }
    }

    /// Decides each of `here` until its first wait, then in a task.
    async fn decide_here(&mut self, here: &mut VecDeque<Work>) {
        for mut work in here.drain(..) {
            if futures::poll!(&mut work).is_pending() {
                self.in_flight.spawn(work);
            }
        }
    }

    /// Starts deciding one request in a task of its own; waits while
    /// `MAX_IN_FLIGHT` are running.
    pub(super) async fn dispatch(&mut self, request: async_nats::Message) {
        if let Some(work) = self.prepare(request).await {
            self.in_flight.spawn(work);
        }
    }

    /// The whole work of one request, from deciding to publishing the
    /// answer; waits while `MAX_IN_FLIGHT` are running.
    async fn prepare(&mut self, request: async_nats::Message) -> Option<Work> {
        // The request's time runs from here, waiting for a permit included.
        let arrival = Arrival {
            at: tokio::time::Instant::now(),
            stop: Some(self.stop.subscribe()),
        };
        self.taken += 1;
        let Some(reply) = request.reply.clone() else {
            tracing::warn!("authorization request without a reply subject ignored");
            return None;
        };
        // The semaphore is never closed, so acquiring only waits.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("semaphore open");
        let answerer = Answerer {
            kicker: self.kicker.clone(),
            callout: self.live.callout(),
            metrics: self.metrics.clone(),
            counters: self.counters.clone(),
            readiness: self.readiness.clone(),
            client: self.client.clone(),
        };
        let work = async move {
            answerer.answer(request, reply, arrival).await;
            drop(permit);
        };
        // A panic is a bug, but it must cost one request, not the service:
        // work decided in place runs in the dispatcher's task, where a task
        // of its own would have contained it.
        Some(Box::pin(AssertUnwindSafe(work).catch_unwind().map(
            |outcome| {
                if outcome.is_err() {
                    tracing::error!(
                        "deciding a request panicked (a bug; please report it): it is not answered"
                    );
                }
            },
        )))
    }

    /// Waits until every started request is answered, for `FINISH_WAIT` at
    /// most; requests waiting for a password check stop waiting now.
    pub(super) async fn finish(&mut self) {
        let _ = self.stop.send(true);
        let all = async { while self.in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(FINISH_WAIT, all).await.is_err() {
            tracing::warn!(
                left = self.in_flight.len(),
                "shutdown: requests still in flight after {FINISH_WAIT:?} are abandoned"
            );
            self.in_flight.abort_all();
        }
    }
}

/// Counts a request that showed nats-server's xkey setting disagreeing with
/// the service's, and says so: once when it starts, then every few minutes
/// while it goes on, never once per request.
fn report_xkey(
    mismatch: XkeyMismatch,
    callout: &crate::callout::Callout,
    metrics: &Metrics,
    readiness: &Readiness,
) {
    metrics
        .xkey_mismatches
        .get_or_create(&XkeyLabels {
            kind: mismatch.as_str(),
        })
        .inc();
    let said = match readiness.xkey_seen(mismatch, Instant::now()) {
        XkeyReport::Quiet => return,
        XkeyReport::New => String::new(),
        XkeyReport::Continuing(n) => format!(" (still: {n} more requests since last said)"),
    };
    let explained = mismatch.explain(callout.mode());
    if mismatch.refuses_everyone() {
        tracing::error!(
            xkey = mismatch.as_str(),
            "xkey mismatch{said}: {explained}; /readyz reports not ready until {XKEY_WINDOW:?} pass without such a request"
        );
    } else {
        tracing::warn!(xkey = mismatch.as_str(), "xkey mismatch{said}: {explained}");
    }
}
