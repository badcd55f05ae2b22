//! A long-running NATS client that logs in through nats-oidc-callout with a
//! fresh OIDC access token on every connect and reconnect.
//!
//! nats-server asks the callout only at CONNECT, and closes the connection
//! when the token (and so the user JWT) expires; the client then
//! reconnects, and async-nats calls the auth callback again, which hands it
//! the token that is valid now. A client that kept its first token would be
//! refused from then on.
//!
//! ```sh
//! # a file another process keeps fresh: a Kubernetes projected
//! # service-account token, or a sidecar running
//! #   while sleep 30; do nats-oidc-callout token > t.new && mv t.new token; done
//! cargo run -p nats-oidc-client --example token_client -- --url nats://127.0.0.1:4222 --token-file /var/run/secrets/nats/token
//!
//! # client credentials (machines): settings as for `nats-oidc-callout token`,
//! # from NATS_OIDC_CALLOUT_ISSUER, _CLIENT_ID, _CLIENT_SECRET(_FILE), _RESOURCE,
//! # _AUDIENCE, _SCOPES, _CA_FILE or the [client] table of the client config file
//! cargo run -p nats-oidc-client --example token_client -- --url nats://127.0.0.1:4222 --client-credentials
//!
//! # operator mode: the sentinel credentials too
//! cargo run -p nats-oidc-client --example token_client -- --url nats://127.0.0.1:4222 --token-file token --creds sentinel.creds
//! ```
//!
//! In operator mode every connect also presents the sentinel credentials
//! (`--creds sentinel.creds`): nats-server needs a user JWT before it asks
//! the callout, whose answer then replaces the sentinel.
//!
//! It subscribes to `--subject` (default `demo.>`), prints what arrives and
//! every connection event, and publishes a message every 5 seconds.

use std::sync::Arc;
use std::time::Duration;

use async_nats::{Auth, AuthError, ConnectOptions};
use futures::StreamExt;
use nats_oidc_client::settings::NATS_USER;
use nats_oidc_client::{creds, Settings, SettingsInput, TokenSource};

/// Operator mode's sentinel: the user JWT and nkey of a `.creds` file.
pub struct Sentinel {
    jwt: String,
    key: nkeys::KeyPair,
}

impl Sentinel {
    pub fn from_file(path: &std::path::Path) -> Result<Sentinel, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {}", path.display(), e.kind()))?;
        let (Some(jwt), Some(seed)) = (creds::user_jwt(&text), creds::user_seed(&text)) else {
            return Err(format!("{} is not a .creds file", path.display()));
        };
        let key = nkeys::KeyPair::from_seed(seed)
            .map_err(|e| format!("{}: the seed: {e}", path.display()))?;
        Ok(Sentinel {
            jwt: jwt.to_string(),
            key,
        })
    }
}

/// Connect options that ask `source` for a token on every connect attempt.
/// The token goes as the password (any user name; nats.go, nats.js and
/// nats.py clients do the same, see the README), beside the sentinel's
/// JWT and its signature of the server's nonce in operator mode. Replies
/// come to the user's private inbox (`{{inbox}}` in the roles), which the
/// token's issuer and subject name: it is read from the first token, when
/// one is there yet.
pub async fn options(source: Arc<TokenSource>, sentinel: Option<Arc<Sentinel>>) -> ConnectOptions {
    let inbox = source.inbox_prefix().await.ok();
    let options = ConnectOptions::with_auth_callback(move |nonce| {
        let source = source.clone();
        let sentinel = sentinel.clone();
        async move {
            let token = source
                .token()
                .await
                .map_err(|e| AuthError::new(e.to_string()))?;
            let mut auth = Auth::new();
            auth.username = Some(NATS_USER.to_string());
            auth.password = Some(token);
            if let Some(sentinel) = sentinel {
                auth.jwt = Some(sentinel.jwt.clone());
                auth.signature = Some(
                    sentinel
                        .key
                        .sign(&nonce)
                        .map_err(|e| AuthError::new(e.to_string()))?,
                );
            }
            Ok(auth)
        }
    })
    // Keep reconnecting (the default) and retry the first connect too, so a
    // token that is not there yet (a sidecar starting) is not fatal.
    .retry_on_initial_connect();
    match inbox {
        Some(prefix) => options.custom_inbox_prefix(prefix),
        None => options,
    }
}

/// Settings for client credentials from the environment and the client
/// config file, as `nats-oidc-callout token` reads them.
fn settings_from_env() -> Result<Settings, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    Settings::resolve(SettingsInput {
        config: var("NATS_OIDC_CALLOUT_CLIENT_CONFIG").map(Into::into),
        issuer: var("NATS_OIDC_CALLOUT_ISSUER"),
        client_id: var("NATS_OIDC_CALLOUT_CLIENT_ID"),
        client_secret_file: var("NATS_OIDC_CALLOUT_CLIENT_SECRET_FILE").map(Into::into),
        client_secret: var("NATS_OIDC_CALLOUT_CLIENT_SECRET"),
        scopes: var("NATS_OIDC_CALLOUT_SCOPES"),
        audience: var("NATS_OIDC_CALLOUT_AUDIENCE"),
        resource: var("NATS_OIDC_CALLOUT_RESOURCE"),
        nats_url: None,
        nats_creds: None,
        redirect_port: None,
        ca_file: var("NATS_OIDC_CALLOUT_CA_FILE").map(Into::into),
    })
    .map_err(|e| e.to_string())
}

struct Args {
    url: String,
    subject: String,
    source: TokenSource,
    sentinel: Option<Sentinel>,
}

fn parse_args() -> Result<Args, String> {
    let mut url = "nats://127.0.0.1:4222".to_string();
    let mut subject = "demo.>".to_string();
    let mut source = None;
    let mut sentinel = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--url" => url = value()?,
            "--subject" => subject = value()?,
            "--token-file" => source = Some(TokenSource::file(value()?)),
            "--creds" => sentinel = Some(Sentinel::from_file(value()?.as_ref())?),
            "--client-credentials" => {
                source = Some(
                    TokenSource::client_credentials(settings_from_env()?, 60)
                        .map_err(|e| e.to_string())?,
                )
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let source = source.ok_or("--token-file PATH or --client-credentials")?;
    Ok(Args {
        url,
        subject,
        source,
        sentinel,
    })
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let client = options(Arc::new(args.source), args.sentinel.map(Arc::new))
        .await
        .event_callback(|event| async move { eprintln!("nats: {event}") })
        .connect(args.url.as_str())
        .await;
    let client = match client {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot connect to {}: {e}", args.url);
            std::process::exit(1);
        }
    };
    let mut messages = match client.subscribe(args.subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot subscribe to {}: {e}", args.subject);
            std::process::exit(1);
        }
    };
    let publisher = client.clone();
    let subject = args.subject.replace(['>', '*'], "tick");
    tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            n += 1;
            // While disconnected, publishes are buffered and sent on reconnect.
            if let Err(e) = publisher
                .publish(subject.clone(), n.to_string().into())
                .await
            {
                eprintln!("publish: {e}");
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    while let Some(m) = messages.next().await {
        println!("{}: {}", m.subject, String::from_utf8_lossy(&m.payload));
    }
}
