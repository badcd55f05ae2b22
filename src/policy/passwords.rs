//! bcrypt checks of `[users.*]` passwords. bcrypt is slow on purpose, so
//! the checks are bounded in every direction an unauthenticated client
//! could push them: they run on at most one thread per core, at most
//! `QUEUE_PER_CORE` per core may be admitted (running or waiting) and at
//! most `PER_NAME_PER_CORE` per core for one user name; anything beyond is
//! refused at once (`unavailable`) instead of queued. A wait for a thread
//! ends at the request's deadline or at shutdown, and a check never starts
//! once the deadline has passed. So a flood of wrong passwords costs its
//! own attempts, never another client's time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::clock::Deadline;
use crate::refusal::{Refusal, RefusalCode};

/// The longest password bcrypt checks whole: its 72-byte block holds the
/// password and a terminating zero byte.
pub(crate) const MAX_PASSWORD_BYTES: usize = 71;
/// Admitted checks per core: about what bcrypt at cost 11 finishes within
/// nats-server's default 2 s auth timeout.
const QUEUE_PER_CORE: usize = 16;
/// Admitted checks per core for one user name, so that a flood aimed at
/// one account cannot take the queue from the others.
const PER_NAME_PER_CORE: usize = 2;
/// Admitted checks at most, however many cores: together with the other
/// bounded waits it must stay well below the requests the service keeps in
/// flight (see `service::dispatch`).
pub(crate) const MAX_ADMITTED: usize = 256;
/// Passwords already checked against their hash are remembered this long,
/// by a digest of user, hash and password, so reconnect storms do not pay
/// bcrypt again and again.
const REMEMBERED: Duration = Duration::from_secs(600);

pub struct PasswordChecks {
    threads: tokio::sync::Semaphore,
    admitted: Mutex<Admitted>,
    max_admitted: usize,
    max_per_name: usize,
    remembered: moka::sync::Cache<[u8; 32], ()>,
}

#[derive(Default)]
struct Admitted {
    total: usize,
    by_name: HashMap<String, usize>,
}

/// One admitted check; leaving makes room for the next.
struct Ticket<'a> {
    checks: &'a PasswordChecks,
    name: &'a str,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut a = self
            .checks
            .admitted
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        a.total -= 1;
        if let Some(n) = a.by_name.get_mut(self.name) {
            *n -= 1;
            if *n == 0 {
                a.by_name.remove(self.name);
            }
        }
    }
}

impl Default for PasswordChecks {
    fn default() -> Self {
        PasswordChecks::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }
}

impl PasswordChecks {
    /// Checks on `threads` threads at most.
    pub fn new(threads: usize) -> Self {
        PasswordChecks {
            threads: tokio::sync::Semaphore::new(threads),
            admitted: Mutex::default(),
            max_admitted: (QUEUE_PER_CORE * threads).min(MAX_ADMITTED),
            max_per_name: PER_NAME_PER_CORE * threads,
            remembered: moka::sync::Cache::builder()
                .max_capacity(4096)
                .time_to_live(REMEMBERED)
                .build(),
        }
    }

    /// Whether `password` is `name`'s, by its bcrypt `hash`; a refusal when
    /// the check cannot be made (too long, no room, deadline, shutdown).
    pub async fn check(
        &self,
        name: &str,
        hash: &str,
        password: &str,
        deadline: &Deadline,
    ) -> Result<bool, Refusal> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(Refusal::new(
                RefusalCode::IdentityCredentials,
                format!(
                    "the password for user {name:?} is {} bytes, more than the {MAX_PASSWORD_BYTES} bcrypt can check",
                    password.len()
                ),
            )
            .of(name));
        }
        let key = remembered_key(name, hash, password);
        if self.remembered.contains_key(&key) {
            return Ok(true);
        }
        let _ticket = self.admit(name)?;
        let _thread = deadline
            .wait(self.threads.acquire())
            .await
            .map_err(|i| Refusal::from(i).of(name))?
            .map_err(|_| Refusal::new(RefusalCode::Unavailable, "password checks closed"))?;
        // The wait may have used up the time nats-server gives the client.
        deadline.check().map_err(|i| Refusal::from(i).of(name))?;
        let (hash, password) = (hash.to_string(), password.to_string());
        // Not `verify`: it would ignore everything past 72 bytes, so a long
        // password would match any other with the same first 72.
        let ok =
            tokio::task::spawn_blocking(move || bcrypt::non_truncating_verify(password, &hash))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false);
        if ok {
            self.remembered.insert(key, ());
        }
        Ok(ok)
    }

    fn admit<'a>(&'a self, name: &'a str) -> Result<Ticket<'a>, Refusal> {
        let mut a = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        let for_name = a.by_name.get(name).copied().unwrap_or(0);
        if a.total >= self.max_admitted || for_name >= self.max_per_name {
            let why = if for_name >= self.max_per_name {
                format!("{for_name} password checks for user {name:?} are already under way")
            } else {
                format!("{} password checks are already under way", a.total)
            };
            return Err(Refusal::new(
                RefusalCode::Unavailable,
                format!("{why}; refused at once rather than queued (the client may retry)"),
            )
            .of(name));
        }
        a.total += 1;
        *a.by_name.entry(name.to_string()).or_default() += 1;
        Ok(Ticket { checks: self, name })
    }
}

fn remembered_key(name: &str, hash: &str, password: &str) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(name.as_bytes());
    digest.update([0]);
    digest.update(hash.as_bytes());
    digest.update([0]);
    digest.update(password.as_bytes());
    digest.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn code(r: Result<bool, Refusal>) -> &'static str {
        match r {
            Ok(true) => "ok",
            Ok(false) => "wrong",
            Err(refusal) => refusal.code.as_str(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_for_one_name_is_refused_at_once_and_leaves_room_for_others() {
        let checks = Arc::new(PasswordChecks::new(1));
        let hash = bcrypt::hash("right", 10).unwrap();
        let soon = || Deadline::at(tokio::time::Instant::now() + Duration::from_secs(30));
        let flood: Vec<_> = (0..20)
            .map(|_| {
                let (checks, hash) = (checks.clone(), hash.clone());
                tokio::spawn(
                    async move { code(checks.check("svc", &hash, "wrong", &soon()).await) },
                )
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let started = std::time::Instant::now();
        let other = code(checks.check("other", &hash, "right", &soon()).await);
        assert_eq!(other, "ok", "another account still gets its check");
        let mut outcomes = Vec::new();
        for f in flood {
            outcomes.push(f.await.unwrap());
        }
        let refused = outcomes.iter().filter(|c| **c == "unavailable").count();
        assert_eq!(refused, 20 - PER_NAME_PER_CORE, "{outcomes:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn no_check_starts_after_the_deadline_and_long_passwords_say_why() {
        let checks = PasswordChecks::new(1);
        let hash = bcrypt::hash("right", 4).unwrap();
        let past = Deadline::at(tokio::time::Instant::now());
        assert_eq!(
            code(checks.check("svc", &hash, "right", &past).await),
            "request_expired"
        );
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let r = checks.check("svc", &hash, &long, &Deadline::none()).await;
        assert!(r
            .unwrap_err()
            .reason
            .contains("more than the 71 bcrypt can check"));
        let longest = "y".repeat(MAX_PASSWORD_BYTES);
        let hash = bcrypt::hash(&longest, 4).unwrap();
        assert_eq!(
            code(
                checks
                    .check("svc", &hash, &longest, &Deadline::none())
                    .await
            ),
            "ok"
        );
    }
}
