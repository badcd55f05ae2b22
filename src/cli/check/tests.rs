//! Each lint against its own example, and the base config against all.

use std::path::Path;

use super::{warnings, LINTS};
use crate::config::Config;

const NATS: &str =
    "[nats]\nurl = \"nats://127.0.0.1:4222\"\nuser = \"auth\"\npassword = \"authpw\"\n\n";
const CALLOUT: &str = "[callout]\naccount = \"APP\"\nauth_account = \"AUTH\"\nissuer_seed_file = \"issuer.nk\"\nxkey_seed_file = \"xkey.nk\"\n\n";
const OIDC: &str = "[oidc]\nissuer = \"https://idp.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\n\n";
const ROLE: &str = "[roles.reader]\nsub.allow = [\"orders.>\"]\n\n";

/// The files and keys the examples name.
struct Files {
    dir: tempfile::TempDir,
    vars: Vec<(&'static str, String)>,
}

impl Files {
    fn new() -> Files {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let issuer = nkeys::KeyPair::new_account();
        let app = nkeys::KeyPair::new_account();
        write("issuer.nk", &issuer.seed().unwrap(), 0o600);
        write("exposed.nk", &issuer.seed().unwrap(), 0o644);
        write("xkey.nk", &nkeys::XKey::new().seed().unwrap(), 0o600);
        write("app.nk", &app.seed().unwrap(), 0o600);
        write(
            "app-sk.nk",
            &nkeys::KeyPair::new_account().seed().unwrap(),
            0o600,
        );
        let vars = vec![
            ("{issuer_pub}", issuer.public_key()),
            ("{auth_pub}", nkeys::KeyPair::new_account().public_key()),
            ("{app_pub}", app.public_key()),
            ("{app_seed_file}", "app.nk".into()),
            ("{app_signing_file}", "app-sk.nk".into()),
            ("{exposed_file}", "exposed.nk".into()),
        ];
        Files { dir, vars }
    }

    /// The example, completed with the base config's tables it leaves out.
    fn config(&self, example: &str) -> Result<Config, String> {
        let mut text = if example.contains("[nats]") {
            String::new()
        } else {
            NATS.to_string()
        };
        if !example.contains("[callout]") {
            text.push_str(CALLOUT);
        }
        if !example.contains("[oidc]") && !example.contains("[[oidc]]") {
            text.push_str(OIDC);
        }
        if !example.contains("[roles.reader]") {
            text.push_str(ROLE);
        }
        text.push_str(example);
        for (name, value) in &self.vars {
            text = text.replace(name, value);
        }
        let path = self.dir.path().join("config.toml");
        Config::parse(&text, &path).map_err(|e| format!("{e}\n{text}"))
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn the_base_config_draws_no_warning() {
    let files = Files::new();
    let config = files.config("").unwrap();
    assert_eq!(
        warnings(&config),
        Vec::<String>::new(),
        "in {:?}",
        files.path()
    );
}

#[test]
fn every_lint_fires_on_its_example() {
    let files = Files::new();
    for lint in LINTS {
        let config = files
            .config(lint.example)
            .unwrap_or_else(|e| panic!("lint {}: its example does not load: {e}", lint.name));
        let found = (lint.find)(&config);
        assert!(
            !found.is_empty(),
            "lint {} is silent on its example",
            lint.name
        );
        let all = warnings(&config);
        for w in &found {
            assert!(
                all.contains(w),
                "lint {}: {w:?} not in check's warnings",
                lint.name
            );
        }
    }
}

#[test]
fn lints_have_unique_kebab_case_names_and_docs() {
    let mut names = std::collections::BTreeSet::new();
    for lint in LINTS {
        assert!(names.insert(lint.name), "{} is listed twice", lint.name);
        assert!(
            lint.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
            "{} is not kebab-case",
            lint.name
        );
        assert!(
            lint.doc.ends_with('.'),
            "lint {} has no doc sentence",
            lint.name
        );
    }
}

#[test]
fn a_declared_platform_is_warned_about_only_where_the_url_says_otherwise() {
    let files = Files::new();
    let config = |issuer: &str, platform: &str| {
        files.config(&format!(
            "[oidc]\nissuer = \"{issuer}\"\naudience = \"nats\"\nroles_claim = \"roles\"\nplatform = \"{platform}\"\n"
        ))
    };
    let contradictions = |issuer: &str, platform: &str| {
        (super::issuers::PLATFORM_CONTRADICTS_URL.find)(&config(issuer, platform).unwrap())
    };
    let k8s = "https://kubernetes.default.svc.cluster.local";
    assert_eq!(
        contradictions(k8s, "generic"),
        ["oidc[default]: platform = \"generic\", but its issuer https://kubernetes.default.svc.cluster.local is recognised as Kubernetes: its bindings and require_claims are judged as generic (pins: sub) rather than Kubernetes (pins: sub); leave platform out unless this URL serves another platform's tokens"]
    );
    let github = "https://token.actions.githubusercontent.com";
    for (issuer, platform) in [
        (github, "github"),
        ("https://github.acme.example/oidc", "github"),
        ("https://idp.example.com", "generic"),
        ("https://kubernetes.default.svc", "kubernetes"),
    ] {
        assert_eq!(
            contradictions(issuer, platform),
            Vec::<String>::new(),
            "{issuer} declared {platform}"
        );
    }
    // A declaration that would change the pins or the owner claims of a
    // recognised platform is refused outright.
    for (issuer, platform) in [
        (github, "gitlab"),
        (github, "generic"),
        (github, "kubernetes"),
        ("https://accounts.google.com", "github"),
        ("https://gitlab.com", "generic"),
        (k8s, "github"),
    ] {
        let e = config(issuer, platform)
            .err()
            .unwrap_or_else(|| panic!("{issuer} declared {platform} is accepted"));
        assert!(
            e.contains("oidc.platform") && e.contains("would change which claims pin"),
            "{issuer} declared {platform}: {e}"
        );
    }
}

#[test]
fn a_role_that_can_write_the_session_registry_is_warned_about() {
    let files = Files::new();
    let config = files
        .config(
            "[revocation]\nkv_bucket = \"revocations\"\nsystem_user = \"sys\"\nsystem_password = \"sys\"\n\n[roles.writer]\npub.allow = [\"$KV.revocations_sessions.>\"]\n",
        )
        .unwrap();
    let found = (super::streams::REVOCATION_BUCKET_WRITABLE.find)(&config);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("roles.writer:") && found[0].contains("session registry"),
        "{found:?}"
    );
}

#[test]
fn the_revocation_request_subject_is_warned_about_only_where_users_reach_it() {
    let files = Files::new();
    let found = |roles: &str| {
        let config = files
            .config(&format!(
                "[revocation]\nkv_bucket = \"revocations\"\nrequest_subject = \"admin.revoke\"\n\n{roles}"
            ))
            .unwrap();
        (super::callout::REVOCATION_REQUEST_REACHABLE.find)(&config)
    };
    // Users of APP publishing "admin.revoke" publish into APP, where no
    // one answers.
    assert_eq!(
        found("[roles.reader]\npub.allow = [\">\"]\n"),
        Vec::<String>::new()
    );
    // In the callout's account, only what reaches the subject.
    assert_eq!(
        found(
            "[roles.reader]\naccount = \"AUTH\"\npub.allow = [\"orders.>\", \"admin.revoked\"]\n"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        found("[roles.reader]\naccount = \"AUTH\"\npub.allow = [\"orders.>\", \"*.revoke\"]\n"),
        ["roles.reader places its users in \"AUTH\", the callout's own account, and pub.allow \"*.revoke\" reaches revocation.request_subject \"admin.revoke\": its users can revoke anyone's logins; give publish permission on that subject to the admin only"]
    );
    // Without a request subject, nothing to reach.
    let config = files
        .config("[roles.reader]\naccount = \"AUTH\"\npub.allow = [\">\"]\n")
        .unwrap();
    assert!((super::callout::REVOCATION_REQUEST_REACHABLE.find)(&config).is_empty());
}
