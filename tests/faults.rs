//! Faults: a slow or changing issuer, nats-server restarts under load,
//! replicas dying mid-load, and reconnect storms. Every connect must get an
//! answer, and no fault may turn into an allow.
//!
//! (An issuer that is down at startup is covered in lifecycle.rs:
//! `service_starts_while_the_issuer_is_down_and_serves_once_it_is_back`.)

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::json;

/// Load tests take the machine's CPU for themselves: run one at a time, so
/// that a timing-sensitive one (nats-server refuses a connect whose callout
/// takes over 2 s) measures the service, not its neighbours.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One connect attempt made by the load generator.
#[derive(Debug)]
struct Attempt {
    started: Instant,
    took: Duration,
    error: Option<String>,
}

/// `workers` clients connecting and disconnecting in a loop with valid
/// tokens until `stop` is set.
fn start_load(
    url: String,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<Attempt>>> {
    tokens
        .into_iter()
        .map(|token| {
            let url = url.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut attempts = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let result = connect(&url, &token).await;
                    attempts.push(Attempt {
                        started,
                        took: started.elapsed(),
                        error: result.err().map(|e| e.to_string()),
                    });
                    if attempts.last().unwrap().error.is_some() {
                        // The server may be down: do not spin.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                attempts
            })
        })
        .collect()
}

/// An attempt the client itself gave up on (its connect timeout): no
/// answer at all, which is what "hung" means here, whatever the clock says.
fn timed_out(a: &Attempt) -> bool {
    a.error
        .as_deref()
        .is_some_and(|e| e.to_lowercase().contains("timed out"))
}

/// How long after a replica's crash a connect may still have been routed to
/// it (nats-server notices the closed connection; its auth timeout, 2 s,
/// ends any request the crashed replica held).
const SETTLED: Duration = Duration::from_secs(2);

fn tokens(stack: &Stack, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| stack.token(&format!("load{i}"), &["reader"]))
        .collect()
}

/// The JWKS is stuck (every answer held back far longer than nats-server
/// waits for an answer): a token naming an unknown key waits for the
/// refetch at most REFETCH_WAIT and is then refused with a reason, before
/// nats-server's timeout (not dropped), and tokens with known keys are
/// answered at full speed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_issuer_gets_a_new_key_refused_with_a_reason_not_a_timeout() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let known = stack.token("ana", &["admin"]);
    stack.issuer.set_jwks_delay(Duration::from_secs(30));
    let new_kid = stack.issuer.add_key(Algorithm::RS256, true);
    let unknown = stack.issuer.sign(
        &new_kid,
        &stack.issuer.claims("ben", AUDIENCE, &["admin"], 300),
    );

    let url = stack.url();
    let stuck = tokio::spawn(async move {
        let started = Instant::now();
        let result = connect(&url, &unknown).await;
        (started.elapsed(), result.is_ok())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Admitted is what its user sees: queued behind the stuck fetch (30 s)
    // it would be refused at nats-server's 2 s auth timeout.
    connect(&stack.url(), &known)
        .await
        .expect("a known key is answered while the JWKS fetch hangs");

    let (_, admitted) = stuck.await.unwrap();
    assert!(
        !admitted,
        "a key the service could not fetch admitted a token"
    );
    wait_for_log(
        &stack.service.log,
        "did not arrive within",
        Duration::from_secs(5),
    )
    .await;
    let line = log_lines(&stack.service.log)
        .into_iter()
        .find(|l| l.contains("did not arrive within"))
        .unwrap();
    // Refused with a code (an answer nats-server still waited for), not
    // dropped at the request's deadline.
    assert!(
        line.contains("result=\"refused\"") && line.contains("code=\"unavailable\""),
        "{line}"
    );
    let latency_us = latency_of(&line).expect("the decision line has latency_us");
    assert!(
        latency_us >= 900_000,
        "it waited for the refetch first (REFETCH_WAIT = 1 s): {line}"
    );
}

/// Real issuers publish keys the service has no use for (encryption keys,
/// curves it does not verify with, key types from the future): they are
/// skipped with a reason and the usable keys still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_entries_of_unknown_types_are_skipped_and_the_rest_are_used() {
    let issuer = DevIssuer::start(0).await.unwrap();
    issuer.publish_raw_jwk(json!({"kty": "OKP", "crv": "X448", "kid": "odd-1", "x": "AAAA"}));
    issuer.publish_raw_jwk(json!({"kty": "quantum", "kid": "odd-2", "q": "AAAA"}));
    issuer.publish_raw_jwk(json!({"kty": "oct", "kid": "odd-3", "k": "c2VjcmV0"}));
    let rs = issuer.current_kid(Algorithm::RS256);
    let mut enc = issuer.public_jwk(&rs);
    enc["kid"] = json!("odd-4");
    enc["use"] = json!("enc");
    issuer.publish_raw_jwk(enc);
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let service = CalloutService::start(
        &nats.url(),
        &issuer.issuer(),
        &keys,
        ServiceOptions::default(),
    )
    .await;
    let log = service.log_text();
    for kid in ["odd-1", "odd-2", "odd-3", "odd-4"] {
        assert!(
            log.lines()
                .any(|l| l.contains("JWKS entry skipped") && l.contains(kid)),
            "{kid} not reported as skipped:\n{log}"
        );
    }
    assert!(
        log.contains("keys=2"),
        "the two usable keys are loaded:\n{log}"
    );
    for alg in [Algorithm::RS256, Algorithm::ES256] {
        let kid = issuer.current_kid(alg);
        let token = issuer.sign(&kid, &issuer.claims("ana", AUDIENCE, &["admin"], 300));
        connect(&nats.url(), &token)
            .await
            .unwrap_or_else(|e| panic!("{alg:?} token refused: {e}"));
    }
    // A token naming the encryption key (same RSA material) is refused: a
    // key published for encryption never verifies.
    let claims = issuer.claims("mallory", AUDIENCE, &["admin"], 300);
    let mut h = jsonwebtoken::Header::new(Algorithm::RS256);
    h.kid = Some("odd-4".into());
    let token = issuer.sign_with_header(&rs, h, &claims);
    assert_refused(&nats.url(), &token, "signed for the enc key").await;
}

/// A key the issuer withdraws stops working once the service's keys are
/// refreshed, without restart, even while its tokens are unexpired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_removed_from_the_jwks_is_refused_after_the_next_refresh() {
    let stack = Stack::start(ServiceOptions {
        extra_oidc: "jwks_max_age = \"2s\"".into(),
        ..Default::default()
    })
    .await;
    let old = stack.token("ana", &["admin"]);
    // Remembered by the token cache from here on: the key set change must
    // still take it out.
    connect(&stack.url(), &old).await.expect("before removal");

    let old_kid = stack.issuer.current_kid(Algorithm::RS256);
    let new_kid = stack.issuer.rotate(Algorithm::RS256);
    assert_ne!(old_kid, new_kid);
    let loads = count_in_log(&stack.service.log, "issuer keys loaded");
    wait_for_count(&stack.service.log, "issuer keys loaded", loads + 1).await;

    assert_refused(&stack.url(), &old, "removed key").await;
    wait_for_log(
        &stack.service.log,
        "code=\"token_unknown_kid\"",
        Duration::from_secs(5),
    )
    .await;
    connect(&stack.url(), &stack.token("ana", &["admin"]))
        .await
        .expect("the new key works");
}

/// nats-server restarts while clients keep connecting: once it is back, the
/// service has reconnected and every connect is answered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_restart_during_load() {
    let _alone = HEAVY.lock().await;
    let mut stack = Stack::start(ServiceOptions::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(stack.url(), tokens(&stack, 8), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.nats.restart();
    wait_for_count(&stack.service.log, "connected to NATS", 2).await;
    let back = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::SeqCst);
    let attempts = join_all(load).await;

    let before: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started + a.took < back - Duration::from_secs(2))
        .collect();
    let after: Vec<&Attempt> = attempts
        .iter()
        .filter(|a| a.started > back + Duration::from_millis(500))
        .collect();
    eprintln!(
        "{} attempts: {} settled well before the restart, {} after the service reconnected",
        attempts.len(),
        before.len(),
        after.len()
    );
    // Every client connected again after the restart (8 clients in 3 s:
    // the load is there, whatever the machine's speed).
    assert!(
        after.len() >= 8,
        "too little load after the restart: {}",
        after.len()
    );
    let failed: Vec<&&Attempt> = after.iter().filter(|a| a.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "connects failed after the restart: {failed:?}"
    );
    assert!(
        attempts.iter().all(|a| !timed_out(a)),
        "a connect hung until the client gave up"
    );
}

/// A rolling restart under load: two replicas share the queue group, and
/// three times in a row one of them receives SIGTERM and a fresh one takes its
/// place. A stopping replica answers every request nats-server routed to it,
/// including those on the wire when it unsubscribed, so not one connect is
/// lost. (A plain unsubscribe lost 3 of 3,577 here.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_connect() {
    let _alone = HEAVY.lock().await;
    let mut stack = Stack::start(ServiceOptions::default()).await;
    let mut replicas = vec![start_replica(&stack).await];
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(stack.url(), tokens(&stack, 16), stop.clone());
    let mut answered_by_stopped = 0;
    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(1000)).await;
        // The stack's own service goes first, then the oldest replica.
        let stopping = match round {
            0 => &mut stack.service,
            _ => &mut replicas[0],
        };
        let status = stopping.terminate();
        assert!(
            status.success(),
            "round {round}: SIGTERM exits 0: {status:?}"
        );
        let answered = count_in_log(&stopping.log, "result=\"allowed\"");
        if round > 0 {
            replicas.remove(0);
        }
        assert!(
            answered > 0,
            "round {round}: the stopped replica took no requests"
        );
        answered_by_stopped += answered;
        replicas.push(start_replica(&stack).await);
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let attempts = join_all(load).await;

    let lost: Vec<&Attempt> = attempts.iter().filter(|a| a.error.is_some()).collect();
    eprintln!(
        "{} connects through 3 stops, {} lost; the stopped replicas answered {answered_by_stopped}",
        attempts.len(),
        lost.len()
    );
    // Load through all three rounds: on average each of the 16 clients
    // connected at least once a round (a count, not a rate).
    assert!(
        attempts.len() >= 16 * 3,
        "too little load: {}",
        attempts.len()
    );
    assert!(
        lost.is_empty(),
        "connects lost in a rolling restart: {lost:?}"
    );
    // A connect that waited for nats-server's timeout would be a refusal,
    // and so in `lost`; one the client gave up on is not an answer either.
    assert!(
        attempts.iter().all(|a| !timed_out(a)),
        "a connect hung until the client gave up"
    );
}

/// One replica crashes (SIGKILL) mid-load. Requests it held die with it, so
/// those clients are refused by nats-server's auth timeout — at most one per
/// concurrent client — and every connect is answered one way or the other;
/// from a moment after the crash every connect is admitted by the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_crashing_mid_load_leaves_every_connect_answered() {
    let _alone = HEAVY.lock().await;
    let mut stack = Stack::start(ServiceOptions::default()).await;
    let replica = start_replica(&stack).await;
    const WORKERS: usize = 16;
    let stop = Arc::new(AtomicBool::new(false));
    let load = start_load(stack.url(), tokens(&stack, WORKERS), stop.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let crash = Instant::now();
    stack.service.kill();
    tokio::time::sleep(Duration::from_millis(5000)).await;
    stop.store(true, Ordering::SeqCst);
    let attempts = join_all(load).await;

    let failed: Vec<&Attempt> = attempts.iter().filter(|a| a.error.is_some()).collect();
    eprintln!(
        "{} connects; {} refused by nats-server's timeout because the crashed replica held them",
        attempts.len(),
        failed.len()
    );
    assert!(
        failed.len() <= WORKERS,
        "more refusals than requests that can be in flight: {failed:?}"
    );
    for f in &failed {
        let e = f.error.as_deref().unwrap().to_lowercase();
        assert!(e.contains("authorization"), "unexpected failure: {e}");
        assert!(
            f.started < crash + SETTLED,
            "a connect started after the crash failed: {f:?}"
        );
    }
    assert!(
        attempts.iter().all(|a| !timed_out(a)),
        "a connect went unanswered until the client gave up"
    );
    let after: usize = attempts
        .iter()
        .filter(|a| a.started > crash + SETTLED)
        .count();
    assert!(after >= WORKERS, "the survivor took the load: {after}");
    assert!(count_in_log(&replica.log, "result=\"allowed\"") > 0);
}

/// 2,000 clients connect at once, then nats-server restarts and all of them
/// reconnect at once: every connect and every reconnect is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_2000_clients_is_answered_and_reconnects() {
    let _alone = HEAVY.lock().await;
    const CLIENTS: usize = 2000;
    let mut stack = Stack::start(ServiceOptions::default()).await;
    let token = stack.token("storm", &["reader"]);
    let started = Instant::now();
    let connects: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let url = stack.url();
            let token = token.clone();
            tokio::spawn(async move {
                async_nats::ConnectOptions::with_user_and_password("x".into(), token)
                    .connection_timeout(Duration::from_secs(10))
                    .max_reconnects(None)
                    .connect(url)
                    .await
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut errors = Vec::new();
    for c in connects {
        match c.await.unwrap() {
            Ok(client) => clients.push(client),
            Err(e) => errors.push(e.to_string()),
        }
    }
    eprintln!(
        "{} of {CLIENTS} connected in {:?}; service decision latency {}",
        clients.len(),
        started.elapsed(),
        latency_summary(&stack.service.log)
    );
    assert!(
        errors.is_empty(),
        "{} refused: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );

    let answered = count_in_log(&stack.service.log, "result=\"allowed\"");
    stack.nats.restart();
    let restarted = Instant::now();
    let deadline = restarted + Duration::from_secs(60);
    loop {
        let connected = clients
            .iter()
            .filter(|c| c.connection_state() == async_nats::connection::State::Connected)
            .count();
        if connected == CLIENTS
            && count_in_log(&stack.service.log, "result=\"allowed\"") >= answered + CLIENTS
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{connected} of {CLIENTS} reconnected within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "all {CLIENTS} reconnected (each through the callout) in {:?}",
        restarted.elapsed()
    );
    let refused = count_in_log(&stack.service.log, "result=\"refused\"");
    assert_eq!(refused, 0, "the service refused a valid token in the storm");
}

/// The `latency_us` field of a decision log line.
fn latency_of(line: &str) -> Option<u64> {
    line.split("latency_us=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A second service in the stack's queue group.
async fn start_replica(stack: &Stack) -> CalloutService {
    CalloutService::start(
        &stack.url(),
        &stack.issuer.issuer(),
        &stack.keys,
        ServiceOptions::default(),
    )
    .await
}

/// p50/p99/max of the decision latencies the service logged.
fn latency_summary(log: &std::path::Path) -> String {
    let mut us: Vec<u64> = log_lines(log)
        .iter()
        .filter_map(|l| latency_of(l))
        .collect();
    if us.is_empty() {
        return "(none logged)".into();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q) as usize];
    format!(
        "p50 {} us, p99 {} us, max {} us over {}",
        at(0.5),
        at(0.99),
        us[us.len() - 1],
        us.len()
    )
}
