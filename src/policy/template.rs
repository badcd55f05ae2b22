//! Permission subjects with placeholders filled from the verified token:
//! `users.{{sub}}.>`, `chat.{{name}}.*`, `tenants.{{claim:org.id}}.>`.
//!
//! A value comes from the identity provider, and a user may be able to choose
//! it (a display name, an email). A value that would change the subject's
//! shape (a dot adds tokens, `*` and `>` are wildcards, whitespace ends a
//! protocol field) would widen the grant, so such a value refuses the
//! connection instead; an empty value would leave an empty token.

use serde_json::{Map, Value};

use crate::policy::claims::ClaimPath;
use crate::policy::inbox;
use crate::policy::subject::check_permission_subject;

/// Values longer than this are refused: a subject token that long is not an
/// identifier, and it keeps the user JWT small.
const MAX_VALUE_CHARS: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Sub,
    Name,
    /// The name of the issuer (or `config`) that vouched for the user.
    Issuer,
    Claim(String, ClaimPath),
    /// One of the scopes granted to this connection: the entry becomes one
    /// subject per granted scope, and none when no scope was granted.
    Scope,
    /// The user's private inbox prefix (`_INBOX.<hash>`, two tokens), only
    /// ever at the start of a subject.
    Inbox,
}

#[derive(Clone, Copy)]
enum ScopeFill<'a> {
    Granted(&'a str),
    Any,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubjectTemplate {
    pieces: Vec<Piece>,
}

/// First tokens of subjects nats-server routes by, which every user of an
/// account shares: replies (`_INBOX`, and `_R_` and `_GR_`, where
/// nats-server routes the answers of service imports and gateways), and
/// `$`-subjects (JetStream `$JS`, KV `$KV`, object store `$O`, services
/// `$SRV`, system `$SYS`). A value from a token never names one: as a
/// subject's first token it would hand out everyone's. The whole of `_`
/// and `$` is refused, so that a namespace nats-server adds later is
/// refused too.
fn is_shared_namespace(first_token: &str) -> bool {
    first_token.starts_with('$') || first_token.starts_with('_')
}

/// What the placeholders are filled from.
pub struct Values<'a> {
    /// The NATS user name (from `oidc.user_claim`).
    pub name: &'a str,
    /// The `[oidc]` issuer's name, or `config` for `[users.*]`.
    pub issuer: &'a str,
    pub claims: &'a Map<String, Value>,
    /// The scopes granted to this connection (asked for and entitled to).
    pub scopes: &'a [String],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{placeholder} {problem}")]
pub struct TemplateError {
    pub placeholder: String,
    pub problem: String,
}

/// A permission subject as the config writes it, parsed once when the
/// config loads: a literal subject, or one with placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Literal(String),
    Template {
        text: String,
        template: SubjectTemplate,
    },
}

impl Entry {
    /// Checks the subject's syntax (and its placeholders').
    pub fn parse(subject: &str) -> Result<Entry, String> {
        if subject.contains("{{") {
            Ok(Entry::Template {
                text: subject.to_string(),
                template: SubjectTemplate::parse(subject)?,
            })
        } else {
            check_permission_subject(subject)?;
            Ok(Entry::Literal(subject.to_string()))
        }
    }

    /// The entry as written in the config.
    pub fn as_str(&self) -> &str {
        match self {
            Entry::Literal(s) | Entry::Template { text: s, .. } => s,
        }
    }

    pub fn template(&self) -> Option<&SubjectTemplate> {
        match self {
            Entry::Literal(_) => None,
            Entry::Template { template, .. } => Some(template),
        }
    }

    /// The subjects an allow entry grants this connection.
    pub fn render_allow(&self, values: &Values<'_>) -> Result<Vec<String>, TemplateError> {
        match self {
            Entry::Literal(s) => Ok(vec![s.clone()]),
            Entry::Template { template, .. } => template.render_all(values),
        }
    }

    /// The subject a deny entry denies.
    pub fn render_deny(&self, values: &Values<'_>) -> Result<String, TemplateError> {
        match self {
            Entry::Literal(s) => Ok(s.clone()),
            Entry::Template { template, .. } => template.render_deny(values),
        }
    }
}

impl SubjectTemplate {
    /// Parses a subject that may hold placeholders and checks that it is a
    /// valid permission subject whatever (valid) values fill it.
    pub fn parse(subject: &str) -> Result<SubjectTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = subject;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                pieces.push(Piece::Literal(rest[..open].to_string()));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("subject {subject:?}: \"{{{{\" without \"}}}}\""))?;
            let inner = after[..close].trim();
            pieces.push(match inner {
                "sub" => Piece::Sub,
                "name" => Piece::Name,
                "scope" => Piece::Scope,
                "issuer" => Piece::Issuer,
                "inbox" => Piece::Inbox,
                _ => match inner.strip_prefix("claim:") {
                    Some(path) => Piece::Claim(
                        inner.to_string(),
                        ClaimPath::parse(path.trim())
                            .map_err(|e| format!("subject {subject:?}: {e}"))?,
                    ),
                    None => {
                        return Err(format!(
                            "subject {subject:?}: unknown placeholder {{{{{inner}}}}} (known: {{{{sub}}}}, {{{{name}}}}, {{{{issuer}}}}, {{{{scope}}}}, {{{{inbox}}}}, {{{{claim:<path>}}}})"
                        ))
                    }
                },
            });
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Literal(rest.to_string()));
        }
        if pieces
            .iter()
            .any(|p| matches!(p, Piece::Literal(l) if l.contains("}}")))
        {
            return Err(format!("subject {subject:?}: \"}}}}\" without \"{{{{\""));
        }
        // {{inbox}} is two tokens of its own: the subject's first, followed
        // by a dot or nothing.
        for (i, piece) in pieces.iter().enumerate() {
            if *piece != Piece::Inbox {
                continue;
            }
            let followed_well = match pieces.get(i + 1) {
                None => true,
                Some(Piece::Literal(l)) => l.starts_with('.'),
                Some(_) => false,
            };
            if i != 0 || !followed_well {
                return Err(format!(
                    "subject {subject:?}: {{{{inbox}}}} is the user's private inbox prefix and must begin the subject, followed by a dot (\"{{{{inbox}}}}.>\")"
                ));
            }
        }
        let template = SubjectTemplate { pieces };
        check_permission_subject(&template.sample("v"))?;
        // A deny entry is filled with `*` for `{{scope}}` (see
        // `render_deny`), which is a wildcard only as a whole token.
        const MARK: char = '\u{1}';
        if template
            .sample(&MARK.to_string())
            .split('.')
            .any(|token| token.contains(MARK) && token.len() != MARK.len_utf8())
        {
            return Err(format!(
                "subject {subject:?}: {{{{scope}}}} must be a whole subject token (between dots)"
            ));
        }
        Ok(template)
    }

    /// The subject with every placeholder filled with `v`, and `{{scope}}`
    /// with `scope`: to check the template's shape.
    fn sample(&self, scope: &str) -> String {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) => l.as_str(),
                Piece::Scope => scope,
                Piece::Inbox => "_INBOX.v",
                _ => "v",
            })
            .collect()
    }

    /// Whether the subject is within the user's private inbox.
    pub fn is_private_inbox(&self) -> bool {
        self.pieces.first() == Some(&Piece::Inbox)
    }

    /// Whether a value from the token or the connection fills (part of)
    /// the subject's first token. The private inbox is the service's own
    /// value, not one a user can choose.
    pub fn fills_first_token(&self) -> bool {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) if l.contains('.') => return false,
                Piece::Literal(_) => {}
                Piece::Inbox => return false,
                _ => return true,
            }
        }
        false
    }

    fn first_placeholder(&self) -> &str {
        self.pieces
            .iter()
            .find_map(|p| match p {
                Piece::Literal(_) => None,
                Piece::Sub => Some("{{sub}}"),
                Piece::Name => Some("{{name}}"),
                Piece::Issuer => Some("{{issuer}}"),
                Piece::Scope => Some("{{scope}}"),
                Piece::Inbox => Some("{{inbox}}"),
                Piece::Claim(label, _) => Some(label.as_str()),
            })
            .unwrap_or("{{...}}")
    }

    /// Whether a value comes from token claims (`{{sub}}`, `{{claim:...}}`),
    /// which identities from the config do not have.
    pub fn needs_claims(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Sub | Piece::Claim(..)))
    }

    /// Whether the subject is per user (`{{name}}`, `{{sub}}`) but not per
    /// issuer: two identity sources can name the same user.
    pub fn per_user_without_issuer(&self) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Sub | Piece::Name))
            && !self.pieces.contains(&Piece::Issuer)
    }

    /// The subjects an allow entry grants this connection: one, or with
    /// `{{scope}}` one per granted scope (none when none was granted).
    pub fn render_all(&self, values: &Values<'_>) -> Result<Vec<String>, TemplateError> {
        if !self.pieces.contains(&Piece::Scope) {
            return self.render_with(values, None).map(|s| vec![s]);
        }
        values
            .scopes
            .iter()
            .map(|scope| self.render_with(values, Some(ScopeFill::Granted(scope))))
            .collect()
    }

    /// The subject a deny entry denies: `{{scope}}` becomes `*`, so the deny
    /// holds for every scope. Were it expanded like an allow entry, a client
    /// could drop a deny by asking for fewer scopes while an unscoped allow
    /// of another entry or role still reached the subject.
    pub fn render_deny(&self, values: &Values<'_>) -> Result<String, TemplateError> {
        let fill = self
            .pieces
            .contains(&Piece::Scope)
            .then_some(ScopeFill::Any);
        self.render_with(values, fill)
    }

    fn render_with(
        &self,
        values: &Values<'_>,
        scope: Option<ScopeFill<'_>>,
    ) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            let (placeholder, value): (&str, Option<String>) = match piece {
                Piece::Literal(l) => {
                    out.push_str(l);
                    continue;
                }
                Piece::Sub => ("{{sub}}", values.claims.get("sub").and_then(scalar)),
                Piece::Name => ("{{name}}", Some(values.name.to_string())),
                Piece::Issuer => ("{{issuer}}", Some(values.issuer.to_string())),
                Piece::Scope => match scope {
                    Some(ScopeFill::Granted(v)) => ("{{scope}}", Some(v.to_string())),
                    // Not a value from anyone: the wildcard for every scope.
                    Some(ScopeFill::Any) => {
                        out.push('*');
                        continue;
                    }
                    None => ("{{scope}}", None),
                },
                Piece::Claim(label, path) => {
                    (label.as_str(), path.lookup(values.claims).and_then(scalar))
                }
                Piece::Inbox => {
                    out.push_str(&private_inbox(values)?);
                    continue;
                }
            };
            let fail = |problem: String| TemplateError {
                placeholder: placeholder.to_string(),
                problem,
            };
            let value =
                value.ok_or_else(|| fail("is missing or not a string or integer".into()))?;
            check_value(&value).map_err(fail)?;
            out.push_str(&value);
        }
        if self.fills_first_token() {
            let first = out.split('.').next().unwrap_or_default();
            if is_shared_namespace(first) {
                return Err(TemplateError {
                    placeholder: self.first_placeholder().to_string(),
                    problem: "would start the subject with $ or _, which nats-server routes by (replies, service imports, JetStream, KV, system) for every user of the account".into(),
                });
            }
        }
        Ok(out)
    }
}

/// The user's private inbox prefix: from the token's `iss` and `sub`, or
/// for a `[users.*]` identity from `config` and its name.
fn private_inbox(values: &Values<'_>) -> Result<String, TemplateError> {
    if values.issuer == inbox::CONFIG_ISSUER {
        return Ok(inbox::prefix(inbox::CONFIG_ISSUER, values.name));
    }
    let claim = |name: &str| values.claims.get(name).and_then(Value::as_str);
    match (claim("iss"), claim("sub")) {
        (Some(iss), Some(sub)) if !sub.is_empty() => Ok(inbox::prefix(iss, sub)),
        _ => Err(TemplateError {
            placeholder: "{{inbox}}".into(),
            problem: "needs the token's iss and a non-empty string sub".into(),
        }),
    }
}

/// Strings and integers fill a placeholder; anything else (objects, arrays,
/// booleans, fractions) does not name one thing.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.chars().count() > MAX_VALUE_CHARS {
        return Err(format!("is longer than {MAX_VALUE_CHARS} characters"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| matches!(c, '.' | '*' | '>') || c.is_whitespace() || c.is_control())
    {
        // The value is the user's, possibly hostile: name the character, not
        // the value.
        return Err(format!(
            "contains {c:?}, which would change the subject's shape"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(template: &str, claims: Value) -> Result<String, TemplateError> {
        render_as(template, "ana", claims)
    }

    fn render_as(template: &str, name: &str, claims: Value) -> Result<String, TemplateError> {
        let claims = claims.as_object().unwrap().clone();
        SubjectTemplate::parse(template).unwrap().render_with(
            &Values {
                name,
                issuer: "corp",
                claims: &claims,
                scopes: &[],
            },
            None,
        )
    }

    #[test]
    fn scope_is_a_whole_token_and_a_deny_covers_every_scope() {
        for ok in [
            "chat.{{scope}}",
            "{{scope}}.x",
            "a.{{scope}}.{{name}}",
            "{{scope}}",
        ] {
            assert!(SubjectTemplate::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["chat.x{{scope}}", "{{scope}}x.y", "a.{{name}}{{scope}}"] {
            let e = SubjectTemplate::parse(bad).unwrap_err();
            assert!(e.contains("whole subject token"), "{bad}: {e}");
        }
        let claims = Map::new();
        let values = Values {
            name: "ana",
            issuer: "corp",
            claims: &claims,
            scopes: &["r1".to_string()],
        };
        let t = SubjectTemplate::parse("chat.{{scope}}.admin").unwrap();
        assert_eq!(t.render_all(&values).unwrap(), vec!["chat.r1.admin"]);
        assert_eq!(t.render_deny(&values).unwrap(), "chat.*.admin");
        let t = SubjectTemplate::parse("users.{{issuer}}.{{name}}.>").unwrap();
        assert_eq!(t.render_all(&values).unwrap(), vec!["users.corp.ana.>"]);
    }

    #[test]
    fn placeholders_are_filled_from_the_token() {
        let claims = json!({"sub": "u-42", "org": {"id": "acme", "n": 7}});
        assert_eq!(
            render("users.{{sub}}.>", claims.clone()).unwrap(),
            "users.u-42.>"
        );
        assert_eq!(
            render("chat.{{name}}.*", claims.clone()).unwrap(),
            "chat.ana.*"
        );
        assert_eq!(
            render("t.{{claim:org.id}}.{{ claim:org.n }}", claims.clone()).unwrap(),
            "t.acme.7"
        );
        assert_eq!(render("in-{{sub}}-box", claims).unwrap(), "in-u-42-box");
    }

    #[test]
    fn values_that_would_widen_the_subject_are_refused() {
        for hostile in [
            "a.b",
            ">",
            "*",
            "a*",
            "x>",
            "a b",
            "a\tb",
            "a\nb",
            "",
            "a\u{0}b",
            "a\r\nPUB x",
        ] {
            let e = render("users.{{sub}}.>", json!({ "sub": hostile })).unwrap_err();
            assert_eq!(e.placeholder, "{{sub}}", "{hostile:?}");
            if hostile.chars().count() > 1 {
                assert!(!e.to_string().contains(hostile), "value echoed: {e}");
            }
        }
        let long = "x".repeat(MAX_VALUE_CHARS + 1);
        assert!(render("u.{{sub}}", json!({ "sub": long })).is_err());
    }

    #[test]
    fn a_value_never_names_a_shared_namespace_as_the_first_token() {
        for (template, sub) in [
            ("{{sub}}.>", "$JS"),
            ("{{sub}}.x", "$KV"),
            ("{{sub}}", "$SYS"),
            ("_{{sub}}.>", "INBOX"),
            ("{{claim:a}}{{sub}}.>", "BOX"),
            ("{{sub}}.>", "_INBOXES"),
            ("{{sub}}.>", "_R_"),
            ("{{sub}}.>", "_GR_"),
            ("{{sub}}x.>", "_"),
        ] {
            let e = render(template, json!({ "sub": sub, "a": "_IN" })).expect_err(template);
            assert!(e.to_string().contains("$ or _,"), "{template}: {e}");
        }
        let e = render_as("{{name}}.>", "_INBOX", json!({})).unwrap_err();
        assert_eq!(e.placeholder, "{{name}}");
        // Elsewhere in the subject such values are only names.
        assert_eq!(
            render("users.{{sub}}.>", json!({"sub": "$JS"})).unwrap(),
            "users.$JS.>"
        );
        assert_eq!(
            render("{{sub}}.in", json!({"sub": "orders"})).unwrap(),
            "orders.in"
        );
        assert!(SubjectTemplate::parse("{{sub}}.>")
            .unwrap()
            .fills_first_token());
        assert!(!SubjectTemplate::parse("a.{{sub}}")
            .unwrap()
            .fills_first_token());
    }

    #[test]
    fn the_private_inbox_begins_the_subject_and_is_the_users_own() {
        let t = SubjectTemplate::parse("{{inbox}}.>").unwrap();
        assert!(t.is_private_inbox());
        assert!(!t.fills_first_token());
        let claims = json!({"iss": "https://id.example.com", "sub": "ana"});
        let claims = claims.as_object().unwrap();
        let values = Values {
            name: "whoever",
            issuer: "corp",
            claims,
            scopes: &[],
        };
        assert_eq!(
            t.render_all(&values).unwrap(),
            ["_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38.>"]
        );
        // A [users.*] identity: from its name.
        let none = Map::new();
        let config = Values {
            name: "svc",
            issuer: inbox::CONFIG_ISSUER,
            claims: &none,
            scopes: &[],
        };
        assert_eq!(
            t.render_all(&config).unwrap(),
            [format!("{}.>", inbox::prefix("config", "svc"))]
        );
        // No sub, no inbox: refused rather than shared.
        let no_sub = json!({"iss": "https://id.example.com"});
        let e = t
            .render_all(&Values {
                claims: no_sub.as_object().unwrap(),
                ..values
            })
            .unwrap_err();
        assert_eq!(e.placeholder, "{{inbox}}");
        for bad in [
            "a.{{inbox}}.>",
            "{{inbox}}x",
            "{{inbox}}{{sub}}",
            "x{{inbox}}.>",
        ] {
            let e = SubjectTemplate::parse(bad).unwrap_err();
            assert!(e.contains("must begin the subject"), "{bad}: {e}");
        }
        assert!(SubjectTemplate::parse("{{inbox}}").is_ok());
    }

    #[test]
    fn missing_and_non_scalar_values_are_refused() {
        for claims in [
            json!({}),
            json!({"sub": null}),
            json!({"sub": true}),
            json!({"sub": 1.5}),
            json!({"sub": ["a"]}),
            json!({"sub": {"a": 1}}),
        ] {
            assert!(render("u.{{sub}}", claims.clone()).is_err(), "{claims}");
        }
        assert!(render("u.{{claim:org.id}}", json!({"org": {}})).is_err());
    }

    #[test]
    fn malformed_templates_are_config_errors() {
        for bad in [
            "users.{{sub}",
            "users.{{who}}",
            "users.{{claim:}}",
            "users.{{claim:a..b}}",
            "users.}}",
            "users.{{sub}}>",
            "users.{{sub}}*",
            "{{sub}}..x",
        ] {
            assert!(
                SubjectTemplate::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
