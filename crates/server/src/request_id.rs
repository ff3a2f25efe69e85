//! Every request's id and the middleware that gives it: the id is made here, once, before any
//! handler runs, and is the request's `X-Request-Id`, the `request_id` of its log lines and
//! the unique key of its hold. Its `request` span is the only span of a relayed call: the relay
//! records the call's route, key id, model and channel into it. The same middleware records
//! the HTTP series of `/metrics`.
//!
//! Handlers read the id through the [`RequestId`] extractor, which fails with a 500 when the
//! middleware did not run rather than inventing one: a made-up id (an empty string, say) would
//! collide with another call's on the holds' unique request id.

use crate::error::OpenAiError;
use crate::metrics;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest};
use std::fmt;
use std::future::{Ready, ready};
use std::time::Instant;
use tollgate_domain::ids::hex;
use tollgate_domain::time::unix_millis;
use tracing::Instrument;
use tracing::field::Empty;

/// The `X-Request-Id` header.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Bytes of an id: the first [`TIME_BYTES`] the time it was made (milliseconds since the Unix
/// epoch, big-endian), the rest random.
const ID_BYTES: usize = 16;
/// Ids made close in time sort together: the indexes keyed by request id (the log's and the
/// holds') then grow at their end, instead of touching a random page of a large index per
/// call — on SQLite that was a 4 KiB page read and written to the WAL for every call.
const TIME_BYTES: usize = 6;

/// Random bytes from the operating system, fetched [`RandomBytes::FETCH`] at a time: a request
/// id takes ten, and a `getrandom` system call for each was one of a relayed call's five
/// (docs/benchmarks.md, tenth session). The bytes are the kernel's, used once each, by this
/// thread only.
struct RandomBytes {
    bytes: [u8; RandomBytes::FETCH],
    /// The bytes before this have been used (`FETCH`: all of them).
    used: usize,
}

impl RandomBytes {
    const FETCH: usize = 4096;

    /// Fills `out` with bytes not used before.
    ///
    /// # Panics
    /// When the operating system's random source fails: ids that might repeat would merge two
    /// calls' holds, so the request must not go on.
    fn take(&mut self, out: &mut [u8]) {
        debug_assert!(out.len() <= Self::FETCH);
        if Self::FETCH - self.used < out.len() {
            if let Err(e) = getrandom::fill(&mut self.bytes) {
                panic!("operating system random source failed: {e}");
            }
            self.used = 0;
        }
        out.copy_from_slice(&self.bytes[self.used..self.used + out.len()]);
        self.used += out.len();
    }
}

thread_local! {
    static RANDOM: std::cell::RefCell<RandomBytes> = const {
        std::cell::RefCell::new(RandomBytes { bytes: [0; RandomBytes::FETCH], used: RandomBytes::FETCH })
    };
}

/// The id of one request: 32 lower-case hex characters, never empty. 80 random bits after
/// the millisecond, so ids of concurrent calls on every instance never meet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A new id: the current millisecond, then random bytes (the operating system's, fetched a
    /// few KB at a time per thread).
    ///
    /// # Panics
    /// When the operating system's random source fails: ids that might repeat would merge two
    /// calls' holds, so the request must not go on.
    #[must_use]
    pub fn generate() -> Self {
        let millis = unix_millis(std::time::SystemTime::now());
        let mut bytes = [0u8; ID_BYTES];
        bytes[..TIME_BYTES].copy_from_slice(&millis.to_be_bytes()[8 - TIME_BYTES..]);
        RANDOM.with_borrow_mut(|r| r.take(&mut bytes[TIME_BYTES..]));
        RequestId(hex(&bytes))
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id the middleware gave `req`; a 500 when it gave none (the middleware is not
    /// installed on this route).
    pub fn of(req: &HttpRequest) -> Result<Self, OpenAiError> {
        req.extensions().get::<RequestId>().cloned().ok_or_else(|| {
            OpenAiError::internal(&"no request id: the request_context middleware did not run")
        })
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromRequest for RequestId {
    type Error = OpenAiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Self::of(req))
    }
}

/// Gives every request an id (in the `X-Request-Id` response header, its log span `request`
/// and its extensions for [`RequestId`]), records the HTTP series and logs one line per
/// response.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = RequestId::generate();
    // The relay fills the rest in once known (its route and key id; the gateway the model and
    // channel): one span a call (`routes::relay`).
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.path(),
        route = Empty,
        token_id = Empty,
        model = Empty,
        channel_id = Empty,
    );
    let started = Instant::now();
    let header = HeaderValue::from_str(id.as_str()).ok();
    req.extensions_mut().insert(id);
    async move {
        let mut res = next.call(req).await?;
        if let Some(v) = header {
            res.headers_mut().insert(REQUEST_ID, v);
        }
        // The route pattern, never the path: paths carry user ids.
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".to_owned());
        metrics::http(&route, res.status().as_u16(), started.elapsed());
        tracing::info!(
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "response"
        );
        Ok(res)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::middleware::from_fn;
    use actix_web::test as http;
    use actix_web::{App, HttpResponse, web};

    async fn echo(id: RequestId) -> HttpResponse {
        HttpResponse::Ok().body(id.to_string())
    }

    #[test]
    fn ids_made_across_several_fetches_of_random_bytes_all_differ() {
        // Ten random bytes an id: 2,000 ids use five fetches of 4,096 bytes.
        let ids: std::collections::HashSet<String> =
            (0..2_000).map(|_| RequestId::generate().0).collect();
        assert_eq!(ids.len(), 2_000);
        let mut r = RandomBytes {
            bytes: [0; RandomBytes::FETCH],
            used: RandomBytes::FETCH,
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let mut out = [0u8; 10];
            r.take(&mut out);
            assert!(seen.insert(out), "a repeated run of random bytes");
        }
    }

    #[test]
    fn ids_are_32_hex_characters_and_differ() {
        let (a, b) = (RequestId::generate(), RequestId::generate());
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn ids_begin_with_their_millisecond_so_later_ones_sort_after() {
        let millis = |id: &RequestId| i64::from_str_radix(&id.as_str()[..12], 16).unwrap_or(0);
        let now = unix_millis(std::time::SystemTime::now());
        let first = RequestId::generate();
        assert!(millis(&first).abs_diff(now) < 60_000, "{first}");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let later = RequestId::generate();
        assert!(millis(&later) > millis(&first));
        assert!(later.as_str() > first.as_str());
    }

    #[actix_web::test]
    async fn the_handler_sees_the_id_of_the_response_header() {
        let app = http::init_service(
            App::new()
                .wrap(from_fn(request_context))
                .route("/", web::get().to(echo)),
        )
        .await;
        let res = http::call_service(&app, http::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 200);
        let header = res
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .unwrap_or_default();
        let body = http::read_body(res).await;
        assert_eq!(header.len(), 32);
        assert_eq!(body, header.as_bytes());
    }

    #[actix_web::test]
    async fn without_the_middleware_the_extractor_answers_500_instead_of_an_empty_id() {
        let app = http::init_service(App::new().route("/", web::get().to(echo))).await;
        let res = http::call_service(&app, http::TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 500);
        let body: serde_json::Value = http::read_body_json(res).await;
        assert_eq!(body["error"]["code"], "internal_error");
    }
}
