//! JetStream and KV grants, compiled to the exact subjects they need.
//!
//! Every JetStream operation is a request a client publishes (API calls,
//! acks, flow-control replies, KV puts); the answers and deliveries come on
//! the client's own inbox, which a role grants with `sub.allow` (usually
//! `_INBOX.>`). A grant therefore compiles to publish subjects only, and to
//! no more than the operations its name says. The README's grant table lists
//! the same subjects, each with where it comes from.

use crate::policy::template::Entry;

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

    /// The publish subjects of this grant.
    pub fn compile(&self) -> Vec<Compiled> {
        let mut out = Vec::new();
        for Consumer { stream, consumer } in &self.consume {
            out.extend(consume(stream, consumer));
        }
        for stream in &self.read {
            out.extend(read(stream));
        }
        for stream in &self.replay {
            out.extend(replay(stream));
        }
        for stream in &self.manage {
            out.extend(manage(stream));
        }
        out
    }
}

/// Pull from (and ack) one durable consumer; its info.
fn consume(stream: &str, consumer: &str) -> Vec<Compiled> {
    vec![
        s(
            format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
            "consumer info",
        ),
        s(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            "pull fetch",
        ),
        s(
            format!("$JS.ACK.{stream}.{consumer}.>"),
            "ack, nak, term, in progress",
        ),
        s(
            format!("$JS.ACK.*.*.{stream}.{consumer}.>"),
            "ack, nak, term, in progress (v2 ack subjects)",
        ),
        s(
            format!("$JS.FC.{stream}.{consumer}.*"),
            "flow control replies (push delivery)",
        ),
        s(
            format!("$JS.FC.*.*.{stream}.{consumer}.*"),
            "flow control replies (v2 subjects)",
        ),
    ]
}

/// Stream info and message get (by sequence or last by subject).
fn read(stream: &str) -> Vec<Compiled> {
    vec![
        s(format!("$JS.API.STREAM.INFO.{stream}"), "stream info"),
        s(format!("$JS.API.STREAM.MSG.GET.{stream}"), "get message"),
        s(format!("$JS.API.DIRECT.GET.{stream}"), "direct get"),
        s(
            format!("$JS.API.DIRECT.GET.{stream}.>"),
            "direct get, last by subject",
        ),
    ]
}

/// Consumers the client creates itself (ephemeral, ordered), on one stream.
fn replay(stream: &str) -> Vec<Compiled> {
    let mut out = vec![
        s(format!("$JS.API.STREAM.INFO.{stream}"), "stream info"),
        s(
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            "create a consumer",
        ),
        s(
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            "create a named or filtered consumer",
        ),
        s(format!("$JS.API.CONSUMER.INFO.{stream}.*"), "consumer info"),
        s(
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            "pull from its consumer",
        ),
    ];
    out.extend(flow_control(stream));
    out
}

fn flow_control(stream: &str) -> Vec<Compiled> {
    vec![
        s(
            format!("$JS.FC.{stream}.*.*"),
            "flow control replies (push delivery)",
        ),
        s(
            format!("$JS.FC.*.*.{stream}.*.*"),
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
    .map(|(op, what)| s(format!("$JS.API.{op}.{stream}"), what))
    .chain([
        s(
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            "create a named or filtered consumer",
        ),
        s(
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*"),
            "create a durable consumer (older clients)",
        ),
        s(
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
            "delete a consumer",
        ),
        s(format!("$JS.API.CONSUMER.INFO.{stream}.*"), "consumer info"),
        s(
            format!("$JS.API.CONSUMER.PAUSE.{stream}.*"),
            "pause a consumer",
        ),
        s(
            format!("$JS.API.CONSUMER.RESET.{stream}.*"),
            "reset a consumer (nats-server 2.14+)",
        ),
        s(
            format!("$JS.API.CONSUMER.UNPIN.{stream}.*"),
            "unpin a priority group's client",
        ),
    ])
    .collect()
}

impl KvGrant {
    pub fn is_empty(&self) -> bool {
        self.read.is_empty() && self.write.is_empty()
    }

    /// The publish entries of this grant; key patterns may hold
    /// placeholders, filled per connection like any subject.
    pub fn compile(&self) -> Result<Vec<(Entry, &'static str)>, String> {
        let mut out = Vec::new();
        for scope in &self.read {
            out.extend(kv_read(scope)?);
        }
        for scope in &self.write {
            out.extend(kv_write(scope)?);
        }
        Ok(out)
    }
}

fn literal(subject: String, what: &'static str) -> Result<(Entry, &'static str), String> {
    Entry::parse(&subject).map(|e| (e, what))
}

/// A bucket read grants what can be scoped to it (get by key) and what
/// cannot be scoped to some keys (watch, keys, history, which run through
/// consumers on the bucket's stream); a key-pattern read grants only gets
/// of those keys.
fn kv_read(scope: &KvScope) -> Result<Vec<(Entry, &'static str)>, String> {
    let b = &scope.bucket;
    let stream = format!("KV_{b}");
    let mut out = vec![literal(
        format!("$JS.API.STREAM.INFO.{stream}"),
        "open the bucket (status)",
    )?];
    match &scope.keys {
        Some(keys) => {
            out.push(literal(
                format!("$JS.API.DIRECT.GET.{stream}.$KV.{b}.{keys}"),
                "get these keys",
            )?);
        }
        None => {
            out.push(literal(
                format!("$JS.API.DIRECT.GET.{stream}.$KV.{b}.>"),
                "get any key",
            )?);
            out.push(literal(
                format!("$JS.API.STREAM.MSG.GET.{stream}"),
                "get (buckets without direct get)",
            )?);
            for c in [
                s(
                    format!("$JS.API.CONSUMER.CREATE.{stream}"),
                    "watch, keys, history",
                ),
                s(
                    format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
                    "watch, keys, history",
                ),
                s(
                    format!("$JS.API.CONSUMER.INFO.{stream}.*"),
                    "watch, keys, history (consumer info)",
                ),
                s(
                    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
                    "watch, keys, history (pull)",
                ),
            ]
            .into_iter()
            .chain(flow_control(&stream))
            {
                out.push(literal(c.subject, c.what)?);
            }
        }
    }
    Ok(out)
}

/// Put, create, update, delete and purge of the keys (all are publishes on
/// the key's subject, with headers), and opening the bucket.
fn kv_write(scope: &KvScope) -> Result<Vec<(Entry, &'static str)>, String> {
    let b = &scope.bucket;
    let keys = scope.keys.as_deref().unwrap_or(">");
    Ok(vec![
        literal(
            format!("$JS.API.STREAM.INFO.KV_{b}"),
            "open the bucket (status)",
        )?,
        literal(
            format!("$KV.{b}.{keys}"),
            "put, create, update, delete, purge",
        )?,
    ])
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
    // Version 2 ack subjects ($JS.ACK.<domain>.<account hash>.<stream>...)
    // write "_" for "no domain": a stream named "_" would make
    // $JS.ACK._.<consumer>.> reach other streams' acks.
    if name == "_" {
        return Err(format!(
            "{what} \"_\" is what v2 ack subjects write for \"no domain\", so its grants would reach other streams' acks"
        ));
    }
    if name.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "{what} {name:?} is all digits, which ack subjects could confuse with sequence numbers"
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
pub fn check_key_pattern(pattern: &str) -> Result<(), String> {
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

    #[test]
    fn consume_is_one_consumer_and_nothing_of_its_stream() {
        let g = JetStreamGrant {
            consume: vec![Consumer {
                stream: "ORDERS".into(),
                consumer: "worker".into(),
            }],
            ..Default::default()
        };
        let c = g.compile();
        assert!(
            subjects(&c).iter().all(|s| s.contains("ORDERS.worker")),
            "{c:?}"
        );
        assert!(!subjects(&c).iter().any(|s| s.contains("STREAM")));
    }

    #[test]
    fn read_touches_no_consumer_and_replay_no_durable_delete() {
        let read = JetStreamGrant {
            read: vec!["ORDERS".into()],
            ..Default::default()
        }
        .compile();
        assert!(!subjects(&read).iter().any(|s| s.contains("CONSUMER")));
        let replay = JetStreamGrant {
            replay: vec!["ORDERS".into()],
            ..Default::default()
        }
        .compile();
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
        let c: Vec<String> = g
            .compile()
            .unwrap()
            .into_iter()
            .map(|(e, _)| e.as_str().to_string())
            .collect();
        assert_eq!(
            c,
            [
                "$JS.API.STREAM.INFO.KV_profiles",
                "$JS.API.DIRECT.GET.KV_profiles.$KV.profiles.{{sub}}.>"
            ]
        );
    }

    /// The README's grant table is what the grants compile to, row by row:
    /// an operator auditing it audits the code.
    #[test]
    fn the_readme_grant_table_lists_exactly_the_compiled_subjects() {
        let readme = include_str!("../../README.md");
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
        let js = |label: &str, g: JetStreamGrant| {
            g.compile()
                .into_iter()
                .map(|c| (label.to_string(), c.subject, c.what.to_string()))
                .collect::<Vec<_>>()
        };
        let kv = |label: &str, g: KvGrant| {
            g.compile()
                .unwrap()
                .into_iter()
                .map(|(e, what)| (label.to_string(), e.as_str().to_string(), what.to_string()))
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
            "README grant table vs the compiled grants"
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
