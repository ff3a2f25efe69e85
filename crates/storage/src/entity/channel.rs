//! `channels` rows. The upstream key is kept in plain text, or as `enc:v1:…` when
//! `TOLLGATE_SECRET_KEY` encrypts keys at rest: Tollgate must present it upstream.

use sea_orm::entity::prelude::*;

/// A channel row (`models` and `model_mapping` are JSON text).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "channels")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub api_key: String,
    pub models: String,
    pub model_mapping: String,
    pub priority: i64,
    pub weight: i64,
    pub status: i16,
    pub disabled_reason: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
