//! Classifying database errors: unique violations (the database's answer to a race we let it
//! decide) and transient lock conflicts (MySQL deadlocks, SQLite busy) that are safe to retry
//! because the failed transaction was rolled back whole.

use crate::error::StorageError;
use sea_orm::{DbErr, RuntimeErr, SqlErr, sqlx};
use std::time::Duration;
use tollgate_domain::RepoError;

/// Attempts for a transaction that keeps meeting lock conflicts.
pub(crate) const ATTEMPTS: u32 = 10;

pub(crate) fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

pub(crate) fn is_transient(e: &DbErr) -> bool {
    if matches!(e, DbErr::Custom(m) if m == crate::billing::RACED) {
        return true;
    }
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = e else {
        return false;
    };
    let sqlx::Error::Database(db) = &**e else {
        return false;
    };
    if let Some(my) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        // 1213 deadlock, 1205 lock wait timeout.
        return matches!(my.number(), 1213 | 1205);
    }
    // SQLite: BUSY (5) and its extended codes, LOCKED (6).
    matches!(
        db.code().as_deref(),
        Some("5" | "6" | "261" | "517" | "262")
    )
}

/// Backoff before attempt `n` (1-based), growing and jittered by the attempt number so that
/// competing transactions do not retry in lockstep.
pub(crate) async fn backoff(n: u32) {
    let ms = u64::from(n) * 7 + u64::from(n * n % 5);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Runs `op` (one attempt: a transaction, or a statement) until it succeeds or fails for a
/// reason other than a lock conflict; after [`ATTEMPTS`], contention on `what`.
pub(crate) async fn retrying<T, F, Fut>(what: &'static str, mut op: F) -> Result<T, RepoError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DbErr>>,
{
    for attempt in 1..=ATTEMPTS {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if is_transient(&e) => backoff(attempt).await,
            Err(e) => return Err(StorageError::from(e).into()),
        }
    }
    Err(StorageError::Contention(what).into())
}
