//! The money rules of a relayed call from outside the module (SPEC §4, Billing): the hold
//! covers the charge, usage reports are believed only within the request's bounds, and a
//! settlement writes exactly the row it settled.
#![expect(clippy::expect_used, reason = "a test fails by panicking")]

use rust_decimal::Decimal;
use tollgate_domain::Quota;
use tollgate_domain::billing::{
    Reported, ReportedUsage, Settlement, UsageBounds, UsageFault, hold_amount,
};
use tollgate_domain::ids::{ChannelId, TokenId, UserId};
use tollgate_domain::logs::{LogKind, NewLogEntry};
use tollgate_domain::pricing::{Price, Usage};
use tollgate_domain::time::UnixTime;

fn price(input: i64, output: i64) -> Price {
    Price::new(
        Decimal::new(input, 0),
        Decimal::new(output, 0),
        Decimal::new(input, 0),
    )
    .expect("price")
}

#[test]
fn a_fault_in_any_one_field_is_a_fault() {
    let one = |prompt, completion, cached| UsageFault {
        prompt,
        completion,
        cached,
    };
    assert!(one(true, false, false).any());
    assert!(one(false, true, false).any());
    assert!(one(false, false, true).any());
    assert!(one(true, true, true).any());
    assert!(!one(false, false, false).any());
}

#[test]
fn the_hold_is_the_price_of_the_prompt_and_the_limit() {
    // SPEC §4: ceil(Σ tokens × price / 2): 100 × 2 + 1000 × 6 = 6,200 → 3,100 quota.
    assert_eq!(hold_amount(&price(2, 6), 100, 1000), Quota::new(3_100));
    // A free model still holds 1: every hold changes `held_quota`.
    assert_eq!(hold_amount(&price(0, 0), 100, 1000), Quota::new(1));
    assert_eq!(hold_amount(&price(2, 6), 0, 0), Quota::new(1));
}

#[test]
fn cached_tokens_up_to_the_prompt_are_believed() {
    let bounds = UsageBounds::for_request(100, 0, Some(10), 1);
    let (u, fault) = bounds.settle_usage(&ReportedUsage::counts(40, 10, 40), || {
        panic!("nothing to count")
    });
    assert_eq!(
        u,
        Usage {
            prompt_tokens: 40,
            completion_tokens: 10,
            cached_tokens: 40
        }
    );
    assert!(!fault.any());
    // Absent cached tokens are none, and no fault; the other fields need no count.
    let r = ReportedUsage {
        cached: Reported::Absent,
        ..ReportedUsage::counts(40, 10, 0)
    };
    let (u, fault) = bounds.settle_usage(&r, || panic!("nothing to count"));
    assert_eq!((u, fault), (Usage::new(40, 10), UsageFault::default()));
}

#[test]
fn each_bound_is_inclusive_and_checked_on_its_own() {
    // 100 bytes + 10,000 framing tokens; 10 completion tokens for one choice.
    let bounds = UsageBounds::for_request(100, 0, Some(10), 1);
    assert_eq!((bounds.max_prompt(), bounds.max_completion()), (10_100, 10));
    let counted = || Usage::new(7, 3);
    let (u, fault) = bounds.settle_usage(&ReportedUsage::counts(10_100, 11, 0), counted);
    assert_eq!(u, Usage::new(10_100, 3));
    assert_eq!(
        fault,
        UsageFault {
            prompt: false,
            completion: true,
            cached: false
        }
    );
    let (u, fault) = bounds.settle_usage(&ReportedUsage::counts(10_101, 10, 0), counted);
    assert_eq!(u, Usage::new(7, 10));
    assert_eq!(
        fault,
        UsageFault {
            prompt: true,
            completion: false,
            cached: false
        }
    );
    // An absent completion is counted, not a fault; the prompt as reported stands.
    let r = ReportedUsage {
        completion: Reported::Absent,
        ..ReportedUsage::counts(50, 0, 0)
    };
    let (u, fault) = bounds.settle_usage(&r, counted);
    assert_eq!((u, fault.any()), (Usage::new(50, 3), false));
}

#[test]
fn the_billed_usage_never_costs_more_than_the_hold_of_its_bounds() {
    // A request whose hold used the same limit as its bounds: whatever is reported, the
    // usage billed costs at most the hold for (max prompt, max completion).
    let p = price(3, 7);
    let bounds = UsageBounds::for_request(40, 0, Some(25), 1);
    let hold = hold_amount(&p, bounds.max_prompt(), bounds.max_completion());
    for reported in [
        ReportedUsage::counts(u64::MAX, u64::MAX, u64::MAX),
        ReportedUsage::counts(10_040, 25, 0),
        ReportedUsage::default(),
        ReportedUsage {
            prompt: Reported::Invalid,
            completion: Reported::Invalid,
            cached: Reported::Invalid,
        },
    ] {
        let (u, _) = bounds.settle_usage(&reported, || Usage::new(u64::MAX, u64::MAX));
        assert!(p.quota_for(&u) <= hold, "{reported:?} → {u:?}");
    }
    // (10,040 × 3 + 25 × 7) / 2 = 15,147.5 → 15,148.
    assert_eq!(hold, Quota::new(15_148));
}

#[test]
fn a_settlement_writes_one_consume_row_of_exactly_what_it_charged() {
    let s = Settlement {
        request_id: "req-1".into(),
        user_id: UserId::new(7),
        token_id: TokenId::new(9),
        token_name: "k".into(),
        model: "qwen-turbo".into(),
        usage: Usage::new(14, 18),
        quota: Quota::new(68),
        is_stream: true,
        latency_ms: 1_234,
        channel_id: Some(ChannelId::new(3)),
        lease: None,
        at: UnixTime::from_secs(1_764_000_000),
    };
    assert_eq!(
        s.log_entry(),
        NewLogEntry {
            user_id: UserId::new(7),
            kind: LogKind::Consume,
            created_at: UnixTime::from_secs(1_764_000_000),
            model: "qwen-turbo".into(),
            token_id: Some(TokenId::new(9)),
            token_name: "k".into(),
            prompt_tokens: 14,
            completion_tokens: 18,
            quota: Quota::new(68),
            request_id: "req-1".into(),
            is_stream: true,
            latency_ms: 1_234,
            channel_id: Some(ChannelId::new(3)),
        }
    );
    // Counts beyond the database's 64-bit signed columns are stored saturated.
    let huge = Settlement {
        usage: Usage::new(u64::MAX, 1 << 63),
        ..s
    };
    let row = huge.log_entry();
    assert_eq!(
        (row.prompt_tokens, row.completion_tokens),
        (i64::MAX, i64::MAX)
    );
}
