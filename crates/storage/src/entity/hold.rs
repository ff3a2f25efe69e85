//! `holds` rows: one per relayed call in flight (state 0) or whose hold expired unsettled
//! (state 3); settling or releasing deletes the row.

use sea_orm::entity::prelude::*;

/// A hold row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "holds")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub request_id: String,
    pub user_id: i64,
    pub token_id: i64,
    pub amount: i64,
    pub state: i16,
    pub created_at: i64,
    pub expires_at: i64,
    /// The instance that took it (empty for holds older than the instance registry).
    pub instance_id: String,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
