//! Who is calling and what they may do: principals from bearer JWTs or HTTP basic auth,
//! their permissions (`read`, `write`, `admin`), their tenant, and the label matchers
//! enforced on everything they read.
//!
//! The HTTP side (extracting credentials, 401/403 answers) lives in `api::access`; this
//! module knows nothing about HTTP.

mod basic;
pub mod config;
mod jwt;

use std::sync::Arc;

use roaring::RoaringBitmap;
use thiserror::Error;

use crate::model::Matcher;
use crate::storage::Storage;

pub use config::AuthConfig;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Permission {
    /// Query, series, labels, label values, metadata, exemplars, remote read, SQL.
    Read,
    /// Remote write, import.
    Write,
    /// Status endpoints that reveal configuration.
    Admin,
}

impl Permission {
    pub fn parse(s: &str) -> Option<Permission> {
        match s {
            "read" => Some(Permission::Read),
            "write" => Some(Permission::Write),
            "admin" => Some(Permission::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
        }
    }
}

/// Tenants a principal may pick with the tenant header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TenantChoice {
    /// Only its own tenant; the header is refused.
    #[default]
    None,
    Any,
    Some(Vec<String>),
}

impl TenantChoice {
    pub fn from_list(list: &[String]) -> Self {
        if list.iter().any(|t| t == "*") {
            TenantChoice::Any
        } else if list.is_empty() {
            TenantChoice::None
        } else {
            TenantChoice::Some(list.to_vec())
        }
    }

    fn allows(&self, tenant: &str) -> bool {
        match self {
            TenantChoice::None => false,
            TenantChoice::Any => true,
            TenantChoice::Some(l) => l.iter().any(|t| t == tenant),
        }
    }
}

/// An authenticated caller (or the anonymous one when authentication is off).
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub permissions: Vec<Permission>,
    /// Its own tenant.
    pub tenant: String,
    pub may_choose: TenantChoice,
    /// Added to every selector and `match[]` of every request, and to SQL as a row filter.
    pub matchers: Vec<Matcher>,
}

impl Principal {
    /// The caller when authentication is off: everything allowed, any tenant.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            permissions: vec![Permission::Read, Permission::Write, Permission::Admin],
            tenant: DEFAULT_TENANT.into(),
            may_choose: TenantChoice::Any,
            matchers: vec![],
        }
    }

    pub fn may(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }

    /// The tenant a request acts on: the header's when the principal may choose it.
    pub fn tenant_for(&self, header: Option<&str>) -> Result<String, AuthError> {
        match header.map(str::trim).filter(|h| !h.is_empty()) {
            None => Ok(self.tenant.clone()),
            Some(h) if h == self.tenant => Ok(h.to_string()),
            Some(h) => {
                validate_tenant(h)?;
                if self.may_choose.allows(h) {
                    Ok(h.to_string())
                } else {
                    Err(AuthError::TenantNotAllowed(h.to_string()))
                }
            }
        }
    }
}

pub use crate::storage::tenants::DEFAULT_TENANT;

/// Tenant ids become directory names and object-store prefixes.
pub fn validate_tenant(t: &str) -> Result<(), AuthError> {
    if crate::storage::tenants::valid_tenant(t) {
        Ok(())
    } else {
        Err(AuthError::BadTenant(t.to_string()))
    }
}

/// What one request may see: its tenant and enforced matchers.
#[derive(Debug, Clone)]
pub struct Access {
    pub tenant: String,
    pub matchers: Arc<Vec<Matcher>>,
}

impl Access {
    pub fn unrestricted(tenant: &str) -> Self {
        Access {
            tenant: tenant.to_string(),
            matchers: Arc::new(vec![]),
        }
    }

    /// Series the caller may see, or `None` when nothing is enforced.
    pub fn allowed(&self, storage: &Storage) -> Option<RoaringBitmap> {
        if self.matchers.is_empty() {
            None
        } else {
            Some(storage.catalog().select(&self.matchers))
        }
    }

    /// Whether the caller may write this series: its enforced matchers (which bound what it
    /// reads) bound what it writes too, so a principal cannot place series, or their
    /// metadata, where its own matchers would hide them. A missing label is empty.
    pub fn may_write(&self, labels: &crate::model::Labels) -> bool {
        self.matchers
            .iter()
            .all(|m| m.matches(labels.get(&m.name).unwrap_or("")))
    }

    /// Distinguishes cached answers of callers that see different series.
    pub fn cache_scope(&self) -> String {
        let mut s = self.tenant.clone();
        for m in self.matchers.iter() {
            s.push('\u{1f}');
            s.push_str(&m.to_string());
        }
        s
    }
}

/// Why a request was not let in.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AuthError {
    #[error("authentication required")]
    Missing,
    #[error("unsupported authorization scheme")]
    Scheme,
    #[error("invalid token: {0}")]
    Token(String),
    #[error("invalid username or password")]
    Password,
    #[error("permission {0:?} required")]
    Forbidden(&'static str),
    #[error("not allowed to act on tenant {0:?}")]
    TenantNotAllowed(String),
    #[error("invalid tenant id {0:?}: use 1-128 of A-Z a-z 0-9 - _ .")]
    BadTenant(String),
    #[error("invalid enforced matchers {0:?}: {1}")]
    Matchers(String, String),
}

impl AuthError {
    /// Every [`AuthError::reason`], so the counter exports each at 0 from the start.
    pub const REASONS: [&'static str; 8] = [
        "missing",
        "scheme",
        "token",
        "password",
        "forbidden",
        "tenant",
        "bad_tenant",
        "matchers",
    ];

    /// Short label for the auth-failure counter.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Scheme => "scheme",
            AuthError::Token(_) => "token",
            AuthError::Password => "password",
            AuthError::Forbidden(_) => "forbidden",
            AuthError::TenantNotAllowed(_) => "tenant",
            AuthError::BadTenant(_) => "bad_tenant",
            AuthError::Matchers(..) => "matchers",
        }
    }
}

/// Parses enforced matchers written as a selector, e.g. `{namespace=~"team-a-.*"}`.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, AuthError> {
    let bad = |e: String| AuthError::Matchers(text.to_string(), e);
    if crate::promql::guard::depth_bound(text) > 3 {
        return Err(bad("expected a selector like {label=\"value\"}".into()));
    }
    let expr = crate::promql::parse(text).map_err(bad)?;
    let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
        return Err(bad("expected a selector like {label=\"value\"}".into()));
    };
    let mut sets = crate::promql::selector_matchers(&vs).map_err(|e| bad(e.to_string()))?;
    if sets.len() != 1 {
        return Err(bad("`or` is not allowed in enforced matchers".into()));
    }
    Ok(sets.remove(0))
}

/// Checks credentials against the configuration.
pub struct Authenticator {
    enabled: bool,
    jwt: Option<jwt::JwtVerifier>,
    basic: basic::BasicUsers,
}

impl Authenticator {
    pub fn new(cfg: &AuthConfig) -> anyhow::Result<Self> {
        Ok(Authenticator {
            enabled: cfg.is_enabled(),
            jwt: cfg.jwt.as_ref().map(jwt::JwtVerifier::new).transpose()?,
            basic: basic::BasicUsers::new(&cfg.users)?,
        })
    }

    /// Authentication off: every request is the anonymous principal.
    pub fn disabled() -> Self {
        Authenticator {
            enabled: false,
            jwt: None,
            basic: basic::BasicUsers::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The principal behind an `Authorization` header value (or its absence).
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if !self.enabled {
            return Ok(Principal::anonymous());
        }
        let h = authorization.ok_or(AuthError::Missing)?.trim();
        let (scheme, rest) = h.split_once(' ').ok_or(AuthError::Scheme)?;
        if scheme.eq_ignore_ascii_case("bearer") {
            match &self.jwt {
                Some(j) => j.verify(rest.trim()),
                None => Err(AuthError::Token("bearer tokens are not configured".into())),
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            self.basic.verify(rest.trim())
        } else {
            Err(AuthError::Scheme)
        }
    }
}

/// Prints an argon2id PHC string for a password (for `[[auth.users]] password_hash`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing password: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_header_needs_permission() {
        let mut p = Principal::anonymous();
        p.tenant = "a".into();
        p.may_choose = TenantChoice::None;
        assert_eq!(p.tenant_for(None).unwrap(), "a");
        assert_eq!(p.tenant_for(Some("a")).unwrap(), "a");
        assert!(matches!(
            p.tenant_for(Some("b")),
            Err(AuthError::TenantNotAllowed(_))
        ));
        p.may_choose = TenantChoice::from_list(&["b".into()]);
        assert_eq!(p.tenant_for(Some("b")).unwrap(), "b");
        p.may_choose = TenantChoice::Any;
        assert!(matches!(
            p.tenant_for(Some("../x")),
            Err(AuthError::BadTenant(_))
        ));
    }

    #[test]
    fn enforced_matchers_parse_from_selectors() {
        let m = parse_matchers(r#"{namespace=~"team-a-.*", env!="dev"}"#).unwrap();
        assert_eq!(m.len(), 2);
        assert!(parse_matchers("up or down").is_err());
        assert!(parse_matchers(r#"{a="1" or b="2"}"#).is_err());
    }

    #[test]
    fn argon2_hashes_verify() {
        let h = hash_password("s3cret").unwrap();
        let users = basic::BasicUsers::new(&[config::UserConfig {
            name: "u".into(),
            password_hash: h,
            permissions: vec!["read".into()],
            tenant: None,
            tenants: vec![],
            matchers: vec![],
        }])
        .unwrap();
        use base64::Engine as _;
        let ok = base64::engine::general_purpose::STANDARD.encode("u:s3cret");
        let bad = base64::engine::general_purpose::STANDARD.encode("u:nope");
        assert_eq!(users.verify(&ok).unwrap().name, "u");
        assert_eq!(users.verify(&bad).unwrap_err(), AuthError::Password);
        // Cached success must not let a wrong password through.
        assert_eq!(users.verify(&bad).unwrap_err(), AuthError::Password);
    }
}
