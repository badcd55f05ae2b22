//! Bearer tokens through the whole system: one bad token of each family
//! (header, registered claims, signature, role mapping) is refused at
//! connect by nats-server, the service logs the precise reason, and a good
//! token is accepted right after (the service stayed up); tokens that only
//! nats-server's limits can tell apart; floods of made-up kids against slow
//! issuers. Every other bad token is decided in-process in `decisions.rs`.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, Header};
use serde_json::{json, Value};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn rsa_kid(i: &DevIssuer) -> String {
    i.current_kid(Algorithm::RS256)
}

fn at_header(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    h
}

/// Good claims with one change applied.
fn claims_with(i: &DevIssuer, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = i.claims("mallory", AUDIENCE, &["admin"], 300);
    change(c.as_object_mut().unwrap());
    c
}

fn signed(i: &DevIssuer, claims: &Value) -> String {
    let kid = rsa_kid(i);
    i.sign_with_header(&kid, at_header(&kid), claims)
}

/// Starts a stack, checks the token is refused with `code` in the log, then
/// checks that a good token still gets in.
async fn assert_refused_with(make: impl FnOnce(&DevIssuer) -> String, code: &str) {
    let stack = Stack::start(ServiceOptions::default()).await;
    let token = make(&stack.issuer);
    assert_refused(&stack.url(), &token, code).await;
    wait_for_log(
        &stack.service.log,
        &format!("code=\"{code}\""),
        std::time::Duration::from_secs(5),
    )
    .await;
    let good = stack.token("ana", &["admin"]);
    connect(&stack.url(), &good)
        .await
        .expect("a good token is accepted right after");
    let log = stack.service.log_text();
    assert!(
        !log.contains(&token),
        "the refused token must never be logged"
    );
    assert!(
        !log.contains(&good),
        "the accepted token must never be logged"
    );
}

macro_rules! refused {
    ($name:ident, $code:literal, $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            assert_refused_with($make, $code).await;
        }
    };
}

refused!(alg_none, "token_alg", |i: &DevIssuer| {
    let c = i.claims("mallory", AUDIENCE, &["admin"], 300);
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    ) + "AAAA"
});

refused!(wrong_audience, "token_audience", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("aud".into(), json!(["account", "other-api"]));
        }),
    )
});

refused!(tampered_payload, "token_signature", |i: &DevIssuer| {
    let token = i.token("mallory", AUDIENCE, &["reader"], 300);
    let p: Vec<&str> = token.split('.').collect();
    let forged = i.claims("mallory", AUDIENCE, &["admin"], 300);
    format!("{}.{}.{}", p[0], b64(&forged), p[2])
});

refused!(no_mapped_role, "no_mapped_role", |i: &DevIssuer| i.token(
    "gus",
    AUDIENCE,
    &["guest", "offline_access"],
    300
));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_many_groups_is_accepted() {
    // Entra ID and Keycloak tokens with many groups are several KiB; the
    // shipped nats.conf raises max_control_line so they reach the callout.
    let stack = Stack::start(ServiceOptions::default()).await;
    let groups: Vec<String> = (0..400)
        .map(|n| format!("group-{n:04}-{}", "g".repeat(20)))
        .collect();
    let i = &stack.issuer;
    let token = signed(
        i,
        &claims_with(i, |c| {
            c.insert("groups".into(), json!(groups));
        }),
    );
    assert!(
        token.len() > 16 * 1024,
        "the token is {} bytes",
        token.len()
    );
    connect(&stack.url(), &token)
        .await
        .expect("a 16+ KiB token is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_may_be_sent_as_the_connect_token() {
    let stack = Stack::start(ServiceOptions::default()).await;
    connect_with_token(&stack.url(), &stack.token("tom", &["reader"]))
        .await
        .expect("auth_token accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_kids_costs_at_most_one_fetch_per_cooldown() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let before = stack.issuer.jwks_requests();
    let mut attempts = Vec::new();
    for n in 0..30 {
        let mut h = at_header(&format!("made-up-{n}"));
        h.kid = Some(format!("made-up-{n}"));
        let kid = rsa_kid(&stack.issuer);
        let token = stack.issuer.sign_with_header(
            &kid,
            h,
            &stack.issuer.claims("mallory", AUDIENCE, &["admin"], 300),
        );
        let url = stack.url();
        attempts.push(tokio::spawn(
            async move { connect(&url, &token).await.is_err() },
        ));
    }
    for a in attempts {
        assert!(a.await.unwrap(), "made-up kid refused");
    }
    let fetched = stack.issuer.jwks_requests() - before;
    // jwks_refetch_cooldown is 2s in the test config; the flood lasts less.
    assert!(fetched <= 2, "{fetched} JWKS fetches for 30 unknown kids");
    assert!(fetched >= 1, "an unknown kid does trigger a refetch");
}

/// The sibling of the password flood: tokens naming keys the issuer never
/// published, thousands of them, while the issuer is slow to answer the
/// refetch they trigger. At most a bounded number wait for it (each at most
/// REFETCH_WAIT); the rest are refused at once, and tokens with known keys
/// go on being admitted within nats-server's auth timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kids_during_a_slow_refetch_make_no_other_client_wait() {
    let stack = Stack::start(ServiceOptions::default()).await;
    stack
        .issuer
        .set_jwks_delay(std::time::Duration::from_secs(4));
    let addr = stack.url().trim_start_matches("nats://").to_string();
    let burst = (open_files_limit() / 3).min(5000);
    let mut flood = Vec::new();
    for n in 0..burst {
        let (addr, token) = (addr.clone(), made_up_kid(&stack.issuer.issuer(), n));
        flood.push(tokio::spawn(async move {
            raw_connect(&addr, "m", &token).await
        }));
    }
    // The burst's arrival is work every client shares (on a busy machine it
    // can take seconds to get through); what must not hold anyone up are
    // the forged tokens that wait for the slow refetch (4 s). So the logins
    // start once the rest of the burst has been refused at once.
    answered_but_the_waiters(&flood).await;
    // A forged token waits for the refetch at most REFETCH_WAIT (1 s), so
    // the burst's waiters are soon answered: more forged tokens keep
    // coming while the logins run, so that some always wait.
    let issuer = stack.issuer.issuer();
    let more = keep_flooding(&addr, move |n| made_up_kid(&issuer, burst + n));
    // Twenty logins with known keys while forged ones wait: each is
    // admitted, which it would not be (nats-server's 2 s auth timeout) if
    // it queued behind them.
    logins_are_admitted_during(&stack, &more).await;
    more.iter().for_each(|t| t.abort());
    for task in flood {
        let _ = task.await;
    }
    let log = stack.service.log_text();
    assert!(log.contains("waiting for its key set"), "the bound was met");
}

/// Twenty token logins, one after another, are each admitted while the
/// flood is in flight; the first of them at least ran before it was over
/// (else they proved nothing).
async fn logins_are_admitted_during<T>(stack: &Stack, flood: &[tokio::task::JoinHandle<T>]) {
    let mut during_the_flood = flood.iter().any(|t| !t.is_finished());
    for n in 0..20 {
        let admitted = connect(&stack.url(), &stack.token(&format!("ana-{n}"), &["reader"])).await;
        assert!(
            admitted.is_ok(),
            "token login {n} refused during the flood: {:?}",
            admitted.err()
        );
        during_the_flood |= flood.iter().any(|t| !t.is_finished());
    }
    assert!(
        during_the_flood,
        "the flood was over before any login: they proved nothing"
    );
}

/// Forged tokens from `token(n)` connecting 64 at a time, each task
/// again as soon as it is answered, until the tasks are aborted.
fn keep_flooding(
    addr: &str,
    token: impl Fn(usize) -> String + Send + Sync + 'static,
) -> Vec<tokio::task::JoinHandle<()>> {
    let token = std::sync::Arc::new(token);
    (0..64)
        .map(|lane| {
            let (addr, token) = (addr.to_string(), token.clone());
            tokio::spawn(async move {
                for n in (lane..).step_by(64) {
                    raw_connect(&addr, "m", &token(n)).await;
                }
            })
        })
        .collect()
}

/// A token of `issuer` naming a key it never published (`made-up-<n>`),
/// with no signature worth checking.
fn made_up_kid(issuer: &str, n: usize) -> String {
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{n}")});
    let claims = json!({"iss": issuer, "aud": AUDIENCE, "sub": "m", "exp": now() + 300});
    format!("{}.{}.AAAA", b64(&header), b64(&claims))
}

/// Waits (a hang guard, never a speed) until every connect of a flood of
/// made-up kids has ended but those the service lets wait for a refetch.
async fn answered_but_the_waiters<T>(flood: &[tokio::task::JoinHandle<T>]) {
    let waiters = nats_oidc_callout::oidc::MAX_REFETCH_WAITERS;
    let deadline = std::time::Instant::now() + 2 * HANG_GUARD;
    while flood.iter().filter(|t| !t.is_finished()).count() > waiters {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst of made-up kids was never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A refetch for a new key outlives the requests that wait for it: with an
/// issuer slower to answer than one request's time (3 s), the first waiter
/// giving up does not cancel it, so the new key arrives and a retry gets in,
/// and no second fetch starts meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refetch_still_brings_a_new_key_in() {
    let stack = Stack::start(ServiceOptions::default()).await;
    stack
        .issuer
        .set_jwks_delay(std::time::Duration::from_millis(3500));
    let kid = stack.issuer.add_key(Algorithm::RS256, true);
    let token = stack
        .issuer
        .sign(&kid, &stack.issuer.claims("ana", AUDIENCE, &["admin"], 300));
    let fetches = stack.issuer.jwks_requests();
    let started = std::time::Instant::now();
    loop {
        if connect(&stack.url(), &token).await.is_ok() {
            break;
        }
        // A hang guard: the new key comes after one slow fetch (3.5 s).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the new key never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        stack.issuer.jwks_requests() - fetches <= 2,
        "{} fetches",
        stack.issuer.jwks_requests() - fetches
    );
}

/// Made-up kids spread over several slow issuers still cannot hold all the
/// requests the service keeps in flight: the bound on waiters for a refetch
/// is one for all issuers, whatever `iss` the tokens claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kids_across_several_slow_issuers_make_no_other_client_wait() {
    let mut slow = Vec::new();
    for _ in 0..5 {
        let issuer = DevIssuer::start(0).await.unwrap();
        slow.push(issuer);
    }
    let good = DevIssuer::start(0).await.unwrap();
    let mut blocks = format!(
        "[[oidc]]\nname = \"good\"\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nroles_claim = \"realm_access.roles\"\nuser_claim = \"preferred_username\"\nrole_namespace = \"\"\n",
        good.issuer()
    );
    for (i, s) in slow.iter().enumerate() {
        blocks.push_str(&format!(
            "\n[[oidc]]\nname = \"slow{i}\"\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nroles_claim = \"realm_access.roles\"\n",
            s.issuer()
        ));
    }
    let mut stack = Stack::start(ServiceOptions {
        oidc: Some(blocks),
        ..Default::default()
    })
    .await;
    for s in &slow {
        s.set_jwks_delay(std::time::Duration::from_secs(30));
    }
    stack.issuer = good;
    let addr = stack.url().trim_start_matches("nats://").to_string();
    let burst = (open_files_limit() / 3).min(4500);
    let mut flood = Vec::new();
    for n in 0..burst {
        let token = made_up_kid(&slow[n % slow.len()].issuer(), n);
        let addr = addr.clone();
        flood.push(tokio::spawn(async move {
            raw_connect(&addr, "m", &token).await
        }));
    }
    // The slow issuers hold their refetches for 30 s: once the rest of the
    // burst has been refused at once (see above), twenty logins with the
    // good issuer's keys are each admitted while the waiters wait.
    answered_but_the_waiters(&flood).await;
    let issuers: Vec<String> = slow.iter().map(|s| s.issuer()).collect();
    let more = keep_flooding(&addr, move |n| {
        made_up_kid(&issuers[n % issuers.len()], burst + n)
    });
    logins_are_admitted_during(&stack, &more).await;
    for task in flood.into_iter().chain(more) {
        task.abort();
    }
}
