//! Stopping without losing a connect.
//!
//! A plain unsubscribe loses the requests nats-server routed here just
//! before it saw the UNSUB: async-nats drops them, and each becomes a client
//! refused by the server's auth timeout. Instead the server is told to stop
//! after a number of requests larger than those already on their way, so the
//! last one it routes here is one this process still reads. Under load the
//! margin fills in moments; when requests stop coming, waiting longer
//! protects nothing.
//!
//! One case this cannot cover: after a reconnect nats-server counts a
//! subscription's messages from that reconnect, async-nats from the start,
//! and async-nats sends our count as is. Then the client side ends first,
//! and the requests routed between that and the connection closing are lost
//! as with a plain unsubscribe.

use std::time::Duration;

use futures::{FutureExt, StreamExt};

use crate::service::dispatch::Dispatcher;

/// The subscription is told to end after this many more requests than this
/// process has taken. It must exceed the requests already on their way
/// (routed by nats-server, not yet read): those are answered instead of
/// dropped. On loopback that is a handful even at full load.
const DRAIN_MARGIN: u64 = 256;
/// Stop waiting for the margin to fill when no request has come for this
/// long, or after `DRAIN_TOTAL` (inside a container runtime's stop grace).
const DRAIN_IDLE: Duration = Duration::from_millis(300);
const DRAIN_TOTAL: Duration = Duration::from_secs(3);
/// The longest any one step of shutdown may take: with nats-server
/// unreachable a flush would wait for the reconnect, forever.
const STOP_STEP: Duration = Duration::from_secs(1);

/// Runs one shutdown step, giving up after `STOP_STEP`.
pub(super) async fn bounded<T>(
    step: &str,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    let done = tokio::time::timeout(STOP_STEP, work).await.ok();
    if done.is_none() {
        tracing::warn!("shutdown: {step} did not finish within {STOP_STEP:?}; going on");
    }
    done
}

/// Answers what is still on its way to this process, then ends the
/// subscription.
pub(super) async fn drain(requests: &mut async_nats::Subscriber, dispatcher: &mut Dispatcher) {
    while let Some(Some(request)) = requests.next().now_or_never() {
        dispatcher.dispatch(request).await;
    }
    let margin = requests.unsubscribe_after(dispatcher.taken() + DRAIN_MARGIN);
    if bounded("unsubscribing", margin).await.is_none() {
        return;
    }
    let deadline = tokio::time::Instant::now() + DRAIN_TOTAL;
    loop {
        let wait = DRAIN_IDLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, requests.next()).await {
            Ok(Some(request)) => dispatcher.dispatch(request).await,
            // The server delivered its last request to this process.
            Ok(None) => break,
            Err(_) => {
                bounded("unsubscribing", requests.unsubscribe()).await;
                while let Some(Some(request)) = requests.next().now_or_never() {
                    dispatcher.dispatch(request).await;
                }
                break;
            }
        }
    }
}
