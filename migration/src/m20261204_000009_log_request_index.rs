//! `ix_logs_request (request_id)`: a settlement taken from a balance lease (issue 9) has no
//! hold row of its own to prove it was not written yet, so a retried settlement batch looks its
//! calls' log rows up by request id first. Not unique: rows that are not calls (top-ups,
//! admin changes) carry an empty request id.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Logs {
    Table,
    RequestId,
}

const NAME: &str = "ix_logs_request";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_index("logs", NAME).await? {
            // Re-run after a crash between the index and the migration's own row.
            return Ok(());
        }
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Logs::Table)
                    .col(Logs::RequestId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(NAME).table(Logs::Table).to_owned())
            .await
    }
}
