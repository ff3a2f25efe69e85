//! Relaying an SSE answer. Events go to the client as they complete (never buffered whole);
//! the usage chunk is read for billing and shown only to clients that asked for it; an
//! upstream that stops without `[DONE]` (closed, broken or idle) still ends the client's
//! stream with `[DONE]`. The call is settled once, when the stream ends or, if the client goes
//! away first, when the stream is dropped — for the prompt and what was delivered.

use crate::client::{ByteStream, next_chunk};
use crate::provider::Provider;
use crate::settle::{Delivered, Settler, Ticket};
use crate::wire::{AnswerView, SseSplitter, event_data};
use bytes::Bytes;
use futures_util::{Stream, stream};
use std::collections::VecDeque;
use std::time::Duration;
use tollgate_domain::billing::ReportedUsage;

/// The stream handed to the server: bytes for the client.
pub type ClientStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Settles its call exactly once: when told to, or when dropped.
pub(crate) struct SettleGuard {
    ticket: Option<Ticket>,
    settler: Settler,
    /// Usage reported by the upstream, once seen.
    pub(crate) usage: Option<ReportedUsage>,
    /// Generated text already handed to the client (for counting when the upstream gave no
    /// believable usage).
    pub(crate) delivered: Delivered,
}

impl SettleGuard {
    pub(crate) fn new(ticket: Ticket, settler: Settler) -> Self {
        SettleGuard {
            ticket: Some(ticket),
            settler,
            usage: None,
            delivered: Delivered::default(),
        }
    }

    /// Settles now (a second call does nothing).
    pub(crate) fn finish(&mut self) {
        if let Some(t) = self.ticket.take() {
            let delivered = std::mem::take(&mut self.delivered);
            self.settler.settle(t.finish(self.usage, delivered));
        }
    }
}

impl Drop for SettleGuard {
    fn drop(&mut self) {
        if self.ticket.is_some() {
            tracing::info!("client went away mid-stream; settling what was delivered");
        }
        self.finish();
    }
}

struct State {
    body: ByteStream,
    idle: Duration,
    splitter: SseSplitter,
    pending: VecDeque<(Bytes, String)>,
    upstream_done: bool,
    saw_done: bool,
    ended: bool,
    show_usage: bool,
    adapter: &'static dyn Provider,
    guard: SettleGuard,
}

impl State {
    fn event(&mut self, raw: Vec<u8>) {
        let Some(data) = event_data(&raw) else {
            // Comments and keep-alives pass through.
            self.pending.push_back((Bytes::from(raw), String::new()));
            return;
        };
        if data.trim() == "[DONE]" {
            self.saw_done = true;
            self.upstream_done = true;
            self.pending.push_back((Bytes::from(raw), String::new()));
            return;
        }
        let Some(view) = AnswerView::parse(data.as_bytes()) else {
            self.pending.push_back((Bytes::from(raw), String::new()));
            return;
        };
        if let Some(u) = &view.usage {
            self.guard.usage = Some(self.adapter.usage(u));
        }
        if view.is_usage_only() && !self.show_usage {
            return;
        }
        let mut text = String::new();
        view.text_into(&mut text);
        self.pending.push_back((Bytes::from(raw), text));
    }
}

/// Relays `body` (an upstream SSE stream that answered 2xx) to the client.
pub(crate) fn relay(
    body: ByteStream,
    idle: Duration,
    show_usage: bool,
    adapter: &'static dyn Provider,
    guard: SettleGuard,
) -> ClientStream {
    let state = State {
        body,
        idle,
        splitter: SseSplitter::default(),
        pending: VecDeque::new(),
        upstream_done: false,
        saw_done: false,
        ended: false,
        show_usage,
        adapter,
        guard,
    };
    Box::pin(stream::unfold(state, |mut st| async move {
        loop {
            if let Some((bytes, text)) = st.pending.pop_front() {
                st.guard.delivered.push(&text);
                return Some((Ok(bytes), st));
            }
            if st.ended {
                st.guard.finish();
                return None;
            }
            if st.upstream_done {
                st.ended = true;
                if !st.saw_done {
                    st.pending
                        .push_back((Bytes::from_static(b"data: [DONE]\n\n"), String::new()));
                }
                continue;
            }
            match next_chunk(&mut st.body, st.idle).await {
                Ok(Some(bytes)) => {
                    st.splitter.push(&bytes);
                    while let Some(ev) = st.splitter.next_event() {
                        st.event(ev);
                        if st.saw_done {
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
                    st.upstream_done = true;
                }
            }
        }
    }))
}
