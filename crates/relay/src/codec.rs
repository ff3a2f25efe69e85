//! Reading an upstream answer and writing the client's, for each [`Codec`]: what usage the
//! upstream reported and what text it generated (for billing) always come from the upstream's
//! own format, and the client gets its own API's format — passed through untouched when the two
//! are the same, converted by [`crate::anthropic`] when they differ.

use crate::anthropic::{self, ChunksToEvents, EventsToChunks, StreamUsage};
use crate::call::Codec;
use crate::provider::Provider;
use crate::wire::{AnswerView, event_data};
use bytes::Bytes;
use serde_json::Value;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_domain::billing::ReportedUsage;

/// A complete (non-stream) answer, read.
#[derive(Debug)]
pub(crate) struct Answer {
    /// What the client gets.
    pub body: Bytes,
    /// The usage the upstream reported, if any.
    pub reported: Option<ReportedUsage>,
    /// The text it generated.
    pub text: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Reads an OpenAI-format answer (or chunk): usage in the provider's spelling, and text.
fn openai_view(
    adapter: &dyn Provider,
    raw: &[u8],
) -> (Option<AnswerView>, Option<ReportedUsage>, String) {
    let Some(view) = AnswerView::parse(raw) else {
        return (None, None, String::new());
    };
    let reported = view.usage.as_ref().map(|u| adapter.usage(u));
    let mut text = String::new();
    view.text_into(&mut text);
    (Some(view), reported, text)
}

/// Reads an Anthropic message: usage and text.
fn anthropic_view(message: &Value) -> (Option<ReportedUsage>, String) {
    let reported = message.get("usage").map(anthropic::reported_usage);
    let mut text = String::new();
    anthropic::message_text_into(message, &mut text);
    (reported, text)
}

/// A complete answer through `codec`. An answer that cannot be read (not JSON) goes to the
/// client as it came and is billed from Tollgate's own count.
pub(crate) fn answer(codec: Codec, adapter: &dyn Provider, body: Bytes) -> Answer {
    match codec {
        Codec::OpenAi => {
            let (_, reported, text) = openai_view(adapter, &body);
            Answer {
                body,
                reported,
                text,
            }
        }
        Codec::Anthropic | Codec::AnthropicToOpenAi => {
            let Ok(message) = serde_json::from_slice::<Value>(&body) else {
                return Answer {
                    body,
                    reported: None,
                    text: String::new(),
                };
            };
            let (reported, text) = anthropic_view(&message);
            let body = if codec == Codec::Anthropic {
                body
            } else {
                Bytes::from(anthropic::messages_response_to_chat(&message, unix_now()).to_string())
            };
            Answer {
                body,
                reported,
                text,
            }
        }
        Codec::OpenAiToAnthropic => {
            let (_, reported, text) = openai_view(adapter, &body);
            let body = match serde_json::from_slice::<Value>(&body) {
                Ok(v) => Bytes::from(anthropic::chat_response_to_messages(&v).to_string()),
                Err(_) => body,
            };
            Answer {
                body,
                reported,
                text,
            }
        }
    }
}

/// What a stream hands the client: bytes, each with the generated text it carries (counted as
/// delivered once the bytes are handed over). An item with empty bytes only carries text.
pub(crate) type Pending = VecDeque<(Bytes, String)>;

/// Turns upstream SSE events into client events, reading usage and text on the way.
pub(crate) trait Transcode: Send {
    /// One complete upstream event (with its terminator). Returns true when the upstream said
    /// the answer is complete (nothing more needs reading).
    fn event(&mut self, raw: Vec<u8>, out: &mut Pending, usage: &mut Option<ReportedUsage>)
    -> bool;

    /// The upstream stream ended (complete, closed, broken or silent): what the client still
    /// needs to end its stream properly.
    fn end(&mut self, out: &mut Pending);
}

/// The transcoder of a stream through `codec`. `show_usage`: whether an OpenAI client asked to
/// see the usage chunk.
pub(crate) fn transcoder(
    codec: Codec,
    adapter: &'static dyn Provider,
    show_usage: bool,
) -> Box<dyn Transcode> {
    match codec {
        Codec::OpenAi => Box::new(OpenAiPass {
            adapter,
            show_usage,
            saw_done: false,
        }),
        Codec::Anthropic => Box::new(AnthropicPass {
            usage: StreamUsage::default(),
        }),
        Codec::AnthropicToOpenAi => Box::new(AnthropicToOpenAi {
            convert: EventsToChunks::new(unix_now()),
            usage: StreamUsage::default(),
            show_usage,
            ended: false,
        }),
        Codec::OpenAiToAnthropic => Box::new(OpenAiToAnthropic {
            adapter,
            convert: ChunksToEvents::new(),
            ended: false,
        }),
    }
}

const DONE: &[u8] = b"data: [DONE]\n\n";

/// Pushes `items`, the first carrying `text` (or the text alone when there is none).
fn push_all(out: &mut Pending, items: Vec<Bytes>, mut text: String) {
    if items.is_empty() {
        if !text.is_empty() {
            out.push_back((Bytes::new(), text));
        }
        return;
    }
    for b in items {
        out.push_back((b, std::mem::take(&mut text)));
    }
}

/// OpenAI's chunks to an OpenAI client: passed through; the usage chunk (always asked of the
/// upstream, for billing) is shown only to clients that asked for it; `[DONE]` is added when
/// the upstream ended without it.
struct OpenAiPass {
    adapter: &'static dyn Provider,
    show_usage: bool,
    saw_done: bool,
}

impl Transcode for OpenAiPass {
    fn event(
        &mut self,
        raw: Vec<u8>,
        out: &mut Pending,
        usage: &mut Option<ReportedUsage>,
    ) -> bool {
        let Some(data) = event_data(&raw) else {
            // Comments and keep-alives pass through.
            out.push_back((Bytes::from(raw), String::new()));
            return false;
        };
        if data.trim() == "[DONE]" {
            self.saw_done = true;
            out.push_back((Bytes::from(raw), String::new()));
            return true;
        }
        let (view, reported, text) = openai_view(self.adapter, data.as_bytes());
        if reported.is_some() {
            *usage = reported;
        }
        if view.as_ref().is_some_and(AnswerView::is_usage_only) && !self.show_usage {
            return false;
        }
        out.push_back((Bytes::from(raw), text));
        false
    }

    fn end(&mut self, out: &mut Pending) {
        if !self.saw_done {
            out.push_back((Bytes::from_static(DONE), String::new()));
        }
    }
}

/// Anthropic's events to an Anthropic client: passed through; usage and text read on the way.
struct AnthropicPass {
    usage: StreamUsage,
}

impl Transcode for AnthropicPass {
    fn event(
        &mut self,
        raw: Vec<u8>,
        out: &mut Pending,
        usage: &mut Option<ReportedUsage>,
    ) -> bool {
        let Some(v) = event_data(&raw).and_then(|d| serde_json::from_str::<Value>(&d).ok()) else {
            out.push_back((Bytes::from(raw), String::new()));
            return false;
        };
        self.usage.observe(&v);
        if self.usage.seen() {
            *usage = Some(self.usage.reported());
        }
        let mut text = String::new();
        anthropic::event_text_into(&v, &mut text);
        out.push_back((Bytes::from(raw), text));
        v.get("type").and_then(Value::as_str) == Some("message_stop")
    }

    fn end(&mut self, _out: &mut Pending) {}
}

/// Anthropic's events to an OpenAI chat client, converted chunk by chunk.
struct AnthropicToOpenAi {
    convert: EventsToChunks,
    usage: StreamUsage,
    show_usage: bool,
    ended: bool,
}

impl AnthropicToOpenAi {
    fn chunks(&self, chunks: Vec<Value>) -> Vec<Bytes> {
        chunks
            .into_iter()
            .filter(|c| {
                let usage_only = c.get("usage").is_some_and(|u| !u.is_null())
                    && c.get("choices")
                        .and_then(Value::as_array)
                        .is_some_and(Vec::is_empty);
                self.show_usage || !usage_only
            })
            .map(|c| anthropic::sse_data(&c))
            .collect()
    }
}

impl Transcode for AnthropicToOpenAi {
    fn event(
        &mut self,
        raw: Vec<u8>,
        out: &mut Pending,
        usage: &mut Option<ReportedUsage>,
    ) -> bool {
        let Some(v) = event_data(&raw).and_then(|d| serde_json::from_str::<Value>(&d).ok()) else {
            return false;
        };
        self.usage.observe(&v);
        if self.usage.seen() {
            *usage = Some(self.usage.reported());
        }
        let mut text = String::new();
        anthropic::event_text_into(&v, &mut text);
        let chunks = self.convert.push(&v);
        let items = self.chunks(chunks);
        push_all(out, items, text);
        v.get("type").and_then(Value::as_str) == Some("message_stop")
    }

    fn end(&mut self, out: &mut Pending) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let chunks = self.convert.finish();
        let items = self.chunks(chunks);
        push_all(out, items, String::new());
        out.push_back((Bytes::from_static(DONE), String::new()));
    }
}

/// OpenAI's chunks to an Anthropic Messages client, converted into Anthropic's events.
struct OpenAiToAnthropic {
    adapter: &'static dyn Provider,
    convert: ChunksToEvents,
    ended: bool,
}

impl Transcode for OpenAiToAnthropic {
    fn event(
        &mut self,
        raw: Vec<u8>,
        out: &mut Pending,
        usage: &mut Option<ReportedUsage>,
    ) -> bool {
        let Some(data) = event_data(&raw) else {
            return false;
        };
        if data.trim() == "[DONE]" {
            return true;
        }
        let (_, reported, text) = openai_view(self.adapter, data.as_bytes());
        if reported.is_some() {
            *usage = reported;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            return false;
        };
        let events = self
            .convert
            .push(&v)
            .into_iter()
            .map(|(name, data)| anthropic::sse_event(name, &data))
            .collect();
        push_all(out, events, text);
        false
    }

    fn end(&mut self, out: &mut Pending) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let events = self
            .convert
            .finish()
            .into_iter()
            .map(|(name, data)| anthropic::sse_event(name, &data))
            .collect();
        push_all(out, events, String::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{self, OpenAi};
    use crate::wire::SseSplitter;
    use tollgate_domain::channel::ChannelKind;

    fn run(
        codec: Codec,
        show_usage: bool,
        upstream: &str,
    ) -> (Vec<String>, Option<ReportedUsage>, String) {
        let mut t = transcoder(codec, provider::for_kind(ChannelKind::OpenAi), show_usage);
        let mut splitter = SseSplitter::default();
        splitter.push(upstream.as_bytes());
        let mut out = Pending::new();
        let mut usage = None;
        while let Some(ev) = splitter.next_event() {
            if t.event(ev, &mut out, &mut usage) {
                break;
            }
        }
        t.end(&mut out);
        let mut text = String::new();
        let events = out
            .into_iter()
            .filter_map(|(b, t)| {
                text.push_str(&t);
                (!b.is_empty()).then(|| String::from_utf8_lossy(&b).into_owned())
            })
            .collect();
        (events, usage, text)
    }

    const CHAT_STREAM: &str = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn openai_streams_pass_through_and_hide_the_usage_chunk_unless_asked() {
        let (events, usage, text) = run(Codec::OpenAi, false, CHAT_STREAM);
        assert_eq!(events.len(), 4, "{events:?}");
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        assert_eq!(
            usage,
            Some(ReportedUsage {
                cached: tollgate_domain::billing::Reported::Absent,
                ..ReportedUsage::counts(5, 2, 0)
            })
        );
        assert_eq!(text, "Hello");
        let (shown, _, _) = run(Codec::OpenAi, true, CHAT_STREAM);
        assert_eq!(shown.len(), 5);
        let (cut, _, _) = run(
            Codec::OpenAi,
            false,
            "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n",
        );
        assert_eq!(
            cut.last().map(String::as_str),
            Some("data: [DONE]\n\n"),
            "added after a cut"
        );
    }

    #[test]
    fn openai_chunks_become_anthropic_events_for_messages_clients() {
        let (events, usage, text) = run(Codec::OpenAiToAnthropic, false, CHAT_STREAM);
        let names: Vec<&str> = events
            .iter()
            .filter_map(|e| e.lines().next()?.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(usage.is_some());
        assert_eq!(text, "Hello");
    }

    const MESSAGES_STREAM: &str = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi there\"}}\n\n",
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":3}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );

    #[test]
    fn anthropic_events_pass_through_to_messages_clients_with_their_usage() {
        let (events, usage, text) = run(Codec::Anthropic, false, MESSAGES_STREAM);
        assert_eq!(events.concat(), MESSAGES_STREAM, "untouched");
        let u = usage.expect("usage");
        assert_eq!(
            (u.prompt, u.completion),
            (
                tollgate_domain::billing::Reported::Count(9),
                tollgate_domain::billing::Reported::Count(3)
            )
        );
        assert_eq!(text, "Hi there");
    }

    #[test]
    fn anthropic_events_become_openai_chunks_for_chat_clients() {
        let (events, usage, text) = run(Codec::AnthropicToOpenAi, false, MESSAGES_STREAM);
        assert_eq!(events.last().map(String::as_str), Some("data: [DONE]\n\n"));
        let chunks: Vec<Value> = events
            .iter()
            .filter_map(|e| e.strip_prefix("data: "))
            .filter_map(|d| serde_json::from_str(d.trim()).ok())
            .collect();
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["delta"]["content"] == "Hi there"),
            "{events:?}"
        );
        assert!(
            chunks
                .iter()
                .any(|c| c["choices"][0]["finish_reason"] == "stop")
        );
        assert!(
            !chunks
                .iter()
                .any(|c| c["choices"].as_array().is_some_and(Vec::is_empty)),
            "usage hidden"
        );
        assert!(usage.is_some());
        assert_eq!(text, "Hi there");
        let (shown, _, _) = run(Codec::AnthropicToOpenAi, true, MESSAGES_STREAM);
        assert!(
            shown.iter().any(|e| e.contains("\"usage\"")),
            "shown when asked"
        );
    }

    #[test]
    fn whole_answers_convert_both_ways_and_bill_from_the_upstream() {
        let chat = Bytes::from_static(br#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2}}"#);
        let a = answer(Codec::OpenAi, &OpenAi, chat.clone());
        assert_eq!(a.body, chat);
        assert_eq!(a.text, "Hello");
        let m = answer(Codec::OpenAiToAnthropic, &OpenAi, chat);
        let v: Value = serde_json::from_slice(&m.body).expect("json");
        assert_eq!(v["type"], "message");
        assert_eq!(v["content"][0]["text"], "Hello");
        assert_eq!(m.text, "Hello");
        let message = Bytes::from_static(br#"{"id":"msg","type":"message","role":"assistant","model":"claude","content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn","usage":{"input_tokens":9,"output_tokens":3,"cache_read_input_tokens":2}}"#);
        let n = answer(Codec::Anthropic, &OpenAi, message.clone());
        assert_eq!(n.body, message);
        assert_eq!(n.reported, Some(ReportedUsage::counts(11, 3, 2)));
        let c = answer(Codec::AnthropicToOpenAi, &OpenAi, message);
        let v: Value = serde_json::from_slice(&c.body).expect("json");
        assert_eq!(v["choices"][0]["message"]["content"], "Hi");
        assert_eq!(c.reported, Some(ReportedUsage::counts(11, 3, 2)));
        let junk = answer(
            Codec::AnthropicToOpenAi,
            &OpenAi,
            Bytes::from_static(b"<html>"),
        );
        assert_eq!((junk.body.as_ref(), junk.reported), (&b"<html>"[..], None));
    }
}
