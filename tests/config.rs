//! Config errors as a user sees them: the file, the key and the reason, from
//! the library and from the binary's exit status and message.

use std::path::{Path, PathBuf};
use std::process::Command;

use nats_oidc_callout::config::{Config, NatsAuth};
use nats_oidc_callout_test_support::{ConfigToml, Oidc};

struct Dir {
    dir: tempfile::TempDir,
    seed: String,
}

impl Dir {
    fn new() -> Dir {
        let dir = tempfile::tempdir().unwrap();
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        std::fs::write(dir.path().join("issuer.nk"), &seed).unwrap();
        Dir { dir, seed }
    }

    fn write(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A deployment's config with one role: the text the error cases edit.
fn good() -> String {
    ConfigToml::deployment()
        .role("reader", "sub.allow = [\"orders.>\"]")
        .to_string()
}

/// Where the streams of the grants live: an account users are not placed
/// in (the README's recommended layout).
const JETSTREAM: &str = "\n[jetstream]\naccount = \"DATA\"\n";

fn error_for(text: &str) -> String {
    let d = Dir::new();
    let path = d.write(text);
    match Config::load(&path) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "the message names the file: {msg}"
            );
            assert!(
                !msg.contains(&d.seed),
                "the message must not contain the seed: {msg}"
            );
            msg
        }
    }
}

#[test]
fn the_shipped_example_is_valid() {
    let d = Dir::new();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap();
    let example = example.replace("\"/etc/nats-oidc-callout/issuer.nk\"", "\"issuer.nk\"");
    let config = Config::load(&d.write(&example)).expect("config.example.toml is valid");
    assert_eq!(config.callout.account, "APP");
    assert_eq!(config.oidc[0].settings.audience, vec!["nats"]);
    assert_eq!(
        config.oidc[0].settings.discovery_url,
        "https://idp.example.com/realms/demo/.well-known/openid-configuration"
    );
    let names: Vec<&str> = config.roles.names().collect();
    assert_eq!(names, vec!["admin", "reader"]);
    // The container image's HEALTHCHECK (`nats-oidc-callout health`) probes
    // /readyz at [http] listen: a container started from the example needs it.
    assert_eq!(
        config.http.expect("the example has [http]").listen,
        "127.0.0.1:8080".parse().unwrap()
    );
}

#[test]
fn a_minimal_config_gets_documented_defaults() {
    let d = Dir::new();
    let c = Config::load(&d.write(&good())).unwrap();
    assert_eq!(c.nats.queue_group, "nats-oidc-callout");
    assert_eq!(c.callout.max_user_ttl.as_secs(), 3600);
    assert_eq!(c.callout.max_token_bytes, 64 * 1024);
    assert_eq!(c.oidc[0].settings.token_cache_bytes, 8 * 1024 * 1024);
    assert_eq!(c.oidc[0].settings.leeway.as_secs(), 30);
    assert_eq!(c.oidc[0].claims.user_claim.to_string(), "sub");
    assert!(c.callout.xkey.is_none());
    assert_eq!(c.callout.issuer.pair().seed().unwrap(), d.seed);
}

#[test]
fn unknown_keys_are_errors() {
    let msg =
        error_for(&good().replace("account = \"APP\"", "account = \"APP\"\nacount = \"typo\""));
    assert!(msg.contains("unknown field `acount`"), "{msg}");
    assert!(
        msg.contains("line 9, column 1 (callout.acount)"),
        "the message gives the line: {msg}"
    );
}

#[test]
fn bad_subjects_name_the_role_and_list() {
    let msg = error_for(&good().replace("orders.>", "orders.>.x"));
    assert!(msg.contains("roles.reader.sub.allow"), "{msg}");
    assert!(msg.contains("'>' may only be the last token"), "{msg}");
}

#[test]
fn bad_durations_name_the_key() {
    let msg = error_for(&good().replace("roles_claim", "leeway = \"soon\"\nroles_claim"));
    assert!(msg.contains("oidc.leeway"), "{msg}");
    assert!(msg.contains("\"soon\""), "{msg}");
}

#[test]
fn missing_seed_file_names_the_key_and_path() {
    let msg = error_for(&good().replace("issuer.nk", "missing.nk"));
    assert!(msg.contains("callout.issuer_seed_file"), "{msg}");
    assert!(msg.contains("missing.nk"), "{msg}");
}

/// Found by the config fuzzer: a seed pasted where its file belongs was
/// echoed in the "No such file" message (fuzz/regressions/config/).
#[test]
fn a_seed_pasted_as_a_seed_file_path_is_never_echoed() {
    let seed = nkeys::KeyPair::new_account().seed().unwrap();
    let msg = error_for(&good().replace("\"issuer.nk\"", &format!("\"{seed}\"")));
    assert!(msg.contains("callout.issuer_seed_file"), "{msg}");
    assert!(!msg.contains(&seed), "{msg}");
    let user = nkeys::KeyPair::new_user().seed().unwrap();
    let msg = error_for(&good().replace(
        "user = \"auth\"\npassword = \"authpw\"",
        &format!("nkey_seed_file = \"{user}\""),
    ));
    assert!(msg.contains("nats.nkey_seed_file"), "{msg}");
    assert!(!msg.contains(&user), "{msg}");
}

#[test]
fn a_user_seed_is_not_an_issuer_seed() {
    let d = Dir::new();
    let user_seed = nkeys::KeyPair::new_user().seed().unwrap();
    std::fs::write(d.path().join("issuer.nk"), &user_seed).unwrap();
    let path = d.write(&good());
    let msg = Config::load(&path).err().unwrap().to_string();
    assert!(msg.contains("must start with SA"), "{msg}");
    assert!(!msg.contains(&user_seed), "{msg}");
}

#[test]
fn hmac_and_none_are_never_accepted_algorithms() {
    let msg = error_for(&good().replace(
        "roles_claim",
        "algorithms = [\"RS256\", \"HS256\"]\nroles_claim",
    ));
    assert!(
        msg.contains("oidc.algorithms") && msg.contains("HMAC"),
        "{msg}"
    );
    let msg = error_for(&good().replace("roles_claim", "algorithms = [\"none\"]\nroles_claim"));
    assert!(msg.contains("never accepted"), "{msg}");
}

#[test]
fn plain_http_issuers_are_only_allowed_on_loopback() {
    let msg = error_for(&good().replace("https://idp.example.com", "http://idp.example.com"));
    assert!(
        msg.contains("oidc.issuer") && msg.contains("https"),
        "{msg}"
    );
    let d = Dir::new();
    assert!(Config::load(
        &d.write(&good().replace("https://idp.example.com", "http://127.0.0.1:8080"))
    )
    .is_ok());
}

#[test]
fn a_config_without_roles_is_an_error() {
    let msg = error_for(&good().replace("[roles.reader]\nsub.allow = [\"orders.>\"]", ""));
    assert!(
        msg.contains("roles") && msg.contains("no roles defined"),
        "{msg}"
    );
}

#[test]
fn two_ways_to_authenticate_to_nats_is_an_error() {
    let msg = error_for(&good().replace(
        "password = \"authpw\"",
        "password = \"authpw\"\ntoken = \"t\"",
    ));
    assert!(msg.contains("choose one way to authenticate"), "{msg}");
}

#[test]
fn the_binary_reports_config_errors_and_exits_2() {
    let d = Dir::new();
    let path = d.write(&good().replace("audience = \"nats\"", "audience = []"));
    let out = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("oidc.audience"), "{stderr}");

    let good = d.write(&good());
    let out = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_config_path_comes_from_the_environment_when_no_flag_is_given() {
    let d = Dir::new();
    let good = d.write(&good());
    let out = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("check")
        .env("NATS_OIDC_CALLOUT_CONFIG", &good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("check")
        .env_remove("NATS_OIDC_CALLOUT_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/etc/nats-oidc-callout/config.toml"),
        "the documented default path: {stderr}"
    );
}

#[test]
fn toml_errors_never_echo_secret_values() {
    let seed = nkeys::KeyPair::new_account().seed().unwrap();
    for (text, secret) in [
        (format!("[callout]\nissuer_seed = {seed}\n"), seed.clone()),
        (format!("[callout]\n{seed}\n"), seed.clone()),
        // Found by fuzzing: a seed pasted as a broken table header, or as a key.
        (format!("[callout]\n[{seed}\"\n"), seed.clone()),
        (format!("[callout]\n{seed} = 1\n"), seed.clone()),
        (
            "[nats]\ntoken = s3cr3t-token-value\n".to_string(),
            "s3cr3t-token-value".to_string(),
        ),
        (
            "[nats]\npassword = 98765432123\n".to_string(),
            "98765432123".to_string(),
        ),
    ] {
        let d = Dir::new();
        let msg = Config::load(&d.write(&text))
            .err()
            .expect("invalid")
            .to_string();
        assert!(!msg.contains(&secret), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
    }
}

#[test]
fn subject_templates_are_checked_when_the_config_loads() {
    let d = Dir::new();
    let with_role = |allow: &str| format!("{}\n[roles.member]\nsub.allow = [{allow:?}]\n", good());
    Config::load(&d.write(&with_role("users.{{sub}}.>"))).expect("a good template");
    for (bad, says) in [
        ("users.{{who}}.>", "unknown placeholder"),
        ("users.{{sub}.>", "without"),
        ("users.{{sub}}>", "wildcards"),
        ("users.{{claim:a..b}}", "empty segment"),
    ] {
        let msg = error_for(&with_role(bad));
        assert!(
            msg.contains("roles.member.sub.allow") && msg.contains(says),
            "{bad}: {msg}"
        );
    }
}

#[test]
fn a_role_account_must_be_a_name() {
    let d = Dir::new();
    let with = |account: &str| {
        format!(
            "{}\n[roles.team]\naccount = {account:?}\nsub.allow = [\"x\"]\n",
            good()
        )
    };
    let c = Config::load(&d.write(&with("TEAM"))).unwrap();
    assert!(c
        .roles
        .iter()
        .any(|(n, r)| n == "team" && r.account.as_deref() == Some("TEAM")));
    for bad in ["", "TE AM"] {
        let msg = error_for(&with(bad));
        assert!(msg.contains("roles.team.account"), "{bad:?}: {msg}");
    }
}

#[test]
fn the_token_cache_is_bounded_and_can_be_turned_off() {
    let d = Dir::new();
    let off = good().replace("roles_claim", "token_cache_bytes = 0\nroles_claim");
    assert_eq!(
        Config::load(&d.write(&off)).unwrap().oidc[0]
            .settings
            .token_cache_bytes,
        0
    );
    let msg =
        error_for(&good().replace("roles_claim", "token_cache_bytes = 4294967296\nroles_claim"));
    assert!(
        msg.contains("oidc.token_cache_bytes") && msg.contains("at most"),
        "{msg}"
    );
    let msg = error_for(&good().replace("roles_claim", "token_cache_bytes = -1\nroles_claim"));
    assert!(msg.contains("token_cache_bytes"), "{msg}");
}

#[test]
fn key_refetches_cannot_be_made_unlimited() {
    let msg =
        error_for(&good().replace("roles_claim", "jwks_refetch_cooldown = \"0s\"\nroles_claim"));
    assert!(
        msg.contains("oidc.jwks_refetch_cooldown") && msg.contains("between 1s and 1h"),
        "{msg}"
    );
    let msg = error_for(&good().replace(
        "account = \"APP\"",
        "account = \"APP\"\nmax_user_ttl = \"100000d\"",
    ));
    assert!(msg.contains("callout.max_user_ttl"), "{msg}");
}

/// Two issuers, each in its own role namespace.
fn two_issuers() -> String {
    two_issuers_with(|partner| partner)
}

/// [`two_issuers`] with the partner's block changed by `partner`.
fn two_issuers_with(partner: impl FnOnce(Oidc) -> Oidc) -> String {
    ConfigToml::new()
        .issuer_seed_file("issuer.nk")
        .oidc(
            Oidc::new("https://corp.example.com")
                .name("corp")
                .roles_claim("realm_access.roles"),
        )
        .oidc(partner(
            Oidc::new("https://partner.example.com")
                .name("partner")
                .audience("partner-nats")
                .roles_claim("groups")
                .user_claim("email"),
        ))
        .role("corp:admin", "pub.allow = [\">\"]")
        .role("partner:reader", "sub.allow = [\"partner.>\"]")
        .to_string()
}

#[test]
fn several_issuers_each_keep_their_own_settings_and_namespace() {
    let d = Dir::new();
    let c = Config::load(&d.write(&two_issuers())).unwrap();
    let names: Vec<_> = c.oidc.iter().map(|o| o.settings.name.as_str()).collect();
    assert_eq!(names, ["corp", "partner"]);
    assert_eq!(c.oidc[0].claims.role_namespace.as_deref(), Some("corp"));
    assert_eq!(c.oidc[1].settings.audience, vec!["partner-nats"]);
    assert_eq!(
        c.oidc[1].claims.roles_claim.as_ref().unwrap().to_string(),
        "groups"
    );
    assert_eq!(c.oidc[1].claims.user_claim.to_string(), "email");
    // A role without a namespace is unreachable when every issuer has one.
    let orphan = format!("{}\n[roles.reader]\nsub.allow = [\"x\"]\n", two_issuers());
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&orphan)).unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("roles.reader: no issuer looks roles up without a namespace")),
        "{warnings:?}"
    );
    assert!(
        !nats_oidc_callout::check::warnings(&c)
            .iter()
            .any(|w| w.contains("without a namespace")),
        "namespaced roles are reachable"
    );
    // Per-user subjects without {{issuer}} and a shared table across issuers
    // are valid but risky with several identity sources.
    let risky = two_issuers()
        .replace(
            "user_claim = \"email\"",
            "user_claim = \"email\"\nrole_namespace = \"\"",
        )
        .replace("name = \"corp\"", "name = \"corp\"\nrole_namespace = \"\"")
        .replace("[roles.\"corp:admin\"]", "[roles.admin]")
        .replace("[roles.\"partner:reader\"]", "[roles.reader]")
        .replace(
            "sub.allow = [\"partner.>\"]",
            "sub.allow = [\"users.{{name}}.>\"]\nkv.write = [\"profiles/{{name}}.>\"]",
        )
        .replace(
            "account = \"APP\"",
            "account = \"APP\"\nauth_account = \"AUTH\"",
        )
        + JETSTREAM;
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&risky)).unwrap());
    for w in [
        "share the plain [roles.*] table",
        "roles.reader: \"users.{{name}}.>\" is per user but not per issuer",
        "roles.reader: \"$KV.profiles.{{name}}.>\" is per user but not per issuer",
    ] {
        assert!(
            warnings.iter().any(|x| x.contains(w)),
            "{w:?} not in {warnings:?}"
        );
    }
    // A single [oidc] table is one issuer named "default" with no namespace.
    let single = Config::load(&d.write(&good())).unwrap();
    assert_eq!(single.oidc.len(), 1);
    assert_eq!(single.oidc[0].settings.name, "default");
    assert_eq!(single.oidc[0].claims.role_namespace, None);
}

#[test]
fn issuer_blocks_are_checked_and_errors_name_the_block() {
    let partner = |edit: fn(Oidc) -> Oidc| two_issuers_with(edit);
    let cases = [
        (
            two_issuers().replace("name = \"partner\"\n", ""),
            "oidc[1].name",
            "required in [[oidc]] blocks",
        ),
        (
            partner(|p| p.name("corp")),
            "oidc[corp].name",
            "names two [[oidc]] blocks",
        ),
        (
            partner(|p| p.set("issuer", "\"https://corp.example.com\"")),
            "oidc[partner].issuer",
            "route to exactly one block",
        ),
        (
            partner(|p| p.set("audience", "[]")),
            "oidc[partner].audience",
            "at least one non-empty audience",
        ),
        (
            partner(|p| p.set("role_namespace", "\"corp\"")),
            "oidc[partner].role_namespace",
            "also the role namespace of oidc[corp]",
        ),
        (
            partner(|p| p.name("config")),
            "oidc[1].name",
            "names the [users.*] identities",
        ),
        (
            partner(|p| p.name("part ner")),
            "oidc[1].name",
            "letters, digits",
        ),
        (
            two_issuers().replace("[roles.\"partner:reader\"]", "[roles.\"parnter:reader\"]"),
            "roles.parnter:reader",
            "role_namespace of no [oidc] issuer",
        ),
        (
            partner(|p| p.set("bogus", "1")),
            "bogus",
            "unknown field `bogus`",
        ),
    ];
    for (text, key, reason) in cases {
        let msg = error_for(&text);
        assert!(
            msg.contains(key) && msg.contains(reason),
            "expected {key:?} and {reason:?} in: {msg}"
        );
    }
}

#[test]
fn config_users_need_one_credential_and_one_grant() {
    let hash = "$2b$10$nPeDYQoxqiNcyWY2GpLbn.QudopKoLfEED44q2.7.H4xVlSfwkKGW";
    let nkey = nkeys::KeyPair::new_user();
    let seed = nkey.seed().unwrap();
    let good = format!(
        "{}\n[users.svc]\npassword_bcrypt = \"{hash}\"\nroles = [\"reader\"]\n\n[users.mon]\nnkey = \"{}\"\nsub.allow = [\"metrics.>\"]\n",
        good(),
        nkey.public_key()
    );
    let d = Dir::new();
    let c = Config::load(&d.write(&good)).unwrap();
    assert_eq!(c.users.len(), 2);
    let cases = [
        (
            good.replace(
                "roles = [\"reader\"]",
                "roles = [\"reader\"]\nnkey = \"UX\"",
            ),
            "users.svc",
            "exactly one credential",
        ),
        (
            good.replace(&format!("password_bcrypt = \"{hash}\"\n"), ""),
            "users.svc",
            "exactly one credential",
        ),
        (
            good.replace(hash, "hunter2"),
            "users.svc.password_bcrypt",
            "not a bcrypt hash",
        ),
        (
            good.replace("$2b$10$", "$2b$17$"),
            "users.svc.password_bcrypt",
            "bcrypt cost 17 is more than 16",
        ),
        (
            good.replace(&nkey.public_key(), &seed),
            "users.mon.nkey",
            "never put the seed here",
        ),
        (
            good.replace("roles = [\"reader\"]", "roles = [\"raeder\"]"),
            "users.svc.roles",
            "\"raeder\" is not a [roles.*] table",
        ),
        (
            good.replace(
                "roles = [\"reader\"]",
                "roles = [\"reader\"]\npub.allow = [\"x\"]",
            ),
            "users.svc",
            "exactly one of the two",
        ),
        (
            good.replace(
                "sub.allow = [\"metrics.>\"]",
                "sub.allow = [\"metrics..x\"]",
            ),
            "users.mon.sub.allow",
            "",
        ),
        (
            good.replace(
                "sub.allow = [\"metrics.>\"]",
                "sub.allow = [\"users.{{sub}}.>\"]",
            ),
            "users.mon.sub",
            "names a token claim",
        ),
        (
            format!(
                "{good}\n[users.mon2]\nnkey = \"{}\"\nsub.allow = [\"x\"]\n",
                nkey.public_key()
            ),
            "users.mon2.nkey",
            "also the nkey of users.mon",
        ),
    ];
    for (text, key, reason) in cases {
        let msg = error_for(&text);
        assert!(
            msg.contains(key) && msg.contains(reason),
            "expected {key:?} and {reason:?} in: {msg}"
        );
        assert!(!msg.contains(&seed), "the nkey seed is never echoed: {msg}");
    }
}

#[test]
fn grants_settings_are_checked() {
    let d = Dir::new();
    let good = format!(
        "{}\n[grants]\nkv_bucket = \"callout-grants\"\nmax_requested_scopes = 16\n",
        good().replace("roles_claim", "scopes_claim = \"rooms\"\nroles_claim")
    );
    let c = Config::load(&d.write(&good)).unwrap();
    assert_eq!(c.grants.kv_bucket.as_deref(), Some("callout-grants"));
    assert_eq!(c.grants.max_requested_scopes, 16);
    assert_eq!(
        c.oidc[0].claims.scopes_claim.as_ref().unwrap().to_string(),
        "rooms"
    );
    assert_eq!(
        Config::load(&d.write(&self::good()))
            .unwrap()
            .grants
            .max_requested_scopes,
        64
    );
    for (text, key) in [
        (
            good.replace("callout-grants", "callout.grants"),
            "grants.kv_bucket",
        ),
        (good.replace("= 16", "= 0"), "grants.max_requested_scopes"),
        (
            good.replace("= 16", "= 5000"),
            "grants.max_requested_scopes",
        ),
        (
            good.replace("scopes_claim = \"rooms\"", "scopes_claim = \"\""),
            "oidc.scopes_claim",
        ),
    ] {
        let msg = error_for(&text);
        assert!(msg.contains(key), "expected {key:?} in: {msg}");
    }
}

#[test]
fn check_warns_when_a_token_value_picks_the_first_token_of_a_subject() {
    let d = Dir::new();
    let text = good().replace(
        "sub.allow = [\"orders.>\"]",
        "sub.allow = [\"orders.>\", \"{{name}}.>\"]\npub.allow = [\"users.{{name}}.>\"]",
    );
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&text)).unwrap());
    let first_token: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("choose the subject's first token"))
        .collect();
    assert_eq!(first_token.len(), 1, "{warnings:?}");
    assert!(first_token[0].starts_with("roles.reader.sub.allow: \"{{name}}.>\""));
}

/// `check` accepts exactly the server URLs `run` can use, and no message
/// shows the credentials a URL carries.
#[test]
fn urls_are_parsed_as_the_service_uses_them_and_shown_without_credentials() {
    let d = Dir::new();
    let with_url = |url: &str| {
        good().replace(
            "url = \"nats://127.0.0.1:4222\"\nuser = \"auth\"\npassword = \"authpw\"",
            &format!("url = \"{url}\""),
        )
    };
    let e = error_for(&with_url("http://127.0.0.1:4222"));
    assert!(
        e.contains("nats.url") && e.contains("invalid scheme"),
        "{e}"
    );
    for bad in [
        "nats://auth:s3cret@[::1",
        "nats://auth:s3cret@host:99999",
        "nats://auth:s3/cret@127.0.0.1:4222",
        "nats://auth:s3#cret@127.0.0.1:4222",
        "nats://s3cret/x@127.0.0.1:4222",
        "nats://a:s3cret@h1:4222,nats://a:s3cret@h2:4222",
    ] {
        let e = error_for(&with_url(bad));
        assert!(e.contains("nats.url") && e.contains("***@"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }
    // Credentials in the URL are a way to log in, taken out of the URL
    // (async-nats would not use them, and would log them at debug level).
    let c = Config::load(&d.write(&with_url("nats://auth:s%40cret@127.0.0.1:4222")))
        .expect("credentials in a NATS URL are one way to log in");
    assert_eq!(c.nats.urls, vec!["nats://127.0.0.1:4222"]);
    assert!(
        matches!(&c.nats.auth, NatsAuth::UserPassword { user, password } if user == "auth" && password == "s@cret")
    );
    let c = Config::load(&d.write(&with_url("tok3n@127.0.0.1"))).unwrap();
    assert!(matches!(&c.nats.auth, NatsAuth::Token(t) if t == "tok3n"));
    let both = good().replace(
        "url = \"nats://127.0.0.1:4222\"",
        "url = \"nats://other:pw@127.0.0.1:4222\"",
    );
    assert!(error_for(&both).contains("credentials in nats.url and another method"));
    let two = good().replace(
        "url = \"nats://127.0.0.1:4222\"\nuser = \"auth\"\npassword = \"authpw\"",
        "url = [\"nats://a:b@h1:4222\", \"nats://a:c@h2:4222\"]",
    );
    assert!(error_for(&two).contains("different credentials"));
    let e = error_for(&good().replace(
        "https://idp.example.com/realms/demo",
        "https://client:s3cret@idp.example.com/realms/demo",
    ));
    assert!(
        e.contains("oidc.issuer") && e.contains("carries credentials"),
        "{e}"
    );
    assert!(!e.contains("s3cret"), "{e}");
}

/// An operator-mode config: the callout account's signing key, its public
/// key, and the accounts users may land in, each with a signing key.
struct Operator {
    d: Dir,
    auth: nkeys::KeyPair,
    app: nkeys::KeyPair,
    app_signing: nkeys::KeyPair,
}

impl Operator {
    fn new() -> Operator {
        let d = Dir::new();
        let app_signing = nkeys::KeyPair::new_account();
        std::fs::write(d.path().join("app-sk.nk"), app_signing.seed().unwrap()).unwrap();
        Operator {
            d,
            auth: nkeys::KeyPair::new_account(),
            app: nkeys::KeyPair::new_account(),
            app_signing,
        }
    }

    fn text(&self) -> String {
        good().replace("auth_account = \"AUTH\"\n", "").replace(
            "account = \"APP\"",
            &format!(
                "account = \"APP\"\nmode = \"operator\"\nauth_account = \"{}\"\n\n[callout.accounts.APP]\npublic_key = \"{}\"\nsigning_key_seed_file = \"app-sk.nk\"",
                self.auth.public_key(),
                self.app.public_key()
            ),
        )
    }
}

#[test]
fn operator_mode_configs_are_checked_and_errors_name_the_key() {
    let o = Operator::new();
    let c = Config::load(&o.d.write(&o.text())).expect("a good operator-mode config");
    assert_eq!(c.callout.auth_account, o.auth.public_key());
    let app_seed = o.app_signing.seed().unwrap();
    let cases: Vec<(String, &str, &str)> = vec![
        (o.text().replace("mode = \"operator\"", "mode = \"decentral\""), "callout.mode", "is not \"server\""),
        (
            o.text().replace("account = \"APP\"\nmode", "account = \"TEAM\"\nmode"),
            "callout.account",
            "is not in [callout.accounts]",
        ),
        (
            format!("{}\naccount = \"TEAM\"\n", o.text()),
            "roles.reader.account",
            "is not in [callout.accounts]",
        ),
        (
            o.text().replace(&format!("auth_account = \"{}\"", o.auth.public_key()), &format!("auth_account = \"{app_seed}\"")),
            "callout.auth_account",
            "never put a seed here",
        ),
        (
            o.text().replace(&format!("public_key = \"{}\"", o.app.public_key()), "public_key = \"UABC\""),
            "callout.accounts.APP.public_key",
            "must be the account's public key",
        ),
        (
            o.text().replace("signing_key_seed_file = \"app-sk.nk\"", ""),
            "callout.accounts.APP.signing_key_seed_file",
            "required",
        ),
        (
            good().replace("auth_account = \"AUTH\"", &format!("auth_account = \"{}\"", o.app.public_key())),
            "callout.auth_account",
            "not a public key",
        ),
        (
            format!(
                "{}\n[callout.accounts.TEAM]\npublic_key = \"{}\"\nsigning_key_seed_file = \"app-sk.nk\"\n",
                o.text(),
                o.app.public_key()
            ),
            "callout.accounts.TEAM.public_key",
            "is also the public key of callout.accounts.APP",
        ),
        (
            format!(
                "{}\n[users.sensor]\nnkey = \"{}\"\npub.allow = [\"sensors.>\"]\n",
                o.text(),
                nkeys::KeyPair::new_user().public_key()
            ),
            "users.sensor.nkey",
            "in operator mode clients present the sentinel's JWT",
        ),
    ];
    for (text, key, reason) in cases {
        let path = o.d.write(&text);
        let e = match Config::load(&path) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(key) && e.contains(reason),
            "expected {key:?} and {reason:?} in: {e}"
        );
        assert!(!e.contains(&app_seed), "a seed in: {e}");
    }
}

#[test]
fn the_callout_account_is_read_from_the_services_creds_when_not_given() {
    let o = Operator::new();
    let user = nkeys::KeyPair::new_user();
    let auth_signing = nkeys::KeyPair::new_account();
    let jwt = nats_oidc_callout::nats::sentinel(
        &user.public_key(),
        &o.auth.public_key(),
        &nats_oidc_callout::nats::SigningKey::of(&auth_signing).unwrap(),
        1_900_000_000,
    );
    std::fs::write(
        o.d.path().join("service.creds"),
        nats_oidc_callout::nats::creds_file(&jwt, &user.seed().unwrap()),
    )
    .unwrap();
    let text = o
        .text()
        .replace(&format!("auth_account = \"{}\"\n", o.auth.public_key()), "")
        .replace(
            "user = \"auth\"\npassword = \"authpw\"",
            "creds_file = \"service.creds\"",
        );
    let c = Config::load(&o.d.write(&text)).unwrap();
    assert_eq!(c.callout.auth_account, o.auth.public_key());
}

#[test]
fn check_warns_about_identity_seeds_in_operator_mode() {
    let o = Operator::new();
    std::fs::write(o.d.path().join("app-sk.nk"), o.app.seed().unwrap()).unwrap();
    let issuer_public = nkeys::KeyPair::from_seed(&o.d.seed).unwrap().public_key();
    let text = o.text().replace(&o.auth.public_key(), &issuer_public);
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&o.d.write(&text)).unwrap());
    for w in [
        "callout.accounts.APP: the seed is the account's own key, not a signing key",
        "callout.issuer_seed is the callout account's own key",
    ] {
        assert!(
            warnings.iter().any(|x| x.contains(w)),
            "{w:?} not in {warnings:?}"
        );
    }
}

#[test]
fn check_warns_when_users_may_land_in_the_callout_account() {
    let o = Operator::new();
    std::fs::write(
        o.d.path().join("auth-sk.nk"),
        nkeys::KeyPair::new_account().seed().unwrap(),
    )
    .unwrap();
    let quiet = nats_oidc_callout::check::warnings(&Config::load(&o.d.write(&o.text())).unwrap());
    assert!(
        !quiet
            .iter()
            .any(|w| w.contains("the callout's own account")),
        "{quiet:?}"
    );
    let text = format!(
        "{}\n[callout.accounts.AUTH]\npublic_key = \"{}\"\nsigning_key_seed_file = \"auth-sk.nk\"\n",
        o.text(),
        o.auth.public_key()
    );
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&o.d.write(&text)).unwrap());
    let expected = format!(
        "callout.accounts.AUTH is the callout's own account ({})",
        o.auth.public_key()
    );
    assert!(
        warnings.iter().any(|w| w.contains(&expected)),
        "{expected:?} not in {warnings:?}"
    );
}

/// Each bad value in the new role keys is refused at load time, and the
/// message names the role, the key and what is wrong.
#[test]
fn role_grants_limits_and_connection_rules_are_checked_at_load() {
    let cases: &[(&str, &str, &str)] = &[
        ("resp = { max = 0 }", "roles.reader.resp.max", "1"),
        ("resp = { ttl = \"0s\" }", "roles.reader.resp.ttl", "1ms"),
        ("resp = { ttl = \"2d\" }", "roles.reader.resp.ttl", "24h"),
        ("max_user_ttl = \"soon\"", "roles.reader.max_user_ttl", "\"soon\""),
        ("limits = { subs = -1 }", "roles.reader.limits.subs", "negative"),
        ("limits = { payload = \"lots\" }", "roles.reader.limits.payload", "\"lots\""),
        ("limits = { payload = \"3GiB\" }", "roles.reader.limits.payload", "more than nats-server"),
        ("limits = {}", "roles.reader.limits", "sets no limit"),
        ("connection = {}", "roles.reader.connection", "no rule"),
        ("connection.types = [\"websocket\"]", "roles.reader.connection.types", "WEBSOCKET"),
        ("connection.types = []", "roles.reader.connection.types", ""),
        ("connection.sources = [\"10.0.0.0/33\"]", "roles.reader.connection.sources", "10.0.0.0/33"),
        ("connection.sources = [\"10.0.0.1/8\"]", "roles.reader.connection.sources", "10.0.0.0/8 or the address 10.0.0.1/32"),
        ("connection.times = [{ start = \"8am\", end = \"18:00:00\" }]", "roles.reader.connection.times", "8am"),
        ("connection.times = [{ start = \"08:00:00\", end = \"08:00:00\" }]", "roles.reader.connection.times", "empty"),
        ("connection.times = [{ start = \"08\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"08\" is not a time of day"),
        ("connection.times = [{ start = \"08:00\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"08:00\""),
        ("connection.times = [{ start = \"08:00:60\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"08:00:60\""),
        ("connection.times = [{ start = \"08:00:00.5\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"08:00:00.5\""),
        ("connection.times = [{ start = \"8:00:00\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"8:00:00\""),
        ("connection.times = [{ start = \"24:00:00\", end = \"18:00:00\" }]", "roles.reader.connection.times", "\"24:00:00\""),
        ("connection.sources = [\"::ffff:10.0.0.0/104\"]", "roles.reader.connection.sources", "write the IPv4 network 10.0.0.0/8"),
        ("jetstream.read = [\"_\"]", "roles.reader.jetstream.read", "no domain"),
        ("connection.times = [{ start = \"08:00:00\", end = \"18:00:00\" }]\nconnection.time_zone = \"Mars/Olympus\"", "roles.reader.connection.time_zone", "Mars/Olympus"),
        ("connection.times = [{ start = \"08:00:00\", end = \"18:00:00\" }]\nconnection.time_zone = \"europe/berlin\"", "roles.reader.connection.time_zone", "\"Europe/Berlin\""),
        ("jetstream.manage = [\"{{sub}}\"]", "roles.reader.jetstream.manage", "never filled from a token"),
        ("kv.read = [\"profiles/users.*\"]", "roles.reader.kv.read", "'*' is refused"),
        ("jetstream.consume = [\"ORDERS\"]", "roles.reader.jetstream.consume", "stream/consumer"),
        ("jetstream.consume = [\"ORD.ERS/worker\"]", "roles.reader.jetstream.consume", "'.'"),
        ("jetstream.read = [\"ORDERS*\"]", "roles.reader.jetstream.read", "'*'"),
        ("jetstream.manage = [\"42\"]", "roles.reader.jetstream.manage", "digits"),
        ("jetstream.replay = [\"\"]", "roles.reader.jetstream.replay", "1 to 255"),
        ("jetstream = {}", "roles.reader.jetstream", "grants nothing"),
        ("kv = {}", "roles.reader.kv", "grants nothing"),
        ("kv.read = [\"con fig\"]", "roles.reader.kv.read", "bucket"),
        ("kv.write = [\"profiles/a b\"]", "roles.reader.kv.write", "key pattern"),
        ("kv.write = [\"profiles/a.>.b\"]", "roles.reader.kv.write", ""),
        ("kv.read = [\"profiles/{{nope}}\"]", "roles.reader.kv.read", "nope"),
        ("kv.read = [\"profiles/\"]", "roles.reader.kv.read", ""),
    ];
    for (line, key, detail) in cases {
        let text = good().replace(
            "sub.allow = [\"orders.>\"]",
            &format!("sub.allow = [\"orders.>\"]\n{line}"),
        );
        let msg = error_for(&text);
        assert!(msg.contains(key), "{line}: the message names {key}: {msg}");
        assert!(
            msg.contains(detail),
            "{line}: the message says {detail:?}: {msg}"
        );
    }
}

#[test]
fn role_grants_limits_and_connection_rules_load() {
    let d = Dir::new();
    let text = good().replace(
        "sub.allow = [\"orders.>\"]",
        r#"sub.allow = ["orders.>", "_INBOX.>"]
resp = { max = 2, ttl = "1m" }
max_user_ttl = "15m"
limits = { subs = 100, payload = "64KiB", data = 10485760 }
connection.types = ["STANDARD", "WEBSOCKET"]
connection.sources = ["10.0.0.0/8", "::1/128"]
connection.times = [{ start = "22:00:00", end = "06:00:00" }]
connection.time_zone = "Europe/Berlin"
jetstream.consume = ["ORDERS/worker"]
jetstream.read = ["ORDERS"]
kv.read = ["config", "profiles/{{sub}}.>"]
kv.write = ["profiles/{{sub}}.>"]"#,
    ) + JETSTREAM;
    let config = Config::load(&d.write(&text)).expect("valid");
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .args(["check", "--config"])
        .arg(d.path().join("config.toml"))
        .output()
        .unwrap();
    assert!(check.status.success());
    drop(config);
}

/// The example's commented-out role loads once uncommented.
#[test]
fn the_examples_commented_role_is_valid() {
    let d = Dir::new();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
            .unwrap()
            .replace("\"/etc/nats-oidc-callout/issuer.nk\"", "\"issuer.nk\"");
    let at = example
        .find("# [roles.orders-service]")
        .expect("the example shows a role with grants");
    let uncommented: String = example[at..]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let head = example[..at].replace("# auth_account = \"AUTH\"", "auth_account = \"AUTH\"");
    let config = Config::load(&d.write(&format!("{head}{uncommented}\n")))
        .expect("the uncommented role is valid");
    let role = config
        .roles
        .iter()
        .find(|(n, _)| *n == "orders-service")
        .unwrap()
        .1;
    assert!(role.resp.is_some() && role.connection.is_some() && !role.grants.is_empty());
}

/// The book's example of everything a role can say loads as written.
#[test]
fn the_book_role_example_is_valid() {
    let page = include_str!("../docs/src/guides/roles.md");
    let block = page
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the page starts with a TOML example");
    let d = Dir::new();
    let config = Config::load(&d.write(&format!("{}\n{block}", good())))
        .unwrap_or_else(|e| panic!("the example of docs/src/guides/roles.md is valid: {e}"));
    for role in ["orders-service", "browser", "orders-worker", "profile-user"] {
        assert!(config.roles.iter().any(|(n, _)| n == role), "{role}");
    }
}

/// Two issuers, GitHub's (roles only through bindings) and a cluster's,
/// each with its own role namespace.
/// Two issuers, GitHub's (roles only through bindings) and a cluster's,
/// each with its own role namespace.
fn workloads() -> String {
    ConfigToml::new()
        .nats_login("nats://127.0.0.1:4222")
        .issuer_seed_file("issuer.nk")
        .oidc(
            Oidc::new("https://token.actions.githubusercontent.com")
                .name("github")
                .set("require_claims", "{ repository_owner = \"acme\" }"),
        )
        .oidc(
            Oidc::new("https://kubernetes.default.svc.cluster.local")
                .name("cluster")
                .roles_claim("groups"),
        )
        .role("github:deployer", "pub.allow = [\"deploy.>\"]")
        .role("cluster:orders-reader", "sub.allow = [\"orders.>\"]")
        .to_string()
}

const DEPLOYER: &str = r#"
[[bindings]]
issuer = "github"
match = { repository_id = 123456, ref = ["refs/heads/main", "refs/tags/v*"] }
roles = ["deployer"]
"#;

#[test]
fn bindings_load_into_their_issuer_with_its_roles() {
    let d = Dir::new();
    let text = format!(
        "{}{DEPLOYER}
[[bindings]]
name = \"orders-pods\"
issuer = \"cluster\"
match = {{ \"/kubernetes.io/namespace\" = \"orders\", sub = \"system:serviceaccount:orders:*\" }}
roles = [\"orders-reader\"]
broad = true
",
        workloads()
    );
    let c = Config::load(&d.write(&text)).unwrap();
    let github = &c.oidc[0].claims;
    assert_eq!(github.roles_claim, None);
    assert_eq!(github.required.len(), 1);
    assert_eq!(github.bindings[0].name, "github[0]");
    assert_eq!(github.bindings[0].roles, ["github:deployer"]);
    let cluster = &c.oidc[1].claims;
    assert_eq!(cluster.bindings[0].name, "orders-pods");
    assert_eq!(cluster.bindings[0].roles, ["cluster:orders-reader"]);
    let warnings = nats_oidc_callout::check::warnings(&c);
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "binding orders-pods is broad: every token of issuer cluster with /kubernetes.io/namespace = \"orders\" and sub = \"system:serviceaccount:orders:*\" gets roles [\"cluster:orders-reader\"], whichever workload it names"
        )),
        "{warnings:?}"
    );
    assert!(
        !warnings.iter().any(|w| w.contains("github[0]")),
        "a pinned binding is not warned about: {warnings:?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("is the shared issuer of")),
        "GitHub's issuer with require_claims: {warnings:?}"
    );
    for loose in [
        "",
        "require_claims = { repository_owner = \"acme*\" }\n",
        "require_claims = { event_name = \"push\" }\n",
    ] {
        let open = text.replace("require_claims = { repository_owner = \"acme\" }\n", loose);
        let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&open)).unwrap());
        assert!(
            warnings.iter().any(|w| w.starts_with(
                "oidc[github]: https://token.actions.githubusercontent.com is the shared issuer of GitHub Actions: every one of its customers"
            )),
            "{loose:?}: {warnings:?}"
        );
    }
    // A repository pinned by name only can change hands.
    let by_name = text.replace(
        "match = { repository_id = 123456,",
        "match = { repository = \"acme/orders\",",
    );
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&by_name)).unwrap());
    assert!(
        warnings
            .iter()
            .any(|w| w.starts_with("binding github[0] pins the repository by name")),
        "{warnings:?}"
    );
    let open = text.replace("require_claims = { repository_owner = \"acme\" }\n", "");
    let warnings = nats_oidc_callout::check::warnings(&Config::load(&d.write(&open)).unwrap());
    assert!(
        warnings.iter().any(|w| w.starts_with(
            "oidc[github]: https://token.actions.githubusercontent.com is the shared issuer of GitHub Actions: every one of its customers"
        )),
        "{warnings:?}"
    );
}

/// Each bad binding or required claim is refused at load, naming where.
#[test]
fn bad_bindings_and_required_claims_are_config_errors() {
    let binding = |body: &str| format!("{}\n[[bindings]]\n{body}\n", workloads());
    let cases: Vec<(String, &str, &str)> = vec![
        (
            binding("issuer = \"gitlab\"\nmatch = { sub = \"x\" }\nroles = [\"deployer\"]"),
            "bindings[0].issuer",
            "\"gitlab\" names no [oidc] issuer",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"x\" }\nroles = [\"orders-reader\"]"),
            "bindings[0].roles",
            "\"orders-reader\" is no role of issuer \"github\"",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"x\" }\nroles = [\"cluster:orders-reader\"]"),
            "bindings[0].roles",
            "without a namespace",
        ),
        (
            binding("issuer = \"github\"\nmatch = { repository_id = 74 }\nroles = [\"deployer\", \"other:x\"]"),
            "bindings[0].roles",
            "\"other:x\": name the issuer's roles as its tokens would",
        ),
        (
            binding("issuer = \"github\"\nmatch = { job_workflow_ref = \"acme/ci/.github/workflows/d.yml@refs/heads/main\" }\nroles = [\"deployer\"]"),
            "bindings[0].match",
            "job_workflow_ref is carried by every repository that calls the workflow",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"environment:prod\" }\nroles = [\"deployer\"]"),
            "bindings[0].match",
            "a sub in the repo:<owner>/<name>:... form",
        ),
        (
            binding("issuer = \"cluster\"\nmatch = { repository_id = 74 }\nroles = [\"orders-reader\"]"),
            "bindings[0].match",
            "match one of [\"sub\"] exactly",
        ),
        (
            binding("issuer = \"github\"\nmatch = { repository_owner = \"acme\" }\nroles = [\"deployer\"]"),
            "bindings[0].match",
            "pins no single workload",
        ),
        (
            binding("issuer = \"github\"\nmatch = { repository = \"acme/*\" }\nroles = [\"deployer\"]"),
            "bindings[0].match",
            "pins no single workload",
        ),
        (
            binding("issuer = \"github\"\nmatch = {}\nroles = [\"deployer\"]\nbroad = true"),
            "bindings[0].match",
            "names no claim",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"x\" }\nroles = []"),
            "bindings[0].roles",
            "lists no role",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = 1.5 }\nroles = [\"deployer\"]"),
            "bindings[0].match.sub",
            "a float is not a claim value",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = [] }\nroles = [\"deployer\"]"),
            "bindings[0].match.sub",
            "lists no value",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"x\", ref = \"**\" }\nroles = [\"deployer\"]"),
            "bindings[0].match.ref",
            "matches every value",
        ),
        (
            binding("issuer = \"github\"\nmatch = { sub = \"\" }\nroles = [\"deployer\"]"),
            "bindings[0].match.sub",
            "an empty value",
        ),
        (
            binding("issuer = \"github\"\nmatch = { \"a..b\" = \"x\" }\nroles = [\"deployer\"]\nbroad = true"),
            "bindings[0].match.a..b",
            "empty segment",
        ),
        (
            binding("issuer = \"github\"\nname = \"has space\"\nmatch = { sub = \"x\" }\nroles = [\"deployer\"]"),
            "bindings[0].name",
            "metrics label",
        ),
        (
            format!("{}{DEPLOYER}{DEPLOYER}", workloads()).replace(
                "roles = [\"deployer\"]",
                "name = \"twice\"\nroles = [\"deployer\"]",
            ),
            "bindings[1].name",
            "\"twice\" names two bindings",
        ),
        (
            workloads(),
            "oidc[github].roles_claim",
            "required unless [[bindings]] name this issuer",
        ),
        (
            format!("{}{DEPLOYER}", workloads()).replace(
                "require_claims = { repository_owner = \"acme\" }",
                "require_claims = {}",
            ),
            "oidc[github].require_claims",
            "names no claim",
        ),
        (
            format!("{}{DEPLOYER}", workloads()).replace(
                "require_claims = { repository_owner = \"acme\" }",
                "require_claims = { repository_owner = { name = \"acme\" } }",
            ),
            "oidc[github].require_claims.repository_owner",
            "is not a claim value",
        ),
        (
            format!("{}{DEPLOYER}", workloads()).replace(
                "require_claims = { repository_owner = \"acme\" }",
                "require_claims = { repository_owner = \"acme\" }\nplatform = \"GitHub\"",
            ),
            "oidc[github].platform",
            "\"GitHub\" is not a platform the bindings know: one of [\"github\", \"kubernetes\", \"google\", \"gitlab\", \"generic\"]",
        ),
    ];
    for (text, key, detail) in cases {
        let msg = error_for(&text);
        assert!(msg.contains(key), "the message names {key}: {msg}");
        assert!(msg.contains(detail), "the message says {detail:?}: {msg}");
    }
}

/// Where users with JetStream/KV grants may be placed: never in the
/// callout's account, never (without `same_account`) in the account
/// holding the streams; and the `[jetstream]` table itself is checked.
#[test]
fn jetstream_grants_need_an_account_users_are_not_placed_in() {
    let grant = "sub.allow = [\"orders.>\"]\nkv.read = [\"config\"]";
    let with = |role_extra: &str, tables: &str| {
        good().replace(
            "sub.allow = [\"orders.>\"]",
            &format!("{grant}\n{role_extra}"),
        ) + tables
    };
    let cases = [
        (
            with("", ""),
            "roles.reader",
            "no [jetstream] table says where the streams and buckets live",
        ),
        (
            with("account = \"AUTH\"", JETSTREAM),
            "roles.reader.account",
            "the callout's own account",
        ),
        (
            with("account = \"DATA\"", JETSTREAM),
            "roles.reader.account",
            "set jetstream.same_account = true to accept that",
        ),
        (
            with("", "\n[jetstream]\naccount = \"AUTH\"\n"),
            "jetstream.account",
            "is the callout's own account",
        ),
        (
            with("", JETSTREAM).replace("auth_account = \"AUTH\"\n", ""),
            "callout.auth_account",
            "required with [jetstream]",
        ),
        (
            with(
                "",
                "\n[jetstream]\naccount = \"DATA\"\nstream_subjects = [\"$KV.>\"]\n",
            ),
            "jetstream.stream_subjects",
            "reaches $KV.>",
        ),
        (
            with(
                "",
                "\n[jetstream]\naccount = \"DATA\"\nstream_subjects = [\">\"]\n",
            ),
            "jetstream.stream_subjects",
            "which the grants (or nats-server) route by themselves",
        ),
        (
            with("", "\n[jetstream]\naccount = \"DATA\"\ndomain = \"a.b\"\n"),
            "jetstream.domain",
            "letters, digits",
        ),
        (
            with(
                "",
                "\n[jetstream]\naccount = \"DATA\"\npublic_key = \"AXYZ\"\n",
            ),
            "jetstream.public_key",
            "is for operator mode",
        ),
    ];
    for (text, key, reason) in cases {
        let msg = error_for(&text);
        assert!(
            msg.contains(key) && msg.contains(reason),
            "expected {key:?} and {reason:?} in: {msg}"
        );
    }
    // Knowingly beside the streams: valid, and check says what it means.
    let d = Dir::new();
    let text = with(
        "account = \"DATA\"",
        "\n[jetstream]\naccount = \"DATA\"\nsame_account = true\n",
    );
    let config = Config::load(&d.write(&text)).expect("same_account is explicit");
    let warnings = nats_oidc_callout::check::warnings(&config);
    assert!(
        warnings.iter().any(|w| w.contains(
            "is granted in \"DATA\", the account holding the streams (jetstream.same_account): JetStream will publish its answers"
        )),
        "{warnings:?}"
    );
    // Placeholders never put `_` or `$` first, and {{inbox}} begins a
    // subject or is refused.
    let msg = error_for(&good().replace(
        "sub.allow = [\"orders.>\"]",
        "sub.allow = [\"users.{{inbox}}.>\"]",
    ));
    assert!(msg.contains("must begin the subject"), "{msg}");
}

/// A config knows the digest of the text it was read from, which the
/// reload watch starts from (not the file's content when the watch
/// begins, which an edit in between would already have changed).
#[test]
fn a_config_remembers_the_digest_of_its_text() {
    use sha2::Digest;
    let d = Dir::new();
    let c = Config::load(&d.write(&good())).unwrap();
    let expected: [u8; 32] = sha2::Sha256::digest(good().as_bytes()).into();
    assert_eq!(c.digest, expected);
    let other = Config::load(&d.write(&format!("{}\n# edited\n", good()))).unwrap();
    assert_ne!(other.digest, c.digest);
}

/// Back-channel logouts are addressed to the client ids of
/// `oidc.logout_audience`, the access tokens' audience unless set.
#[test]
fn logout_audience_defaults_to_the_audience_and_may_be_a_list() {
    let d = Dir::new();
    let c = Config::load(&d.write(&good())).unwrap();
    assert_eq!(
        c.oidc[0].settings.logout_audience,
        c.oidc[0].settings.audience
    );
    for (value, expected) in [
        ("\"portal\"", vec!["portal"]),
        ("[\"portal\", \"admin-ui\"]", vec!["portal", "admin-ui"]),
    ] {
        let text = good().replace("[oidc]\n", &format!("[oidc]\nlogout_audience = {value}\n"));
        let c = Config::load(&d.write(&text)).unwrap();
        assert_eq!(c.oidc[0].settings.logout_audience, expected);
    }
    for empty in ["[]", "\"\"", "[\"portal\", \"\"]"] {
        let msg =
            error_for(&good().replace("[oidc]\n", &format!("[oidc]\nlogout_audience = {empty}\n")));
        assert!(
            msg.contains("oidc.logout_audience: needs at least one non-empty audience"),
            "{msg}"
        );
    }
}

/// The back-channel logout endpoint is off unless configured, and never
/// shares the operations endpoint's listener.
#[test]
fn the_backchannel_endpoint_is_off_unless_configured_on_a_listener_of_its_own() {
    let d = Dir::new();
    let c = Config::load(&d.write(&good())).unwrap();
    assert_eq!(c.revocation.backchannel_listen, None);
    let with = |section: &str| format!("{}\n{section}\n", good());
    let c = Config::load(&d.write(&with("[revocation]"))).unwrap();
    assert_eq!(c.revocation.backchannel_listen, None);
    let c = Config::load(&d.write(&with(
        "[revocation]\nkv_bucket = \"revocations\"\nbackchannel_listen = \"127.0.0.1:8081\"",
    )))
    .unwrap();
    assert_eq!(
        c.revocation.backchannel_listen,
        Some("127.0.0.1:8081".parse().unwrap())
    );
    assert_eq!(c.revocation.kv_bucket.as_deref(), Some("revocations"));
    assert_eq!(
        c.revocation.max_token_lifetime,
        std::time::Duration::from_secs(24 * 3600)
    );
    let msg = error_for(&with(
        "[revocation]\nbackchannel_listen = \"127.0.0.1:8081\"",
    ));
    assert!(
        msg.contains("revocation.backchannel_listen: needs revocation.kv_bucket"),
        "a logout endpoint that revokes nothing: {msg}"
    );
    let msg = error_for(&with("[revocation]\nkv_bucket = \"a.b\""));
    assert!(
        msg.contains("revocation.kv_bucket: a KV bucket name"),
        "{msg}"
    );
    let msg = error_for(&with(
        "[revocation]\nkv_bucket = \"r\"\nmax_token_lifetime = \"10s\"",
    ));
    assert!(
        msg.contains("revocation.max_token_lifetime") && msg.contains("between 1m and 30 days"),
        "{msg}"
    );
    let msg = error_for(&with("[revocation]\nbackchannel_listen = \"localhost\""));
    assert!(
        msg.contains("revocation.backchannel_listen: \"localhost\" is not an address"),
        "{msg}"
    );
    let msg = error_for(&with(
        "[http]\nlisten = \"127.0.0.1:8080\"\n[revocation]\nbackchannel_listen = \"127.0.0.1:8080\"",
    ));
    assert!(msg.contains("is also http.listen"), "{msg}");
    let msg = error_for(&with("[revocation]\nbackchannel = \"127.0.0.1:8081\""));
    assert!(msg.contains("unknown field `backchannel`"), "{msg}");
}

/// Revocation requests over NATS are off unless a subject is configured:
/// one literal subject of the service's own, and only with the revocation
/// list they write into.
#[test]
fn the_revocation_request_subject_is_one_literal_subject_and_needs_the_bucket() {
    let d = Dir::new();
    let with = |keys: &str| format!("{}\n[revocation]\n{keys}\n", good());
    let c = Config::load(&d.write(&with("kv_bucket = \"revocations\""))).unwrap();
    assert_eq!(c.revocation.request_subject, None);
    let c = Config::load(&d.write(&with(
        "kv_bucket = \"revocations\"\nrequest_subject = \"nats-oidc-callout.revoke\"",
    )))
    .unwrap();
    assert_eq!(
        c.revocation.request_subject.as_deref(),
        Some("nats-oidc-callout.revoke")
    );
    let msg = error_for(&with("request_subject = \"nats-oidc-callout.revoke\""));
    assert!(
        msg.contains("revocation.request_subject: needs revocation.kv_bucket"),
        "requests that revoke nothing: {msg}"
    );
    for (subject, says) in [
        ("admin.*", "has a wildcard"),
        ("admin.>", "has a wildcard"),
        ("admin..revoke", "empty token"),
        ("", "empty subject"),
        ("admin revoke", "whitespace"),
        ("admin.re*", "wildcards must stand alone"),
        ("$SYS.REQ.USER.AUTH", "among the subjects NATS uses itself"),
        ("$KV.revocations.x", "among the subjects NATS uses itself"),
        ("_INBOX.revoke", "among the subjects NATS uses itself"),
    ] {
        let msg = error_for(&with(&format!(
            "kv_bucket = \"revocations\"\nrequest_subject = \"{subject}\""
        )));
        assert!(
            msg.contains("revocation.request_subject") && msg.contains(says),
            "{subject:?}: {msg}"
        );
    }
}
