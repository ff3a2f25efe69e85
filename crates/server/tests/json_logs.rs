//! JSON logs of the real binary (`log_format = "json"` from a configuration file): one relayed
//! call, retried once after an upstream failure, leaves lines on stdout and in the daily file
//! that are each one JSON object, that carry the call's request id in their span fields, and
//! that hold neither the client's key nor its prompt.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Client;
use serde_json::{Value, json};
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_tests::free_port;
use tollgate_tests::mock::MockProvider;

const ADMIN: &str = "admin-secret-for-log-tests";
const PLATFORM: &str = "platform-secret-for-logs";
const UPSTREAM_KEY: &str = "sk-upstream-secret-for-logs";
/// A prompt no log line may contain.
const PROMPT: &str = "the purple elephant recites its secret prompt";

/// Kills the process if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn send(c: &Client, method: reqwest::Method, url: String, key: &str, body: Value) -> Value {
    let res = c
        .request(method, url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("answered");
    assert!(res.status().is_success(), "{}", res.status());
    res.json().await.expect("json")
}

/// Every line must be one JSON object.
fn parse_lines(text: &str, source: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{source}: not a JSON line ({e}): {l}"));
            assert!(v.is_object(), "{source}: {l}");
            v
        })
        .collect()
}

/// The lines whose spans carry `request_id`.
fn lines_of<'a>(lines: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["request_id"] == request_id))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_of_a_call_carry_its_request_id_and_never_its_key_or_prompt() {
    let mock = MockProvider::start().await;
    let dir = std::env::temp_dir().join(format!("tollgate-json-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = dir.join("tollgate.toml");
    std::fs::write(
        &config,
        format!(
            "log_format = \"json\"\nadmin_key = \"{ADMIN}\"\nexternal_api_keys = [\"{PLATFORM}\"]\n"
        ),
    )
    .expect("config file");
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (var, _) in std::env::vars() {
        if var.starts_with("TOLLGATE_") {
            cmd.env_remove(var);
        }
    }
    let mut child = cmd
        .current_dir(&dir)
        .env("TOLLGATE_CONFIG", &config)
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_LOG_DIR", dir.join("logs"))
        .env("RUST_LOG", "info,tollgate_relay::settle=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tollgate");
    let mut stdout = child.stdout.take().expect("stdout");
    // Drained as it comes, so a full pipe never blocks the server.
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        stdout.read_to_string(&mut text).expect("stdout");
        text
    });
    let mut running = Running(child);
    let base = format!("http://127.0.0.1:{port}");
    let c = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.get(format!("{base}/healthz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "tollgate did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A channel that fails first (so the gateway logs within the call), then one that answers.
    use reqwest::Method;
    let admin = |path: &str| format!("{base}/api/admin{path}");
    let ext = |path: &str| format!("{base}/api/user/external{path}");
    for (name, upstream, priority) in [("failing", "fail-500", 10), ("working", "ok", 0)] {
        send(
            &c,
            Method::POST,
            admin("/channels"),
            ADMIN,
            json!({"name": name, "type": "openai_compatible", "base_url": mock.base_url,
                   "key": UPSTREAM_KEY, "models": ["qwen-turbo"], "priority": priority,
                   "model_mapping": {"qwen-turbo": upstream}}),
        )
        .await;
    }
    send(
        &c,
        Method::POST,
        ext("/sync"),
        PLATFORM,
        json!({"external_user_id": "logs-1", "username": "u"}),
    )
    .await;
    send(
        &c,
        Method::POST,
        ext("/topup"),
        PLATFORM,
        json!({"external_user_id": "logs-1", "amount_usd": 1, "payment_id": "pay-logs-1"}),
    )
    .await;
    let token = send(
        &c,
        Method::POST,
        ext("/token"),
        PLATFORM,
        json!({"external_user_id": "logs-1", "token_name": "k"}),
    )
    .await;
    let key = token["data"]["access_key"]
        .as_str()
        .expect("key")
        .to_owned();
    let token_id = token["data"]["token_id"].clone();

    let res = c
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&key)
        .json(&json!({"model": "qwen-turbo", "messages": [{"role": "user", "content": PROMPT}]}))
        .send()
        .await
        .expect("sent");
    assert_eq!(res.status(), 200);
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("X-Request-Id")
        .to_owned();
    let _ = res.bytes().await.expect("body");
    // The settlement is written before the stats show the call.
    loop {
        let stats = c
            .get(ext("/logs-1/stats"))
            .bearer_auth(PLATFORM)
            .send()
            .await
            .expect("stats")
            .json::<Value>()
            .await
            .expect("json");
        if stats["data"]["user_info"]["total_requests"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not settled: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let killed = Command::new("kill")
        .args(["-TERM", &running.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = running.0.wait().expect("exit");
    assert!(status.success(), "{status}");
    let stdout = stdout.join().expect("stdout reader");

    let day = std::fs::read_dir(dir.join("logs"))
        .expect("log dir")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("tollgate-"))
        .expect("daily file")
        .path();
    let file = std::fs::read_to_string(day).expect("log file");
    for (source, text) in [("stdout", &stdout), ("file", &file)] {
        let lines = parse_lines(text, source);
        assert!(lines.len() > 3, "{source}: {text}");
        for secret in [key.as_str(), PROMPT, ADMIN, PLATFORM, UPSTREAM_KEY] {
            assert!(!text.contains(secret), "{source} holds {secret:?}: {text}");
        }
        let call = lines_of(&lines, &request_id);
        // The gateway's warning about the failed attempt, inside the request's span (the one
        // span of a call) …
        let failed = call
            .iter()
            .find(|l| l["fields"]["message"] == "upstream failed")
            .unwrap_or_else(|| panic!("{source}: no upstream failure line of the call: {text}"));
        assert_eq!(failed["level"], "WARN");
        assert_eq!(failed["span"]["name"], "request");
        assert_eq!(
            failed["spans"].as_array().map(Vec::len),
            Some(1),
            "{failed}"
        );
        assert_eq!(failed["span"]["request_id"], request_id.as_str());
        assert_eq!(failed["span"]["route"], "chat");
        assert_eq!(failed["span"]["token_id"], token_id, "{failed}");
        // … and the middleware's response line.
        let response = call
            .iter()
            .find(|l| l["fields"]["message"] == "response")
            .unwrap_or_else(|| panic!("{source}: no response line of the call: {text}"));
        assert_eq!(response["fields"]["status"], 200);
        assert_eq!(response["span"]["request_id"], request_id.as_str());
        // It names the call: route, key, model and the channel that answered.
        assert_eq!(response["span"]["route"], "chat", "{response}");
        assert_eq!(response["span"]["token_id"], token_id, "{response}");
        assert_eq!(response["span"]["model"], "qwen-turbo", "{response}");
        assert!(response["span"]["channel_id"].is_u64(), "{response}");
        // … and the settlement, written later by the ledger's worker, still in the request's
        // span, which by then knows the model and the channel that answered.
        let settled = call
            .iter()
            .find(|l| l["fields"]["message"] == "settled")
            .unwrap_or_else(|| panic!("{source}: no settlement line of the call: {text}"));
        assert_eq!(settled["span"]["name"], "request", "{settled}");
        assert_eq!(settled["span"]["request_id"], request_id.as_str());
        assert_eq!(settled["span"]["model"], "qwen-turbo", "{settled}");
        assert!(settled["span"]["channel_id"].is_u64(), "{settled}");
        assert!(
            settled["fields"]["quota"].as_i64().is_some_and(|q| q > 0),
            "{settled}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}
