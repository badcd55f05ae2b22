//! Serves an axum router on a listener that anyone who can reach it may
//! connect to (the back-channel endpoint faces the identity provider's
//! network). A client must finish its request's headers within
//! `HEADER_READ`; a connection is asked to close after
//! `CONNECTION_LIFETIME` and cut off `GRACE` later; and the listener holds
//! at most `PER_SOURCE` connections from one source and `MAX_CONNECTIONS`
//! in all, so a slow, idle or greedy client holds neither the process's
//! file descriptors nor every slot. axum's own `serve` sets no timer:
//! hyper would wait forever.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::service::conn_slots::{ConnSlots, Refused};

/// How long a client may take to send a request's headers.
pub(super) const HEADER_READ: Duration = Duration::from_secs(10);

/// How long one connection may stay open, keep-alive included, before it
/// is asked to close (after the request in flight, if any).
pub(super) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// How long a request in flight may go on once its connection was asked to
/// close, at its lifetime's end or at shutdown: cutting it off at once
/// could stop a logout halfway. After that the connection is dropped.
const GRACE: Duration = Duration::from_secs(10);

/// Connections one source (an IPv4 address, an IPv6 /64) may hold at once.
pub(super) const PER_SOURCE: usize = 16;

/// Connections open at once in all; more are closed as they arrive.
pub(super) const MAX_CONNECTIONS: usize = 256;

/// How often, at most, refused connections are logged (one line per
/// listener, with the count): a flood is worth a warning, not a line each.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// How long connections may take to finish at shutdown (the caller may
/// stop waiting sooner).
const DRAIN: Duration = Duration::from_secs(5);

/// One listener: `key` names its setting in the log, `label` is its
/// `listener` label in `http_connections_refused_total`.
pub(super) struct Listener {
    pub(super) key: &'static str,
    pub(super) label: &'static str,
    pub(super) metrics: Arc<Metrics>,
}

/// Serves `router` on `listener` until `shutdown` resolves.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    named: Listener,
) {
    let slots = ConnSlots::new(PER_SOURCE, MAX_CONNECTIONS);
    // `true` asks every connection to close; each holds a receiver until
    // it has, so `closed()` tells when all are gone.
    let (stop, _) = watch::channel(false);
    let mut refusals = Refusals::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "{}: accept failed", named.key);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let slot = match slots.take(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Dropping the stream closes it unserved.
                named.metrics.record_connection_refused(named.label);
                refusals.count(why, &named);
                continue;
            }
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let mut stopping = stop.subscribe();
        tokio::spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = tokio::time::sleep(CONNECTION_LIFETIME) => {}
                // Asked to stop, or the accept loop is gone.
                _ = stopping.wait_for(|stop| *stop) => {}
            }
            // Answers the request in flight, reads no other, then closes.
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(GRACE, connection).await;
            // Held to here: the slot is free, and shutdown sees this
            // connection gone, only once it is closed.
            drop((slot, stopping));
        });
    }
    drop(listener);
    stop.send_replace(true);
    if tokio::time::timeout(DRAIN, stop.closed()).await.is_err() {
        tracing::debug!(
            "{}: connections still open at shutdown are cut off within {GRACE:?}",
            named.key
        );
    }
}

/// Connections refused since the last warning, and when that was.
#[derive(Default)]
struct Refusals {
    source: u64,
    full: u64,
    warned: Option<Instant>,
}

impl Refusals {
    fn count(&mut self, why: Refused, named: &Listener) {
        match why {
            Refused::Source => self.source += 1,
            Refused::Full => self.full += 1,
        }
        let now = Instant::now();
        if self.warned.is_some_and(|at| now < at + WARN_EVERY) {
            return;
        }
        tracing::warn!(
            over_source_cap = self.source,
            over_total_cap = self.full,
            per_source = PER_SOURCE,
            total = MAX_CONNECTIONS,
            "{}: connections closed unserved since the last such warning (at most one a minute): \
             one source held as many as allowed, or the listener did; \
             restrict who can reach it to the clients that need it",
            named.key
        );
        *self = Refusals {
            source: 0,
            full: 0,
            warned: Some(now),
        };
    }
}
