//! Grants kept in a NATS KV bucket (`grants.kv_bucket`), beside the TOML
//! role table: per user, extra roles and the scopes it is entitled to.
//!
//! This is the in-memory copy a decision reads, so a decision never waits
//! for JetStream; `service::kv_watch` keeps it in step with the bucket, and a
//! grant written there applies to the user's next connect. Key: `<issuer
//! name>.<user name>` (`config.<name>` for `[users.*]`); value: `{"roles":
//! [...], "scopes": [...]}`. A value that does not parse grants nothing (and
//! is logged), so a mistake in the bucket can only take permissions away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

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

/// The grants by key, and whether the bucket has been read in full.
#[derive(Default)]
pub struct GrantStore {
    grants: RwLock<HashMap<String, Arc<StoredGrant>>>,
    loaded: AtomicBool,
}

pub(crate) type Grants = HashMap<String, Arc<StoredGrant>>;

/// The key of a user's grant.
pub(crate) fn key(issuer: &str, user: &str) -> String {
    format!("{issuer}.{user}")
}

impl GrantStore {
    pub fn new() -> Arc<GrantStore> {
        Arc::new(GrantStore::default())
    }

    /// Whether the bucket's content has been read once since the last
    /// failure.
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

    /// Replaces every grant with a complete read of the bucket.
    pub fn install(&self, grants: Grants) {
        *self.grants.write().unwrap_or_else(|e| e.into_inner()) = grants;
        self.loaded.store(true, Ordering::Release);
    }

    /// One change seen after the complete read.
    pub fn update(&self, key: String, grant: Option<StoredGrant>) {
        apply(
            &mut self.grants.write().unwrap_or_else(|e| e.into_inner()),
            key,
            grant,
        );
    }

    /// Without a watch a deleted grant would go on applying: no grant
    /// applies until the bucket has been read again. Returns whether the
    /// store was loaded.
    pub fn forget_all(&self) -> bool {
        let was_loaded = self.loaded.swap(false, Ordering::AcqRel);
        self.grants
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        was_loaded
    }
}

/// Puts (`Some`) or removes (`None`) one grant.
pub(crate) fn apply(map: &mut Grants, key: String, grant: Option<StoredGrant>) {
    match grant {
        Some(g) => {
            map.insert(key, Arc::new(g));
        }
        None => {
            map.remove(&key);
        }
    }
}

/// A stored value; one that does not parse grants nothing.
pub(crate) fn parse(key: &str, value: &[u8]) -> Option<StoredGrant> {
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
