//! The rules of a decision, with no network or file I/O: reading identity
//! and roles from verified claims (`claims`, `mapping`, and binding roles
//! to claims), subject syntax and templates, the role table with its
//! JetStream/KV grants (`streams`) and connection rules (`connection`),
//! scopes, identities from the config, the KV grants store, and what is
//! known about identity platforms (`platforms`: which claims pin a
//! workload, which issuers are shared). The one thing here that is
//! scheduled rather than computed in place is the bcrypt check of
//! `passwords`: CPU-bound, so it runs on blocking threads behind a bound (a
//! semaphore), and no other client waits for it.

pub(crate) mod bindings;
pub(crate) mod claim_match;
pub(crate) mod claims;
pub(crate) mod connection;
pub(crate) mod grants;
pub(crate) mod inbox;
pub(crate) mod layout;
pub(crate) mod mapping;
pub(crate) mod passwords;
pub(crate) mod platforms;
pub(crate) mod revocations;
pub(crate) mod roles;
pub(crate) mod scopes;
pub(crate) mod streams;
pub(crate) mod subject;
pub(crate) mod template;
pub(crate) mod users;

// What the tests and the test-support crate use of the rules.
pub use claim_match::Pattern;
pub use layout::Layout;
pub use roles::Role;
pub use streams::{
    account_hash, check_bucket, check_stream_name, Consumer, JetStreamGrant, JsHome, KvGrant,
    KvScope,
};
pub use subject::{check_permission_subject, names_reserved, overlaps};
