//! Keeps the grants store in step with its NATS KV bucket: reads the
//! bucket (creating it with history 1 if it does not exist) and follows
//! every change. After any failure it stops applying KV grants and reads
//! the bucket again from the start, so deletes missed meanwhile are seen.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;

use crate::backoff::Backoff;
use crate::policy::grants::{self, GrantStore, Grants};

/// Watches `bucket` until the task is dropped.
pub(super) async fn run(store: Arc<GrantStore>, bucket: String, client: async_nats::Client) {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        let Err(e) = watch(&store, &bucket, &client).await;
        if store.forget_all() {
            backoff.reset();
        }
        tracing::warn!(bucket = %bucket, error = %e, "KV grants: watch failed; no KV grants apply until the bucket is read again");
        tokio::time::sleep(backoff.next_wait()).await;
    }
}

/// Reads the bucket and follows it; returns only on failure.
async fn watch(
    store: &GrantStore,
    bucket: &str,
    client: &async_nats::Client,
) -> Result<Infallible, String> {
    let js = jetstream::new(client.clone());
    let kv_store = match js.get_key_value(bucket).await {
        Ok(s) => s,
        Err(_) => js
            .create_key_value(kv::Config {
                bucket: bucket.to_string(),
                description: "nats-oidc-callout grants: <issuer>.<user> → {roles, scopes}".into(),
                history: 1,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot open or create bucket {bucket:?}: {e}"))?,
    };
    let mut watch = kv_store
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    let empty = kv_store.status().await.map_err(|e| e.to_string())?.values() == 0;
    // The first pass builds a fresh map and replaces the old one when it is
    // complete: a grant deleted while the watch was down goes away.
    let mut fresh: Option<Grants> = Some(Grants::new());
    if empty {
        install(store, bucket, fresh.take().unwrap_or_default());
    }
    while let Some(entry) = watch.next().await {
        let entry = entry.map_err(|e| e.to_string())?;
        let grant = match entry.operation {
            kv::Operation::Put => grants::parse(&entry.key, &entry.value),
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match fresh.as_mut() {
            Some(map) => {
                grants::apply(map, entry.key, grant);
                if entry.delta == 0 {
                    install(store, bucket, fresh.take().unwrap_or_default());
                }
            }
            None => {
                // A change of someone's permissions: said, so that an
                // operator can see when it took effect.
                tracing::info!(
                    bucket = %bucket,
                    key = %crate::text::name(&entry.key),
                    revision = entry.revision,
                    granted = grant.is_some(),
                    "KV grant changed"
                );
                store.update(entry.key, grant);
            }
        }
    }
    Err("the watch ended".into())
}

fn install(store: &GrantStore, bucket: &str, map: Grants) {
    let n = map.len();
    store.install(map);
    tracing::info!(bucket = %bucket, grants = n, "KV grants loaded");
}
