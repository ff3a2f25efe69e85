//! Relaying an SSE answer. Events go to the client as they complete (never buffered whole),
//! through a [`Transcode`] that reads usage and text for billing and writes the client's own
//! format (OpenAI chunks or Anthropic events); an upstream that stops early (closed, broken or
//! idle) still ends the client's stream properly (`[DONE]`, or Anthropic's closing events).
//! The call is settled once, when the stream ends or, if the client goes away first, when the
//! stream is dropped — for the prompt and what was delivered.

use crate::client::{ByteStream, next_chunk};
use crate::codec::{Pending, Transcode};
use crate::failures::FailureLog;
use crate::ledger::Reservation;
use crate::settle::{Delivered, Ticket, now};
use crate::wire::SseSplitter;
use bytes::Bytes;
use futures_util::{Stream, stream};
use std::time::Duration;
use tollgate_domain::billing::ReportedUsage;
use tollgate_domain::call_errors::{CallFailure, FailedCall};
use tollgate_domain::ids::ChannelId;
use tracing::Instrument;

/// The stream handed to the server: bytes for the client.
pub type ClientStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Settles its call exactly once: when told to, or when dropped.
pub(crate) struct SettleGuard {
    call: Option<(Ticket, Reservation)>,
    /// Usage reported by the upstream, once seen.
    pub(crate) usage: Option<ReportedUsage>,
    /// Generated text already handed to the client (for counting when the upstream gave no
    /// believable usage).
    pub(crate) delivered: Delivered,
}

impl SettleGuard {
    pub(crate) fn new(ticket: Ticket, reservation: Reservation) -> Self {
        SettleGuard {
            call: Some((ticket, reservation)),
            usage: None,
            delivered: Delivered::default(),
        }
    }

    /// The call's span (none once settled).
    fn span(&self) -> tracing::Span {
        self.call
            .as_ref()
            .map_or_else(tracing::Span::none, |(t, _)| t.span.clone())
    }

    /// Settles now (a second call does nothing).
    pub(crate) fn finish(&mut self) {
        if let Some((ticket, reservation)) = self.call.take() {
            let delivered = std::mem::take(&mut self.delivered);
            reservation.settle(ticket.finish(self.usage, delivered));
        }
    }
}

impl Drop for SettleGuard {
    fn drop(&mut self) {
        if let Some((ticket, _)) = &self.call {
            ticket.span.in_scope(|| {
                tracing::info!("client went away mid-stream; settling what was delivered");
            });
        }
        self.finish();
    }
}

struct State {
    body: ByteStream,
    idle: Duration,
    splitter: SseSplitter,
    pending: Pending,
    upstream_done: bool,
    ended: bool,
    transcode: Box<dyn Transcode>,
    guard: SettleGuard,
    /// Where a stream that breaks is reported as a failed call, and its channel.
    failures: (FailureLog, ChannelId),
}

impl State {
    fn event(&mut self, raw: Vec<u8>) {
        if self
            .transcode
            .event(raw, &mut self.pending, &mut self.guard.usage)
        {
            self.upstream_done = true;
        }
    }
}

/// Relays `body` (an upstream SSE stream that answered 2xx) to the client through `transcode`;
/// an upstream that breaks or goes silent mid-way is reported to `failures` (on that channel).
pub(crate) fn relay(
    body: ByteStream,
    idle: Duration,
    transcode: Box<dyn Transcode>,
    guard: SettleGuard,
    failures: (FailureLog, ChannelId),
) -> ClientStream {
    let state = State {
        body,
        idle,
        splitter: SseSplitter::default(),
        pending: Pending::new(),
        upstream_done: false,
        ended: false,
        transcode,
        guard,
        failures,
    };
    // Each step runs in the call's span: the actix body is polled outside the handler's.
    let span = state.guard.span();
    Box::pin(stream::unfold(state, move |st| {
        step(st).instrument(span.clone())
    }))
}

/// The next bytes for the client, or the end (where the call is settled).
async fn step(mut st: State) -> Option<(Result<Bytes, std::io::Error>, State)> {
    loop {
        if let Some((bytes, text)) = st.pending.pop_front() {
            st.guard.delivered.push(&text);
            // An item without bytes only carries text (an event that produced no client
            // event yet); an empty chunk must never reach the client.
            if bytes.is_empty() {
                continue;
            }
            return Some((Ok(bytes), st));
        }
        if st.ended {
            st.guard.finish();
            return None;
        }
        if st.upstream_done {
            st.ended = true;
            st.transcode.end(&mut st.pending);
            continue;
        }
        match next_chunk(&mut st.body, st.idle).await {
            Ok(Some(bytes)) => {
                st.splitter.push(&bytes);
                while let Some(ev) = st.splitter.next_event() {
                    st.event(ev);
                    if st.upstream_done {
                        break;
                    }
                }
            }
            Ok(None) => {
                let mut rest = st.splitter.take_rest();
                if !rest.iter().all(u8::is_ascii_whitespace) {
                    rest.extend_from_slice(b"\n\n");
                    st.event(rest);
                }
                st.upstream_done = true;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "upstream stream stopped early; ending the client stream");
                let (log, channel) = &st.failures;
                log.record(FailedCall {
                    at: now(),
                    channel: Some(*channel),
                    kind: CallFailure::Interrupted,
                });
                st.upstream_done = true;
            }
        }
    }
}
