//! `settle_receipts` replaces `ix_logs_request`. A settlement taken from a balance lease has no
//! hold row whose deletion proves it was written once; a retried batch used to look its lease
//! calls' log rows up by request id, which cost every call's log row an entry in that index
//! (about a ninth of MariaDB's work a settled call for one busy user, docs/benchmarks.md). Now a
//! batch with lease calls writes one receipt row first in its transaction, keyed by the
//! batch (the end time and a SHA-256 digest of its first call's request id, the same on every
//! attempt); an attempt that finds its receipt written knows its batch committed. Integers
//! only: no collation to choose. The primary key is also the range the expiry sweep prunes
//! receipts by (`at` first).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum SettleReceipts {
    Table,
    At,
    Digest,
}

#[derive(DeriveIden)]
enum Logs {
    Table,
    RequestId,
}

const REQUEST_INDEX: &str = "ix_logs_request";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table.table(SettleReceipts::Table).if_not_exists();
        if manager.get_database_backend() == DbBackend::MySql {
            // Row locks: a retry's insert waits for an earlier attempt still committing.
            table.engine("InnoDB");
        }
        manager
            .create_table(
                table
                    .col(ColumnDef::new(SettleReceipts::At).big_integer().not_null())
                    .col(
                        ColumnDef::new(SettleReceipts::Digest)
                            .big_integer()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(SettleReceipts::At)
                            .col(SettleReceipts::Digest),
                    )
                    .to_owned(),
            )
            .await?;
        if manager.has_index("logs", REQUEST_INDEX).await? {
            // (Absent on a re-run after a crash between the drop and the migration's own row.)
            manager
                .drop_index(
                    Index::drop()
                        .name(REQUEST_INDEX)
                        .table(Logs::Table)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // As `m20261204_000009` left it.
        if !manager.has_index("logs", REQUEST_INDEX).await? {
            manager
                .create_index(
                    Index::create()
                        .name(REQUEST_INDEX)
                        .table(Logs::Table)
                        .col(Logs::RequestId)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(
                Table::drop()
                    .table(SettleReceipts::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
