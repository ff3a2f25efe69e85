//! Default prices for the models of the new channel types and APIs (SPEC §4.3): Anthropic's
//! Claude, Google's Gemini, and OpenAI's embeddings, at their public list prices (USD per 1M
//! tokens: input, output, cached input). A price an admin already set for one of these models is
//! kept. Anthropic's cache writes bill at the input price (no separate cache-write price).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Prices {
    Table,
    Model,
    Input,
    Output,
    CachedInput,
    UpdatedAt,
}

/// (model, input, output, cached input), USD per 1M tokens, as listed when this was written.
const PRICES: &[(&str, &str, &str, &str)] = &[
    ("claude-sonnet-4-5", "3", "15", "0.3"),
    ("claude-haiku-4-5", "1", "5", "0.1"),
    ("gemini-2.5-flash", "0.3", "2.5", "0.075"),
    ("text-embedding-3-small", "0.02", "0", "0.02"),
    ("text-embedding-3-large", "0.13", "0", "0.13"),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        let backend = manager.get_database_backend();
        for (model, input, output, cached) in PRICES {
            // A price an admin set before this migration stays (no upsert syntax is common to
            // both backends, so look first).
            let existing = Query::select()
                .column(Prices::Model)
                .from(Prices::Table)
                .and_where(Expr::col(Prices::Model).eq(*model))
                .to_owned();
            if db.query_one_raw(backend.build(&existing)).await?.is_some() {
                continue;
            }
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
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (model, ..) in PRICES {
            manager
                .exec_stmt(
                    Query::delete()
                        .from_table(Prices::Table)
                        .and_where(Expr::col(Prices::Model).eq(*model))
                        .and_where(Expr::col(Prices::UpdatedAt).eq(0))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
