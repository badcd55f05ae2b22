//! Writes revocations into the revocation list's bucket, where every
//! replica reads them (`kv_watch`), and applies them to this replica at
//! once, so that the replica that received a logout enforces it before
//! the bucket echoes it back, and even if the bucket cannot be written.

use std::sync::Arc;

use async_nats::jetstream::{self, context, kv};
use tokio::sync::OnceCell;

use crate::oidc::LogoutRequest;
use crate::policy::revocations::{Covered, Revocation, RevocationList, Stamp};
use crate::service::backchannel::{shown, LogoutFailed, LogoutSink};
use crate::text;

/// The revocation list as the bucket's watch feeds it, and what closes
/// the connections a new revocation covers (with a system-account login).
pub(crate) struct RevocationFeed {
    pub(crate) list: Arc<RevocationList>,
    pub(crate) kicker: Option<Arc<crate::service::kick::Kicker>>,
    /// Takes what a revocation covers out of the token cache of the
    /// callout deciding now.
    pub(crate) forget: Box<dyn Fn(&Revocation) + Send + Sync>,
}

impl RevocationFeed {
    /// A revocation from now on: in the list, out of the token cache, and
    /// the connections it covers closed.
    pub(crate) fn apply(&self, revocation: Revocation) {
        self.list.update(revocation.clone());
        (self.forget)(&revocation);
        self.enforce(revocation);
    }

    /// Closes what `revocation` covers, in the background.
    pub(crate) fn enforce(&self, revocation: Revocation) {
        if let Some(kicker) = &self.kicker {
            let kicker = kicker.clone();
            tokio::spawn(async move { kicker.enforce(revocation).await });
        }
    }
}

#[derive(Clone)]
pub(crate) struct Revoker {
    js: jetstream::Context,
    bucket: String,
    store: Arc<OnceCell<kv::Store>>,
    list: Arc<RevocationList>,
    /// Where a revocation is applied here at once (the service); the
    /// `revoke` command only writes the bucket.
    local: Option<Arc<RevocationFeed>>,
}

impl Revoker {
    pub(crate) fn new(client: async_nats::Client, bucket: &str, list: Arc<RevocationList>) -> Self {
        Revoker {
            js: jetstream::new(client),
            bucket: bucket.to_string(),
            store: Arc::default(),
            list,
            local: None,
        }
    }

    /// One that also applies each revocation to this replica at once.
    pub(crate) fn applying_to(mut self, feed: Arc<RevocationFeed>) -> Self {
        self.local = Some(feed);
        self
    }

    /// The stamp of a revocation of tokens issued at or before `at`.
    pub(crate) fn stamp(&self, at: u64, signal: &str) -> Stamp {
        self.list.stamp(at, signal)
    }

    /// Puts `revocation` into the bucket and this replica's copy.
    pub(crate) async fn revoke(&self, revocation: Revocation) -> Result<(), String> {
        match &self.local {
            Some(feed) => feed.apply(revocation.clone()),
            None => self.list.update(revocation.clone()),
        }
        let store = self
            .store
            .get_or_try_init(|| self.js.get_key_value(&self.bucket))
            .await
            .map_err(|e| self.unopened(&e))?;
        store
            .put(revocation.key(), revocation.value().into())
            .await
            .map_err(|e| format!("revocation bucket {:?}: {e}", self.bucket))?;
        Ok(())
    }

    /// Why the bucket could not be opened. It is not created here: the
    /// watch of every replica creates it at start, so a missing one means
    /// no service ever ran with this bucket (a `revoke` with another
    /// config, say), and an entry put where nothing reads it would only
    /// look like a revocation.
    fn unopened(&self, e: &context::KeyValueError) -> String {
        if missing(e) {
            format!(
                "revocation bucket {:?} does not exist: the service creates it when it starts; is it running with this revocation.kv_bucket?",
                self.bucket
            )
        } else {
            format!("revocation bucket {:?}: {e}", self.bucket)
        }
    }
}

/// Whether opening a bucket failed because its stream does not exist.
fn missing(e: &context::KeyValueError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<context::GetStreamError>())
        .is_some_and(|s| {
            matches!(s.kind(), context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
        })
}

/// What a back-channel logout revokes: the session when the logout names
/// one (OpenID Connect Back-Channel Logout 1.0 §2.4: `sid` identifies the
/// session ended), else every session of the subject.
fn covered(request: &LogoutRequest) -> Option<Covered> {
    match (&request.sid, &request.sub) {
        (Some(sid), _) => Some(Covered::Session(sid.clone())),
        (None, Some(sub)) => Some(Covered::Subject(sub.clone())),
        (None, None) => None,
    }
}

impl LogoutSink for Revoker {
    async fn logout(&self, request: LogoutRequest) -> Result<(), LogoutFailed> {
        let covered = covered(&request)
            .ok_or_else(|| LogoutFailed("the logout names neither sub nor sid".into()))?;
        let revocation = Revocation {
            issuer: request.issuer.clone(),
            covered,
            stamp: self.stamp(request.iat, "backchannel"),
        };
        self.revoke(revocation.clone())
            .await
            .map_err(LogoutFailed)?;
        tracing::info!(
            result = "accepted",
            signal = "backchannel",
            issuer = %revocation.issuer,
            sub = %shown(request.sub.as_deref()),
            sid = %shown(request.sid.as_deref()),
            covered = %revocation.covered,
            at = revocation.stamp.at,
            jti = %text::printable(&request.jti, 64),
            "back-channel logout: revoked; tokens issued until then are refused"
        );
        Ok(())
    }
}
