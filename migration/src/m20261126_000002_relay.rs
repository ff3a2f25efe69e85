//! The relay: channels, model prices (exact decimal text, seeded with the default list), holds
//! (a row per relayed call in flight, unique by request id; deleted when the call is settled or
//! released, marked expired when its process died), and the `held_quota` columns that make a
//! hold one conditional UPDATE.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    HeldQuota,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    HeldQuota,
}

#[derive(DeriveIden)]
enum Channels {
    Table,
    Id,
    Name,
    Kind,
    BaseUrl,
    ApiKey,
    Models,
    ModelMapping,
    Priority,
    Weight,
    Status,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Prices {
    Table,
    Model,
    Input,
    Output,
    CachedInput,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Holds {
    Table,
    Id,
    RequestId,
    UserId,
    TokenId,
    Amount,
    State,
    CreatedAt,
    ExpiresAt,
}

/// Default prices, USD per 1M tokens (input, output, cached input), as listed publicly when this
/// migration was written. Admins change them with `PUT /api/admin/pricing/{model}`.
const DEFAULT_PRICES: &[(&str, &str, &str, &str)] = &[
    ("qwen-turbo", "0.05", "0.2", "0.02"),
    ("qwen-plus", "0.4", "1.2", "0.16"),
    ("qwen-max", "1.6", "6.4", "0.64"),
    ("deepseek-chat", "0.27", "1.1", "0.07"),
    ("deepseek-reasoner", "0.55", "2.19", "0.14"),
    ("gpt-4o", "2.5", "10", "1.25"),
    ("gpt-4o-mini", "0.15", "0.6", "0.075"),
];

fn big<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .default(0)
        .take()
}

fn text<T: IntoIden>(name: T, len: u32) -> ColumnDef {
    ColumnDef::new(name)
        .string_len(len)
        .not_null()
        .default("")
        .take()
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
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(big(Users::HeldQuota))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(big(Tokens::HeldQuota))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                table(collation, Channels::Table)
                    .col(
                        ColumnDef::new(Channels::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Channels::Name).string_len(100).not_null())
                    .col(ColumnDef::new(Channels::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Channels::BaseUrl).string_len(500).not_null())
                    .col(ColumnDef::new(Channels::ApiKey).text().not_null())
                    .col(ColumnDef::new(Channels::Models).text().not_null())
                    .col(ColumnDef::new(Channels::ModelMapping).text().not_null())
                    .col(big(Channels::Priority))
                    .col(big(Channels::Weight))
                    .col(
                        ColumnDef::new(Channels::Status)
                            .small_integer()
                            .not_null()
                            .default(1),
                    )
                    .col(text(Channels::DisabledReason, 500))
                    .col(big(Channels::CreatedAt))
                    .col(big(Channels::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                table(collation, Prices::Table)
                    .col(
                        ColumnDef::new(Prices::Model)
                            .string_len(100)
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Prices::Input).string_len(40).not_null())
                    .col(ColumnDef::new(Prices::Output).string_len(40).not_null())
                    .col(
                        ColumnDef::new(Prices::CachedInput)
                            .string_len(40)
                            .not_null(),
                    )
                    .col(big(Prices::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (model, input, output, cached) in DEFAULT_PRICES {
            manager
                .exec_stmt(
                    Query::insert()
                        .into_table(Prices::Table)
                        .columns([
                            Prices::Model,
                            Prices::Input,
                            Prices::Output,
                            Prices::CachedInput,
                            Prices::UpdatedAt,
                        ])
                        .values_panic([
                            (*model).into(),
                            (*input).into(),
                            (*output).into(),
                            (*cached).into(),
                            0i64.into(),
                        ])
                        .to_owned(),
                )
                .await?;
        }

        manager
            .create_table(
                table(collation, Holds::Table)
                    .col(
                        ColumnDef::new(Holds::Id)
                            .big_integer()
                            .not_null()
                            .auto_increment()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(Holds::RequestId).string_len(64).not_null())
                    .col(ColumnDef::new(Holds::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Holds::TokenId).big_integer().not_null())
                    .col(big(Holds::Amount))
                    .col(
                        ColumnDef::new(Holds::State)
                            .small_integer()
                            .not_null()
                            .default(0),
                    )
                    .col(big(Holds::CreatedAt))
                    .col(big(Holds::ExpiresAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_holds_request")
                    .table(Holds::Table)
                    .col(Holds::RequestId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The expiry sweep reads open holds by expiry.
        manager
            .create_index(
                Index::create()
                    .name("ix_holds_state_expiry")
                    .table(Holds::Table)
                    .col(Holds::State)
                    .col(Holds::ExpiresAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Holds::Table.into_iden(),
            Prices::Table.into_iden(),
            Channels::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .drop_column(Tokens::HeldQuota)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::HeldQuota)
                    .to_owned(),
            )
            .await
    }
}
