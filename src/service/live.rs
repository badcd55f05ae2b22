//! The configuration the service is running with, swappable at run time.
//!
//! A reload (SIGHUP, or the config file's content changing) loads and fully
//! validates the file first; an invalid file is reported and the running
//! config stays. A valid one replaces the callout atomically: requests in
//! flight finish with the old one, the next connection uses the new one, and
//! nothing is dropped. An issuer's keys are kept when its verification
//! settings are unchanged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::callout::Callout;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::oidc::key_manager::KeyManager;
use crate::policy::grants::GrantStore;
use crate::service::ServiceError;

pub struct Live {
    callout: ArcSwap<Callout>,
    config: ArcSwap<Config>,
    /// One background key refresher per issuer, with the keys it refreshes.
    refreshers: Mutex<Vec<(Arc<KeyManager>, JoinHandle<()>)>>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    /// The grants bucket named at startup (`grants.kv_bucket`) and its
    /// in-memory copy.
    grants: Option<(String, Arc<GrantStore>)>,
}

impl Live {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Live>, ServiceError> {
        let grants = config
            .grants
            .kv_bucket
            .clone()
            .map(|bucket| (bucket, GrantStore::new()));
        let issuers = config.issuers(None, &metrics)?;
        let authorizer = config.authorizer(issuers, grants.as_ref().map(|(_, s)| s.clone()));
        Ok(Arc::new(Live {
            callout: ArcSwap::from_pointee(config.callout(authorizer)),
            path: config.source.clone(),
            config: ArcSwap::from_pointee(config),
            refreshers: Mutex::new(Vec::new()),
            grants,
            metrics,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The callout deciding requests now.
    pub fn callout(&self) -> Arc<Callout> {
        self.callout.load_full()
    }

    /// The grants bucket and its store, when `grants.kv_bucket` is set.
    pub fn grants(&self) -> Option<(&str, &Arc<GrantStore>)> {
        self.grants.as_ref().map(|(b, s)| (b.as_str(), s))
    }

    /// Each issuer's name and whether its keys are loaded.
    pub fn issuer_keys(&self) -> Vec<(String, bool)> {
        self.callout
            .load()
            .authorizer()
            .issuers()
            .iter()
            .map(|i| (i.settings.name.clone(), i.keys.has_keys()))
            .collect()
    }

    /// Runs a key refresher for every current issuer and for no other: keys
    /// that already have one keep it (no extra fetch), keys no longer in use
    /// lose theirs.
    pub fn start_refreshers(&self) {
        let current: Vec<Arc<KeyManager>> = self
            .callout
            .load()
            .authorizer()
            .issuers()
            .iter()
            .map(|i| i.keys.clone())
            .collect();
        let mut running = self.refreshers.lock().unwrap_or_else(|e| e.into_inner());
        running.retain(|(keys, task)| {
            let keep = current.iter().any(|k| Arc::ptr_eq(k, keys));
            if !keep {
                task.abort();
            }
            keep
        });
        for keys in current {
            if !running.iter().any(|(k, _)| Arc::ptr_eq(k, &keys)) {
                let task = tokio::spawn(keys.clone().run_refresher());
                running.push((keys, task));
            }
        }
    }

    pub fn stop_refreshers(&self) {
        for (_, task) in self
            .refreshers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }

    /// Re-reads the config file and applies it if it is valid.
    pub fn reload(&self) -> Result<(), ServiceError> {
        let new = Config::load(&self.path)?;
        let old = self.config.load_full();
        report_exposed_secrets(&new);
        if new.nats != old.nats
            || new.http != old.http
            || new.grants.kv_bucket != old.grants.kv_bucket
        {
            tracing::warn!(
                "changes to [nats], [http] and grants.kv_bucket take effect after a restart; the rest is applied now"
            );
        }
        let running = self.callout.load_full();
        let issuers = new.issuers(Some(running.authorizer().issuers()), &self.metrics)?;
        let kept = issuers
            .iter()
            .filter(|i| {
                running
                    .authorizer()
                    .issuers()
                    .iter()
                    .any(|r| Arc::ptr_eq(&r.keys, &i.keys))
            })
            .count();
        let all_kept = kept == new.oidc.len() && kept == old.oidc.len();
        let authorizer = new.authorizer(issuers, self.grants.as_ref().map(|(_, s)| s.clone()));
        self.callout.store(Arc::new(new.callout(authorizer)));
        self.config.store(Arc::new(new));
        if !all_kept {
            self.start_refreshers();
        }
        tracing::info!(path = %self.path.display(), keys_kept = all_kept, "config reloaded");
        Ok(())
    }

    fn reload_and_report(&self) {
        if let Err(e) = self.reload() {
            tracing::error!("config reload failed; keeping the running config: {e}");
        }
    }

    /// Reloads on SIGHUP and whenever the file's content changes (checked
    /// every `poll`; content, not mtime, so symlink swaps of mounted config
    /// maps count too). Runs until dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut last = digest(&self.path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => {
                    tracing::info!("SIGHUP: reloading the config");
                    last = digest(&self.path);
                    self.reload_and_report();
                }
                _ = tick.tick() => {
                    let now = digest(&self.path);
                    if now != last {
                        last = now;
                        tracing::info!("config file changed: reloading");
                        self.reload_and_report();
                    }
                }
            }
        }
    }
}

/// Logs secret files any user of the host can read (at startup and reload).
pub fn report_exposed_secrets(config: &Config) {
    for exposure in config.exposed_secrets() {
        tracing::warn!("secret file exposed: {exposure}");
    }
}

fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}
