//! Several instances, one truth: two servers (each with its own caches) on one database. A
//! change made through one is applied by the other within a second — through Redis when
//! `TOLLGATE_TEST_REDIS_URL` is set, and by polling the database without it or while Redis is
//! down — and one balance is never overspent through both.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tollgate_storage::testing;
use tollgate_tests::TestApp;
use tollgate_tests::mock::MockProvider;
use tollgate_tests::proxy::TcpProxy;

/// Environment variable naming a Redis server for these tests.
const REDIS_ENV: &str = "TOLLGATE_TEST_REDIS_URL";

/// The propagation bound of SPEC §5/§6.
const WITHIN: Duration = Duration::from_secs(1);

fn ask(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "你好！"}]})
}

/// `(database URL, backend, Redis URL)` for each configuration to test: SQLite without Redis
/// always; MariaDB with Redis, and without it, when configured.
async fn setups() -> Vec<(String, &'static str, Option<String>)> {
    let mut out = vec![(testing::sqlite_url(), "sqlite", None)];
    let redis = std::env::var(REDIS_ENV).ok();
    if let Some(url) = testing::mysql_url().await.expect("MySQL test database") {
        out.push((url, "mysql", None));
        if let Some(r) = &redis {
            let url = testing::mysql_url()
                .await
                .expect("MySQL")
                .expect("configured");
            out.push((url, "mysql", Some(r.clone())));
        }
    } else if let Some(r) = &redis {
        out.push((testing::sqlite_url(), "sqlite", Some(r.clone())));
    }
    out
}

async fn pair(url: &str, backend: &'static str, redis: Option<&str>) -> (TestApp, TestApp) {
    let mut settings = vec![];
    if let Some(r) = redis {
        settings.push(("TOLLGATE_REDIS_URL", r));
    }
    let a = TestApp::start_with(url.to_owned(), backend, &settings).await;
    let b = TestApp::start_with(url.to_owned(), backend, &settings).await;
    (a, b)
}

/// Polls `check` until it holds; how long that took (panics after 5 s).
async fn seen_within<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: never seen"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `GET /models` of an instance: the models it serves now, with their prices.
async fn served(app: &TestApp) -> Value {
    app.ext(Method::GET, "/models", None).await.data().clone()
}

/// Whether a JSON number reads as `text` (prices are exact decimals: compared as text).
fn same_number(v: &Value, text: &str) -> bool {
    v.as_number().is_some_and(|n| n.as_str() == text)
}

fn serves(models: &Value, name: &str) -> Option<Value> {
    models
        .as_array()?
        .iter()
        .find(|m| m["model"] == name)
        .cloned()
}

#[tokio::test]
async fn changes_through_one_instance_reach_the_other_within_a_second() {
    for (url, backend, redis) in setups().await {
        let label = format!("{backend}, redis {}", redis.is_some());
        let (a, b) = pair(&url, backend, redis.as_deref()).await;
        let mock = MockProvider::start().await;
        a.mock_model(&mock, "qwen-turbo", "qwen-turbo").await;
        a.price("qwen-plus", "2.0", "6.0").await;
        a.channel(
            "openai_compatible",
            &mock.base_url,
            &[("qwen-plus", "fail-401")],
            5,
        )
        .await;
        let key = a.funded_key("c1", "10").await;
        // B has the key and the catalog in its caches.
        let took = seen_within("the new channel on B", || async {
            serves(&served(&b).await, "qwen-turbo").is_some()
        })
        .await;
        assert!(took < WITHIN, "{label}: channel creation took {took:?}");
        assert_eq!(b.chat(&key, &ask("qwen-turbo")).await.status, 200);

        // A price change through A.
        a.price("qwen-turbo", "4.0", "6.0").await;
        let took = seen_within("the new price on B", || async {
            serves(&served(&b).await, "qwen-turbo").is_some_and(|m| same_number(&m["input"], "4"))
        })
        .await;
        assert!(took < WITHIN, "{label}: price change took {took:?}");

        // A channel that A disables by itself (its upstream rejects the channel key).
        assert!(serves(&served(&b).await, "qwen-plus").is_some(), "{label}");
        let r = a.chat(&key, &ask("qwen-plus")).await;
        assert_eq!(r.status, 502, "{label}: {}", r.body);
        let took = seen_within("the automatic disable on B", || async {
            serves(&served(&b).await, "qwen-plus").is_none()
        })
        .await;
        assert!(took < WITHIN, "{label}: automatic disable took {took:?}");

        // An admin disabling the last channel of a model through A.
        let channels = a.admin(Method::GET, "/channels", None).await;
        let turbo = channels
            .data()
            .as_array()
            .expect("list")
            .iter()
            .find(|c| c["models"][0] == "qwen-turbo")
            .expect("channel")["id"]
            .clone();
        a.admin(Method::POST, &format!("/channels/{turbo}/disable"), None)
            .await
            .data();
        let took = seen_within("the disabled channel on B", || async {
            b.chat(&key, &ask("qwen-turbo")).await.status == 503
        })
        .await;
        assert!(took < WITHIN, "{label}: channel disable took {took:?}");

        // A key deleted through A: B refuses it.
        let stats = a.ext(Method::GET, "/c1/stats", None).await;
        let token_id = stats.data()["tokens"][0]["token_id"].clone();
        a.ext(
            Method::DELETE,
            "/token",
            Some(json!({"external_user_id": "c1", "token_id": token_id})),
        )
        .await
        .data();
        let took = seen_within("the deleted key on B", || async {
            b.chat(&key, &ask("qwen-turbo")).await.status == 401
        })
        .await;
        assert!(took < WITHIN, "{label}: key deletion took {took:?}");
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_never_overspend_one_balance() {
    for (url, backend, redis) in setups().await {
        let (a, b) = pair(&url, backend, redis.as_deref()).await;
        let mock = MockProvider::start().await;
        // 14 + 18 tokens at $500 / 1M each = 8,000 quota a call, and the hold (8 prompt tokens
        // estimated + max_tokens 24) is exactly that: $0.16 covers exactly ten calls, whatever
        // the timing and whichever instance takes them.
        a.price("qwen-turbo", "500", "500").await;
        a.channel(
            "openai_compatible",
            &mock.base_url,
            &[("qwen-turbo", "qwen-turbo")],
            0,
        )
        .await;
        let key = a.funded_key("shared", "0.16").await;
        seen_within("the channel on B", || async {
            serves(&served(&b).await, "qwen-turbo").is_some()
        })
        .await;
        let body = json!({"model": "qwen-turbo", "max_tokens": 24,
                          "messages": [{"role": "user", "content": "hi"}]});
        let calls: Vec<_> = (0..100)
            .map(|i| {
                let req = if i % 2 == 0 { &a } else { &b }.chat_request(&key, &body);
                tokio::spawn(async move { req.send().await.map(|r| r.status().as_u16()) })
            })
            .collect();
        let mut ok = 0usize;
        for c in calls {
            match c.await.expect("task").expect("answered") {
                200 => ok += 1,
                403 => {}
                other => panic!("{backend}: unexpected status {other}"),
            }
        }
        assert!((1..=10).contains(&ok), "{backend}: {ok} admitted");
        assert_eq!(
            mock.calls(),
            ok,
            "{backend}: every admitted call, no other, went upstream"
        );
        // The rest one by one, alternating instances: exactly ten in all.
        a.settled("shared", i64::try_from(ok).expect("n")).await;
        let mut n = ok;
        while [&a, &b][n % 2].chat(&key, &body).await.status == 200 {
            n += 1;
            assert!(n <= 10, "{backend}: more than ten calls admitted");
            a.settled("shared", i64::try_from(n).expect("n")).await;
        }
        let info = a.settled("shared", 10).await;
        assert_eq!(n, 10, "{backend}: {info}");
        assert_eq!(info["current_quota"], 0, "{backend}");
        assert_eq!(info["used_quota"], 80_000);
        assert_eq!(mock.calls(), 10);
        a.stop().await;
        b.stop().await;
    }
}

#[tokio::test]
async fn redis_down_mid_traffic_fails_nothing_and_changes_still_arrive() {
    let Some(redis) = std::env::var(REDIS_ENV)
        .ok()
        .and_then(|u| TcpProxy::target_of(&u, 6379))
    else {
        return; // Needs Redis: it is stopped (through a proxy) mid-traffic.
    };
    let proxy = TcpProxy::start(redis).await;
    let redis_url = format!("redis://{}", proxy.addr);
    let url = match testing::mysql_url().await.expect("MySQL test database") {
        Some(u) => (u, "mysql"),
        None => (testing::sqlite_url(), "sqlite"),
    };
    let (a, b) = pair(&url.0, url.1, Some(&redis_url)).await;
    let mock = MockProvider::start().await;
    a.mock_model(&mock, "qwen-turbo", "qwen-turbo").await;
    let key = a.funded_key("r1", "10").await;
    seen_within("the channel on B", || async {
        serves(&served(&b).await, "qwen-turbo").is_some()
    })
    .await;
    let ready = b.send(Method::GET, "/readyz", None, None, None).await;
    assert_eq!(ready.body["redis"], "up", "{}", ready.body);

    let traffic = |app: &TestApp| app.chat_request(&key, &ask("qwen-turbo"));
    let mut statuses = Vec::new();
    for round in 0..3 {
        if round == 1 {
            proxy.cut();
        }
        if round == 2 {
            proxy.restore();
        }
        for app in [&a, &b, &a, &b] {
            statuses.push(
                traffic(app)
                    .send()
                    .await
                    .expect("answered")
                    .status()
                    .as_u16(),
            );
        }
        // A price change through A is still seen by B within a second.
        let price = format!("{}.5", round + 2);
        a.price("qwen-turbo", &price, "6.0").await;
        let took = seen_within("the price on B", || async {
            serves(&served(&b).await, "qwen-turbo")
                .is_some_and(|m| same_number(&m["input"], &price))
        })
        .await;
        assert!(took < WITHIN, "round {round}: took {took:?}");
        if round == 1 {
            let ready = b.send(Method::GET, "/readyz", None, None, None).await;
            assert_eq!(ready.status, 200, "ready without Redis: {}", ready.body);
            assert_eq!(ready.body["redis"], "down", "{}", ready.body);
        }
    }
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    a.stop().await;
    b.stop().await;
}
