//! Hold and settle: the money rules of a relayed call. Before the upstream is called, a hold
//! for the most the call can cost (estimated prompt plus `max_tokens`) is taken by one atomic
//! conditional statement; afterwards the hold is settled to the real usage exactly once (keyed
//! by request id) or released in full. A hold whose process died expires and is released;
//! settling it later still charges, exactly once.

use crate::ids::{TokenId, UserId};
use crate::logs::{LogKind, NewLogEntry};
use crate::pricing::{Price, Usage};
use crate::quota::Quota;
use crate::time::UnixTime;

/// Completion tokens assumed for the hold when the request sets no `max_tokens`.
pub const DEFAULT_HOLD_COMPLETION_TOKENS: u64 = 4096;

/// The quota to hold for a call: its price at the estimated prompt and the completion limit,
/// and never less than 1 — every call reserves something, so a hold is always a real change
/// of `held_quota` (MySQL reports an UPDATE that changes nothing as affecting no row).
#[must_use]
pub fn hold_amount(
    price: &Price,
    estimated_prompt_tokens: u64,
    max_completion_tokens: u64,
) -> Quota {
    price
        .quota_for(&Usage::new(estimated_prompt_tokens, max_completion_tokens))
        .max(Quota::new(1))
}

/// A hold to take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The request it belongs to (unique).
    pub request_id: String,
    /// The user whose balance it reserves.
    pub user_id: UserId,
    /// The key it goes through (its cap is reserved too).
    pub token_id: TokenId,
    /// Reserved quota.
    pub amount: Quota,
    /// When it was taken.
    pub created_at: UnixTime,
    /// When it is released if never settled.
    pub expires_at: UnixTime,
}

/// Why a hold was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldRefusal {
    /// The user's balance minus holds in flight cannot cover it.
    InsufficientUserQuota,
    /// The key's own cap minus its holds in flight cannot cover it.
    InsufficientKeyQuota,
    /// The key no longer exists.
    TokenNotFound,
    /// The key is switched off.
    TokenDisabled,
    /// The key is past its expiry.
    TokenExpired,
}

/// A finished call to settle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    /// The request whose hold this settles.
    pub request_id: String,
    /// Owner.
    pub user_id: UserId,
    /// Key.
    pub token_id: TokenId,
    /// Key name, for the log row.
    pub token_name: String,
    /// Public model name.
    pub model: String,
    /// Tokens used.
    pub usage: Usage,
    /// What they cost.
    pub quota: Quota,
    /// Streamed.
    pub is_stream: bool,
    /// Time from request to the end of the answer.
    pub latency_ms: i64,
    /// When the call ended.
    pub at: UnixTime,
}

impl Settlement {
    /// The consume row this settlement writes.
    #[must_use]
    pub fn log_entry(&self) -> NewLogEntry {
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        NewLogEntry {
            user_id: self.user_id,
            kind: LogKind::Consume,
            created_at: self.at,
            model: self.model.clone(),
            token_id: Some(self.token_id),
            token_name: self.token_name.clone(),
            prompt_tokens: count(self.usage.prompt_tokens),
            completion_tokens: count(self.usage.completion_tokens),
            quota: self.quota,
            request_id: self.request_id.clone(),
            is_stream: self.is_stream,
            latency_ms: self.latency_ms,
        }
    }
}

/// What settling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The hold was replaced by the charge.
    Settled,
    /// The hold had expired (and been released); the charge was still applied, once.
    SettledAfterExpiry,
    /// Already settled or released: nothing changed.
    AlreadyFinished,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn the_hold_covers_any_usage_within_its_bounds() {
        let p =
            Price::new(Decimal::new(2, 0), Decimal::new(6, 0), Decimal::new(1, 0)).expect("price");
        // 4000 completion tokens at $6/1M alone need 12,000 quota.
        assert!(hold_amount(&p, 0, 4000) >= Quota::new(12_000));
        assert_eq!(hold_amount(&p, 0, 0), Quota::new(1), "a hold is never zero");
        let h = hold_amount(&p, 20, 100);
        for prompt in 0..=20 {
            for completion in (0..=100).step_by(7) {
                assert!(p.quota_for(&Usage::new(prompt, completion)) <= h);
            }
        }
    }
}
