//! Counting answers and their latencies, and reporting a process's cost.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nats_oidc_callout_test_support::server_sim::Answer;

use crate::procs::Service;

#[derive(Default)]
pub struct Tally {
    latencies_us: Mutex<Vec<u64>>,
    allowed: AtomicU64,
    refused: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl Tally {
    pub fn record(&self, took: Duration, outcome: Result<Answer, String>) {
        self.latencies_us
            .lock()
            .unwrap()
            .push(took.as_micros() as u64);
        let error = match outcome {
            Ok(Answer::Allowed) => {
                self.allowed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Answer::Refused(e)) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                e
            }
            Ok(Answer::Unreadable(e)) | Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                e
            }
        };
        self.first_error.lock().unwrap().get_or_insert(error);
    }

    pub fn report(&self, elapsed: Duration) {
        let mut l = self.latencies_us.lock().unwrap().clone();
        l.sort_unstable();
        let at = |q: f64| {
            l.get(((l.len().max(1) - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or(0) as f64
                / 1000.0
        };
        let n = l.len() as f64;
        println!(
            "answers: {} in {:.2}s = {:.0}/s; allowed {}, refused {}, errors {}",
            l.len(),
            elapsed.as_secs_f64(),
            n / elapsed.as_secs_f64(),
            self.allowed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed)
        );
        println!(
            "latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        if let Some(e) = self.first_error.lock().unwrap().as_ref() {
            println!("first refusal/error: {e}");
        }
    }
}

pub fn report_service(service: &Service, cpu_before: f64, elapsed: Duration) {
    let cpu = service.cpu_seconds() - cpu_before;
    let (rss, peak) = service.rss_mib();
    println!(
        "service: cpu {:.2}s ({:.0}% of one core), rss {:.1} MiB, peak rss {:.1} MiB",
        cpu,
        100.0 * cpu / elapsed.as_secs_f64(),
        rss,
        peak
    );
}

/// One stream of real client connects (and closes): each one's outcome
/// and how long it took, for the modes that run several streams at once.
#[derive(Default)]
pub struct Connects {
    admitted_us: Mutex<Vec<u64>>,
    refused_us: Mutex<Vec<u64>>,
    /// Client-side refusals and errors by kind (async-nats's).
    kinds: Mutex<BTreeMap<String, u64>>,
}

/// What a stream of connects came to.
pub struct ConnectSummary {
    pub attempts: u64,
    pub admitted: u64,
    /// Per second of the stream's time.
    pub rate: f64,
    pub admitted_rate: f64,
    /// (p50, p99) in ms.
    pub admitted_ms: (f64, f64),
    pub refused_ms: (f64, f64),
    /// Refusals that took nats-server's auth timeout (2 s) or longer: no
    /// answer came in time.
    pub timed_out: u64,
    pub kinds: BTreeMap<String, u64>,
}

impl ConnectSummary {
    pub fn share_admitted(&self) -> f64 {
        self.admitted as f64 / self.attempts.max(1) as f64
    }

    /// "kind n, kind n" for the refusals.
    pub fn kinds(&self) -> String {
        counts(&self.kinds)
    }
}

/// Refusals this slow were nats-server's auth timeout (2 s by default),
/// not an answer.
const TIMEOUT_FLOOR: Duration = Duration::from_millis(1900);

impl Connects {
    pub fn record(&self, took: Duration, outcome: Result<(), String>) {
        let us = took.as_micros() as u64;
        match outcome {
            Ok(()) => self.admitted_us.lock().unwrap().push(us),
            Err(kind) => {
                self.refused_us.lock().unwrap().push(us);
                *self.kinds.lock().unwrap().entry(kind).or_default() += 1;
            }
        }
    }

    pub fn summary(&self, elapsed: Duration) -> ConnectSummary {
        let admitted = sorted(&self.admitted_us);
        let refused = sorted(&self.refused_us);
        let attempts = (admitted.len() + refused.len()) as u64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        ConnectSummary {
            attempts,
            admitted: admitted.len() as u64,
            rate: attempts as f64 / secs,
            admitted_rate: admitted.len() as f64 / secs,
            admitted_ms: (quantile_ms(&admitted, 0.5), quantile_ms(&admitted, 0.99)),
            refused_ms: (quantile_ms(&refused, 0.5), quantile_ms(&refused, 0.99)),
            timed_out: refused
                .iter()
                .filter(|us| **us >= TIMEOUT_FLOOR.as_micros() as u64)
                .count() as u64,
            kinds: self.kinds.lock().unwrap().clone(),
        }
    }
}

fn sorted(v: &Mutex<Vec<u64>>) -> Vec<u64> {
    let mut v = v.lock().unwrap().clone();
    v.sort_unstable();
    v
}

/// The `q` quantile of sorted microseconds, in ms (0 when empty).
fn quantile_ms(sorted_us: &[u64], q: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len().max(1) - 1) as f64 * q) as usize)
        .copied()
        .unwrap_or(0) as f64
        / 1000.0
}

/// One connect as `user` with `password`, closed again at once: how long
/// it took and whether it was admitted (else async-nats's kind of error).
pub async fn connect_once(url: &str, user: &str, password: &str) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let result = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(Some(0))
        .connect(url)
        .await;
    let took = started.elapsed();
    (
        took,
        result.map(drop).map_err(|e| format!("{:?}", e.kind())),
    )
}

/// The decisions a service log recorded after its first `from` lines:
/// counts by "result code" (refused or dropped, and the refusal code),
/// and the log's length now.
pub fn logged_codes(log: &Path, from: usize) -> (BTreeMap<String, u64>, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut codes = BTreeMap::new();
    let mut lines = 0;
    for (i, line) in text.lines().enumerate() {
        lines = i + 1;
        if i < from {
            continue;
        }
        let field = |name: &str| {
            let at = line.find(&format!("{name}=\""))? + name.len() + 2;
            line[at..].split('"').next().map(str::to_string)
        };
        if let (Some(result), Some(code)) = (field("result"), field("code")) {
            *codes.entry(format!("{result} {code}")).or_default() += 1;
        }
    }
    (codes, lines)
}

/// "key n, key n", or "none".
pub fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a client presents on its `n`th connect: user name and password.
pub type Credentials = Arc<dyn Fn(u64) -> (String, String) + Send + Sync>;

/// `clients` clients connect and close again, one connect after another
/// each, until `until`; every connect is counted in `stats`.
pub async fn closed_loop(
    url: &str,
    clients: usize,
    until: Instant,
    credentials: Credentials,
    stats: Arc<Connects>,
) {
    let next = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (url, next, credentials, stats) = (
            url.to_string(),
            next.clone(),
            credentials.clone(),
            stats.clone(),
        );
        workers.spawn(async move {
            while Instant::now() < until {
                let (user, password) = credentials(next.fetch_add(1, Ordering::Relaxed));
                let (took, outcome) = connect_once(&url, &user, &password).await;
                stats.record(took, outcome);
            }
        });
    }
    while workers.join_next().await.is_some() {}
}
