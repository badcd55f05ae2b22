//! Where the streams and buckets of the JetStream/KV grants live, and the
//! imports and exports that let users of other accounts reach them.
//!
//! JetStream publishes its answers (API responses, direct-get messages,
//! pull deliveries) to whatever reply subject the request names, with its
//! own rights: subject permissions never apply to them. In the account
//! that holds the streams, a user could therefore have JetStream write into
//! any stream or bucket there. So the streams live in an account users are
//! never placed in, and the users' accounts import what the grants need:
//! nats-server answers an imported request on a reply of its own making in
//! the exporting account and maps it back, so a redirected answer can only
//! land in the user's own account.
//!
//! The users' account imports the whole JetStream API (`$JS.API.>`, as it
//! is: an import of exactly that subject takes the place of nats-server's
//! own "JetStream not enabled" answer, which any narrower import would race
//! with, and so that account must not have JetStream of its own); KV key
//! subjects, ack and flow-control subjects and the streams' own subjects
//! are imported as the grants compile them. No import renames a subject:
//! nats-server before 2.10.28 (and 2.11.0) crashes when an answer a user
//! redirects meets an import that rewrites wildcard tokens. This module
//! computes the imports from the role table; `accounts` prints them as
//! nats-server config or `nsc` commands, and the operator-mode test harness
//! signs them into account JWTs.

use std::collections::{BTreeMap, BTreeSet};

use crate::policy::roles::RoleTable;
use crate::policy::streams::{account_hash, JsHome, JS_API};
use crate::policy::subject::{join, overlaps, subsumes};

/// The whole JetStream API, as the users' accounts import it.
pub(crate) const API_IMPORT: &str = "$JS.API.>";

/// Where push consumers deliver: the clients' inboxes, private ones
/// (`{{inbox}}`) included.
pub(crate) const INBOXES: &str = "_INBOX.>";

/// `[jetstream]`: the account holding the streams and buckets every grant
/// names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JetStreamAccount {
    /// Its name in this config (and in nats-server's, in server mode).
    pub name: String,
    /// What nats-server calls it: the name in server mode, the public key
    /// in operator mode (v2 ack subjects carry a hash of it).
    pub id: String,
    /// Operator mode: the account's public key.
    pub public_key: Option<String>,
    /// nats-server's `jetstream.domain`, if it has one.
    pub domain: Option<String>,
    /// Users may be placed in this account itself (JetStream's answers can
    /// then be redirected into any of its streams and buckets).
    pub same_account: bool,
    /// Subjects its streams store that users publish to: imported as
    /// services into every users' account.
    pub stream_subjects: Vec<String>,
}

impl JetStreamAccount {
    /// What the v2 ack and flow-control subjects of its consumers carry.
    pub fn home(&self) -> JsHome {
        JsHome {
            domain: self.domain.clone().unwrap_or_else(|| "_".to_string()),
            account_hash: account_hash(&self.id),
        }
    }
}

/// How nats-server sends an import's answers back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Response {
    /// One answer, then the reply mapping is gone.
    Singleton,
    /// Any number of answers until the response threshold (2 minutes by
    /// default): pull deliveries, batched direct gets, `+NXT` acks.
    Stream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Requests the users publish, answered by JetStream.
    Service(Response),
    /// Messages the JetStream account publishes on the users' inboxes
    /// (push deliveries).
    Stream,
}

/// One import of a users' account: `subject` of the JetStream account,
/// under the same subject in the users' account (no import renames one).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    pub kind: Kind,
    pub subject: String,
}

/// One export of the JetStream account, to the accounts listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Export {
    pub kind: Kind,
    pub subject: String,
    pub accounts: Vec<String>,
}

/// The imports each users' account needs, by account name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The JetStream account's name.
    pub account: String,
    pub imports: BTreeMap<String, Vec<Import>>,
}

impl Layout {
    /// The imports the role table's grants need. `default_account` is
    /// where roles that name none place their users; `users_accounts` every
    /// account users land in (they all import `stream_subjects`).
    pub fn of(
        roles: &RoleTable,
        default_account: &str,
        users_accounts: &BTreeSet<String>,
        js: &JetStreamAccount,
    ) -> Layout {
        let mut wanted: BTreeMap<String, Vec<Import>> = BTreeMap::new();
        for account in users_accounts.iter().filter(|a| **a != js.name) {
            let list = wanted.entry(account.clone()).or_default();
            for subject in &js.stream_subjects {
                list.push(Import {
                    kind: Kind::Service(Response::Singleton),
                    subject: subject.clone(),
                });
            }
        }
        for (_, role) in roles.iter() {
            let account = role.account.as_deref().unwrap_or(default_account);
            if account == js.name || role.grants.is_empty() {
                continue;
            }
            let list = wanted.entry(account.to_string()).or_default();
            list.push(Import {
                kind: Kind::Service(Response::Stream),
                subject: API_IMPORT.to_string(),
            });
            for (entry, _) in role.grants.entries() {
                let subject = wildcard_placeholders(entry.as_str());
                if subject.starts_with(&format!("{JS_API}.")) {
                    continue;
                }
                list.push(Import {
                    kind: Kind::Service(response_for(&subject)),
                    subject,
                });
            }
            if role.grants.pushes() {
                list.push(Import {
                    kind: Kind::Stream,
                    subject: INBOXES.to_string(),
                });
            }
        }
        let imports = wanted
            .into_iter()
            .map(|(account, list)| (account, reduce(list)))
            .filter(|(_, list)| !list.is_empty())
            .collect();
        Layout {
            account: js.name.clone(),
            imports,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.imports.is_empty()
    }

    /// What the JetStream account exports: each imported subject, to the
    /// accounts that import it.
    pub fn exports(&self) -> Vec<Export> {
        let mut by: BTreeMap<(Kind, String), Vec<String>> = BTreeMap::new();
        for (account, imports) in &self.imports {
            for i in imports {
                let accounts = by.entry((i.kind, i.subject.clone())).or_default();
                if !accounts.contains(account) {
                    accounts.push(account.clone());
                }
            }
        }
        let mut out: Vec<Export> = by
            .into_iter()
            .map(|((kind, subject), accounts)| Export {
                kind,
                subject,
                accounts,
            })
            .collect();
        out.sort_by(|a, b| (a.kind, &a.subject).cmp(&(b.kind, &b.subject)));
        out
    }

    /// The JetStream account's `exports: [...]` for nats-server's config.
    pub fn exports_conf(&self) -> String {
        let mut out = String::from("exports: [\n");
        for e in self.exports() {
            let accounts = e
                .accounts
                .iter()
                .map(|a| conf_name(a))
                .collect::<Vec<_>>()
                .join(", ");
            let (kind, extra) = match e.kind {
                Kind::Service(Response::Singleton) => ("service", ""),
                Kind::Service(Response::Stream) => ("service", ", response_type: stream"),
                Kind::Stream => ("stream", ""),
            };
            out.push_str(&format!(
                "  {{ {kind}: {}, accounts: [{accounts}]{extra} }}\n",
                quote(&e.subject)
            ));
        }
        out.push(']');
        out
    }

    /// A users' account's `imports: [...]` for nats-server's config (empty
    /// when it imports nothing).
    pub fn imports_conf(&self, account: &str) -> String {
        let Some(imports) = self.imports.get(account) else {
            return String::new();
        };
        let mut out = String::from("imports: [\n");
        for i in imports {
            let kind = match i.kind {
                Kind::Stream => "stream",
                Kind::Service(_) => "service",
            };
            out.push_str(&format!(
                "  {{ {kind}: {{ account: {}, subject: {} }} }}\n",
                conf_name(&self.account),
                quote(&i.subject)
            ));
        }
        out.push(']');
        out
    }

    /// The `accounts { ... }` entries for nats-server's config.
    pub fn server_conf(&self) -> String {
        let indent = |text: String, by: &str| {
            text.lines()
                .map(|l| format!("{by}{l}\n"))
                .collect::<String>()
        };
        let mut out = format!("  {} {{\n", conf_name(&self.account));
        out.push_str("    jetstream: enabled\n");
        out.push_str("    # users: [ ... ]   # administrators only: never users of the callout\n");
        out.push_str(&indent(self.exports_conf(), "    "));
        out.push_str("  }\n");
        for account in self.imports.keys() {
            out.push_str(&format!("  {} {{\n", conf_name(account)));
            out.push_str("    # its own JetStream would answer $JS.API beside the import\n");
            out.push_str("    jetstream: disabled\n");
            out.push_str(&indent(self.imports_conf(account), "    "));
            out.push_str("  }\n");
        }
        out
    }

    /// The same as `nsc` commands: private exports, an activation token
    /// per importing account, and the imports.
    pub fn nsc_commands(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "nsc edit account --name {} --js-enable 0   # JetStream on (or --js-mem-storage/--js-disk-storage with limits)\n",
            shell_word(&self.account)
        ));
        for e in self.exports() {
            let kind = match e.kind {
                Kind::Service(Response::Singleton) => "--service".to_string(),
                Kind::Service(Response::Stream) => "--service --response-type Stream".to_string(),
                Kind::Stream => String::new(),
            };
            out.push_str(
                &format!(
                    "nsc add export --account {} --private {kind} --subject {}\n",
                    shell_word(&self.account),
                    shell_word(&e.subject)
                )
                .replace("  ", " "),
            );
        }
        for account in self.imports.keys() {
            out.push_str(&format!(
                "# {}: no JetStream of its own (nsc edit account --name {} --js-disable, if it has some)\n",
                account,
                shell_word(account)
            ));
        }
        let mut n = 0;
        for (account, imports) in &self.imports {
            for i in imports {
                n += 1;
                let file = format!("activation-{n}.jwt");
                out.push_str(&format!(
                    "nsc generate activation --account {} --subject {} --target-account {} --output-file {file}\n",
                    shell_word(&self.account),
                    shell_word(&i.subject),
                    shell_word(account)
                ));
                out.push_str(&format!(
                    "nsc add import --account {} --token {file}\n",
                    shell_word(account)
                ));
            }
        }
        out
    }
}

/// Placeholder tokens (`{{sub}}`) match any one token.
fn wildcard_placeholders(subject: &str) -> String {
    subject
        .split('.')
        .map(|t| if t.contains("{{") { "*" } else { t })
        .collect::<Vec<_>>()
        .join(".")
}

/// Requests that are answered more than once: pulls, batched direct gets
/// and acks (`+NXT` asks for more messages).
fn response_for(subject: &str) -> Response {
    if subject == API_IMPORT
        || subject.contains(".MSG.NEXT.")
        || subject.contains(".DIRECT.GET.")
        || subject.starts_with("$JS.ACK.")
    {
        Response::Stream
    } else {
        Response::Singleton
    }
}

/// No two imports of one account may overlap: nats-server would route a
/// message matching both twice (a put stored twice, a pull asked twice).
/// Subsumed imports go; two that overlap otherwise are replaced by their
/// join (an import only routes: what a user may publish stays what its
/// permissions say).
fn reduce(mut list: Vec<Import>) -> Vec<Import> {
    list.sort();
    list.dedup();
    loop {
        let mut merged = None;
        'scan: for i in 0..list.len() {
            for j in 0..list.len() {
                if i == j || !overlaps(&list[i].subject, &list[j].subject) {
                    continue;
                }
                let (a, b) = (&list[i], &list[j]);
                let kind = match (a.kind, b.kind) {
                    (Kind::Stream, Kind::Stream) => Kind::Stream,
                    (Kind::Service(x), Kind::Service(y)) => Kind::Service(x.max(y)),
                    // An inbox stream import and a service import never
                    // share subjects (config validation keeps them apart).
                    _ => continue,
                };
                let subject = if subsumes(&a.subject, &b.subject) {
                    a.subject.clone()
                } else {
                    join(&a.subject, &b.subject)
                };
                merged = Some((i, j, Import { kind, subject }));
                break 'scan;
            }
        }
        let Some((i, j, import)) = merged else {
            return list;
        };
        let (hi, lo) = (i.max(j), i.min(j));
        list.remove(hi);
        list.remove(lo);
        list.push(import);
        list.sort();
        list.dedup();
    }
}

/// A subject in nats-server's config syntax.
fn quote(subject: &str) -> String {
    format!("\"{subject}\"")
}

/// An account name in nats-server's config: bare when it is a plain word.
fn conf_name(name: &str) -> String {
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        name.to_string()
    } else {
        quote(name)
    }
}

/// A word for a POSIX shell, single-quoted unless plain.
fn shell_word(word: &str) -> String {
    if word
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn import(subject: &str) -> Import {
        Import {
            kind: Kind::Service(response_for(subject)),
            subject: subject.to_string(),
        }
    }

    #[test]
    fn pulls_acks_and_direct_gets_are_answered_more_than_once() {
        for many in [
            API_IMPORT,
            "$JS.API.CONSUMER.MSG.NEXT.S.C",
            "$JS.ACK.S.C.*.*.*.*.*",
        ] {
            assert_eq!(response_for(many), Response::Stream, "{many}");
        }
        assert_eq!(response_for("$KV.b.>"), Response::Singleton);
    }

    #[test]
    fn imports_of_one_account_never_overlap() {
        let list = reduce(vec![
            import("$KV.b.*.>"),
            import("$KV.b.>"),
            import("$KV.c.x.>"),
            import("$KV.c.*.y"),
            import(API_IMPORT),
            import(API_IMPORT),
            import("$JS.ACK.S.C.*.*.*.*.*"),
            import("$JS.ACK._.h.S.C.*.*.*.*.*"),
        ]);
        for (i, a) in list.iter().enumerate() {
            for b in &list[i + 1..] {
                assert!(!overlaps(&a.subject, &b.subject), "{a:?} {b:?}");
            }
        }
        let subjects: Vec<&str> = list.iter().map(|i| i.subject.as_str()).collect();
        assert!(subjects.contains(&"$KV.b.>"), "{subjects:?}");
        assert!(subjects.contains(&"$KV.c.*.>"), "{subjects:?}");
        assert!(subjects.contains(&API_IMPORT), "{subjects:?}");
        // The two ack layouts stay apart, each exact.
        assert!(subjects.contains(&"$JS.ACK.S.C.*.*.*.*.*"), "{subjects:?}");
        assert!(
            subjects.contains(&"$JS.ACK._.h.S.C.*.*.*.*.*"),
            "{subjects:?}"
        );
    }
}
