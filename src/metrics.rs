//! Prometheus metrics: decisions by result and reason, decision latency,
//! issuer key fetches, key count, NATS connection state, token cache hits,
//! xkey mismatches between nats-server and the service.
//!
//! Served in two formats: OpenMetrics 1.0 (what `prometheus-client`
//! encodes, for scrapers that ask for it) and the Prometheus text format
//! 0.0.4 (for everything else: `promtool check metrics`, older scrapers,
//! `curl`), derived from the same encoding.

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

/// One back-channel logout: the issuer that signed it (a config name, or
/// `(unknown)` when the token named none of them: never the token's own
/// text) and what became of it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackchannelLabels {
    pub issuer: String,
    pub outcome: &'static str,
}

/// What became of one back-channel logout request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LogoutOutcome {
    /// Valid, and carried out.
    Accepted,
    /// Valid, but its `jti` was received before: not acted on again.
    Replayed,
    /// Not a valid logout (token, form or content type).
    Refused,
    /// Valid, but carrying it out failed (the provider may retry).
    Failed,
}

impl LogoutOutcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LogoutOutcome::Accepted => "accepted",
            LogoutOutcome::Replayed => "replayed",
            LogoutOutcome::Refused => "refused",
            LogoutOutcome::Failed => "failed",
        }
    }
}

/// The `issuer` label of a logout whose token named no configured issuer.
pub(crate) const UNKNOWN_ISSUER: &str = "(unknown)";

/// The label values of `revocations_total`, present from the start.
const REVOCATION_SIGNALS: [&str; 4] = ["backchannel", "admin", "request", "other"];

/// Which HTTP listener: `http` (`[http] listen`) or `backchannel`
/// (`[revocation] backchannel_listen`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// The `listener` label values of `http_connections_refused_total`.
pub(crate) const HTTP_LISTENERS: [&str; 2] = ["http", "backchannel"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevocationLabels {
    pub signal: &'static str,
}

/// Which way nats-server's `auth_callout.xkey` and `callout.xkey_seed`
/// disagree.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XkeyLabels {
    pub kind: &'static str,
}

/// The `kind` label values of `xkey_mismatches_total`: a sealed request
/// with no `callout.xkey_seed`, a sealed request the seed cannot open, an
/// unsealed request although the seed is set.
pub(crate) const XKEY_MISMATCH_KINDS: [&str; 3] =
    ["sealed_without_xkey", "wrong_xkey", "unsealed_with_xkey"];

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
    pub xkey_mismatches: Family<XkeyLabels, Counter>,
    pub backchannel_logouts: Family<BackchannelLabels, Counter>,
    pub revocations: Family<RevocationLabels, Counter>,
    pub revocation_connections_closed: Counter,
    pub session_registry_failures: Counter,
    pub http_connections_refused: Family<ListenerLabels, Counter>,
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
        let xkey_mismatches = Family::<XkeyLabels, Counter>::default();
        registry.register(
            "xkey_mismatches",
            "Authorization requests whose sealing disagrees with callout.xkey_seed, by kind",
            xkey_mismatches.clone(),
        );
        // Present at 0 from the start, so an alert can watch for increase.
        for kind in XKEY_MISMATCH_KINDS {
            let _ = xkey_mismatches.get_or_create(&XkeyLabels { kind });
        }
        let backchannel_logouts = Family::<BackchannelLabels, Counter>::default();
        registry.register(
            "backchannel_logouts",
            "OpenID Connect back-channel logout requests by issuer and outcome (accepted, replayed, refused, failed)",
            backchannel_logouts.clone(),
        );
        let revocations = Family::<RevocationLabels, Counter>::default();
        registry.register(
            "revocations",
            "Revocations this replica enforced, by signal (backchannel, admin, request, other)",
            revocations.clone(),
        );
        for signal in REVOCATION_SIGNALS {
            let _ = revocations.get_or_create(&RevocationLabels { signal });
        }
        let revocation_connections_closed = Counter::default();
        registry.register(
            "revocation_connections_closed",
            "Live connections this replica closed because a revocation covered them",
            revocation_connections_closed.clone(),
        );
        let session_registry_failures = Counter::default();
        registry.register(
            "session_registry_failures",
            "Admitted connections that could not be filed in the shared session registry (a revocation then finds them only through the replica that admitted them)",
            session_registry_failures.clone(),
        );
        let http_connections_refused = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "http_connections_refused",
            "Connections to an HTTP listener closed unserved because their source or the listener held as many as allowed, by listener (http, backchannel)",
            http_connections_refused.clone(),
        );
        for listener in HTTP_LISTENERS {
            let _ = http_connections_refused.get_or_create(&ListenerLabels { listener });
        }
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
            xkey_mismatches,
            backchannel_logouts,
            revocations,
            revocation_connections_closed,
            session_registry_failures,
            http_connections_refused,
        }
    }

    /// A connection to `listener` (one of [`HTTP_LISTENERS`]) closed
    /// unserved for being over a cap.
    pub(crate) fn record_connection_refused(&self, listener: &'static str) {
        self.http_connections_refused
            .get_or_create(&ListenerLabels { listener })
            .inc();
    }

    /// One revocation enforced here. The
    /// signal comes from the bucket, which an admin writes: only the known
    /// ones become label values.
    pub(crate) fn record_revocation(&self, signal: &str) {
        let signal = REVOCATION_SIGNALS
            .into_iter()
            .find(|known| *known == signal)
            .unwrap_or("other");
        self.revocations
            .get_or_create(&RevocationLabels { signal })
            .inc();
    }

    /// One back-channel logout request's outcome; `issuer` is the config
    /// name of the issuer its token was routed to, if any.
    pub(crate) fn record_backchannel_logout(&self, issuer: Option<&str>, outcome: LogoutOutcome) {
        self.backchannel_logouts
            .get_or_create(&BackchannelLabels {
                issuer: issuer.unwrap_or(UNKNOWN_ISSUER).to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
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

    /// The Prometheus text exposition format 0.0.4.
    pub fn render_prometheus(&self) -> String {
        openmetrics_to_prometheus(&self.render())
    }
}

/// The content type of [`Metrics::render`].
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`Metrics::render_prometheus`].
pub(crate) const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header prefers OpenMetrics over the
/// Prometheus text format (as Prometheus itself asks); anything else,
/// no header included, gets the Prometheus text format.
pub(crate) fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let (mut openmetrics, mut text) = (0.0f32, 0.0f32);
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "application/openmetrics-text" => openmetrics = openmetrics.max(q),
            "text/plain" | "text/*" | "*/*" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// OpenMetrics → Prometheus text 0.0.4: a counter family `x` is written
/// as `x_total` in its `# HELP` and `# TYPE` lines (its samples already
/// are), `# UNIT` and `# EOF` lines go. Every family keeps its HELP and
/// TYPE, which `promtool check metrics` requires.
fn openmetrics_to_prometheus(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let lines: Vec<&str> = openmetrics.lines().collect();
    let counter_family = |name: &str| {
        lines
            .iter()
            .any(|l| l.strip_prefix("# TYPE ") == Some(&format!("{name} counter")))
    };
    for line in &lines {
        if *line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = comment {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counter_family(name) && !name.ends_with("_total") {
                out.push_str(&format!("{prefix}{name}_total {tail}"));
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
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

    /// Every sample of the Prometheus text format belongs to a family
    /// with HELP and TYPE lines of its own name (what promtool checks).
    #[test]
    fn the_prometheus_text_format_names_help_and_type_for_every_sample() {
        let metrics = Metrics::new();
        metrics.record_decision(Outcome::Allowed, 0.001);
        metrics.record_fetch("default", true);
        metrics.record_keys("default", 2, 1.0);
        metrics.token_cache_hits.inc();
        metrics.record_backchannel_logout(None, LogoutOutcome::Refused);
        let text = metrics.render_prometheus();
        assert!(!text.contains("# EOF"), "{text}");
        let mut helped = std::collections::BTreeSet::new();
        let mut typed = std::collections::BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                helped.insert(rest.split(' ').next().unwrap().to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                typed.insert(name.to_string(), kind.to_string());
            } else {
                let name = line.split(['{', ' ']).next().unwrap();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains_key(*f)))
                    .unwrap_or(name);
                assert!(helped.contains(family), "no HELP for {name}:\n{text}");
                assert!(typed.contains_key(family), "no TYPE for {name}:\n{text}");
            }
        }
        assert_eq!(
            typed["nats_oidc_callout_authorizations_total"], "counter",
            "{text}"
        );
        assert_eq!(
            typed["nats_oidc_callout_decision_duration_seconds"],
            "histogram"
        );
    }

    /// The book's metrics table names exactly the families served, by
    /// the names the Prometheus text format gives them.
    #[test]
    fn the_book_metrics_table_lists_exactly_these_families() {
        let page = include_str!("../docs/src/operations/metrics.md");
        let documented: std::collections::BTreeSet<String> = page
            .lines()
            .skip_while(|l| !l.starts_with("| metric"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|row| row.split('`').nth(1).map(str::to_string))
            .collect();
        // A family with no sample yet is left out of the exposition.
        let metrics = Metrics::new();
        metrics.record_decision(Outcome::Allowed, 0.001);
        metrics.record_fetch("default", true);
        metrics.record_keys("default", 2, 1.0);
        metrics.record_binding("orders-deploy");
        metrics.record_backchannel_logout(Some("default"), LogoutOutcome::Accepted);
        let served: std::collections::BTreeSet<String> = metrics
            .render_prometheus()
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next().map(str::to_string))
            .collect();
        assert_eq!(
            documented, served,
            "docs/src/operations/metrics.md table vs /metrics"
        );
    }

    #[test]
    fn openmetrics_only_when_the_scraper_prefers_it() {
        // Prometheus 2.x's own Accept header.
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "application/openmetrics-text;q=0.2,text/plain;q=0.9"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
