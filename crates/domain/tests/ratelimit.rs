//! The rate-limit window (SPEC §4.1) pinned call by call: the edges of the window and of a
//! lease, how long a refused call must wait (in milliseconds, as the limiter computes it), when a
//! window can be dropped, and the names limits are stored under. Every expected value is worked
//! out by hand from the rule, not from the code.

use tollgate_domain::ratelimit::{LimitKind, RateLimits, Window};

fn tpm(n: u64) -> RateLimits {
    RateLimits {
        tpm: Some(n),
        ..RateLimits::default()
    }
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
