//! The Redis rate limiter (run when `TOLLGATE_TEST_REDIS_URL` is set): the same exact window as
//! the in-memory one — a burst admits exactly the rpm, tokens count estimates then real usage,
//! concurrency slots are freed by release — shared by every limiter on that Redis.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_domain::ratelimit::{LimitKind, RateLimiter, RateLimits, Subject};
use tollgate_storage::RedisLimiter;

/// A subject no earlier run used (the keys expire after a minute anyway).
fn fresh() -> Subject {
    static N: AtomicI64 = AtomicI64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Subject::Key(
        i64::try_from(nanos % 1_000_000_000_000).expect("fits") * 1000
            + N.fetch_add(1, Ordering::Relaxed),
    )
}

fn limiters() -> Option<(RedisLimiter, RedisLimiter)> {
    let url = std::env::var("TOLLGATE_TEST_REDIS_URL").ok()?;
    Some((
        RedisLimiter::new(&url).expect("limiter"),
        RedisLimiter::new(&url).expect("second limiter"),
    ))
}

#[tokio::test]
async fn two_limiters_on_one_redis_share_an_exact_window() {
    let Some((a, b)) = limiters() else { return };
    let subject = fresh();
    let limits = RateLimits {
        rpm: Some(10),
        ..RateLimits::default()
    };
    let mut admitted = 0;
    for call in 0..30u64 {
        let limiter = if call % 2 == 0 { &a } else { &b };
        match limiter
            .admit(subject, &limits, call, 1)
            .await
            .expect("redis")
        {
            Ok(h) => {
                admitted += 1;
                assert_eq!(h.remaining_requests, Some(10 - admitted));
            }
            Err(r) => {
                assert_eq!(r.kind, LimitKind::Requests);
                assert!(
                    r.retry_after_ms > 55_000 && r.retry_after_ms <= 60_000,
                    "{r:?}"
                );
            }
        }
    }
    assert_eq!(admitted, 10);
}

#[tokio::test]
async fn tokens_count_estimates_until_settled_and_slots_free_on_release() {
    let Some((a, _)) = limiters() else { return };
    let subject = fresh();
    let tpm = RateLimits {
        tpm: Some(100),
        ..RateLimits::default()
    };
    assert!(a.admit(subject, &tpm, 1, 60).await.expect("redis").is_ok());
    let refused = a
        .admit(subject, &tpm, 2, 50)
        .await
        .expect("redis")
        .expect_err("60 + 50");
    assert_eq!(refused.kind, LimitKind::Tokens);
    a.settle(subject, 1, 20).await.expect("settle");
    let ok = a
        .admit(subject, &tpm, 2, 50)
        .await
        .expect("redis")
        .expect("20 + 50 fits");
    assert_eq!(ok.remaining_tokens, Some(30));

    let subject = fresh();
    let conc = RateLimits {
        concurrency: Some(1),
        ..RateLimits::default()
    };
    assert!(a.admit(subject, &conc, 1, 0).await.expect("redis").is_ok());
    let busy = a
        .admit(subject, &conc, 2, 0)
        .await
        .expect("redis")
        .expect_err("one in flight");
    assert_eq!(busy.kind, LimitKind::Concurrency);
    a.renew(&[(subject, 1)]).await.expect("renew");
    a.release(subject, 1).await.expect("release");
    assert!(a.admit(subject, &conc, 3, 0).await.expect("redis").is_ok());
}
