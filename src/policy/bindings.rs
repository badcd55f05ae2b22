//! `[[bindings]]`: roles given to tokens by what their claims say, for
//! workload tokens (CI jobs, pods, cloud service accounts) that carry no
//! roles claim.

use serde_json::{Map, Value};

use crate::policy::claim_match::{first_miss, ClaimMatch};
use crate::policy::claims::ClaimPath;

/// Claims that name one workload and cannot be chosen by another: a
/// binding must pin one of them exactly, or say `broad = true`.
pub const PINNING_CLAIMS: [&str; 4] = ["sub", "repository", "repository_id", "job_workflow_ref"];

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

    /// The exact pin that makes this binding safe without `broad`, if any.
    pub fn pin(&self) -> Option<&ClaimMatch> {
        self.matches.iter().find(|m| m.is_exact() && pins(&m.path))
    }
}

fn pins(path: &ClaimPath) -> bool {
    let name = match path {
        ClaimPath::Dotted(parts) if parts.len() == 1 => parts[0].as_str(),
        ClaimPath::Pointer(p) if p.matches('/').count() == 1 => &p[1..],
        _ => return false,
    };
    PINNING_CLAIMS.contains(&name)
}

/// The bindings an issuer's token matches.
pub fn matched<'a>(bindings: &'a [Binding], claims: &Map<String, Value>) -> Vec<&'a Binding> {
    bindings
        .iter()
        .filter(|b| b.check(claims).is_ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::claim_match::Pattern;
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
    fn only_an_exact_value_of_a_pinning_claim_pins() {
        assert!(binding(vec![m("sub", &["system:serviceaccount:a:b"])])
            .pin()
            .is_some());
        assert!(binding(vec![m("/sub", &["x"])]).pin().is_some());
        assert!(binding(vec![m("repository_id", &["1", "2"])])
            .pin()
            .is_some());
        assert!(binding(vec![m("sub", &["system:serviceaccount:a:*"])])
            .pin()
            .is_none());
        assert!(binding(vec![m("repository_owner", &["acme"])])
            .pin()
            .is_none());
        assert!(binding(vec![m("/kubernetes.io/namespace", &["a"])])
            .pin()
            .is_none());
        assert!(binding(vec![m("a.sub", &["x"])]).pin().is_none());
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
