//! Lints about who can log in: issuers, the platforms behind them,
//! bindings, and the passwords of `[users.*]`.

use super::Lint;
use crate::config::Config;
use crate::policy::platforms::Platform;
use crate::policy::users::{bcrypt_cost, Credential};

/// The names of the issuers that look roles up without a namespace.
pub(super) fn sharing_plain_roles(config: &Config) -> Vec<&str> {
    config
        .oidc
        .iter()
        .filter(|o| o.claims.role_namespace.is_none())
        .map(|o| o.settings.name.as_str())
        .collect()
}

pub(super) const SHARED_ROLE_TABLE: Lint = Lint {
    name: "shared-role-table",
    doc: "Several issuers look roles up in the plain [roles.*] table: each can grant the \
          other's roles.",
    find: |config| {
        let shared = sharing_plain_roles(config);
        if shared.len() < 2 {
            return Vec::new();
        }
        vec![format!(
            "issuers {shared:?} share the plain [roles.*] table (role_namespace = \"\"): each can grant the other's roles by naming them in its tokens"
        )]
    },
    example: "[[oidc]]\nname = \"a\"\nissuer = \"https://a.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\nrole_namespace = \"\"\n\n[[oidc]]\nname = \"b\"\nissuer = \"https://b.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\nrole_namespace = \"\"\n",
};

pub(super) const SHARED_ISSUER: Lint = Lint {
    name: "shared-issuer",
    doc: "An issuer that mints tokens for every customer of its platform (GitHub Actions, \
          Google, GitLab; recognised from its URL or declared) without require_claims pinning \
          your organisation exactly.",
    find: |config| {
        let mut out = Vec::new();
        for issuer in &config.oidc {
            let url = &issuer.settings.issuer;
            let platform = issuer.claims.platform.platform;
            let Some(owners) = platform.owner_claims() else {
                continue;
            };
            // Only an exact owner narrows a shared issuer to one customer.
            let narrowed = issuer.claims.required.iter().any(|m| {
                m.is_exact()
                    && owners
                        .iter()
                        .any(|o| m.name == *o || m.name == format!("/{o}"))
            });
            if !narrowed {
                out.push(format!(
                    "oidc[{}]: {url} is the shared issuer of {}: every one of its customers can mint a token for your audience; set require_claims to your organisation exactly (one of {owners:?}), without which only the exact pins of bindings keep their tokens out",
                    issuer.settings.name, platform
                ));
            }
        }
        out
    },
    example: "[oidc]\nissuer = \"https://accounts.google.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\n",
};

pub(super) const REPOSITORY_BY_NAME: Lint = Lint {
    name: "repository-by-name",
    doc: "A GitHub binding pins the repository by name, which someone else can take after a \
          rename or deletion.",
    find: |config| {
        let mut out = Vec::new();
        for issuer in &config.oidc {
            let platform = issuer.claims.platform.platform;
            for b in issuer.claims.bindings.iter().filter(|b| !b.broad) {
                let by_name = b
                    .pin(platform)
                    .is_some_and(|p| p.name == "repository" || p.name == "/repository");
                let by_id = b
                    .matches
                    .iter()
                    .any(|m| m.name == "repository_id" && m.is_exact());
                if platform == Platform::GitHub && by_name && !by_id {
                    out.push(format!(
                        "binding {} pins the repository by name: after a rename or deletion someone else can take the name; pin repository_id (and require repository_owner_id on the issuer)",
                        b.name
                    ));
                }
            }
        }
        out
    },
    example: "[[oidc]]\nname = \"gh\"\nissuer = \"https://token.actions.githubusercontent.com\"\naudience = \"nats\"\nrequire_claims = { repository_owner_id = \"42\" }\n\n[roles.\"gh:reader\"]\nsub.allow = [\"orders.>\"]\n\n[[bindings]]\nissuer = \"gh\"\nmatch = { repository = \"acme/app\" }\nroles = [\"reader\"]\n",
};

pub(super) const BROAD_BINDING: Lint = Lint {
    name: "broad-binding",
    doc: "A binding with broad = true: every token of its issuer that matches gets its \
          roles, whichever workload it names.",
    find: |config| {
        let mut out = Vec::new();
        for issuer in &config.oidc {
            let platform = issuer.claims.platform.platform;
            for b in issuer.claims.bindings.iter().filter(|b| b.broad) {
                let wanted: Vec<String> = b.matches.iter().map(|m| m.wanted()).collect();
                let whichever = match b.pin(platform) {
                    Some(_) => String::new(),
                    None => format!(
                        ", whichever workload it names (no exact {})",
                        platform.pinning_claims().join(", ")
                    ),
                };
                out.push(format!(
                    "binding {} is broad: every token of issuer {} with {} gets roles {:?}{whichever}",
                    b.name,
                    issuer.settings.name,
                    wanted.join(" and "),
                    b.roles,
                ));
            }
        }
        out
    },
    example: "[[oidc]]\nname = \"k8s\"\nissuer = \"https://k8s.example.com\"\naudience = \"nats\"\n\n[roles.\"k8s:reader\"]\nsub.allow = [\"orders.>\"]\n\n[[bindings]]\nissuer = \"k8s\"\nmatch = { \"/kubernetes.io/namespace\" = \"orders\" }\nroles = [\"reader\"]\nbroad = true\n",
};

pub(super) const PLATFORM_CONTRADICTS_URL: Lint = Lint {
    name: "platform-contradicts-url",
    doc: "An issuer whose declared platform (oidc.platform) is not the one its URL is \
          recognised as, where both pin by the same claims (a declaration that would change \
          them is a config error): the name shown by explain and the lints is the declared one.",
    find: |config| {
        let mut out = Vec::new();
        for issuer in &config.oidc {
            let url = &issuer.settings.issuer;
            let declared = issuer.claims.platform;
            if let Some(recognised) = declared.contradicted_by(url) {
                out.push(format!(
                    "oidc[{}]: platform = {:?}, but its issuer {url} is recognised as {recognised}: its bindings and require_claims are judged as {} (pins: {}) rather than {recognised} (pins: {}); leave platform out unless this URL serves another platform's tokens",
                    issuer.settings.name,
                    declared.platform.config_name(),
                    declared.platform,
                    declared.platform.pinning_claims().join(", "),
                    recognised.pinning_claims().join(", "),
                ));
            }
        }
        out
    },
    example: "[oidc]\nissuer = \"https://kubernetes.default.svc\"\naudience = \"nats\"\nroles_claim = \"roles\"\nplatform = \"generic\"\n",
};

pub(super) const BCRYPT_COST: Lint = Lint {
    name: "bcrypt-cost",
    doc: "A [users.*] bcrypt hash that is cheap to guess (cost below 10) or too slow for \
          nats-server's auth timeout (cost 14 or more).",
    find: |config| {
        let mut out = Vec::new();
        for user in &config.users {
            let Credential::Bcrypt(hash) = &user.credential else {
                continue;
            };
            let cost = bcrypt_cost(hash).unwrap_or(0);
            if cost < 10 {
                out.push(format!(
                    "users.{}.password_bcrypt has bcrypt cost {cost}: below 10 a stolen config makes the password cheap to guess",
                    user.name
                ));
            } else if cost >= 14 {
                out.push(format!(
                    "users.{}.password_bcrypt has bcrypt cost {cost}: a check takes a second or more, which must fit in nats-server's auth timeout (2 s by default) together with any wait for a free core",
                    user.name
                ));
            }
        }
        out
    },
    example: "[users.svc]\npassword_bcrypt = \"$2b$09$C001kiHOPehbP4wWw.nyb.Cpsl9Bkm.pP4YXK4Vj50QnUdwexHlmy\"\nroles = [\"reader\"]\n",
};
