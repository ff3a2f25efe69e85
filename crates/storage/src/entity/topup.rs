//! `topups` rows: one per credited `payment_id` per platform, forever.

use sea_orm::entity::prelude::*;

/// A top-up row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "topups")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub platform_id: String,
    pub payment_id: String,
    pub user_id: i64,
    pub amount_usd: String,
    pub quota_added: i64,
    pub quota_after: i64,
    pub created_at: i64,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
