//! An upstream for the disconnect tests, which counts what it did, so a test can tell a gateway
//! that cancelled the upstream and billed what it delivered from one that let the upstream run
//! to the end (or billed the upstream's own, unreachable, usage).
#![expect(clippy::expect_used, reason = "a test helper fails its test")]

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Chunks a [`CutUpstream`] stream has: 2 s at 10 ms apart, far longer than any test reads.
pub const CUT_PIECES: usize = 200;
/// The completion tokens a [`CutUpstream`] reports at the end of a full stream: more than all
/// its pieces together (one token each), so no billed count can come from it by accident.
pub const CUT_REPORTED_COMPLETION: u64 = 900;

/// An upstream for the disconnect tests, counting what it did: it streams [`CUT_PIECES`] chat
/// chunks 10 ms apart whose texts are one cl100k token each (`hello`, then ` hello`), then a
/// usage chunk with [`CUT_REPORTED_COMPLETION`] completion tokens. It counts the chunks it
/// wrote, the streams whose reader hung up (a write failed) and the streams it finished.
#[derive(Clone)]
pub struct CutUpstream {
    /// `http://127.0.0.1:<port>/v1`.
    pub base_url: String,
    /// Chunks written, over all streams.
    pub written: Arc<AtomicUsize>,
    /// Streams whose reader hung up.
    pub hung_up: Arc<AtomicUsize>,
    /// Streams sent whole.
    pub finished: Arc<AtomicUsize>,
}

impl CutUpstream {
    /// Starts it on a random loopback port.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start() -> CutUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let up = CutUpstream {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            written: Arc::default(),
            hung_up: Arc::default(),
            finished: Arc::default(),
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

    /// Waits until `n` streams lost their reader (or 5 s passed); the count then.
    pub async fn hung_up_reaches(&self, n: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.hung_up.load(Ordering::SeqCst) < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.hung_up.load(Ordering::SeqCst)
    }
}

async fn write_chunk(socket: &mut TcpStream, data: &str) -> std::io::Result<()> {
    socket
        .write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
        .await?;
    socket.flush().await
}
