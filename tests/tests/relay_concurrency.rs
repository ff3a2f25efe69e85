//! The money invariants under real concurrency, on SQLite and (when configured) MariaDB:
//! 200 simultaneous requests from a user whose balance covers 10 calls, and 100 streams whose
//! clients disconnect at random points.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_tests::TestApp;
use tollgate_tests::mock::MockProvider;

/// Chunks a [`CutUpstream`] stream has: 2 s at 10 ms apart, far longer than any reader here
/// stays.
const CUT_PIECES: usize = 200;
/// The completion tokens a [`CutUpstream`] reports at the end of a full stream: more than all
/// its pieces together (one token each), so no billed count can come from it by accident.
const CUT_REPORTED_COMPLETION: u64 = 900;

/// An upstream that counts what it did (the same as in `relay.rs`): [`CUT_PIECES`] chat chunks
/// 10 ms apart whose texts are one cl100k token each (`hello`, then ` hello`), then a usage
/// chunk with [`CUT_REPORTED_COMPLETION`] completion tokens. It counts the chunks it wrote, the
/// streams whose reader hung up (a write failed) and the streams it finished.
#[derive(Clone, Default)]
struct CutUpstream {
    base_url: String,
    written: Arc<AtomicUsize>,
    hung_up: Arc<AtomicUsize>,
    finished: Arc<AtomicUsize>,
}

impl CutUpstream {
    async fn start() -> CutUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = CutUpstream {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            ..CutUpstream::default()
        };
        let counts = up.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let _ = socket.set_nodelay(true);
                let counts = counts.clone();
                tokio::spawn(async move {
                    let outcome = match counts.serve(socket).await {
                        Ok(true) => &counts.finished,
                        Ok(false) => return,
                        Err(_) => &counts.hung_up,
                    };
                    outcome.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        up
    }

    /// Reads one request and streams the answer: `true` when it was sent whole, `false` when no
    /// request came, an error once the reader has gone.
    async fn serve(&self, mut socket: TcpStream) -> std::io::Result<bool> {
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if socket.read(&mut byte).await? == 0 {
                return Ok(false);
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        socket.read_exact(&mut body).await?;
        socket
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .await?;
        for i in 0..CUT_PIECES {
            let text = if i == 0 { "hello" } else { " hello" };
            let chunk = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "cut",
                               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
            write_chunk(&mut socket, &format!("data: {chunk}\n\n")).await?;
            self.written.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let usage = json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "cut", "choices": [],
                           "usage": {"prompt_tokens": 9, "completion_tokens": CUT_REPORTED_COMPLETION,
                                     "total_tokens": 9 + CUT_REPORTED_COMPLETION}});
        write_chunk(&mut socket, &format!("data: {usage}\n\n")).await?;
        write_chunk(&mut socket, "data: [DONE]\n\n").await?;
        socket.write_all(b"0\r\n\r\n").await?;
        socket.flush().await?;
        Ok(true)
    }
}

async fn write_chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
    socket
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    socket.flush().await
}

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
