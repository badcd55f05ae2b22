//! The running service: connects to NATS (retrying forever), answers
//! authorization requests concurrently in a queue group, keeps the issuer keys
//! fresh, and drains in-flight answers on shutdown.

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::auth_request::{CALLOUT_SUBJECT, XKEY_HEADER};
use crate::config::{Config, NatsAuth};
use crate::http::{self, HttpState};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::micro::{self, Announcement, EndpointCounters};

/// Bounds memory under a connect storm; nats-server's own auth timeout bounds
/// how long any request is worth answering.
const MAX_IN_FLIGHT: usize = 4096;

/// At shutdown the subscription is told to end after this many more requests
/// than this process has taken. It must exceed the requests already on their
/// way (routed by nats-server, not yet read): those are answered instead of
/// dropped. On loopback that is a handful even at full load.
const DRAIN_MARGIN: u64 = 256;
/// Shutdown stops waiting for the margin to fill when no request has come for
/// this long, or after `DRAIN_TOTAL` (inside a container runtime's stop grace).
const DRAIN_IDLE: Duration = Duration::from_millis(300);
const DRAIN_TOTAL: Duration = Duration::from_secs(3);

pub const MICRO_SERVICE_NAME: &str = "nats-oidc-callout";

/// How often the config file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);

pub struct Service {
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
}

impl Service {
    pub fn new(config: Config) -> Result<Service, String> {
        let metrics = Arc::new(Metrics::new());
        let live = Live::new(config, metrics.clone())?;
        Ok(Service { live, metrics })
    }

    /// Runs until `shutdown` resolves, then stops taking requests and finishes
    /// the ones in flight.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) -> Result<(), String> {
        let config = self.live.config();
        report_exposed_secrets(&config);
        let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
        let http_server = match &config.http {
            Some(h) => {
                let listener = http::bind(h.listen).await?;
                tracing::info!(listen = %h.listen, "serving /healthz, /readyz, /metrics");
                let state = HttpState {
                    metrics: self.metrics.clone(),
                    live: self.live.clone(),
                };
                Some(tokio::spawn(http::serve(listener, state, async {
                    let _ = http_stopped.await;
                })))
            }
            None => None,
        };
        self.live.start_refresher();
        let watcher = tokio::spawn(self.live.clone().watch(CONFIG_POLL));
        tokio::pin!(shutdown);
        let client = connect(&config, self.metrics.clone()).await?;
        let kv_watch = self
            .live
            .kv
            .clone()
            .map(|kv| tokio::spawn(kv.run(client.clone())));
        let counters = Arc::new(EndpointCounters::default());
        let start = async {
            let requests = client
                .queue_subscribe(CALLOUT_SUBJECT, config.nats.queue_group.clone())
                .await
                .map_err(|e| format!("cannot subscribe to {CALLOUT_SUBJECT}: {e}"))?;
            // `nats micro ls/info/stats/ping` see the service.
            let micro = micro::announce(
                client.clone(),
                Announcement {
                    name: MICRO_SERVICE_NAME,
                    version: env!("CARGO_PKG_VERSION"),
                    description: "OIDC auth callout: admits clients presenting OIDC access tokens",
                    endpoint_name: "authorize",
                    endpoint_subject: CALLOUT_SUBJECT,
                    queue_group: config.nats.queue_group.clone(),
                },
                counters.clone(),
            )
            .await?;
            Ok::<_, String>((micro, requests))
        };
        let (micro, mut requests) = tokio::select! {
            started = start => started?,
            _ = &mut shutdown => {
                self.live.stop_refresher();
                watcher.abort();
                if let Some(kv) = &kv_watch {
                    kv.abort();
                }
                let _ = http_stop.send(());
                return Ok(());
            }
        };
        tracing::info!(
            subject = CALLOUT_SUBJECT,
            queue_group = %config.nats.queue_group,
            issuer = %config.callout.issuer.public_key(),
            account = %config.callout.account,
            xkey = config.callout.xkey.is_some(),
            "answering authorization requests"
        );
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        // The semaphore is never closed, so acquiring only waits.
        let permit = || {
            let permits = permits.clone();
            async move { permits.acquire_owned().await.expect("semaphore open") }
        };
        let mut in_flight = JoinSet::new();
        let dispatch = |request: async_nats::Message, in_flight: &mut JoinSet<()>, permit| {
            let Some(reply) = request.reply.clone() else {
                tracing::warn!("authorization request without a reply subject ignored");
                return;
            };
            let authorizer = self.live.authorizer.load_full();
            let metrics = self.metrics.clone();
            let counters = counters.clone();
            let client = client.clone();
            // An atomic read: server_info() would clone the whole INFO for
            // every request.
            let max_payload = client.max_payload();
            in_flight.spawn(async move {
                let started = std::time::Instant::now();
                let xkey = request
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(XKEY_HEADER))
                    .map(|v| v.as_str());
                let decision = authorizer.decide(&request.payload, xkey, max_payload).await;
                metrics.record_decision(&decision.verdict, started.elapsed().as_secs_f64());
                if let Err(e) = client.publish(reply, decision.body.into()).await {
                    tracing::error!(error = %e, "cannot publish the authorization response");
                    counters.record_error(e.to_string());
                }
                counters.record(started.elapsed());
                drop(permit);
            });
        };
        let mut taken: u64 = 0;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                request = requests.next() => {
                    let Some(request) = request else { break };
                    taken += 1;
                    dispatch(request, &mut in_flight, permit().await);
                }
                Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            }
        }
        tracing::info!(
            in_flight = in_flight.len(),
            "shutting down: no new requests, finishing those in flight"
        );
        // A plain unsubscribe loses the requests nats-server routed here just
        // before it saw the UNSUB: async-nats drops them, and each becomes a
        // client refused by the server's auth timeout. Instead the server is
        // told to stop after a number of requests larger than those already
        // on their way, so the last one it routes here is one this process
        // still reads. Under load the margin fills in moments; when requests
        // stop coming, waiting longer protects nothing.
        // One case this cannot cover: after a reconnect nats-server counts a
        // subscription's messages from that reconnect, async-nats from the
        // start, and async-nats sends our count as is. Then the client side
        // ends first, and the requests routed between that and the
        // connection closing are lost as with a plain unsubscribe.
        while let Some(Some(request)) = requests.next().now_or_never() {
            taken += 1;
            dispatch(request, &mut in_flight, permit().await);
        }
        let _ = requests.unsubscribe_after(taken + DRAIN_MARGIN).await;
        let deadline = tokio::time::Instant::now() + DRAIN_TOTAL;
        loop {
            let wait =
                DRAIN_IDLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
            match tokio::time::timeout(wait, requests.next()).await {
                Ok(Some(request)) => {
                    dispatch(request, &mut in_flight, permit().await);
                }
                // The server delivered its last request to this process.
                Ok(None) => break,
                Err(_) => {
                    let _ = requests.unsubscribe().await;
                    while let Some(Some(request)) = requests.next().now_or_never() {
                        dispatch(request, &mut in_flight, permit().await);
                    }
                    break;
                }
            }
        }
        while in_flight.join_next().await.is_some() {}
        micro.abort();
        let _ = client.flush().await;
        self.live.stop_refresher();
        watcher.abort();
        if let Some(kv) = &kv_watch {
            kv.abort();
        }
        let _ = http_stop.send(());
        if let Some(server) = http_server {
            let _ = server.await;
        }
        Ok(())
    }
}

async fn connect(config: &Config, metrics: Arc<Metrics>) -> Result<async_nats::Client, String> {
    let nats = &config.nats;
    let mut options = match &nats.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
        NatsAuth::NkeySeed(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        NatsAuth::CredsFile(path) => {
            async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| format!("nats.creds_file {}: {e}", path.display()))?
        }
    };
    options = options
        .name(&nats.name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(|attempts| {
            // Retry at once first: after a nats-server restart every client
            // is waiting for this service to be back.
            if attempts <= 1 {
                Duration::ZERO
            } else {
                Duration::from_millis((50u64 << attempts.min(7)).min(5000))
            }
        })
        .event_callback(move |event| {
            let metrics = metrics.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        metrics.nats_connected.set(1);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        metrics.nats_connected.set(0);
                        tracing::warn!("disconnected from NATS; reconnecting");
                    }
                    other => tracing::info!("NATS: {other}"),
                }
            }
        });
    let urls: Vec<async_nats::ServerAddr> = nats
        .urls
        .iter()
        .map(|u| u.parse().map_err(|e| format!("nats.url {u:?}: {e}")))
        .collect::<Result<_, _>>()?;
    options
        .connect(urls)
        .await
        .map_err(|e| format!("cannot connect to NATS at {}: {e}", nats.urls.join(", ")))
}

/// Logs secret files any user of the host can read (at startup and reload).
pub fn report_exposed_secrets(config: &crate::config::Config) {
    for exposure in crate::check::exposed_secrets(config) {
        tracing::warn!("secret file exposed: {exposure}");
    }
}
