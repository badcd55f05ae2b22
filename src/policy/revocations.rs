//! The revocation list: whose tokens, issued at or before when, may no
//! longer connect. Kept in a NATS KV bucket (`revocation.kv_bucket`) so
//! that every replica applies a revocation at once and it survives
//! restarts; this is the in-memory copy a decision reads, kept in step by
//! `service::kv_watch`.
//!
//! Key: `<issuer name>.<sub|sid|user>.<value, base64url>`: the value comes
//! from a token or an admin and is hostile, so it is encoded into the key
//! alphabet and can never add a dot (a KV key's token separator). Value:
//! `{"at": <unix seconds>, "until": <unix seconds>, "signal": "..."}`.
//!
//! Unlike grants, a failed watch keeps what was read: forgetting would
//! admit revoked tokens again. Entries leave when `until` passes, and
//! `until` is never earlier than the expiry of a token the entry covers
//! (see [`RevocationList::covers`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Whom a revocation covers, at one issuer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Covered {
    /// Every token of this subject (`sub`): a person logged out everywhere.
    Subject(String),
    /// Every token of this session (`sid`): one login, on one device.
    Session(String),
    /// Every token that maps to this NATS user name (an admin's choice).
    User(String),
}

impl Covered {
    fn kind(&self) -> &'static str {
        match self {
            Covered::Subject(_) => "sub",
            Covered::Session(_) => "sid",
            Covered::User(_) => "user",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Covered::Subject(v) | Covered::Session(v) | Covered::User(v) => v,
        }
    }

    /// Whom an admin names: `kind` is `sub`, `sid` or `user`, and the
    /// value is checked by [`check_value`]. The error says what is wrong,
    /// for the caller to say where it came from (`--user is empty`).
    pub fn named(kind: &str, value: &str) -> Result<Covered, String> {
        check_value(value)?;
        Covered::from_parts(kind, value.to_string())
            .ok_or_else(|| format!("is not sub, sid or user: {}", crate::text::name(kind)))
    }

    fn from_parts(kind: &str, value: String) -> Option<Covered> {
        match kind {
            "sub" => Some(Covered::Subject(value)),
            "sid" => Some(Covered::Session(value)),
            "user" => Some(Covered::User(value)),
            _ => None,
        }
    }
}

/// The longest value an admin may revoke: real subjects, sessions and user
/// names are far shorter, and the value ends up in a KV key (base64, a
/// third longer).
pub(crate) const MAX_VALUE_BYTES: usize = 1024;

/// A value an admin gave (the `revoke` command's flag, a revocation
/// request's member): it is matched exactly against token claims and shown
/// in logs and terminals, so it must be a plain, bounded string. The error
/// is what is wrong with it (`is empty`), escaped.
pub(crate) fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        Err("is empty".to_string())
    } else if value.len() > MAX_VALUE_BYTES {
        Err(format!(
            "is {} bytes long, more than {MAX_VALUE_BYTES}",
            value.len()
        ))
    } else if value.chars().any(char::is_control) {
        Err(format!(
            "\"{}\" has control characters",
            crate::text::printable(value, 64)
        ))
    } else {
        Ok(())
    }
}

impl std::fmt::Display for Covered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), crate::text::name(self.value()))
    }
}

/// When a revocation was made, until when it matters, and what said so.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    /// Tokens issued at or before this (unix seconds) are refused.
    pub at: u64,
    /// No token the entry covers is valid after this; the entry may go.
    pub until: u64,
    /// `backchannel` (the provider's logout), `admin` (the `revoke`
    /// command) or `request` (a revocation request over NATS).
    pub signal: String,
}

/// One revocation, as a key and a value of the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// The `[oidc]` block's name.
    pub issuer: String,
    pub covered: Covered,
    pub stamp: Stamp,
}

impl Revocation {
    /// Its key in the bucket.
    pub fn key(&self) -> String {
        key(&self.issuer, &self.covered)
    }

    pub fn value(&self) -> Vec<u8> {
        serde_json::to_vec(&self.stamp).expect("a stamp serializes")
    }
}

pub(crate) fn key(issuer: &str, covered: &Covered) -> String {
    format!(
        "{issuer}.{}.{}",
        covered.kind(),
        URL_SAFE_NO_PAD.encode(covered.value())
    )
}

/// A stored entry; one whose key or value does not parse revokes nothing
/// and is logged (an admin's typo must be visible, not silently obeyed in
/// some other sense).
pub(crate) fn parse(key: &str, value: &[u8]) -> Option<Revocation> {
    let parsed = parse_key(key).and_then(|(issuer, covered)| {
        let stamp: Stamp = serde_json::from_slice(value).ok()?;
        Some(Revocation {
            issuer,
            covered,
            stamp,
        })
    });
    if parsed.is_none() {
        tracing::warn!(
            key = %crate::text::name(key),
            "revocation list: an entry is not <issuer>.<sub|sid|user>.<base64url> = {{\"at\", \"until\", \"signal\"}}; it revokes nothing"
        );
    }
    parsed
}

fn parse_key(key: &str) -> Option<(String, Covered)> {
    let mut parts = key.splitn(3, '.');
    let (issuer, kind, value) = (parts.next()?, parts.next()?, parts.next()?);
    let value = String::from_utf8(URL_SAFE_NO_PAD.decode(value).ok()?).ok()?;
    Some((issuer.to_string(), Covered::from_parts(kind, value)?))
}

/// What a connecting token says about itself, for the list.
pub struct Presented<'a> {
    pub issuer: &'a str,
    pub sub: Option<&'a str>,
    pub sid: Option<&'a str>,
    pub user: &'a str,
    /// The token's `iat`; without one, any revocation of its subject
    /// covers it (when it was issued cannot be shown to be later).
    pub iat: Option<u64>,
}

impl<'a> Presented<'a> {
    /// A verified token of `issuer`'s, mapped to `user`, as its claims say.
    pub fn of(issuer: &'a str, user: &'a str, claims: &'a Map<String, Value>) -> Presented<'a> {
        let text = |claim: &str| claims.get(claim).and_then(Value::as_str);
        Presented {
            issuer,
            sub: text("sub"),
            sid: text("sid"),
            user,
            iat: claims.get("iat").and_then(Value::as_u64),
        }
    }
}

impl Covered {
    /// Whether this names the token's subject, session or user.
    fn names(&self, token: &Presented<'_>) -> bool {
        match self {
            Covered::Subject(sub) => token.sub == Some(sub.as_str()),
            Covered::Session(sid) => token.sid == Some(sid.as_str()),
            Covered::User(user) => token.user == user,
        }
    }
}

impl Stamp {
    /// Whether a token issued at `iat` was issued at or before this
    /// revocation (one without `iat` cannot be shown to be later).
    fn covers_issued(&self, iat: Option<u64>) -> bool {
        iat.is_none_or(|iat| iat <= self.at)
    }
}

impl Revocation {
    /// Whether this revocation covers the token: its issuer, whom it
    /// names, issued at or before it.
    pub fn covers(&self, token: &Presented<'_>) -> bool {
        self.issuer == token.issuer
            && self.covered.names(token)
            && self.stamp.covers_issued(token.iat)
    }
}

/// The revocations by issuer and whom they cover, and whether the bucket
/// has been read in full once.
#[derive(Default)]
pub struct RevocationList {
    entries: RwLock<HashMap<(String, Covered), Stamp>>,
    loaded: AtomicBool,
    /// How long entries last (`revocation.max_token_lifetime`).
    lifetime: u64,
}

pub(crate) type Entries = HashMap<(String, Covered), Stamp>;

impl RevocationList {
    pub fn new(max_token_lifetime: std::time::Duration) -> RevocationList {
        RevocationList {
            lifetime: max_token_lifetime.as_secs(),
            ..RevocationList::default()
        }
    }

    /// The stamp of a revocation made now of tokens issued at or before
    /// `at`: it lasts as long as any token it covers can.
    pub fn stamp(&self, at: u64, signal: &str) -> Stamp {
        Stamp {
            at,
            until: at.saturating_add(self.lifetime),
            signal: signal.to_string(),
        }
    }

    /// Whether the list can speak for a token: one without `iat`, or that
    /// lives longer than an entry lasts, could outlive the revocation that
    /// covers it.
    pub fn judges(&self, iat: Option<u64>, exp: u64) -> Result<(), String> {
        let Some(iat) = iat else {
            return Err(
                "the token has no iat: with revocation on, when it was issued must be known".into(),
            );
        };
        let lives = exp.saturating_sub(iat);
        if lives > self.lifetime {
            return Err(format!(
                "the token lives {lives}s, longer than revocation.max_token_lifetime ({}s): a revocation would lapse before it expires",
                self.lifetime
            ));
        }
        Ok(())
    }

    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The revocation that covers a token, if one does: its subject, its
    /// session or its user name was revoked at or after it was issued.
    pub fn covers(&self, token: &Presented<'_>, now: u64) -> Option<(Covered, Stamp)> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        let candidates = [
            token.sub.map(|s| Covered::Subject(s.to_string())),
            token.sid.map(|s| Covered::Session(s.to_string())),
            Some(Covered::User(token.user.to_string())),
        ];
        candidates.into_iter().flatten().find_map(|covered| {
            let stamp = entries.get(&(token.issuer.to_string(), covered.clone()))?;
            (stamp.covers_issued(token.iat) && now <= stamp.until).then(|| (covered, stamp.clone()))
        })
    }

    /// The revocations of a complete read that this list does not hold
    /// yet (a new key, or a later `at`): what a watch missed while it was
    /// down, or, on the first read, everything.
    pub fn news(&self, read: &Entries) -> Vec<Revocation> {
        let entries = self.entries.read().unwrap_or_else(|e| e.into_inner());
        read.iter()
            .filter(|(key, stamp)| entries.get(*key).is_none_or(|known| stamp.at > known.at))
            .map(|((issuer, covered), stamp)| Revocation {
                issuer: issuer.clone(),
                covered: covered.clone(),
                stamp: stamp.clone(),
            })
            .collect()
    }

    /// Replaces the list with a complete read of the bucket, keeping what
    /// was known and is still in force: a watch that failed may have
    /// missed nothing but additions, and a revocation must not lapse
    /// because JetStream was away.
    pub fn install(&self, read: Entries, now: u64) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        for (k, stamp) in read {
            merge(&mut entries, k, stamp);
        }
        entries.retain(|_, stamp| stamp.until >= now);
        self.loaded.store(true, Ordering::Release);
    }

    /// One entry seen after the complete read. A deleted entry is not
    /// forgotten here: entries leave when their `until` passes (an admin
    /// who revoked by mistake issues no undo; the user logs in again).
    pub fn update(&self, revocation: Revocation) {
        let mut entries = self.entries.write().unwrap_or_else(|e| e.into_inner());
        merge(
            &mut entries,
            (revocation.issuer, revocation.covered),
            revocation.stamp,
        );
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The later revocation of the same people wins; the wider `until` stays.
pub(crate) fn merge(entries: &mut Entries, key: (String, Covered), stamp: Stamp) {
    match entries.get_mut(&key) {
        Some(known) => {
            known.at = known.at.max(stamp.at);
            known.until = known.until.max(stamp.until);
            if stamp.at >= known.at {
                known.signal = stamp.signal;
            }
        }
        None => {
            entries.insert(key, stamp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revocation(covered: Covered, at: u64) -> Revocation {
        Revocation {
            issuer: "corp".into(),
            covered,
            stamp: Stamp {
                at,
                until: at + 3600,
                signal: "admin".into(),
            },
        }
    }

    fn token<'a>(sub: &'a str, sid: Option<&'a str>, iat: Option<u64>) -> Presented<'a> {
        Presented {
            issuer: "corp",
            sub: Some(sub),
            sid,
            user: "ana",
            iat,
        }
    }

    #[test]
    fn keys_carry_hostile_values_inside_one_token_and_read_back() {
        let r = revocation(Covered::Subject("a.b>*\n".into()), 100);
        let key = r.key();
        assert_eq!(key.matches('.').count(), 2, "{key}");
        assert!(key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)));
        assert_eq!(parse(&key, &r.value()), Some(r));
        assert_eq!(parse("corp.sub.!!", b"{}"), None);
        assert_eq!(
            parse("corp.who.YQ", br#"{"at":1,"until":2,"signal":"x"}"#),
            None
        );
        assert_eq!(parse("corp.sub.YQ", br#"{"at":1}"#), None);
    }

    #[test]
    fn a_revocation_covers_tokens_issued_at_or_before_it_and_no_later_login() {
        let list = RevocationList::default();
        list.update(revocation(Covered::Subject("u1".into()), 100));
        assert!(list.covers(&token("u1", None, Some(99)), 200).is_some());
        assert!(list.covers(&token("u1", None, Some(100)), 200).is_some());
        assert!(list.covers(&token("u1", None, None), 200).is_some());
        assert!(list.covers(&token("u1", None, Some(101)), 200).is_none());
        assert!(list.covers(&token("u2", None, Some(99)), 200).is_none());
        // Another issuer's user of the same subject is untouched.
        let other = Presented {
            issuer: "partner",
            ..token("u1", None, Some(99))
        };
        assert!(list.covers(&other, 200).is_none());
        // Past its until, no token it covers can be valid any more.
        assert!(list.covers(&token("u1", None, Some(99)), 3701).is_none());
    }

    #[test]
    fn a_session_revocation_covers_that_session_only() {
        let list = RevocationList::default();
        list.update(revocation(Covered::Session("s1".into()), 100));
        assert!(list
            .covers(&token("u1", Some("s1"), Some(90)), 200)
            .is_some());
        assert!(list
            .covers(&token("u1", Some("s2"), Some(90)), 200)
            .is_none());
        assert!(list.covers(&token("u1", None, Some(90)), 200).is_none());
    }

    #[test]
    fn a_full_read_keeps_what_was_known_and_drops_what_lapsed() {
        let list = RevocationList::default();
        assert!(!list.is_loaded());
        list.update(revocation(Covered::User("ana".into()), 1000));
        list.update(revocation(Covered::User("bo".into()), 1));
        list.install(Entries::new(), 4000);
        assert!(list.is_loaded());
        assert!(
            list.covers(&token("x", None, Some(50)), 4100).is_some(),
            "ana's revocation is kept though the read did not have it"
        );
        assert_eq!(list.len(), 1, "bo's lapsed");
    }

    #[test]
    fn tokens_that_could_outlive_their_revocation_are_not_judged() {
        let list = RevocationList::new(std::time::Duration::from_secs(3600));
        assert_eq!(list.stamp(100, "admin").until, 3700);
        assert!(list.judges(Some(100), 3700).is_ok());
        let e = list.judges(Some(100), 3701).unwrap_err();
        assert!(
            e.contains("longer than revocation.max_token_lifetime"),
            "{e}"
        );
        let e = list.judges(None, 50).unwrap_err();
        assert!(e.contains("no iat"), "{e}");
    }

    #[test]
    fn the_later_revocation_of_the_same_people_wins() {
        let list = RevocationList::default();
        list.update(revocation(Covered::Subject("u1".into()), 500));
        list.update(revocation(Covered::Subject("u1".into()), 100));
        assert!(list.covers(&token("u1", None, Some(400)), 600).is_some());
    }
}
