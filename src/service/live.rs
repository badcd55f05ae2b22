//! The configuration the service is running with, swappable at run time.
//!
//! A reload (SIGHUP, or the config file's content changing) loads and fully
//! validates the file first; an invalid file is reported and the running
//! config stays. A valid one replaces the callout atomically: requests in
//! flight finish with the old one, the next connection uses the new one, and
//! nothing is dropped. An issuer's keys are kept when its verification
//! settings are unchanged.

use std::path::PathBuf;
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
use crate::policy::revocations::RevocationList;
use crate::service::ServiceError;

use super::config_file::{digest, settled_content, Hold, Watcher};

pub(super) struct Live {
    callout: ArcSwap<Callout>,
    config: ArcSwap<Config>,
    /// One background key refresher per issuer, with the keys it refreshes.
    refreshers: Mutex<Vec<(Arc<KeyManager>, JoinHandle<()>)>>,
    metrics: Arc<Metrics>,
    path: PathBuf,
    /// The grants bucket named at startup (`grants.kv_bucket`).
    bucket: Option<String>,
    /// The revocation bucket named at startup (`revocation.kv_bucket`).
    revocation_bucket: Option<String>,
    /// What every authorizer of this process shares.
    shared: Shared,
}

impl Live {
    pub(super) fn new(config: Config, metrics: Arc<Metrics>) -> Result<Arc<Live>, ServiceError> {
        let bucket = config.grants.kv_bucket.clone();
        let shared = Shared {
            grants: bucket.as_ref().map(|_| GrantStore::new()),
            passwords: Default::default(),
            revocations: config
                .revocation
                .kv_bucket
                .as_ref()
                .map(|_| Arc::new(RevocationList::new(config.revocation.max_token_lifetime))),
        };
        let config_revocation_bucket = config.revocation.kv_bucket.clone();
        let issuers = config.issuers(None, &metrics)?;
        let authorizer = config.authorizer(issuers, shared.clone());
        Ok(Arc::new(Live {
            callout: ArcSwap::from_pointee(config.callout(authorizer)),
            path: config.source.clone(),
            config: ArcSwap::from_pointee(config),
            refreshers: Mutex::new(Vec::new()),
            bucket,
            revocation_bucket: config_revocation_bucket,
            shared,
            metrics,
        }))
    }

    pub(super) fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The callout deciding requests now.
    pub(super) fn callout(&self) -> Arc<Callout> {
        self.callout.load_full()
    }

    /// The revocation bucket and its list, when `revocation.kv_bucket` is
    /// set.
    pub(super) fn revocations(&self) -> Option<(&str, &Arc<RevocationList>)> {
        self.revocation_bucket
            .as_deref()
            .zip(self.shared.revocations.as_ref())
    }

    /// The grants bucket and its store, when `grants.kv_bucket` is set.
    pub(super) fn grants(&self) -> Option<(&str, &Arc<GrantStore>)> {
        self.bucket.as_deref().zip(self.shared.grants.as_ref())
    }

    /// Each issuer's name and whether its keys are loaded.
    pub(super) fn issuer_keys(&self) -> Vec<(String, bool)> {
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
    pub(super) fn start_refreshers(&self) {
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

    pub(super) fn stop_refreshers(&self) {
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
    pub(super) async fn reload(&self) -> Result<[u8; 32], ServiceError> {
        let text = settled_content(&self.path).await;
        self.apply(text)
    }

    /// Applies the content `settled_content` read, if it is a valid config.
    fn apply(&self, text: Result<String, String>) -> Result<[u8; 32], ServiceError> {
        let text = text.map_err(|reason| {
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
            || new.revocation != old.revocation
        {
            tracing::warn!(
                "changes to [nats], [http], grants.kv_bucket and [revocation] take effect after a restart; the rest is applied now"
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

    /// Reloads on SIGHUP (at once: an operator asked) and whenever the
    /// file's content changes, but never while a writer that changed the
    /// file still holds it open: a writer that pauses halfway leaves a valid
    /// prefix (a role's allow list without the deny list after it) that no
    /// settle check can tell from a finished file. On Linux the file's
    /// directory is watched, so close-after-write, renames onto the file and
    /// ConfigMap `..data` swaps are seen as they happen; the content is
    /// still compared every `poll` (content, not mtime, so symlink swaps
    /// count too) for what events miss, and that is all there is where
    /// inotify is not. A failed reload keeps the running config and is
    /// tried again at every poll and directory change (a seed file it names
    /// may be back by then), but said once until the content or the error
    /// changes. Runs until dropped.
    pub(super) async fn watch(self: Arc<Self>, poll: Duration) {
        let mut state = WatchState {
            // What is running, not what the file holds now: an edit made
            // since the config was read at start-up is a change to apply.
            applied: Some(self.config().digest),
            failing: None,
            hold: Hold::new(),
            events: self.start_watcher(poll),
        };
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if state.events.as_ref().is_some_and(Watcher::lost) {
                tracing::warn!(
                    path = %self.path.display(),
                    "lost the watch on the config file's directory; polling it every {poll:?}"
                );
                state.events = None;
                state.hold = Hold::new();
            }
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
            let (ready, quiet_until) = (state.hold.ready(), state.hold.quiet_until);
            let wake = tokio::select! {
                _ = hangup => Wake::Hangup,
                _ = tick.tick() => Wake::Tick,
                _ = async {
                    match state.events.as_mut() {
                        Some(w) => w.next(&mut state.hold).await,
                        None => std::future::pending().await,
                    }
                } => Wake::Events,
                _ = tokio::time::sleep_until(quiet_until), if ready => Wake::Quiet,
            };
            let result = match wake {
                Wake::Hangup => {
                    tracing::info!("SIGHUP: reloading the config");
                    state.failing = None;
                    self.reload().await
                }
                Wake::Events => continue,
                Wake::Tick | Wake::Quiet => match self.look(&mut state, wake).await {
                    Some(result) => result,
                    None => continue,
                },
            };
            state.record(result, poll);
        }
    }

    /// The watch on the file's directory, or `None` where the file is
    /// only polled.
    fn start_watcher(&self, poll: Duration) -> Option<Watcher> {
        match Watcher::start(&self.path) {
            Ok(w) => Some(w),
            Err(e) => {
                let path = self.path.display();
                if cfg!(target_os = "linux") {
                    tracing::warn!(%path, "cannot watch the config file ({e}); polling it every {poll:?}, where a writer that pauses mid-write can have a valid prefix applied");
                } else {
                    tracing::info!(%path, "config file polled every {poll:?}");
                }
                None
            }
        }
    }

    /// A poll tick or the end of a burst of events: applies the file if it
    /// changed and no writer holds it; `None` when there is nothing to do
    /// yet.
    async fn look(
        &self,
        state: &mut WatchState,
        wake: Wake,
    ) -> Option<Result<[u8; 32], ServiceError>> {
        let hold = &mut state.hold;
        if matches!(wake, Wake::Quiet) {
            hold.looked();
        }
        if let Some(w) = state.events.as_mut() {
            w.drain(hold);
        }
        let now = digest(&self.path);
        if hold.writing {
            if now != state.applied && !hold.said {
                tracing::info!(
                    path = %self.path.display(),
                    "config file changed but is still open for writing; applied once its writer closes it"
                );
                hold.said = true;
            }
            return None;
        }
        // Events still coming: the quiet wake-up follows.
        if hold.due || now == state.applied {
            if now == state.applied {
                state.failing = None;
            }
            return None;
        }
        if state.failing.is_none() {
            tracing::info!("config file changed: reloading");
        }
        let touches = hold.touches;
        let text = settled_content(&self.path).await;
        if let Some(w) = state.events.as_mut() {
            w.drain(&mut state.hold);
        }
        // A write before the first read would otherwise pass for a settled
        // file; the events it left decide what comes next (its close, or a
        // rename).
        if state.hold.touches != touches {
            tracing::debug!(
                "config file written while it was read; read again when its writer is done"
            );
            return None;
        }
        Some(self.apply(text))
    }
}

/// What woke the watch.
enum Wake {
    Hangup,
    Tick,
    Events,
    Quiet,
}

/// What the watch knows between wake-ups.
struct WatchState {
    /// The digest of the text running now.
    applied: Option<[u8; 32]>,
    /// The error of the last failed reload, said once until it changes.
    failing: Option<String>,
    hold: Hold,
    events: Option<Watcher>,
}

impl WatchState {
    fn record(&mut self, result: Result<[u8; 32], ServiceError>, poll: Duration) {
        match result {
            Ok(read) => {
                self.applied = Some(read);
                self.failing = None;
            }
            Err(e) => {
                let said = e.to_string();
                if self.failing.as_ref() != Some(&said) {
                    tracing::error!(
                        "config reload failed; keeping the running config (tried again every {poll:?}): {said}"
                    );
                    self.failing = Some(said);
                }
            }
        }
    }
}

/// Logs secret files any user of the host can read (at startup and reload).
pub(super) fn report_exposed_secrets(config: &Config) {
    for exposure in config.exposed_secrets() {
        tracing::warn!("secret file exposed: {exposure}");
    }
}
