//! Keeps one issuer's verification keys in memory.
//!
//! * A background task loads the keys at startup (retrying while the issuer is
//!   down) and refreshes them every `jwks_max_age`.
//! * A token whose `kid` is unknown triggers one refetch. It runs in a task of
//!   its own, so a caller that stops waiting never cancels it; concurrent
//!   callers share it, and once it is done (success or failure) none starts
//!   again for `jwks_refetch_cooldown`, so a flood of made-up kids costs the
//!   issuer at most one fetch per cool-down.
//! * A failed fetch never replaces the last good key set.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::backoff::Backoff;
use crate::clock::{Deadline, Interrupted};
use crate::metrics::Metrics;
use crate::oidc::discovery::{FetchError, IssuerClient};
use crate::oidc::jwks::KeySet;
use crate::oidc::settings::Settings;

/// Verifications that may wait for an unknown-kid refetch at once, all
/// issuers together: a bound on what made-up kids can hold of the
/// service's requests in flight, whatever `iss` they claim.
pub const MAX_REFETCH_WAITERS: usize = 1024;

/// The longest a verification waits for an unknown-kid refetch: well
/// inside nats-server's 2 s wait for an answer, so that a slow or dead
/// issuer gets the client a refusal with a reason rather than
/// nats-server's timeout.
pub(crate) const REFETCH_WAIT: Duration = Duration::from_millis(1000);

static REFETCH_WAITERS: AtomicUsize = AtomicUsize::new(0);

/// Why a verification did not get the refetched keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefetchError {
    /// `MAX_REFETCH_WAITERS` are waiting already.
    Busy,
    /// The refetch did not end within `REFETCH_WAIT`.
    Slow,
    Interrupted(Interrupted),
}

/// Counts one waiter out again, however the wait ends.
struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        REFETCH_WAITERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the unknown-kid refetch stands.
enum Refetch {
    Idle {
        finished: Option<tokio::time::Instant>,
    },
    /// Running; the receiver turns true when it is done.
    Running(tokio::sync::watch::Receiver<bool>),
}

/// Marks the refetch done however its task ends.
struct Done {
    keys: Arc<KeyManager>,
    tell: tokio::sync::watch::Sender<bool>,
}

impl Drop for Done {
    fn drop(&mut self) {
        *self.keys.refetch.lock().unwrap_or_else(|e| e.into_inner()) = Refetch::Idle {
            finished: Some(tokio::time::Instant::now()),
        };
        let _ = self.tell.send(true);
    }
}

pub struct KeyManager {
    client: IssuerClient,
    oidc: Arc<Settings>,
    current: ArcSwap<KeySet>,
    generations: AtomicU64,
    refetch: Mutex<Refetch>,
    /// One fetch at a time: otherwise a slow older fetch finishing last could
    /// put back a key the issuer has just removed.
    refresh_lock: tokio::sync::Mutex<()>,
    /// The SHA-256 of the JWKS document installed last: a refresh that
    /// reads the same document keeps the key set's generation, and with
    /// it the tokens the cache holds.
    installed_body: Mutex<Option<[u8; 32]>>,
    metrics: Arc<Metrics>,
}

impl KeyManager {
    pub fn new(oidc: Arc<Settings>, metrics: Arc<Metrics>) -> Result<Arc<KeyManager>, FetchError> {
        let client = IssuerClient::new(&oidc)?;
        Ok(Arc::new(KeyManager {
            client,
            refetch: Mutex::new(Refetch::Idle { finished: None }),
            oidc,
            current: ArcSwap::from_pointee(KeySet::default()),
            generations: AtomicU64::new(0),
            refresh_lock: tokio::sync::Mutex::new(()),
            installed_body: Mutex::new(None),
            metrics,
        }))
    }

    /// The key set in use now (empty until the first successful fetch).
    pub fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The generation of the key set in use now.
    pub fn generation(&self) -> u64 {
        self.current.load().generation
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
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        let _one_at_a_time = self.refresh_lock.lock().await;
        let name = &self.oidc.name;
        let (set, body) = match self.fetch().await {
            Ok(fetched) => fetched,
            Err(e) => {
                self.metrics.record_fetch(name, false);
                tracing::warn!(issuer = %name, url = %self.oidc.issuer, error = %e, "issuer keys not refreshed; keeping the last good set");
                return Err(e);
            }
        };
        self.metrics.record_fetch(name, true);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.metrics.record_keys(name, set.len(), now.as_secs_f64());
        for reason in &set.skipped {
            let reason = crate::text::reason(reason);
            tracing::warn!(issuer = %name, url = %self.oidc.issuer, "JWKS entry skipped: {reason}");
        }
        let n = set.len();
        let mut installed = self
            .installed_body
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if *installed == Some(body) && self.has_keys() {
            tracing::debug!(issuer = %name, keys = n, "issuer keys unchanged");
            return Ok(n);
        }
        tracing::info!(issuer = %name, url = %self.oidc.issuer, keys = n, "issuer keys loaded");
        self.install(set);
        *installed = Some(body);
        Ok(n)
    }

    /// The key set and the SHA-256 of the document it was read from.
    async fn fetch(&self) -> Result<(KeySet, [u8; 32]), FetchError> {
        use sha2::Digest;
        let jwks_uri = self.client.discover_jwks_uri().await?;
        let body = self.client.fetch_jwks(&jwks_uri).await?;
        let set = KeySet::parse(&body, &self.oidc).map_err(|e| FetchError::Jwks {
            url: crate::text::name(&jwks_uri),
            reason: crate::text::reason(&e.to_string()),
        })?;
        Ok((set, sha2::Sha256::digest(body.as_ref() as &[u8]).into()))
    }

    /// Refetches because a token named a key we do not have; returns the key
    /// set after the (possibly shared, possibly cooled-down) attempt. While
    /// a slow issuer answers, at most `MAX_REFETCH_WAITERS` verifications
    /// wait for it (each at most REFETCH_WAIT); more are refused at once, so
    /// that made-up kids cannot take the capacity other clients need.
    pub async fn refetch_for_unknown_key(
        self: &Arc<Self>,
        deadline: &Deadline,
    ) -> Result<Arc<KeySet>, RefetchError> {
        let waiting = REFETCH_WAITERS.fetch_add(1, Ordering::AcqRel);
        let _leave = Leave;
        if waiting >= MAX_REFETCH_WAITERS {
            return Err(RefetchError::Busy);
        }
        let Some(mut done) = self.start_refetch() else {
            // Cooling down: the last refetch's outcome stands.
            return Ok(self.current());
        };
        // Not ended by shutdown: one fetch serves every request waiting
        // for it, and those were routed here; their deadline bounds it,
        // and so does REFETCH_WAIT (the fetch itself goes on).
        deadline
            .without_stop()
            .wait(tokio::time::timeout(
                REFETCH_WAIT,
                done.wait_for(|done| *done),
            ))
            .await
            .map_err(RefetchError::Interrupted)?
            .map_err(|_| RefetchError::Slow)?
            .ok();
        Ok(self.current())
    }

    /// The running refetch, started now if none runs and the last one
    /// finished more than a cool-down ago; `None` while cooling down.
    fn start_refetch(self: &Arc<Self>) -> Option<tokio::sync::watch::Receiver<bool>> {
        let mut state = self.refetch.lock().unwrap_or_else(|e| e.into_inner());
        match &*state {
            Refetch::Running(done) => return Some(done.clone()),
            Refetch::Idle { finished: Some(at) }
                if at.elapsed() < self.oidc.jwks_refetch_cooldown =>
            {
                return None
            }
            Refetch::Idle { .. } => {}
        }
        let (tell, done) = tokio::sync::watch::channel(false);
        *state = Refetch::Running(done.clone());
        let finish = Done {
            keys: self.clone(),
            tell,
        };
        tokio::spawn(async move {
            // A failure is logged and counted by `refresh`; the last good
            // set stays.
            let _ = finish.keys.refresh().await;
            drop(finish);
        });
        Some(done)
    }

    /// Loads the keys, retrying with backoff while the issuer is unreachable,
    /// then refreshes them every `jwks_max_age`. Runs until the task is dropped.
    pub async fn run_refresher(self: Arc<Self>) {
        let max_age = self.oidc.jwks_max_age;
        let mut backoff = Backoff::new(
            Duration::from_millis(500),
            Duration::from_secs(30).min(max_age),
        );
        loop {
            let wait = match self.refresh().await {
                Ok(_) => {
                    backoff.reset();
                    max_age
                }
                Err(_) => backoff.next_wait(),
            };
            tokio::time::sleep(wait).await;
        }
    }
}
