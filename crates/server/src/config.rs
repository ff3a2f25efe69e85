//! Configuration (SPEC §2): the environment, over an optional TOML file named by
//! `TOLLGATE_CONFIG` (see [`file`]). Every value is checked at start-up; a bad one fails with
//! one line naming the variable, or the file and its key. Secrets are wrapped so they never
//! print.

pub mod file;

use crate::telemetry::LogFormat;
use file::{CONFIG_VARIABLE, ConfigFile, FileValue};
use secrecy::{ExposeSecret, SecretString};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use tollgate_domain::ratelimit::{MAX_CONCURRENCY, MAX_RPM, MAX_TPM, RateLimits};
use tollgate_relay::client::Timeouts;
use tollgate_relay::{ExactLedgerConfig, GatewayConfig};
use tollgate_storage::SecretKey;

/// Largest JSON body of the external user API (its requests are a few hundred bytes).
pub const EXTERNAL_BODY_LIMIT: usize = 64 * 1024;
/// Largest JSON body of the admin API.
pub const ADMIN_BODY_LIMIT: usize = 256 * 1024;

/// How a setting's value is written in the configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A string.
    Text,
    /// A whole number: a TOML integer or a string of digits.
    Number,
    /// A list: a TOML array of strings or one comma-separated string.
    List,
}

/// Every setting read from the environment or the file, with its shape in the file (the file's
/// key is the name in lower case without `TOLLGATE_`). `TOLLGATE_CONFIG` itself is not here:
/// it can only come from the environment.
pub const SETTINGS: &[(&str, Shape)] = &[
    ("TOLLGATE_LISTEN", Shape::Text),
    ("TOLLGATE_DATABASE_URL", Shape::Text),
    ("TOLLGATE_REDIS_URL", Shape::Text),
    ("TOLLGATE_ADMIN_KEY", Shape::Text),
    ("TOLLGATE_EXTERNAL_API_KEYS", Shape::List),
    ("TOLLGATE_LOG_DIR", Shape::Text),
    ("TOLLGATE_LOG_FORMAT", Shape::Text),
    ("TOLLGATE_DASHSCOPE_API_KEY", Shape::Text),
    ("TOLLGATE_DEEPSEEK_API_KEY", Shape::Text),
    ("TOLLGATE_OPENAI_API_KEY", Shape::Text),
    ("TOLLGATE_ANTHROPIC_API_KEY", Shape::Text),
    ("TOLLGATE_GEMINI_API_KEY", Shape::Text),
    ("TOLLGATE_SECRET_KEY", Shape::Text),
    ("TOLLGATE_DEFAULT_RPM", Shape::Number),
    ("TOLLGATE_DEFAULT_TPM", Shape::Number),
    ("TOLLGATE_DEFAULT_CONCURRENCY", Shape::Number),
    ("TOLLGATE_RELAY_BODY_LIMIT", Shape::Number),
    ("TOLLGATE_RELAY_RETRIES", Shape::Number),
    ("TOLLGATE_DEFAULT_MAX_TOKENS", Shape::Number),
    ("TOLLGATE_HOLD_TTL_SECS", Shape::Number),
    ("TOLLGATE_CHANNEL_FAILURE_THRESHOLD", Shape::Number),
    ("TOLLGATE_CHANNEL_PROBE_SECS", Shape::Number),
    ("TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_SECS", Shape::Number),
    ("TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS", Shape::Number),
    ("TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECS", Shape::Number),
    ("TOLLGATE_RELAY_BODY_TIMEOUT_SECS", Shape::Number),
    ("TOLLGATE_SETTLEMENT_BACKLOG", Shape::Number),
    ("TOLLGATE_SETTLEMENT_WINDOW_MS", Shape::Number),
    ("TOLLGATE_LEDGER", Shape::Text),
    ("TOLLGATE_DATABASE_TIMEOUT_SECS", Shape::Number),
    ("TOLLGATE_SHUTDOWN_GRACE_SECS", Shape::Number),
    ("TOLLGATE_INSTANCE_NAME", Shape::Text),
    ("TOLLGATE_INSTANCE_TIMEOUT_SECS", Shape::Number),
];

/// Relay settings (`TOLLGATE_RELAY_*`, `TOLLGATE_UPSTREAM_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySettings {
    /// `TOLLGATE_RELAY_BODY_LIMIT`: largest chat request body in bytes (default 8 MiB).
    pub body_limit: usize,
    /// `TOLLGATE_RELAY_RETRIES`: extra attempts before the first byte (default 2).
    pub retries: u32,
    /// `TOLLGATE_DEFAULT_MAX_TOKENS`: completion tokens held when a request sets no limit.
    pub default_max_tokens: u64,
    /// `TOLLGATE_HOLD_TTL_SECS`: life of an unsettled hold (default 3600).
    pub hold_ttl_secs: u64,
    /// `TOLLGATE_CHANNEL_FAILURE_THRESHOLD`: consecutive failed requests that disable a
    /// channel (default 5; 0 never).
    pub failure_threshold: u32,
    /// `TOLLGATE_CHANNEL_PROBE_SECS`: how often automatically disabled channels are tested
    /// (default 60).
    pub probe_secs: u64,
    /// `TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_SECS` (default 10).
    pub connect_timeout_secs: u64,
    /// `TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS` (default 300).
    pub first_byte_timeout_secs: u64,
    /// `TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECS`: longest pause between chunks (default 120).
    pub idle_timeout_secs: u64,
    /// `TOLLGATE_RELAY_BODY_TIMEOUT_SECS`: longest time to receive a request body (default 30).
    pub body_timeout_secs: u64,
    /// `TOLLGATE_SETTLEMENT_BACKLOG`: settlements waiting for the database at which new calls
    /// are refused with 503 (default 100,000).
    pub settlement_backlog: u64,
    /// `TOLLGATE_SETTLEMENT_WINDOW_MS`: group commit — how long a settlement waits for others
    /// to share its database transaction (default 10; 0 writes each on its own, before the
    /// call's last byte is sent).
    pub settlement_window_ms: u64,
    /// `TOLLGATE_LEDGER`: how calls' holds are taken — `lease` (default: from balance leases
    /// in memory, exact holds for capped keys and small balances) or `exact` (a hold row per
    /// call).
    pub ledger: LedgerKind,
}

/// Which ledger takes calls' holds (`TOLLGATE_LEDGER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LedgerKind {
    /// Balance leases, with exact holds where a lease does not fit.
    #[default]
    Lease,
    /// A hold row per call.
    Exact,
}

impl std::str::FromStr for LedgerKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "lease" => Ok(LedgerKind::Lease),
            "exact" => Ok(LedgerKind::Exact),
            _ => Err(format!(
                "{:?} is not a ledger: use lease or exact",
                s.trim()
            )),
        }
    }
}

impl Default for RelaySettings {
    /// The relay's own defaults, so they are written down once.
    fn default() -> Self {
        let gateway = GatewayConfig::default();
        let timeouts = Timeouts::default();
        RelaySettings {
            body_limit: 8 * 1024 * 1024,
            retries: gateway.retries,
            default_max_tokens: gateway.default_max_tokens,
            hold_ttl_secs: gateway.hold_ttl.as_secs(),
            failure_threshold: gateway.failure_threshold,
            probe_secs: 60,
            connect_timeout_secs: timeouts.connect.as_secs(),
            first_byte_timeout_secs: timeouts.first_byte.as_secs(),
            idle_timeout_secs: timeouts.idle.as_secs(),
            body_timeout_secs: 30,
            settlement_backlog: ExactLedgerConfig::default().backlog_capacity as u64,
            settlement_window_ms: ExactLedgerConfig::default().settlement_window.as_millis() as u64,
            ledger: LedgerKind::default(),
        }
    }
}

/// Upstream keys that create a channel at start-up when none of that type exists.
#[derive(Debug, Clone, Default)]
pub struct ProviderKeys {
    /// `TOLLGATE_DASHSCOPE_API_KEY`.
    pub dashscope: Option<SecretString>,
    /// `TOLLGATE_DEEPSEEK_API_KEY`.
    pub deepseek: Option<SecretString>,
    /// `TOLLGATE_OPENAI_API_KEY`.
    pub openai: Option<SecretString>,
    /// `TOLLGATE_ANTHROPIC_API_KEY`.
    pub anthropic: Option<SecretString>,
    /// `TOLLGATE_GEMINI_API_KEY`.
    pub gemini: Option<SecretString>,
}

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
    /// `TOLLGATE_LOG_FORMAT`: `text` (default) or `json`.
    pub log_format: LogFormat,
    /// Relay settings.
    pub relay: RelaySettings,
    /// Start-up provider channels.
    pub provider_keys: ProviderKeys,
    /// `TOLLGATE_SECRET_KEY`: 32 bytes in base64 that encrypt channel keys at rest.
    pub secret_key: Option<SecretKey>,
    /// `TOLLGATE_DATABASE_TIMEOUT_SECS`: how long a request waits for a database connection
    /// before it fails with 503 (default 3).
    pub database_timeout_secs: u64,
    /// `TOLLGATE_SHUTDOWN_GRACE_SECS`: after SIGTERM, how long in-flight requests (streams
    /// included) may run, and then how long their settlements may take (default 30 each).
    pub shutdown_grace_secs: u64,
    /// `TOLLGATE_INSTANCE_NAME`: this instance's stable name among those sharing the database
    /// (unset: the host name and the bound port, see [`host_name`]). A restart under the same
    /// name releases the holds its previous start left.
    pub instance_name: Option<String>,
    /// `TOLLGATE_INSTANCE_TIMEOUT_SECS`: an instance silent for this long is dead and its holds
    /// are released by the others (default 30).
    pub instance_timeout_secs: u64,
    /// `TOLLGATE_DEFAULT_RPM`, `_TPM`, `_CONCURRENCY`: limits of keys created without their
    /// own (unset: none).
    pub default_limits: RateLimits,
    /// `TOLLGATE_CONFIG`: the file read under the environment, if any.
    pub config_file: Option<PathBuf>,
}

/// A configuration value that cannot be used. Shown as one line: `VARIABLE: problem` for the
/// environment, `path: key: problem` for a value from the file, `path: problem` for the file
/// as a whole.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The variable at fault (`TOLLGATE_CONFIG` for the file as a whole).
    pub variable: &'static str,
    /// The configuration file, when the value (or the problem) is in it.
    pub file: Option<PathBuf>,
    /// What is wrong with it (never its secret value).
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            None => write!(f, "{}: {}", self.variable, self.problem),
            Some(path) if self.variable == CONFIG_VARIABLE => {
                write!(f, "{}: {}", path.display(), self.problem)
            }
            Some(path) => write!(
                f,
                "{}: {}: {}",
                path.display(),
                file::file_key(self.variable),
                self.problem
            ),
        }
    }
}

/// The environment over the file: a variable set (and not empty) in the environment wins.
struct Layers<L> {
    env: L,
    file: Option<ConfigFile>,
}

impl<L: Fn(&str) -> Option<String>> Layers<L> {
    fn in_env(&self, variable: &str) -> Option<String> {
        debug_assert!(
            SETTINGS.iter().any(|(v, _)| *v == variable),
            "{variable} is missing from SETTINGS (and so from the configuration file)"
        );
        (self.env)(variable).filter(|v| !v.trim().is_empty())
    }

    fn in_file(&self, variable: &str) -> Option<&FileValue> {
        self.file.as_ref()?.get(variable).filter(|v| match v {
            FileValue::One(s) => !s.expose_secret().trim().is_empty(),
            FileValue::Many(items) => !items.is_empty(),
        })
    }

    /// One value. Empty values count as unset, in both layers.
    fn get(&self, variable: &str) -> Option<String> {
        self.in_env(variable)
            .or_else(|| match self.in_file(variable)? {
                FileValue::One(s) => Some(s.expose_secret().to_owned()),
                // Only list settings take arrays, and they are read with `list`.
                FileValue::Many(_) => None,
            })
    }

    /// A list: comma-separated in the environment; an array or comma-separated in the file.
    fn list(&self, variable: &str) -> Option<Vec<String>> {
        let split = |s: &str| s.split(',').map(|e| e.trim().to_owned()).collect();
        if let Some(v) = self.in_env(variable) {
            return Some(split(&v));
        }
        match self.in_file(variable)? {
            FileValue::One(s) => Some(split(s.expose_secret())),
            FileValue::Many(items) => Some(
                items
                    .iter()
                    .map(|e| e.expose_secret().trim().to_owned())
                    .collect(),
            ),
        }
    }

    /// The error for `variable`'s value, naming where that value came from.
    fn err(&self, variable: &'static str, problem: impl Into<String>) -> ConfigError {
        let file = if self.in_env(variable).is_none() && self.in_file(variable).is_some() {
            self.file.as_ref().map(|f| f.path().to_owned())
        } else {
            None
        };
        ConfigError {
            variable,
            file,
            problem: problem.into(),
        }
    }
}

/// This machine's name (the kernel's host name; `localhost` when it cannot be read).
#[must_use]
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Settings {
    /// Default listen address.
    pub const DEFAULT_LISTEN: &'static str = "0.0.0.0:3000";
    /// Default database.
    pub const DEFAULT_DATABASE_URL: &'static str = "sqlite://./data/tollgate.db?mode=rwc";

    /// Reads the process environment (and the file it names in `TOLLGATE_CONFIG`).
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads settings through `lookup` (the environment, or a map in tests), over the file
    /// that `lookup("TOLLGATE_CONFIG")` names, if any. Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let file = lookup(CONFIG_VARIABLE)
            .filter(|v| !v.trim().is_empty())
            .map(|path| ConfigFile::load(path.as_ref()))
            .transpose()?;
        Self::from_layers(lookup, file)
    }

    /// Reads settings through `lookup` over `file`.
    pub fn from_layers(
        lookup: impl Fn(&str) -> Option<String>,
        file: Option<ConfigFile>,
    ) -> Result<Self, ConfigError> {
        let config_file = file.as_ref().map(|f| f.path().to_owned());
        let layers = Layers { env: lookup, file };
        let get = |name: &str| layers.get(name);

        let listen_text = get("TOLLGATE_LISTEN").unwrap_or_else(|| Self::DEFAULT_LISTEN.to_owned());
        let listen = listen_text.trim().parse().map_err(|_| {
            layers.err(
                "TOLLGATE_LISTEN",
                format!("{listen_text:?} is not an address like 0.0.0.0:3000"),
            )
        })?;

        let database_url =
            get("TOLLGATE_DATABASE_URL").unwrap_or_else(|| Self::DEFAULT_DATABASE_URL.to_owned());
        let scheme = database_url.split(':').next().unwrap_or_default();
        if !matches!(scheme, "mysql" | "sqlite") {
            return Err(layers.err(
                "TOLLGATE_DATABASE_URL",
                "must start with mysql:// or sqlite://",
            ));
        }

        let redis_url = get("TOLLGATE_REDIS_URL");
        if redis_url
            .as_ref()
            .is_some_and(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
        {
            return Err(layers.err(
                "TOLLGATE_REDIS_URL",
                "must start with redis:// or rediss://",
            ));
        }

        let admin_key = get("TOLLGATE_ADMIN_KEY").map(|k| SecretString::from(k.trim().to_owned()));

        let mut external_api_keys = Vec::new();
        if let Some(list) = layers.list("TOLLGATE_EXTERNAL_API_KEYS") {
            for (i, key) in list.into_iter().enumerate() {
                if key.is_empty() {
                    return Err(layers.err(
                        "TOLLGATE_EXTERNAL_API_KEYS",
                        format!("entry {} is empty", i + 1),
                    ));
                }
                if key.len() < 8 {
                    return Err(layers.err(
                        "TOLLGATE_EXTERNAL_API_KEYS",
                        format!("entry {} is shorter than 8 characters", i + 1),
                    ));
                }
                external_api_keys.push(SecretString::from(key));
            }
        }

        let log_dir = PathBuf::from(get("TOLLGATE_LOG_DIR").unwrap_or_else(|| "logs".to_owned()));
        let log_format = get("TOLLGATE_LOG_FORMAT")
            .map(|v| v.parse())
            .transpose()
            .map_err(|problem: String| layers.err("TOLLGATE_LOG_FORMAT", problem))?
            .unwrap_or_default();

        let number =
            |name: &'static str, default: u64, min: u64, max: u64| -> Result<u64, ConfigError> {
                match get(name) {
                    None => Ok(default),
                    Some(v) => v
                        .trim()
                        .parse::<u64>()
                        .ok()
                        .filter(|n| (min..=max).contains(n))
                        .ok_or_else(|| {
                            layers.err(name, format!("must be a whole number from {min} to {max}"))
                        }),
                }
            };
        let d = RelaySettings::default();
        let to_u32 = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        let relay = RelaySettings {
            body_limit: usize::try_from(number(
                "TOLLGATE_RELAY_BODY_LIMIT",
                d.body_limit as u64,
                1024,
                1 << 30,
            )?)
            .unwrap_or(d.body_limit),
            retries: to_u32(number("TOLLGATE_RELAY_RETRIES", d.retries.into(), 0, 10)?),
            default_max_tokens: number(
                "TOLLGATE_DEFAULT_MAX_TOKENS",
                d.default_max_tokens,
                1,
                10_000_000,
            )?,
            hold_ttl_secs: number("TOLLGATE_HOLD_TTL_SECS", d.hold_ttl_secs, 60, 7 * 86_400)?,
            failure_threshold: to_u32(number(
                "TOLLGATE_CHANNEL_FAILURE_THRESHOLD",
                d.failure_threshold.into(),
                0,
                1000,
            )?),
            probe_secs: number("TOLLGATE_CHANNEL_PROBE_SECS", d.probe_secs, 1, 86_400)?,
            connect_timeout_secs: number(
                "TOLLGATE_UPSTREAM_CONNECT_TIMEOUT_SECS",
                d.connect_timeout_secs,
                1,
                600,
            )?,
            first_byte_timeout_secs: number(
                "TOLLGATE_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS",
                d.first_byte_timeout_secs,
                1,
                3600,
            )?,
            idle_timeout_secs: number(
                "TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECS",
                d.idle_timeout_secs,
                1,
                3600,
            )?,
            body_timeout_secs: number(
                "TOLLGATE_RELAY_BODY_TIMEOUT_SECS",
                d.body_timeout_secs,
                1,
                3600,
            )?,
            settlement_backlog: number(
                "TOLLGATE_SETTLEMENT_BACKLOG",
                d.settlement_backlog,
                1,
                10_000_000,
            )?,
            settlement_window_ms: number(
                "TOLLGATE_SETTLEMENT_WINDOW_MS",
                d.settlement_window_ms,
                0,
                1_000,
            )?,
            ledger: get("TOLLGATE_LEDGER")
                .map(|v| v.parse())
                .transpose()
                .map_err(|problem: String| layers.err("TOLLGATE_LEDGER", problem))?
                .unwrap_or_default(),
        };
        let secret_key = get("TOLLGATE_SECRET_KEY")
            .map(|v| SecretKey::from_base64(&v))
            .transpose()
            .map_err(|e| layers.err("TOLLGATE_SECRET_KEY", e.to_string()))?;
        let database_timeout_secs = number("TOLLGATE_DATABASE_TIMEOUT_SECS", 3, 1, 300)?;
        let shutdown_grace_secs = number("TOLLGATE_SHUTDOWN_GRACE_SECS", 30, 0, 3600)?;
        let instance_timeout_secs = number("TOLLGATE_INSTANCE_TIMEOUT_SECS", 30, 3, 3600)?;
        let optional = |name: &'static str, max: u64| -> Result<Option<u64>, ConfigError> {
            get(name).map(|_| number(name, 0, 1, max)).transpose()
        };
        let default_limits = RateLimits {
            rpm: optional("TOLLGATE_DEFAULT_RPM", MAX_RPM as u64)?
                .and_then(|n| u32::try_from(n).ok()),
            tpm: optional("TOLLGATE_DEFAULT_TPM", MAX_TPM as u64)?,
            concurrency: optional("TOLLGATE_DEFAULT_CONCURRENCY", MAX_CONCURRENCY as u64)?
                .and_then(|n| u32::try_from(n).ok()),
        };
        let instance_name = match get("TOLLGATE_INSTANCE_NAME") {
            Some(n) if n.trim().chars().count() > 200 => {
                return Err(layers.err("TOLLGATE_INSTANCE_NAME", "must be at most 200 characters"));
            }
            Some(n) => Some(n.trim().to_owned()),
            None => None,
        };
        let secret = |name: &str| get(name).map(|k| SecretString::from(k.trim().to_owned()));
        let provider_keys = ProviderKeys {
            dashscope: secret("TOLLGATE_DASHSCOPE_API_KEY"),
            deepseek: secret("TOLLGATE_DEEPSEEK_API_KEY"),
            openai: secret("TOLLGATE_OPENAI_API_KEY"),
            anthropic: secret("TOLLGATE_ANTHROPIC_API_KEY"),
            gemini: secret("TOLLGATE_GEMINI_API_KEY"),
        };

        Ok(Settings {
            listen,
            database_url,
            redis_url,
            admin_key,
            external_api_keys,
            log_dir,
            log_format,
            relay,
            provider_keys,
            secret_key,
            database_timeout_secs,
            shutdown_grace_secs,
            instance_name,
            instance_timeout_secs,
            default_limits,
            config_file,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

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
        assert_eq!(s.log_format, LogFormat::Text);
        let json = load(&[("TOLLGATE_LOG_FORMAT", "json")]).expect("json");
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(s.external_api_keys.is_empty() && s.admin_key.is_none() && s.redis_url.is_none());
        // The documented defaults, written out (README's configuration table).
        assert_eq!(
            s.relay,
            RelaySettings {
                body_limit: 8_388_608,
                retries: 2,
                default_max_tokens: 4096,
                hold_ttl_secs: 3600,
                failure_threshold: 5,
                probe_secs: 60,
                connect_timeout_secs: 10,
                first_byte_timeout_secs: 300,
                idle_timeout_secs: 120,
                body_timeout_secs: 30,
                settlement_backlog: 100_000,
                settlement_window_ms: 10,
                ledger: LedgerKind::Lease,
            }
        );
        assert_eq!((s.database_timeout_secs, s.shutdown_grace_secs), (3, 30));
        assert!(s.secret_key.is_none());
        assert_eq!(s.instance_timeout_secs, 30);
        assert_eq!(s.instance_name, None);
        assert!(s.default_limits.is_unlimited());
        let limited = load(&[
            ("TOLLGATE_DEFAULT_RPM", "60"),
            ("TOLLGATE_DEFAULT_CONCURRENCY", "4"),
        ])
        .expect("limits");
        assert_eq!(
            limited.default_limits,
            RateLimits {
                rpm: Some(60),
                tpm: None,
                concurrency: Some(4)
            }
        );
        let e = load(&[("TOLLGATE_DEFAULT_TPM", "0")]).expect_err("zero");
        assert_eq!(
            e.to_string(),
            "TOLLGATE_DEFAULT_TPM: must be a whole number from 1 to 1000000000"
        );
        let named = load(&[("TOLLGATE_INSTANCE_NAME", " gw-1 ")]).expect("named");
        assert_eq!(named.instance_name.as_deref(), Some("gw-1"));
        assert!(!host_name().is_empty());
    }

    #[test]
    fn bad_values_name_their_variable() {
        let exact = load(&[("TOLLGATE_LEDGER", "exact")]).expect("exact");
        assert_eq!(exact.relay.ledger, LedgerKind::Exact);
        let e = load(&[("TOLLGATE_LEDGER", "fast")]).expect_err("bad ledger");
        assert!(
            e.to_string()
                .contains("\"fast\" is not a ledger: use lease or exact"),
            "{e}"
        );
        let e = load(&[("TOLLGATE_LOG_FORMAT", "xml")]).expect_err("bad format");
        assert_eq!(
            e.to_string(),
            "TOLLGATE_LOG_FORMAT: \"xml\" is not a log format: use text or json"
        );
        let e = load(&[("TOLLGATE_LISTEN", "nonsense")]).expect_err("bad listen");
        assert!(e.to_string().starts_with("TOLLGATE_LISTEN: "), "{e}");
        let e = load(&[("TOLLGATE_DATABASE_URL", "postgres://x")]).expect_err("bad url");
        assert!(e.to_string().starts_with("TOLLGATE_DATABASE_URL: "), "{e}");
        let e = load(&[("TOLLGATE_REDIS_URL", "http://x")]).expect_err("bad redis");
        assert!(e.to_string().starts_with("TOLLGATE_REDIS_URL: "), "{e}");
        let e = load(&[("TOLLGATE_RELAY_RETRIES", "eleven")]).expect_err("bad retries");
        assert!(e.to_string().starts_with("TOLLGATE_RELAY_RETRIES: "), "{e}");
        let e = load(&[("TOLLGATE_HOLD_TTL_SECS", "5")]).expect_err("ttl too short");
        assert!(e.to_string().starts_with("TOLLGATE_HOLD_TTL_SECS: "), "{e}");
        let e = load(&[("TOLLGATE_SECRET_KEY", "c2hvcnQ=")]).expect_err("5 bytes");
        assert_eq!(
            e.to_string(),
            "TOLLGATE_SECRET_KEY: must be 32 bytes encoded in base64 (it decodes to 5 bytes)"
        );
        let e = load(&[("TOLLGATE_SHUTDOWN_GRACE_SECS", "-1")]).expect_err("negative");
        assert_eq!(
            e.to_string(),
            "TOLLGATE_SHUTDOWN_GRACE_SECS: must be a whole number from 0 to 3600"
        );
        let e = load(&[("TOLLGATE_RELAY_BODY_TIMEOUT_SECS", "0")]).expect_err("zero");
        assert!(
            e.to_string()
                .starts_with("TOLLGATE_RELAY_BODY_TIMEOUT_SECS: "),
            "{e}"
        );
        let s = load(&[("TOLLGATE_SECRET_KEY", &"A".repeat(43))]).expect("32 zero-ish bytes");
        assert!(s.secret_key.is_some());
        assert!(!format!("{s:?}").contains(&"A".repeat(43)));
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

    /// The example file as shipped.
    const EXAMPLE: &str = include_str!("../../../deploy/tollgate.example.toml");

    fn example_path() -> &'static Path {
        Path::new("deploy/tollgate.example.toml")
    }

    fn with_file(pairs: &[(&str, &str)], toml: &str) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let file = ConfigFile::parse(Path::new("/etc/tollgate.toml"), toml)?;
        Settings::from_layers(|k| map.get(k).cloned(), Some(file))
    }

    #[test]
    fn the_example_file_lists_every_setting_at_its_default() {
        let as_shipped = ConfigFile::parse(example_path(), EXAMPLE).expect("example parses");
        let defaults = load(&[]).expect("defaults");
        // Every "#key = value" line uncommented, placeholders ("<…>") left out.
        let mut keys = Vec::new();
        let mut uncommented = String::new();
        for line in EXAMPLE.lines() {
            let Some(setting) = line
                .strip_prefix('#')
                .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            else {
                continue;
            };
            keys.push(setting.split(" = ").next().unwrap_or_default().to_owned());
            if !setting.contains("\"<") {
                uncommented.push_str(setting);
                uncommented.push('\n');
            }
        }
        for (variable, _) in SETTINGS {
            assert!(
                keys.contains(&file::file_key(variable)),
                "{variable} is missing from deploy/tollgate.example.toml"
            );
        }
        assert_eq!(keys.len(), SETTINGS.len(), "a key appears twice: {keys:?}");
        let file = ConfigFile::parse(example_path(), &uncommented).expect("uncommented parses");
        let s = Settings::from_layers(|_| None, Some(file)).expect("valid settings");
        assert_eq!(s.listen, defaults.listen);
        assert_eq!(s.database_url, defaults.database_url);
        assert_eq!(s.log_dir, defaults.log_dir);
        assert_eq!(s.log_format, defaults.log_format);
        assert_eq!(s.relay, defaults.relay);
        assert_eq!(
            (
                s.database_timeout_secs,
                s.shutdown_grace_secs,
                s.instance_timeout_secs
            ),
            (
                defaults.database_timeout_secs,
                defaults.shutdown_grace_secs,
                defaults.instance_timeout_secs
            )
        );
        // Settings unset by default show an example, which must be valid too.
        assert!(s.redis_url.is_some() && s.instance_name.is_some());
        assert!(!s.default_limits.is_unlimited());
        // As shipped, everything is commented out: the file changes nothing.
        let shipped = Settings::from_layers(|_| None, Some(as_shipped)).expect("shipped");
        assert_eq!(shipped.relay, defaults.relay);
        assert_eq!(shipped.listen, defaults.listen);
        assert!(shipped.external_api_keys.is_empty() && shipped.admin_key.is_none());
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let file = "listen = \"127.0.0.1:4000\"\nrelay_retries = 5\nadmin_key = \"admin-from-file\"\n\
                    external_api_keys = [\"platform-from-file\", \"other-platform\"]\n";
        let s = with_file(
            &[
                ("TOLLGATE_LISTEN", "127.0.0.1:5000"),
                // Empty counts as unset, in the environment as in the file.
                ("TOLLGATE_ADMIN_KEY", ""),
            ],
            file,
        )
        .expect("valid");
        assert_eq!(s.listen.to_string(), "127.0.0.1:5000");
        assert_eq!(s.relay.retries, 5);
        assert_eq!(
            s.admin_key.as_ref().map(ExposeSecret::expose_secret),
            Some("admin-from-file")
        );
        assert_eq!(s.external_api_keys.len(), 2);
        assert_eq!(
            s.config_file.as_deref(),
            Some(Path::new("/etc/tollgate.toml"))
        );
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("admin-from-file") && !shown.contains("platform-from-file"),
            "{shown}"
        );
        // The environment's list replaces the file's, it does not add to it.
        let s =
            with_file(&[("TOLLGATE_EXTERNAL_API_KEYS", "platform-from-env")], file).expect("valid");
        assert_eq!(s.external_api_keys.len(), 1);
        // A comma-separated string works in the file too.
        let s =
            with_file(&[], "external_api_keys = \"platform-one, platform-two\"").expect("valid");
        assert_eq!(s.external_api_keys.len(), 2);
    }

    #[test]
    fn a_bad_value_names_the_key_and_the_file_or_the_variable() {
        let e = with_file(&[], "listen = \"nonsense\"").expect_err("bad listen");
        assert_eq!(
            e.to_string(),
            "/etc/tollgate.toml: listen: \"nonsense\" is not an address like 0.0.0.0:3000"
        );
        let e = with_file(&[], "hold_ttl_secs = 5").expect_err("too short");
        assert_eq!(
            e.to_string(),
            "/etc/tollgate.toml: hold_ttl_secs: must be a whole number from 60 to 604800"
        );
        let e = with_file(&[], "shutdown_grace_secs = -1").expect_err("negative");
        assert_eq!(
            e.to_string(),
            "/etc/tollgate.toml: shutdown_grace_secs: must be a whole number from 0 to 3600"
        );
        let e = with_file(&[], "external_api_keys = [\"long-enough\", \"short\"]")
            .expect_err("short secret");
        assert_eq!(
            e.to_string(),
            "/etc/tollgate.toml: external_api_keys: entry 2 is shorter than 8 characters"
        );
        // A bad value from the environment over a good one in the file names the variable.
        let e = with_file(&[("TOLLGATE_RELAY_RETRIES", "eleven")], "relay_retries = 1")
            .expect_err("bad env");
        assert_eq!(
            e.to_string(),
            "TOLLGATE_RELAY_RETRIES: must be a whole number from 0 to 10"
        );
        // And a good value from the environment hides a bad one in the file.
        let s =
            with_file(&[("TOLLGATE_RELAY_RETRIES", "1")], "relay_retries = 11").expect("env wins");
        assert_eq!(s.relay.retries, 1);
    }

    #[test]
    fn tollgate_config_names_the_file_to_read() {
        let e = load(&[("TOLLGATE_CONFIG", "/nonexistent/tollgate.toml")]).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("TOLLGATE_CONFIG: cannot read /nonexistent/tollgate.toml: "),
            "{e}"
        );
        assert_eq!(e.to_string().lines().count(), 1);
        let dir = std::env::temp_dir().join(format!("tollgate-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("tollgate.toml");
        std::fs::write(&path, "relay_retries = 7\nlisen = \"x\"\n").expect("write");
        let path_text = path.display().to_string();
        let e = load(&[("TOLLGATE_CONFIG", &path_text)]).expect_err("unknown key");
        assert_eq!(
            e.to_string(),
            format!("{path_text}: unknown key \"lisen\" (did you mean \"listen\"?)")
        );
        std::fs::write(&path, "relay_retries = 7\n").expect("write");
        let s = load(&[("TOLLGATE_CONFIG", &path_text)]).expect("valid");
        assert_eq!(s.relay.retries, 7);
        assert_eq!(s.config_file, Some(path));
        std::fs::remove_dir_all(dir).expect("cleanup");
    }

    #[test]
    fn secrets_never_print() {
        let s = load(&[
            ("TOLLGATE_EXTERNAL_API_KEYS", "platform-secret-1"),
            ("TOLLGATE_ADMIN_KEY", "admin-secret-1"),
            ("TOLLGATE_OPENAI_API_KEY", "sk-provider-secret-1"),
        ])
        .expect("valid");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("platform-secret-1")
                && !shown.contains("admin-secret-1")
                && !shown.contains("sk-provider-secret-1"),
            "{shown}"
        );
        let e = load(&[("TOLLGATE_EXTERNAL_API_KEYS", "short")]).expect_err("too short");
        assert!(!e.to_string().contains("short\""), "{e}");
    }
}
