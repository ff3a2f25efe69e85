//! Configuration from the environment (SPEC §2). Every value is checked at start-up; a bad one
//! fails with one line naming the variable. Secrets are wrapped so they never print.

use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Largest JSON body of the external user API (its requests are a few hundred bytes).
pub const EXTERNAL_BODY_LIMIT: usize = 64 * 1024;

/// Checked settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `TOLLGATE_LISTEN`.
    pub listen: SocketAddr,
    /// `TOLLGATE_DATABASE_URL`.
    pub database_url: String,
    /// `TOLLGATE_REDIS_URL` (validated now; used by the shared cache).
    pub redis_url: Option<String>,
    /// `TOLLGATE_ADMIN_KEY`.
    pub admin_key: Option<SecretString>,
    /// `TOLLGATE_EXTERNAL_API_KEYS`: one secret per platform.
    pub external_api_keys: Vec<SecretString>,
    /// `TOLLGATE_LOG_DIR`.
    pub log_dir: PathBuf,
}

/// A configuration value that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The variable at fault.
    pub variable: &'static str,
    /// What is wrong with it (never its secret value).
    pub problem: String,
}

fn err(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Settings {
    /// Default listen address.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:3000";
    /// Default database.
    pub const DEFAULT_DATABASE_URL: &'static str = "sqlite://./data/tollgate.db?mode=rwc";

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests). Empty values count
    /// as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let listen_text = get("TOLLGATE_LISTEN").unwrap_or_else(|| Self::DEFAULT_LISTEN.to_owned());
        let listen = listen_text.trim().parse().map_err(|_| {
            err(
                "TOLLGATE_LISTEN",
                format!("{listen_text:?} is not an address like 0.0.0.0:3000"),
            )
        })?;

        let database_url =
            get("TOLLGATE_DATABASE_URL").unwrap_or_else(|| Self::DEFAULT_DATABASE_URL.to_owned());
        let scheme = database_url.split(':').next().unwrap_or_default();
        if !matches!(scheme, "mysql" | "sqlite") {
            return Err(err(
                "TOLLGATE_DATABASE_URL",
                "must start with mysql:// or sqlite://",
            ));
        }

        let redis_url = get("TOLLGATE_REDIS_URL");
        if redis_url
            .as_ref()
            .is_some_and(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(err(
                "TOLLGATE_REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }

        let admin_key = get("TOLLGATE_ADMIN_KEY").map(|k| SecretString::from(k.trim().to_owned()));

        let mut external_api_keys = Vec::new();
        if let Some(list) = get("TOLLGATE_EXTERNAL_API_KEYS") {
            for (i, key) in list.split(',').map(str::trim).enumerate() {
                if key.is_empty() {
                    return Err(err(
                        "TOLLGATE_EXTERNAL_API_KEYS",
                        format!("entry {} is empty", i + 1),
                    ));
                }
                if key.len() < 8 {
                    return Err(err(
                        "TOLLGATE_EXTERNAL_API_KEYS",
                        format!("entry {} is shorter than 8 characters", i + 1),
                    ));
                }
                external_api_keys.push(SecretString::from(key.to_owned()));
            }
        }

        let log_dir = PathBuf::from(get("TOLLGATE_LOG_DIR").unwrap_or_else(|| "logs".to_owned()));

        Ok(Settings {
            listen,
            database_url,
            redis_url,
            admin_key,
            external_api_keys,
            log_dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn no_configuration_means_sqlite_on_port_3000() {
        let s = load(&[]).expect("defaults are valid");
        assert_eq!(s.listen.to_string(), "0.0.0.0:3000");
        assert_eq!(s.database_url, "sqlite://./data/tollgate.db?mode=rwc");
        assert!(s.external_api_keys.is_empty() && s.admin_key.is_none() && s.redis_url.is_none());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let e = load(&[("TOLLGATE_LISTEN", "nonsense")]).expect_err("bad listen");
        assert!(e.to_string().starts_with("TOLLGATE_LISTEN: "), "{e}");
        let e = load(&[("TOLLGATE_DATABASE_URL", "postgres://x")]).expect_err("bad url");
        assert!(e.to_string().starts_with("TOLLGATE_DATABASE_URL: "), "{e}");
        let e = load(&[("TOLLGATE_REDIS_URL", "http://x")]).expect_err("bad redis");
        assert!(e.to_string().starts_with("TOLLGATE_REDIS_URL: "), "{e}");
        let e = load(&[(
            "TOLLGATE_EXTERNAL_API_KEYS",
            "long-enough-key,,other-long-key",
        )])
        .expect_err("empty entry");
        assert!(
            e.to_string()
                .starts_with("TOLLGATE_EXTERNAL_API_KEYS: entry 2"),
            "{e}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = load(&[
            ("TOLLGATE_EXTERNAL_API_KEYS", "platform-secret-1"),
            ("TOLLGATE_ADMIN_KEY", "admin-secret-1"),
        ])
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("platform-secret-1") && !shown.contains("admin-secret-1"),
            "{shown}"
        );
        let e = load(&[("TOLLGATE_EXTERNAL_API_KEYS", "short")]).expect_err("too short");
        assert!(!e.to_string().contains("short\""), "{e}");
    }
}
