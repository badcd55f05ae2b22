//! Closes the live connections a revocation covers, through a login in the
//! system account (`$SYS.REQ.SERVER.<server id>.KICK` with the client id),
//! on whichever server of the cluster they are: those this replica
//! admitted (`Sessions`), and those any replica filed in the shared
//! registry (`Registry`), which a replica that admitted them and has
//! restarted since no longer remembers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::callout::Session;
use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::policy::revocations::{Revocation, RevocationList};
use crate::service::registry::{is_server_id, Connection, Registry};
use crate::service::sessions::Sessions;

/// How long one server may take to answer a KICK.
const KICK_WAIT: Duration = Duration::from_secs(2);

/// KICKs in flight at once.
const KICKERS: usize = 64;

/// What became of one KICK.
enum Kicked {
    Closed,
    /// Closed already (or its server is gone).
    Gone,
    Failed(String),
}

pub(crate) struct Kicker {
    system: async_nats::Client,
    sessions: Sessions,
    registry: Option<Registry>,
    list: Arc<RevocationList>,
    metrics: Arc<Metrics>,
}

impl Kicker {
    pub(crate) fn new(
        system: async_nats::Client,
        sessions: Sessions,
        registry: Option<Registry>,
        list: Arc<RevocationList>,
        metrics: Arc<Metrics>,
    ) -> Kicker {
        Kicker {
            system,
            sessions,
            registry,
            list,
            metrics,
        }
    }

    /// Remembers a connection just admitted, here and in the registry. A
    /// revocation that reached this replica while the token was being
    /// decided did not see it among the sessions; the list is read again
    /// after recording, so one of the two sees the other.
    pub(crate) fn admitted(
        self: &Arc<Self>,
        issuer: &str,
        user: &str,
        expires: u64,
        session: &Session,
    ) {
        let Some(admitted) = self.sessions.record(issuer, user, expires, session) else {
            return;
        };
        let connection = Connection {
            server: admitted.server.clone(),
            cid: admitted.cid,
        };
        let presented = admitted.presented();
        if let Some(registry) = &self.registry {
            if !registry.record(&presented, &connection, expires) {
                self.metrics.session_registry_failures.inc();
            }
        }
        if let Some((covered, _)) = self.list.covers(&presented, unix_now()) {
            let kicker = self.clone();
            tokio::spawn(async move {
                let outcome = kicker.kick(&connection).await;
                kicker.sessions.forget(&connection.server, connection.cid);
                if let Kicked::Closed = outcome {
                    kicker.metrics.revocation_connections_closed.inc();
                }
                tracing::info!(
                    covered = %covered,
                    server = %crate::text::name(&connection.server),
                    cid = connection.cid,
                    "revocation: a connection admitted while the revocation arrived is closed"
                );
            });
        }
    }

    /// Closes every live connection `revocation` covers; logs how many.
    pub(crate) async fn enforce(&self, revocation: Revocation) {
        let now = unix_now();
        let own: Vec<Connection> = self
            .sessions
            .covered(&revocation, now)
            .iter()
            .map(|a| Connection {
                server: a.server.clone(),
                cid: a.cid,
            })
            .collect();
        let mut tally = self.kick_all(own.clone()).await;
        for c in &own {
            self.sessions.forget(&c.server, c.cid);
        }
        let mut registry_failed = None;
        if let Some(registry) = &self.registry {
            match registry.covered(&revocation, now).await {
                Ok(filed) => {
                    let seen: HashSet<&Connection> = own.iter().collect();
                    let others: Vec<Connection> =
                        filed.into_iter().filter(|c| !seen.contains(c)).collect();
                    tally.add(self.kick_all(others).await);
                }
                Err(e) => registry_failed = Some(e),
            }
        }
        self.metrics
            .record_revocation(&revocation.stamp.signal, tally.closed);
        tracing::info!(
            issuer = %revocation.issuer,
            covered = %revocation.covered,
            signal = %crate::text::name(&revocation.stamp.signal),
            connections_closed = tally.closed,
            already_closed = tally.gone,
            failed = tally.failed,
            registry_error = %registry_failed.as_deref().map(crate::text::reason).unwrap_or_default(),
            "revocation enforced"
        );
    }

    async fn kick_all(&self, connections: Vec<Connection>) -> Tally {
        let outcomes: Vec<(Connection, Kicked)> = futures::stream::iter(connections)
            .map(|c| async move {
                let outcome = self.kick(&c).await;
                (c, outcome)
            })
            .buffer_unordered(KICKERS)
            .collect()
            .await;
        let mut tally = Tally::default();
        for (c, outcome) in outcomes {
            match outcome {
                Kicked::Closed => tally.closed += 1,
                Kicked::Gone => tally.gone += 1,
                Kicked::Failed(e) => {
                    tally.failed += 1;
                    tracing::warn!(
                        server = %crate::text::name(&c.server),
                        cid = c.cid,
                        error = %e,
                        "revocation: a connection could not be closed"
                    );
                }
            }
        }
        tally
    }

    async fn kick(&self, connection: &Connection) -> Kicked {
        // The id comes from nats-server's signed request or the registry;
        // still, it becomes a subject token here.
        if !is_server_id(&connection.server) {
            return Kicked::Failed("the server id is not an nkey".into());
        }
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", connection.server);
        let body = serde_json::json!({ "cid": connection.cid }).to_string();
        let answer = match tokio::time::timeout(
            KICK_WAIT,
            self.system.request(subject, body.into()),
        )
        .await
        {
            Err(_) => return Kicked::Failed(format!("no answer within {KICK_WAIT:?}")),
            // No server of that id: it is gone, and its connections too.
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Kicked::Gone
            }
            Ok(Err(e)) => return Kicked::Failed(e.to_string()),
            Ok(Ok(answer)) => answer,
        };
        let answer: serde_json::Value = match serde_json::from_slice(&answer.payload) {
            Ok(v) => v,
            Err(e) => return Kicked::Failed(e.to_string()),
        };
        match answer.get("error") {
            Some(e) if e.to_string().contains("no such client") => Kicked::Gone,
            Some(e) => Kicked::Failed(crate::text::reason(&e.to_string())),
            None => Kicked::Closed,
        }
    }
}

#[derive(Default)]
struct Tally {
    closed: u64,
    gone: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.closed += other.closed;
        self.gone += other.gone;
        self.failed += other.failed;
    }
}
