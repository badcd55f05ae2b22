//! The service's own NATS connection: reconnects forever, and tells the
//! readiness state and the metrics whether it is up.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{NatsAuth, NatsConfig};
use crate::metrics::Metrics;
use crate::secrets::redact_url;
use crate::service::readiness::Readiness;
use crate::service::ServiceError;

/// The login `[nats]` describes (with its TLS settings), and nothing else.
async fn login(nats: &NatsConfig) -> Result<async_nats::ConnectOptions, ServiceError> {
    let options = credentials(nats).await?;
    match &nats.tls {
        Some(tls) => tls
            .apply(options)
            .map_err(|e| ServiceError::Nats(format!("nats.tls: {e}"))),
        None => Ok(options),
    }
}

async fn credentials(nats: &NatsConfig) -> Result<async_nats::ConnectOptions, ServiceError> {
    Ok(match &nats.auth {
        NatsAuth::None => async_nats::ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
        }
        NatsAuth::Token(t) => async_nats::ConnectOptions::with_token(t.clone()),
        NatsAuth::NkeySeed(key) => {
            async_nats::ConnectOptions::with_nkey(key.seed().expect("a key pair read from a seed"))
        }
        NatsAuth::CredsFile(path) => {
            async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| {
                    ServiceError::Nats(format!(
                        "nats.creds_file {}: {e}",
                        crate::secrets::shown(path)
                    ))
                })?
        }
    })
}

/// `nats.url`'s servers.
fn servers(nats: &NatsConfig) -> Result<Vec<async_nats::ServerAddr>, ServiceError> {
    nats.urls
        .iter()
        .map(|u| {
            u.parse()
                .map_err(|e| ServiceError::Nats(format!("nats.url {:?}: {e}", redact_url(u))))
        })
        .collect()
}

/// One attempt to connect as the service would, for a command
/// (`check --online`, `revoke`; `command` names the connection in
/// nats-server's monitoring): no retries, no reconnects; `on_error` hears
/// what the server says later (a permissions violation, say).
pub(crate) async fn connect_once(
    nats: &NatsConfig,
    command: &str,
    on_error: impl Fn(String) + Send + Sync + 'static,
) -> Result<async_nats::Client, ServiceError> {
    let on_error = Arc::new(on_error);
    let options = login(nats)
        .await?
        .name(format!("{} ({command})", nats.name))
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(Some(0))
        .event_callback(move |event| {
            let on_error = on_error.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    on_error(e.to_string());
                }
            }
        });
    options.connect(servers(nats)?).await.map_err(|e| {
        let shown: Vec<String> = nats.urls.iter().map(|u| redact_url(u)).collect();
        ServiceError::Nats(format!(
            "cannot connect to NATS at {} as {:?}: {e}{}",
            shown.join(", "),
            nats.auth,
            crate::tls::NATS_PEER.hint(&e.to_string())
        ))
    })
}

/// The system-account login of `[revocation]` (CONNZ, KICK): the servers
/// and TLS of `[nats]`, its own credentials; reconnects forever, quietly
/// (the callout connection is what readiness reports).
pub(super) async fn connect_system(
    nats: &NatsConfig,
    login: &NatsAuth,
) -> Result<async_nats::Client, ServiceError> {
    let system = NatsConfig {
        auth: login.clone(),
        ..nats.clone()
    };
    let options = self::login(&system)
        .await?
        .name(format!("{} (system)", nats.name))
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5));
    options
        .connect(servers(nats)?)
        .await
        .map_err(|e| ServiceError::Nats(format!("revocation's system-account login: {e}")))
}

/// Tries every `RETRY` for about `FAST_FOR`, then every `SLOW`: a callout
/// is not a client. After a nats-server restart every client reconnects at
/// once and waits for this service; connects that arrive before it is
/// subscribed again are held for the auth timeout and refused. A client's
/// doubling back-off (0, 200, 400, 800 ms) left it up to 400 ms behind the
/// server. An attempt at a server that is down costs a refused TCP
/// connect; one at an unreachable host waits out the connection timeout,
/// so nothing spins.
fn callout_reconnect_delay(attempts: usize) -> Duration {
    const RETRY: Duration = Duration::from_millis(10);
    const FAST_FOR: usize = 1_000;
    const SLOW: Duration = Duration::from_millis(250);
    match attempts {
        0..=1 => Duration::ZERO,
        n if n <= FAST_FOR => RETRY,
        _ => SLOW,
    }
}

pub(super) async fn connect(
    nats: &NatsConfig,
    readiness: Arc<Readiness>,
    metrics: Arc<Metrics>,
) -> Result<async_nats::Client, ServiceError> {
    let options = login(nats)
        .await?
        .name(&nats.name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(callout_reconnect_delay)
        .event_callback(move |event| {
            let (readiness, metrics) = (readiness.clone(), metrics.clone());
            async move {
                match event {
                    async_nats::Event::Connected => {
                        readiness.set_nats_connected(true);
                        metrics.nats_connected.set(1);
                        tracing::info!("connected to NATS");
                    }
                    async_nats::Event::Disconnected => {
                        readiness.set_nats_connected(false);
                        metrics.nats_connected.set(0);
                        tracing::warn!("disconnected from NATS; reconnecting");
                    }
                    other => tracing::info!("NATS: {other}"),
                }
            }
        });
    options.connect(servers(nats)?).await.map_err(|e| {
        let shown: Vec<String> = nats.urls.iter().map(|u| redact_url(u)).collect();
        ServiceError::Nats(format!(
            "cannot connect to NATS at {}: {e}",
            shown.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_callout_tries_again_every_10_ms_for_ten_seconds_then_every_250() {
        assert_eq!(callout_reconnect_delay(1), Duration::ZERO);
        let fast: Duration = (2..=1_000).map(callout_reconnect_delay).sum();
        assert_eq!(fast, Duration::from_millis(9_990));
        assert_eq!(callout_reconnect_delay(1_001), Duration::from_millis(250));
        assert_eq!(
            callout_reconnect_delay(usize::MAX),
            Duration::from_millis(250)
        );
    }
}
