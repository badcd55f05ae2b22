//! Closes the live connections a revocation covers: each replica closes
//! those it admitted, through a login in the system account
//! (`$SYS.REQ.SERVER.<server id>.KICK` with the client id), on whichever
//! server of the cluster they are.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::unix_now;
use crate::policy::revocations::Revocation;
use crate::service::sessions::{Admitted, Sessions};

/// How long one server may take to answer a KICK.
const KICK_WAIT: Duration = Duration::from_secs(2);

pub(crate) struct Kicker {
    system: async_nats::Client,
    sessions: Arc<Sessions>,
}

impl Kicker {
    pub(crate) fn new(system: async_nats::Client, sessions: Arc<Sessions>) -> Kicker {
        Kicker { system, sessions }
    }

    /// Closes every connection this replica admitted that `revocation`
    /// covers; logs how many.
    pub(crate) async fn enforce(&self, revocation: Revocation) {
        let covered = self.sessions.covered(&revocation, unix_now());
        let mut closed = 0;
        for admitted in &covered {
            match self.kick(admitted).await {
                Ok(()) => closed += 1,
                Err(e) => tracing::warn!(
                    server = %crate::text::name(&admitted.server),
                    cid = admitted.cid,
                    error = %e,
                    "revocation: a connection could not be closed"
                ),
            }
            self.sessions.forget(admitted);
        }
        tracing::info!(
            issuer = %revocation.issuer,
            covered = %revocation.covered,
            signal = %crate::text::name(&revocation.stamp.signal),
            connections_closed = closed,
            "revocation enforced on this replica's connections"
        );
    }

    async fn kick(&self, admitted: &Admitted) -> Result<(), String> {
        // The id comes from nats-server's signed request; still, it becomes
        // a subject token here, and a server id is an nkey (letters and
        // digits).
        if admitted.server.is_empty() || !admitted.server.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err("the server id is not an nkey".into());
        }
        let subject = format!("$SYS.REQ.SERVER.{}.KICK", admitted.server);
        let body = serde_json::json!({ "cid": admitted.cid }).to_string();
        let answer = tokio::time::timeout(KICK_WAIT, self.system.request(subject, body.into()))
            .await
            .map_err(|_| format!("no answer within {KICK_WAIT:?}"))?
            .map_err(|e| e.to_string())?;
        let answer: serde_json::Value =
            serde_json::from_slice(&answer.payload).map_err(|e| e.to_string())?;
        match answer.get("error") {
            // Gone already is as good as closed.
            Some(e) if !e.to_string().contains("no such client") => {
                Err(crate::text::reason(&e.to_string()))
            }
            _ => Ok(()),
        }
    }
}
