//! Serves an axum router on a listener that anyone who can reach it may
//! connect to (the back-channel endpoint faces the identity provider's
//! network): a client must finish its request's headers within
//! `HEADER_READ`, a connection lasts at most `CONNECTION_LIFETIME`, and at
//! most `MAX_CONNECTIONS` are open at once, so slow or idle clients can
//! hold neither the process's file descriptors nor each other's turn.
//! axum's own `serve` sets no timer: hyper would wait forever.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers.
pub(super) const HEADER_READ: Duration = Duration::from_secs(10);

/// How long one connection may stay open, keep-alive included.
pub(super) const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Connections open at once; more are closed as they arrive.
pub(super) const MAX_CONNECTIONS: usize = 256;

/// How long requests in flight may take to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `router` until `shutdown` resolves; `what` names it in the log.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    what: &'static str,
) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let graceful = GracefulShutdown::new();
    let mut full_warned = false;
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait rather than spin.
                    tracing::warn!(error = %e, "{what}: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if !std::mem::replace(&mut full_warned, true) {
                tracing::warn!(
                    limit = MAX_CONNECTIONS,
                    "{what}: too many connections open; new ones are closed until some end (said once)"
                );
            }
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ);
        let connection = graceful.watch(http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        ));
        tokio::spawn(async move {
            // Over its lifetime, the connection is dropped (closed).
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("{what}: requests still in flight at shutdown were dropped");
    }
}
