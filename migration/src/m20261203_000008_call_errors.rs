//! Failed calls for the hourly usage report (SPEC §7): `call_errors`, one row per hour, channel
//! and kind of failure with its count, so the table grows with hours × channels × kinds, never
//! with calls. `hour_start` is the unix second the UTC hour starts at; `channel_id` is 0 when
//! no channel was tried; `kind` is the domain's `CallFailure` code. The primary key
//! `(hour_start, channel_id, kind)` is both what the upsert of each count hits and the range the
//! report reads.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum CallErrors {
    Table,
    HourStart,
    ChannelId,
    Kind,
    Calls,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table.table(CallErrors::Table).if_not_exists();
        if manager.get_database_backend() == DbBackend::MySql {
            // Row locks for the concurrent upserts (integers only: no collation to choose).
            table.engine("InnoDB");
        }
        manager
            .create_table(
                table
                    .col(
                        ColumnDef::new(CallErrors::HourStart)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CallErrors::ChannelId)
                            .big_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(ColumnDef::new(CallErrors::Kind).small_integer().not_null())
                    .col(ColumnDef::new(CallErrors::Calls).big_integer().not_null())
                    .primary_key(
                        Index::create()
                            .col(CallErrors::HourStart)
                            .col(CallErrors::ChannelId)
                            .col(CallErrors::Kind),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CallErrors::Table).to_owned())
            .await
    }
}
