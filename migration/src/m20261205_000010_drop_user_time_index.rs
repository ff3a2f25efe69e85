//! Drops `ix_logs_user_time (user_id, created_at, id, channel_id, model)`. Every call's log row
//! put an entry at its user's own place in each of the two user-led indexes; a settlement
//! batch of many users wrote a leaf per user per index (on SQLite, each a WAL frame and a
//! checkpoint copy) — the largest part of a 1,000-user batch's cost (docs/benchmarks.md,
//! eighth session). A user's rows of every kind are now read from `ix_logs_user_kind_time`,
//! one range per kind merged newest first (storage's `admin_read::newest`).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Logs {
    Table,
    UserId,
    CreatedAt,
    Id,
    ChannelId,
    Model,
}

const NAME: &str = "ix_logs_user_time";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_index("logs", NAME).await? {
            // Re-run after a crash between the drop and the migration's own row.
            return Ok(());
        }
        manager
            .drop_index(Index::drop().name(NAME).table(Logs::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // As `m20261203_000007` left it.
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Logs::Table)
                    .col(Logs::UserId)
                    .col(Logs::CreatedAt)
                    .col(Logs::Id)
                    .col(Logs::ChannelId)
                    .col(Logs::Model)
                    .to_owned(),
            )
            .await
    }
}
