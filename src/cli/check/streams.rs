//! Lints about JetStream and KV: what grants and hand-written subjects
//! let users do to streams, buckets and other users' consumers. Every
//! subject comes from `policy::streams`, which compiles the grants.

use std::collections::BTreeSet;

use super::Lint;
use crate::config::Config;
use crate::policy::inbox::reaches_inboxes;
use crate::policy::streams::{
    bucket_changers, consumer_create, kv_keys, kv_stream, reaches_jetstream,
};
use crate::policy::subject::overlaps;

pub(super) const MANAGE_IS_THE_ACCOUNT: Lint = Lint {
    name: "manage-is-the-account",
    doc: "jetstream.manage: a stream's config reaches the whole account, so manage is read \
          and write of all of it.",
    find: |config| {
        config
            .roles
            .iter()
            .map(|(name, role)| (name, &role.grants.jetstream().manage))
            .filter(|(_, manage)| !manage.is_empty())
            .map(|(name, manage)| format!(
                "roles.{name}.jetstream.manage {manage:?}: a stream's config reaches the whole account (its subjects capture any subject, mirror and sources copy any stream or bucket, republish writes to any subject), and each stream can be deleted or purged: manage is read and write of the whole account; give it only to the account's administrators"
            ))
            .collect()
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.reader]\nsub.allow = [\"{{inbox}}.>\"]\njetstream.manage = [\"ORDERS\"]\n",
};

pub(super) const GRANTS_BUCKET_WRITABLE: Lint = Lint {
    name: "grants-bucket-writable",
    doc: "A role that can publish into the grants bucket (grants.kv_bucket), so its users \
          can give anyone any role.",
    find: |config| {
        let Some(bucket) = config.grants.kv_bucket.as_deref() else {
            return Vec::new();
        };
        roles_changing(config, bucket)
            .map(|(name, subject)| format!(
                "roles.{name}: publishing {subject:?} can change the grants bucket {bucket:?} (grants.kv_bucket), so its users can give themselves and others any role"
            ))
            .collect()
    },
    example: "[grants]\nkv_bucket = \"grants\"\n\n[roles.reader]\npub.allow = [\"$KV.*.>\"]\n",
};

pub(super) const REVOCATION_BUCKET_WRITABLE: Lint = Lint {
    name: "revocation-bucket-writable",
    doc: "A role that can publish into the revocation list's bucket (revocation.kv_bucket), \
          so its users can revoke anyone's logins, or into the session registry next to it, so \
          they can hide connections from revocations or have others' closed.",
    find: |config| {
        let Some(bucket) = config.revocation.kv_bucket.as_deref() else {
            return Vec::new();
        };
        let mut out: Vec<String> = roles_changing(config, bucket)
            .map(|(name, subject)| format!(
                "roles.{name}: publishing {subject:?} can write into the revocation list {bucket:?} (revocation.kv_bucket), so its users can end anyone's logins"
            ))
            .collect();
        if let Some(sessions) = config.revocation.sessions_bucket() {
            out.extend(roles_changing(config, &sessions).map(|(name, subject)| format!(
                "roles.{name}: publishing {subject:?} can write into the session registry {sessions:?}, so its users can hide connections from revocations or have others' closed"
            )));
        }
        out
    },
    example: "[revocation]\nkv_bucket = \"revocations\"\n\n[roles.reader]\npub.allow = [\"$KV.revocations.>\"]\n",
};

/// Each role with a subject it may publish to that changes `bucket`.
fn roles_changing<'a>(
    config: &'a Config,
    bucket: &str,
) -> impl Iterator<Item = (&'a str, String)> + 'a {
    let changers = bucket_changers(bucket);
    config.roles.iter().filter_map(move |(name, role)| {
        role.publish
            .allow
            .iter()
            .chain(role.grants.entries().iter().map(|(e, _)| e))
            .map(|e| e.as_str())
            .find(|p| changers.iter().any(|w| overlaps(p, w)))
            .map(|subject| (name, subject.to_string()))
    })
}

pub(super) const KV_ROLLUP: Lint = Lint {
    name: "kv-rollup",
    doc: "kv.write of some keys: a put with Nats-Rollup: all empties the whole bucket, which \
          subject permissions cannot see.",
    find: |config| {
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            for scope in &role.grants.kv().write {
                let Some(keys) = &scope.keys else { continue };
                out.push(format!(
                    "roles.{name}.kv.write {}/{keys}: a put of these keys with the header Nats-Rollup: all empties the whole bucket (subject permissions cannot see headers); unless every user of this role may do that, make the bucket refuse rollups (nats stream edit {} --no-allow-rollup), which also stops KV purge",
                    scope.bucket,
                    kv_stream(&scope.bucket)
                ));
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.reader]\nsub.allow = [\"{{inbox}}.>\"]\nkv.write = [\"profiles/{{sub}}.>\"]\n",
};

pub(super) const NO_INBOX_FOR_ANSWERS: Lint = Lint {
    name: "no-inbox-for-answers",
    doc: "A role with JetStream or KV grants and no inbox to subscribe to: every call times \
          out unless another role grants one.",
    find: |config| {
        config
            .roles
            .iter()
            .filter(|(_, role)| {
                !role.grants.is_empty()
                    && !role.subscribe.allow.iter().any(|e| reaches_inboxes(e.as_str()))
            })
            .map(|(name, _)| format!(
                "roles.{name}: jetstream and kv answer on the client's inbox, and sub.allow has no inbox; unless another role of its users grants one, every JetStream and KV call times out: grant \"{{{{inbox}}}}.>\" (the user's private inbox) and set the clients' inbox prefix"
            ))
            .collect()
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.reader]\nkv.read = [\"config\"]\n",
};

pub(super) const JETSTREAM_API_BY_HAND: Lint = Lint {
    name: "jetstream-api-by-hand",
    doc: "pub.allow reaching JetStream API or KV subjects in a users' account that imports \
          the whole JetStream API of the streams' account: more than any grant names.",
    find: |config| {
        let layout = config.layout().unwrap_or_default();
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            let account = role.account.as_deref().unwrap_or(&config.callout.account);
            if !layout.imports.contains_key(account) {
                continue;
            }
            for p in role.publish.allow.iter().map(|e| e.as_str()).filter(|p| reaches_jetstream(p)) {
                out.push(format!(
                    "roles.{name}.pub.allow {p:?} reaches JetStream subjects in {account:?}, which imports the whole JetStream API of {} (jetstream.account): its users can do there whatever that subject allows, beyond what the role's grants name (delete and purge streams, read any bucket); grant jetstream/kv instead",
                    layout.account
                ));
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.reader]\nsub.allow = [\"{{inbox}}.>\"]\npub.allow = [\"$JS.API.STREAM.INFO.ORDERS\"]\nkv.read = [\"config\"]\n",
};

pub(super) const GRANTS_IN_STREAMS_ACCOUNT: Lint = Lint {
    name: "grants-in-streams-account",
    doc: "Users placed in the account holding the streams (jetstream.same_account) with \
          grants or JetStream subjects: JetStream answers to any subject they name there.",
    find: |config| {
        let Some(js) = config.jetstream.as_ref() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            let account = role.account.as_deref().unwrap_or(&config.callout.account);
            if js.name != account {
                continue;
            }
            for (entry, what) in role.grants.entries() {
                out.push(format!(
                    "roles.{name}: {:?} ({what}) is granted in {account:?}, the account holding the streams (jetstream.same_account): JetStream will publish its answers, and the messages it serves, to any subject of the account the user names, with its own rights: into any stream or bucket there, the grants of other users included",
                    entry.as_str()
                ));
            }
            let by_hand = role.publish.allow.iter().map(|e| e.as_str()).find(|p| reaches_jetstream(p));
            if let (true, Some(p)) = (role.grants.is_empty(), by_hand) {
                out.push(format!(
                    "roles.{name} places its users in {account:?}, the account holding the streams (jetstream.account), and pub.allow {p:?} reaches its JetStream API or KV subjects: JetStream publishes its answers to any subject they name there, with its own rights, so they can write into every stream and bucket of the account; give this only to its administrators"
                ));
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\nsame_account = true\n\n[roles.admin]\naccount = \"DATA\"\nsub.allow = [\"{{inbox}}.>\"]\npub.allow = [\"$JS.API.>\"]\n",
};

/// A grant that creates consumers on a stream: `replay`, or a
/// whole-bucket KV `read`.
struct Creator {
    stream: String,
    /// The grant's key (`roles.r.jetstream.replay`).
    key: String,
    /// What the grant names: the stream, or the bucket.
    target: String,
}

fn consumer_creators(config: &Config) -> Vec<Creator> {
    let mut out = Vec::new();
    for (name, role) in config.roles.iter() {
        for stream in &role.grants.jetstream().replay {
            out.push(Creator {
                stream: stream.clone(),
                key: format!("roles.{name}.jetstream.replay"),
                target: stream.clone(),
            });
        }
        for scope in role.grants.kv().read.iter().filter(|s| s.keys.is_none()) {
            out.push(Creator {
                stream: kv_stream(&scope.bucket),
                key: format!("roles.{name}.kv.read"),
                target: scope.bucket.clone(),
            });
        }
    }
    out
}

pub(super) const CONSUMER_REWRITE: Lint = Lint {
    name: "consumer-rewrite",
    doc: "A durable that users who may create consumers on its stream can rewrite: a \
          consumer create names its consumer in the request body.",
    find: |config| {
        let creators = consumer_creators(config);
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            for c in &role.grants.jetstream().consume {
                for Creator { key, .. } in creators.iter().filter(|x| x.stream == c.stream) {
                    out.push(format!(
                        "roles.{name}.jetstream.consume {}/{}: {key} may create consumers on stream {}, and a consumer create names its consumer in the request body, which subject permissions cannot check: those users can rewrite the durable {:?} (its filter, its delivery subject)",
                        c.stream, c.consumer, c.stream, c.consumer
                    ));
                }
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.worker]\nsub.allow = [\"{{inbox}}.>\"]\njetstream.consume = [\"ORDERS/worker\"]\n\n[roles.tail]\nsub.allow = [\"{{inbox}}.>\"]\njetstream.replay = [\"ORDERS\"]\n",
};

pub(super) const DELIVERY_ANYWHERE: Lint = Lint {
    name: "delivery-anywhere",
    doc: "Grants that create consumers on a bucket's stream and grants that write into it: \
          together they make what a user writes appear on any subject of the account.",
    find: |config| {
        // Writers are known exactly for KV buckets (their subjects are
        // fixed); a plain stream's subjects are not in this config, so
        // `replay` is warned about on its own (redirected-replay).
        let buckets: BTreeSet<&str> = config
            .roles
            .iter()
            .flat_map(|(_, r)| r.grants.kv().read.iter().chain(&r.grants.kv().write))
            .map(|s| s.bucket.as_str())
            .collect();
        let mut creators: Vec<(String, String)> = consumer_creators(config)
            .into_iter()
            .map(|c| (c.stream, format!("{} {}", c.key, c.target)))
            .collect();
        let mut writers: Vec<(String, String)> = Vec::new();
        for (name, role) in config.roles.iter() {
            for scope in &role.grants.kv().write {
                let keys = scope.keys.as_deref().map(|k| format!("/{k}")).unwrap_or_default();
                let what = format!("roles.{name}.kv.write {}{keys}", scope.bucket);
                writers.push((kv_stream(&scope.bucket), what));
            }
            // ">" is warned about as every subject already.
            for subject in role.publish.allow.iter().map(|e| e.as_str()).filter(|s| *s != ">") {
                let by = || format!("roles.{name}.pub.allow {subject:?}");
                for bucket in &buckets {
                    let stream = kv_stream(bucket);
                    if overlaps(subject, &kv_keys(bucket)) {
                        writers.push((stream.clone(), by()));
                    }
                    if overlaps(subject, &consumer_create(&stream)) {
                        creators.push((stream, by()));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (stream, creator) in &creators {
            for (_, writer) in writers.iter().filter(|(s, _)| s == stream) {
                out.push(format!(
                    "{creator} creates consumers on {stream} and {writer} writes into it: a consumer's delivery subject is set in the request body and nats-server delivers with its own rights, so a user holding both can make what it writes appear on any subject of the account holding the stream (and on any inbox of the users' account, through the inbox import), past its publish permissions; keep the two grants for one stream apart, or in roles no one holds together"
                ));
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.watcher]\nsub.allow = [\"{{inbox}}.>\"]\nkv.read = [\"profiles\"]\n\n[roles.profile]\nsub.allow = [\"{{inbox}}.>\"]\nkv.write = [\"profiles/{{sub}}.>\"]\n",
};

pub(super) const REDIRECTED_REPLAY: Lint = Lint {
    name: "redirected-replay",
    doc: "replay and whole-bucket KV reads create consumers whose delivery subject the user \
          sets: messages re-sent to any subject of the account, other consumers driven.",
    find: |config| {
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            for stream in &role.grants.jetstream().replay {
                out.push(format!(
                    "roles.{name}.jetstream.replay {stream}: a consumer's delivery subject is set in the request body and nats-server delivers with its own rights, so its users can have {stream}'s messages re-sent to any subject of the account holding it (and to any inbox of the users' account, through the inbox import), another consumer's pull or reset subject included, which drives that consumer (its messages go where no one receives them, or it starts over); any of them who may also publish into {stream}'s subjects can make any content appear there; grant replay only where that is acceptable"
                ));
            }
            for scope in role.grants.kv().read.iter().filter(|s| s.keys.is_none()) {
                out.push(format!(
                    "roles.{name}.kv.read {}: watch, keys and history create consumers, whose delivery subject is set in the request body and delivered to with nats-server's own rights: its users can have the bucket's entries sent to any subject of the account holding it, another consumer's pull or reset subject included (which drives that consumer), and to any inbox of the users' account; grant whole-bucket reads only where that is acceptable",
                    scope.bucket
                ));
            }
        }
        out
    },
    example: "[jetstream]\naccount = \"DATA\"\n\n[roles.tail]\nsub.allow = [\"{{inbox}}.>\"]\njetstream.replay = [\"ORDERS\"]\n",
};
