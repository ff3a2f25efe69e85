//! `cache_changes` rows: the log of writes that in-memory caches depend on, polled by every
//! instance.

use sea_orm::entity::prelude::*;

/// A change row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "cache_changes")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub kind: i16,
    pub subject: i64,
    pub origin: String,
    pub created_at: i64,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
