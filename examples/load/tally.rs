//! Counting answers and their latencies, and reporting a process's cost.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

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
