//! The relay: everything between an authenticated `POST /v1/chat/completions` and the upstream
//! provider. Provider adapters ([`provider`]), the pooled hyper client ([`client`]), the wire
//! views that parse only what billing and routing need ([`wire`]), the tokenizer fallback
//! ([`tokenizer`]), the in-memory caches of keys, channels and prices ([`cache`]), the
//! [`Ledger`] port through which every call's money moves ([`ledger`]; today's
//! [`ExactLedger`] writes each hold and settlement to the domain's `BillingRepository`), and the
//! [`Gateway`] that ties them together, with failover and channel health in modules of their
//! own. Across instances: the change feed that
//! keeps every cache current ([`feed`]), this instance's registry membership ([`membership`]),
//! and the Prometheus series ([`metrics`]).
//!
//! No HTTP status codes are decided here: failures are [`RelayError`] values that the server
//! maps to statuses.

pub mod anthropic;
pub mod cache;
pub mod call;
pub mod client;
mod codec;
mod error;
mod failover;
pub mod failures;
pub mod feed;
pub mod gateway;
mod health;
pub mod lease;
pub mod ledger;
pub mod limits;
pub mod membership;
pub mod metrics;
pub mod provider;
mod scrub;
mod settle;
mod stream;
pub mod tokenizer;
pub mod wire;

pub use error::RelayError;
pub use failures::{FailureLog, FailureLogConfig};
pub use gateway::{ChatReply, Gateway, GatewayConfig, RateHeaders};
pub use lease::{LeaseLedger, LeaseLedgerConfig};
pub use ledger::{Backlog, ExactLedger, ExactLedgerConfig, Ledger, Reservation};
