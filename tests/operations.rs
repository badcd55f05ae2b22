//! The operations endpoint, queried over real HTTP while the service runs.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_reflect_what_happened() {
    let stack = Stack::start(ServiceOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let port = stack.service.http_port();
    assert_eq!(http_get(port, "/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"ready\":true"), "{body}");
    assert!(body.contains("\"issuers\":{\"default\":true}"), "{body}");

    connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    assert_refused(&stack.url(), &stack.token("gus", &["guest"]), "unmapped").await;
    assert_refused(&stack.url(), "not-a-token", "garbage").await;

    let (status, metrics) = http_get(port, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "nats_oidc_callout_authorizations_total{result=\"allowed\",reason=\"ok\"} 1",
        "nats_oidc_callout_authorizations_total{result=\"refused\",reason=\"no_mapped_role\"} 1",
        "nats_oidc_callout_authorizations_total{result=\"refused\",reason=\"token_malformed\"} 1",
        "nats_oidc_callout_decision_duration_seconds_count 3",
        "nats_oidc_callout_jwks_fetches_total{issuer=\"default\",result=\"success\"} 1",
        "nats_oidc_callout_jwks_keys{issuer=\"default\"} 2",
        "nats_oidc_callout_nats_connected 1",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(
        metrics.contains(
            "nats_oidc_callout_jwks_last_success_timestamp_seconds{issuer=\"default\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_without_issuer_keys_then_ready() {
    let issuer = DevIssuer::start(0).await.unwrap();
    issuer.set_available(false);
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let opts = ServiceOptions {
        http_port: Some(0),
        wait_for_keys: false,
        ..Default::default()
    };
    let service = CalloutService::start(&nats.url(), &issuer.issuer(), &keys, opts).await;
    let port = service.http_port();

    let (status, body) = http_get(port, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("\"issuer_keys\":false") && body.contains("\"nats_connected\":true"),
        "{body}"
    );
    assert_eq!(
        http_get(port, "/healthz").await.0,
        200,
        "alive while not ready"
    );
    let (_, metrics) = http_get(port, "/metrics").await;
    assert!(
        metrics.contains(
            "nats_oidc_callout_jwks_fetches_total{issuer=\"default\",result=\"failure\"}"
        ),
        "{metrics}"
    );

    issuer.set_available(true);
    wait_for_log(&service.log, "issuer keys loaded", Duration::from_secs(20)).await;
    assert_eq!(http_get(port, "/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_while_nats_is_down() {
    let mut stack = Stack::start(ServiceOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let port = stack.service.http_port();
    assert_eq!(http_get(port, "/readyz").await.0, 200);
    stack.nats.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = http_get(port, "/readyz").await;
        if status == 503 {
            assert!(body.contains("\"nats_connected\":false"), "{body}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still ready with NATS down: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("nats_oidc_callout_nats_connected 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_http_port_is_a_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let keys = CalloutKeys::new();
    let (_dir, config) = minimal_config(&keys, "http://127.0.0.1:1", |c| {
        c.section(&format!("[http]\nlisten = \"127.0.0.1:{port}\""))
    });
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nats-oidc-callout"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http.listen 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_as_a_nats_micro_service() {
    let stack = Stack::start(ServiceOptions::default()).await;
    connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    assert_refused(&stack.url(), &stack.token("gus", &["guest"]), "unmapped").await;
    // The callout's own account can see it the way `nats micro ls/stats` does.
    let ops = callout_user(&stack.url()).await;
    let ping = ops
        .request("$SRV.PING.nats-oidc-callout", "".into())
        .await
        .expect("answers ping");
    let ping: serde_json::Value = serde_json::from_slice(&ping.payload).unwrap();
    assert_eq!(ping["name"], "nats-oidc-callout");
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));

    let stats = ops
        .request("$SRV.STATS.nats-oidc-callout", "".into())
        .await
        .expect("answers stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.payload).unwrap();
    let endpoint = &stats["endpoints"][0];
    assert_eq!(endpoint["name"], "authorize");
    assert_eq!(endpoint["subject"], "$SYS.REQ.USER.AUTH");
    assert_eq!(endpoint["num_requests"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_structured_line_per_decision() {
    let stack = Stack::start(ServiceOptions {
        json_logs: true,
        ..Default::default()
    })
    .await;
    let good = stack.token("ana", &["admin", "reader"]);
    connect(&stack.url(), &good).await.unwrap();
    assert_refused(&stack.url(), &stack.token("gus", &["guest"]), "unmapped").await;
    wait_for_log(&stack.service.log, "no_mapped_role", Duration::from_secs(5)).await;
    let mut decisions = Vec::new();
    for line in log_lines(&stack.service.log) {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["message"] == "authorization" {
            decisions.push(v);
        }
    }
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["result"], "allowed");
    assert_eq!(decisions[0]["user"], "ana");
    // Lists are JSON arrays, so a collector can filter on one role.
    assert_eq!(
        decisions[0]["roles"],
        serde_json::json!(["admin", "reader"]),
        "{:?}",
        decisions[0]
    );
    assert_eq!(decisions[0]["scopes"], serde_json::json!([]));
    assert!(decisions[0]["timestamp"].is_string());
    assert_eq!(decisions[0]["level"], "INFO");
    assert_eq!(decisions[0]["target"], "nats_oidc_callout::callout");
    assert!(decisions[0]["latency_us"].is_u64());
    assert_eq!(decisions[1]["result"], "refused");
    assert_eq!(decisions[1]["code"], "no_mapped_role");
    assert!(decisions[1]["reason"].as_str().unwrap().contains("guest"));
    assert!(!stack.service.log_text().contains(&good));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_decisions_in_flight() {
    let mut stack = Stack::start(ServiceOptions::default()).await;
    // A token signed by a key the service has not seen yet makes it fetch the
    // JWKS, which the issuer now answers only after 0.7 s: within the 1 s a
    // request waits for a refetch (REFETCH_WAIT), after the SIGTERM below.
    let kid = stack.issuer.add_key(jsonwebtoken::Algorithm::RS256, true);
    let token = stack
        .issuer
        .sign(&kid, &stack.issuer.claims("ana", AUDIENCE, &["admin"], 300));
    stack.issuer.set_jwks_delay(Duration::from_millis(700));
    let url = stack.url();
    let pending = tokio::spawn(async move { connect(&url, &token).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stack.service.log_text().contains("result=\"allowed\""),
        "still deciding when SIGTERM comes"
    );
    let status = tokio::task::block_in_place(|| stack.service.terminate());
    assert!(status.success(), "{status}");
    pending
        .await
        .unwrap()
        .expect("the request in flight at SIGTERM was still answered");
}

/// A client reconnecting with the token it used before (every client after a
/// nats-server restart) is answered from the token cache: counted in
/// /metrics, with the same grants each time. With `token_cache_bytes = 0`
/// nothing is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_the_same_token_is_answered_from_the_token_cache() {
    for (cache, expected_hits) in [("", 2), ("token_cache_bytes = 0", 0)] {
        let stack = Stack::start(ServiceOptions {
            http_port: Some(0),
            extra_oidc: cache.into(),
            ..Default::default()
        })
        .await;
        let port = stack.service.http_port();
        let reader = stack.token("ana", &["reader"]);
        let writer = connect(&stack.url(), &stack.token("bob", &["writer"]))
            .await
            .unwrap();
        for _ in 0..3 {
            let client = connect(&stack.url(), &reader).await.unwrap();
            assert!(
                delivered(&writer.client, &client.client, "orders.new").await,
                "{cache:?}"
            );
            assert!(
                not_delivered(&writer.client, &client.client, "orders.secret.x").await,
                "{cache:?}"
            );
        }
        let (_, metrics) = http_get(port, "/metrics").await;
        let line = format!("nats_oidc_callout_token_cache_hits_total {expected_hits}\n");
        assert!(
            metrics.contains(&line),
            "{cache:?}: missing {line:?} in\n{metrics}"
        );
    }
}

/// The keys are read again every `jwks_max_age`; when the issuer publishes
/// the same document, the tokens that verified stay remembered (a changed
/// key set would take them out): a reconnect after a refresh is still a
/// cache hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_reads_the_same_keys_keeps_the_tokens_remembered() {
    let stack = Stack::start(ServiceOptions {
        http_port: Some(0),
        extra_oidc: "jwks_max_age = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let port = stack.service.http_port();
    let token = stack.token("ana", &["reader"]);
    connect(&stack.url(), &token).await.expect("first connect");
    let fetches = stack.issuer.jwks_requests();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stack.issuer.jwks_requests() < fetches + 2 {
        assert!(std::time::Instant::now() < deadline, "no refresh happened");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    connect(&stack.url(), &token)
        .await
        .expect("after the refreshes");
    let (_, metrics) = http_get(port, "/metrics").await;
    assert!(
        metrics.contains("nats_oidc_callout_token_cache_hits_total 1\n"),
        "the reconnect after two refreshes of the same keys was not a cache hit:\n{metrics}"
    );
}

/// A remembered token is never taken at or past its `exp`: the reconnect
/// after expiry is refused as expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remembered_token_is_refused_once_it_expires() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let token = stack.issuer.token("ana", AUDIENCE, &["admin"], 2);
    connect(&stack.url(), &token).await.expect("before exp");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_refused(&stack.url(), &token, "expired but remembered").await;
    wait_for_log(
        &stack.service.log,
        "code=\"token_expired\"",
        Duration::from_secs(5),
    )
    .await;
}

/// `/metrics` answers in the format the scraper asks for: OpenMetrics to
/// Prometheus (which asks for it first), the Prometheus text format 0.0.4
/// to everyone else. Both name HELP and TYPE for every family, and the
/// text format passes `promtool check metrics` (when promtool is
/// installed: `apt-get install prometheus`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_in_the_format_asked_for_and_pass_promtool() {
    let stack = Stack::start(ServiceOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let port = stack.service.http_port();
    connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .unwrap();
    assert_refused(&stack.url(), "not-a-token", "garbage").await;
    let get = |accept: Option<&'static str>| async move {
        let mut request = reqwest::Client::new().get(format!("http://127.0.0.1:{port}/metrics"));
        if let Some(a) = accept {
            request = request.header("Accept", a);
        }
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), 200);
        let content_type = r.headers()["content-type"].to_str().unwrap().to_string();
        (content_type, r.text().await.unwrap())
    };
    // What Prometheus 2.x sends.
    let (ct, openmetrics) = get(Some(
        "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ))
    .await;
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(
        openmetrics.contains("# TYPE nats_oidc_callout_authorizations counter"),
        "{openmetrics}"
    );
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (ct, text) = get(accept).await;
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "{accept:?}: {ct}"
        );
        assert!(!text.contains("# EOF"), "{accept:?}: {text}");
        for line in [
            "# HELP nats_oidc_callout_authorizations_total ",
            "# TYPE nats_oidc_callout_authorizations_total counter",
            "# HELP nats_oidc_callout_token_cache_hits_total ",
            "# TYPE nats_oidc_callout_xkey_mismatches_total counter",
            "# TYPE nats_oidc_callout_decision_duration_seconds histogram",
            "nats_oidc_callout_authorizations_total{result=\"allowed\",reason=\"ok\"} 1",
            "nats_oidc_callout_nats_connected 1",
        ] {
            assert!(
                text.contains(line),
                "{accept:?}: missing {line:?} in\n{text}"
            );
        }
    }
    let (_, text) = get(None).await;
    match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Err(e) => {
            eprintln!("NOTICE: promtool not run ({e}); `apt-get install prometheus` installs it")
        }
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics failed:\n{}\non:\n{text}",
                output_text(&out)
            );
        }
    }
}
