//! What the grant suites (`jetstream.rs` with async-nats, `clients.rs` with
//! nats-py) start from: one role per grant, and the streams and buckets
//! they are tried on; the workload identities' roles and bindings.

use async_nats::jetstream::{consumer, kv, stream, Context};

/// One role per grant of the README's grant table, and the roles the
/// request/reply and websocket cases use, in the README's recommended
/// layout: the streams and buckets live in DATA, where only `admin` is
/// placed; every other role's users land in APP, which imports what the
/// grants need, and get their replies on a private inbox.
pub const GRANT_ROLES: &str = r#"
[jetstream]
account = "DATA"
stream_subjects = ["orders.>"]

[roles.admin]
account = "DATA"
pub.allow = [">"]
sub.allow = [">"]

[roles.worker]
sub.allow = ["{{inbox}}.>"]
jetstream.consume = ["ORDERS/worker"]

[roles.reader]
sub.allow = ["{{inbox}}.>"]
jetstream.read = ["ORDERS"]

[roles.replayer]
sub.allow = ["{{inbox}}.>"]
jetstream.replay = ["ORDERS"]

[roles.ops]
sub.allow = ["{{inbox}}.>"]
jetstream.manage = ["SCRATCH"]

[roles.profile]
sub.allow = ["{{inbox}}.>"]
kv.read = ["config", "profiles/{{name}}.>"]
kv.write = ["profiles/{{name}}.>"]

[roles.requester]
pub.allow = ["svc.>"]
sub.allow = ["{{inbox}}.>"]

[roles.service]
sub.allow = ["svc.echo"]
resp = { max = 1, ttl = "1m" }

[roles.browser]
pub.allow = ["web.>"]
sub.allow = ["web.>", "{{inbox}}.>"]
connection.types = ["WEBSOCKET"]

[roles.app-admin]
pub.allow = [">"]
sub.allow = [">"]
"#;

/// The roles of the workload identities (`bindings.rs`, `decisions.rs`):
/// GitHub Actions, a Kubernetes cluster and Google Cloud, each issuer in its
/// own namespace, with the `[[bindings]]` that give them.
pub const WORKLOAD_ROLES: &str = r#"
[roles."github:deployer"]
pub.allow = ["deploy.orders"]

[roles."cluster:orders-worker"]
pub.allow = ["orders.>"]
sub.allow = ["orders.>", "deploy.>", "metrics.>"]

[roles."cluster:orders-reader"]
sub.allow = ["orders.>"]

[roles."gcp:exporter"]
pub.allow = ["metrics.orders"]

# The stand-in issuer's URL is not GitHub's, so repository_id pins nothing
# here (the unit tests cover GitHub's pins); sub does.
[[bindings]]
name = "orders-deploy"
issuer = "github"
match = { sub = "repo:acme/orders:ref:refs/heads/main", repository_id = 74, ref = "refs/heads/main", job_workflow_ref = "acme/orders/.github/workflows/deploy.yml@refs/heads/main" }
roles = ["deployer"]

[[bindings]]
issuer = "cluster"
match = { sub = "system:serviceaccount:orders:worker" }
roles = ["orders-worker"]

[[bindings]]
name = "orders-pods"
issuer = "cluster"
match = { "/kubernetes.io/namespace" = "orders", sub = "system:serviceaccount:orders:*" }
roles = ["orders-reader"]
broad = true

[[bindings]]
issuer = "gcp"
match = { sub = "110011223344556677889" }
roles = ["exporter"]
"#;

/// ORDERS (orders.>, direct get on) with two messages and the durable pull
/// consumers `worker` and `other`.
pub async fn orders(admin: &Context) {
    let stream = admin
        .create_stream(stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            allow_direct: true,
            ..Default::default()
        })
        .await
        .expect("admin creates ORDERS");
    for durable in ["worker", "other"] {
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(durable.into()),
                ..Default::default()
            })
            .await
            .expect("admin creates the consumers");
    }
    for (subject, body) in [("orders.new", "first"), ("orders.paid", "second")] {
        admin
            .publish(subject, body.into())
            .await
            .unwrap()
            .await
            .expect("stored");
    }
}

/// The KV buckets `config` (key `theme` = "dark") and `profiles` (key
/// `bob.email`, someone else's).
pub async fn buckets(admin: &Context) {
    let config = admin
        .create_key_value(kv::Config {
            bucket: "config".into(),
            history: 5,
            ..Default::default()
        })
        .await
        .expect("admin creates config");
    config.put("theme", "dark".into()).await.unwrap();
    let profiles = admin
        .create_key_value(kv::Config {
            bucket: "profiles".into(),
            ..Default::default()
        })
        .await
        .expect("admin creates profiles");
    profiles
        .put("bob.email", "bob@example.com".into())
        .await
        .unwrap();
}
