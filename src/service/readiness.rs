//! What `/readyz` needs to know that the rest of the service does not keep:
//! whether the NATS connection is up right now, and whether nats-server's
//! xkey setting has lately been seen to disagree with the service's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::callout::XkeyMismatch;

/// How long a mismatch counts as current after the last request that
/// showed it (readiness, and when a new episode is logged again).
pub(super) const XKEY_WINDOW: Duration = Duration::from_secs(60);
/// While a mismatch goes on, it is logged again this often at most.
const XKEY_REMINDER: Duration = Duration::from_secs(300);

#[derive(Default)]
pub(super) struct Readiness {
    nats_connected: AtomicBool,
    xkey: Mutex<HashMap<XkeyMismatch, Episode>>,
}

/// One run of requests showing the same mismatch.
struct Episode {
    last_seen: Instant,
    last_logged: Instant,
    /// Requests since it was last logged.
    unlogged: u64,
}

/// What to say about a mismatch a request showed (at most one line per
/// episode, and a reminder every `XKEY_REMINDER`).
pub(super) enum XkeyReport {
    /// Started (or started again after `XKEY_WINDOW` without it).
    New,
    /// Still going on: this many requests since it was last said.
    Continuing(u64),
    Quiet,
}

impl Readiness {
    pub(super) fn set_nats_connected(&self, up: bool) {
        self.nats_connected.store(up, Ordering::Release);
    }

    pub(super) fn nats_connected(&self) -> bool {
        self.nats_connected.load(Ordering::Acquire)
    }

    /// A request showed `mismatch` at `now`.
    pub(super) fn xkey_seen(&self, mismatch: XkeyMismatch, now: Instant) -> XkeyReport {
        let mut seen = self.xkey.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get_mut(&mismatch) {
            Some(e) if now.duration_since(e.last_seen) < XKEY_WINDOW => {
                e.last_seen = now;
                e.unlogged += 1;
                if now.duration_since(e.last_logged) >= XKEY_REMINDER {
                    e.last_logged = now;
                    XkeyReport::Continuing(std::mem::take(&mut e.unlogged))
                } else {
                    XkeyReport::Quiet
                }
            }
            _ => {
                seen.insert(
                    mismatch,
                    Episode {
                        last_seen: now,
                        last_logged: now,
                        unlogged: 0,
                    },
                );
                XkeyReport::New
            }
        }
    }

    /// The mismatches seen within `XKEY_WINDOW` of `now`.
    pub(super) fn xkey_current(&self, now: Instant) -> Vec<XkeyMismatch> {
        let seen = self.xkey.lock().unwrap_or_else(|e| e.into_inner());
        XkeyMismatch::ALL
            .into_iter()
            .filter(|m| {
                seen.get(m)
                    .is_some_and(|e| now.duration_since(e.last_seen) < XKEY_WINDOW)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_is_said_once_per_episode_and_then_as_a_reminder() {
        let r = Readiness::default();
        let t0 = Instant::now();
        let m = XkeyMismatch::SealedWithoutXkey;
        assert!(matches!(r.xkey_seen(m, t0), XkeyReport::New));
        for i in 1..100 {
            assert!(matches!(
                r.xkey_seen(m, t0 + Duration::from_secs(i)),
                XkeyReport::Quiet
            ));
        }
        assert_eq!(r.xkey_current(t0 + Duration::from_secs(100)), vec![m]);
        // Every minute a request: still the same episode, reminded at 5 min.
        let mut t = t0 + Duration::from_secs(100);
        let mut said = None;
        while said.is_none() {
            t += Duration::from_secs(50);
            if let XkeyReport::Continuing(n) = r.xkey_seen(m, t) {
                said = Some(n);
            }
        }
        assert!(said.unwrap() > 100, "{said:?}");
        // Over after a quiet minute; a new request starts a new episode.
        assert!(r.xkey_current(t + XKEY_WINDOW).is_empty());
        assert!(matches!(r.xkey_seen(m, t + XKEY_WINDOW), XkeyReport::New));
        assert!(matches!(
            r.xkey_seen(XkeyMismatch::SealedToAnotherKey, t + XKEY_WINDOW),
            XkeyReport::New
        ));
    }
}
