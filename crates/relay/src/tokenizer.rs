//! Token counting with tiktoken's `cl100k_base` (embedded in the binary; no network). Used to
//! size holds from the prompt and, when an upstream ends without `usage`, to bill what it
//! delivered. Provider tokenizers differ a little; holds are estimates and settlements prefer
//! the upstream's own count whenever there is one.

use serde_json::Value;
use tiktoken_rs::cl100k_base_singleton;

/// Texts longer than this are estimated from their byte length instead of tokenized, so one
/// huge prompt cannot stall a worker; 3 bytes per token over-estimates English and matches CJK.
pub const TOKENIZE_LIMIT_BYTES: usize = 64 * 1024;

/// Tokens in `text`.
#[must_use]
pub fn count(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    if text.len() > TOKENIZE_LIMIT_BYTES {
        return (text.len() as u64).div_ceil(3);
    }
    cl100k_base_singleton().encode_ordinary(text).len() as u64
}

/// Loads the tokenizer tables now rather than on the first request.
pub fn warm_up() {
    let _ = count("warm up");
}

/// Tokens of a chat prompt, by OpenAI's accounting: 3 per message plus its texts, plus 3 to
/// prime the reply; tools and response formats are counted as their JSON text.
#[must_use]
pub fn prompt_tokens(body: &serde_json::Map<String, Value>) -> u64 {
    let mut total = 3u64;
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            total += 3;
            let Value::Object(m) = m else { continue };
            for (field, value) in m {
                total += match (field.as_str(), value) {
                    (_, Value::String(s)) => count(s),
                    ("content", Value::Array(parts)) => parts.iter().map(part_tokens).sum(),
                    (_, Value::Null) => 0,
                    (_, other) => count(&other.to_string()),
                };
            }
        }
    }
    for extra in ["tools", "functions", "response_format"] {
        if let Some(v) = body.get(extra) {
            total += count(&v.to_string());
        }
    }
    total
}

/// A content part: its text, or a flat 85 tokens for an image (OpenAI's low-detail cost).
fn part_tokens(part: &Value) -> u64 {
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
        assert!(count("你好！很高兴见到你！") >= 5);
        let big = "a".repeat(TOKENIZE_LIMIT_BYTES + 3);
        assert_eq!(count(&big), (TOKENIZE_LIMIT_BYTES as u64 + 3).div_ceil(3));
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
}
