//! Prometheus metrics: decisions by result and reason, decision latency,
//! issuer key fetches, key count, NATS connection state, token cache hits.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::refusal::RefusalCode;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub result: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FetchLabels {
    pub issuer: String,
    pub result: &'static str,
}

/// The `name` of an `[oidc]` issuer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuerLabels {
    pub issuer: String,
}

/// A `[[bindings]]` entry's name (from the config, so bounded).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BindingLabels {
    pub binding: String,
}

/// What became of one authorization request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Refused(RefusalCode),
    /// Not answered: its deadline passed first.
    Dropped(RefusalCode),
}

pub struct Metrics {
    registry: Registry,
    pub authorizations: Family<DecisionLabels, Counter>,
    pub decision_seconds: Histogram,
    pub jwks_fetches: Family<FetchLabels, Counter>,
    pub jwks_last_success: Family<IssuerLabels, Gauge<f64, AtomicU64>>,
    pub jwks_keys: Family<IssuerLabels, Gauge>,
    pub nats_connected: Gauge,
    pub token_cache_hits: Counter,
    pub binding_admissions: Family<BindingLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nats_oidc_callout");
        let authorizations = Family::<DecisionLabels, Counter>::default();
        registry.register(
            "authorizations",
            "Authorization requests by result (allowed, refused, dropped) and reason code",
            authorizations.clone(),
        );
        // 50 µs .. ~1.6 s: a decision is mostly one signature verification,
        // but an unknown kid can wait for a key fetch.
        let decision_seconds = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        registry.register(
            "decision_duration_seconds",
            "Time from receiving an authorization request to having the answer",
            decision_seconds.clone(),
        );
        let jwks_fetches = Family::<FetchLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "Issuer key set fetches by result",
            jwks_fetches.clone(),
        );
        let jwks_last_success = Family::<IssuerLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "jwks_last_success_timestamp_seconds",
            "Unix time of the last successful key set fetch",
            jwks_last_success.clone(),
        );
        let jwks_keys = Family::<IssuerLabels, Gauge>::default();
        registry.register(
            "jwks_keys",
            "Usable keys in the current key set",
            jwks_keys.clone(),
        );
        let nats_connected = Gauge::default();
        registry.register(
            "nats_connected",
            "1 while connected to NATS, 0 otherwise",
            nats_connected.clone(),
        );
        let token_cache_hits = Counter::default();
        registry.register(
            "token_cache_hits",
            "Tokens taken as verified because the same token verified before (oidc.token_cache_bytes)",
            token_cache_hits.clone(),
        );
        let binding_admissions = Family::<BindingLabels, Counter>::default();
        registry.register(
            "binding_admissions",
            "Users admitted with roles from a [[bindings]] entry, by the entry's name",
            binding_admissions.clone(),
        );
        Metrics {
            registry,
            authorizations,
            decision_seconds,
            jwks_fetches,
            jwks_last_success,
            jwks_keys,
            nats_connected,
            token_cache_hits,
            binding_admissions,
        }
    }

    pub fn record_binding(&self, name: &str) {
        self.binding_admissions
            .get_or_create(&BindingLabels {
                binding: name.to_string(),
            })
            .inc();
    }

    /// One request's outcome and how long it took.
    pub fn record_decision(&self, outcome: Outcome, seconds: f64) {
        let labels = match outcome {
            Outcome::Allowed => DecisionLabels {
                result: "allowed",
                reason: "ok",
            },
            Outcome::Refused(code) => DecisionLabels {
                result: "refused",
                reason: code.as_str(),
            },
            Outcome::Dropped(code) => DecisionLabels {
                result: "dropped",
                reason: code.as_str(),
            },
        };
        self.authorizations.get_or_create(&labels).inc();
        self.decision_seconds.observe(seconds);
    }

    pub fn record_fetch(&self, issuer: &str, ok: bool) {
        let result = if ok { "success" } else { "failure" };
        self.jwks_fetches
            .get_or_create(&FetchLabels {
                issuer: issuer.to_string(),
                result,
            })
            .inc();
    }

    /// After a successful fetch: when, and how many keys are usable.
    pub fn record_keys(&self, issuer: &str, keys: usize, unix_seconds: f64) {
        let labels = IssuerLabels {
            issuer: issuer.to_string(),
        };
        self.jwks_last_success
            .get_or_create(&labels)
            .set(unix_seconds);
        self.jwks_keys.get_or_create(&labels).set(keys as i64);
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `reason` label values are the refusal codes, exactly.
    #[test]
    fn every_refusal_code_is_a_reason_label() {
        let metrics = Metrics::new();
        metrics.record_decision(Outcome::Allowed, 0.001);
        for code in RefusalCode::ALL {
            metrics.record_decision(Outcome::Refused(code), 0.001);
        }
        let text = metrics.render();
        let reasons: std::collections::BTreeSet<&str> = text
            .lines()
            .filter(|l| l.starts_with("nats_oidc_callout_authorizations_total{"))
            .filter_map(|l| l.split("reason=\"").nth(1)?.split('"').next())
            .collect();
        let mut expected: std::collections::BTreeSet<&str> =
            RefusalCode::ALL.iter().map(|c| c.as_str()).collect();
        expected.insert("ok");
        assert_eq!(reasons, expected);
    }
}
