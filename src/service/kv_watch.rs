//! Keeps an in-memory copy of a NATS KV bucket in step with it: the grants
//! (`grants.kv_bucket`) and the revocation list (`revocation.kv_bucket`).
//! Reads the bucket (creating it if it does not exist), installs the
//! complete read at once, then follows every change. After any failure it
//! tells the copy (which decides what a failure means for it) and reads the
//! bucket again from the start, so changes missed meanwhile are seen.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;

use crate::backoff::Backoff;
use crate::clock::unix_now;
use crate::policy::grants::{self, GrantStore, Grants, StoredGrant};
use crate::policy::revocations::{self, Entries, Revocation};
use crate::service::revoke::RevocationFeed;

/// A bucket's in-memory copy.
pub(super) trait Mirror: Send + Sync + 'static {
    /// One parsed entry.
    type Entry: Send;
    /// A complete read, built before it replaces the copy.
    type Map: Default + Send;

    /// Names the copy in the log ("KV grants").
    const WHAT: &'static str;

    /// What holds while the watch is down, for the log.
    const MEANWHILE: &'static str;

    /// How the bucket is created when it does not exist.
    fn bucket_config(&self, bucket: &str) -> kv::Config;

    /// A stored value (`None`: it does not parse, or was deleted).
    fn parse(key: &str, value: &[u8]) -> Option<Self::Entry>;

    /// Adds one entry of the complete read.
    fn collect(map: &mut Self::Map, key: String, entry: Option<Self::Entry>);

    fn install(&self, map: Self::Map);

    /// One change after the complete read.
    fn update(&self, key: String, entry: Option<Self::Entry>, revision: u64);

    /// The watch failed: what the copy does meanwhile. Returns whether it
    /// had been loaded (the back-off starts over then).
    fn watch_failed(&self) -> bool;
}

/// Watches `bucket` until the task is dropped.
pub(super) async fn run<M: Mirror>(copy: Arc<M>, bucket: String, client: async_nats::Client) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let Err(e) = watch(&*copy, &bucket, &client).await;
        if copy.watch_failed() {
            backoff.reset();
        }
        tracing::warn!(bucket = %bucket, error = %e, "{}: watch failed; {}", M::WHAT, M::MEANWHILE);
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Reads the bucket and follows it; returns only on failure.
async fn watch<M: Mirror>(
    copy: &M,
    bucket: &str,
    client: &async_nats::Client,
) -> Result<Infallible, String> {
    let js = jetstream::new(client.clone());
    let kv_store = match js.get_key_value(bucket).await {
        Ok(s) => s,
        Err(_) => js
            .create_key_value(copy.bucket_config(bucket))
            .await
            .map_err(|e| format!("cannot open or create bucket {bucket:?}: {e}"))?,
    };
    let mut watch = kv_store
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    let empty = kv_store.status().await.map_err(|e| e.to_string())?.values() == 0;
    // The first pass builds a fresh map and installs it when complete.
    let mut fresh: Option<M::Map> = Some(M::Map::default());
    if empty {
        copy.install(fresh.take().unwrap_or_default());
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let parsed = match entry.operation {
            kv::Operation::Put => M::parse(&entry.key, &entry.value),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match fresh.as_mut() {
            Some(map) => {
                M::collect(map, entry.key, parsed);
                if entry.delta == 0 {
                    copy.install(fresh.take().unwrap_or_default());
                }
            }
            None => copy.update(entry.key, parsed, entry.revision),
        }
    }
    Err("the watch ended".into())
}

/// The grants: a failed watch takes every KV grant away until the bucket is
/// read again (a grant deleted meanwhile must not go on applying).
impl Mirror for GrantStore {
    type Entry = StoredGrant;
    type Map = Grants;
    const WHAT: &'static str = "KV grants";
    const MEANWHILE: &'static str = "no KV grants apply until the bucket is read again";

    fn bucket_config(&self, bucket: &str) -> kv::Config {
        kv::Config {
            bucket: bucket.to_string(),
            description: "nats-oidc-callout grants: <issuer>.<user> → {roles, scopes}".into(),
            history: 1,
            ..Default::default()
        }
    }

    fn parse(key: &str, value: &[u8]) -> Option<StoredGrant> {
        grants::parse(key, value)
    }

    fn collect(map: &mut Grants, key: String, entry: Option<StoredGrant>) {
        grants::apply(map, key, entry);
    }

    fn install(&self, map: Grants) {
        let n = map.len();
        GrantStore::install(self, map);
        tracing::info!(grants = n, "KV grants loaded");
    }

    fn update(&self, key: String, entry: Option<StoredGrant>, revision: u64) {
        // A change of someone's permissions: said, so that an operator can
        // see when it took effect.
        tracing::info!(
            key = %crate::text::name(&key),
            revision,
            granted = entry.is_some(),
            "KV grant changed"
        );
        GrantStore::update(self, key, entry);
    }

    fn watch_failed(&self) -> bool {
        self.forget_all()
    }
}

/// The revocation list: a failed watch keeps what was read (forgetting
/// would admit revoked tokens again); a deleted entry is not an undo. Each
/// new revocation also closes the connections this replica admitted that
/// it covers.
impl Mirror for RevocationFeed {
    type Entry = Revocation;
    type Map = Entries;
    const WHAT: &'static str = "revocation list";
    const MEANWHILE: &'static str =
        "the revocations read before stay in force; reading the bucket again";

    fn bucket_config(&self, bucket: &str) -> kv::Config {
        kv::Config {
            bucket: bucket.to_string(),
            description:
                "nats-oidc-callout revocations: <issuer>.<sub|sid|user>.<base64url> → {at, until, signal}"
                    .into(),
            history: 1,
            ..Default::default()
        }
    }

    fn parse(key: &str, value: &[u8]) -> Option<Revocation> {
        revocations::parse(key, value)
    }

    fn collect(map: &mut Entries, _key: String, entry: Option<Revocation>) {
        if let Some(r) = entry {
            revocations::merge(map, (r.issuer, r.covered), r.stamp);
        }
    }

    fn install(&self, map: Entries) {
        // What the read holds that the list does not: missed while the
        // watch was down, or made while this replica was not running
        // (connections admitted before may still be open).
        let news = self.list.news(&map);
        self.list.install(map, unix_now());
        tracing::info!(revocations = self.list.len(), "revocation list loaded");
        for r in news.into_iter().filter(|r| r.stamp.until >= unix_now()) {
            (self.forget)(&r);
            self.enforce(r);
        }
    }

    fn update(&self, key: String, entry: Option<Revocation>, revision: u64) {
        match entry {
            Some(r) => {
                let (issuer, covered, at) = (
                    crate::text::name(&r.issuer),
                    r.covered.to_string(),
                    r.stamp.at,
                );
                let signal = crate::text::name(&r.stamp.signal);
                self.apply(r);
                // After applying: once this is said, the list and the
                // token cache know it.
                tracing::info!(issuer = %issuer, covered = %covered, at, signal = %signal, revision, "revocation");
            }
            None => tracing::debug!(
                key = %crate::text::name(&key),
                revision,
                "revocation list: an entry was deleted; it stays in force until its until"
            ),
        }
    }

    fn watch_failed(&self) -> bool {
        self.list.is_loaded()
    }
}
