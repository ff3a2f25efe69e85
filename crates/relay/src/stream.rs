//! Relaying an SSE answer. Events go to the client as they complete (never buffered whole),
//! through a [`Transcode`] that reads usage and text for billing and writes the client's own
//! format (OpenAI chunks or Anthropic events); an upstream that stops early (closed, broken or
//! idle) still ends the client's stream properly (`[DONE]`, or Anthropic's closing events).
//! The call is settled once, when the stream ends or, if the client goes away first, when the
//! stream is dropped — for the prompt and what was delivered. A durable ledger
//! ([`Reservation::durable`]) has the settlement written before the stream's last event goes
//! out.

use crate::client::{ByteStream, next_chunk};
use crate::codec::{Pending, Transcode};
use crate::failures::FailureLog;
use crate::ledger::{Reservation, Settled};
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

    /// Hands the settlement to the ledger (`None` once settled).
    fn settle(&mut self) -> Option<Settled> {
        let (ticket, reservation) = self.call.take()?;
        let delivered = std::mem::take(&mut self.delivered);
        Some(reservation.settle(ticket.finish(self.usage, delivered)))
    }

    /// Settles now, in the background (a second call does nothing).
    pub(crate) fn finish(&mut self) {
        drop(self.settle());
    }

    /// Whether the ledger wants the settlement written before the last byte (and the call is
    /// not settled yet).
    fn durable(&self) -> bool {
        self.call.as_ref().is_some_and(|(_, r)| r.durable())
    }

    /// Settles now and waits until it is written (see [`Reservation::durable`]).
    async fn finish_written(&mut self) {
        if let Some(settled) = self.settle() {
            settled.written().await;
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
    /// Reports the call as a failed call: its upstream stopped before the answer's end.
    fn interrupted(&self) {
        let (log, channel) = &self.failures;
        log.record(FailedCall {
            at: now(),
            channel: Some(*channel),
            kind: CallFailure::Interrupted,
        });
    }

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
        if st.upstream_done && !st.ended {
            // Whatever the client still needs to end its stream goes after what is pending.
            st.ended = true;
            st.transcode.end(&mut st.pending);
        }
        if st.ended && st.pending.len() <= 1 && st.guard.durable() {
            // A durable ledger writes the charge before the stream's last bytes go out.
            let last = st.pending.pop_front();
            if let Some((_, text)) = &last {
                st.guard.delivered.push(text);
            }
            st.guard.finish_written().await;
            if let Some((bytes, _)) = last
                && !bytes.is_empty()
            {
                return Some((Ok(bytes), st));
            }
            continue;
        }
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
                if !st.upstream_done {
                    // Closed without its end marker (`[DONE]`, `message_stop`): cut short.
                    tracing::warn!(
                        "upstream closed the stream before its end; ending the client stream"
                    );
                    st.interrupted();
                }
                st.upstream_done = true;
            }
            Err(e) => {
                tracing::warn!(error = ?e, "upstream stream stopped early; ending the client stream");
                st.interrupted();
                st.upstream_done = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, reason = "tests fail by panicking")]

    use super::*;
    use crate::call::Codec;
    use crate::failures::FailureLogConfig;
    use crate::ledger::Book;
    use crate::settle::Finished;
    use async_trait::async_trait;
    use futures_util::StreamExt;
    use std::sync::{Arc, Mutex, PoisonError};
    use std::time::Instant;
    use tokio::sync::oneshot;
    use tollgate_domain::RepoError;
    use tollgate_domain::billing::UsageBounds;
    use tollgate_domain::channel::ChannelKind;
    use tollgate_domain::ids::{TokenId, UserId};
    use tollgate_domain::pricing::Price;
    use tollgate_domain::repository::CallErrorRepository;

    /// A book whose settlements are "written" only when the test says so.
    #[derive(Default)]
    struct Gate {
        settled: Mutex<Vec<(Finished, Option<oneshot::Sender<()>>)>>,
    }

    impl Gate {
        fn settled(&self) -> usize {
            self.settled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len()
        }

        /// Confirms every settlement so far as written.
        fn commit(&self) {
            for (_, ack) in self
                .settled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter_mut()
            {
                if let Some(ack) = ack.take() {
                    let _ = ack.send(());
                }
            }
        }
    }

    impl Book for Gate {
        fn settle(
            self: Arc<Self>,
            finished: Finished,
            confirm: bool,
        ) -> Option<oneshot::Receiver<()>> {
            let (tx, rx) = oneshot::channel();
            self.settled
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((finished, Some(tx)));
            confirm.then_some(rx)
        }

        fn release(self: Arc<Self>, _: String, _: tracing::Span) {}
    }

    /// Keeps the failed calls reported.
    #[derive(Default)]
    struct Errors(Mutex<Vec<FailedCall>>);

    #[async_trait]
    impl CallErrorRepository for Errors {
        async fn record_call_errors(&self, failures: &[FailedCall]) -> Result<(), RepoError> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(failures);
            Ok(())
        }
    }

    fn ticket() -> Ticket {
        Ticket {
            request_id: "r".into(),
            user_id: UserId::new(1),
            token_id: TokenId::new(1),
            token_name: "key".into(),
            model: "m".into(),
            price: Price::new(2.into(), 6.into(), 1.into()).expect("price"),
            prompt_estimate: 10,
            bounds: UsageBounds::for_request(1_000_000, 0, Some(1_000_000), 1),
            is_stream: true,
            started: Instant::now(),
            limit: None,
            channel: None,
            span: tracing::Span::none(),
        }
    }

    /// A stream of two chunks and `[DONE]` relayed with a ledger that is durable or not.
    fn relayed(gate: &Arc<Gate>, durable: bool) -> ClientStream {
        relayed_with(
            gate,
            durable,
            true,
            &FailureLog::start(Arc::new(Errors::default()), FailureLogConfig::default()),
        )
    }

    /// As [`relayed`], the upstream ending with `[DONE]` or not, failures reported to `log`.
    fn relayed_with(gate: &Arc<Gate>, durable: bool, done: bool, log: &FailureLog) -> ClientStream {
        let chunk = |text: &str| {
            Bytes::from(format!(
                "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}]}}\n\n"
            ))
        };
        let mut pieces = vec![Ok(chunk("你好")), Ok(chunk("世界"))];
        if done {
            pieces.push(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
        }
        let upstream: ByteStream = Box::pin(stream::iter(pieces));
        let book: Arc<dyn Book> = gate.clone();
        let reservation = Reservation::new("r".into(), book, durable);
        relay(
            upstream,
            Duration::from_secs(5),
            crate::codec::transcoder(
                Codec::OpenAi,
                crate::provider::for_kind(ChannelKind::OpenAi),
                false,
            ),
            SettleGuard::new(ticket(), reservation),
            (log.clone(), ChannelId::new(7)),
        )
    }

    #[tokio::test]
    async fn a_durable_stream_sends_its_last_event_only_once_the_settlement_is_written() {
        let gate = Arc::new(Gate::default());
        let mut events = relayed(&gate, true);
        for _ in 0..2 {
            let chunk = events.next().await.expect("chunk").expect("bytes");
            assert!(chunk.starts_with(b"data: {"), "{chunk:?}");
        }
        assert_eq!(gate.settled(), 0, "the stream is not over yet");
        // The settlement is handed over, but the last event waits for its commit.
        let waiting = tokio::time::timeout(Duration::from_millis(200), events.next()).await;
        assert!(
            waiting.is_err(),
            "the last event went out before the commit"
        );
        assert_eq!(gate.settled(), 1);
        gate.commit();
        // Polled again after the timeout dropped the first poll's future: the stream resumes.
        let last = events.next().await.expect("[DONE]").expect("bytes");
        assert_eq!(&last[..], b"data: [DONE]\n\n");
        assert!(events.next().await.is_none());
        assert_eq!(gate.settled(), 1, "settled once");
        let (finished, _) = gate
            .settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .expect("settlement");
        // Without usage from the upstream: the delivered text, counted.
        assert_eq!(
            finished.into_settlement().usage.completion_tokens,
            crate::tokenizer::count("你好世界")
        );
    }

    #[tokio::test]
    async fn a_stream_without_a_durable_ledger_never_waits_for_the_write() {
        let gate = Arc::new(Gate::default());
        let events: Vec<Bytes> = relayed(&gate, false)
            .map(|b| b.expect("bytes"))
            .collect()
            .await;
        assert_eq!(events.len(), 3);
        assert_eq!(&events[2][..], b"data: [DONE]\n\n");
        assert_eq!(gate.settled(), 1, "settled once, never confirmed");
    }

    #[tokio::test]
    async fn a_stream_closed_before_its_end_is_a_failed_call_and_a_whole_one_is_not() {
        for (done, expected) in [(true, 0), (false, 1)] {
            let errors = Arc::new(Errors::default());
            let log = FailureLog::start(errors.clone(), FailureLogConfig::default());
            let gate = Arc::new(Gate::default());
            let events: Vec<Bytes> = relayed_with(&gate, false, done, &log)
                .map(|b| b.expect("bytes"))
                .collect()
                .await;
            // The client's stream ends properly either way.
            assert_eq!(
                events.last().map(|b| &b[..]),
                Some(&b"data: [DONE]\n\n"[..])
            );
            assert!(log.flush(Duration::from_secs(5)).await);
            let failed = errors
                .0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            assert_eq!(failed.len(), expected, "done: {done}");
            assert!(failed.iter().all(
                |f| f.kind == CallFailure::Interrupted && f.channel == Some(ChannelId::new(7))
            ));
            assert_eq!(gate.settled(), 1);
        }
    }
}
