//! JetStream and KV grants, compiled to the exact subjects they need.
//!
//! Every JetStream operation is a request a client publishes (API calls,
//! acks, flow-control replies, KV puts); the answers and deliveries come on
//! the client's own inbox, which a role grants with `sub.allow` (its private
//! `{{inbox}}.>`). A grant therefore compiles to publish subjects only, and
//! to no more than the operations its name says.
//!
//! A compiled subject may match only subjects nats-server routes to the
//! stream, consumer or bucket the grant names, under every layout the
//! server listens on: acks and flow control come in a v1 form
//! (`$JS.ACK.<stream>.<consumer>.` + 5 numbers, exactly 9 tokens) and a v2
//! form (`$JS.ACK.<domain>.<account hash>.<stream>.<consumer>.` + 5
//! numbers); nats-server does not check the names in an ack against the
//! consumer that receives it, so a wildcard where one layout has a name and
//! another a number would reach other consumers. Every subject here has a
//! fixed number of tokens, and the v2 forms pin the domain and the hash of
//! the account that holds the streams.
//!
//! Where the streams live in another account than the users (the layout
//! the README recommends), the users' account imports the whole JetStream
//! API of that account (`$JS.API.>`, which takes the place of nats-server's
//! own answer for an account without JetStream), so grants compile to the
//! same subjects in either layout. The README's grant table lists them,
//! each with where it comes from.

use sha2::{Digest, Sha256};

use crate::policy::subject::overlaps;
use crate::policy::template::Entry;

/// The JetStream API's subjects in the account that holds the streams.
pub(crate) const JS_API: &str = "$JS.API";

/// What nats-server writes into the v2 ack and flow-control subjects of
/// the account holding the streams a role's grants name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JsHome {
    /// The JetStream domain as v2 ack subjects write it (`_` for none).
    pub domain: String,
    /// nats-server's hash of the name of the account holding the streams
    /// (its public key in operator mode), as v2 ack subjects carry it.
    pub account_hash: String,
}

/// `$JS.API.<rest>`.
fn api(rest: &str) -> String {
    format!("{JS_API}.{rest}")
}

/// The stream that holds a KV bucket.
pub(crate) fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// The subject space of a bucket's keys: a publish there is a put,
/// delete or purge.
pub(crate) fn kv_keys(bucket: &str) -> String {
    format!("$KV.{bucket}.>")
}

/// Publish subjects that change a bucket's contents or configuration:
/// its keys, the stream API calls on its stream, and deletes of its
/// messages.
pub(crate) fn bucket_changers(bucket: &str) -> [String; 3] {
    let stream = kv_stream(bucket);
    [
        kv_keys(bucket),
        api(&format!("STREAM.*.{stream}")),
        api(&format!("STREAM.MSG.DELETE.{stream}")),
    ]
}

/// The subject a consumer of `stream` is created on without a name in the
/// subject (the name is in the request body).
pub(crate) fn consumer_create(stream: &str) -> String {
    api(&format!("CONSUMER.CREATE.{stream}"))
}

/// Whether publishing `subject` reaches the JetStream API or KV subjects
/// of the account: anything JetStream does on its own rights.
pub(crate) fn reaches_jetstream(subject: &str) -> bool {
    overlaps(subject, &format!("{JS_API}.>")) || overlaps(subject, "$KV.>")
}

/// nats-server's 8-character hash of an account name (`getHash`), which v2
/// ack and flow-control subjects carry.
pub fn account_hash(account: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    Sha256::digest(account.as_bytes())[..8]
        .iter()
        .map(|b| DIGITS[usize::from(b % 62)] as char)
        .collect()
}

/// `[roles.<name>.jetstream]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JetStreamGrant {
    /// Durable consumers to pull from (and ack), as stream/consumer.
    pub consume: Vec<Consumer>,
    /// Streams to read: info and message get, nothing about consumers.
    pub read: Vec<String>,
    /// Streams to replay through consumers the client creates (ephemeral,
    /// ordered).
    pub replay: Vec<String>,
    /// Streams to create, update, delete and purge, with their consumers.
    pub manage: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub stream: String,
    pub consumer: String,
}

impl Consumer {
    /// `stream/consumer`, each a name JetStream accepts.
    pub fn parse(entry: &str) -> Result<Consumer, String> {
        let (stream, consumer) = entry.split_once('/').ok_or_else(|| {
            format!(
                "{:?} is not stream/consumer (a durable consumer of a stream)",
                crate::text::clip(entry)
            )
        })?;
        check_stream_name("stream", stream)?;
        check_stream_name("consumer", consumer)?;
        Ok(Consumer {
            stream: stream.to_string(),
            consumer: consumer.to_string(),
        })
    }
}

/// `[roles.<name>.kv]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KvGrant {
    pub read: Vec<KvScope>,
    pub write: Vec<KvScope>,
}

/// A bucket, or some of its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvScope {
    pub bucket: String,
    /// A key pattern (`profiles.{{sub}}.>`), or `None` for the whole bucket.
    pub keys: Option<String>,
}

impl KvScope {
    /// `bucket` or `bucket/<key pattern>`.
    pub fn parse(entry: &str) -> Result<KvScope, String> {
        let (bucket, keys) = match entry.split_once('/') {
            Some((b, k)) => (b.to_string(), Some(k.to_string())),
            None => (entry.to_string(), None),
        };
        check_bucket(&bucket)?;
        if let Some(k) = &keys {
            check_key_pattern(k)?;
            // Placeholders follow the subject rules.
            Entry::parse(&format!("$KV.{bucket}.{k}"))?;
        }
        Ok(KvScope { bucket, keys })
    }
}

/// A compiled subject and the operation it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compiled {
    pub subject: String,
    pub what: &'static str,
}

fn s(subject: String, what: &'static str) -> Compiled {
    Compiled { subject, what }
}

impl JetStreamGrant {
    pub fn is_empty(&self) -> bool {
        self.consume.is_empty()
            && self.read.is_empty()
            && self.replay.is_empty()
            && self.manage.is_empty()
    }

    /// The publish subjects of this grant; `home` says what ack and
    /// flow-control subjects carry.
    pub fn compile(&self, home: &JsHome) -> Vec<Compiled> {
        let mut out = Vec::new();
        for Consumer { stream, consumer } in &self.consume {
            out.extend(consume(home, stream, consumer));
        }
        for stream in &self.read {
            out.extend(read(stream));
        }
        for stream in &self.replay {
            out.extend(replay(home, stream));
        }
        for stream in &self.manage {
            out.extend(manage(stream));
        }
        out
    }

    /// Whether the grant lets its users have messages pushed to a delivery
    /// subject (consumers they create, or push durables): across accounts
    /// those deliveries need the inbox stream export.
    pub fn pushes(&self) -> bool {
        !self.consume.is_empty() || !self.replay.is_empty() || !self.manage.is_empty()
    }
}

/// The five numbers an ack subject ends with (delivered count, stream and
/// consumer sequence, timestamp, pending), one token each.
const ACK_NUMBERS: &str = "*.*.*.*.*";

/// Pull from (and ack) one durable consumer; its info.
fn consume(home: &JsHome, stream: &str, consumer: &str) -> Vec<Compiled> {
    let JsHome {
        domain,
        account_hash: hash,
        ..
    } = home;
    vec![
        s(
            api(&format!("CONSUMER.INFO.{stream}.{consumer}")),
            "consumer info",
        ),
        s(
            api(&format!("CONSUMER.MSG.NEXT.{stream}.{consumer}")),
            "pull fetch",
        ),
        s(
            format!("$JS.ACK.{stream}.{consumer}.{ACK_NUMBERS}"),
            "ack, nak, term, in progress",
        ),
        s(
            format!("$JS.ACK.{domain}.{hash}.{stream}.{consumer}.{ACK_NUMBERS}"),
            "ack, nak, term, in progress (v2 ack subjects)",
        ),
        s(
            format!("$JS.FC.{stream}.{consumer}.*"),
            "flow control replies (push delivery)",
        ),
        s(
            format!("$JS.FC.{domain}.{hash}.{stream}.{consumer}.*"),
            "flow control replies (v2 subjects)",
        ),
    ]
}

/// Stream info and message get (by sequence or last by subject).
fn read(stream: &str) -> Vec<Compiled> {
    vec![
        s(api(&format!("STREAM.INFO.{stream}")), "stream info"),
        s(api(&format!("STREAM.MSG.GET.{stream}")), "get message"),
        s(api(&format!("DIRECT.GET.{stream}")), "direct get"),
        s(
            api(&format!("DIRECT.GET.{stream}.>")),
            "direct get, last by subject",
        ),
    ]
}

/// Consumers the client creates itself (ephemeral, ordered), on one stream.
fn replay(home: &JsHome, stream: &str) -> Vec<Compiled> {
    let mut out = vec![
        s(api(&format!("STREAM.INFO.{stream}")), "stream info"),
        s(
            api(&format!("CONSUMER.CREATE.{stream}")),
            "create a consumer",
        ),
        s(
            api(&format!("CONSUMER.CREATE.{stream}.>")),
            "create a named or filtered consumer",
        ),
        s(api(&format!("CONSUMER.INFO.{stream}.*")), "consumer info"),
        s(
            api(&format!("CONSUMER.MSG.NEXT.{stream}.*")),
            "pull from its consumer",
        ),
    ];
    out.extend(flow_control(home, stream));
    out
}

/// Flow-control replies of any consumer on `stream`, in both layouts.
fn flow_control(home: &JsHome, stream: &str) -> Vec<Compiled> {
    let JsHome {
        domain,
        account_hash: hash,
        ..
    } = home;
    vec![
        s(
            format!("$JS.FC.{stream}.*.*"),
            "flow control replies (push delivery)",
        ),
        s(
            format!("$JS.FC.{domain}.{hash}.{stream}.*.*"),
            "flow control replies (v2 subjects)",
        ),
    ]
}

/// The stream and its consumers: create, update, delete, purge.
fn manage(stream: &str) -> Vec<Compiled> {
    [
        ("STREAM.CREATE", "create the stream"),
        ("STREAM.UPDATE", "update the stream"),
        ("STREAM.DELETE", "delete the stream"),
        ("STREAM.PURGE", "purge the stream"),
        ("STREAM.INFO", "stream info"),
        ("STREAM.MSG.DELETE", "delete a message"),
        ("CONSUMER.CREATE", "create a consumer"),
        ("CONSUMER.LIST", "list consumers"),
        ("CONSUMER.NAMES", "consumer names"),
    ]
    .into_iter()
    .map(|(op, what)| s(api(&format!("{op}.{stream}")), what))
    .chain([
        s(
            api(&format!("CONSUMER.CREATE.{stream}.>")),
            "create a named or filtered consumer",
        ),
        s(
            api(&format!("CONSUMER.DURABLE.CREATE.{stream}.*")),
            "create a durable consumer (older clients)",
        ),
        s(
            api(&format!("CONSUMER.DELETE.{stream}.*")),
            "delete a consumer",
        ),
        s(api(&format!("CONSUMER.INFO.{stream}.*")), "consumer info"),
        s(
            api(&format!("CONSUMER.PAUSE.{stream}.*")),
            "pause a consumer",
        ),
        s(
            api(&format!("CONSUMER.RESET.{stream}.*")),
            "reset a consumer (nats-server 2.14+)",
        ),
        s(
            api(&format!("CONSUMER.UNPIN.{stream}.*")),
            "unpin a priority group's client",
        ),
    ])
    .collect()
}

impl KvGrant {
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// The publish subjects of this grant; key patterns may hold
    /// placeholders, filled per connection like any subject.
    pub fn compile(&self, home: &JsHome) -> Vec<Compiled> {
        let mut out = Vec::new();
        for scope in &self.read {
            out.extend(kv_read(home, scope));
        }
        for scope in &self.write {
            out.extend(kv_write(scope));
        }
        out
    }

    /// Whether the grant watches, lists keys or reads history: consumers
    /// that push to the client's inbox.
    pub fn pushes(&self) -> bool {
        self.read.iter().any(|s| s.keys.is_none())
    }
}

/// A bucket read grants what can be scoped to it (get by key) and what
/// cannot be scoped to some keys (watch, keys, history, which run through
/// consumers on the bucket's stream); a key-pattern read grants only gets
/// of those keys.
fn kv_read(home: &JsHome, scope: &KvScope) -> Vec<Compiled> {
    let b = &scope.bucket;
    let stream = kv_stream(b);
    let mut out = vec![s(
        api(&format!("STREAM.INFO.{stream}")),
        "open the bucket (status)",
    )];
    match &scope.keys {
        Some(keys) => {
            out.push(s(
                api(&format!("DIRECT.GET.{stream}.$KV.{b}.{keys}")),
                "get these keys",
            ));
        }
        None => {
            out.push(s(
                api(&format!("DIRECT.GET.{stream}.$KV.{b}.>")),
                "get any key",
            ));
            out.push(s(
                api(&format!("STREAM.MSG.GET.{stream}")),
                "get (buckets without direct get)",
            ));
            out.extend(
                [
                    s(consumer_create(&stream), "watch, keys, history"),
                    s(
                        api(&format!("CONSUMER.CREATE.{stream}.>")),
                        "watch, keys, history",
                    ),
                    s(
                        api(&format!("CONSUMER.INFO.{stream}.*")),
                        "watch, keys, history (consumer info)",
                    ),
                    s(
                        api(&format!("CONSUMER.MSG.NEXT.{stream}.*")),
                        "watch, keys, history (pull)",
                    ),
                ]
                .into_iter()
                .chain(flow_control(home, &stream)),
            );
        }
    }
    out
}

/// Put, create, update, delete and purge of the keys (all are publishes on
/// the key's subject, with headers), and opening the bucket.
fn kv_write(scope: &KvScope) -> Vec<Compiled> {
    let b = &scope.bucket;
    let keys = scope.keys.as_deref().unwrap_or(">");
    vec![
        s(
            api(&format!("STREAM.INFO.{}", kv_stream(b))),
            "open the bucket (status)",
        ),
        s(
            format!("$KV.{b}.{keys}"),
            "put, create, update, delete, purge",
        ),
    ]
}

/// A role's JetStream and KV grants with the publish entries they compile
/// to, parsed once: the entries are computed here and nowhere else.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamGrants {
    jetstream: JetStreamGrant,
    kv: KvGrant,
    entries: Vec<(Entry, &'static str)>,
}

/// Why a role's grants cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantError {
    /// Grants, but no `[jetstream]` table says where the streams live.
    NoHome,
    /// A compiled subject is not a valid entry; `kind` is `jetstream` or
    /// `kv`, the key of the grant under the role.
    Subject { kind: &'static str, reason: String },
}

impl StreamGrants {
    /// `home` is where the streams live (`None` without a `[jetstream]`
    /// table, which only a role without grants may do).
    pub fn new(
        jetstream: JetStreamGrant,
        kv: KvGrant,
        home: Option<&JsHome>,
    ) -> Result<StreamGrants, GrantError> {
        if jetstream.is_empty() && kv.is_empty() {
            return Ok(StreamGrants::default());
        }
        let home = home.ok_or(GrantError::NoHome)?;
        let parse = |kind: &'static str, compiled: Vec<Compiled>| {
            compiled
                .into_iter()
                .map(|c| {
                    Entry::parse(&c.subject)
                        .map(|e| (e, c.what))
                        .map_err(|reason| GrantError::Subject { kind, reason })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut entries = parse("jetstream", jetstream.compile(home))?;
        entries.extend(parse("kv", kv.compile(home))?);
        Ok(StreamGrants {
            jetstream,
            kv,
            entries,
        })
    }

    pub fn jetstream(&self) -> &JetStreamGrant {
        &self.jetstream
    }

    pub fn kv(&self) -> &KvGrant {
        &self.kv
    }

    /// The publish entries, with what each is for.
    pub fn entries(&self) -> &[(Entry, &'static str)] {
        &self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the grants have messages pushed to the client's inbox.
    pub fn pushes(&self) -> bool {
        self.jetstream.pushes() || self.kv.pushes()
    }
}

/// A stream or consumer name as JetStream accepts it, and not made of
/// digits only: ack subjects carry numbers where v2 subjects carry names.
pub fn check_stream_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 255
        || name.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(c, '.' | '*' | '>' | '/' | '\\' | '{' | '}')
        })
    {
        return Err(format!(
            "{what} {:?} must be 1 to 255 characters without whitespace, '.', '*', '>', '/', '\\', '{{' or '}}' (names are never filled from a token)",
            crate::text::clip(name)
        ));
    }
    // Ack subjects carry numbers and, in their v2 form, the domain ("_"
    // for none) where other layouts carry names. Grants have fixed arity,
    // so no subject of one layout reads as another's; names that look
    // like those fields are refused all the same, so that no reader of a
    // subject (a person, a log search) can confuse them either.
    if name == "_" {
        return Err(format!(
            "{what} \"_\" is what v2 ack subjects write for \"no domain\""
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{what} {name:?} is all digits, which ack subjects carry as sequence numbers"
        ));
    }
    Ok(())
}

/// A KV bucket name.
pub fn check_bucket(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "bucket {:?} must be letters, digits, '-' and '_'",
            crate::text::clip(name)
        ));
    }
    Ok(())
}

/// A KV key pattern: dot-separated tokens of the key alphabet
/// (letters, digits, `-/_=`) or a final `>`, and placeholders. No `*`:
/// nats-server lets a client publish a subject holding a literal `>`, which
/// an allowed `*` matches, and a direct get or purge reads it as a wildcard.
pub(crate) fn check_key_pattern(pattern: &str) -> Result<(), String> {
    let mut literal_part = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find("{{") {
        literal_part.push_str(&rest[..open]);
        literal_part.push('v');
        rest = match rest[open..].find("}}") {
            Some(close) => &rest[open + close + 2..],
            None => "",
        };
    }
    literal_part.push_str(rest);
    let bad = literal_part.split('.').any(|token| {
        token.is_empty()
            || (token != ">"
                && !token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '/' | '_' | '=')))
    });
    if bad {
        return Err(format!(
            "key pattern {:?} must be dot-separated keys of letters, digits and -/_=, or a final '>' ('*' is refused: a client may publish a literal '>' where the permission has '*', widening a read to every key below)",
            crate::text::clip(pattern)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subjects(c: &[Compiled]) -> Vec<&str> {
        c.iter().map(|c| c.subject.as_str()).collect()
    }

    fn home() -> JsHome {
        JsHome {
            domain: "_".into(),
            account_hash: account_hash("DATA"),
        }
    }

    #[test]
    fn consume_is_one_consumer_and_nothing_of_its_stream() {
        let g = JetStreamGrant {
            consume: vec![Consumer {
                stream: "ORDERS".into(),
                consumer: "worker".into(),
            }],
            ..Default::default()
        };
        let c = g.compile(&home());
        assert!(
            subjects(&c).iter().all(|s| s.contains("ORDERS.worker")),
            "{c:?}"
        );
        assert!(!subjects(&c).iter().any(|s| s.contains("STREAM")));
    }

    #[test]
    fn the_account_hash_is_nats_servers() {
        // Read off a v2 ack subject nats-server 2.15.1 wrote for a consumer
        // in the account DATA: $JS.ACK._.F0fDhRvh.ORDERS.worker.1.1.1.<ts>.2
        assert_eq!(account_hash("DATA"), "F0fDhRvh");
    }

    /// The subscriptions nats-server makes for a consumer (acks and flow
    /// control in both layouts, pull requests) as consumer.go writes them.
    fn consumer_subscriptions(home: &JsHome, stream: &str, consumer: &str) -> Vec<String> {
        let (d, h) = (&home.domain, &home.account_hash);
        vec![
            format!("$JS.ACK.{stream}.{consumer}.*.*.*.*.*"),
            format!("$JS.ACK.{d}.{h}.{stream}.{consumer}.*.*.*.*.>"),
            format!("$JS.FC.{stream}.{consumer}.*"),
            format!("$JS.FC.{d}.{h}.{stream}.{consumer}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.RESET.{stream}.{consumer}"),
        ]
    }

    /// Class: a compiled wildcard never reaches a server-side subscription
    /// of another target, whatever names the other streams and consumers
    /// have (names chosen to line up with the grant's tokens).
    #[test]
    fn no_compiled_subject_reaches_another_consumers_subscriptions() {
        use crate::policy::subject::overlaps;
        let home = home();
        let others = [
            ("PAYROLL", "payroll-worker"),
            ("ORDERS", "other"),
            ("worker", "ORDERS"),
            ("_", "ORDERS"),
            (home.account_hash.as_str(), "ORDERS"),
            ("x", "y"),
        ];
        let grant = JetStreamGrant {
            consume: vec![Consumer {
                stream: "ORDERS".into(),
                consumer: "worker".into(),
            }],
            ..Default::default()
        };
        for compiled in grant.compile(&home) {
            for (stream, consumer) in others {
                for sub in consumer_subscriptions(&home, stream, consumer) {
                    assert!(
                        !overlaps(&compiled.subject, &sub),
                        "{} reaches {sub} of {stream}/{consumer}",
                        compiled.subject
                    );
                }
            }
            assert!(
                consumer_subscriptions(&home, "ORDERS", "worker")
                    .iter()
                    .any(|sub| overlaps(&compiled.subject, sub))
                    || compiled.subject.contains(".INFO."),
                "{} reaches none of its own consumer's subscriptions",
                compiled.subject
            );
        }
        // The 9-token subject of the finding: a v1 ack of PAYROLL's consumer
        // that the old v2 pattern ($JS.ACK.*.*.ORDERS.worker.>) admitted.
        let finding = "$JS.ACK.PAYROLL.payroll-worker.ORDERS.worker.1.1.1";
        assert!(grant
            .compile(&home)
            .iter()
            .all(|c| !overlaps(&c.subject, finding)));
        // A replay or a whole-bucket read reaches the consumers of its own
        // stream only.
        let replay = JetStreamGrant {
            replay: vec!["ORDERS".into()],
            ..Default::default()
        };
        for compiled in replay.compile(&home) {
            for (stream, consumer) in others.iter().filter(|(s, _)| *s != "ORDERS") {
                for sub in consumer_subscriptions(&home, stream, consumer) {
                    assert!(
                        !overlaps(&compiled.subject, &sub),
                        "{} reaches {sub}",
                        compiled.subject
                    );
                }
            }
        }
    }

    #[test]
    fn read_touches_no_consumer_and_replay_no_durable_delete() {
        let read = JetStreamGrant {
            read: vec!["ORDERS".into()],
            ..Default::default()
        }
        .compile(&home());
        assert!(!subjects(&read).iter().any(|s| s.contains("CONSUMER")));
        let replay = JetStreamGrant {
            replay: vec!["ORDERS".into()],
            ..Default::default()
        }
        .compile(&home());
        assert!(!subjects(&replay)
            .iter()
            .any(|s| s.contains("DELETE") || s.contains("PURGE")));
    }

    #[test]
    fn a_key_pattern_read_is_gets_of_those_keys_only() {
        let g = KvGrant {
            read: vec![KvScope {
                bucket: "profiles".into(),
                keys: Some("{{sub}}.>".into()),
            }],
            write: vec![],
        };
        let c: Vec<String> = g.compile(&home()).into_iter().map(|c| c.subject).collect();
        assert_eq!(
            c,
            [
                "$JS.API.STREAM.INFO.KV_profiles",
                "$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.{{sub}}.>"
            ]
        );
    }

    /// The book's grant table is what the grants compile to, row by row:
    /// an operator auditing it audits the code.
    #[test]
    fn the_book_grant_table_lists_exactly_the_compiled_subjects() {
        let readme = include_str!("../../docs/src/guides/jetstream.md");
        let mut documented = Vec::new();
        let mut grant = String::new();
        for row in readme
            .lines()
            .skip_while(|l| !l.starts_with("| grant | publish subject |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
        {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            if !cells[1].is_empty() {
                grant = cells[1].trim_matches('`').to_string();
            }
            documented.push((
                grant.clone(),
                cells[2].trim_matches('`').to_string(),
                cells[3].to_string(),
            ));
        }
        let stream = "{stream}".to_string();
        let home = JsHome {
            domain: "{domain}".into(),
            account_hash: "{hash}".into(),
        };
        let js = |label: &str, g: JetStreamGrant| {
            g.compile(&home)
                .into_iter()
                .map(|c| (label.to_string(), c.subject, c.what.to_string()))
                .collect::<Vec<_>>()
        };
        let kv = |label: &str, g: KvGrant| {
            g.compile(&home)
                .into_iter()
                .map(|c| (label.to_string(), c.subject, c.what.to_string()))
                .collect::<Vec<_>>()
        };
        let scope = |keys: Option<&str>| KvScope {
            bucket: "{bucket}".into(),
            keys: keys.map(str::to_string),
        };
        let mut compiled = Vec::new();
        compiled.extend(js(
            r#"jetstream.consume = ["{stream}/{consumer}"]"#,
            JetStreamGrant {
                consume: vec![Consumer {
                    stream: stream.clone(),
                    consumer: "{consumer}".into(),
                }],
                ..Default::default()
            },
        ));
        for (label, g) in [
            (
                r#"jetstream.read = ["{stream}"]"#,
                JetStreamGrant {
                    read: vec![stream.clone()],
                    ..Default::default()
                },
            ),
            (
                r#"jetstream.replay = ["{stream}"]"#,
                JetStreamGrant {
                    replay: vec![stream.clone()],
                    ..Default::default()
                },
            ),
            (
                r#"jetstream.manage = ["{stream}"]"#,
                JetStreamGrant {
                    manage: vec![stream.clone()],
                    ..Default::default()
                },
            ),
        ] {
            compiled.extend(js(label, g));
        }
        for (label, read, keys) in [
            (r#"kv.read = ["{bucket}"]"#, true, None),
            (r#"kv.read = ["{bucket}/{keys}"]"#, true, Some("{keys}")),
            (r#"kv.write = ["{bucket}"]"#, false, None),
            (r#"kv.write = ["{bucket}/{keys}"]"#, false, Some("{keys}")),
        ] {
            let g = if read {
                KvGrant {
                    read: vec![scope(keys)],
                    write: vec![],
                }
            } else {
                KvGrant {
                    read: vec![],
                    write: vec![scope(keys)],
                }
            };
            compiled.extend(kv(label, g));
        }
        assert_eq!(
            documented, compiled,
            "docs/src/guides/jetstream.md grant table vs the compiled grants"
        );
    }

    #[test]
    fn names_and_key_patterns_are_checked() {
        for ok in ["ORDERS", "orders-2", "a_b"] {
            assert!(check_stream_name("stream", ok).is_ok(), "{ok}");
        }
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "123", "{{sub}}", "a{b"] {
            assert!(check_stream_name("stream", bad).is_err(), "{bad:?}");
        }
        assert!(check_bucket("config_1").is_ok());
        assert!(check_bucket("con.fig").is_err());
        for ok in ["a", "a.b", "{{sub}}.>", "users/{{name}}", "x=1"] {
            assert!(check_key_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", "a b", "a.@", ".a", "a.*.c", "users.*"] {
            assert!(check_key_pattern(bad).is_err(), "{bad:?}");
        }
    }
}
