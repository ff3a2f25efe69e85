//! Storage for Tollgate: SeaORM on MySQL/MariaDB or SQLite, with the same migrations, behind the
//! repository traits of `tollgate-domain`. Every balance change here is one atomic statement or
//! one transaction; no quota is read, changed in Rust and written back.

mod admin_read;
mod billing;
mod bus;
mod call_errors;
mod channels;
mod cluster;
mod crypto;
mod entity;
mod error;
mod leases;
mod logs;
mod ratelimit;
mod retry;
pub mod testing;
mod tokens;
mod topups;
mod users;

pub use admin_read::StatementPlan;
pub use bus::RedisBus;
pub use channels::KeyStatus;
pub use crypto::{CipherError, KeyCipher, KeyError, SecretKey};
pub use error::StorageError;
pub use ratelimit::RedisLimiter;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::sync::Arc;
use std::time::Duration;
use tollgate_migration::{Migrator, MigratorTrait};

/// How long a statement waits for a pooled connection by default.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The least SQLite waits for its single connection.
const SQLITE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// The conflict clause of the settlement batch's multi-row statements on SQLite (`INSERT OR
/// FAIL`, `UPDATE OR FAIL`). With the default (`ABORT`) a statement that writes many rows and
/// could fail part-way keeps a statement journal — every page it changes copied first, so that
/// the statement alone can be undone — about 5% of a settled call's instructions
/// (docs/benchmarks.md, eleventh session). Every statement of those transactions is undone
/// with its transaction when it fails (the error ends the transaction, which is rolled back,
/// never committed), so undoing the statement alone is never needed; and SQLite checks a row's
/// constraints before it writes any of it, so no row is ever half-written.
pub(crate) const SQLITE_OR_FAIL: &str = "OR FAIL";

/// The SeaORM-backed store; implements every repository trait of the domain.
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
    /// Encrypts channel keys on write and decrypts them on read; without it keys are stored
    /// as given and encrypted ones cannot be read.
    cipher: Option<Arc<KeyCipher>>,
}

impl SeaStore {
    /// Connects to `url` (`mysql://…` or `sqlite://…`) with the default timeout
    /// ([`DEFAULT_ACQUIRE_TIMEOUT`]); see [`SeaStore::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        Self::connect_with(url, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// Connects to `url` (`mysql://…` or `sqlite://…`). A statement waits at most
    /// `acquire_timeout` for a connection, so while a MySQL server is unreachable callers fail
    /// fast (as unavailable) instead of hanging. For SQLite the file's folder is created
    /// and every connection uses WAL journalling (readers do not wait for the writer) with
    /// `synchronous=NORMAL` (in WAL mode a crash of the process loses nothing and the file
    /// cannot be corrupted; only a power cut may lose the last commits) and a 10 s busy timeout.
    pub async fn connect_with(url: &str, acquire_timeout: Duration) -> Result<Self, StorageError> {
        let sqlite_dir = sqlite_file(url).and_then(|p| std::path::Path::new(p).parent());
        if let Some(dir) = sqlite_dir.filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Connect(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let mut options = ConnectOptions::new(url.to_owned());
        // SQLite has one writer at a time: connections competing for it spin in the busy
        // handler (sleeping up to 100 ms a turn), so its writes queue on one connection instead.
        let sqlite = url.starts_with("sqlite:");
        options
            .max_connections(if sqlite { 1 } else { 32 })
            .min_connections(1)
            .connect_timeout(acquire_timeout)
            // SQLite's one connection is never unreachable, only busy: its queue may be long.
            .acquire_timeout(if sqlite {
                acquire_timeout.max(SQLITE_ACQUIRE_TIMEOUT)
            } else {
                acquire_timeout
            })
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    // Statement journals (a multi-row statement inside a transaction keeps
                    // one, to undo just itself) in memory, not in a temporary file created,
                    // written and deleted again and again.
                    .pragma("temp_store", "memory")
            });
        let db = Database::connect(options)
            .await
            .map_err(|e| StorageError::Connect(e.to_string()))?;
        Ok(SeaStore { db, cipher: None })
    }

    /// This store with channel keys encrypted at rest by `cipher` (`None`: stored as given).
    /// Call [`SeaStore::secure_channel_keys`] next, before serving, to encrypt the keys stored
    /// as given and to check that the stored ones decrypt.
    #[must_use]
    pub fn with_cipher(mut self, cipher: Option<KeyCipher>) -> Self {
        self.cipher = cipher.map(Arc::new);
        self
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StorageError> {
        Migrator::up(&self.db, None)
            .await
            .map_err(|e| StorageError::Migrate(e.to_string()))
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.db.ping().await.map_err(StorageError::from)
    }

    /// Which kind of database this is, for logs.
    #[must_use]
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::MySql => "mysql",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }
}

/// The file path of a `sqlite://` URL, if it names a file.
fn sqlite_file(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then_some(path)
}

#[cfg(test)]
mod tests {
    use super::sqlite_file;

    #[test]
    fn finds_the_sqlite_file() {
        assert_eq!(
            sqlite_file("sqlite://./data/tollgate.db?mode=rwc"),
            Some("./data/tollgate.db")
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("mysql://root@localhost/test"), None);
    }
}
