//! Several identity providers behind one callout: `[[oidc]]` blocks, each with
//! its own audience, claim paths and role namespace, through a real
//! nats-server, and `explain` with them. Which issuer judges which token is
//! decided in-process in `decisions.rs`.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use nats_oidc_callout::dev::DevIssuer;
use serde_json::json;

const PARTNER_AUDIENCE: &str = "partner-nats";

fn two_issuers(corp: &DevIssuer, partner: &DevIssuer) -> String {
    format!(
        r#"
[[oidc]]
name = "corp"
issuer = "{corp}"
audience = "{AUDIENCE}"
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
jwks_refetch_cooldown = "2s"

[[oidc]]
name = "partner"
issuer = "{partner}"
audience = "{PARTNER_AUDIENCE}"
roles_claim = "groups"
user_claim = "sub"
jwks_refetch_cooldown = "2s"
"#,
        corp = corp.issuer(),
        partner = partner.issuer()
    )
}

const NAMESPACED_ROLES: &str = r#"
[roles."corp:admin"]
pub.allow = [">"]
sub.allow = [">"]

[roles."partner:reader"]
pub.allow = ["_INBOX.>"]
sub.allow = ["partner.>", "_INBOX.>"]
"#;

/// A partner token: roles in `groups`, its own audience.
fn partner_token(partner: &DevIssuer, user: &str, groups: &[&str]) -> String {
    let mut claims = partner.claims(user, PARTNER_AUDIENCE, &[], 300);
    claims["groups"] = json!(groups);
    partner.sign(&partner.current_kid(Algorithm::RS256), &claims)
}

async fn refused_with(stack: &Stack, token: &str, code: &str, case: &str) {
    assert_refused_as(stack, code, case, connect(&stack.url(), token)).await;
}

async fn start(corp: &DevIssuer, partner: &DevIssuer, http_port: Option<u16>) -> Stack {
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let service = CalloutService::start(
        &nats.url(),
        "unused",
        &keys,
        ServiceOptions {
            oidc: Some(two_issuers(corp, partner)),
            roles: NAMESPACED_ROLES.into(),
            http_port,
            ..Default::default()
        },
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count_in_log(&service.log, "issuer keys loaded") < 2 {
        assert!(std::time::Instant::now() < deadline, "both issuers' keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // `Stack` owns an issuer for its `token` helper; the tests here use
    // their own two, so it gets a third nobody trusts.
    let unused = DevIssuer::start(0).await.unwrap();
    Stack {
        issuer: unused,
        keys,
        nats,
        service,
        operator: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_issuer_admits_its_own_users_under_its_own_rules() {
    let corp = DevIssuer::start(0).await.unwrap();
    let partner = DevIssuer::start(0).await.unwrap();
    let port = free_port();
    let stack = start(&corp, &partner, Some(port)).await;

    let admin = connect(&stack.url(), &corp.token("ana", AUDIENCE, &["admin"], 300))
        .await
        .expect("a corp admin connects");
    let guest = connect(&stack.url(), &partner_token(&partner, "pia", &["reader"]))
        .await
        .expect("a partner reader connects");
    assert!(delivered(&admin.client, &guest.client, "partner.news").await);
    assert!(
        not_delivered(&admin.client, &guest.client, "orders.new").await,
        "the partner's role grants only partner.>"
    );
    let log = stack.service.log_text();
    assert!(
        log.contains("user=ana issuer=corp") && log.contains("user=user-pia issuer=partner"),
        "each decision names its issuer and uses its user claim:\n{log}"
    );

    // The partner's identity provider cannot mint corp's roles: its "admin"
    // is looked up as partner:admin, which does not exist.
    refused_with(
        &stack,
        &partner_token(&partner, "mallory", &["admin", "corp:admin"]),
        "no_mapped_role",
        "partner token claiming admin",
    )
    .await;
    // Each issuer's own audience and claim paths are decided in-process
    // (`decisions.rs`).

    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"issuers\":{\"corp\":true,\"partner\":true}"),
        "{body}"
    );
}

fn explain(config: &std::path::Path, token: &str) -> (bool, String) {
    let out = explain_stdin(config, token);
    (out.status.success(), output_text(&out))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_judges_a_token_by_the_issuer_it_names() {
    let corp = DevIssuer::start(0).await.unwrap();
    let partner = DevIssuer::start(0).await.unwrap();
    let stack = start(&corp, &partner, None).await;
    let stranger = DevIssuer::start(0).await.unwrap();
    let config = stack.service.config.clone();
    let token = partner_token(&partner, "pia", &["reader"]);
    let forged = stranger.token("eve", AUDIENCE, &["admin"], 300);
    let ((ok, text), (refused_ok, refused)) =
        tokio::task::spawn_blocking(move || (explain(&config, &token), explain(&config, &forged)))
            .await
            .unwrap();
    assert!(ok, "{text}");
    for expected in [
        &format!("issuer:   {} (partner)", partner.issuer()),
        "user:     user-pia (from sub)",
        "roles:    [\"reader\"] (from groups)",
        "namespace: partner",
        "mapped:   [\"partner:reader\"]",
        "verdict:  ALLOWED",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!refused_ok, "{refused}");
    assert!(
        refused.contains("none of the configured issuers") && refused.contains("[token_issuer]"),
        "{refused}"
    );
    assert_eq!(stranger.jwks_requests() + stranger.discovery_requests(), 0);
}
