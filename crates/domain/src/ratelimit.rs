//! Rate limits (SPEC §4.1): requests per minute, tokens per minute and calls in flight, for a
//! key or a channel, and the exact sliding-window rule that enforces them.
//!
//! A window remembers every admitted call of the last 60 s with its tokens (the hold estimate
//! while it is in flight, its real usage once settled). A call is admitted only if, counting it,
//! the last 60 s hold at most `rpm` calls and `tpm` tokens, and fewer than `concurrency` calls
//! are in flight. So "60 per minute" admits at most 60 calls in *any* 60-second window — not
//! an approximation by fixed buckets. Concurrency slots are leases that expire unless renewed,
//! so a crashed instance's slots come back. The same rule runs in memory here and as a Redis
//! script for limits shared by several instances.

use crate::error::RepoError;
use async_trait::async_trait;
use std::collections::VecDeque;

/// The window, in milliseconds.
pub const WINDOW_MS: i64 = 60_000;
/// Largest `rpm_limit`.
pub const MAX_RPM: i64 = 1_000_000;
/// Largest `tpm_limit`.
pub const MAX_TPM: i64 = 1_000_000_000;
/// Largest `max_concurrency`.
pub const MAX_CONCURRENCY: i64 = 10_000;
/// How long a concurrency slot lives without renewal.
pub const LEASE_MS: i64 = 30_000;

/// Limits of one key or channel; `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimits {
    /// Calls admitted in any 60 s.
    pub rpm: Option<u32>,
    /// Tokens in any 60 s.
    pub tpm: Option<u64>,
    /// Calls in flight.
    pub concurrency: Option<u32>,
}

impl RateLimits {
    /// Whether nothing is limited.
    #[must_use]
    pub const fn is_unlimited(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.concurrency.is_none()
    }

    /// These limits, with `defaults` where none is set.
    #[must_use]
    pub fn or(self, defaults: RateLimits) -> RateLimits {
        RateLimits {
            rpm: self.rpm.or(defaults.rpm),
            tpm: self.tpm.or(defaults.tpm),
            concurrency: self.concurrency.or(defaults.concurrency),
        }
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute.
    Tokens,
    /// Calls in flight.
    Concurrency,
}

/// A refused call: which limit, and when trying again can succeed (whole seconds, at least 1,
/// as `Retry-After` needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The limit reached.
    pub kind: LimitKind,
    /// Milliseconds until a retry can be admitted.
    pub retry_after_ms: i64,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    #[must_use]
    pub fn retry_after_secs(&self) -> i64 {
        ((self.retry_after_ms + 999) / 1000).max(1)
    }
}

/// What is left after an admission, for OpenAI's `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Headroom {
    /// Calls still admissible in the window (with an `rpm` limit).
    pub remaining_requests: Option<u64>,
    /// Tokens still admissible (with a `tpm` limit).
    pub remaining_tokens: Option<u64>,
    /// Milliseconds until the window holds no call.
    pub reset_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    at_ms: i64,
    call: u64,
    tokens: u64,
}

/// The in-memory window of one key or channel.
#[derive(Debug, Default, Clone)]
pub struct Window {
    entries: VecDeque<Entry>,
    /// Σ tokens of `entries`, kept as they change (a check must not walk the window).
    used: u64,
    /// (call, lease expiry).
    in_flight: Vec<(u64, i64)>,
}

impl Window {
    fn prune(&mut self, now_ms: i64) {
        while let Some(e) = self
            .entries
            .front()
            .filter(|e| now_ms - e.at_ms >= WINDOW_MS)
            .copied()
        {
            self.entries.pop_front();
            self.used = self.used.saturating_sub(e.tokens);
        }
        self.in_flight.retain(|(_, until)| *until > now_ms);
    }

    /// Whether the window holds nothing worth keeping (it can be dropped).
    #[must_use]
    pub fn is_idle(&self, now_ms: i64) -> bool {
        self.entries
            .back()
            .is_none_or(|e| now_ms - e.at_ms >= WINDOW_MS)
            && self.in_flight.iter().all(|(_, until)| *until <= now_ms)
    }

    /// Admits `call` (an id unique in this window) with `tokens` estimated at `now_ms`, or says
    /// which limit refuses it and when to try again.
    pub fn admit(
        &mut self,
        now_ms: i64,
        limits: &RateLimits,
        call: u64,
        tokens: u64,
    ) -> Result<Headroom, Refusal> {
        self.prune(now_ms);
        if let Some(max) = limits.concurrency
            && self.in_flight.len() >= max as usize
        {
            // A slot frees when a call ends; its lease bounds the wait if its instance died.
            let soonest = self
                .in_flight
                .iter()
                .map(|(_, u)| *u)
                .min()
                .unwrap_or(now_ms);
            return Err(Refusal {
                kind: LimitKind::Concurrency,
                retry_after_ms: (soonest - now_ms).clamp(1, 1000),
            });
        }
        if let Some(max) = limits.rpm
            && self.entries.len() >= max as usize
        {
            // The call that leaves the window first makes room.
            let leaves = self.entries.len() + 1 - max as usize;
            let at = self.entries.get(leaves - 1).map_or(now_ms, |e| e.at_ms);
            return Err(Refusal {
                kind: LimitKind::Requests,
                retry_after_ms: at + WINDOW_MS - now_ms,
            });
        }
        let used = self.used;
        if let Some(max) = limits.tpm
            && used.saturating_add(tokens) > max
        {
            return Err(Refusal {
                kind: LimitKind::Tokens,
                retry_after_ms: self.tokens_free_at(now_ms, used, tokens, max) - now_ms,
            });
        }
        self.entries.push_back(Entry {
            at_ms: now_ms,
            call,
            tokens,
        });
        self.used = self.used.saturating_add(tokens);
        if limits.concurrency.is_some() {
            self.in_flight.push((call, now_ms + LEASE_MS));
        }
        Ok(Headroom {
            remaining_requests: limits
                .rpm
                .map(|m| u64::from(m).saturating_sub(self.entries.len() as u64)),
            remaining_tokens: limits
                .tpm
                .map(|m| m.saturating_sub(used.saturating_add(tokens))),
            reset_ms: WINDOW_MS,
        })
    }

    /// When enough tokens have left the window for `tokens` more to fit under `max` (a call
    /// larger than the limit itself never fits: when the window is empty, or a full window from
    /// `now_ms` if it is empty already — as the Redis script answers).
    fn tokens_free_at(&self, now_ms: i64, used: u64, tokens: u64, max: u64) -> i64 {
        let mut left = used;
        for e in &self.entries {
            left = left.saturating_sub(e.tokens);
            if left.saturating_add(tokens) <= max {
                return e.at_ms + WINDOW_MS;
            }
        }
        self.entries.back().map_or(now_ms, |e| e.at_ms) + WINDOW_MS
    }

    /// The call's real token count, once settled (it replaces the estimate).
    pub fn settle(&mut self, call: u64, tokens: u64) {
        // Newest first: a call settles soon after it was admitted.
        if let Some(e) = self.entries.iter_mut().rev().find(|e| e.call == call) {
            self.used = self.used.saturating_sub(e.tokens).saturating_add(tokens);
            e.tokens = tokens;
        }
    }

    /// The call ended: its concurrency slot is free.
    pub fn release(&mut self, call: u64) {
        self.in_flight.retain(|(c, _)| *c != call);
    }

    /// The call is still running at `now_ms`: its slot lives on.
    pub fn renew(&mut self, call: u64, now_ms: i64) {
        for (c, until) in &mut self.in_flight {
            if *c == call {
                *until = now_ms + LEASE_MS;
            }
        }
    }
}

/// What a limited subject is: a key or a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subject {
    /// A key, by token id.
    Key(i64),
    /// A channel, by id.
    Channel(i64),
}

impl Subject {
    /// A stable name, for storage keys.
    #[must_use]
    pub fn name(self) -> String {
        match self {
            Subject::Key(id) => format!("key:{id}"),
            Subject::Channel(id) => format!("channel:{id}"),
        }
    }
}

/// Where windows live: this process's memory, or Redis for limits shared by instances.
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Admits call `call` of `subject` with `tokens` estimated, or refuses it.
    async fn admit(
        &self,
        subject: Subject,
        limits: &RateLimits,
        call: u64,
        tokens: u64,
    ) -> Result<Result<Headroom, Refusal>, RepoError>;

    /// The call's real tokens, once settled.
    async fn settle(&self, subject: Subject, call: u64, tokens: u64) -> Result<(), RepoError>;

    /// The call ended (its last byte, or its client left).
    async fn release(&self, subject: Subject, call: u64) -> Result<(), RepoError>;

    /// The calls are still running: their concurrency leases live on.
    async fn renew(&self, calls: &[(Subject, u64)]) -> Result<(), RepoError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rpm(n: u32) -> RateLimits {
        RateLimits {
            rpm: Some(n),
            ..RateLimits::default()
        }
    }

    #[test]
    fn a_burst_admits_exactly_the_limit_then_waits_for_the_oldest() {
        let mut w = Window::default();
        let admitted = (0..200u64)
            .filter(|i| w.admit(1_000 + *i as i64, &rpm(60), *i, 1).is_ok())
            .count();
        assert_eq!(admitted, 60);
        let refused = w.admit(2_000, &rpm(60), 999, 1).expect_err("full");
        assert_eq!(refused.kind, LimitKind::Requests);
        // The first call (at 1,000 ms) leaves at 61,000.
        assert_eq!(refused.retry_after_ms, 59_000);
        assert_eq!(refused.retry_after_secs(), 59);
        assert!(w.admit(60_999, &rpm(60), 1_000, 1).is_err());
        let ok = w.admit(61_000, &rpm(60), 1_001, 1).expect("room again");
        assert_eq!(ok.remaining_requests, Some(0));
    }

    #[test]
    fn tokens_count_estimates_then_real_usage() {
        let limits = RateLimits {
            tpm: Some(100),
            ..RateLimits::default()
        };
        let mut w = Window::default();
        assert_eq!(
            w.admit(0, &limits, 1, 60).expect("fits").remaining_tokens,
            Some(40)
        );
        let no = w.admit(10, &limits, 2, 50).expect_err("60 + 50 > 100");
        assert_eq!((no.kind, no.retry_after_ms), (LimitKind::Tokens, 59_990));
        w.settle(1, 20);
        assert!(w.admit(10, &limits, 2, 50).is_ok(), "20 + 50 fits");
        let huge = w.admit(20, &limits, 3, 101).expect_err("never fits");
        assert!(huge.retry_after_ms >= WINDOW_MS - 20);
    }

    #[test]
    fn concurrency_counts_calls_until_released_or_their_lease_expires() {
        let limits = RateLimits {
            concurrency: Some(2),
            ..RateLimits::default()
        };
        let mut w = Window::default();
        assert!(w.admit(0, &limits, 1, 0).is_ok());
        assert!(w.admit(0, &limits, 2, 0).is_ok());
        let no = w.admit(5, &limits, 3, 0).expect_err("two in flight");
        assert_eq!(
            (no.kind, no.retry_after_secs()),
            (LimitKind::Concurrency, 1)
        );
        w.release(1);
        assert!(w.admit(5, &limits, 3, 0).is_ok());
        // Call 2 is renewed, call 3 is not (its instance died): only 3's slot expires.
        w.renew(2, 20_000);
        assert!(w.admit(LEASE_MS + 10, &limits, 4, 0).is_ok());
        assert!(w.admit(LEASE_MS + 10, &limits, 5, 0).is_err());
        assert!(!w.is_idle(LEASE_MS + 10));
        assert!(w.is_idle(20_000 + LEASE_MS + WINDOW_MS));
    }

    #[test]
    fn defaults_fill_only_what_is_unset() {
        let own = RateLimits {
            rpm: Some(5),
            ..RateLimits::default()
        };
        let defaults = RateLimits {
            rpm: Some(60),
            tpm: Some(1_000),
            concurrency: None,
        };
        assert_eq!(
            own.or(defaults),
            RateLimits {
                rpm: Some(5),
                tpm: Some(1_000),
                concurrency: None
            }
        );
        assert!(RateLimits::default().is_unlimited());
        assert!(!own.is_unlimited());
    }

    proptest! {
        /// Whatever the arrival times, no 60-second window ever holds more admitted calls than
        /// `rpm`, nor more estimated tokens than `tpm`.
        #[test]
        fn no_window_ever_holds_more_than_the_limits(
            limit in 1u32..20,
            tpm in 1u64..500,
            gaps in proptest::collection::vec(0i64..20_000, 1..300),
            sizes in proptest::collection::vec(0u64..100, 300),
        ) {
            let limits = RateLimits { rpm: Some(limit), tpm: Some(tpm), concurrency: None };
            let mut w = Window::default();
            let mut now = 0i64;
            let mut admitted: Vec<(i64, u64)> = Vec::new();
            for (i, gap) in gaps.iter().enumerate() {
                now += gap;
                if w.admit(now, &limits, i as u64, sizes[i]).is_ok() {
                    admitted.push((now, sizes[i]));
                }
            }
            for (start, _) in &admitted {
                let inside: Vec<_> = admitted.iter().filter(|(t, _)| *t >= *start && *t < start + WINDOW_MS).collect();
                prop_assert!(inside.len() <= limit as usize);
                prop_assert!(inside.iter().map(|(_, s)| *s).sum::<u64>() <= tpm);
            }
        }

        /// A refused call is admitted once its Retry-After has passed (nothing else arriving).
        #[test]
        fn retry_after_is_enough(limit in 1u32..10, n in 1usize..30, step in 1i64..5_000) {
            let limits = rpm(limit);
            let mut w = Window::default();
            let mut now = 0;
            let mut refusal = None;
            for i in 0..n {
                now += step;
                if let Err(r) = w.admit(now, &limits, i as u64, 0) {
                    refusal = Some(r);
                    break;
                }
            }
            if let Some(r) = refusal {
                prop_assert!(r.retry_after_ms > 0);
                prop_assert!(w.admit(now + r.retry_after_ms, &limits, 10_000, 0).is_ok());
            }
        }
    }
}
