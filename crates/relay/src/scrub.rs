//! Upstream error bodies made safe for the client: the channel key removed, and the shape
//! made the client's API's (OpenAI's or Anthropic's) whatever the upstream spoke.

use crate::anthropic;
use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_domain::channel::Api;

/// Removes the channel key from an upstream error and makes sure it is OpenAI-shaped.
pub(crate) fn sanitize_error(body: &[u8], key: &str, status: u16) -> Bytes {
    let text = String::from_utf8_lossy(body);
    let scrub = |s: &str| {
        if key.len() >= 4 {
            s.replace(key, "***")
        } else {
            s.to_owned()
        }
    };
    match serde_json::from_str::<Value>(&text) {
        // OpenAI's `{"error":{…}}` and Anthropic's `{"type":"error","error":{…}}` alike.
        Ok(Value::Object(o)) if o.get("error").is_some_and(Value::is_object) => {
            Bytes::from(scrub(&Value::Object(o).to_string()))
        }
        _ => {
            let message = if text.trim().is_empty() {
                format!("upstream answered {status}")
            } else {
                scrub(text.chars().take(2000).collect::<String>().as_str())
            };
            Bytes::from(
                json!({"error": {"message": message, "type": "invalid_request_error", "code": null}})
                    .to_string(),
            )
        }
    }
}

/// An upstream error body (already scrubbed, OpenAI- or Anthropic-shaped) in the shape of the
/// client's API: Anthropic's for `/v1/messages`, OpenAI's for the others.
pub(crate) fn in_client_shape(api: Api, status: u16, body: Bytes) -> Bytes {
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return body;
    };
    let anthropic_shaped = v.get("type").and_then(Value::as_str) == Some("error");
    match (api, anthropic_shaped) {
        (Api::Messages, false) => {
            Bytes::from(anthropic::openai_error_to_anthropic(status, &v).to_string())
        }
        (Api::Messages, true) => body,
        (_, true) => Bytes::from(anthropic::anthropic_error_to_openai(status, &v).to_string()),
        (_, false) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_errors_lose_the_channel_key() {
        let body = br#"{"error":{"message":"Incorrect API key provided: sk-secret-123","type":"invalid_request_error"}}"#;
        let out = sanitize_error(body, "sk-secret-123", 400);
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("sk-secret-123"));
        assert!(text.contains("***"));
        let wrapped = sanitize_error(b"bad gateway html", "k", 404);
        let v: Value = serde_json::from_slice(&wrapped).expect("json");
        assert_eq!(v["error"]["message"], "bad gateway html");
    }
}
