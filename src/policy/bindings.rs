//! `[[bindings]]`: roles given to tokens by what their claims say, for
//! workload tokens (CI jobs, pods, cloud service accounts) that carry no
//! roles claim.

use serde_json::{Map, Value};

use crate::policy::claim_match::{first_miss, ClaimMatch, Pattern};
use crate::policy::claims::ClaimPath;
use crate::policy::platforms::Platform;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// `name`, or `<issuer>[<index>]` by its place in the file: in logs
    /// and metrics.
    pub name: String,
    /// Every one must hold.
    pub matches: Vec<ClaimMatch>,
    /// Role table names, already in the issuer's namespace.
    pub roles: Vec<String>,
    pub broad: bool,
}

impl Binding {
    /// Whether the claims match; if not, why (for `explain`).
    pub fn check(&self, claims: &Map<String, Value>) -> Result<(), String> {
        match first_miss(&self.matches, claims) {
            None => Ok(()),
            Some((m, miss)) => Err(m.explain(&miss)),
        }
    }

    /// A binding of an issuer of `platform` must pin one workload exactly,
    /// or say `broad`.
    pub fn check_pinned(&self, platform: Platform) -> Result<(), String> {
        if self.broad || self.pin(platform).is_some() {
            return Ok(());
        }
        Err(format!(
            "pins no single workload: match one of {:?} exactly (no '*'{}), or say broad = true to admit every token these claims describe{}",
            platform.pinning_claims(),
            if platform == Platform::GitHub {
                "; a sub in the repo:<owner>/<name>:... form; job_workflow_ref is carried by every repository that calls the workflow"
            } else {
                ""
            },
            self.github_hint(platform),
        ))
    }

    /// Why GitHub's pins do not pin here, when the binding names one: the
    /// issuer's platform is not GitHub (its URL is not GitHub's and the
    /// config does not declare it).
    fn github_hint(&self, platform: Platform) -> String {
        match self.pin(Platform::GitHub) {
            Some(m) if platform != Platform::GitHub => format!(
                "; the issuer's platform is {platform}, where {:?} names no workload: if the issuer is GitHub's (Enterprise Server, a proxy), declare platform = \"github\" in its [oidc] block",
                m.name
            ),
            _ => String::new(),
        }
    }

    /// The exact pin that makes this binding safe without `broad`, if any,
    /// for a binding of an issuer of `platform`.
    pub fn pin(&self, platform: Platform) -> Option<&ClaimMatch> {
        let claims = platform.pinning_claims();
        self.matches.iter().find(|m| {
            let Some(name) = top_level(&m.path) else {
                return false;
            };
            m.is_exact()
                && claims.contains(&name)
                && (name != "sub"
                    || platform != Platform::GitHub
                    || m.any_of.iter().all(|p| match p {
                        Pattern::Exact(v) => v.starts_with("repo:"),
                        Pattern::Glob(_) => false,
                    }))
        })
    }
}

/// The claim a path names when it is a top-level one.
fn top_level(path: &ClaimPath) -> Option<&str> {
    match path {
        ClaimPath::Dotted(parts) if parts.len() == 1 => Some(parts[0].as_str()),
        ClaimPath::Pointer(p) if p.matches('/').count() == 1 && !p.contains('~') => Some(&p[1..]),
        _ => None,
    }
}

/// The bindings an issuer's token matches. Runs on every connect, so no
/// explanation of a miss is written (`Binding::check` does that, for
/// `explain`).
pub(crate) fn matched<'a>(
    bindings: &'a [Binding],
    claims: &Map<String, Value>,
) -> Vec<&'a Binding> {
    bindings
        .iter()
        .filter(|b| first_miss(&b.matches, claims).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::platforms::GITHUB_ISSUER;
    use serde_json::json;

    fn m(name: &str, values: &[&str]) -> ClaimMatch {
        ClaimMatch {
            name: name.into(),
            path: ClaimPath::parse(name).unwrap(),
            any_of: values.iter().map(|v| Pattern::parse(v)).collect(),
        }
    }

    fn binding(matches: Vec<ClaimMatch>) -> Binding {
        Binding {
            name: "b".into(),
            matches,
            roles: vec!["r".into()],
            broad: false,
        }
    }

    #[test]
    fn only_an_exact_value_of_a_pinning_claim_of_the_platform_pins() {
        let gh = Platform::recognised(GITHUB_ISSUER);
        let k8s = Platform::recognised("https://kubernetes.default.svc");
        let b = |m: ClaimMatch| binding(vec![m]);
        assert!(b(m("sub", &["system:serviceaccount:a:b"]))
            .pin(k8s)
            .is_some());
        assert!(b(m("/sub", &["x"])).pin(k8s).is_some());
        assert!(b(m("repository_id", &["1", "2"])).pin(gh).is_some());
        assert!(b(m("repository", &["acme/orders"])).pin(gh).is_some());
        assert!(b(m("sub", &["repo:acme/orders:ref:refs/heads/main"]))
            .pin(gh)
            .is_some());
        assert!(
            b(m(
                "sub",
                &["repo:acme/orders:ref:refs/heads/main", "environment:prod"]
            ))
            .pin(gh)
            .is_none(),
            "a customised GitHub sub without the repository names no one repository"
        );
        assert!(
            b(m(
                "job_workflow_ref",
                &["acme/ci/.github/workflows/d.yml@refs/heads/main"]
            ))
            .pin(gh)
            .is_none(),
            "every caller of a reusable workflow carries its ref"
        );
        assert!(
            b(m("repository_id", &["1"])).pin(k8s).is_none(),
            "GitHub's claim names mean nothing elsewhere"
        );
        assert!(b(m("repository_id", &["1"]))
            .pin(Platform::recognised(
                "https://token.actions.githubusercontent.com/acme-enterprise"
            ))
            .is_some());
        assert!(b(m("repository_id", &["1"]))
            .pin(Platform::recognised(
                "https://token.actions.githubusercontent.com.evil.example"
            ))
            .is_none());
        assert!(b(m("repository_id", &["1"]))
            .pin(Platform::recognised(
                "https://github.acme.example/_services/token"
            ))
            .is_some());
        assert!(b(m("sub", &["system:serviceaccount:a:*"]))
            .pin(k8s)
            .is_none());
        assert!(b(m("repository_owner", &["acme"])).pin(gh).is_none());
        assert!(b(m("/kubernetes.io/namespace", &["a"])).pin(k8s).is_none());
        assert!(b(m("a.sub", &["x"])).pin(k8s).is_none());
        assert!(b(m("/su~0b", &["x"])).pin(k8s).is_none());
    }

    #[test]
    fn a_github_pin_elsewhere_says_how_to_declare_the_platform() {
        let by_id = binding(vec![m("repository_id", &["74"])]);
        assert_eq!(by_id.check_pinned(Platform::GitHub), Ok(()));
        let why = by_id.check_pinned(Platform::Generic).unwrap_err();
        assert!(
            why.ends_with("; the issuer's platform is generic, where \"repository_id\" names no workload: if the issuer is GitHub's (Enterprise Server, a proxy), declare platform = \"github\" in its [oidc] block"),
            "{why}"
        );
        let why = binding(vec![m("repository_owner", &["acme"])])
            .check_pinned(Platform::Generic)
            .unwrap_err();
        assert!(
            !why.contains("platform ="),
            "no GitHub pin either, so no hint: {why}"
        );
    }

    #[test]
    fn every_listed_claim_must_match() {
        let b = binding(vec![
            m("repository", &["acme/orders"]),
            m("ref", &["refs/heads/main"]),
        ]);
        let claims = |v: Value| v.as_object().unwrap().clone();
        assert!(b
            .check(&claims(
                json!({"repository": "acme/orders", "ref": "refs/heads/main"})
            ))
            .is_ok());
        let why = b
            .check(&claims(
                json!({"repository": "acme/orders", "ref": "refs/heads/dev"}),
            ))
            .unwrap_err();
        assert_eq!(
            why,
            "claim ref is \"refs/heads/dev\" (wanted ref = \"refs/heads/main\")"
        );
    }
}
