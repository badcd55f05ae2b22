//! Closes the live connections a revocation covers, through a login in the
//! system account (`$SYS.REQ.SERVER.<server id>.KICK` with the client id),
//! on whichever server of the cluster they are: those this replica
//! admitted (`Sessions`), and those any replica filed in the shared
//! registry (`Registry`), which a replica that admitted them and has
//! restarted since no longer remembers.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::Semaphore;

use crate::backoff::Backoff;
use crate::callout::Session;
use crate::clock::unix_now;
use crate::metrics::Metrics;
use crate::policy::revocations::{Covered, Revocation, RevocationList};
use crate::service::registry::{is_server_id, Connection, Registry};
use crate::service::sessions::Sessions;

/// How long one server may take to answer a KICK.
const KICK_WAIT: Duration = Duration::from_secs(2);

/// How long a revocation may take to read the registry.
const REGISTRY_WAIT: Duration = Duration::from_secs(10);

/// KICKs in flight at once, per revocation.
const KICKERS: usize = 64;

/// Revocations enforced at once: a burst of logouts queues here rather
/// than opening a registry consumer each.
const ENFORCING: usize = 4;

/// What became of one KICK.
enum Kicked {
    Closed,
    /// Closed already ("no such client").
    Gone,
    /// No server of that id answers: it has left the cluster, and its
    /// connections with it (or the system login reaches no server, which
    /// the check at start reports).
    ServerGone,
    Failed(String),
}

pub(crate) struct Kicker {
    system: async_nats::Client,
    sessions: Sessions,
    registry: OnceLock<Registry>,
    list: Arc<RevocationList>,
    metrics: Arc<Metrics>,
    /// The `at` of the last revocation enforced per issuer and whom: the
    /// replica that received one enforces it at once, and again when the
    /// bucket echoes it, which this skips.
    enforced: moka::sync::Cache<(String, Covered), u64>,
    enforcing: Semaphore,
}

/// How a system login is found to work, or not, at start.
const SYSTEM_CHECK: &str = "$SYS.REQ.SERVER.PING";

impl Kicker {
    /// The kicker, and in the background: the session registry opened
    /// (again and again until it is: JetStream may still be electing its
    /// leader), and a check that the system login reaches the servers.
    pub(crate) fn start(
        system: async_nats::Client,
        client: async_nats::Client,
        registry_bucket: String,
        registry_max_age: Duration,
        list: Arc<RevocationList>,
        metrics: Arc<Metrics>,
    ) -> Arc<Kicker> {
        let kicker = Arc::new(Kicker {
            system,
            sessions: Sessions::new(),
            registry: OnceLock::new(),
            list,
            metrics,
            enforced: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(registry_max_age)
                .build(),
            enforcing: Semaphore::new(ENFORCING),
        });
        tokio::spawn(
            kicker
                .clone()
                .open_registry(client, registry_bucket, registry_max_age),
        );
        tokio::spawn(kicker.clone().check_system_login());
        kicker
    }

    async fn open_registry(
        self: Arc<Self>,
        client: async_nats::Client,
        bucket: String,
        max_age: Duration,
    ) {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
        let mut warned = false;
        loop {
            let metrics = self.metrics.clone();
            match Registry::open(client.clone(), &bucket, max_age, move || {
                metrics.session_registry_failures.inc();
            })
            .await
            {
                Ok(registry) => {
                    let _ = self.registry.set(registry);
                    tracing::info!(bucket = %bucket, "session registry open");
                    return;
                }
                Err(e) if !std::mem::replace(&mut warned, true) => tracing::warn!(
                    error = %e,
                    "session registry unavailable (trying again): until it opens, a revocation closes only the connections this replica admitted"
                ),
                Err(e) => tracing::debug!(error = %e, "session registry still unavailable"),
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    }

    /// A system login that reaches no server (a user of another account,
    /// say) would see every KICK answered by no one: said at start, not
    /// found out at the first revocation.
    async fn check_system_login(self: Arc<Self>) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while self.system.connection_state() != async_nats::connection::State::Connected {
            tokio::time::sleep(backoff.next_wait()).await;
        }
        match tokio::time::timeout(KICK_WAIT, self.system.request(SYSTEM_CHECK, "".into())).await {
            Ok(Ok(_)) => tracing::debug!("revocation: the system-account login reaches the servers"),
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => tracing::error!(
                "revocation: the system-account login (revocation.system_*) reaches no server: no one answers {SYSTEM_CHECK}; is it a user of the system account? Revocations refuse reconnects but cannot close live connections"
            ),
            Ok(Err(e)) => tracing::warn!(error = %e, "revocation: the system-account login could not be checked"),
            Err(_) => tracing::warn!("revocation: no server answered {SYSTEM_CHECK} within {KICK_WAIT:?}"),
        }
    }

    /// Remembers a connection just admitted, here and in the registry. A
    /// revocation that reached this replica while the token was being
    /// decided did not see it among the sessions; the list is read again
    /// after recording, so one of the two sees the other. (nats-server
    /// lists a client before it is authorized, so a KICK sent before the
    /// answer still finds it.)
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
        if let Some(registry) = self.registry.get() {
            if !registry.record(&presented, &connection, expires) {
                self.metrics.session_registry_failures.inc();
            }
        }
        if let Some((covered, _)) = self.list.covers(&presented, unix_now()) {
            let kicker = self.clone();
            tokio::spawn(async move {
                let tally = kicker.kick_all(vec![connection.clone()]).await;
                tracing::info!(
                    covered = %covered,
                    server = %crate::text::name(&connection.server),
                    cid = connection.cid,
                    connections_closed = tally.closed,
                    failed = tally.failed,
                    "revocation: a connection admitted while the revocation arrived"
                );
            });
        }
    }

    /// Closes every live connection `revocation` covers; logs how many.
    /// Once per revocation: again (the bucket's echo of one this replica
    /// received) does nothing.
    pub(crate) async fn enforce(&self, revocation: Revocation) {
        let key = (revocation.issuer.clone(), revocation.covered.clone());
        if self
            .enforced
            .get(&key)
            .is_some_and(|at| at >= revocation.stamp.at)
        {
            return;
        }
        self.enforced.insert(key, revocation.stamp.at);
        let _permit = self.enforcing.acquire().await;
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
        let mut registry_error = String::new();
        if let Some(registry) = self.registry.get() {
            match tokio::time::timeout(REGISTRY_WAIT, registry.covered(&revocation, now)).await {
                Ok(Ok(filed)) => {
                    let seen: HashSet<&Connection> = own.iter().collect();
                    let others: Vec<Connection> =
                        filed.into_iter().filter(|c| !seen.contains(c)).collect();
                    tally.add(self.kick_all(others).await);
                }
                Ok(Err(e)) => registry_error = crate::text::reason(&e),
                Err(_) => registry_error = format!("no answer within {REGISTRY_WAIT:?}"),
            }
        } else {
            registry_error = "not open yet".into();
        }
        self.metrics.record_revocation(&revocation.stamp.signal);
        tracing::info!(
            issuer = %crate::text::name(&revocation.issuer),
            covered = %revocation.covered,
            signal = %crate::text::name(&revocation.stamp.signal),
            connections_closed = tally.closed,
            already_closed = tally.gone,
            servers_gone = tally.servers_gone,
            failed = tally.failed,
            registry_error = %registry_error,
            "revocation enforced"
        );
    }

    /// KICKs `connections`; this replica forgets those that are closed
    /// (a failed one stays, for the next revocation to try again).
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
                Kicked::ServerGone => tally.servers_gone += 1,
                Kicked::Failed(e) => {
                    tally.failed += 1;
                    tracing::warn!(
                        server = %crate::text::name(&c.server),
                        cid = c.cid,
                        error = %e,
                        "revocation: a connection could not be closed"
                    );
                    continue;
                }
            }
            self.sessions.forget(&c.server, c.cid);
        }
        self.metrics
            .revocation_connections_closed
            .inc_by(tally.closed);
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
            Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => {
                return Kicked::ServerGone
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
    servers_gone: u64,
    failed: u64,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.closed += other.closed;
        self.gone += other.gone;
        self.servers_gone += other.servers_gone;
        self.failed += other.failed;
    }
}
