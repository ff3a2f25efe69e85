//! The upstream HTTP client: one hyper 1 client with a keep-alive connection pool and rustls
//! (webpki roots, so no system certificate store is needed), shared by every request. Connect
//! and first-byte timeouts apply here; the idle timeout between chunks applies where the body
//! is read.

use crate::provider::{self, Provider};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http_body_util::{BodyDataStream, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::pin::Pin;
use std::time::Duration;
use tollgate_domain::channel::{Channel, ChannelKind};

/// Upstream timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// TCP (and TLS) connect.
    pub connect: Duration,
    /// From sending the request to the response head.
    pub first_byte: Duration,
    /// Between two body chunks.
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(120),
        }
    }
}

/// A body arriving from upstream.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, String>> + Send>>;

/// An upstream's answer head and body.
pub struct UpstreamReply {
    /// HTTP status.
    pub status: u16,
    /// `retry-after-ms` or `retry-after` (seconds), when the upstream sent one.
    pub retry_after: Option<Duration>,
    /// Body chunks as they arrive.
    pub body: ByteStream,
}

/// Why one attempt failed before an answer head arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttemptError {
    /// Could not connect or the connection broke.
    Connect(String),
    /// No answer head within the first-byte timeout.
    Timeout,
    /// The channel cannot build a request (bad key characters or URL).
    Misconfigured(String),
}

/// Bytes read from an upstream connection at a time. hyper's default buffer starts at 8 KB and
/// stays allocated while the connection waits, and a stream's connection waits for most of
/// its life: with 1,000 streams open a fresh instance's peak RSS was 62–63 MB with 1 KB
/// against 66–70 MB with the default (docs/benchmarks.md). A stream's events and an answer's
/// head usually fit; a larger answer (an embedding of 1,536 floats) takes more reads, each a
/// system call, and arrives whole all the same.
const UPSTREAM_READ_BUFFER: usize = 1024;

/// The shared upstream client.
#[derive(Clone)]
pub struct UpstreamClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeouts: Timeouts,
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

impl UpstreamClient {
    /// Builds the pooled client.
    #[must_use]
    pub fn new(timeouts: Timeouts) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(timeouts.connect));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .http1_read_buf_exact_size(UPSTREAM_READ_BUFFER)
            .build(https);
        UpstreamClient {
            http: client,
            timeouts,
        }
    }

    /// The timeouts in force.
    #[must_use]
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Sends `body` to `path` (e.g. `/chat/completions`) on `channel` and waits for the
    /// answer head.
    pub async fn send(
        &self,
        channel: &Channel,
        path: &str,
        body: Bytes,
    ) -> Result<UpstreamReply, AttemptError> {
        if channel.spec.kind == ChannelKind::Echo {
            let (_, parts) = provider::echo_answer(&body);
            return Ok(UpstreamReply {
                status: 200,
                retry_after: None,
                body: Box::pin(stream::iter(parts.into_iter().map(Ok))),
            });
        }
        let adapter: &dyn Provider = provider::for_kind(channel.spec.kind);
        let req = adapter
            .request(channel, path, body)
            .ok_or_else(|| AttemptError::Misconfigured("invalid base_url or key".into()))?;
        let res = tokio::time::timeout(self.timeouts.first_byte, self.http.request(req))
            .await
            .map_err(|_| AttemptError::Timeout)?
            .map_err(|e| AttemptError::Connect(error_chain(&e)))?;
        let status = res.status().as_u16();
        let retry_after = retry_after(res.headers());
        let body = BodyDataStream::new(res.into_body()).map(|r| r.map_err(|e| error_chain(&e)));
        Ok(UpstreamReply {
            status,
            retry_after,
            body: Box::pin(body),
        })
    }
}

/// How long an upstream asks to be left alone: `retry-after-ms`, or `retry-after` in seconds
/// (an HTTP date is not worth honouring exactly; the default rest applies).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0 && *n < 86_400_000.0)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_millis(ms as u64))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// An error and its causes on one line (hyper's top-level text alone is vague).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// The next body chunk, waiting at most `idle`.
pub async fn next_chunk(
    body: &mut ByteStream,
    idle: Duration,
) -> Result<Option<Bytes>, ChunkError> {
    match tokio::time::timeout(idle, body.next()).await {
        Err(_) => Err(ChunkError::Idle),
        Ok(None) => Ok(None),
        Ok(Some(Ok(b))) => Ok(Some(b)),
        Ok(Some(Err(e))) => Err(ChunkError::Broken(e)),
    }
}

/// A body that stopped early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// Nothing arrived within the idle timeout.
    Idle,
    /// The connection broke.
    Broken(String),
}

/// Reads a whole (non-stream) body, up to `limit` bytes.
pub async fn read_all(
    body: &mut ByteStream,
    idle: Duration,
    limit: usize,
) -> Result<Bytes, ChunkError> {
    let mut out = Vec::new();
    while let Some(chunk) = next_chunk(body, idle).await? {
        if out.len() + chunk.len() > limit {
            return Err(ChunkError::Broken(format!(
                "answer larger than {limit} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}
