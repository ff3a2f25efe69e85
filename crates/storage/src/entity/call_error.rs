//! `call_errors` rows: failed calls counted per hour, channel (0: none tried) and kind.

use sea_orm::entity::prelude::*;

/// A count of failed calls.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "call_errors")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub hour_start: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub channel_id: i64,
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: i16,
    pub calls: i64,
}

/// No navigated relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
