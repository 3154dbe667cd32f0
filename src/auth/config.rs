//! The `[auth]` section of the config file.

use std::path::PathBuf;

use serde::Deserialize;

/// Authentication and authorization settings. Authentication is on when any credential
/// source (JWT keys or basic-auth users) is configured, unless `enabled = false`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub enabled: Option<bool>,
    /// Header naming the tenant, honoured only for principals allowed to choose.
    #[serde(default = "default_tenant_header")]
    pub tenant_header: String,
    pub jwt: Option<JwtConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
}

fn default_tenant_header() -> String {
    "X-Scope-OrgID".into()
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: None,
            tenant_header: default_tenant_header(),
            jwt: None,
            users: vec![],
        }
    }
}

impl AuthConfig {
    pub fn is_enabled(&self) -> bool {
        self.enabled
            .unwrap_or(self.jwt.is_some() || !self.users.is_empty())
    }
}

// Secrets must never reach logs: Debug prints only what is configured, not the values.
impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.is_enabled())
            .field("tenant_header", &self.tenant_header)
            .field("jwt", &self.jwt.is_some())
            .field(
                "users",
                &self.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Bearer JWTs: HS256 with a shared secret, RS256/ES256 with PEM public keys or a JWKS file.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub hs256_secret: Option<String>,
    pub hs256_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub public_key_files: Vec<PathBuf>,
    pub jwks_file: Option<PathBuf>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud`, when set.
    pub audience: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway: String,
    #[serde(default = "claim_tenant")]
    pub tenant_claim: String,
    #[serde(default = "claim_permissions")]
    pub permissions_claim: String,
    #[serde(default = "claim_matchers")]
    pub matchers_claim: String,
    /// Claim listing tenants the holder may choose with the tenant header (`*` for any).
    #[serde(default = "claim_tenants")]
    pub tenants_claim: String,
}

fn default_leeway() -> String {
    "30s".into()
}
fn claim_tenant() -> String {
    "tenant".into()
}
fn claim_permissions() -> String {
    "permissions".into()
}
fn claim_matchers() -> String {
    "matchers".into()
}
fn claim_tenants() -> String {
    "tenants".into()
}

/// A basic-auth user (for clients that cannot send bearer tokens: remote write, Grafana).
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// argon2 (`$argon2id$…`, from `quiver hash-password`) or bcrypt (`$2b$…`).
    pub password_hash: String,
    /// Any of "read", "write", "admin".
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Its tenant [default: "default"].
    pub tenant: Option<String>,
    /// Tenants it may choose with the tenant header (`*` for any).
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Enforced matchers, each a selector like `{namespace=~"team-a-.*"}` (all apply).
    #[serde(default)]
    pub matchers: Vec<String>,
}
