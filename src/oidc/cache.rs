//! Tokens that verified recently, so a client that reconnects with the same
//! token (every client after a nats-server restart) costs no signature check.
//!
//! Keyed by the SHA-256 of the whole token: a hit means byte-identical input,
//! so nothing an attacker controls can match another token's entry. An entry
//! is only good for the key-set generation that verified it (a key removed
//! from the JWKS takes its tokens out with it) and never at or past the
//! token's `exp`. Only successes are kept: every refusal is decided afresh.
//! A config reload builds a new verifier, and with it an empty cache; a
//! revocation takes out the tokens it covers (the revocation list is
//! checked after the cache either way: this is so that a revoked token is
//! not kept as one that verified).

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use serde_json::{Map, Value};

/// A token whose signature and registered claims verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub claims: Map<String, Value>,
    pub exp: u64,
}

/// Entries also leave after this long, whatever their `exp`: a bound on the
/// memory a burst of distinct tokens can hold.
const TIME_TO_LIVE: Duration = Duration::from_secs(600);

pub(crate) struct TokenCache {
    entries: Option<moka::sync::Cache<[u8; 32], Arc<Entry>>>,
}

struct Entry {
    token: Arc<VerifiedToken>,
    generation: u64,
    weight: u32,
}

pub(crate) type TokenKey = [u8; 32];

impl TokenCache {
    /// Holds entries up to about `capacity_bytes` of memory (each weighed
    /// by [`footprint`]); 0 turns it off.
    pub(crate) fn new(capacity_bytes: u64) -> Self {
        let entries = (capacity_bytes > 0).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(capacity_bytes)
                .weigher(|_, entry: &Arc<Entry>| entry.weight)
                .time_to_live(TIME_TO_LIVE)
                .support_invalidation_closures()
                .build()
        });
        TokenCache { entries }
    }

    /// Forgets every token `covered` says yes to.
    pub(crate) fn forget(&self, covered: impl Fn(&VerifiedToken) -> bool + Send + Sync + 'static) {
        if let Some(entries) = &self.entries {
            // Only fails for a cache built without invalidation closures.
            let _ = entries.invalidate_entries_if(move |_, entry| covered(&entry.token));
        }
    }

    pub(crate) fn forget_key(&self, key: &TokenKey) {
        if let Some(entries) = &self.entries {
            entries.invalidate(key);
        }
    }

    pub(crate) fn key(token: &str) -> TokenKey {
        Sha256::digest(token.as_bytes()).into()
    }

    pub(crate) fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The verified token, if it verified under key-set `generation` and has
    /// not expired at `now`.
    pub(crate) fn get(
        &self,
        key: &TokenKey,
        generation: u64,
        now: u64,
    ) -> Option<Arc<VerifiedToken>> {
        let entry = self.entries.as_ref()?.get(key)?;
        (entry.generation == generation && entry.token.exp > now).then(|| entry.token.clone())
    }

    pub(crate) fn insert(&self, key: TokenKey, generation: u64, token: Arc<VerifiedToken>) {
        if let Some(entries) = &self.entries {
            let weight = u32::try_from(footprint(&token.claims)).unwrap_or(u32::MAX);
            entries.insert(
                key,
                Arc::new(Entry {
                    token,
                    generation,
                    weight,
                }),
            );
        }
    }
}

/// The cache's own memory per entry beyond the claims: the key, moka's
/// entry, its access-order and timer nodes, and the two `Arc`s.
const PER_ENTRY: usize = 320;
/// What the allocator adds to each allocation, rounded up.
const PER_ALLOCATION: usize = 16;
/// A `BTreeMap` node's share per entry beyond its key and value.
const PER_MAP_ENTRY: usize = 16;

/// Roughly the memory one entry holds: its parsed claims (every string,
/// array and map node) and the cache's own bookkeeping. Weighing entries
/// by this rather than by the token's length keeps `token_cache_bytes`
/// near the memory the cache really takes: by length, 8 MiB of tokens held
/// about 50 MiB (the load tool's `users` mode, BENCHMARKS.md).
pub(crate) fn footprint(claims: &Map<String, Value>) -> usize {
    PER_ENTRY + map_bytes(claims)
}

fn map_bytes(map: &Map<String, Value>) -> usize {
    map.iter()
        .map(|(k, v)| {
            std::mem::size_of::<String>()
                + std::mem::size_of::<Value>()
                + PER_MAP_ENTRY
                + k.capacity()
                + PER_ALLOCATION
                + value_bytes(v)
        })
        .sum()
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.capacity() + PER_ALLOCATION,
        Value::Array(a) => {
            a.capacity() * std::mem::size_of::<Value>()
                + PER_ALLOCATION
                + a.iter().map(value_bytes).sum::<usize>()
        }
        Value::Object(m) => map_bytes(m),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(exp: u64) -> Arc<VerifiedToken> {
        Arc::new(VerifiedToken {
            claims: Default::default(),
            exp,
        })
    }

    #[test]
    fn a_hit_needs_the_same_token_the_same_key_generation_and_an_unexpired_token() {
        let cache = TokenCache::new(1000);
        let key = TokenCache::key("a.b.c");
        cache.insert(key, 7, verified(1000));
        assert!(cache.get(&key, 7, 999).is_some());
        assert!(cache.get(&TokenCache::key("a.b.d"), 7, 999).is_none());
        assert!(cache.get(&key, 8, 999).is_none(), "another key set");
        assert!(cache.get(&key, 7, 1000).is_none(), "at exp");
        assert!(cache.get(&key, 7, 5000).is_none(), "past exp");
    }

    #[test]
    fn forgetting_takes_out_the_tokens_it_covers_and_no_other() {
        let cache = TokenCache::new(1000);
        let token = |sub: &str| {
            Arc::new(VerifiedToken {
                claims: serde_json::json!({ "sub": sub })
                    .as_object()
                    .unwrap()
                    .clone(),
                exp: 1000,
            })
        };
        let (ana, bo) = (TokenCache::key("ana"), TokenCache::key("bo"));
        cache.insert(ana, 1, token("ana"));
        cache.insert(bo, 1, token("bo"));
        cache.forget(|t| t.claims["sub"] == "ana");
        // moka applies invalidation closures lazily: a lookup never returns
        // an entry one covers, from the call on.
        assert!(cache.get(&ana, 1, 1).is_none());
        assert!(cache.get(&bo, 1, 1).is_some());
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let cache = TokenCache::new(0);
        let key = TokenCache::key("a.b.c");
        cache.insert(key, 1, verified(1000));
        assert!(cache.get(&key, 1, 1).is_none());
    }

    #[test]
    fn an_entry_weighs_what_its_claims_hold_in_memory_not_the_tokens_length() {
        let claims = |groups: usize| {
            let groups: Vec<String> = (0..groups).map(|i| format!("group-{i:04}")).collect();
            serde_json::json!({ "sub": "ana", "groups": groups })
                .as_object()
                .unwrap()
                .clone()
        };
        let (small, large) = (footprint(&claims(1)), footprint(&claims(100)));
        // Each 10-byte group string is a 32-byte value, an allocation and
        // its bytes: near 60 bytes of memory, not the 13 it takes in JSON.
        assert!(large - small >= 99 * 50, "{small} → {large}");
        assert!(small > PER_ENTRY, "{small}");
    }

    #[test]
    fn a_full_cache_holds_about_its_capacity_in_entries_weighed_by_memory() {
        let cache = TokenCache::new(100 * 1024);
        let token = |i: u32| {
            Arc::new(VerifiedToken {
                claims: serde_json::json!({ "sub": format!("user{i}"), "aud": "nats", "roles": ["reader"] })
                    .as_object()
                    .unwrap()
                    .clone(),
                exp: u64::MAX,
            })
        };
        let one = footprint(&token(0).claims);
        for i in 0..10_000u32 {
            cache.insert(TokenCache::key(&i.to_string()), 1, token(i));
        }
        let entries = cache.entries.as_ref().unwrap();
        entries.run_pending_tasks();
        let held = entries.entry_count() as usize;
        assert!(
            held <= 100 * 1024 / one + 1,
            "{held} entries of {one} bytes in a 100 KiB cache"
        );
    }
}
