//! The connections every replica admitted, shared in a NATS KV bucket
//! (`RevocationConfig::sessions_bucket`), so that a revocation still finds
//! the connections of a replica that has restarted (or is gone) since it
//! admitted them: what `Sessions` keeps in one replica's memory, written
//! for all.
//!
//! Why not find them by name (`CONNZ` with `user`)? A callout user's
//! connection is listed under its user JWT's `name` only, which two
//! issuers may share and which says nothing of `sub` or `sid`: a search by
//! name would close another issuer's user, or another session of the same
//! person. Here each connection is filed under whom its token names.
//!
//! Key: `<issuer>.<sub>.<sid>.<user>.<server id>.<cid>`, where issuer,
//! sub, sid and user are each the first 16 bytes of their SHA-256 in
//! base64url (22 characters; `_` for a token without `sub` or `sid`):
//! values from tokens are hostile and of any length, hashes are neither,
//! and a revocation of one of them is a key filter with wildcards in the
//! other places. Value: `{"iat": N, "exp": N}`, to tell whether the
//! revocation covers it (issued at or before) and whether it can still be
//! alive. The bucket keeps entries in memory storage (a connection ends
//! with its server anyway) for `revocation.max_token_lifetime`, which no
//! admitted token outlives, and at most `MAX_BYTES`: entries are never
//! deleted (a connection's end is not seen here), so the oldest are
//! dropped first when the bound is reached (discard old, unlike a KV
//! bucket's default, where every new one would fail).

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::policy::revocations::{Covered, Presented, Revocation};

/// Admissions waiting to be written; beyond, one is dropped (and counted):
/// the callout must never wait for the registry.
const QUEUE: usize = 65_536;

/// Writes in flight at once.
const WRITERS: usize = 64;

/// Entries read per fetch when a revocation looks them up.
const BATCH: usize = 1_000;

/// The bucket's size bound: some two million connections.
const MAX_BYTES: i64 = 512 * 1024 * 1024;

/// One admitted connection, where nats-server knows it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Connection {
    pub(crate) server: String,
    pub(crate) cid: u64,
}

#[derive(Serialize, Deserialize)]
struct Times {
    iat: u64,
    exp: u64,
}

fn hash(value: &str) -> String {
    URL_SAFE_NO_PAD.encode(&Sha256::digest(value.as_bytes())[..16])
}

fn hash_or_none(value: Option<&str>) -> String {
    value.map(hash).unwrap_or_else(|| "_".into())
}

/// The key of one admitted connection.
fn key(token: &Presented<'_>, connection: &Connection) -> String {
    format!(
        "{}.{}.{}.{}.{}.{}",
        hash(token.issuer),
        hash_or_none(token.sub),
        hash_or_none(token.sid),
        hash(token.user),
        connection.server,
        connection.cid
    )
}

/// The key filter of the connections a revocation names (when they were
/// issued is in the values).
fn filter(revocation: &Revocation) -> String {
    let issuer = hash(&revocation.issuer);
    match &revocation.covered {
        Covered::Subject(sub) => format!("{issuer}.{}.*.*.*.*", hash(sub)),
        Covered::Session(sid) => format!("{issuer}.*.{}.*.*.*", hash(sid)),
        Covered::User(user) => format!("{issuer}.*.*.{}.*.*", hash(user)),
    }
}

/// The server and client id at the end of a key.
fn connection_of(key: &str) -> Option<Connection> {
    let mut parts = key.rsplitn(3, '.');
    let cid = parts.next()?.parse().ok()?;
    let server = parts.next()?.to_string();
    Some(Connection { server, cid })
}

/// A server id becomes a subject token (here and in KICK): an nkey is
/// letters and digits.
pub(crate) fn is_server_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric())
}

pub(crate) struct Registry {
    store: kv::Store,
    queue: mpsc::Sender<(String, Vec<u8>)>,
}

impl Registry {
    /// Opens the bucket (creating it if missing) and starts the writer.
    /// `on_failure` counts an admission that could not be written.
    pub(crate) async fn open(
        client: async_nats::Client,
        bucket: &str,
        max_age: Duration,
        on_failure: impl Fn() + Send + Sync + 'static,
    ) -> Result<Registry, String> {
        let js = jetstream::new(client);
        let store = match js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => {
                // A KV bucket's stream, but discarding the oldest entries
                // when full (kv::Config has no discard policy).
                js.create_stream(stream::Config {
                    name: format!("KV_{bucket}"),
                    description: Some("nats-oidc-callout admitted connections: <issuer>.<sub>.<sid>.<user> (hashed).<server id>.<cid> → {iat, exp}".into()),
                    subjects: vec![format!("$KV.{bucket}.>")],
                    max_messages_per_subject: 1,
                    max_bytes: MAX_BYTES,
                    max_age,
                    storage: stream::StorageType::Memory,
                    discard: stream::DiscardPolicy::Old,
                    allow_rollup: true,
                    deny_delete: true,
                    allow_direct: true,
                    duplicate_window: max_age.min(Duration::from_secs(120)),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create bucket {bucket:?}: {e}"))?;
                js.get_key_value(bucket)
                    .await
                    .map_err(|e| format!("cannot open bucket {bucket:?}: {e}"))?
            }
        };
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(write(store.clone(), pending, on_failure));
        Ok(Registry { store, queue })
    }

    /// Files an admitted connection, without waiting; false when the
    /// queue is full (the connection is then found in this replica's
    /// memory only).
    pub(crate) fn record(
        &self,
        token: &Presented<'_>,
        connection: &Connection,
        expires: u64,
    ) -> bool {
        let Some(iat) = token.iat else {
            // With revocation on, a token without iat is never admitted.
            return true;
        };
        let value = serde_json::to_vec(&Times { iat, exp: expires }).expect("times serialize");
        self.queue.try_send((key(token, connection), value)).is_ok()
    }

    /// The live connections `revocation` covers, as filed by any replica.
    pub(crate) async fn covered(
        &self,
        revocation: &Revocation,
        now: u64,
    ) -> Result<Vec<Connection>, String> {
        let consumer = self
            .store
            .stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{}{}", self.store.prefix, filter(revocation)),
                deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(30),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("session registry: {e}"))?;
        let found = self.read(&consumer, revocation, now).await;
        // Gone by itself after inactive_threshold otherwise; a burst of
        // revocations should not pile consumers up meanwhile.
        let name = consumer.cached_info().name.clone();
        let _ = self.store.stream.delete_consumer(&name).await;
        found
    }

    async fn read(
        &self,
        consumer: &consumer::Consumer<consumer::pull::Config>,
        revocation: &Revocation,
        now: u64,
    ) -> Result<Vec<Connection>, String> {
        let mut found = Vec::new();
        loop {
            let mut batch = consumer
                .fetch()
                .max_messages(BATCH)
                .messages()
                .await
                .map_err(|e| format!("session registry: {e}"))?;
            let mut read = 0;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| format!("session registry: {e}"))?;
                read += 1;
                let key = message
                    .subject
                    .strip_prefix(self.store.prefix.as_str())
                    .unwrap_or_default();
                let times: Option<Times> = serde_json::from_slice(&message.payload).ok();
                match (connection_of(key), times) {
                    (Some(c), Some(t))
                        if t.iat <= revocation.stamp.at
                            && t.exp > now
                            && is_server_id(&c.server) =>
                    {
                        found.push(c)
                    }
                    _ => {}
                }
            }
            if read < BATCH {
                return Ok(found);
            }
        }
    }
}

/// Writes queued admissions until the registry is dropped.
async fn write(
    store: kv::Store,
    pending: mpsc::Receiver<(String, Vec<u8>)>,
    on_failure: impl Fn() + Send + Sync + 'static,
) {
    let mut warned = false;
    let mut pending = pending;
    futures::stream::poll_fn(move |cx| pending.poll_recv(cx))
        .map(|(key, value)| {
            let store = store.clone();
            async move { store.put(key, value.into()).await }
        })
        .buffer_unordered(WRITERS)
        .for_each(|written| {
            if let Err(e) = written {
                on_failure();
                if !std::mem::replace(&mut warned, true) {
                    tracing::warn!(
                        error = %e,
                        "session registry: an admitted connection could not be filed; a revocation finds it only through the replica that admitted it (said once; see nats_oidc_callout_session_registry_failures_total)"
                    );
                }
            }
            futures::future::ready(())
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::revocations::Stamp;

    fn token<'a>(issuer: &'a str, sub: Option<&'a str>, sid: Option<&'a str>) -> Presented<'a> {
        Presented {
            issuer,
            sub,
            sid,
            user: "ana",
            iat: Some(10),
        }
    }

    fn revocation(issuer: &str, covered: Covered) -> Revocation {
        Revocation {
            issuer: issuer.into(),
            covered,
            stamp: Stamp {
                at: 10,
                until: 100,
                signal: "admin".into(),
            },
        }
    }

    /// What a NATS subject filter with `*` tokens matches.
    fn matches(filter: &str, key: &str) -> bool {
        let (f, k): (Vec<_>, Vec<_>) = (filter.split('.').collect(), key.split('.').collect());
        f.len() == k.len() && f.iter().zip(&k).all(|(f, k)| *f == "*" || f == k)
    }

    #[test]
    fn a_revocation_filters_exactly_the_connections_its_issuer_and_name_file() {
        let connection = Connection {
            server: "NSERVER".into(),
            cid: 7,
        };
        let ana_s1 = key(&token("corp", Some("u-ana"), Some("s1")), &connection);
        let ana_s2 = key(&token("corp", Some("u-ana"), Some("s2")), &connection);
        let other_issuer = key(&token("lab", Some("u-ana"), Some("s1")), &connection);
        let no_sid = key(&token("corp", Some("u-ana"), None), &connection);

        let by_sub = filter(&revocation("corp", Covered::Subject("u-ana".into())));
        assert!(
            matches(&by_sub, &ana_s1) && matches(&by_sub, &ana_s2) && matches(&by_sub, &no_sid)
        );
        assert!(!matches(&by_sub, &other_issuer));

        let by_sid = filter(&revocation("corp", Covered::Session("s1".into())));
        assert!(matches(&by_sid, &ana_s1));
        assert!(!matches(&by_sid, &ana_s2) && !matches(&by_sid, &other_issuer));
        assert!(!matches(&by_sid, &no_sid));

        let by_user = filter(&revocation("corp", Covered::User("ana".into())));
        assert!(matches(&by_user, &ana_s1) && matches(&by_user, &no_sid));
        assert!(!matches(&by_user, &other_issuer));

        assert_eq!(connection_of(&ana_s1), Some(connection));
    }

    #[test]
    fn hostile_values_cannot_add_tokens_to_a_key() {
        let connection = Connection {
            server: "N".into(),
            cid: 1,
        };
        let k = key(&token("corp", Some("a.b.>"), Some("* \r\n")), &connection);
        assert_eq!(k.split('.').count(), 6, "{k}");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)));
    }
}
