//! The money invariants under real concurrency, on SQLite and (when configured) MariaDB:
//! 200 simultaneous requests from a user whose balance covers 10 calls, and 100 streams whose
//! clients disconnect at random points.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tollgate_tests::TestApp;
use tollgate_tests::cut::{CUT_PIECES, CutUpstream};
use tollgate_tests::mock::MockProvider;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_requests_against_a_balance_for_ten() {
    for app in TestApp::all().await {
        let mock = MockProvider::start().await;
        // 14 + 18 tokens at $500 / 1M each = 16 × 500 / 2 = 8,000 quota a call.
        app.price("qwen-turbo", "500", "500").await;
        app.channel(
            "openai_compatible",
            &mock.base_url,
            &[("qwen-turbo", "qwen-turbo")],
            0,
        )
        .await;
        // $0.16 = 80,000 quota = exactly 10 calls.
        let key = app.funded_key("rich-for-ten", "0.16").await;
        // The hold is the estimated prompt (8 tokens: 3 + 3 per message + "user" + "hi") plus
        // max_tokens 24 = 32 tokens = 8,000 quota: exactly one call's cost, so exactly ten holds
        // ever fit, whatever the timing.
        let body = json!({"model": "qwen-turbo", "max_tokens": 24,
                          "messages": [{"role": "user", "content": "hi"}]});
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let client = app.client.clone();
            let url = format!("{}/v1/chat/completions", app.base);
            let key = key.clone();
            let body = body.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent")
                    .status()
                    .as_u16()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("join") {
                200 => ok += 1,
                403 => {}
                other => panic!("unexpected status {other}"),
            }
        }
        assert!((1..=10).contains(&ok), "{}: {ok} succeeded", app.backend);
        assert!(
            mock.calls() <= 10,
            "{}: {} upstream calls",
            app.backend,
            mock.calls()
        );
        assert_eq!(mock.calls(), ok);
        // Spend the rest one by one (each once the previous one is settled): exactly 10 calls
        // fit in all.
        let mut more = 0;
        app.settled("rich-for-ten", i64::try_from(ok).expect("n"))
            .await;
        while app.chat(&key, &body).await.status == 200 {
            more += 1;
            assert!(ok + more <= 10, "more than 10 calls admitted");
            app.settled("rich-for-ten", i64::try_from(ok + more).expect("n"))
                .await;
        }
        let info = app.settled("rich-for-ten", 10).await;
        assert_eq!(ok + more, 10, "{}: {ok} + {more}: {info}", app.backend);
        assert_eq!(info["current_quota"], 0, "{}", app.backend);
        assert_eq!(info["used_quota"], 80_000);
        assert_eq!(info["total_requests"], 10);
        assert_eq!(info["balance_capacity"], 0);
        app.stop().await;
    }
}

/// SPEC §4, Streaming, under concurrency: every cut stream cancels its upstream call and is
/// settled once, for its prompt and the completion delivered (each piece one token), never for
/// the 900 completion tokens the upstream would have reported at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_streams_cut_at_random_points_are_each_settled_once() {
    for app in TestApp::all().await {
        let up = CutUpstream::start().await;
        app.price("qwen-turbo", "2.0", "6.0").await;
        app.channel(
            "openai_compatible",
            &up.base_url,
            &[("qwen-turbo", "cut")],
            0,
        )
        .await;
        let key = app.funded_key("streamer", "10").await;
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let client = app.client.clone();
            let url = format!("{}/v1/chat/completions", app.base);
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                // A deterministic spread of cut points: after 1 to 30 events.
                let cut = 1 + (i * 7919) % 30;
                let body = json!({"model": "qwen-turbo", "stream": true, "max_tokens": 1000,
                                  "messages": [{"role": "user", "content": "hello world"}]});
                let mut res = client
                    .post(url)
                    .bearer_auth(key)
                    .json(&body)
                    .send()
                    .await
                    .expect("sent");
                assert_eq!(res.status(), 200);
                let mut seen = String::new();
                while (seen.matches("data:").count() as u64) < cut {
                    let chunk = res
                        .chunk()
                        .await
                        .expect("chunk")
                        .expect("the stream goes on");
                    seen.push_str(&String::from_utf8_lossy(&chunk));
                }
                drop(res);
                seen.matches("data:").count() as u64
            }));
        }
        let mut read = 0;
        for t in tasks {
            read += t.await.expect("join");
        }
        // Every upstream call was cancelled, none ran to its end.
        let deadline = Instant::now() + Duration::from_secs(10);
        while up.hung_up.load(Ordering::SeqCst) < 100 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let cancelled_at = Instant::now();
        assert_eq!(up.hung_up.load(Ordering::SeqCst), 100, "{}", app.backend);
        assert_eq!(up.finished.load(Ordering::SeqCst), 0);
        let info = app.settled("streamer", 100).await;
        assert_eq!(info["total_requests"], 100, "{}", app.backend);
        // Past the settlement window after the last cancellation nothing more is settled.
        tokio::time::sleep(Duration::from_secs(1).saturating_sub(cancelled_at.elapsed())).await;
        let info = app.no_hold_left("streamer").await;
        assert_eq!(info["total_requests"], 100, "settled exactly once each");
        assert_eq!(
            info["balance_capacity"], info["current_balance"],
            "no hold left behind"
        );
        let logs = app
            .ext(
                Method::GET,
                "/streamer/logs?type=consume&page_size=100",
                None,
            )
            .await;
        let rows = logs.data()["logs"].as_array().expect("rows").clone();
        assert_eq!(rows.len(), 100);
        let (mut spent, mut delivered) = (0, 0);
        let mut ids: Vec<String> = Vec::new();
        for r in &rows {
            // 3 + 3 per message + "user" (1) + "hello world" (2) = 9 prompt tokens (cl100k_base).
            assert_eq!(r["prompt_tokens"], 9, "{r}");
            let n = r["completion_tokens"].as_i64().expect("n");
            assert!(
                (1..i64::try_from(CUT_PIECES).expect("pieces")).contains(&n),
                "billed at zero after content, or as if the stream had run to the end: {r}"
            );
            // $2 / $6 per 1M: ceil((9 × 2 + n × 6) / 2) = 9 + 3n.
            assert_eq!(r["quota"], 9 + 3 * n, "{r}");
            spent += 9 + 3 * n;
            delivered += n;
            ids.push(r["request_id"].as_str().expect("id").to_owned());
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 100, "one row per request");
        // Billed: at least what the clients read, at most what the upstream wrote.
        let written = i64::try_from(up.written.load(Ordering::SeqCst)).expect("written");
        let read = i64::try_from(read).expect("read");
        assert!(
            (read..=written).contains(&delivered),
            "{}: billed {delivered} completion tokens; clients read {read}, the upstream wrote {written}",
            app.backend
        );
        assert_eq!(info["used_quota"], spent);
        assert_eq!(info["current_quota"].as_i64(), Some(5_000_000 - spent));
        app.stop().await;
    }
}
