//! Rate limits (SPEC §4.1): per key `rpm_limit`, `tpm_limit` and `max_concurrency`, per channel
//! `rpm_limit` and `tpm_limit`; NULL is no limit.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Tokens {
    Table,
    RpmLimit,
    TpmLimit,
    MaxConcurrency,
}

#[derive(DeriveIden)]
enum Channels {
    Table,
    RpmLimit,
    TpmLimit,
}

fn limit<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name).big_integer().null().take()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one column at a time.
        for col in [Tokens::RpmLimit, Tokens::TpmLimit, Tokens::MaxConcurrency] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .add_column(limit(col))
                        .to_owned(),
                )
                .await?;
        }
        for col in [Channels::RpmLimit, Channels::TpmLimit] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Channels::Table)
                        .add_column(limit(col))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for col in [Tokens::RpmLimit, Tokens::TpmLimit, Tokens::MaxConcurrency] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Tokens::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        for col in [Channels::RpmLimit, Channels::TpmLimit] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Channels::Table)
                        .drop_column(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
