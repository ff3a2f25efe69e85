//! Drops `ix_logs_time (created_at, id, model)`. Every call's log row put an entry in it — on
//! MariaDB about a tenth of a settled call's work for one busy user (docs/benchmarks.md,
//! eleventh session) — for one read: the whole log newest first, without a type. That read
//! now walks `ix_logs_kind_time` once per kind (two), merged newest first (storage's
//! `admin_read::newest`), as a user's rows of every kind are read since `m20261205_000010`.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Logs {
    Table,
    CreatedAt,
    Id,
    Model,
}

const NAME: &str = "ix_logs_time";

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
        if manager.has_index("logs", NAME).await? {
            return Ok(());
        }
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Logs::Table)
                    .col(Logs::CreatedAt)
                    .col(Logs::Id)
                    .col(Logs::Model)
                    .to_owned(),
            )
            .await
    }
}
