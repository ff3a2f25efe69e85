//! SeaORM entities. They never leave this crate: repositories convert them to domain types.

pub mod log;
pub mod token;
pub mod topup;
pub mod user;
