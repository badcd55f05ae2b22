//! How one issuer's claims are read: above `claims` (paths and values),
//! `claim_match` and `bindings` (which use claim paths), so none of them
//! needs another's upper half.

use crate::policy::bindings::Binding;
use crate::policy::claim_match::ClaimMatch;
use crate::policy::claims::{ClaimPath, EmailVerified};
use crate::policy::platforms::IssuerPlatform;

/// How one issuer's verified claims name the user, its roles and the
/// scopes it is entitled to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimMapping {
    pub user_claim: ClaimPath,
    /// `None` for an issuer whose tokens get roles only from bindings (or
    /// the KV bucket).
    pub roles_claim: Option<ClaimPath>,
    /// Claims every token of this issuer must carry (`require_claims`).
    pub required: Vec<ClaimMatch>,
    /// `[[bindings]]` naming this issuer, in file order.
    pub bindings: Vec<Binding>,
    /// The platform behind the issuer: which claims pin a workload in its
    /// bindings, and whether every customer of the platform can mint its
    /// tokens.
    pub platform: IssuerPlatform,
    pub email_verified: EmailVerified,
    /// The claim listing the scopes a user is entitled to, if any.
    pub scopes_claim: Option<ClaimPath>,
    /// Token roles of this issuer are looked up as `[roles."<namespace>:<role>"]`;
    /// `None` looks them up as written. Separate namespaces keep one identity
    /// provider from minting another's roles.
    pub role_namespace: Option<String>,
}
