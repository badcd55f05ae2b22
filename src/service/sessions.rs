//! The connections this replica admitted, by the names nats-server knows
//! them by (its server id and the client id), and whom their tokens name:
//! what a revocation closes with `$SYS.REQ.SERVER.<id>.KICK`. Bounded, and
//! each entry leaves when its own user JWT expires (nats-server has closed
//! the connection by then), whatever `callout.max_user_ttl` says by then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::callout::Session;
use crate::clock::unix_now;
use crate::policy::revocations::{Presented, Revocation};

/// At most this many connections are remembered; beyond, the least
/// recently recorded are forgotten (LRU: TinyLFU, moka's default, would
/// rather drop the newest) and found through the session registry only.
const CAPACITY: u64 = 1_000_000;

/// Each entry lives until its connection's user JWT expires.
struct UntilExpiry;

impl moka::Expiry<(String, u64), Arc<Admitted>> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &(String, u64),
        admitted: &Arc<Admitted>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_secs(
            admitted.expires.saturating_sub(unix_now()),
        ))
    }
}

/// What is kept of one: the names a revocation can cover, not the whole
/// token (a million of them).
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) server: String,
    pub(crate) cid: u64,
    issuer: String,
    user: String,
    sub: Option<String>,
    sid: Option<String>,
    iat: Option<u64>,
    expires: u64,
}

impl Admitted {
    pub(crate) fn presented(&self) -> Presented<'_> {
        Presented {
            issuer: &self.issuer,
            sub: self.sub.as_deref(),
            sid: self.sid.as_deref(),
            user: &self.user,
            iat: self.iat,
        }
    }
}

pub(crate) struct Sessions {
    admitted: moka::sync::Cache<(String, u64), Arc<Admitted>>,
}

impl Sessions {
    pub(crate) fn new() -> Sessions {
        Sessions {
            admitted: moka::sync::Cache::builder()
                .max_capacity(CAPACITY)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(UntilExpiry)
                .build(),
        }
    }

    /// An admitted connection of a token (config users are not revoked).
    pub(crate) fn record(
        &self,
        issuer: &str,
        user: &str,
        expires: u64,
        session: &Session,
    ) -> Option<Arc<Admitted>> {
        let (Some(cid), Some(token)) = (session.cid, &session.token) else {
            return None;
        };
        let presented = Presented::of(issuer, user, &token.claims);
        let admitted = Arc::new(Admitted {
            server: session.server.clone(),
            cid,
            issuer: issuer.to_string(),
            user: user.to_string(),
            sub: presented.sub.map(str::to_string),
            sid: presented.sid.map(str::to_string),
            iat: presented.iat,
            expires,
        });
        self.admitted
            .insert((session.server.clone(), cid), admitted.clone());
        Some(admitted)
    }

    /// The live connections `revocation` covers.
    pub(crate) fn covered(&self, revocation: &Revocation, now: u64) -> Vec<Arc<Admitted>> {
        self.admitted
            .iter()
            .map(|(_, a)| a)
            .filter(|a| a.expires > now && revocation.covers(&a.presented()))
            .collect()
    }

    /// Forgets a connection that is closed.
    pub(crate) fn forget(&self, server: &str, cid: u64) {
        self.admitted.invalidate(&(server.to_string(), cid));
    }
}
