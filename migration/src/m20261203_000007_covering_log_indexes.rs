//! Covering indexes on `logs` for the admin read API (issue 12): each index the reads walk also
//! carries the columns those reads check or sum, so a read takes what it needs from the index
//! it walks and fetches by primary key only the rows of the page it returns.
//!
//! Measured on 1,000,000 rows (docs/benchmarks.md), the reads that fetched rows were the slow
//! ones: the hourly usage (every consume row of up to 168 hours), the per-model usage of a user
//! (all their consume rows) and the filters no index orders by (`model_name` anywhere,
//! `channel_id` with a user; bounded to 50,000 rows) — up to a second on MariaDB, whose buffer
//! pool holds little of a large table.
//!
//! The key columns and their order do not change (newest-first pages still walk them the same
//! way); only trailing columns are added:
//!
//! | index | key | added |
//! |---|---|---|
//! | `ix_logs_time` | `created_at, id` | `model` |
//! | `ix_logs_kind_time` | `kind, created_at, id` | `channel_id, model, prompt_tokens, completion_tokens, quota` |
//! | `ix_logs_channel_time` | `channel_id, created_at, id` | `model` |
//! | `ix_logs_user_time` | `user_id, created_at, id` | `channel_id, model` |
//! | `ix_logs_user_kind_time` | `user_id, kind, created_at, id` | `channel_id, model, prompt_tokens, completion_tokens, quota` |
//!
//! The names stay, because the storage layer names them in MySQL index hints: on MySQL each
//! index is dropped and re-added in one `ALTER TABLE` (online: the table stays readable and
//! writable, and an instance still running the previous version never sees a name missing).
//! Re-running the migration after a crash rebuilds the same indexes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// An index of `logs` this migration widens.
struct LogIndex {
    name: &'static str,
    /// Its columns before this migration.
    before: &'static [&'static str],
    /// Its columns after it: the same key, then the columns its reads check or sum.
    after: &'static [&'static str],
}

const INDEXES: [LogIndex; 5] = [
    LogIndex {
        name: "ix_logs_time",
        before: &["created_at", "id"],
        after: &["created_at", "id", "model"],
    },
    LogIndex {
        name: "ix_logs_kind_time",
        before: &["kind", "created_at", "id"],
        after: &[
            "kind",
            "created_at",
            "id",
            "channel_id",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "quota",
        ],
    },
    LogIndex {
        name: "ix_logs_channel_time",
        before: &["channel_id", "created_at", "id"],
        after: &["channel_id", "created_at", "id", "model"],
    },
    LogIndex {
        name: "ix_logs_user_time",
        before: &["user_id", "created_at", "id"],
        after: &["user_id", "created_at", "id", "channel_id", "model"],
    },
    LogIndex {
        name: "ix_logs_user_kind_time",
        before: &["user_id", "kind", "created_at", "id"],
        after: &[
            "user_id",
            "kind",
            "created_at",
            "id",
            "channel_id",
            "model",
            "prompt_tokens",
            "completion_tokens",
            "quota",
        ],
    },
];

/// Replaces every index of [`INDEXES`] by its `after` (`true`) or `before` (`false`) columns.
async fn rebuild(manager: &SchemaManager<'_>, after: bool) -> Result<(), DbErr> {
    let columns = |i: &LogIndex| if after { i.after } else { i.before };
    let db = manager.get_connection();
    if manager.get_database_backend() == DbBackend::MySql {
        // One statement: each name always exists, and the table is read once for all five.
        let changes: Vec<String> = INDEXES
            .iter()
            .map(|i| {
                let cols: Vec<String> = columns(i).iter().map(|c| format!("`{c}`")).collect();
                format!(
                    "DROP INDEX `{0}`, ADD INDEX `{0}` ({1})",
                    i.name,
                    cols.join(", ")
                )
            })
            .collect();
        db.execute_unprepared(&format!(
            "ALTER TABLE `logs` {}, ALGORITHM=INPLACE, LOCK=NONE",
            changes.join(", ")
        ))
        .await?;
        return Ok(());
    }
    // SQLite: one writer, and the server migrates before it serves, so nobody reads meanwhile.
    for i in &INDEXES {
        manager
            .drop_index(
                Index::drop()
                    .name(i.name)
                    .table(Alias::new("logs"))
                    .if_exists()
                    .to_owned(),
            )
            .await?;
        let mut index = Index::create();
        index.name(i.name).table(Alias::new("logs"));
        for c in columns(i) {
            index.col(Alias::new(*c));
        }
        manager.create_index(index).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        rebuild(manager, false).await
    }
}
