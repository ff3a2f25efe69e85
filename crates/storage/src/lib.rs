//! Storage for Tollgate: SeaORM on MySQL/MariaDB or SQLite, with the same migrations, behind the
//! repository traits of `tollgate-domain`. Every balance change here is one atomic statement or
//! one transaction; no quota is read, changed in Rust and written back.

mod billing;
mod channels;
mod entity;
mod error;
mod logs;
mod retry;
pub mod testing;
mod tokens;
mod topups;
mod users;

pub use error::StorageError;

use sea_orm::{ConnectOptions, Database, DatabaseConnection, DbBackend};
use std::time::Duration;
use tollgate_migration::{Migrator, MigratorTrait};

/// The SeaORM-backed store; implements every repository trait of the domain.
#[derive(Clone, Debug)]
pub struct SeaStore {
    db: DatabaseConnection,
}

impl SeaStore {
    /// Connects to `url` (`mysql://…` or `sqlite://…`). For SQLite the file's folder is created
    /// and every connection uses WAL journalling (readers do not wait for the writer) with
    /// `synchronous=NORMAL` (in WAL mode a crash of the process loses nothing and the file
    /// cannot be corrupted; only a power cut may lose the last commits) and a 10 s busy timeout.
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
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
            .connect_timeout(Duration::from_secs(10))
            .acquire_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|o| {
                use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
                o.journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
            });
        let db = Database::connect(options)
            .await
            .map_err(|e| StorageError::Connect(e.to_string()))?;
        Ok(SeaStore { db })
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
