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

use crate::authorize::Shared;
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
    /// The grants bucket named at startup (`grants.kv_bucket`).
    bucket: Option<String>,
    /// What every authorizer of this process shares.
    shared: Shared,
}

impl Live {
    pub fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Live>, ServiceError> {
        let bucket = config.grants.kv_bucket.clone();
        let shared = Shared {
            grants: bucket.as_ref().map(|_| GrantStore::new()),
            passwords: Default::default(),
        };
        let issuers = config.issuers(None, &metrics)?;
        let authorizer = config.authorizer(issuers, shared.clone());
        Ok(Arc::new(Live {
            callout: ArcSwap::from_pointee(config.callout(authorizer)),
            path: config.source.clone(),
            config: ArcSwap::from_pointee(config),
            refreshers: Mutex::new(Vec::new()),
            bucket,
            shared,
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
        self.bucket.as_deref().zip(self.shared.grants.as_ref())
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

    /// Re-reads the config file and applies it if it is valid. Returns the
    /// digest of the content it read.
    pub async fn reload(&self) -> Result<[u8; 32], ServiceError> {
        let text = settled_content(&self.path).await.map_err(|reason| {
            ServiceError::Config(crate::config::ConfigError {
                file: self.path.clone(),
                key: "(file)".into(),
                reason,
            })
        })?;
        let read = Sha256::digest(text.as_bytes()).into();
        let new = Config::parse(&text, &self.path)?;
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
        let authorizer = new.authorizer(issuers, self.shared.clone());
        self.callout.store(Arc::new(new.callout(authorizer)));
        self.config.store(Arc::new(new));
        if !all_kept {
            self.start_refreshers();
        }
        tracing::info!(path = %self.path.display(), keys_kept = all_kept, "config reloaded");
        Ok(read)
    }

    /// Reloads on SIGHUP and whenever the file's content changes (checked
    /// every `poll`; content, not mtime, so symlink swaps of mounted config
    /// maps count too). A failed reload keeps the running config and is
    /// tried again at every poll (a seed file it names may be back by
    /// then), but said once until the content or the error changes. Runs
    /// until dropped.
    pub async fn watch(self: Arc<Self>, poll: Duration) {
        let mut applied = digest(&self.path);
        let mut failing: Option<String> = None;
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
            let asked = tokio::select! {
                _ = hangup => {
                    tracing::info!("SIGHUP: reloading the config");
                    failing = None;
                    true
                }
                _ = tick.tick() => false,
            };
            if !asked && digest(&self.path) == applied {
                failing = None;
                continue;
            }
            if !asked && failing.is_none() {
                tracing::info!("config file changed: reloading");
            }
            match self.reload().await {
                Ok(read) => {
                    applied = Some(read);
                    failing = None;
                }
                Err(e) => {
                    let said = e.to_string();
                    if failing.as_ref() != Some(&said) {
                        tracing::error!(
                            "config reload failed; keeping the running config (tried again every {poll:?}): {said}"
                        );
                        failing = Some(said);
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

/// How long a config file must stay the same before it is applied.
const SETTLE: Duration = Duration::from_millis(250);

/// The file's content once two reads `SETTLE` apart agree. A file written
/// in place is half written for a moment, and a valid prefix of a config
/// (a role's allow list without the deny list after it) must never apply.
async fn settled_content(path: &Path) -> Result<String, String> {
    let read = || std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"));
    let first = read()?;
    tokio::time::sleep(SETTLE).await;
    let second = read()?;
    if first == second {
        Ok(second)
    } else {
        Err("the file is still being written; it is read again when it has settled".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_being_written_is_not_read_until_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "a").unwrap();
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    std::fs::write(&path, "a".repeat(i + 2)).unwrap();
                    tokio::time::sleep(Duration::from_millis(40)).await;
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(settled_content(&path).await.is_err(), "read while written");
        writer.await.unwrap();
        assert_eq!(settled_content(&path).await.unwrap(), "a".repeat(21));
    }
}
