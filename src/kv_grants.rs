//! Grants kept in a NATS KV bucket (`grants.kv_bucket`), beside the TOML
//! role table: per user, extra roles and the scopes it is entitled to.
//!
//! The service watches the bucket and keeps it in memory, so a decision
//! never waits for JetStream and a grant written there applies to the
//! user's next connect. Key: `<issuer name>.<user name>` (`config.<name>` for
//! `[users.*]`); value: `{"roles": [...], "scopes": [...]}`. A value that
//! does not parse grants nothing (and is logged), so a mistake in the bucket
//! can only take permissions away.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StoredGrant {
    /// `[roles.*]` table names, as written (namespaced ones included).
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
}

pub struct KvGrants {
    bucket: String,
    grants: RwLock<HashMap<String, Arc<StoredGrant>>>,
    loaded: AtomicBool,
}

/// The key of a user's grant.
pub fn key(issuer: &str, user: &str) -> String {
    format!("{issuer}.{user}")
}

impl KvGrants {
    pub fn new(bucket: String) -> Arc<KvGrants> {
        Arc::new(KvGrants {
            bucket,
            grants: RwLock::new(HashMap::new()),
            loaded: AtomicBool::new(false),
        })
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Whether the bucket's content has been read once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    pub fn get(&self, issuer: &str, user: &str) -> Option<Arc<StoredGrant>> {
        self.grants
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key(issuer, user))
            .cloned()
    }

    /// Watches the bucket until the task is dropped, re-reading it from the
    /// start after any failure (so deletes missed meanwhile are seen).
    pub async fn run(self: Arc<Self>, client: async_nats::Client) {
        let mut backoff = Duration::from_millis(250);
        loop {
            let Err(e) = self.watch(&client).await;
            // Without a watch a deleted grant would go on applying: stop
            // applying any until the bucket has been read again.
            let was_loaded = self.loaded.swap(false, Ordering::AcqRel);
            self.grants
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            tracing::warn!(bucket = %self.bucket, error = %e, "KV grants: watch failed; no KV grants apply until the bucket is read again");
            if was_loaded {
                backoff = Duration::from_millis(250);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    }

    /// Reads the bucket and follows it; returns only on failure.
    async fn watch(&self, client: &async_nats::Client) -> Result<Infallible, String> {
        let js = jetstream::new(client.clone());
        let store = match js.get_key_value(&self.bucket).await {
            Ok(store) => store,
            Err(_) => js
                .create_key_value(kv::Config {
                    bucket: self.bucket.clone(),
                    description: "nats-oidc-callout grants: <issuer>.<user> → {roles, scopes}"
                        .into(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot open or create bucket {:?}: {e}", self.bucket))?,
        };
        let mut watch = store
            .watch_with_history(">")
            .await
            .map_err(|e| e.to_string())?;
        let empty = store.status().await.map_err(|e| e.to_string())?.values() == 0;
        // The first pass builds a fresh map and replaces the old one when it
        // is complete: a grant deleted while the watch was down goes away.
        let mut fresh: Option<HashMap<String, Arc<StoredGrant>>> = Some(HashMap::new());
        if empty {
            self.install(fresh.take().unwrap_or_default());
        }
        while let Some(entry) = watch.next().await {
            let entry = entry.map_err(|e| e.to_string())?;
            let grant = match entry.operation {
                kv::Operation::Put => parse(&entry.key, &entry.value),
                kv::Operation::Delete | kv::Operation::Purge => None,
            };
            match fresh.as_mut() {
                Some(map) => {
                    apply(map, entry.key, grant);
                    if entry.delta == 0 {
                        self.install(fresh.take().unwrap_or_default());
                    }
                }
                None => {
                    let mut map = self.grants.write().unwrap_or_else(|e| e.into_inner());
                    apply(&mut map, entry.key, grant);
                }
            }
        }
        Err("the watch ended".into())
    }

    fn install(&self, map: HashMap<String, Arc<StoredGrant>>) {
        let n = map.len();
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = map;
        self.loaded.store(true, Ordering::Release);
        tracing::info!(bucket = %self.bucket, grants = n, "KV grants loaded");
    }
}

fn apply(map: &mut HashMap<String, Arc<StoredGrant>>, key: String, grant: Option<StoredGrant>) {
    match grant {
        Some(g) => {
            map.insert(key, Arc::new(g));
        }
        None => {
            map.remove(&key);
        }
    }
}

fn parse(key: &str, value: &[u8]) -> Option<StoredGrant> {
    match serde_json::from_slice(value) {
        Ok(grant) => Some(grant),
        Err(e) => {
            tracing::warn!(key, error = %e, "KV grants: value is not {{\"roles\": [...], \"scopes\": [...]}}; it grants nothing");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_strictly_and_a_bad_one_grants_nothing() {
        assert_eq!(
            parse("k", br#"{"roles":["reader"],"scopes":["r1"]}"#),
            Some(StoredGrant {
                roles: vec!["reader".into()],
                scopes: vec!["r1".into()],
            })
        );
        assert_eq!(parse("k", b"{}"), Some(StoredGrant::default()));
        for bad in [
            &b"reader"[..],
            br#"{"role":["admin"]}"#,
            br#"{"roles":"admin"}"#,
        ] {
            assert_eq!(parse("k", bad), None);
        }
    }
}
