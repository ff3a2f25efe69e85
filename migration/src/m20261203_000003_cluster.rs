//! Several instances on one database: the registry of live instances (`instances`, with a
//! heartbeat), the instance that took each hold (`holds.instance_id`, so a dead instance's holds
//! can be found and released), and the log of cache changes every instance polls
//! (`cache_changes`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Holds {
    Table,
    InstanceId,
    State,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    Name,
    StartedAt,
    HeartbeatAt,
}

#[derive(DeriveIden)]
enum CacheChanges {
    Table,
    Id,
    Kind,
    Subject,
    Origin,
    CreatedAt,
}

async fn mysql_collation(manager: &SchemaManager<'_>) -> Result<Option<String>, DbErr> {
    if manager.get_database_backend() != DbBackend::MySql {
        return Ok(None);
    }
    // The same collation the ledger tables got.
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT TABLE_COLLATION FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'users'",
        ))
        .await?;
    match row {
        Some(r) => Ok(Some(r.try_get_by_index::<String>(0)?)),
        None => Err(DbErr::Migration("table users is missing".into())),
    }
}

fn table(collation: Option<&str>, name: impl IntoIden) -> TableCreateStatement {
    let mut t = Table::create();
    t.table(name).if_not_exists();
    if let Some(c) = collation {
        t.engine("InnoDB").character_set("utf8mb4").collate(c);
    }
    t
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let collation = mysql_collation(manager).await?;
        let collation = collation.as_deref();
        // Holds taken before this migration have no instance: only their expiry releases them.
        manager
            .alter_table(
                Table::alter()
                    .table(Holds::Table)
                    .add_column(
                        ColumnDef::new(Holds::InstanceId)
                            .string_len(32)
                            .not_null()
                            .default(""),
                    )
                    .to_owned(),
            )
            .await?;
        // The reaper reads a dead instance's holds in flight.
        manager
            .create_index(
                Index::create()
                    .name("ix_holds_instance_state")
                    .table(Holds::Table)
                    .col(Holds::InstanceId)
                    .col(Holds::State)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table(collation, Instances::Table)
                    .col(
                        ColumnDef::new(Instances::Id)
                            .string_len(32)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Instances::Name).string_len(200).not_null())
                    .col(
                        ColumnDef::new(Instances::StartedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Instances::HeartbeatAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_instances_name")
                    .table(Instances::Table)
                    .col(Instances::Name)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                table(collation, CacheChanges::Table)
                    .col(
                        ColumnDef::new(CacheChanges::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(CacheChanges::Kind)
                            .small_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CacheChanges::Subject)
                            .big_integer()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CacheChanges::Origin)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(CacheChanges::CreatedAt)
                            .big_integer()
                            .not_null(),
                    )
                    .to_owned(),
            )
            .await?;
        // Pruning reads old changes by time.
        manager
            .create_index(
                Index::create()
                    .name("ix_cache_changes_created")
                    .table(CacheChanges::Table)
                    .col(CacheChanges::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            CacheChanges::Table.into_iden(),
            Instances::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        manager
            .drop_index(
                Index::drop()
                    .name("ix_holds_instance_state")
                    .table(Holds::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Holds::Table)
                    .drop_column(Holds::InstanceId)
                    .to_owned(),
            )
            .await
    }
}
