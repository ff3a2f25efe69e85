//! Database migrations for Tollgate. One set serves MySQL/MariaDB and SQLite; the server runs
//! them at start-up. Migrations are append-only: a landed migration is never edited.

pub use sea_orm_migration::prelude::*;

mod m20261126_000001_ledger;
mod m20261126_000002_relay;
mod m20261203_000003_cluster;
mod m20261203_000004_admin_read;
mod m20261203_000005_more_prices;
mod m20261203_000006_rate_limits;
mod m20261203_000007_covering_log_indexes;
mod m20261203_000008_call_errors;
mod m20261204_000009_log_request_index;
mod m20261205_000010_drop_user_time_index;
mod m20261205_000011_settle_receipts;
mod m20261205_000012_drop_time_index;

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261126_000001_ledger::Migration),
            Box::new(m20261126_000002_relay::Migration),
            Box::new(m20261203_000003_cluster::Migration),
            Box::new(m20261203_000004_admin_read::Migration),
            Box::new(m20261203_000005_more_prices::Migration),
            Box::new(m20261203_000006_rate_limits::Migration),
            Box::new(m20261203_000007_covering_log_indexes::Migration),
            Box::new(m20261203_000008_call_errors::Migration),
            Box::new(m20261204_000009_log_request_index::Migration),
            Box::new(m20261205_000010_drop_user_time_index::Migration),
            Box::new(m20261205_000011_settle_receipts::Migration),
            Box::new(m20261205_000012_drop_time_index::Migration),
        ]
    }
}
