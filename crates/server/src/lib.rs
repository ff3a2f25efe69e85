//! The `tollgate` server: actix-web wiring of the external user API over `domain` and
//! `storage`. Only this crate knows HTTP status codes and the client JSON format; handlers parse
//! a request into a domain input, call one service method and map the result.

pub mod auth;
pub mod clock;
pub mod config;
pub mod dto;
pub mod dto_admin;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod telemetry;

pub use config::Settings;
pub use startup::Application;
