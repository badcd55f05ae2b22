//! Several identity providers behind one callout: `[[oidc]]` blocks, each with
//! its own audience, claim paths and role namespace, through a real
//! nats-server.

mod common;

use std::time::Duration;

use common::*;
use jsonwebtoken::Algorithm;
use nats_oidc_callout::dev::DevIssuer;
use serde_json::{json, Value};

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
    // Each issuer's own audience and claim paths.
    let mut claims = partner.claims("pia", AUDIENCE, &[], 300);
    claims["groups"] = json!(["reader"]);
    refused_with(
        &stack,
        &partner.sign(&partner.current_kid(Algorithm::RS256), &claims),
        "token_audience",
        "partner token for corp's audience",
    )
    .await;
    refused_with(
        &stack,
        &partner.token("pia", PARTNER_AUDIENCE, &["reader"], 300),
        "no_mapped_role",
        "partner token with roles where corp keeps them",
    )
    .await;

    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"issuers\":{\"corp\":true,\"partner\":true}"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_judged_only_by_the_issuer_it_names() {
    let corp = DevIssuer::start(0).await.unwrap();
    let partner = DevIssuer::start(0).await.unwrap();
    let stack = start(&corp, &partner, None).await;
    let stranger = DevIssuer::start(0).await.unwrap();
    let fetches = |i: &DevIssuer| i.jwks_requests() + i.discovery_requests();
    let (corp_before, partner_before) = (fetches(&corp), fetches(&partner));

    // An issuer nobody configured: refused before any key is looked for,
    // however many tokens it sends and whatever kids they name.
    for n in 0..5 {
        let mut claims = stranger.claims("eve", AUDIENCE, &["admin"], 300);
        claims["jti"] = json!(n);
        let kid = stranger.add_key(Algorithm::RS256, true);
        refused_with(
            &stack,
            &stranger.sign(&kid, &claims),
            "token_issuer",
            "unknown issuer",
        )
        .await;
    }
    assert_eq!(
        fetches(&stranger),
        0,
        "the unknown issuer is never contacted"
    );
    assert_eq!(fetches(&corp), corp_before, "nor is corp on its behalf");
    assert_eq!(fetches(&partner), partner_before, "nor is partner");
    assert!(
        stack
            .service
            .log_text()
            .contains("is none of the configured issuers"),
        "the refusal says why"
    );

    // A partner-signed token that claims to come from corp is routed to corp
    // and fails there: one issuer's keys never vouch for another's tokens.
    let mut forged = partner.claims("eve", AUDIENCE, &["admin"], 300);
    forged["iss"] = Value::String(corp.issuer());
    let partner_key = partner.current_kid(Algorithm::RS256);
    let under_kid = |kid: &str| {
        let mut header = jsonwebtoken::Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        partner.sign_with_header(&partner_key, header, &forged)
    };
    refused_with(
        &stack,
        &under_kid("partner-only-kid"),
        "token_unknown_kid",
        "partner key, corp issuer",
    )
    .await;
    // Same under a kid corp does have: the signature does not verify.
    refused_with(
        &stack,
        &under_kid(&corp.current_kid(Algorithm::RS256)),
        "token_signature",
        "partner key under corp's kid",
    )
    .await;

    // The real corp token still works.
    connect(&stack.url(), &corp.token("ana", AUDIENCE, &["admin"], 300))
        .await
        .expect("corp admin");
}

/// `[roles.x]` as written is a shared table: an issuer reaches it only with
/// `role_namespace = ""`, and then only with roles that have no namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_role_table_is_opt_in_and_cannot_reach_namespaced_roles() {
    let corp = DevIssuer::start(0).await.unwrap();
    let partner = DevIssuer::start(0).await.unwrap();
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let oidc = two_issuers(&corp, &partner).replace(
        "name = \"partner\"",
        "name = \"partner\"\nrole_namespace = \"\"",
    );
    let roles = r#"
[roles."corp:admin"]
pub.allow = [">"]
sub.allow = [">"]

[roles.reader]
sub.allow = ["shared.>"]
"#;
    let service = CalloutService::start(
        &nats.url(),
        "unused",
        &keys,
        ServiceOptions {
            oidc: Some(oidc),
            roles: roles.into(),
            ..Default::default()
        },
    )
    .await;
    let stack = Stack {
        issuer: DevIssuer::start(0).await.unwrap(),
        keys,
        nats,
        service,
        operator: None,
    };
    connect(&stack.url(), &partner_token(&partner, "pia", &["reader"]))
        .await
        .expect("the shared reader role");
    refused_with(
        &stack,
        &partner_token(&partner, "mallory", &["corp:admin"]),
        "no_mapped_role",
        "a shared-table issuer naming a namespaced role",
    )
    .await;
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
