//! End-to-end tests of the admin read API and the console (SPEC §7): users across platforms,
//! one user with masked keys, the log across users with its filters and pages, hourly usage,
//! failed calls per hour, the admin key, refused filters, and the console's page and headers.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::{Value, json};
use std::time::SystemTime;
use tollgate_domain::call_errors::{CallFailure, FailedCall};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::repository::CallErrorRepository;
use tollgate_domain::time::UnixTime;
use tollgate_tests::{ADMIN_KEY, PLATFORM_A, PLATFORM_B, TestApp};

const XSS: &str = "<script>alert(1)</script>";
/// Markup without `/`, so that it fits in the external API's stats path.
const XSS_IMG: &str = "<img src=x onerror=alert(1)>";

/// `YYYY-MM-DD` (UTC) `days_ago` days before now.
fn day(days_ago: i64) -> String {
    UnixTime::from_system(SystemTime::now())
        .plus_days(-days_ago)
        .to_string()[..10]
        .to_owned()
}

/// Syncs `id` under the platform with `key`; returns Tollgate's user id.
async fn sync(app: &TestApp, key: &str, id: &str, username: &str) -> i64 {
    app.ext_as(
        key,
        Method::POST,
        "/sync",
        Some(json!({"external_user_id": id, "username": username})),
    )
    .await
    .data()["user_id"]
        .as_i64()
        .expect("user id")
}

/// `n` echo calls with `key`, then waits until the user's stats show them.
async fn calls(app: &TestApp, key: &str, user: &str, model: &str, n: i64) {
    let before = app.user_info(user).await["total_requests"]
        .as_i64()
        .unwrap_or(0);
    for _ in 0..n {
        let r = app
            .chat(
                key,
                &json!({"model": model, "messages": [{"role": "user", "content": "hello there"}]}),
            )
            .await;
        assert_eq!(r.status, reqwest::StatusCode::OK, "{}", r.body);
    }
    app.settled(user, before + n).await;
}

async fn get(app: &TestApp, path: &str) -> tollgate_tests::Reply {
    app.admin(Method::GET, path, None).await
}

#[tokio::test]
async fn every_read_endpoint_needs_the_admin_key() {
    for app in TestApp::all().await {
        for path in [
            "/users",
            "/users/1",
            "/logs",
            "/usage",
            // Refused filters still answer 401 first: nothing is said to a stranger.
            "/logs?page_size=1000",
            "/usage?hours=0",
        ] {
            for key in [None, Some("wrong"), Some(PLATFORM_A)] {
                app.send(Method::GET, &format!("/api/admin{path}"), key, None, None)
                    .await
                    .assert_error(401, "unauthorized");
            }
        }
        app.stop().await;
    }
}

#[tokio::test]
async fn users_are_listed_across_platforms_searched_and_paged() {
    for app in TestApp::all().await {
        let a = sync(&app, PLATFORM_A, "alice", "wonder").await;
        let b = sync(&app, PLATFORM_B, "alice", "other").await;
        let x = sync(&app, PLATFORM_A, XSS, "x").await;
        let p = sync(&app, PLATFORM_A, "50%_off", "deal").await;
        let all = get(&app, "/users").await;
        let data = all.data();
        let ids: Vec<i64> = data["users"]
            .as_array()
            .expect("users")
            .iter()
            .map(|u| u["user_id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, vec![p, x, b, a], "newest first, every platform");
        assert_eq!(
            data["pagination"],
            json!({"page": 1, "page_size": 20, "total": 4, "total_page": 1, "total_capped": false})
        );
        let first = &data["users"][3];
        for field in [
            "platform",
            "external_user_id",
            "username",
            "current_quota",
            "current_balance",
            "held_quota",
            "held_balance",
            "balance_capacity",
            "used_quota",
            "used_balance",
            "total_requests",
            "created_at",
        ] {
            assert!(!first[field].is_null(), "{field} in {first}");
        }
        assert_ne!(
            data["users"][2]["platform"], first["platform"],
            "the same id under two platforms is two users, told apart"
        );
        let search = |q: &str| {
            let q = q.to_owned();
            let app = &app;
            async move {
                let url = format!("/users?query={}", urlencode(&q));
                get(app, &url).await.data()["users"]
                    .as_array()
                    .expect("users")
                    .iter()
                    .map(|u| u["user_id"].as_i64().expect("id"))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(search("alice").await, vec![b, a]);
        assert_eq!(search("ALICE").await, Vec::<i64>::new(), "byte for byte");
        assert_eq!(search("wonder").await, vec![a], "usernames too");
        assert_eq!(search("%").await, vec![p], "% is a character");
        assert_eq!(search("_").await, vec![p], "_ is a character");
        assert_eq!(search(XSS).await, vec![x]);
        let shown = get(&app, &format!("/users/{x}")).await;
        assert_eq!(
            shown.data()["user"]["external_user_id"],
            XSS,
            "ids are data, returned as they are"
        );
        let paged = get(&app, "/users?page=2&page_size=3").await;
        assert_eq!(paged.data()["users"].as_array().map(Vec::len), Some(1));
        assert_eq!(paged.data()["pagination"]["total_page"], 2);
        app.stop().await;
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn one_user_shows_balance_holds_masked_keys_and_usage_per_model() {
    for app in TestApp::all().await {
        app.echo_model("echo-a").await;
        let key = app.funded_key("carol", "10").await;
        calls(&app, &key, "carol", "echo-a", 2).await;
        // A balance lease is a hold until it comes back (a second idle).
        app.no_hold_left("carol").await;
        let users = get(&app, "/users?query=carol").await;
        let id = users.data()["users"][0]["user_id"]
            .as_i64()
            .expect("user id");
        let r = get(&app, &format!("/users/{id}")).await;
        let d = r.data();
        let u = &d["user"];
        assert_eq!(u["external_user_id"], "carol");
        assert_eq!(u["total_requests"], 2);
        assert_eq!(u["held_quota"], 0, "no call in flight");
        let used = u["used_quota"].as_i64().expect("used");
        assert!(used > 0, "{u}");
        assert_eq!(u["current_quota"], 5_000_000 - used);
        assert!(u["current_balance"].is_number() && u["balance_capacity"].is_number());
        let tokens = d["tokens"].as_array().expect("tokens");
        assert_eq!(tokens.len(), 1);
        let masked = tokens[0]["access_key"].as_str().expect("masked key");
        assert_eq!(masked, format!("sk-{}...{}", &key[3..7], &key[47..]));
        assert!(
            !r.body.to_string().contains(&key[3..]),
            "the key never shows"
        );
        assert_eq!(tokens[0]["status"], 1);
        let usage = &d["model_usage"]["echo-a"];
        assert_eq!(usage["requests"], 2);
        assert_eq!(usage["quota"], used);
        assert!(usage["spend"].is_number());

        get(&app, "/users/999999")
            .await
            .assert_error(404, "user_not_found");
        get(&app, "/users/abc")
            .await
            .assert_error(404, "user_not_found");
        app.stop().await;
    }
}

fn rows(r: &tollgate_tests::Reply) -> Vec<Value> {
    r.data()["logs"].as_array().expect("logs").clone()
}

#[tokio::test]
async fn the_log_across_users_filters_and_pages_newest_first() {
    for app in TestApp::all().await {
        app.echo_model("echo-a").await;
        app.echo_model("echo-b").await;
        let ka = app.funded_key("dave", "5").await;
        let kb = app.funded_key(XSS_IMG, "5").await;
        calls(&app, &ka, "dave", "echo-a", 2).await;
        calls(&app, &kb, XSS_IMG, "echo-b", 1).await;
        let all = get(&app, "/logs").await;
        let logs = rows(&all);
        assert_eq!(logs.len(), 5, "2 top-ups and 3 calls: {}", all.body);
        assert_eq!(all.data()["pagination"]["total"], 5);
        assert_eq!(all.data()["pagination"]["total_capped"], false);
        assert_eq!(all.data()["searched_from"], Value::Null);
        let newest = &logs[0];
        assert_eq!(newest["type"], "consume");
        assert_eq!(newest["model"], "echo-b");
        assert_eq!(newest["external_user_id"], XSS_IMG);
        assert_eq!(newest["username"], "u");
        assert!(newest["spend"].is_number() && newest["user_id"].is_number());
        for pair in logs.windows(2) {
            let key = |r: &Value| {
                (
                    r["time"].as_str().expect("time").to_owned(),
                    r["id"].as_i64().expect("id"),
                )
            };
            assert!(key(&pair[0]) > key(&pair[1]), "newest first: {pair:?}");
        }
        let dave = logs
            .iter()
            .find(|r| r["external_user_id"] == "dave")
            .expect("dave's rows")["user_id"]
            .as_i64()
            .expect("id");

        let of_dave = get(&app, &format!("/logs?user_id={dave}")).await;
        assert_eq!(rows(&of_dave).len(), 3);
        assert!(rows(&of_dave).iter().all(|r| r["user_id"] == dave));
        let topups = get(&app, "/logs?type=topup").await;
        assert_eq!(rows(&topups).len(), 2);
        assert!(rows(&topups).iter().all(|r| r["channel_id"].is_null()));
        let consume_of_dave = get(&app, &format!("/logs?type=consume&user_id={dave}")).await;
        assert_eq!(rows(&consume_of_dave).len(), 2);
        let model = get(&app, "/logs?model_name=o-b").await;
        assert_eq!(rows(&model).len(), 1);
        assert_eq!(rows(&model)[0]["model"], "echo-b");
        // From yesterday, so that a test running across midnight still sees every row.
        let (from, to) = (day(1), day(0));
        let dated = get(&app, &format!("/logs?start_date={from}&end_date={to}")).await;
        assert_eq!(rows(&dated).len(), 5);
        let before = get(&app, "/logs?end_date=2020-01-01").await;
        assert_eq!(rows(&before).len(), 0);
        let page = get(&app, "/logs?page=2&page_size=2").await;
        assert_eq!(rows(&page).len(), 2);
        assert_eq!(rows(&page)[0]["id"], logs[2]["id"]);
        assert_eq!(
            page.data()["pagination"],
            json!({"page": 2, "page_size": 2, "total": 5, "total_page": 3, "total_capped": false})
        );
        let channel_topups = get(&app, "/logs?channel_id=1&type=topup").await;
        assert_eq!(rows(&channel_topups).len(), 0, "a channel has no top-ups");
        app.stop().await;
    }
}

/// Needs the settlement to record which channel answered (`logs.channel_id`).
#[tokio::test]
async fn a_relayed_call_is_found_by_its_channel() {
    for app in TestApp::all().await {
        app.echo_model("echo-a").await;
        let key = app.funded_key("erin", "5").await;
        calls(&app, &key, "erin", "echo-a", 1).await;
        let channel = get(&app, "/channels").await.data()[0]["id"]
            .as_i64()
            .expect("channel id");
        let found = get(&app, &format!("/logs?channel_id={channel}")).await;
        assert_eq!(rows(&found).len(), 1);
        assert_eq!(rows(&found)[0]["channel_id"], channel);
        let usage = get(&app, "/usage").await;
        assert_eq!(usage.data()["channels"][0]["channel_id"], channel);
        app.stop().await;
    }
}

#[tokio::test]
async fn refused_filters_are_400_with_the_validator_text() {
    for app in TestApp::all().await {
        for path in [
            "/logs?page_size=101",
            "/logs?page_size=0",
            "/logs?page=-1",
            "/logs?page=abc",
            "/logs?page=501",
            "/logs?type=refund",
            "/logs?start_date=2024-13-01",
            "/logs?start_date=2024-02-02&end_date=2024-02-01",
            "/logs?user_id=abc",
            "/logs?user_id=0",
            "/logs?channel_id=-1",
            "/logs?channel_id=99999999999999999999",
            "/logs?user=1",
            "/users?page_size=1000",
            "/users?page=501",
            "/users?surprise=1",
            "/usage?hours=0",
            "/usage?hours=169",
            "/usage?hours=1.5",
        ] {
            let r = get(&app, path).await;
            r.assert_error(400, "validation_error");
            assert!(
                r.body["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("请求参数错误: ")),
                "{path}: {}",
                r.body
            );
        }
        let long = format!("/users?query={}", "x".repeat(101));
        get(&app, &long).await.assert_error(400, "validation_error");
        let named = get(&app, "/logs?user_id=abc").await;
        assert_eq!(
            named.body["message"],
            "请求参数错误: Key: 'AdminLogsQuery.UserId' Error:Field validation for 'UserId' failed on the 'number' tag"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn usage_has_one_bucket_per_hour_with_calls_tokens_spend_and_holds() {
    for app in TestApp::all().await {
        let empty = get(&app, "/usage").await;
        let e = empty.data();
        assert_eq!(e["hours"], 24);
        assert_eq!(e["buckets"].as_array().map(Vec::len), Some(24));
        assert_eq!(e["totals"]["requests"], 0);
        assert_eq!(e["errors"], 0, "failed calls are recorded, none yet");
        assert!(
            e["buckets"]
                .as_array()
                .is_some_and(|b| b.iter().all(|b| b["errors"] == 0)),
            "{e}"
        );
        assert_eq!(e["holds"], json!({"count": 0, "quota": 0, "amount": 0}));
        assert_eq!(e["channels"], json!([]));

        app.echo_model("echo-a").await;
        let key = app.funded_key("frank", "5").await;
        calls(&app, &key, "frank", "echo-a", 3).await;
        let r = get(&app, "/usage?hours=3").await;
        let d = r.data();
        let buckets = d["buckets"].as_array().expect("buckets");
        assert_eq!(buckets.len(), 3);
        let starts: Vec<i64> = buckets
            .iter()
            .map(|b| b["start"].as_i64().expect("start"))
            .collect();
        assert_eq!(starts[1] - starts[0], 3_600);
        assert_eq!(d["from"], starts[0]);
        assert_eq!(d["until"], starts[2] + 3_600);
        // The calls fall in the current hour (or, across an hour's turn, the one before).
        let last = buckets
            .iter()
            .rev()
            .find(|b| b["requests"].as_i64() > Some(0))
            .expect("a bucket with the calls");
        let per_bucket: i64 = buckets
            .iter()
            .map(|b| b["requests"].as_i64().expect("requests"))
            .sum();
        assert_eq!(per_bucket, 3, "{buckets:?}");
        assert!(last["tokens"].as_i64().expect("tokens") > 0);
        assert_eq!(
            last["tokens"].as_i64(),
            Some(
                last["prompt_tokens"].as_i64().expect("prompt")
                    + last["completion_tokens"].as_i64().expect("completion")
            )
        );
        assert!(last["quota"].as_i64().expect("quota") > 0);
        assert!(last["spend"].is_number());
        assert_eq!(last["errors"], 0, "settled calls are not failed calls");
        assert!(last["time"].as_str().is_some_and(|t| t.ends_with(":00:00")));
        assert_eq!(d["totals"]["requests"], 3);
        let quota: i64 = buckets
            .iter()
            .map(|b| b["quota"].as_i64().expect("quota"))
            .sum();
        assert_eq!(d["totals"]["quota"], quota);
        let channels = d["channels"].as_array().expect("channels");
        let sum: i64 = channels
            .iter()
            .map(|c| c["requests"].as_i64().expect("requests"))
            .sum();
        assert_eq!(
            sum, 3,
            "every call is under a channel (or none): {channels:?}"
        );
        app.stop().await;
    }
}

#[tokio::test]
async fn usage_counts_the_failed_calls_recorded_in_their_hours() {
    let mut urls = vec![(tollgate_storage::testing::sqlite_url(), "sqlite")];
    if let Some(url) = tollgate_storage::testing::mysql_url()
        .await
        .expect("MySQL test database")
    {
        urls.push((url, "mysql"));
    }
    for (url, backend) in urls {
        let app = TestApp::start(url.clone(), backend).await;
        // What the gateway records through `RelayStore`, written here through the same port.
        let store = tollgate_storage::SeaStore::connect(&url)
            .await
            .expect("connect");
        let now = UnixTime::from_system(SystemTime::now()).secs();
        let hour = now - now.rem_euclid(3_600);
        let failed = |at: i64, channel: Option<i64>, kind| FailedCall {
            at: UnixTime::from_secs(at),
            channel: channel.map(ChannelId::new),
            kind,
        };
        store
            .record_call_errors(&[
                failed(hour - 3_600, Some(1), CallFailure::Upstream),
                failed(hour, Some(1), CallFailure::Timeout),
                failed(hour, None, CallFailure::NoChannel),
                // Before the report's first hour.
                failed(hour - 3 * 3_600, Some(1), CallFailure::Upstream),
            ])
            .await
            .expect("recorded");
        let d = get(&app, "/usage?hours=3").await.data().clone();
        let per_bucket: Vec<(i64, i64)> = d["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| {
                (
                    b["start"].as_i64().expect("start"),
                    b["errors"].as_i64().expect("errors"),
                )
            })
            .collect();
        // The server reads its own clock: across an hour's turn its buckets are one hour later.
        let first = if per_bucket.first().map(|b| b.0) == Some(hour - 2 * 3_600) {
            hour - 2 * 3_600
        } else {
            hour - 3_600
        };
        let recorded = |start: i64| match (start - hour) / 3_600 {
            -1 => 1,
            0 => 2,
            _ => 0,
        };
        let expected: Vec<(i64, i64)> = (0..3)
            .map(|i| first + i * 3_600)
            .map(|start| (start, recorded(start)))
            .collect();
        assert_eq!(per_bucket, expected, "{backend}");
        assert_eq!(
            d["errors"],
            expected.iter().map(|b| b.1).sum::<i64>(),
            "{backend}"
        );
        assert_eq!(d["totals"]["requests"], 0, "{backend}");
        app.stop().await;
    }
}

/// Each failed call's channel and kind as stored, summed over hours.
async fn stored_failures(url: &str) -> Vec<(i64, i64, i64)> {
    use sea_orm::{ConnectionTrait, Database, Statement};
    let db = Database::connect(url).await.expect("connect");
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT channel_id, kind, SUM(calls) AS calls FROM call_errors \
             GROUP BY channel_id, kind ORDER BY channel_id, kind",
        ))
        .await
        .expect("call_errors");
    rows.iter()
        .map(|r| {
            (
                r.try_get::<i64>("", "channel_id").expect("channel_id"),
                i64::from(r.try_get::<i16>("", "kind").expect("kind")),
                r.try_get::<i64>("", "calls")
                    .or_else(|_| {
                        r.try_get::<sea_orm::prelude::Decimal>("", "calls")
                            .map(|d| i64::try_from(d).expect("integer"))
                    })
                    .expect("calls"),
            )
        })
        .collect()
}

#[tokio::test]
async fn relayed_calls_that_fail_are_counted_once_each_with_their_channel_and_kind() {
    use tollgate_tests::mock::MockProvider;
    for app in TestApp::all_with(&[("TOLLGATE_UPSTREAM_IDLE_TIMEOUT_SECS", "1")]).await {
        let mock = MockProvider::start().await;
        let broken = app.mock_model(&mock, "m-500", "fail-500").await;
        let refused = app.mock_model(&mock, "m-400", "fail-400").await;
        let cut = app.mock_model(&mock, "m-close", "close").await;
        let off = app.mock_model(&mock, "m-off", "fine").await;
        app.mock_model(&mock, "m-ok", "fine").await;
        app.admin(Method::POST, &format!("/channels/{off}/disable"), None)
            .await
            .data();
        let key = app.funded_key("failing", "5").await;
        let ask = |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "你好！"}]});

        // Accepted, then failed: a 5xx on every attempt (three with the default two retries),
        // the upstream refusing the request, a stream cut mid-way, a model whose only channel
        // is disabled.
        assert_eq!(app.chat(&key, &ask("m-500")).await.status, 502);
        assert_eq!(
            mock.calls_for("fail-500"),
            3,
            "retried, yet one failed call"
        );
        assert_eq!(app.chat(&key, &ask("m-400")).await.status, 400);
        let mut streamed = ask("m-close");
        streamed["stream"] = json!(true);
        let (status, _, _) = app.chat_stream(&key, &streamed).await;
        assert_eq!(status, 200, "the client got part of an answer");
        assert_eq!(app.chat(&key, &ask("m-off")).await.status, 503);
        // The client's own refusals and successes are not failed calls.
        assert_eq!(app.chat(&key, &ask("m-ok")).await.status, 200);
        assert_eq!(app.chat(&key, &ask("no-such-model")).await.status, 404);
        assert_eq!(app.chat("sk-not-a-key", &ask("m-ok")).await.status, 401);
        let poor = app.funded_key("poor", "0").await;
        assert_eq!(app.chat(&poor, &ask("m-ok")).await.status, 403);

        // Counted in the background: poll, then check nothing else arrives.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut errors = Value::Null;
        while std::time::Instant::now() < deadline {
            errors = get(&app, "/usage?hours=2").await.data()["errors"].clone();
            if errors == json!(4) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(errors, json!(4), "{}", app.backend);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let d = get(&app, "/usage?hours=2").await.data().clone();
        assert_eq!(d["errors"], 4, "{}", app.backend);
        let per_bucket: i64 = d["buckets"]
            .as_array()
            .expect("buckets")
            .iter()
            .map(|b| b["errors"].as_i64().expect("errors"))
            .sum();
        assert_eq!(per_bucket, 4);
        let code = |k: CallFailure| i64::from(k.code());
        let mut want = vec![
            (0, code(CallFailure::NoChannel), 1),
            (broken, code(CallFailure::Upstream), 1),
            (refused, code(CallFailure::Refused), 1),
            (cut, code(CallFailure::Interrupted), 1),
        ];
        want.sort_unstable();
        assert_eq!(
            stored_failures(&app.database_url).await,
            want,
            "{}",
            app.backend
        );
        app.stop().await;
    }
}

/// A console file with its headers.
async fn fetch(app: &TestApp, path: &str) -> (reqwest::header::HeaderMap, String) {
    let res = app
        .client
        .get(format!("{}{path}", app.base))
        .send()
        .await
        .expect("console answers");
    assert_eq!(res.status(), reqwest::StatusCode::OK, "{path}");
    let headers = res.headers().clone();
    (headers, res.text().await.expect("body"))
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_nothing_from_elsewhere() {
    let app = TestApp::start(tollgate_storage::testing::sqlite_url(), "sqlite").await;
    let mut files = Vec::new();
    for (path, kind) in [
        ("/admin", "text/html"),
        ("/admin/", "text/html"),
        ("/admin/app.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
    ] {
        let (headers, body) = fetch(&app, path).await;
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(header("content-type").starts_with(kind), "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{path}: {csp}");
        }
        assert!(!csp.contains("unsafe"), "{path}: {csp}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{path}");
        files.push((path, body));
    }
    let html = &files[0].1;
    assert!(html.contains(r#"<script src="/admin/app.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "one script, not inline");
    assert!(!html.contains("<style"), "no inline style element");
    let lower = html.to_lowercase();
    for attribute in [
        " style=",
        " onload=",
        " onclick=",
        " onerror=",
        "javascript:",
    ] {
        assert!(!lower.contains(attribute), "inline {attribute} in the page");
    }
    for (path, body) in &files {
        // Nothing is loaded from another host: no absolute or protocol-relative URL at all.
        assert!(!body.contains("://"), "{path} names another host");
        for reference in ["src=\"//", "href=\"//", "url(//", "url(\"//", "@import"] {
            assert!(!body.contains(reference), "{path}: {reference}");
        }
    }
    let script = &files[2].1;
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
    ] {
        assert!(!script.contains(sink), "the script uses {sink}");
    }
    assert!(script.contains("sessionStorage"));
    assert!(script.contains("'Bearer '"));
    // The admin key never appears in what the server sends.
    for (_, body) in &files {
        assert!(!body.contains(ADMIN_KEY));
    }
    app.stop().await;
}
