//! What is known about the identity platforms whose issuers are shared by
//! all their customers (GitHub Actions, Google, GitLab.com): which claims
//! name one workload, and which name one customer. Bindings use it to
//! decide when a match is pinned; `check` to say when an issuer is open to
//! every customer of its platform.

/// GitHub Actions' issuer; GitHub Enterprise Cloud's per-enterprise
/// issuers are below it.
pub(crate) const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";

/// Whether `issuer` is GitHub Actions': github.com's, an enterprise's below
/// it, or a GitHub Enterprise Server's (`https://HOST/_services/token`).
pub(crate) fn is_github(issuer: &str) -> bool {
    let issuer = issuer.trim_end_matches('/');
    issuer == GITHUB_ISSUER
        || issuer
            .strip_prefix(GITHUB_ISSUER)
            .is_some_and(|rest| rest.starts_with('/'))
        || (issuer.starts_with("https://") && issuer.ends_with("/_services/token"))
}

/// The claims that name one workload on an issuer's platform, which a
/// binding must match exactly unless it says `broad = true`. On GitHub: the
/// repository (its id, or its name), or a `sub` in the default
/// `repo:<owner>/<name>:...` form; not `job_workflow_ref`, which every
/// repository that calls the reusable workflow carries, nor a customised
/// `sub` without the repository. Elsewhere only `sub` names a workload; a
/// claim called `repository` there means whatever that issuer makes it mean.
pub(crate) fn pinning_claims(issuer: &str) -> &'static [&'static str] {
    if is_github(issuer) {
        &["sub", "repository_id", "repository"]
    } else {
        &["sub"]
    }
}

/// A platform whose issuer mints tokens for anyone with an account there:
/// its name and the claims that name one customer exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SharedIssuer {
    pub platform: &'static str,
    pub owner_claims: &'static [&'static str],
}

/// The shared platform behind `issuer`, if it is one.
pub(crate) fn shared_issuer(issuer: &str) -> Option<SharedIssuer> {
    let (platform, owner_claims): (_, &'static [&'static str]) = if is_github(issuer) {
        (
            "GitHub Actions",
            &["repository_owner_id", "repository_owner", "repository_id"],
        )
    } else {
        match issuer.trim_end_matches('/') {
            "https://accounts.google.com" => ("Google", &["sub", "email", "hd"]),
            "https://gitlab.com" => (
                "GitLab.com",
                &[
                    "namespace_id",
                    "namespace_path",
                    "project_id",
                    "project_path",
                ],
            ),
            _ => return None,
        }
    };
    Some(SharedIssuer {
        platform,
        owner_claims,
    })
}
