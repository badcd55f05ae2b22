//! Workload identities: `[[bindings]]` and `require_claims`, through a real
//! nats-server, with tokens shaped as GitHub Actions, Kubernetes and Google
//! Cloud mint them (claims as the platforms document them; each signed by a
//! test issuer standing in for the platform's).

mod common;

use std::time::Duration;

use common::fixtures;
use common::*;
use jsonwebtoken::{Algorithm, Header};
use nats_oidc_callout::dev::DevIssuer;
use serde_json::{json, Value};

struct Platforms {
    github: DevIssuer,
    cluster: DevIssuer,
    gcp: DevIssuer,
}

fn config(p: &Platforms) -> String {
    format!(
        r#"
[[oidc]]
name = "github"
issuer = "{github}"
audience = "{AUDIENCE}"
require_claims = {{ repository_owner = "acme", repository_owner_id = 65 }}
jwks_refetch_cooldown = "2s"

[[oidc]]
name = "cluster"
issuer = "{cluster}"
audience = "{AUDIENCE}"
jwks_refetch_cooldown = "2s"

[[oidc]]
name = "gcp"
issuer = "{gcp}"
audience = "{AUDIENCE}"
user_claim = "email"
jwks_refetch_cooldown = "2s"
"#,
        github = p.github.issuer(),
        cluster = p.cluster.issuer(),
        gcp = p.gcp.issuer(),
    )
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signed as the platforms sign: RS256, `typ: JWT`.
fn sign(issuer: &DevIssuer, claims: &Value) -> String {
    let kid = issuer.current_kid(Algorithm::RS256);
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = Some(kid.clone());
    issuer.sign_with_header(&kid, header, claims)
}

/// A GitHub Actions job token for acme/orders on main, deploy workflow;
/// `edit` changes it into a near miss.
fn github_token(p: &Platforms, edit: impl FnOnce(&mut Value)) -> String {
    let t = now();
    let mut c = json!({
        "jti": "1fd6c2d2-5b8e-4bd3-9f2a-0c4f0f6c9a11",
        "sub": "repo:acme/orders:ref:refs/heads/main",
        "aud": AUDIENCE,
        "ref": "refs/heads/main",
        "sha": "d6cd1e2bd19e03a81132a23b2025920577f84e37",
        "repository": "acme/orders",
        "repository_owner": "acme",
        "repository_owner_id": "65",
        "repository_id": "74",
        "repository_visibility": "private",
        "actor": "octocat",
        "actor_id": "12",
        "run_id": "8412345678",
        "run_number": "10",
        "run_attempt": "1",
        "runner_environment": "github-hosted",
        "workflow": "deploy",
        "head_ref": "",
        "base_ref": "",
        "event_name": "push",
        "ref_type": "branch",
        "workflow_ref": "acme/orders/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/orders/.github/workflows/deploy.yml@refs/heads/main",
        "iss": p.github.issuer(),
        "nbf": t,
        "iat": t,
        "exp": t + 300,
    });
    edit(&mut c);
    sign(&p.github, &c)
}

/// A projected service-account token (audience `nats`) of pod
/// `orders/<name>` in namespace `ns`.
fn pod_token(p: &Platforms, ns: &str, account: &str) -> String {
    let t = now();
    sign(
        &p.cluster,
        &json!({
            "aud": [AUDIENCE],
            "exp": t + 3600,
            "iat": t,
            "nbf": t,
            "iss": p.cluster.issuer(),
            "jti": "0d5f1d7e-6c3a-4a4e-9a0f-3f4b1c2d3e4f",
            "kubernetes.io": {
                "namespace": ns,
                "node": {"name": "node-1", "uid": "6d1b7a2e-1111-4c5d-8e9f-000000000001"},
                "pod": {"name": format!("{account}-7d9f8b6c5-x2x4q"), "uid": "6d1b7a2e-2222-4c5d-8e9f-000000000002"},
                "serviceaccount": {"name": account, "uid": "6d1b7a2e-3333-4c5d-8e9f-000000000003"}
            },
            "sub": format!("system:serviceaccount:{ns}:{account}"),
        }),
    )
}

/// A Google ID token of a service account, from the metadata server with
/// `format=full`.
fn gcp_token(p: &Platforms, sub: &str) -> String {
    let t = now();
    sign(
        &p.gcp,
        &json!({
            "aud": AUDIENCE,
            "azp": sub,
            "email": "orders-exporter@acme-prod.iam.gserviceaccount.com",
            "email_verified": true,
            "exp": t + 3600,
            "iat": t,
            "iss": p.gcp.issuer(),
            "sub": sub,
            "google": {"compute_engine": {
                "instance_creation_timestamp": 1_700_000_000u64,
                "instance_id": "4567890123456789012",
                "instance_name": "exporter-1",
                "project_id": "acme-prod",
                "project_number": 123456789012u64,
                "zone": "europe-west1-b"
            }}
        }),
    )
}

async fn start() -> (Platforms, Stack, u16) {
    let p = Platforms {
        github: DevIssuer::start(0).await.unwrap(),
        cluster: DevIssuer::start(0).await.unwrap(),
        gcp: DevIssuer::start(0).await.unwrap(),
    };
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let service = CalloutService::start(
        &nats.url(),
        "unused",
        &keys,
        ServiceOptions {
            oidc: Some(config(&p)),
            roles: fixtures::WORKLOAD_ROLES.into(),
            http_port: Some(0),
            ..Default::default()
        },
    )
    .await;
    let port = service.http_port();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count_in_log(&service.log, "issuer keys loaded") < 3 {
        assert!(std::time::Instant::now() < deadline, "the issuers' keys");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unused = DevIssuer::start(0).await.unwrap();
    let stack = Stack {
        issuer: unused,
        keys,
        nats,
        service,
        operator: None,
    };
    (p, stack, port)
}

async fn refused_with(stack: &Stack, token: String, code: &str, case: &str) {
    assert_refused_as(stack, code, case, connect(&stack.url(), &token)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_workload_gets_its_bound_role_at_the_server() {
    let (p, stack, port) = start().await;

    let deployer = connect(&stack.url(), &github_token(&p, |_| {}))
        .await
        .expect("the deploy job of acme/orders on main");
    let worker = connect(&stack.url(), &pod_token(&p, "orders", "worker"))
        .await
        .expect("the orders worker pod");
    let exporter = connect(&stack.url(), &gcp_token(&p, "110011223344556677889"))
        .await
        .expect("the exporter's service account");
    assert!(delivered(&deployer.client, &worker.client, "deploy.orders").await);
    assert!(not_delivered(&deployer.client, &worker.client, "orders.new").await);
    assert!(delivered(&exporter.client, &worker.client, "metrics.orders").await);
    // The worker pod matches its exact binding and the broad one.
    let log = stack.service.log_text();
    for line in [
        "roles=[\"github:deployer\"] scopes=[] account=APP bindings=[\"orders-deploy\"]",
        "bindings=[\"cluster[1]\",\"orders-pods\"]",
        "user=orders-exporter@acme-prod.iam.gserviceaccount.com issuer=gcp roles=[\"gcp:exporter\"]",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }

    // Another pod of the namespace gets only what the broad binding gives.
    let reader = connect(&stack.url(), &pod_token(&p, "orders", "reporting"))
        .await
        .expect("any service account of namespace orders");
    assert!(delivered(&worker.client, &reader.client, "orders.new").await);
    assert!(not_delivered(&reader.client, &worker.client, "orders.fake").await);

    // A near miss of a binding and a token of another organisation are
    // refused by nats-server for the service's reasons (every near miss is
    // decided in-process in `decisions.rs`).
    refused_with(
        &stack,
        github_token(&p, |c| c["ref"] = json!("refs/heads/dev")),
        "no_mapped_role",
        "another branch",
    )
    .await;
    refused_with(
        &stack,
        github_token(&p, |c| c["repository_owner"] = json!("evil")),
        "required_claim",
        "another organisation",
    )
    .await;
    let log = stack.service.log_text();
    assert!(
        log.contains(
            "reason=issuer github requires it: claim repository_owner is \"evil\" (wanted repository_owner = \"acme\")"
        ),
        "{log}"
    );

    let (_, metrics) = http_get(port, "/metrics").await;
    for line in [
        "nats_oidc_callout_binding_admissions_total{binding=\"orders-deploy\"} 1",
        "nats_oidc_callout_binding_admissions_total{binding=\"cluster[1]\"} 1",
        "nats_oidc_callout_binding_admissions_total{binding=\"orders-pods\"} 2",
        "nats_oidc_callout_binding_admissions_total{binding=\"gcp[3]\"} 1",
        "nats_oidc_callout_authorizations_total{result=\"refused\",reason=\"required_claim\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_shows_which_bindings_matched_and_why_the_others_did_not() {
    let (p, stack, _) = start().await;
    let config = stack.service.config.clone();
    let token = github_token(&p, |c| c["ref"] = json!("refs/heads/dev"));
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let t = output_text(&out);
    assert!(!out.status.success(), "{t}");
    for line in [
        "bindings of issuer github:",
        "  orders-deploy -> [\"github:deployer\"]: no match: claim ref is \"refs/heads/dev\" (wanted ref = \"refs/heads/main\")",
        "no [[bindings]] entry matched its claims [no_mapped_role]",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }

    let config = stack.service.config.clone();
    let token = pod_token(&p, "orders", "worker");
    let out = tokio::task::spawn_blocking(move || explain_stdin(&config, &token))
        .await
        .unwrap();
    let t = output_text(&out);
    assert!(out.status.success(), "{t}");
    for line in [
        "bindings of issuer cluster:",
        "  cluster[1] -> [\"cluster:orders-worker\"]: matched",
        "  orders-pods (broad) -> [\"cluster:orders-reader\"]: matched",
        "mapped:   [\"cluster:orders-reader\", \"cluster:orders-worker\"]",
    ] {
        assert!(t.contains(line), "missing {line:?} in\n{t}");
    }
}
