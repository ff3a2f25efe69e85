//! The admin read API (SPEC §7) across users: which channel answered each call
//! (`logs.channel_id`, NULL for top-ups and for calls settled before this column), and the
//! indexes that let the cross-user log and the hourly usage walk only the rows they show:
//!
//! - `ix_logs_time (created_at, id)`: the whole log, newest first, optionally within dates;
//! - `ix_logs_kind_time (kind, created_at, id)`: one kind across users (all top-ups; the
//!   consume rows of the last N hours for the usage buckets);
//! - `ix_logs_channel_time (channel_id, created_at, id)`: one channel's calls, newest first.
//!
//! The per-user reads keep the ledger's `(user_id, …, created_at, id)` indexes.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Logs {
    Table,
    Id,
    Kind,
    CreatedAt,
    ChannelId,
}

/// The new indexes: name and columns.
fn indexes() -> [(&'static str, Vec<Logs>); 3] {
    [
        ("ix_logs_time", vec![Logs::CreatedAt, Logs::Id]),
        (
            "ix_logs_kind_time",
            vec![Logs::Kind, Logs::CreatedAt, Logs::Id],
        ),
        (
            "ix_logs_channel_time",
            vec![Logs::ChannelId, Logs::CreatedAt, Logs::Id],
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Nullable without a default: adding it rewrites no existing row (an instant change on
        // MariaDB and MySQL 8, a schema-only change on SQLite).
        manager
            .alter_table(
                Table::alter()
                    .table(Logs::Table)
                    .add_column(ColumnDef::new(Logs::ChannelId).big_integer().null())
                    .to_owned(),
            )
            .await?;
        for (name, cols) in indexes() {
            let mut index = Index::create();
            index.name(name).table(Logs::Table);
            for c in cols {
                index.col(c);
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, _) in indexes() {
            manager
                .drop_index(Index::drop().name(name).table(Logs::Table).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Logs::Table)
                    .drop_column(Logs::ChannelId)
                    .to_owned(),
            )
            .await
    }
}
