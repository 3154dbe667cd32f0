//! HTTP basic auth against configured users with argon2 or bcrypt password hashes.

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use sha2::Digest;

use super::config::UserConfig;
use super::{AuthError, DEFAULT_TENANT, Permission, Principal, TenantChoice};

#[derive(Default)]
pub struct BasicUsers {
    users: HashMap<String, (String, Principal)>,
    /// Recently verified (user, password) digests: password hashing is slow by design and
    /// remote write sends credentials with every request.
    verified: Option<moka::sync::Cache<[u8; 32], ()>>,
}

impl BasicUsers {
    pub fn new(cfg: &[UserConfig]) -> anyhow::Result<Self> {
        let mut users = HashMap::new();
        for u in cfg {
            anyhow::ensure!(
                u.password_hash.starts_with("$argon2") || u.password_hash.starts_with("$2"),
                "auth user {:?}: password_hash must be an argon2 or bcrypt hash (see `quiver hash-password`)",
                u.name
            );
            let permissions = u
                .permissions
                .iter()
                .map(|p| {
                    Permission::parse(p).ok_or_else(|| {
                        anyhow::anyhow!("auth user {:?}: unknown permission {p:?}", u.name)
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let tenant = u.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.into());
            super::validate_tenant(&tenant)?;
            let mut matchers = Vec::new();
            for m in &u.matchers {
                matchers.extend(super::parse_matchers(m)?);
            }
            let principal = Principal {
                name: u.name.clone(),
                permissions,
                tenant,
                may_choose: TenantChoice::from_list(&u.tenants),
                matchers,
            };
            anyhow::ensure!(
                users
                    .insert(u.name.clone(), (u.password_hash.clone(), principal))
                    .is_none(),
                "auth user {:?} is configured twice",
                u.name
            );
        }
        Ok(BasicUsers {
            users,
            verified: Some(
                moka::sync::Cache::builder()
                    .max_capacity(10_000)
                    .time_to_live(Duration::from_secs(300))
                    .build(),
            ),
        })
    }

    /// Verifies the base64 `user:password` of a `Basic` header.
    pub fn verify(&self, encoded: &str) -> Result<Principal, AuthError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|_| AuthError::Password)?;
        let text = String::from_utf8(raw).map_err(|_| AuthError::Password)?;
        let (user, password) = text.split_once(':').ok_or(AuthError::Password)?;
        let (hash, principal) = self.users.get(user).ok_or(AuthError::Password)?;
        let digest: [u8; 32] = sha2::Sha256::new()
            .chain_update(user.as_bytes())
            .chain_update([0u8])
            .chain_update(password.as_bytes())
            .chain_update([0u8])
            .chain_update(hash.as_bytes())
            .finalize()
            .into();
        if let Some(c) = &self.verified
            && c.contains_key(&digest)
        {
            return Ok(principal.clone());
        }
        if !check(password, hash) {
            return Err(AuthError::Password);
        }
        if let Some(c) = &self.verified {
            c.insert(digest, ());
        }
        Ok(principal.clone())
    }
}

fn check(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::password_hash::PasswordVerifier;
        use argon2::password_hash::phc::PasswordHash;
        PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    } else {
        bcrypt::verify(password, hash).unwrap_or(false)
    }
}
