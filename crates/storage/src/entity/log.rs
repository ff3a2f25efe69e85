//! `logs` rows: settled calls and top-ups, never prompt or completion text.

use sea_orm::entity::prelude::*;

/// A log row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "logs")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub user_id: i64,
    pub kind: i16,
    pub created_at: i64,
    pub model: String,
    pub token_id: Option<i64>,
    pub token_name: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub quota: i64,
    pub request_id: String,
    pub is_stream: bool,
    pub latency_ms: i64,
    /// The channel whose answer was billed (consume rows since the admin read migration).
    pub channel_id: Option<i64>,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
