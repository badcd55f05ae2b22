//! The configuration the service is running with, swappable at run time.
//!
//! A reload (SIGHUP, or the config file's content changing) loads and fully
//! validates the file first; an invalid file is reported and the running
//! config stays. A valid one replaces the authorizer atomically: requests in
//! flight finish with the old one, the next connection uses the new one, and
//! nothing is dropped. The issuer keys are kept when `[oidc]` is unchanged.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;

use crate::authorizer::Authorizer;
use crate::config::Config;
use crate::key_manager::KeyManager;
use crate::metrics::Metrics;

pub struct Live {
    pub authorizer: ArcSwap<Authorizer>,
    config: ArcSwap<Config>,
    refresher: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    path: PathBuf,
}

impl Live {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Live>, String> {
        let keys = KeyManager::new(config.oidc.clone(), metrics.clone())?;
        let authorizer = build(&config, keys);
        Ok(Arc::new(Live {
            authorizer: ArcSwap::from_pointee(authorizer),
            path: config.source.clone(),
            config: ArcSwap::from_pointee(config),
            refresher: Mutex::new(None),
            metrics,
        }))
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn keys(&self) -> Arc<KeyManager> {
        self.authorizer.load().keys().clone()
    }

    /// Starts (or restarts) the background key refresher for the current keys.
    pub fn start_refresher(&self) {
        let task = tokio::spawn(self.keys().run_refresher());
        if let Some(old) = self.refresher.lock().unwrap().replace(task) {
            old.abort();
        }
    }

    pub fn stop_refresher(&self) {
        if let Some(task) = self.refresher.lock().unwrap().take() {
            task.abort();
        }
    }

    /// Re-reads the config file and applies it if it is valid.
    pub fn reload(&self) -> Result<(), String> {
        let new = Config::load(&self.path).map_err(|e| e.to_string())?;
        let old = self.config.load_full();
        crate::service::report_exposed_secrets(&new);
        if new.nats != old.nats || new.http != old.http {
            tracing::warn!(
                "changes to [nats] and [http] take effect after a restart; the rest is applied now"
            );
        }
        let same_issuer = *new.oidc == *old.oidc;
        let keys = if same_issuer {
            self.keys()
        } else {
            KeyManager::new(new.oidc.clone(), self.metrics.clone())?
        };
        self.authorizer.store(Arc::new(build(&new, keys)));
        self.config.store(Arc::new(new));
        if !same_issuer {
            self.start_refresher();
        }
        tracing::info!(path = %self.path.display(), keys_kept = same_issuer, "config reloaded");
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

fn build(config: &Config, keys: Arc<KeyManager>) -> Authorizer {
    Authorizer::new(
        config.callout.clone(),
        config.oidc.clone(),
        config.roles.clone(),
        keys,
    )
}

fn digest(path: &std::path::Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(b).into())
}
