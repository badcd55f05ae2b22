//! The running service: connects to NATS (retrying forever), answers
//! authorization requests concurrently in a queue group, keeps the issuer
//! keys and the config fresh, and drains in-flight answers on shutdown.

mod backchannel;
mod config_file;
mod conn_slots;
mod dispatch;
mod drain;
mod http;
mod http_serve;
mod kick;
mod kv_watch;
mod live;
mod micro;
mod nats;
mod readiness;
mod registry;
mod revoke;
mod revoke_request;
mod sessions;

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::nats::request::CALLOUT_SUBJECT;
use crate::oidc::discovery::FetchError;
use dispatch::Dispatcher;
use live::Live;
use micro::{Announcement, EndpointCounters};
use readiness::Readiness;

pub(crate) use nats::connect_once;
pub(crate) use revoke::Revoker;

pub(crate) const MICRO_SERVICE_NAME: &str = "nats-oidc-callout";

/// How often the config file is checked for changes.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// Why the service cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ServiceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("issuer client: {0}")]
    Issuer(#[from] FetchError),
    #[error("{0}")]
    Http(String),
    #[error("{0}")]
    Nats(String),
    #[error("cannot subscribe to {0}")]
    Subscribe(String),
}

pub(crate) struct Service {
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

/// An HTTP server and what stops it.
type Server = (tokio::sync::oneshot::Sender<()>, JoinHandle<()>);

/// The tasks that run beside the request loop, stopped in one place.
#[derive(Default)]
struct Background {
    http: Option<Server>,
    backchannel: Option<Server>,
    config_watch: Option<JoinHandle<()>>,
    kv_watch: Option<JoinHandle<()>>,
    revocation_watch: Option<JoinHandle<()>>,
    revoke_requests: Option<JoinHandle<()>>,
    micro: Option<JoinHandle<()>>,
}

impl Background {
    async fn stop(self, live: &Live) {
        live.stop_refreshers();
        for task in [
            self.config_watch,
            self.kv_watch,
            self.revocation_watch,
            self.revoke_requests,
            self.micro,
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        for (what, server) in [
            ("the HTTP server's stop", self.http),
            ("the back-channel logout endpoint's stop", self.backchannel),
        ] {
            if let Some((stop, server)) = server {
                let _ = stop.send(());
                // An open keep-alive connection would hold a graceful stop.
                drain::bounded(what, server).await;
            }
        }
    }
}

impl Service {
    pub(crate) fn new(config: Config) -> Result<Service, ServiceError> {
        let metrics = Arc::new(Metrics::new());
        let live = Live::new(config, metrics.clone())?;
        Ok(Service {
            live,
            metrics,
            readiness: Arc::default(),
        })
    }

    /// Runs until `shutdown` resolves, then stops taking requests and
    /// answers the ones already routed here.
    pub(crate) async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), ServiceError> {
        tokio::pin!(shutdown);
        let mut background = Background::default();
        let outcome = self.serve(&mut shutdown, &mut background).await;
        background.stop(&self.live).await;
        outcome
    }

    async fn serve(
        &self,
        shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
        background: &mut Background,
    ) -> Result<(), ServiceError> {
        let config = self.live.config();
        live::report_exposed_secrets(&config);
        background.http = self.start_http(&config).await?;
        self.live.start_refreshers();
        background.config_watch = Some(tokio::spawn(self.live.clone().watch(CONFIG_POLL)));
        let client =
            nats::connect(&config.nats, self.readiness.clone(), self.metrics.clone()).await?;
        if let Some((bucket, store)) = self.live.grants() {
            let watch = kv_watch::run(store.clone(), bucket.to_string(), client.clone());
            background.kv_watch = Some(tokio::spawn(watch));
        }
        let mut kicker = None;
        if let Some((bucket, list)) = self.live.revocations() {
            if let Some(login) = &config.revocation.system_login {
                kicker = Some(self.start_kicker(&config, login, &client, list).await?);
            }
            let live = self.live.clone();
            let feed = Arc::new(revoke::RevocationFeed {
                list: list.clone(),
                kicker: kicker.clone(),
                forget: Box::new(move |r| live.callout().authorizer().forget_revoked(r)),
            });
            let revoker = revoke::Revoker::new(client.clone(), bucket, list.clone())
                .applying_to(feed.clone());
            let watch = kv_watch::run(feed, bucket.to_string(), client.clone());
            background.revocation_watch = Some(tokio::spawn(watch));
            background.backchannel = self.start_backchannel(&config, revoker.clone()).await?;
            if let Some(subject) = &config.revocation.request_subject {
                background.revoke_requests = Some(
                    self.answer_revocations(&client, &config, subject, revoker)
                        .await?,
                );
            }
        }
        let counters = Arc::new(EndpointCounters::default());
        let (micro, mut requests) = tokio::select! {
            subscribed = subscribe(&client, &config, counters.clone()) => subscribed?,
            _ = &mut *shutdown => return Ok(()),
        };
        background.micro = Some(micro);
        tracing::info!(
            subject = CALLOUT_SUBJECT,
            queue_group = %config.nats.queue_group,
            mode = match config.callout.mode {
                crate::callout::Mode::Server => "server",
                crate::callout::Mode::Operator { .. } => "operator",
            },
            issuer = %config.callout.issuer.public_key(),
            auth_account = %config.callout.auth_account,
            account = %config.callout.account,
            xkey = config.callout.xkey.is_some(),
            "answering authorization requests"
        );
        let mut dispatcher = Dispatcher::new(
            client.clone(),
            self.live.clone(),
            self.metrics.clone(),
            counters,
            self.readiness.clone(),
            kicker,
        );
        dispatcher.serve(&mut requests, shutdown).await;
        tracing::info!(
            in_flight = dispatcher.in_flight(),
            "shutting down: no new requests, finishing those in flight"
        );
        drain::drain(&mut requests, &mut dispatcher).await;
        dispatcher.finish().await;
        drain::bounded("flushing the answers to NATS", client.flush()).await;
        Ok(())
    }

    /// What closes the connections revocations cover: a system-account
    /// login, and the session registry next to the revocation list.
    async fn start_kicker(
        &self,
        config: &Config,
        login: &crate::config::NatsAuth,
        client: &async_nats::Client,
        list: &Arc<crate::policy::revocations::RevocationList>,
    ) -> Result<Arc<kick::Kicker>, ServiceError> {
        let system = nats::connect_system(&config.nats, login).await?;
        let registry_bucket = config
            .revocation
            .sessions_bucket()
            .expect("a system login and a revocation bucket");
        Ok(kick::Kicker::start(
            system,
            client.clone(),
            registry_bucket,
            // No admitted token outlives it (user JWTs expire with their
            // tokens), whatever max_user_ttl is reloaded to.
            config.revocation.max_token_lifetime,
            list.clone(),
            self.metrics.clone(),
        ))
    }

    async fn start_http(&self, config: &Config) -> Result<Option<Server>, ServiceError> {
        let Some(h) = &config.http else {
            return Ok(None);
        };
        let listener = http::bind(h.listen, "http.listen").await?;
        // The bound address: port 0 in the config picks a free one.
        let bound = listener.local_addr().unwrap_or(h.listen);
        tracing::info!(listen = %bound, "serving /healthz, /readyz, /metrics");
        let state = http::HttpState {
            metrics: self.metrics.clone(),
            live: self.live.clone(),
            readiness: self.readiness.clone(),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(http::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Some((stop, server)))
    }

    /// Answers an admin's revocation requests on `subject`, in the queue
    /// group: one replica carries each out.
    async fn answer_revocations(
        &self,
        client: &async_nats::Client,
        config: &Config,
        subject: &str,
        revoker: revoke::Revoker,
    ) -> Result<JoinHandle<()>, ServiceError> {
        let requests = client
            .queue_subscribe(subject.to_string(), config.nats.queue_group.clone())
            .await
            .map_err(|e| ServiceError::Subscribe(format!("{subject}: {e}")))?;
        tracing::info!(
            subject = %subject,
            queue_group = %config.nats.queue_group,
            "answering revocation requests"
        );
        Ok(tokio::spawn(revoke_request::serve(
            requests,
            client.clone(),
            self.live.clone(),
            revoker,
        )))
    }

    /// The back-channel logout endpoint, when `[revocation]
    /// backchannel_listen` is set: a valid logout is put into the
    /// revocation list.
    async fn start_backchannel(
        &self,
        config: &Config,
        revoker: revoke::Revoker,
    ) -> Result<Option<Server>, ServiceError> {
        let Some(addr) = config.revocation.backchannel_listen else {
            return Ok(None);
        };
        let listener = http::bind(addr, "revocation.backchannel_listen").await?;
        let bound = listener.local_addr().unwrap_or(addr);
        tracing::info!(listen = %bound, "serving {}", backchannel::PATH);
        let state = Arc::new(backchannel::Backchannel {
            live: self.live.clone(),
            verifier: crate::oidc::LogoutVerifier::new(),
            sink: revoker,
            metrics: self.metrics.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(backchannel::serve(listener, state, async {
            let _ = stopped.await;
        }));
        Ok(Some((stop, server)))
    }
}

/// The callout subscription, and the micro-service announcement beside it
/// (`nats micro ls/info/stats/ping` see the service).
async fn subscribe(
    client: &async_nats::Client,
    config: &Config,
    counters: Arc<EndpointCounters>,
) -> Result<(JoinHandle<()>, async_nats::Subscriber), ServiceError> {
    let requests = client
        .queue_subscribe(CALLOUT_SUBJECT, config.nats.queue_group.clone())
        .await
        .map_err(|e| ServiceError::Subscribe(format!("{CALLOUT_SUBJECT}: {e}")))?;
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
        counters,
    )
    .await?;
    Ok((micro, requests))
}
