//! The configuration the service is running with, swappable at run time.
//!
//! A reload (SIGHUP, or the config file's content changing) loads and fully
//! validates the file first; an invalid file is reported and the running
//! config stays. A valid one replaces the authorizer atomically: requests in
//! flight finish with the old one, the next connection uses the new one, and
//! nothing is dropped. An issuer's keys are kept when its `[oidc]` block is
//! unchanged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::authorizer::Authorizer;
use crate::config::Config;
use crate::key_manager::KeyManager;
use crate::kv_grants::KvGrants;
use crate::metrics::Metrics;

pub struct Live {
    pub authorizer: ArcSwap<Authorizer>,
    config: ArcSwap<Config>,
    /// One background key refresher per issuer, with the keys it refreshes.
    refreshers: Mutex<Vec<(Arc<KeyManager>, JoinHandle<()>)>>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    /// The grants bucket named at startup (`grants.kv_bucket`).
    pub kv: Option<Arc<KvGrants>>,
}

impl Live {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Live>, String> {
        let keys = config
            .oidc
            .iter()
            .map(|oidc| KeyManager::new(oidc.clone(), metrics.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let kv = config.grants.kv_bucket.clone().map(KvGrants::new);
        let authorizer = Authorizer::from_config(&config, keys, kv.clone());
        Ok(Arc::new(Live {
            authorizer: ArcSwap::from_pointee(authorizer),
            path: config.source.clone(),
            config: ArcSwap::from_pointee(config),
            refreshers: Mutex::new(Vec::new()),
            kv,
            metrics,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Each issuer's name and whether its keys are loaded.
    pub fn issuer_keys(&self) -> Vec<(String, bool)> {
        self.authorizer
            .load()
            .issuers()
            .iter()
            .map(|i| (i.oidc.name.clone(), i.keys.has_keys()))
            .collect()
    }

    /// Runs a key refresher for every current issuer and for no other: keys
    /// that already have one keep it (no extra fetch), keys no longer in use
    /// lose theirs.
    pub fn start_refresher(&self) {
        let current: Vec<Arc<KeyManager>> = self
            .authorizer
            .load()
            .issuers()
            .iter()
            .map(|i| i.keys.clone())
            .collect();
        let mut running = self.refreshers.lock().unwrap();
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

    pub fn stop_refresher(&self) {
        for (_, task) in self.refreshers.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Re-reads the config file and applies it if it is valid.
    pub fn reload(&self) -> Result<(), String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        let old = self.config.load_full();
        crate::service::report_exposed_secrets(&new);
        if new.nats != old.nats
            || new.http != old.http
            || new.grants.kv_bucket != old.grants.kv_bucket
        {
            tracing::warn!(
                "changes to [nats], [http] and grants.kv_bucket take effect after a restart; the rest is applied now"
            );
        }
        let running = self.authorizer.load_full();
        let mut kept = 0;
        let keys = new
            .oidc
            .iter()
            .map(
                |oidc| match running.issuers().iter().find(|i| *i.oidc == **oidc) {
                    Some(same) => {
                        kept += 1;
                        Ok(same.keys.clone())
                    }
                    None => KeyManager::new(oidc.clone(), self.metrics.clone()),
                },
            )
            .collect::<Result<Vec<_>, _>>()?;
        let all_kept = kept == new.oidc.len() && kept == old.oidc.len();
        self.authorizer.store(Arc::new(Authorizer::from_config(
            &new,
            keys,
            self.kv.clone(),
        )));
        self.config.store(Arc::new(new));
        if !all_kept {
            self.start_refresher();
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

fn digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}
