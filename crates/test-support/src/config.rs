//! Config files for tests, built rather than written out: the sections a
//! test cares about, the rest valid defaults.
//!
//! ```
//! use nats_oidc_callout_test_support::config::{ConfigToml, Oidc};
//! let text = ConfigToml::new()
//!     .oidc(Oidc::new("https://idp.example.com").roles_claim("groups"))
//!     .role("reader", r#"sub.allow = ["orders.>"]"#)
//!     .to_string();
//! assert!(text.contains("[roles.reader]"));
//! ```

use std::fmt;

/// `dev`'s sample roles (admin, reader) and a writer: the roles a test
/// service has unless it says otherwise.
pub fn default_roles() -> String {
    format!(
        "{}\n[roles.writer]\npub.allow = [\"orders.>\"]\npub.deny  = [\"orders.audit\"]\n",
        nats_oidc_callout::dev::SAMPLE_ROLES
    )
}

/// The audience every test token is minted for.
pub const AUDIENCE: &str = "nats";

/// An issuer nobody contacts: for configs that are only parsed, checked
/// or explained offline.
pub const EXAMPLE_ISSUER: &str = "https://idp.example.com/realms/demo";

/// A config file's text, section by section. Without changes: a fresh
/// callout account seed inline, users landing in `APP`, no `[nats]` table
/// (the defaults), no issuer and no role (add them).
#[derive(Clone, Debug)]
pub struct ConfigToml {
    nats: Vec<String>,
    callout: Vec<(String, String)>,
    callout_tables: Vec<String>,
    oidc: Vec<Oidc>,
    roles: Vec<String>,
    users: Vec<String>,
    sections: Vec<String>,
    seed: String,
}

impl Default for ConfigToml {
    fn default() -> Self {
        ConfigToml::new()
    }
}

impl ConfigToml {
    pub fn new() -> ConfigToml {
        let seed = nkeys::KeyPair::new_account().seed().expect("a new key");
        ConfigToml {
            nats: Vec::new(),
            callout: vec![
                ("issuer_seed".into(), quote(&seed)),
                ("account".into(), quote("APP")),
            ],
            callout_tables: Vec::new(),
            oidc: Vec::new(),
            roles: Vec::new(),
            users: Vec::new(),
            sections: Vec::new(),
            seed,
        }
    }

    /// The test config for the development issuer at `issuer`: [`Oidc::dev`]
    /// and [`default_roles`].
    pub fn dev(issuer: &str) -> ConfigToml {
        ConfigToml::new()
            .oidc(Oidc::dev(issuer))
            .roles(&default_roles())
    }

    /// A deployment's config as `check` reads it: the test servers' login
    /// in `[nats]`, the callout account's seed in `issuer.nk` beside the
    /// config, users in `APP`, the callout's own account `AUTH`, and one
    /// issuer at [`EXAMPLE_ISSUER`] with roles in `realm_access.roles`. No
    /// role yet.
    pub fn deployment() -> ConfigToml {
        ConfigToml::new()
            .nats_login("nats://127.0.0.1:4222")
            .issuer_seed_file("issuer.nk")
            .callout("auth_account", &quote("AUTH"))
            .oidc(Oidc::new(EXAMPLE_ISSUER).roles_claim("realm_access.roles"))
    }

    /// The callout account's seed the config holds inline (unless
    /// `issuer_seed_file` replaced it).
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The `[nats]` table: the lines as given.
    pub fn nats(mut self, lines: &str) -> Self {
        self.nats.push(lines.trim_end().to_string());
        self
    }

    /// `[nats]` for the test servers' callout user (`auth`/`authpw`) at
    /// `url`.
    pub fn nats_login(self, url: &str) -> Self {
        self.nats(&format!(
            "url = {}\nuser = \"auth\"\npassword = \"authpw\"",
            quote(url)
        ))
    }

    /// Sets a `[callout]` key to a TOML value (`"text"`, `3`, `[...]`),
    /// replacing what it had.
    pub fn callout(mut self, key: &str, value: &str) -> Self {
        set(&mut self.callout, key, value);
        self
    }

    /// The callout account's seed (`issuer_seed`, inline).
    pub fn issuer_seed(mut self, seed: &str) -> Self {
        self.seed = seed.to_string();
        self.callout("issuer_seed", &quote(seed))
    }

    /// The callout account's seed from a file instead of inline.
    pub fn issuer_seed_file(mut self, path: &str) -> Self {
        self.callout.retain(|(k, _)| k != "issuer_seed");
        self.callout
            .insert(0, ("issuer_seed_file".into(), quote(path)));
        self
    }

    /// `callout.xkey_seed`, inline.
    pub fn xkey_seed(self, seed: &str) -> Self {
        self.callout("xkey_seed", &quote(seed))
    }

    /// More `[callout]` tables (`[callout.accounts.X]`), after its keys.
    pub fn callout_table(mut self, text: &str) -> Self {
        self.callout_tables.push(text.trim().to_string());
        self
    }

    /// One trusted issuer: a single one without a name is the `[oidc]`
    /// table, otherwise each is an `[[oidc]]` block.
    pub fn oidc(mut self, oidc: Oidc) -> Self {
        self.oidc.push(oidc);
        self
    }

    /// `[roles.<name>]` with `body` (its keys, one a line).
    pub fn role(mut self, name: &str, body: &str) -> Self {
        self.roles
            .push(format!("[roles.{}]\n{}", key(name), body.trim()));
        self
    }

    /// Role tables (and anything else) as written, after the other roles.
    pub fn roles(mut self, text: &str) -> Self {
        self.roles.push(text.trim().to_string());
        self
    }

    /// Drops every role added so far.
    pub fn no_roles(mut self) -> Self {
        self.roles.clear();
        self
    }

    /// `[users.<name>]` with `body`.
    pub fn user(mut self, name: &str, body: &str) -> Self {
        self.users
            .push(format!("[users.{}]\n{}", key(name), body.trim()));
        self
    }

    /// Any other section as written (`[grants]`, `[jetstream]`,
    /// `[[bindings]]`, `[http]`).
    pub fn section(mut self, text: &str) -> Self {
        self.sections.push(text.trim().to_string());
        self
    }
}

impl fmt::Display for ConfigToml {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.nats.is_empty() {
            writeln!(f, "[nats]\n{}\n", self.nats.join("\n"))?;
        }
        writeln!(f, "[callout]")?;
        for (k, v) in &self.callout {
            writeln!(f, "{k} = {v}")?;
        }
        for t in &self.callout_tables {
            writeln!(f, "\n{t}")?;
        }
        let single = self.oidc.len() == 1 && self.oidc[0].name.is_none();
        for o in &self.oidc {
            writeln!(f, "\n{}", if single { "[oidc]" } else { "[[oidc]]" })?;
            if let Some(name) = &o.name {
                writeln!(f, "name = {}", quote(name))?;
            }
            for (k, v) in &o.keys {
                writeln!(f, "{k} = {v}")?;
            }
        }
        for part in self.sections.iter().chain(&self.users).chain(&self.roles) {
            writeln!(f, "\n{part}")?;
        }
        Ok(())
    }
}

/// One `[oidc]` table or `[[oidc]]` block.
#[derive(Clone, Debug)]
pub struct Oidc {
    name: Option<String>,
    keys: Vec<(String, String)>,
}

impl Oidc {
    /// Trusts `issuer` for audience `nats`; every other key at its default.
    pub fn new(issuer: &str) -> Oidc {
        Oidc {
            name: None,
            keys: vec![
                ("issuer".into(), quote(issuer)),
                ("audience".into(), quote(AUDIENCE)),
            ],
        }
    }

    /// The development issuer's tokens as the test service reads them:
    /// roles in `realm_access.roles`, the name in `preferred_username`
    /// (Keycloak's shape), and a 2 s refetch cool-down.
    pub fn dev(issuer: &str) -> Oidc {
        Oidc::new(issuer)
            .roles_claim("realm_access.roles")
            .user_claim("preferred_username")
            .set("jwks_refetch_cooldown", "\"2s\"")
    }

    /// The block's name (`[[oidc]]` blocks need one).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.to_string());
        self
    }

    pub fn audience(self, audience: &str) -> Self {
        self.set("audience", &quote(audience))
    }

    pub fn roles_claim(self, path: &str) -> Self {
        self.set("roles_claim", &quote(path))
    }

    pub fn user_claim(self, path: &str) -> Self {
        self.set("user_claim", &quote(path))
    }

    /// Sets `key` to a TOML value as written (`"text"`, `3`, `{ a = 1 }`),
    /// replacing what it had.
    pub fn set(mut self, key: &str, value: &str) -> Self {
        set(&mut self.keys, key, value);
        self
    }

    /// Leaves `key` out.
    pub fn unset(mut self, key: &str) -> Self {
        self.keys.retain(|(k, _)| k != key);
        self
    }
}

fn set(keys: &mut Vec<(String, String)>, key: &str, value: &str) {
    match keys.iter_mut().find(|(k, _)| k == key) {
        Some(entry) => entry.1 = value.to_string(),
        None => keys.push((key.to_string(), value.to_string())),
    }
}

/// `text` as a TOML string.
pub fn quote(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

/// A table name as a TOML key: bare when it can be.
fn key(name: &str) -> String {
    let bare = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        name.to_string()
    } else {
        quote(name)
    }
}
