//! The ledger: users (scoped by platform), tokens (hash only), top-ups (unique `payment_id` per
//! platform, forever) and the per-user log. On MySQL every table uses a binary NO PAD collation,
//! so identifiers compare byte for byte, trailing spaces included, as SPEC §3 requires (SQLite
//! compares bytes by default).
//! Money columns are BIGINT quota; the top-up amount is kept as its exact decimal text.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{DbBackend, Statement};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    PlatformId,
    ExternalUserId,
    Username,
    DisplayName,
    Email,
    Phone,
    LoginType,
    Quota,
    UsedQuota,
    TotalRequests,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    UserId,
    Name,
    KeyHash,
    KeyPrefix,
    KeySuffix,
    Status,
    CreatedAt,
    ExpiresAt,
    QuotaLimit,
    UsedQuota,
}

#[derive(DeriveIden)]
enum Topups {
    Table,
    Id,
    PlatformId,
    PaymentId,
    UserId,
    AmountUsd,
    QuotaAdded,
    QuotaAfter,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Logs {
    Table,
    Id,
    UserId,
    Kind,
    CreatedAt,
    Model,
    TokenId,
    TokenName,
    PromptTokens,
    CompletionTokens,
    Quota,
    RequestId,
    IsStream,
    LatencyMs,
}

fn id<T: IntoIden>(name: T) -> ColumnDef {
    ColumnDef::new(name)
        .big_integer()
        .not_null()
        .auto_increment()
        .primary_key()
        .take()
}

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

/// An index over `cols` of `table`.
fn index<T: IntoIden, C: IntoIden>(
    name: &str,
    table: T,
    cols: impl IntoIterator<Item = C>,
    unique: bool,
) -> IndexCreateStatement {
    let mut i = Index::create();
    i.name(name).table(table);
    for c in cols {
        i.col(c);
    }
    if unique {
        i.unique();
    }
    i
}

/// The binary collation that does not ignore trailing spaces: `utf8mb4_bin` is PAD SPACE on
/// both MariaDB and MySQL, so it would make `"id"` and `"id "` the same user. MariaDB calls the
/// NO PAD one `utf8mb4_nopad_bin`, MySQL 8 `utf8mb4_0900_bin`.
async fn mysql_collation(manager: &SchemaManager<'_>) -> Result<String, DbErr> {
    let row = manager
        .get_connection()
        .query_one_raw(Statement::from_string(
            DbBackend::MySql,
            "SELECT COLLATION_NAME FROM information_schema.COLLATIONS \
             WHERE COLLATION_NAME IN ('utf8mb4_nopad_bin', 'utf8mb4_0900_bin') ORDER BY COLLATION_NAME LIMIT 1",
        ))
        .await?;
    match row {
        Some(r) => r.try_get_by_index::<String>(0),
        None => Err(DbErr::Migration(
            "the MySQL server has no binary NO PAD utf8mb4 collation".into(),
        )),
    }
}

/// Table options: InnoDB with a byte-exact collation on MySQL; nothing on SQLite.
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
        let collation = match manager.get_database_backend() {
            DbBackend::MySql => Some(mysql_collation(manager).await?),
            _ => None,
        };
        let collation = collation.as_deref();
        manager
            .create_table(
                table(collation, Users::Table)
                    .col(id(Users::Id))
                    .col(ColumnDef::new(Users::PlatformId).string_len(32).not_null())
                    .col(
                        ColumnDef::new(Users::ExternalUserId)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(ColumnDef::new(Users::Username).string_len(50).not_null())
                    .col(text(Users::DisplayName, 100))
                    .col(text(Users::Email, 100))
                    .col(text(Users::Phone, 20))
                    .col(text(Users::LoginType, 16))
                    .col(big(Users::Quota))
                    .col(big(Users::UsedQuota))
                    .col(big(Users::TotalRequests))
                    .col(big(Users::CreatedAt))
                    .col(big(Users::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_users_platform_external",
                Users::Table,
                [Users::PlatformId, Users::ExternalUserId],
                true,
            ))
            .await?;

        manager
            .create_table(
                table(collation, Tokens::Table)
                    .col(id(Tokens::Id))
                    .col(ColumnDef::new(Tokens::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Tokens::Name).string_len(100).not_null())
                    .col(ColumnDef::new(Tokens::KeyHash).string_len(64).not_null())
                    .col(ColumnDef::new(Tokens::KeyPrefix).string_len(8).not_null())
                    .col(ColumnDef::new(Tokens::KeySuffix).string_len(8).not_null())
                    .col(
                        ColumnDef::new(Tokens::Status)
                            .small_integer()
                            .not_null()
                            .default(1),
                    )
                    .col(big(Tokens::CreatedAt))
                    .col(big(Tokens::ExpiresAt))
                    .col(ColumnDef::new(Tokens::QuotaLimit).big_integer().null())
                    .col(big(Tokens::UsedQuota))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tokens_user")
                            .from(Tokens::Table, Tokens::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_tokens_key_hash",
                Tokens::Table,
                [Tokens::KeyHash],
                true,
            ))
            .await?;
        manager
            .create_index(index(
                "ix_tokens_user",
                Tokens::Table,
                [Tokens::UserId],
                false,
            ))
            .await?;

        manager
            .create_table(
                table(collation, Topups::Table)
                    .col(id(Topups::Id))
                    .col(ColumnDef::new(Topups::PlatformId).string_len(32).not_null())
                    .col(ColumnDef::new(Topups::PaymentId).string_len(200).not_null())
                    .col(ColumnDef::new(Topups::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Topups::AmountUsd).string_len(40).not_null())
                    .col(big(Topups::QuotaAdded))
                    .col(big(Topups::QuotaAfter))
                    .col(big(Topups::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_topups_user")
                            .from(Topups::Table, Topups::UserId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(index(
                "ux_topups_platform_payment",
                Topups::Table,
                [Topups::PlatformId, Topups::PaymentId],
                true,
            ))
            .await?;

        manager
            .create_table(
                table(collation, Logs::Table)
                    .col(id(Logs::Id))
                    .col(ColumnDef::new(Logs::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Logs::Kind).small_integer().not_null())
                    .col(big(Logs::CreatedAt))
                    .col(text(Logs::Model, 100))
                    .col(ColumnDef::new(Logs::TokenId).big_integer().null())
                    .col(text(Logs::TokenName, 100))
                    .col(big(Logs::PromptTokens))
                    .col(big(Logs::CompletionTokens))
                    .col(big(Logs::Quota))
                    .col(text(Logs::RequestId, 200))
                    .col(
                        ColumnDef::new(Logs::IsStream)
                            .boolean()
                            .not_null()
                            .default(false),
                    )
                    .col(big(Logs::LatencyMs))
                    .to_owned(),
            )
            .await?;
        // Per-user, newest-first reads: the whole log and one kind of row.
        manager
            .create_index(index(
                "ix_logs_user_time",
                Logs::Table,
                [Logs::UserId, Logs::CreatedAt, Logs::Id],
                false,
            ))
            .await?;
        manager
            .create_index(index(
                "ix_logs_user_kind_time",
                Logs::Table,
                [Logs::UserId, Logs::Kind, Logs::CreatedAt, Logs::Id],
                false,
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Logs::Table.into_iden(),
            Topups::Table.into_iden(),
            Tokens::Table.into_iden(),
            Users::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(t).to_owned())
                .await?;
        }
        Ok(())
    }
}
