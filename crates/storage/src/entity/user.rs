//! `users` rows.

use sea_orm::entity::prelude::*;

/// A user row.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "users")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub platform_id: String,
    pub external_user_id: String,
    pub username: String,
    pub display_name: String,
    pub email: String,
    pub phone: String,
    pub login_type: String,
    pub quota: i64,
    pub held_quota: i64,
    pub used_quota: i64,
    pub total_requests: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// No navigated relations: queries join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
