//! SeaORM entities. They never leave this crate: repositories convert them to domain types.

pub mod cache_change;
pub mod call_error;
pub mod channel;
pub mod hold;
pub mod instance;
pub mod log;
pub mod price;
pub mod token;
pub mod topup;
pub mod user;
