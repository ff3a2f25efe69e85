//! Token counting with tiktoken's `cl100k_base` (embedded in the binary; no network). Used to
//! size holds from the prompt and, when an upstream ends without `usage`, to bill what it
//! delivered. Provider tokenizers differ a little; holds are estimates and settlements prefer
//! the upstream's own count whenever there is one.
//!
//! Tokenizing costs CPU in proportion to the text, so the work per request is bounded: the
//! first [`TOKENIZE_BUDGET_BYTES`] bytes of a request's texts are counted exactly, the rest is
//! estimated from its byte length. Callers run large counts on the blocking pool.

use serde_json::Value;
use tiktoken_rs::cl100k_base_singleton;

/// Bytes of text counted exactly per request (a prompt, or one answer); beyond them texts are
/// estimated from their byte length, so one huge request cannot stall a CPU. 3 bytes per token
/// over-estimates English and matches CJK.
pub const TOKENIZE_BUDGET_BYTES: usize = 64 * 1024;

/// The byte-length estimate used past the budget.
#[must_use]
pub fn estimate(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(3)
}

/// The exact-counting budget of one request.
struct Budget(usize);

impl Budget {
    fn new() -> Self {
        Budget(TOKENIZE_BUDGET_BYTES)
    }

    fn count(&mut self, text: &str) -> u64 {
        if text.is_empty() {
            return 0;
        }
        if text.len() > self.0 {
            self.0 = 0;
            return estimate(text.len());
        }
        self.0 -= text.len();
        cl100k_base_singleton().encode_ordinary(text).len() as u64
    }
}

/// Tokens in `text` (exact up to [`TOKENIZE_BUDGET_BYTES`], estimated beyond).
#[must_use]
pub fn count(text: &str) -> u64 {
    Budget::new().count(text)
}

/// Tokens of several texts of one request (embedding inputs, completion prompts), within one
/// exact-counting budget.
#[must_use]
pub fn texts_tokens<'a>(texts: impl IntoIterator<Item = &'a str>) -> u64 {
    let mut budget = Budget::new();
    texts
        .into_iter()
        .fold(0u64, |n, t| n.saturating_add(budget.count(t)))
}

/// Loads the tokenizer tables now rather than on the first request.
pub fn warm_up() {
    let _ = count("warm up");
}

/// Tokens of a chat prompt, by OpenAI's accounting: 3 per message plus its texts, plus 3 to
/// prime the reply; tools and response formats are counted as their JSON text.
#[must_use]
pub fn prompt_tokens(body: &serde_json::Map<String, Value>) -> u64 {
    let mut budget = Budget::new();
    let mut count = |s: &str| budget.count(s);
    let mut total = 3u64;
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            total = total.saturating_add(3);
            let Value::Object(m) = m else { continue };
            for (field, value) in m {
                let tokens = match (field.as_str(), value) {
                    (_, Value::String(s)) => count(s),
                    ("content", Value::Array(parts)) => {
                        parts.iter().map(|p| part_tokens(p, &mut count)).sum()
                    }
                    (_, Value::Null) => 0,
                    (_, other) => count(&other.to_string()),
                };
                total = total.saturating_add(tokens);
            }
        }
    }
    for extra in ["tools", "functions", "response_format"] {
        if let Some(v) = body.get(extra) {
            total = total.saturating_add(count(&v.to_string()));
        }
    }
    total
}

/// A content part: its text, or a flat 85 tokens for an image (OpenAI's low-detail cost).
fn part_tokens(part: &Value, count: &mut impl FnMut(&str) -> u64) -> u64 {
    match part {
        Value::Object(p) => match p.get("text") {
            Some(Value::String(t)) => count(t),
            _ if p.contains_key("image_url") => 85,
            _ => count(&part.to_string()),
        },
        Value::String(s) => count(s),
        other => count(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_known_strings() {
        assert_eq!(count(""), 0);
        assert_eq!(count("hello world"), 2);
        // cl100k_base: CJK text is about one token a character, the full-width marks included.
        assert_eq!(count("你好！"), 3);
        assert_eq!(count("你好！很高兴见到你！"), 12);
        assert_eq!(count("tell me a story"), 4);
        // A repeated word with its space is one token each time.
        assert_eq!(count(&format!("hello{}", " hello".repeat(199))), 200);
        let big = "a".repeat(TOKENIZE_BUDGET_BYTES + 3);
        assert_eq!(count(&big), 21_847, "(65,536 + 3) / 3, rounded up");
    }

    #[test]
    fn prompt_accounting_follows_messages() {
        let body: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#,
        )
        .expect("json");
        // 3 + (3 + "user" 1 + "hello world" 2) = 9.
        assert_eq!(prompt_tokens(&body), 9);
        let parts: serde_json::Map<String, Value> = serde_json::from_str(
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        )
        .expect("json");
        assert_eq!(prompt_tokens(&parts), 3 + 3 + 1 + 2 + 85);
    }

    #[test]
    fn a_request_tokenizes_at_most_its_budget() {
        let message = serde_json::json!({"role": "user", "content": "a".repeat(10_240)});
        let body = |n: usize| -> serde_json::Map<String, Value> {
            let mut m = serde_json::Map::new();
            m.insert("messages".into(), Value::Array(vec![message.clone(); n]));
            m
        };
        // Six messages fit the 64 KiB budget; the hundredth is estimated from its bytes:
        // 3 + "user" (4 bytes → 2) + 10,240 bytes → 3,414.
        assert_eq!(
            prompt_tokens(&body(100)) - prompt_tokens(&body(99)),
            3 + 2 + 3_414
        );
        // The first one was counted exactly: 'a' × 10,240 is far fewer than 3,414 tokens.
        assert!(prompt_tokens(&body(1)) < 3 + 1 + 2_000);
    }
}
