//! The config file's shape, as close to the TOML as possible: what serde
//! reads (unknown keys are errors) before anything is validated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub nats: RawNats,
    pub callout: RawCallout,
    pub oidc: RawOidcs,
    pub http: Option<RawHttp>,
    #[serde(default)]
    pub roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    pub users: BTreeMap<String, RawUser>,
    pub grants: Option<RawGrants>,
    #[serde(default)]
    pub bindings: Vec<RawBinding>,
    pub jetstream: Option<RawJetStreamAccount>,
    pub revocation: Option<RawRevocation>,
}

/// `[revocation]`: ending sessions when the identity provider (or an
/// admin) says so. One key for now; each new one is a field here.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRevocation {
    pub kv_bucket: Option<String>,
    pub max_token_lifetime: Option<String>,
    pub backchannel_listen: Option<String>,
    pub request_subject: Option<String>,
    pub system_user: Option<String>,
    pub system_password: Option<String>,
    pub system_creds_file: Option<PathBuf>,
}

/// `[jetstream]`: where the streams and buckets of the grants live.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJetStreamAccount {
    pub account: String,
    pub public_key: Option<String>,
    pub domain: Option<String>,
    pub same_account: Option<bool>,
    #[serde(default)]
    pub stream_subjects: Vec<String>,
}

/// `[[bindings]]`: roles for tokens whose claims match.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBinding {
    pub name: Option<String>,
    pub issuer: String,
    #[serde(rename = "match")]
    pub matches: BTreeMap<String, toml::Value>,
    pub roles: Vec<String>,
    pub broad: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGrants {
    pub kv_bucket: Option<String>,
    pub max_requested_scopes: Option<usize>,
}

/// `[users.<name>]`: an identity defined here rather than by an issuer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUser {
    pub password_bcrypt: Option<String>,
    pub nkey: Option<String>,
    pub roles: Option<Vec<String>>,
    #[serde(rename = "pub")]
    pub publish: Option<RawDirection>,
    #[serde(rename = "sub")]
    pub subscribe: Option<RawDirection>,
    pub account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNats {
    pub url: Option<OneOrMany>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    pub queue_group: Option<String>,
    pub name: Option<String>,
    pub tls: Option<RawNatsTls>,
}

/// `[nats.tls]`: nats-server's `tls {}` names, as the nats CLI's
/// `--tlsca`, `--tlscert` and `--tlskey` take them.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNatsTls {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub handshake_first: Option<bool>,
}

/// `callout.mode`: where nats-server keeps its accounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RawMode {
    /// In nats-server's config (`auth_callout` there).
    Server,
    /// As JWTs (the callout switched on in the callout account's JWT).
    Operator,
}

impl<'de> Deserialize<'de> for RawMode {
    /// By hand, for a message that says what each mode means.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            "server" => Ok(RawMode::Server),
            "operator" => Ok(RawMode::Operator),
            other => Err(serde::de::Error::custom(format!(
                "{} is not \"server\" (accounts in nats-server's config) or \"operator\" (accounts as JWTs)",
                if crate::secrets::has_seed_shape(other) {
                    "the value".to_string()
                } else {
                    format!("{:?}", crate::text::clip(other))
                }
            ))),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCallout {
    pub mode: Option<RawMode>,
    pub issuer_seed_file: Option<PathBuf>,
    pub issuer_seed: Option<String>,
    pub auth_account: Option<String>,
    pub xkey_seed_file: Option<PathBuf>,
    pub xkey_seed: Option<String>,
    pub account: String,
    pub max_user_ttl: Option<String>,
    pub max_token_bytes: Option<usize>,
    pub accounts: Option<BTreeMap<String, RawAccount>>,
}

/// `[callout.accounts.<name>]`: a target account in operator mode.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAccount {
    pub public_key: String,
    pub signing_key_seed_file: Option<PathBuf>,
    pub signing_key_seed: Option<String>,
}

/// `[oidc]` (one issuer) or `[[oidc]]` (several). Dispatching on the TOML
/// shape by hand, instead of `serde(untagged)`, keeps the precise message
/// and position of an error inside a block.
pub(super) enum RawOidcs {
    One(Box<RawOidc>),
    Many(Vec<RawOidc>),
}

impl<'de> Deserialize<'de> for RawOidcs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = RawOidcs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an [oidc] table or [[oidc]] blocks")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawOidcs, A::Error> {
                RawOidc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| RawOidcs::One(Box::new(one)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawOidcs, A::Error> {
                Vec::<RawOidc>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawOidcs::Many)
            }
        }
        d.deserialize_any(Shape)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOidc {
    pub name: Option<String>,
    pub role_namespace: Option<String>,
    pub issuer: String,
    pub discovery_url: Option<String>,
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub bearer_token_file: Option<PathBuf>,
    pub audience: OneOrMany,
    pub logout_audience: Option<OneOrMany>,
    pub algorithms: Option<Vec<String>>,
    pub leeway: Option<String>,
    pub roles_claim: Option<String>,
    pub require_claims: Option<BTreeMap<String, toml::Value>>,
    pub user_claim: Option<String>,
    pub email_verified: Option<String>,
    pub jwks_max_age: Option<String>,
    pub jwks_refetch_cooldown: Option<String>,
    pub http_timeout: Option<String>,
    pub max_response_bytes: Option<usize>,
    pub token_cache_bytes: Option<u64>,
    pub scopes_claim: Option<String>,
    pub platform: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub listen: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRole {
    #[serde(rename = "pub", default)]
    pub publish: RawDirection,
    #[serde(rename = "sub", default)]
    pub subscribe: RawDirection,
    pub account: Option<String>,
    pub resp: Option<RawResp>,
    pub max_user_ttl: Option<String>,
    pub limits: Option<RawLimits>,
    pub connection: Option<RawConnection>,
    pub jetstream: Option<RawJetStream>,
    pub kv: Option<RawKv>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResp {
    pub max: Option<i64>,
    pub ttl: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub subs: Option<i64>,
    pub payload: Option<Size>,
    pub data: Option<Size>,
}

/// A byte count: a number, or a string with a unit ("64KiB", "10MB").
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Size {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    pub types: Option<Vec<String>>,
    pub sources: Option<Vec<String>>,
    pub times: Option<Vec<RawWindow>>,
    pub time_zone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWindow {
    pub start: String,
    pub end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJetStream {
    #[serde(default)]
    pub consume: Vec<String>,
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub replay: Vec<String>,
    #[serde(default)]
    pub manage: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKv {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDirection {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// Every key the file may hold, as paths (`nats.url`,
/// `roles.<name>.pub.allow`, `bindings[].issuer`), read from the serde
/// shape above rather than listed by hand: a field added there is a key
/// here. Tables of free names (`[roles.<name>]`, `require_claims`) show
/// as `<name>`, lists of tables as `[]`. The book's configuration
/// reference is checked against it (tests/docs.rs).
pub(super) fn keys() -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    let walked = RawConfig::deserialize(Walker {
        path: String::new(),
        out: &mut out,
    });
    if let Err(e) = walked {
        panic!("the key walker cannot make up a value for a RawConfig field: {e}");
    }
    // `[oidc]` is one table or a list of them, told apart by hand
    // (RawOidcs): walked as the one table the reference names `oidc.*`.
    let walked = RawOidc::deserialize(Walker {
        path: "oidc".into(),
        out: &mut out,
    });
    if let Err(e) = walked {
        panic!("the key walker cannot make up a value for a RawOidc field: {e}");
    }
    out.into_iter().collect()
}

/// A serde `Deserializer` that makes up a value of every shape it is
/// asked for and records the path of every struct field and map entry on
/// the way: `deserialize_struct` hands it the field names.
struct Walker<'a> {
    path: String,
    out: &'a mut std::collections::BTreeSet<String>,
}

impl<'a> Walker<'a> {
    fn child(&mut self, name: &str) -> Walker<'_> {
        let path = if self.path.is_empty() {
            name.to_string()
        } else if name == "[]" {
            format!("{}[]", self.path)
        } else {
            format!("{}.{name}", self.path)
        };
        self.out.insert(path.clone());
        Walker {
            path,
            out: self.out,
        }
    }
}

type WalkError = serde::de::value::Error;

/// The entries of one table: field names (or `<name>` for a map), each
/// value walked under its path.
struct Entries<'w, 'a> {
    walker: &'w mut Walker<'a>,
    names: std::slice::Iter<'static, &'static str>,
    current: &'static str,
}

impl<'de> serde::de::MapAccess<'de> for Entries<'_, '_> {
    type Error = WalkError;
    fn next_key_seed<K: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, WalkError> {
        match self.names.next() {
            Some(&name) => {
                self.current = name;
                seed.deserialize(serde::de::value::StrDeserializer::new(name))
                    .map(Some)
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, WalkError> {
        let name = self.current;
        seed.deserialize(self.walker.child(name))
    }
}

/// A list of one element, walked under `path[]`.
struct One<'w, 'a> {
    walker: Option<&'w mut Walker<'a>>,
}

impl<'de> serde::de::SeqAccess<'de> for One<'_, '_> {
    type Error = WalkError;
    fn next_element_seed<T: serde::de::DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, WalkError> {
        match self.walker.take() {
            Some(w) => seed.deserialize(w.child("[]")).map(Some),
            None => Ok(None),
        }
    }
}

impl<'de> serde::Deserializer<'de> for Walker<'_> {
    type Error = WalkError;
    /// A leaf of unknown shape (untagged enums, `toml::Value`): a string
    /// is one every such leaf here accepts.
    fn deserialize_any<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        if self.path == "oidc" {
            // RawOidcs, walked on its own by `keys`: an empty list here.
            return v.visit_seq(One { walker: None });
        }
        v.visit_str("server")
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        mut self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, WalkError> {
        v.visit_map(Entries {
            walker: &mut self,
            names: fields.iter(),
            current: "",
        })
    }
    fn deserialize_map<V: serde::de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, WalkError> {
        v.visit_map(Entries {
            walker: &mut self,
            names: ["<name>"].iter(),
            current: "",
        })
    }
    fn deserialize_seq<V: serde::de::Visitor<'de>>(mut self, v: V) -> Result<V::Value, WalkError> {
        v.visit_seq(One {
            walker: Some(&mut self),
        })
    }
    fn deserialize_option<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_some(self)
    }
    fn deserialize_bool<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_bool(false)
    }
    fn deserialize_i8<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_i64(1)
    }
    fn deserialize_i16<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_i64(1)
    }
    fn deserialize_i32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_i64(1)
    }
    fn deserialize_i64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_i64(1)
    }
    fn deserialize_u8<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_u64(1)
    }
    fn deserialize_u16<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_u64(1)
    }
    fn deserialize_u32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_u64(1)
    }
    fn deserialize_u64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_u64(1)
    }
    fn deserialize_f32<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_f64(1.0)
    }
    fn deserialize_f64<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_f64(1.0)
    }
    fn deserialize_char<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_char('x')
    }
    fn deserialize_str<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_str("server")
    }
    fn deserialize_string<V: serde::de::Visitor<'de>>(self, v: V) -> Result<V::Value, WalkError> {
        v.visit_str("server")
    }
    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct
        newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}
