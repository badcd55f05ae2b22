//! What is known about the identity platforms behind issuers: which claims
//! name one workload, and, for platforms whose issuers are shared by all
//! their customers (GitHub Actions, Google, GitLab), which name one
//! customer. Bindings use it to decide when a match is pinned; `check` to
//! say when an issuer is open to every customer of its platform.
//!
//! An issuer's platform is recognised from its URL, or declared in the
//! config (`oidc.platform`) for a URL that is not the one recognised: a
//! GitHub Enterprise Server behind another path, a proxy, a test issuer.

use std::fmt;
use std::str::FromStr;

/// GitHub Actions' issuer; GitHub Enterprise Cloud's per-enterprise
/// issuers are below it.
pub(crate) const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// The platforms whose claims the bindings know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    GitHub,
    Kubernetes,
    Google,
    GitLab,
    /// Any other OpenID Provider: only `sub` is known to name someone.
    Generic,
}

impl Platform {
    /// Every platform, in the order the config's error lists their names.
    pub(crate) const ALL: [Platform; 5] = [
        Platform::GitHub,
        Platform::Kubernetes,
        Platform::Google,
        Platform::GitLab,
        Platform::Generic,
    ];

    /// The platform an issuer URL is known to be; `Generic` for any other.
    pub(crate) fn recognised(issuer: &str) -> Platform {
        let issuer = issuer.trim_end_matches('/');
        if is_github(issuer) {
            Platform::GitHub
        } else if issuer == "https://accounts.google.com" {
            Platform::Google
        } else if issuer == "https://gitlab.com" {
            Platform::GitLab
        } else if is_kubernetes(issuer) {
            Platform::Kubernetes
        } else {
            Platform::Generic
        }
    }

    /// Its name in the config (`platform = "github"`).
    pub(crate) fn config_name(self) -> &'static str {
        match self {
            Platform::GitHub => "github",
            Platform::Kubernetes => "kubernetes",
            Platform::Google => "google",
            Platform::GitLab => "gitlab",
            Platform::Generic => "generic",
        }
    }

    /// The claims that name one workload on this platform, which a binding
    /// must match exactly unless it says `broad = true`. On GitHub: the
    /// repository (its id, or its name), or a `sub` in the default
    /// `repo:<owner>/<name>:...` form (`Binding::pin` checks the form); not
    /// `job_workflow_ref`, which every repository that calls the reusable
    /// workflow carries, nor a customised `sub` without the repository.
    /// Elsewhere only `sub` names a workload (on Kubernetes
    /// `system:serviceaccount:<namespace>:<name>`); a claim called
    /// `repository` there means whatever that issuer makes it mean.
    pub(crate) fn pinning_claims(self) -> &'static [&'static str] {
        match self {
            Platform::GitHub => &["sub", "repository_id", "repository"],
            _ => &["sub"],
        }
    }

    /// The claims that name one customer exactly, when the platform's
    /// issuer mints tokens for anyone with an account there. A cluster's
    /// issuer, or an organisation's own provider, is not shared.
    pub(crate) fn owner_claims(self) -> Option<&'static [&'static str]> {
        match self {
            Platform::GitHub => Some(&["repository_owner_id", "repository_owner", "repository_id"]),
            Platform::Google => Some(&["sub", "email", "hd"]),
            Platform::GitLab => Some(&[
                "namespace_id",
                "namespace_path",
                "project_id",
                "project_path",
            ]),
            Platform::Kubernetes | Platform::Generic => None,
        }
    }
}

/// Its name for people: in `explain` and in `check`'s warnings.
impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::GitHub => "GitHub Actions",
            Platform::Kubernetes => "Kubernetes",
            Platform::Google => "Google",
            Platform::GitLab => "GitLab",
            Platform::Generic => "generic",
        })
    }
}

/// The config's name of a platform; the error lists the names there are.
impl FromStr for Platform {
    type Err = String;

    fn from_str(name: &str) -> Result<Platform, String> {
        Platform::ALL
            .into_iter()
            .find(|p| p.config_name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Platform::ALL.iter().map(|p| p.config_name()).collect();
                format!(
                    "{:?} is not a platform the bindings know: one of {names:?}",
                    crate::text::clip(name)
                )
            })
    }
}

/// An issuer's platform, and whether the config declared it or it was
/// recognised from the issuer's URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IssuerPlatform {
    pub platform: Platform,
    pub declared: bool,
}

impl IssuerPlatform {
    /// The declared platform of the issuer at `url`, else its URL's.
    pub(crate) fn of(url: &str, declared: Option<Platform>) -> IssuerPlatform {
        match declared {
            Some(platform) => IssuerPlatform {
                platform,
                declared: true,
            },
            None => IssuerPlatform {
                platform: Platform::recognised(url),
                declared: false,
            },
        }
    }

    /// The platform the issuer's URL says it is, when the config declared
    /// another. A URL recognised as no platform contradicts nothing: that
    /// is what declaring is for.
    pub(crate) fn contradicted_by(self, url: &str) -> Option<Platform> {
        let recognised = Platform::recognised(url);
        (self.declared && recognised != Platform::Generic && recognised != self.platform)
            .then_some(recognised)
    }

    /// The platform the issuer's URL says it is, when the declared one
    /// would pin workloads or name customers by other claims there: a
    /// declaration may name a platform the URL does not show, never
    /// loosen or alter the rules of one it does.
    pub(crate) fn changes_the_rules_of(self, url: &str) -> Option<Platform> {
        self.contradicted_by(url).filter(|recognised| {
            recognised.pinning_claims() != self.platform.pinning_claims()
                || recognised.owner_claims() != self.platform.owner_claims()
        })
    }

    /// The platform and where it comes from, for `explain`.
    pub(crate) fn describe(self) -> String {
        let source = match (self.declared, self.platform) {
            (true, p) => format!("declared: platform = {:?}", p.config_name()),
            (false, Platform::Generic) => {
                "none recognised from the issuer URL; platform = \"...\" declares one".into()
            }
            (false, _) => "recognised from the issuer URL".into(),
        };
        format!(
            "{} ({source}); bindings pin by {}",
            self.platform,
            self.platform.pinning_claims().join(", ")
        )
    }
}

/// Whether `issuer` is GitHub Actions': github.com's, an enterprise's below
/// it, or a GitHub Enterprise Server's (`https://HOST/_services/token`).
fn is_github(issuer: &str) -> bool {
    issuer == GITHUB_ISSUER
        || issuer
            .strip_prefix(GITHUB_ISSUER)
            .is_some_and(|rest| rest.starts_with('/'))
        || (issuer.starts_with("https://") && issuer.ends_with("/_services/token"))
}

/// Whether `issuer` is a Kubernetes cluster's service-account issuer by the
/// names clusters are given: the API server's in-cluster name
/// (`kubernetes.default.svc`, with or without the cluster domain), or a
/// managed cluster's public issuer on EKS, GKE or AKS.
fn is_kubernetes(issuer: &str) -> bool {
    let Some(rest) = issuer.strip_prefix("https://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let in_cluster = host == "kubernetes.default.svc"
        || host
            .strip_prefix("kubernetes.default.svc.")
            .is_some_and(is_domain);
    let eks = host
        .strip_prefix("oidc.eks.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .is_some_and(is_label)
        && path.strip_prefix("id/").is_some_and(is_label);
    let gke = host == "container.googleapis.com" && path.starts_with("v1/projects/");
    let aks = host
        .strip_suffix(".oic.prod-aks.azure.com")
        .is_some_and(is_label)
        && !path.is_empty();
    (in_cluster && path.is_empty()) || eks || gke || aks
}

/// One DNS label (a region, a cluster id): letters, digits and '-'.
fn is_label(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

/// Labels joined by dots (a cluster domain such as `cluster.local`).
fn is_domain(s: &str) -> bool {
    s.split('.').all(is_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_are_recognised_by_their_issuer_urls() {
        let cases = [
            (GITHUB_ISSUER, Platform::GitHub),
            ("https://token.actions.githubusercontent.com/", Platform::GitHub),
            (
                "https://token.actions.githubusercontent.com/acme-enterprise",
                Platform::GitHub,
            ),
            ("https://github.acme.example/_services/token", Platform::GitHub),
            ("https://accounts.google.com", Platform::Google),
            ("https://gitlab.com/", Platform::GitLab),
            ("https://kubernetes.default.svc", Platform::Kubernetes),
            (
                "https://kubernetes.default.svc.cluster.local",
                Platform::Kubernetes,
            ),
            (
                "https://oidc.eks.eu-west-1.amazonaws.com/id/0123456789ABCDEF0123456789ABCDEF",
                Platform::Kubernetes,
            ),
            (
                "https://container.googleapis.com/v1/projects/p/locations/europe-west1/clusters/c",
                Platform::Kubernetes,
            ),
            (
                "https://westeurope.oic.prod-aks.azure.com/00000000-0000-0000-0000-000000000000/11111111-1111-1111-1111-111111111111/",
                Platform::Kubernetes,
            ),
            ("https://idp.example.com/realms/demo", Platform::Generic),
            ("http://127.0.0.1:8080", Platform::Generic),
        ];
        for (url, platform) in cases {
            assert_eq!(Platform::recognised(url), platform, "{url}");
        }
    }

    #[test]
    fn look_alike_urls_are_no_platform() {
        for url in [
            "https://token.actions.githubusercontent.com.evil.example",
            "http://token.actions.githubusercontent.com",
            "http://github.acme.example/_services/token",
            "https://accounts.google.com.evil.example",
            "https://gitlab.com/acme",
            "https://gitlab.acme.example",
            "https://kubernetes.default.svc/evil",
            "https://kubernetes.default.svc..",
            "https://kubernetes.default.svc.evil/path",
            "https://oidc.eks.eu-west-1.amazonaws.com.evil.example/id/1",
            "https://oidc.eks.eu-west-1.amazonaws.com/id/1/more",
            "https://oidc.eks.eu-west-1.amazonaws.com",
            "https://evil.example/oidc.eks.eu-west-1.amazonaws.com/id/1",
            "https://container.googleapis.com/v2/x",
            "https://westeurope.oic.prod-aks.azure.com.evil.example/t/i",
            "https://westeurope.oic.prod-aks.azure.com",
        ] {
            assert_eq!(Platform::recognised(url), Platform::Generic, "{url}");
        }
    }

    #[test]
    fn config_names_parse_and_an_unknown_one_lists_them() {
        for p in Platform::ALL {
            assert_eq!(p.config_name().parse::<Platform>(), Ok(p));
        }
        assert_eq!(
            "GitHub".parse::<Platform>(),
            Err("\"GitHub\" is not a platform the bindings know: one of [\"github\", \"kubernetes\", \"google\", \"gitlab\", \"generic\"]".into())
        );
    }

    #[test]
    fn only_github_knows_repository_pins_and_only_public_platforms_are_shared() {
        assert_eq!(
            Platform::GitHub.pinning_claims(),
            ["sub", "repository_id", "repository"]
        );
        for p in [
            Platform::Kubernetes,
            Platform::Google,
            Platform::GitLab,
            Platform::Generic,
        ] {
            assert_eq!(p.pinning_claims(), ["sub"], "{p}");
        }
        assert!(Platform::Kubernetes.owner_claims().is_none());
        assert!(Platform::Generic.owner_claims().is_none());
        assert!(Platform::Google.owner_claims().is_some());
    }

    #[test]
    fn explain_says_where_the_platform_comes_from() {
        assert_eq!(
            IssuerPlatform::of("http://127.0.0.1:8080", Some(Platform::GitHub)).describe(),
            "GitHub Actions (declared: platform = \"github\"); bindings pin by sub, repository_id, repository"
        );
        assert_eq!(
            IssuerPlatform::of("https://kubernetes.default.svc", None).describe(),
            "Kubernetes (recognised from the issuer URL); bindings pin by sub"
        );
        assert_eq!(
            IssuerPlatform::of("http://127.0.0.1:8080", None).describe(),
            "generic (none recognised from the issuer URL; platform = \"...\" declares one); bindings pin by sub"
        );
    }

    #[test]
    fn a_declaration_contradicts_only_a_recognised_other_platform() {
        let declared = |p| IssuerPlatform::of("", Some(p));
        assert_eq!(
            declared(Platform::Generic).contradicted_by(GITHUB_ISSUER),
            Some(Platform::GitHub)
        );
        assert_eq!(
            declared(Platform::GitHub).contradicted_by("https://accounts.google.com"),
            Some(Platform::Google)
        );
        assert_eq!(
            declared(Platform::GitHub).contradicted_by(GITHUB_ISSUER),
            None
        );
        assert_eq!(
            declared(Platform::GitHub).contradicted_by("https://ghes.acme.example/proxy"),
            None
        );
        let recognised = IssuerPlatform::of(GITHUB_ISSUER, None);
        assert_eq!(recognised.platform, Platform::GitHub);
        assert_eq!(recognised.contradicted_by(GITHUB_ISSUER), None);
    }
}
