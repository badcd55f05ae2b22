//! `issuer`: a slow, then a dead issuer under load. Three phases: the
//! issuer healthy, its JWKS answering in `--slow` (3 s), then not at all
//! (the connection accepted, no answer: the service's `oidc.http_timeout`
//! gives up on it). The development issuer's own delay knob does it: the
//! service fetches discovery and the JWKS from it as from any issuer, and
//! nothing sits between them.
//!
//! In every phase, side by side: `--clients` clients whose tokens the
//! service has seen before connect and close in a loop, and `--new-clients`
//! do the same with tokens signed by a key the issuer published at the
//! phase's start (a key rotation: the old key stays published, the new one
//! is not in the service's key set yet). Per phase: both streams' rates,
//! admitted share, latencies (refusals' p50/p99 and how many came only at
//! nats-server's 2 s auth timeout), what the service logged for them
//! (result and refusal code) and the JWKS requests the issuer saw. The
//! service runs with `jwks_max_age = 10s`, so its periodic refresh also
//! meets the slow and the dead JWKS; the unknown-kid cool-down is its
//! default (10 s). Nothing is asserted: figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;

use crate::tally::{closed_loop, counts, logged_codes, Connects, Credentials};
use crate::Ctx;

/// A JWKS that never answers: far beyond any `oidc.http_timeout` (60 s at most).
const NEVER: Duration = Duration::from_secs(3600);

/// Tokens signed with each phase's new key, cycled through.
const NEW_TOKENS: usize = 200;

pub async fn run(ctx: &Ctx, clients: usize, new_clients: usize, phase: Duration, slow: Duration) {
    let Ctx { tokens, issuer, .. } = ctx;
    let nats = ctx.callout_nats(false);
    let (service, _) = ctx
        .start_with(nats.port, &[("jwks_max_age", "\"10s\"")], "")
        .await;
    let log = service._dir.path().join("service.log");
    let url = format!("nats://127.0.0.1:{}", nats.port);
    println!(
        "issuer: {clients} clients with tokens seen before and {new_clients} with tokens of a key published at each phase's start, {:.0}s per phase; jwks_max_age 10s, refetch cool-down 10s, http_timeout 5s",
        phase.as_secs_f64()
    );
    // Every known token once, so that all of them are "seen before".
    let known: Credentials = {
        let tokens = tokens.clone();
        Arc::new(move |n| ("load".into(), tokens[n as usize % tokens.len()].clone()))
    };
    let warm = Arc::new(Connects::default());
    let until = Instant::now() + Duration::from_secs(2);
    closed_loop(&url, clients, until, known.clone(), warm.clone()).await;
    let (_, mut mark) = logged_codes(&log, 0);
    for (name, delay) in [
        ("healthy", Duration::ZERO),
        ("JWKS slow", slow),
        ("JWKS dead", NEVER),
    ] {
        issuer.set_jwks_delay(delay);
        let kid = issuer.add_key(Algorithm::RS256, true);
        let fresh: Arc<Vec<String>> = Arc::new(
            (0..NEW_TOKENS)
                .map(|i| {
                    let claims = issuer.claims(&format!("new{i}"), "nats", &["reader"], 3600);
                    issuer.sign(&kid, &claims)
                })
                .collect(),
        );
        let new: Credentials =
            Arc::new(move |n| ("load".into(), fresh[n as usize % fresh.len()].clone()));
        let fetches = issuer.jwks_requests();
        let (old_stats, new_stats) = (Arc::new(Connects::default()), Arc::new(Connects::default()));
        let begin = Instant::now();
        let until = begin + phase;
        tokio::join!(
            closed_loop(&url, clients, until, known.clone(), old_stats.clone()),
            closed_loop(&url, new_clients, until, new, new_stats.clone()),
        );
        let elapsed = begin.elapsed();
        // Decisions finish up to the request's deadline (3 s) after the
        // last connect gave up.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (codes, now) = logged_codes(&log, mark);
        mark = now;
        let (old, new) = (old_stats.summary(elapsed), new_stats.summary(elapsed));
        println!("{name} (JWKS delay {}):", shown(delay));
        println!(
            "  seen before: {:.0} connects/s, {:.0}/s admitted ({:.1}%), p50 {:.1} ms, p99 {:.1} ms; refused: {}",
            old.rate,
            old.admitted_rate,
            100.0 * old.share_admitted(),
            old.admitted_ms.0,
            old.admitted_ms.1,
            old.kinds()
        );
        println!(
            "  new key:     {:.0} connects/s, {:.0}/s admitted, {} of {} (p50 {:.1} ms, p99 {:.1} ms); {} refused (p50 {:.1} ms, p99 {:.1} ms), {} of them only at nats-server's auth timeout; client saw: {}",
            new.rate,
            new.admitted_rate,
            new.admitted,
            new.attempts,
            new.admitted_ms.0,
            new.admitted_ms.1,
            new.attempts - new.admitted,
            new.refused_ms.0,
            new.refused_ms.1,
            new.timed_out,
            new.kinds()
        );
        println!(
            "  service logged: {}; JWKS requests: {}",
            counts(&codes),
            issuer.jwks_requests() - fetches
        );
    }
    issuer.set_jwks_delay(Duration::ZERO);
    drop(service);
}

fn shown(delay: Duration) -> String {
    if delay >= NEVER {
        "never answers".into()
    } else {
        format!("{:.1}s", delay.as_secs_f64())
    }
}
