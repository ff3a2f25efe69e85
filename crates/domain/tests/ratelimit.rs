//! The rate-limit window (SPEC §4.1) pinned call by call: the edges of the window and of a
//! lease, how long a refused call must wait (in milliseconds, as the limiter computes it), when a
//! window can be dropped, and the names limits are stored under. Every expected value is worked
//! out by hand from the rule, not from the code.

use tollgate_domain::ratelimit::{LEASE_MS, LimitKind, RateLimits, Subject, WINDOW_MS, Window};

fn rpm(n: u32) -> RateLimits {
    RateLimits {
        rpm: Some(n),
        ..RateLimits::default()
    }
}

fn tpm(n: u64) -> RateLimits {
    RateLimits {
        tpm: Some(n),
        ..RateLimits::default()
    }
}

fn concurrency(n: u32) -> RateLimits {
    RateLimits {
        concurrency: Some(n),
        ..RateLimits::default()
    }
}

#[test]
fn the_window_and_the_lease_are_one_minute_and_half_a_minute() {
    assert_eq!(WINDOW_MS, 60_000);
    assert_eq!(LEASE_MS, 30_000);
}

#[test]
fn a_renewed_lease_lasts_thirty_seconds_from_the_renewal_and_ends_exactly_then() {
    let mut w = Window::default();
    w.admit(0, &concurrency(1), 1, 0).expect("a free slot");
    // Without the renewal the slot would be free at 30,000; renewed at 20,000 it ends at 50,000.
    w.renew(1, 20_000);
    let no = w
        .admit(49_500, &concurrency(1), 2, 0)
        .expect_err("call 1 still holds the slot");
    assert_eq!(no.kind, LimitKind::Concurrency);
    assert_eq!(no.retry_after_ms, 500);
    assert_eq!(no.retry_after_secs(), 1);
    // At 50,000 the lease has ended: the slot is free.
    w.admit(50_000, &concurrency(1), 3, 0)
        .expect("the lease ended at 50,000");
}

#[test]
fn renewing_one_call_leaves_the_other_leases_alone() {
    let mut w = Window::default();
    w.admit(0, &concurrency(2), 1, 0).expect("slot 1");
    w.admit(0, &concurrency(2), 2, 0).expect("slot 2");
    w.release(2);
    // Call 9 is not in flight: renewing it renews nothing.
    w.renew(9, 20_000);
    w.admit(30_000, &concurrency(1), 3, 0)
        .expect("call 1's lease ended at 30,000");
}

#[test]
fn one_request_per_minute_waits_for_the_only_call_to_leave() {
    let mut w = Window::default();
    w.admit(0, &rpm(1), 1, 0).expect("first call");
    let no = w.admit(10_000, &rpm(1), 2, 0).expect_err("one per minute");
    assert_eq!(no.kind, LimitKind::Requests);
    // The call at 0 leaves at 60,000.
    assert_eq!(no.retry_after_ms, 50_000);
    assert_eq!(no.retry_after_secs(), 50);
    assert!(w.admit(59_999, &rpm(1), 3, 0).is_err());
    let ok = w.admit(60_000, &rpm(1), 4, 0).expect("the first call left");
    assert_eq!(ok.remaining_requests, Some(0));
}

#[test]
fn a_lowered_rpm_limit_waits_until_enough_calls_have_left() {
    // Five calls a second apart under a limit of 5; then the limit is lowered to 2.
    let mut w = Window::default();
    for i in 0..5u64 {
        let ok = w
            .admit(i as i64 * 1_000, &rpm(5), i, 0)
            .expect("under the old limit");
        assert_eq!(ok.remaining_requests, Some(4 - i));
    }
    // For one more call at most one may remain: the four oldest must leave, the fourth (at
    // 3,000) at 63,000.
    let no = w
        .admit(5_000, &rpm(2), 10, 0)
        .expect_err("five in the window");
    assert_eq!(no.kind, LimitKind::Requests);
    assert_eq!(no.retry_after_ms, 58_000);
    assert!(w.admit(62_999, &rpm(2), 11, 0).is_err());
    let ok = w.admit(63_000, &rpm(2), 12, 0).expect("one call left");
    assert_eq!(ok.remaining_requests, Some(0));
}

#[test]
fn a_call_that_fills_the_token_limit_exactly_is_admitted() {
    let mut w = Window::default();
    let first = w.admit(0, &tpm(100), 1, 60).expect("60 of 100");
    assert_eq!(first.remaining_tokens, Some(40));
    let second = w.admit(1, &tpm(100), 2, 40).expect("exactly 100 of 100");
    assert_eq!(second.remaining_tokens, Some(0));
    let no = w.admit(2, &tpm(100), 3, 1).expect_err("101 of 100");
    assert_eq!(no.kind, LimitKind::Tokens);
}

#[test]
fn tokens_wait_for_as_many_calls_as_must_leave() {
    let mut w = Window::default();
    w.admit(0, &tpm(100), 1, 30).expect("30");
    w.admit(1_000, &tpm(100), 2, 30).expect("60");
    w.admit(2_000, &tpm(100), 3, 40).expect("100");
    // 50 more fit once 50 have left: the first call (30) is not enough, the second (60 in
    // all) is; it leaves at 61,000.
    let no = w.admit(3_000, &tpm(100), 4, 50).expect_err("100 + 50");
    assert_eq!(no.kind, LimitKind::Tokens);
    assert_eq!(no.retry_after_ms, 58_000);
    assert!(w.admit(60_999, &tpm(100), 5, 50).is_err(), "70 + 50");
    let ok = w.admit(61_000, &tpm(100), 6, 50).expect("40 + 50");
    assert_eq!(ok.remaining_tokens, Some(10));
}

#[test]
fn a_call_larger_than_the_token_limit_waits_for_the_window_to_empty() {
    let mut w = Window::default();
    w.admit(0, &tpm(100), 1, 20).expect("20");
    w.admit(10, &tpm(100), 2, 50).expect("70");
    // 101 never fits under 100; the answer is when the window is empty: the call at 10 leaves
    // at 60,010.
    let no = w
        .admit(20, &tpm(100), 3, 101)
        .expect_err("over the limit itself");
    assert_eq!(no.kind, LimitKind::Tokens);
    assert_eq!(no.retry_after_ms, 59_990);
}

#[test]
fn a_window_is_idle_only_when_its_last_call_left_and_no_slot_is_held() {
    let mut w = Window::default();
    w.admit(40_000, &rpm(10), 1, 0).expect("a call");
    assert!(!w.is_idle(40_001));
    assert!(!w.is_idle(99_999));
    assert!(w.is_idle(100_000));

    // The call left the window at 60,000, but its slot, renewed at 50,000, lives to 80,000.
    let mut w = Window::default();
    w.admit(0, &concurrency(1), 1, 0).expect("a slot");
    w.renew(1, 50_000);
    assert!(!w.is_idle(70_000));
    assert!(!w.is_idle(79_999));
    assert!(w.is_idle(80_000));
}

#[test]
fn subjects_are_stored_under_distinct_stable_names() {
    assert_eq!(Subject::Key(7).name(), "key:7");
    assert_eq!(Subject::Channel(7).name(), "channel:7");
    assert_eq!(Subject::Key(-1).name(), "key:-1");
}

#[test]
fn a_call_larger_than_the_token_limit_on_an_empty_window_waits_a_full_window() {
    // A real clock's milliseconds (2023-11-14): the wait must not depend on the epoch.
    let now = 1_700_000_000_000;
    let no = Window::default()
        .admit(now, &tpm(100), 1, 101)
        .expect_err("over the limit itself");
    assert_eq!(no.kind, LimitKind::Tokens);
    assert_eq!(no.retry_after_ms, 60_000);
    assert_eq!(no.retry_after_secs(), 60);
}
