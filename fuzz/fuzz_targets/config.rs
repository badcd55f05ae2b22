//! Raw bytes → `Config::parse(text, "fuzz.toml")` (UTF-8 inputs only).
//!
//! Asserts, besides "never panics":
//! * an error names the file and never contains a seed that the input wrote
//!   where a seed goes (a seed key's value, or a line that is only the seed),
//!   unless the same text also appears elsewhere in the input;
//! * an accepted config keeps every documented bound (algorithms asymmetric
//!   and non-empty, leeway ≤ 5m, cool-down 1s..1h, jwks_max_age ≥ cool-down and
//!   ≤ 7 days, http_timeout in (0, 60s], token and response limits, TTL
//!   1s..30 days, https or loopback issuer, at least one audience and role),
//!   and every role's: `resp` max 1..1e6 and ttl 1ms..24h, `max_user_ttl`
//!   1s..30 days, limits non-negative (subs and payload 32-bit), connection
//!   rules not empty (networks without host bits, windows not empty),
//!   checked stream, consumer and bucket names, and JetStream/KV grants
//!   compiled to permission subjects under `$JS.API.`, `$JS.ACK.`, `$JS.FC.`
//!   or `$KV.` only.
//!
//! Relative file paths resolve against the working directory, so the fuzzer
//! may make the parser read (never write) files there. Set
//! `NATS_OIDC_CALLOUT_ISSUER_SEED` and `NATS_OIDC_CALLOUT_XKEY_SEED` to
//! nothing while fuzzing: they override the config's seeds.
//!
//! Finding (fixed; reproducers in regressions/config/): a seed written as
//! the value of a `*_seed_file` key was echoed as the file's path in the
//! "cannot read" error.
#![no_main]

use std::path::Path;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use nats_oidc_callout::config::Config;
use nats_oidc_callout::oidc::check_http_url;
use nats_oidc_callout::oidc::DEFAULT_ALGORITHMS;
use nats_oidc_callout::policy::check_permission_subject;
use nats_oidc_callout::policy::Role;
use nats_oidc_callout::policy::{check_bucket, check_stream_name};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(config) => accepted(&config),
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("config fuzz.toml: "), "{message}");
            for seed in placed_seeds(text) {
                assert!(
                    !message.contains(seed),
                    "the error message contains the seed {seed}: {message}"
                );
            }
        }
    }
});

/// Seed-looking words (58 characters of the nkey alphabet, starting with S)
/// that the input places where a seed goes, and nowhere else.
fn placed_seeds(text: &str) -> Vec<&str> {
    // A line is a seed's place when its key names a seed, or when it is only
    // a value (no `=`).
    let seed_place = |line: &str| {
        line.split_once('=')
            .is_none_or(|(key, _)| key.contains("seed"))
    };
    let mut placed = Vec::new();
    for line in text.lines().filter(|l| seed_place(l)) {
        let value = line.split_once('=').map_or(line, |(_, v)| v);
        for word in seed_words(value) {
            // Another occurrence, outside a seed's place, may legitimately be
            // echoed (a path, a subject, an unknown key).
            let everywhere = text.matches(word).count();
            let in_place: usize = text
                .lines()
                .filter(|l| seed_place(l))
                .map(|l| l.matches(word).count())
                .sum();
            if everywhere == in_place {
                placed.push(word);
            }
        }
    }
    placed
}

fn seed_words(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| !(c.is_ascii_uppercase() || ('2'..='7').contains(&c)))
        .filter(|w| w.len() == 58 && w.starts_with('S'))
}

fn accepted(c: &Config) {
    assert!(!c.oidc.is_empty());
    for o in c.oidc.iter().map(|o| &o.settings) {
        assert!(!o.algorithms.is_empty());
        assert!(o.algorithms.iter().all(|a| DEFAULT_ALGORITHMS.contains(a)));
        assert!(o.leeway <= Duration::from_secs(300));
        assert!(o.jwks_refetch_cooldown >= Duration::from_secs(1));
        assert!(o.jwks_refetch_cooldown <= Duration::from_secs(3600));
        assert!(o.jwks_max_age >= o.jwks_refetch_cooldown);
        assert!(o.jwks_max_age <= Duration::from_secs(7 * 24 * 3600));
        assert!(!o.http_timeout.is_zero() && o.http_timeout <= Duration::from_secs(60));
        assert!(o.max_response_bytes >= 1024);
        assert!(!o.audience.is_empty() && o.audience.iter().all(|a| !a.is_empty()));
        check_http_url(&o.issuer).expect("issuer URL");
        check_http_url(&o.discovery_url).expect("discovery URL");
    }
    for (i, o) in c.oidc.iter().enumerate() {
        assert!(c.oidc[..i]
            .iter()
            .all(|p| p.settings.issuer != o.settings.issuer && p.settings.name != o.settings.name));
    }
    let k = &c.callout;
    assert!((1024..=1024 * 1024).contains(&k.max_token_bytes));
    assert!(k.max_user_ttl >= Duration::from_secs(1));
    assert!(k.max_user_ttl <= Duration::from_secs(30 * 24 * 3600));
    assert!(!k.account.is_empty() && !k.account.contains(char::is_whitespace));
    assert!(k.issuer.public_key().starts_with('A'));
    assert!(c.roles.names().next().is_some());
    assert!(!c.nats.urls.is_empty());
    for (_, role) in c.roles.iter() {
        accepted_role(role);
    }
}

/// The bounds of a role's grants, limits and connection rules.
fn accepted_role(r: &Role) {
    if let Some(resp) = r.resp {
        assert!((1..=1_000_000).contains(&resp.max));
        assert!(resp
            .ttl
            .is_none_or(|t| t >= Duration::from_millis(1) && t <= Duration::from_secs(86_400)));
    }
    assert!(r
        .max_user_ttl
        .is_none_or(|t| t >= Duration::from_secs(1) && t <= Duration::from_secs(30 * 86_400)));
    let l = r.limits;
    for (v, max) in [
        (l.subs, i64::from(i32::MAX)),
        (l.payload, i64::from(i32::MAX)),
        (l.data, i64::MAX),
    ] {
        assert!(v.is_none_or(|n| (0..=max).contains(&n)));
    }
    if let Some(c) = &r.connection {
        assert!(c.types.is_some() || c.sources.is_some() || c.times.is_some());
        assert!(c.types.as_ref().is_none_or(|t| !t.is_empty()));
        assert!(c
            .sources
            .as_ref()
            .is_none_or(|s| !s.is_empty() && s.iter().all(|n| n.trunc() == *n)));
        assert!(c
            .times
            .as_ref()
            .is_none_or(|w| !w.is_empty() && w.iter().all(|w| w.start != w.end)));
    }
    let js = r.grants.jetstream();
    let names = js
        .read
        .iter()
        .chain(&js.replay)
        .chain(&js.manage)
        .chain(js.consume.iter().flat_map(|c| [&c.stream, &c.consumer]));
    for name in names {
        check_stream_name("name", name).expect("a checked name");
    }
    let kv = r.grants.kv();
    for scope in kv.read.iter().chain(&kv.write) {
        check_bucket(&scope.bucket).expect("a checked bucket");
    }
    // Every compiled subject is a permission subject; none reaches past
    // JetStream's and KV's own namespaces.
    for (entry, _) in r.grants.entries() {
        let s = entry.as_str();
        assert!(
            s.starts_with("$JS.API.")
                || s.starts_with("$JS.ACK.")
                || s.starts_with("$JS.FC.")
                || s.starts_with("$KV."),
            "{s}"
        );
        check_permission_subject(s).expect("a compiled subject");
    }
}
