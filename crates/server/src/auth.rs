//! Platform authentication for the external user API: `Authorization: Bearer <secret>` against
//! `TOLLGATE_EXTERNAL_API_KEYS`. Secrets are compared as SHA-256 digests in constant time, and
//! every configured secret is compared, so timing tells neither the key nor which one matched.

use crate::error::ApiError;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use std::future::{Ready, ready};
use subtle::ConstantTimeEq;
use tollgate_domain::ids::PlatformId;

/// The configured platforms.
#[derive(Clone)]
pub struct Platforms {
    keys: Vec<([u8; 32], PlatformId)>,
}

impl Platforms {
    /// From the configured secrets.
    #[must_use]
    pub fn new(secrets: &[SecretString]) -> Self {
        let keys = secrets
            .iter()
            .map(|s| {
                (
                    Sha256::digest(s.expose_secret().as_bytes()).into(),
                    PlatformId::from_secret(s.expose_secret()),
                )
            })
            .collect();
        Platforms { keys }
    }

    /// The platform whose secret was presented, if any.
    #[must_use]
    pub fn authenticate(&self, presented: &str) -> Option<PlatformId> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (key, platform) in &self.keys {
            if bool::from(key.ct_eq(&digest)) {
                found = Some(platform.clone());
            }
        }
        found
    }
}

/// The bearer token of a request, if well-formed.
#[must_use]
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Extractor: the authenticated platform of an external API request.
pub struct Platform(pub PlatformId);

impl FromRequest for Platform {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let platforms = req.app_data::<web::Data<Platforms>>();
        let found = match (platforms, bearer(req)) {
            (Some(p), Some(token)) => p.authenticate(token),
            _ => None,
        };
        ready(found.map(Platform).ok_or_else(ApiError::unauthorized))
    }
}

/// The admin secret (`TOLLGATE_ADMIN_KEY`) as a digest; `None` when unset, which locks the
/// admin API.
#[derive(Clone)]
pub struct AdminKey(Option<[u8; 32]>);

impl AdminKey {
    /// From the configured secret.
    #[must_use]
    pub fn new(secret: Option<&SecretString>) -> Self {
        AdminKey(secret.map(|s| Sha256::digest(s.expose_secret().as_bytes()).into()))
    }

    /// Whether `presented` is the admin secret (constant time).
    #[must_use]
    pub fn accepts(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        self.0.is_some_and(|k| bool::from(k.ct_eq(&digest)))
    }
}

/// Extractor: the request carries the admin secret.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let ok = match (req.app_data::<web::Data<AdminKey>>(), bearer(req)) {
            (Some(k), Some(token)) => k.accepts(token),
            _ => false,
        };
        ready(if ok {
            Ok(Admin)
        } else {
            Err(ApiError::admin_unauthorized())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_configured_secrets_authenticate() {
        let p = Platforms::new(&[
            SecretString::from("secret-one"),
            SecretString::from("secret-two"),
        ]);
        assert_eq!(
            p.authenticate("secret-two"),
            Some(PlatformId::from_secret("secret-two"))
        );
        assert_eq!(
            p.authenticate("secret-one"),
            Some(PlatformId::from_secret("secret-one"))
        );
        assert_eq!(p.authenticate("secret-on"), None);
        assert_eq!(p.authenticate(""), None);
        assert_eq!(Platforms::new(&[]).authenticate("anything"), None);
    }

    #[test]
    fn admin_key_unset_accepts_nothing() {
        assert!(!AdminKey::new(None).accepts(""));
        assert!(!AdminKey::new(None).accepts("anything"));
        let k = AdminKey::new(Some(&SecretString::from("admin-secret")));
        assert!(k.accepts("admin-secret"));
        assert!(!k.accepts("admin-secre"));
    }
}
