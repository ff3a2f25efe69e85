//! The pure core of Tollgate: quota math, identifiers, validation rules, the external-user
//! service and the repository traits it needs. This crate does no IO (no tokio, sea-orm, actix,
//! hyper or redis; CI checks it with `cargo tree -i`), so other services can reuse it and its
//! rules can be tested without a database.

pub mod admin;
pub mod admin_read;
pub mod billing;
pub mod call_errors;
pub mod channel;
pub mod cluster;
pub mod error;
pub mod ids;
pub mod logs;
pub mod pricing;
pub mod quota;
pub mod ratelimit;
pub mod repository;
pub mod service;
pub mod time;
pub mod token;
pub mod topup;
pub mod user;
pub mod validation;

pub use error::{DomainError, RepoError};
pub use quota::{QUOTA_PER_USD, Quota, UsdAmount};
