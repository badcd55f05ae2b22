//! Keeps the issuer's verification keys in memory.
//!
//! * A background task loads the keys at startup (retrying while the issuer is
//!   down) and refreshes them every `jwks_max_age`.
//! * A token whose `kid` is unknown triggers one refetch. Concurrent callers
//!   share it (moka's single-flight `get_with`), and its outcome, success or
//!   failure, is remembered for `jwks_refetch_cooldown`, so a flood of made-up
//!   kids costs the issuer at most one fetch per cool-down.
//! * A failed fetch never replaces the last good key set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use moka::future::Cache;

use crate::config::OidcConfig;
use crate::issuer_client::{FetchError, IssuerClient};
use crate::keys::KeySet;
use crate::metrics::Metrics;

pub struct KeyManager {
    client: IssuerClient,
    oidc: Arc<OidcConfig>,
    current: ArcSwap<KeySet>,
    generations: AtomicU64,
    refetch: Cache<(), Arc<Result<(), String>>>,
    /// One fetch at a time: otherwise a slow older fetch finishing last could
    /// put back a key the issuer has just removed.
    refresh_lock: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
}

impl KeyManager {
    pub fn new(oidc: Arc<OidcConfig>, metrics: Arc<Metrics>) -> Result<Arc<KeyManager>, String> {
        let client = IssuerClient::new(&oidc)?;
        let refetch = Cache::builder()
            .max_capacity(1)
            .time_to_live(oidc.jwks_refetch_cooldown)
            .build();
        Ok(Arc::new(KeyManager {
            client,
            oidc,
            current: ArcSwap::from_pointee(KeySet::default()),
            generations: AtomicU64::new(0),
            refetch,
            refresh_lock: tokio::sync::Mutex::new(()),
            metrics,
        }))
    }

    /// The key set in use now (empty until the first successful fetch).
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn has_keys(&self) -> bool {
        !self.current.load().is_empty()
    }

    /// Installs a key set without fetching it: for tools and fuzzing that
    /// hold the keys already.
    pub fn install(&self, mut set: KeySet) {
        set.generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Arc::new(set));
    }

    /// Discovers the JWKS location, fetches and parses it, and installs it.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        let result = self.fetch().await;
        match &result {
            Ok(set) => {
                self.metrics.record_fetch(&self.oidc.name, true);
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default();
                self.metrics
                    .record_keys(&self.oidc.name, set.len(), now.as_secs_f64());
                for reason in &set.skipped {
                    tracing::warn!(issuer = %self.oidc.name, url = %self.oidc.issuer, "JWKS entry skipped: {reason}");
                }
                tracing::info!(issuer = %self.oidc.name, url = %self.oidc.issuer, keys = set.len(), "issuer keys loaded");
            }
            Err(e) => {
                self.metrics.record_fetch(&self.oidc.name, false);
                tracing::warn!(issuer = %self.oidc.name, url = %self.oidc.issuer, error = %e, "issuer keys not refreshed; keeping the last good set");
            }
        }
        let set = result?;
        let n = set.len();
        self.install(set);
        Ok(n)
    }

    async fn fetch(&self) -> Result<KeySet, String> {
        let jwks_uri = self
            .client
            .discover_jwks_uri()
            .await
            .map_err(|e: FetchError| e.to_string())?;
        let body = self
            .client
            .fetch_jwks(&jwks_uri)
            .await
            .map_err(|e| e.to_string())?;
        KeySet::parse(&body, &self.oidc).map_err(|e| format!("JWKS {jwks_uri}: {e}"))
    }

    /// Refetches because a token named a key we do not have; returns the key
    /// set after the (possibly shared, possibly cooled-down) attempt.
    pub async fn refetch_for_unknown_key(&self) -> Arc<KeySet> {
        let _ = self
            .refetch
            .get_with((), async { Arc::new(self.refresh().await.map(|_| ())) })
            .await;
        self.current()
    }

    /// Loads the keys, retrying with backoff while the issuer is unreachable,
    /// then refreshes them every `jwks_max_age`. Runs until the task is dropped.
    pub async fn run_refresher(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff = Duration::from_millis(500);
                    self.oidc.jwks_max_age
                }
                Err(_) => {
                    let wait = backoff;
                    backoff = (backoff * 2)
                        .min(Duration::from_secs(30))
                        .min(self.oidc.jwks_max_age);
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}
