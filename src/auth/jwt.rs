//! Bearer JWTs: HS256 (shared secret), RS256/ES256 (PEM public keys or a JWKS file).
//! `exp` is required; `nbf`, `iss` and `aud` are checked, with a small clock-skew leeway.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::Value;

use super::config::JwtConfig;
use super::{AuthError, DEFAULT_TENANT, Permission, Principal, TenantChoice};

struct Key {
    /// `kid` of a JWKS key, to pick it by the token header.
    kid: Option<String>,
    key: DecodingKey,
}

pub struct JwtVerifier {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
    tenant_claim: String,
    permissions_claim: String,
    matchers_claim: String,
    tenants_claim: String,
}

fn read(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

impl JwtVerifier {
    pub fn new(cfg: &JwtConfig) -> anyhow::Result<Self> {
        let mut keys = Vec::new();
        let secret = match (&cfg.hs256_secret, &cfg.hs256_secret_file) {
            (Some(s), _) => Some(s.as_bytes().to_vec()),
            (None, Some(p)) => Some(read(p)?.trim_ascii().to_vec()),
            (None, None) => None,
        };
        if let Some(s) = secret {
            anyhow::ensure!(
                s.len() >= 32,
                "auth.jwt: the HS256 secret must be at least 32 bytes"
            );
            keys.push(Key {
                kid: None,
                key: DecodingKey::from_secret(&s),
            });
        }
        for p in &cfg.public_key_files {
            let pem = read(p)?;
            let key = DecodingKey::from_rsa_pem(&pem)
                .or_else(|_| DecodingKey::from_ec_pem(&pem))
                .map_err(|e| {
                    anyhow::anyhow!("{}: not an RSA or EC public key in PEM: {e}", p.display())
                })?;
            keys.push(Key { kid: None, key });
        }
        if let Some(p) = &cfg.jwks_file {
            let set: JwkSet = serde_json::from_slice(&read(p)?)
                .map_err(|e| anyhow::anyhow!("{}: not a JWKS document: {e}", p.display()))?;
            for jwk in &set.keys {
                let key = DecodingKey::from_jwk(jwk)
                    .map_err(|e| anyhow::anyhow!("{}: unusable key: {e}", p.display()))?;
                keys.push(Key {
                    kid: jwk.common.key_id.clone(),
                    key,
                });
            }
        }
        anyhow::ensure!(
            !keys.is_empty(),
            "auth.jwt needs hs256_secret(_file), public_key_files or jwks_file"
        );
        Ok(JwtVerifier {
            keys,
            issuer: cfg.issuer.clone(),
            audience: cfg.audience.clone(),
            leeway_s: (crate::duration::parse_duration_ms(&cfg.leeway)
                .map_err(|e| anyhow::anyhow!("auth.jwt.leeway: {e}"))?
                / 1000)
                .max(0) as u64,
            tenant_claim: cfg.tenant_claim.clone(),
            permissions_claim: cfg.permissions_claim.clone(),
            matchers_claim: cfg.matchers_claim.clone(),
            tenants_claim: cfg.tenants_claim.clone(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| token_error(&e))?;
        let family = header.alg.family();
        // Only keys of the algorithm's family: an RSA public key must never be used as an
        // HMAC secret (algorithm confusion).
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.key.family() == family)
            .filter(|k| match (&header.kid, &k.kid) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            })
            .collect();
        if candidates.is_empty() || !allowed(header.alg) {
            return Err(AuthError::Token(format!(
                "no key for algorithm {:?}",
                header.alg
            )));
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway_s;
        v.validate_nbf = true;
        v.set_required_spec_claims(&["exp"]);
        match &self.audience {
            Some(a) => v.set_audience(&[a]),
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.issuer {
            v.set_issuer(&[i]);
        }
        let mut last = AuthError::Token("invalid signature".into());
        for k in candidates {
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &k.key, &v) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) => last = token_error(&e),
            }
        }
        Err(last)
    }

    fn principal(&self, c: &serde_json::Map<String, Value>) -> Result<Principal, AuthError> {
        let strings = |name: &str| -> Vec<String> {
            match c.get(name) {
                Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect(),
                _ => vec![],
            }
        };
        let tenant = match c.get(&self.tenant_claim) {
            Some(Value::String(t)) => t.clone(),
            _ => DEFAULT_TENANT.into(),
        };
        super::validate_tenant(&tenant)?;
        let permissions = strings(&self.permissions_claim)
            .iter()
            .filter_map(|p| Permission::parse(p))
            .collect();
        // Matchers are whole selectors; a string claim is one selector (not split on spaces).
        let selectors: Vec<String> = match c.get(&self.matchers_claim) {
            Some(Value::String(s)) => vec![s.clone()],
            _ => strings(&self.matchers_claim),
        };
        let mut matchers = Vec::new();
        for s in &selectors {
            matchers.extend(super::parse_matchers(s)?);
        }
        Ok(Principal {
            name: c
                .get("sub")
                .and_then(Value::as_str)
                .unwrap_or("jwt")
                .to_string(),
            permissions,
            tenant,
            may_choose: TenantChoice::from_list(&strings(&self.tenants_claim)),
            matchers,
        })
    }
}

/// Algorithms accepted: HS256/384/512, RS*, PS*, ES256/384 (never `none`).
fn allowed(a: Algorithm) -> bool {
    matches!(
        a.family(),
        AlgorithmFamily::Hmac | AlgorithmFamily::Rsa | AlgorithmFamily::Ec
    )
}

fn token_error(e: &jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Token(
        match e.kind() {
            ErrorKind::ExpiredSignature => "token expired",
            ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
            ErrorKind::InvalidAudience => "wrong audience",
            ErrorKind::InvalidIssuer => "wrong issuer",
            ErrorKind::InvalidSignature => "invalid signature",
            ErrorKind::MissingRequiredClaim(_) => "missing exp claim",
            ErrorKind::InvalidAlgorithm => "algorithm not allowed for this key",
            _ => "malformed token",
        }
        .into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(&JwtConfig {
            hs256_secret: Some(SECRET.into()),
            audience: Some("quiver".into()),
            issuer: Some("idp".into()),
            leeway: "5s".into(),
            tenant_claim: "tenant".into(),
            permissions_claim: "permissions".into(),
            matchers_claim: "matchers".into(),
            tenants_claim: "tenants".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn token(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn good_token_gives_its_claims() {
        let t = token(
            serde_json::json!({"sub": "ann", "aud": "quiver", "iss": "idp", "exp": now() + 60,
                "tenant": "a", "permissions": "read write", "matchers": ["{ns=~\"a-.*\"}"]}),
            SECRET,
        );
        let p = verifier().verify(&t).unwrap();
        assert_eq!(p.name, "ann");
        assert_eq!(p.tenant, "a");
        assert_eq!(p.permissions, vec![Permission::Read, Permission::Write]);
        assert_eq!(p.matchers.len(), 1);
    }

    #[test]
    fn expired_wrong_audience_issuer_signature_and_nbf_fail() {
        let v = verifier();
        let base = |extra: Value| {
            let mut c = serde_json::json!({"aud": "quiver", "iss": "idp", "exp": now() + 60});
            c.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            c
        };
        for (claims, secret, why) in [
            (
                base(serde_json::json!({"exp": now() - 60})),
                SECRET,
                "token expired",
            ),
            (
                base(serde_json::json!({"aud": "other"})),
                SECRET,
                "wrong audience",
            ),
            (
                base(serde_json::json!({"iss": "evil"})),
                SECRET,
                "wrong issuer",
            ),
            (
                base(serde_json::json!({"nbf": now() + 600})),
                SECRET,
                "token not yet valid (nbf)",
            ),
            (
                base(serde_json::json!({})),
                "another-secret-another-secret-xx",
                "invalid signature",
            ),
        ] {
            assert_eq!(
                v.verify(&token(claims, secret)).unwrap_err(),
                AuthError::Token(why.into())
            );
        }
        // Within the leeway, a just-expired token still passes.
        assert!(
            v.verify(&token(base(serde_json::json!({"exp": now() - 2})), SECRET))
                .is_ok()
        );
        assert!(v.verify("not.a.token").is_err());
    }
}
