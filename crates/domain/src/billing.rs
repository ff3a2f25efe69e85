//! Hold and settle: the money rules of a relayed call. Before the upstream is called, a hold
//! for the most the call can cost (estimated prompt plus `max_tokens`) is taken by one atomic
//! conditional statement; afterwards the hold is settled to the real usage exactly once (keyed
//! by request id) or released in full. A hold whose process died expires and is released;
//! settling it later still charges, exactly once.

use crate::cluster::InstanceId;
use crate::ids::{ChannelId, TokenId, UserId};
use crate::logs::{LogKind, NewLogEntry};
use crate::pricing::{Price, Usage};
use crate::quota::Quota;
use crate::time::UnixTime;
use sha2::{Digest, Sha256};

/// Completion tokens assumed for the hold when the request sets no `max_tokens`.
pub const DEFAULT_HOLD_COMPLETION_TOKENS: u64 = 4096;

/// Completion tokens one choice may plausibly report when the request set no limit: above the
/// longest output of any model served today, far below what would overflow a sum.
pub const UNLIMITED_COMPLETION_TOKENS: u64 = 1_000_000;

/// Prompt tokens a provider may add around the request's own text (system framing, tool
/// formatting, chat templates).
pub const PROMPT_FRAMING_TOKENS: u64 = 10_000;

/// Prompt tokens one media part (an image, audio or video given by URL, whose bytes are not in
/// the request) may plausibly cost.
pub const MEDIA_PART_TOKENS: u64 = 200_000;

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

/// A usage count as a provider reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reported {
    /// The field was not there.
    #[default]
    Absent,
    /// A whole, non-negative number that fits 64 bits.
    Count(u64),
    /// Negative, fractional, too large for 64 bits, or not a number.
    Invalid,
}

/// `usage` of an answer as the provider reported it, before any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReportedUsage {
    /// Prompt tokens (cached ones included).
    pub prompt: Reported,
    /// Completion tokens.
    pub completion: Reported,
    /// Cached prompt tokens.
    pub cached: Reported,
}

impl ReportedUsage {
    /// A well-formed report.
    #[must_use]
    pub const fn counts(prompt: u64, completion: u64, cached: u64) -> Self {
        ReportedUsage {
            prompt: Reported::Count(prompt),
            completion: Reported::Count(completion),
            cached: Reported::Count(cached),
        }
    }
}

/// Which reported fields could not be believed (an upstream fault, logged by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UsageFault {
    /// The prompt count was invalid or beyond its bound.
    pub prompt: bool,
    /// The completion count was invalid or beyond its bound.
    pub completion: bool,
    /// The cached count was invalid or beyond the prompt.
    pub cached: bool,
}

impl UsageFault {
    /// Whether any field was at fault.
    #[must_use]
    pub const fn any(&self) -> bool {
        self.prompt || self.completion || self.cached
    }
}

/// The most a call can plausibly use, from what the request itself allows: the upstream can
/// neither read more prompt tokens than the request carries nor write more completion tokens
/// than its limit. A report beyond these bounds is an upstream fault, never a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageBounds {
    max_prompt: u64,
    max_completion: u64,
}

impl UsageBounds {
    /// Bounds for a request of `body_bytes` bytes with `media_parts` media parts (images,
    /// audio, video by URL), whose completion limit is `completion_limit` per choice (`None`
    /// when the client set none) for `choices` choices.
    ///
    /// A byte-level BPE token covers at least one byte of text, so the request's bytes bound its
    /// text tokens; each media part and the provider's framing get a fixed allowance.
    #[must_use]
    pub fn for_request(
        body_bytes: u64,
        media_parts: u64,
        completion_limit: Option<u64>,
        choices: u64,
    ) -> Self {
        let max_prompt = body_bytes
            .saturating_add(PROMPT_FRAMING_TOKENS)
            .saturating_add(media_parts.saturating_mul(MEDIA_PART_TOKENS));
        let per_choice = completion_limit.unwrap_or(UNLIMITED_COMPLETION_TOKENS);
        UsageBounds {
            max_prompt,
            max_completion: per_choice.saturating_mul(choices.max(1)),
        }
    }

    /// The most prompt tokens believed.
    #[must_use]
    pub const fn max_prompt(&self) -> u64 {
        self.max_prompt
    }

    /// The most completion tokens believed.
    #[must_use]
    pub const fn max_completion(&self) -> u64 {
        self.max_completion
    }

    /// The usage to bill: each reported field that is well formed and within its bound is
    /// taken as reported; an absent one is replaced by Tollgate's own count (`counted`, only
    /// computed when needed), and so is an invalid or out-of-bound one, which is also reported
    /// as a fault. Tollgate's own counts are capped by the same bounds, and cached tokens never
    /// exceed the prompt.
    pub fn settle_usage(
        &self,
        reported: &ReportedUsage,
        counted: impl FnOnce() -> Usage,
    ) -> (Usage, UsageFault) {
        let mut fault = UsageFault::default();
        let mut own: Option<Usage> = None;
        let mut counted = Some(counted);
        let mut own_count = |pick: fn(&Usage) -> u64| -> u64 {
            if own.is_none() {
                own = counted.take().map(|f| f());
            }
            own.as_ref().map_or(0, pick)
        };
        let prompt = match reported.prompt {
            Reported::Count(n) if n <= self.max_prompt => n,
            r => {
                fault.prompt = r != Reported::Absent;
                own_count(|u| u.prompt_tokens).min(self.max_prompt)
            }
        };
        let completion = match reported.completion {
            Reported::Count(n) if n <= self.max_completion => n,
            r => {
                fault.completion = r != Reported::Absent;
                own_count(|u| u.completion_tokens).min(self.max_completion)
            }
        };
        let cached = match reported.cached {
            Reported::Count(n) if n <= prompt => n,
            Reported::Absent => 0,
            _ => {
                fault.cached = true;
                0
            }
        };
        (
            Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cached_tokens: cached,
            },
            fault,
        )
    }
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
    /// The instance that took it (whose death releases it).
    pub instance: InstanceId,
    /// Whether the key has a cap of its own: such a hold is checked against the cap in the
    /// database, call by call, and never taken from a balance lease.
    pub capped_key: bool,
}

/// A balance lease (issue 9): a slice of one user's spendable balance that one instance
/// reserved with a single conditional statement, and from which it takes its calls' holds in
/// memory. In the database it is a hold row keyed by its id, with no key (`token_id` 0), so the
/// user's `held_quota` counts it, the instance registry returns it when its instance dies, and
/// nothing can spend it twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseId(String);

impl LeaseId {
    /// The `generation`-th lease of `user` by `instance` (unique per instance, at most 64
    /// characters: the hold row's key).
    #[must_use]
    pub fn new(instance: &InstanceId, user: UserId, generation: u64) -> Self {
        LeaseId(format!(
            "lease-{}-{:x}-{generation:x}",
            instance.as_str(),
            user.get()
        ))
    }

    /// The id as stored (the hold row's request id).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lease and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Its id.
    pub id: LeaseId,
    /// The user whose balance it reserves.
    pub user_id: UserId,
    /// The instance that holds it (whose death returns it).
    pub instance: InstanceId,
}

impl Lease {
    /// The `generation`-th lease of `user_id` by `instance`.
    #[must_use]
    pub fn new(instance: InstanceId, user_id: UserId, generation: u64) -> Self {
        Lease {
            id: LeaseId::new(&instance, user_id, generation),
            user_id,
            instance,
        }
    }
}

/// What growing a lease did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseGrowth {
    /// The amount was added to the lease.
    Grown,
    /// The user's free balance was not large enough: nothing changed.
    Refused,
    /// The lease's row is gone (its instance was taken for dead and the lease returned):
    /// nothing changed, and the lease must not be used any more.
    Lost,
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
    /// The channel whose answer is billed.
    pub channel_id: Option<ChannelId>,
    /// The balance lease the call's hold was taken from; `None` when the call has a hold row
    /// of its own (keyed by `request_id`).
    pub lease: Option<LeaseId>,
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
            channel_id: self.channel_id,
        }
    }
}

/// Whether an earlier attempt to write a settlement batch may have committed. Stores may use it
/// to skip work on a first attempt; the store in `storage` does not need it (a batch's
/// [`BatchReceipt`] tells every attempt whether the batch was written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchAttempt {
    /// The batch's first attempt: none of its calls was written before.
    First,
    /// A later attempt: an earlier one may have committed (the database failed at or after
    /// its COMMIT), and nothing may be charged twice.
    Retry,
}

/// What proves a settlement batch with calls from balance leases was written: such a call has
/// no hold row whose deletion shows it was settled once, so the batch writes this receipt first
/// in its transaction, and an attempt that finds it written knows the batch committed and
/// changes nothing. The same batch makes the same receipt on every attempt: its first call's
/// end time and the first 8 bytes of a SHA-256 digest of its request id (request ids are
/// unique per call, and a call is in one batch; two batches share a receipt only if their
/// first calls ended in the same second with digests equal in 64 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchReceipt {
    at: UnixTime,
    digest: i64,
}

impl BatchReceipt {
    /// How long a store keeps a receipt, in seconds: longer than any attempt of its batch can
    /// still be under way (the settlement worker retries while its process lives; a day of
    /// failing attempts against a database whose sweeps succeed is an outage this does not
    /// cover, docs/relay.md).
    pub const KEPT_SECS: i64 = 86_400;

    /// The receipt of `batch`; `None` when none of its calls was taken from a lease (each has
    /// a hold row of its own, which proves it).
    #[must_use]
    pub fn of(batch: &[Settlement]) -> Option<Self> {
        if !batch.iter().any(|s| s.lease.is_some()) {
            return None;
        }
        let first = batch.first()?;
        let digest = Sha256::digest(first.request_id.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        Some(BatchReceipt {
            at: first.at,
            digest: i64::from_be_bytes(head),
        })
    }

    /// When the batch's first call ended.
    #[must_use]
    pub fn at(&self) -> UnixTime {
        self.at
    }

    /// The digest of the batch's first request id.
    #[must_use]
    pub fn digest(&self) -> i64 {
        self.digest
    }
}

/// What settling did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The hold was replaced by the charge.
    Settled,
    /// The hold had expired (and been released) — or, for a call taken from a balance lease,
    /// the lease's row is gone (the instance registry returned it): the charge was still
    /// applied, once.
    SettledAfterExpiry,
    /// Already settled or released: nothing changed.
    AlreadyFinished,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    /// A settlement of `id` ending at `at`, from a lease when `leased`.
    fn call(id: &str, at: i64, leased: bool) -> Settlement {
        let instance = InstanceId::from_random([7; 12]);
        Settlement {
            request_id: id.into(),
            user_id: UserId::new(1),
            token_id: TokenId::new(1),
            token_name: "key".into(),
            model: "m".into(),
            usage: Usage::new(1, 1),
            quota: Quota::new(1),
            is_stream: false,
            latency_ms: 1,
            at: UnixTime::from_secs(at),
            channel_id: None,
            lease: leased.then(|| LeaseId::new(&instance, UserId::new(1), 1)),
        }
    }

    #[test]
    fn a_batch_with_lease_calls_has_one_receipt_made_from_its_first_call() {
        let batch = [call("r-1", 100, false), call("r-2", 101, true)];
        let receipt = BatchReceipt::of(&batch).expect("a lease call");
        assert_eq!(
            receipt.at(),
            UnixTime::from_secs(100),
            "the first call's end"
        );
        // The receipt is the first call's: a retry must list the calls in the same order.
        let reordered = [batch[1].clone(), batch[0].clone()];
        assert_ne!(BatchReceipt::of(&reordered), Some(receipt));
        // The digest is the first 8 bytes of SHA-256 of the request id, big-endian.
        let expected = Sha256::digest(b"r-1");
        assert_eq!(
            receipt.digest().to_be_bytes(),
            expected[..8],
            "the request id's digest"
        );
        // Another first call, or the same one at another second, is another receipt.
        let other = [call("r-3", 100, true)];
        assert_ne!(BatchReceipt::of(&other), Some(receipt));
        let later = [call("r-1", 101, true)];
        assert_ne!(BatchReceipt::of(&later), Some(receipt));
        // Calls with hold rows of their own need none; nor does an empty batch.
        assert_eq!(BatchReceipt::of(&[call("r-4", 100, false)]), None);
        assert_eq!(BatchReceipt::of(&[]), None);
    }

    #[test]
    fn lease_ids_name_their_instance_user_and_generation_and_fit_a_hold_row() {
        let a = InstanceId::from_random([0xab; 12]);
        let b = InstanceId::from_random([0xcd; 12]);
        let id = LeaseId::new(&a, UserId::new(255), 16);
        assert_eq!(id.as_str(), format!("lease-{}-ff-10", a.as_str()));
        assert_eq!(id.to_string(), id.as_str(), "shown as stored");
        let lease = Lease::new(a.clone(), UserId::new(255), 16);
        assert_eq!(lease.id, id);
        assert_eq!(lease.instance, a);
        let others = [
            LeaseId::new(&a, UserId::new(255), 17),
            LeaseId::new(&a, UserId::new(254), 16),
            LeaseId::new(&b, UserId::new(255), 16),
        ];
        for other in &others {
            assert_ne!(other.as_str(), id.as_str());
        }
        let longest = LeaseId::new(&a, UserId::new(i64::MAX), u64::MAX);
        assert!(longest.as_str().len() <= 64, "{longest}");
    }

    #[test]
    fn the_hold_covers_any_usage_within_its_bounds() {
        let p =
            Price::new(Decimal::new(2, 0), Decimal::new(6, 0), Decimal::new(1, 0)).expect("price");
        // 4000 completion tokens at $6/1M alone need 12,000 quota.
        assert!(hold_amount(&p, 0, 4000) >= Quota::new(12_000));
        assert_eq!(hold_amount(&p, 0, 0), Quota::new(1), "a hold is never zero");
        assert_eq!(hold_amount(&p, 0, 4000), Quota::new(12_000));
        let h = hold_amount(&p, 20, 100);
        for prompt in 0..=20 {
            for completion in (0..=100).step_by(7) {
                assert!(p.quota_for(&Usage::new(prompt, completion)) <= h);
            }
        }
    }

    fn bounds() -> UsageBounds {
        // 1,000 bytes, one image, 50 completion tokens per choice, 2 choices.
        UsageBounds::for_request(1_000, 1, Some(50), 2)
    }

    #[test]
    fn bounds_follow_the_request() {
        let b = bounds();
        assert_eq!(b.max_prompt(), 1_000 + 10_000 + 200_000);
        assert_eq!(b.max_completion(), 100);
        let open = UsageBounds::for_request(10, 0, None, 3);
        assert_eq!(open.max_prompt(), 10_010);
        assert_eq!(open.max_completion(), 3_000_000);
        let huge = UsageBounds::for_request(u64::MAX, u64::MAX, Some(u64::MAX), u64::MAX);
        assert_eq!(
            (huge.max_prompt(), huge.max_completion()),
            (u64::MAX, u64::MAX)
        );
        assert_eq!(
            UsageBounds::for_request(0, 0, Some(7), 0).max_completion(),
            7,
            "n = 0 counts as one choice"
        );
    }

    #[test]
    fn plausible_reports_are_billed_as_reported_without_counting() {
        let (u, fault) = bounds().settle_usage(&ReportedUsage::counts(211_000, 100, 7), || {
            panic!("no count needed")
        });
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 211_000,
                completion_tokens: 100,
                cached_tokens: 7
            }
        );
        assert!(!fault.any());
    }

    #[test]
    fn hostile_reports_fall_back_to_our_own_count() {
        let counted = || Usage::new(30, 40);
        // Beyond the bounds by one.
        let (u, fault) = bounds().settle_usage(&ReportedUsage::counts(211_001, 101, 0), counted);
        assert_eq!(u, Usage::new(30, 40));
        assert!(fault.prompt && fault.completion && !fault.cached);
        // Negative or not numbers.
        let r = ReportedUsage {
            prompt: Reported::Invalid,
            completion: Reported::Count(5),
            cached: Reported::Invalid,
        };
        let (u, fault) = bounds().settle_usage(&r, counted);
        assert_eq!(u, Usage::new(30, 5));
        assert_eq!(
            fault,
            UsageFault {
                prompt: true,
                completion: false,
                cached: true
            }
        );
        // Cached above the prompt.
        let (u, fault) = bounds().settle_usage(&ReportedUsage::counts(10, 5, 11), counted);
        assert_eq!((u.cached_tokens, fault.cached), (0, true));
        // Our own count is capped too.
        let (u, _) =
            bounds().settle_usage(&ReportedUsage::default(), || Usage::new(u64::MAX, u64::MAX));
        assert_eq!(u, Usage::new(211_000, 100));
    }

    #[test]
    fn absent_fields_are_counted_but_not_faults() {
        let mut calls = 0;
        let (u, fault) = bounds().settle_usage(&ReportedUsage::default(), || {
            calls += 1;
            Usage::new(12, 34)
        });
        assert_eq!(u, Usage::new(12, 34));
        assert!(!fault.any());
        assert_eq!(calls, 1, "counted once for both fields");
    }
}
