//! `check --online`: what loading a config cannot know. Each issuer's
//! discovery document and key set are fetched; NATS is connected to with
//! the configured login; the callout subject is subscribed to; and (in
//! server mode) a probe client connects so that nats-server sends an
//! authorization request, which is opened and verified with this config's
//! keys: a wrong `auth_callout.issuer` or xkey shows up here instead of as
//! "no reason supplied" in nats-server's log.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tracing::instrument::WithSubscriber;

use crate::callout::{Mode, XkeyMismatch};
use crate::clock::unix_now;
use crate::config::{Config, NatsAuth};
use crate::nats::request::{self, RequestError, CALLOUT_SUBJECT, XKEY_HEADER};
use crate::oidc::discovery::IssuerClient;
use crate::oidc::jwks::KeySet;
use crate::policy::layout::{Import, Kind};

/// The user name of the probe connect (it shows in the service's and
/// nats-server's logs as a refused connect).
pub(super) const PROBE_USER: &str = "nats-oidc-callout-check";
/// How long the probe's authorization request may take to show up.
const PROBE_WAIT: Duration = Duration::from_secs(4);

/// What the steps found: printed as they go.
#[derive(Default)]
pub(super) struct Report {
    pub errors: usize,
    pub warnings: usize,
}

impl Report {
    fn ok(&mut self, what: impl AsRef<str>) {
        println!("ok: {}", what.as_ref());
    }
    fn warn(&mut self, what: impl AsRef<str>) {
        self.warnings += 1;
        println!("warning: {}", what.as_ref());
    }
    fn error(&mut self, what: impl AsRef<str>) {
        self.errors += 1;
        println!("error: {}", what.as_ref());
    }
}

pub(super) async fn run(config: &Config, system: Option<NatsAuth>) -> Report {
    let mut report = Report::default();
    for oidc in &config.oidc {
        issuer(&mut report, &oidc.settings).await;
    }
    nats(&mut report, config).await;
    imports(&mut report, config, system).await;
    report
}

/// The imports `[jetstream]` needs, compared with what nats-server has:
/// only the system account may see other accounts' imports (ACCOUNTZ), so
/// this step needs a login of its own.
async fn imports(report: &mut Report, config: &Config, system: Option<NatsAuth>) {
    let Some(layout) = config.layout().filter(|l| !l.is_empty()) else {
        return;
    };
    let Some(auth) = system else {
        println!(
            "note: the imports of [jetstream] are not checked: nats-server shows accounts' imports only to its system account; pass --system-creds FILE or --system-user NAME (password in $NATS_OIDC_CALLOUT_SYSTEM_PASSWORD)"
        );
        return;
    };
    let nats = crate::config::NatsConfig {
        auth,
        ..config.nats.clone()
    };
    let client = match crate::service::connect_once(&nats, "check --online", |_| {}).await {
        Ok(c) => c,
        Err(e) => return report.error(format!("system account login: {e}")),
    };
    let id = |name: &str| -> String {
        match &config.callout.mode {
            Mode::Server => name.to_string(),
            Mode::Operator { accounts } => accounts
                .get(name)
                .map(|a| a.public_key.clone())
                .unwrap_or_else(|| name.to_string()),
        }
    };
    let js_id = config
        .jetstream
        .as_ref()
        .map(|js| js.id.clone())
        .unwrap_or_default();
    for (account, wanted) in &layout.imports {
        let detail = match accountz(&client, &id(account)).await {
            Ok(d) => d,
            // Operator mode: nats-server loads an account from the resolver
            // only when a client or an import first needs it.
            Err(e)
                if e.contains("does not exist")
                    && matches!(config.callout.mode, Mode::Operator { .. }) =>
            {
                report.warn(format!(
                    "account {account} is not loaded on this nats-server yet (no client has used it): its imports cannot be checked until one has"
                ));
                continue;
            }
            Err(e) => {
                report.error(format!("account {account}: {e}"));
                continue;
            }
        };
        compare_imports(report, account, &detail, wanted, &js_id, &layout.account);
    }
}

/// One users' account's imports as nats-server has them (its ACCOUNTZ
/// detail), against the ones its users' grants need from `js_id`.
fn compare_imports(
    report: &mut Report,
    account: &str,
    detail: &serde_json::Value,
    wanted: &[Import],
    js_id: &str,
    js_name: &str,
) {
    if detail["jetstream_enabled"] == true {
        report.error(format!(
            "account {account} has JetStream of its own: its $JS.API answers race the import of {js_name}'s (two answers to every request); switch it off there (jetstream: disabled, or nsc edit account --js-disable)"
        ));
    }
    let have: Vec<&serde_json::Value> = detail["imports"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut missing = Vec::new();
    for import in wanted {
        let kind = match import.kind {
            Kind::Stream => "stream",
            Kind::Service(_) => "service",
        };
        let found = have.iter().any(|h| {
            h["type"] == kind
                && h["account"] == js_id
                && h["local_subject"] == import.subject.as_str()
                && h["invalid"] != true
        });
        if !found {
            missing.push(format!("{kind} {}", import.subject));
        }
    }
    if missing.is_empty() {
        report.ok(format!(
            "account {account} imports what its users' grants need from {js_name}"
        ));
    } else {
        report.error(format!(
            "account {account} lacks imports from {js_name} that its users' grants need: {}; `nats-oidc-callout accounts` prints them",
            missing.join(", ")
        ));
    }
}

/// One server's ACCOUNTZ detail of `account`.
async fn accountz(client: &async_nats::Client, account: &str) -> Result<serde_json::Value, String> {
    let body = serde_json::json!({ "account": account }).to_string();
    let answer = tokio::time::timeout(
        Duration::from_secs(3),
        client.request("$SYS.REQ.SERVER.PING.ACCOUNTZ", body.into()),
    )
    .await
    .map_err(|_| "no answer to ACCOUNTZ: is this login a user of the system account?".to_string())?
    .map_err(|e| format!("ACCOUNTZ: {e}"))?;
    let value: serde_json::Value = serde_json::from_slice(&answer.payload)
        .map_err(|_| "ACCOUNTZ answered with something that is not JSON".to_string())?;
    if let Some(e) = value.get("error") {
        return Err(format!("ACCOUNTZ: {}", crate::text::reason(&e.to_string())));
    }
    let detail = &value["data"]["account_detail"];
    if detail.is_null() {
        return Err("nats-server knows no such account".into());
    }
    Ok(detail.clone())
}

async fn issuer(report: &mut Report, settings: &crate::oidc::settings::Settings) {
    let name = &settings.name;
    let client = match IssuerClient::new(settings) {
        Ok(c) => c,
        Err(e) => return report.error(format!("issuer {name}: {e}")),
    };
    let jwks_uri = match client.discover_jwks_uri().await {
        Ok(uri) => uri,
        Err(e) => return report.error(format!("issuer {name}: {e}")),
    };
    report.ok(match &settings.jwks_url {
        None => format!(
            "issuer {name}: discovery document {} names issuer {} and jwks_uri {}",
            settings.discovery_url,
            settings.issuer,
            crate::text::name(&jwks_uri)
        ),
        Some(url) => format!("issuer {name}: keys read from oidc.jwks_url {url} (no discovery)"),
    });
    let body = match client.fetch_jwks(&jwks_uri).await {
        Ok(b) => b,
        Err(e) => return report.error(format!("issuer {name}: {e}")),
    };
    match KeySet::parse(&body, settings) {
        Err(e) => report.error(format!(
            "issuer {name}: JWKS {}: {}",
            crate::text::name(&jwks_uri),
            crate::text::reason(&e.to_string())
        )),
        Ok(set) => {
            for skipped in &set.skipped {
                report.warn(format!(
                    "issuer {name}: JWKS entry skipped: {}",
                    crate::text::reason(skipped)
                ));
            }
            if set.is_empty() {
                report.error(format!(
                    "issuer {name}: the JWKS has no key usable with oidc.algorithms: every token would be refused"
                ));
            } else {
                report.ok(format!(
                    "issuer {name}: JWKS has {} usable key{}",
                    set.len(),
                    if set.len() == 1 { "" } else { "s" }
                ));
            }
        }
    }
}

async fn nats(report: &mut Report, config: &Config) {
    let said: Arc<Mutex<Vec<String>>> = Arc::default();
    let heard = said.clone();
    let client = match crate::service::connect_once(&config.nats, "check --online", move |e| {
        heard.lock().unwrap_or_else(|p| p.into_inner()).push(e)
    })
    .await
    {
        Ok(c) => c,
        Err(e) => return report.error(e.to_string()),
    };
    let info = client.server_info();
    report.ok(format!(
        "connected to NATS as {:?}: server {} (nats-server {}), max_payload {}",
        config.nats.auth,
        crate::text::name(&info.server_name),
        crate::text::name(&info.version),
        info.max_payload
    ));
    if !info.auth_required {
        report.warn("nats-server requires no authentication on this connection: is auth_callout configured there?");
    }
    // A plain subscription: a copy of each request, leaving the running
    // services' queue group alone.
    let mut requests = match client.subscribe(CALLOUT_SUBJECT).await {
        Ok(s) => s,
        Err(e) => return report.error(format!("cannot subscribe to {CALLOUT_SUBJECT}: {e}")),
    };
    // A permissions violation comes back asynchronously; a flush and a
    // moment make sure the server has read the subscription.
    let _ = tokio::time::timeout(Duration::from_secs(2), client.flush()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let violations: Vec<String> = said
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter(|e| e.to_lowercase().contains("permissions violation"))
        .cloned()
        .collect();
    if let Some(v) = violations.first() {
        return report.error(format!(
            "nats-server refuses this login's subscription to {CALLOUT_SUBJECT} ({}): the service could not receive a single authorization request; log in as a user of the callout account (a user in auth_callout.auth_users)",
            crate::text::reason(v)
        ));
    }
    report.ok(format!("subscribed to {CALLOUT_SUBJECT}"));
    if matches!(config.callout.mode, Mode::Operator { .. }) {
        println!(
            "note: operator mode: no probe connect (it would need the sentinel credentials); the issuer and xkey of the authorization requests are not checked"
        );
        return;
    }
    probe(report, config, &mut requests).await;
}

/// Connects a probe client so that nats-server sends an authorization
/// request, and checks that this config opens and verifies it.
async fn probe(report: &mut Report, config: &Config, requests: &mut async_nats::Subscriber) {
    let Some(url) = config.nats.urls.first().cloned() else {
        return report.error("nats.url names no server");
    };
    // Its refusal is the expected outcome, not an error to log: the
    // client library's own log lines (an ERROR "authorization violation")
    // go nowhere; what the probe showed is in the report.
    let probe = tokio::spawn(
        async move {
            async_nats::ConnectOptions::with_user_and_password(
                PROBE_USER.into(),
                "check --online: not a token".into(),
            )
            .connection_timeout(Duration::from_secs(5))
            .connect(url)
            .await
        }
        .with_subscriber(tracing::subscriber::NoSubscriber::default()),
    );
    let request = tokio::time::timeout(PROBE_WAIT, requests.next()).await;
    let admitted = match tokio::time::timeout(Duration::from_secs(6), probe).await {
        Ok(Ok(Ok(client))) => {
            let _ = client.drain().await;
            true
        }
        _ => false,
    };
    let Ok(Some(message)) = request else {
        return report.error(if admitted {
            format!(
                "nats-server admitted a probe client ({PROBE_USER}, a made-up password) without an authorization request: it does not send this server's clients to the callout (no auth_callout, or a no_auth_user)"
            )
        } else {
            format!(
                "no authorization request arrived within {PROBE_WAIT:?} after a probe connect: check that nats-server's auth_callout has account = the account of this login and that nats.url is that server"
            )
        });
    };
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(XKEY_HEADER))
        .map(|v| v.as_str());
    let ours = config.callout.xkey.as_deref();
    let mode = &config.callout.mode;
    let decoded = request::decode(
        &message.payload,
        header,
        ours,
        &config.callout.auth_account,
        unix_now() as i64,
    );
    match decoded {
        Ok(_) => {
            report.ok(format!(
                "a probe connect's authorization request ({}) opened and verified: auth_callout.issuer is callout.issuer_seed's public key",
                if header.is_some() { "sealed" } else { "unsealed" }
            ));
            if header.is_none() && ours.is_some() {
                report.warn(XkeyMismatch::UnsealedWithXkey.explain(mode));
            }
        }
        Err(failure) => match failure.error {
            RequestError::SealedWithoutXkey => {
                report.error(XkeyMismatch::SealedWithoutXkey.explain(mode))
            }
            RequestError::Unseal => report.error(XkeyMismatch::SealedToAnotherKey.explain(mode)),
            RequestError::WrongIssuer { got, expected } => report.error(format!(
                "nats-server's auth_callout.issuer is {got}, but callout.issuer_seed's public key is {expected}: every client would be refused; make them the same key (`nats-oidc-callout pubkey <seed file>` prints it)"
            )),
            other => report.error(format!(
                "a probe connect's authorization request is refused: {}",
                crate::text::reason(&other.to_string())
            )),
        },
    }
}
