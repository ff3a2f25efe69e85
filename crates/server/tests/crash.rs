//! Crash-safe holds with real processes: an instance killed with SIGKILL while streams are in
//! flight leaves no money locked — a surviving instance releases its holds once its heartbeat is
//! stale, and a restart under the same name releases them at once — and nothing is charged.
//! And what SIGKILL can lose of settlements: with a group-commit window, only the calls that
//! ended within the last window (unbilled, never charged twice); with a window of 0, nothing
//! of a call whose client got the whole answer.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::Client;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tollgate_storage::testing;
use tollgate_tests::free_port;
use tollgate_tests::mock::MockProvider;

const ADMIN: &str = "admin-secret-for-crash-tests";
const PLATFORM: &str = "platform-secret-for-crash";

/// A `tollgate` process.
struct Instance {
    child: Child,
    base: String,
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start(database: &str, name: &str, timeout_secs: u32, logs: &PathBuf) -> Instance {
    start_with(database, name, timeout_secs, logs, &[]).await
}

async fn start_with(
    database: &str,
    name: &str,
    timeout_secs: u32,
    logs: &PathBuf,
    extra: &[(&str, &str)],
) -> Instance {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    for (var, _) in std::env::vars() {
        if var.starts_with("TOLLGATE_") {
            cmd.env_remove(var);
        }
    }
    cmd.envs(extra.iter().copied());
    let child = cmd
        .env("TOLLGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("TOLLGATE_DATABASE_URL", database)
        .env("TOLLGATE_ADMIN_KEY", ADMIN)
        .env("TOLLGATE_EXTERNAL_API_KEYS", PLATFORM)
        .env("TOLLGATE_INSTANCE_NAME", name)
        .env("TOLLGATE_INSTANCE_TIMEOUT_SECS", timeout_secs.to_string())
        .env("TOLLGATE_LOG_DIR", logs)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tollgate");
    // Owned at once, so a failed start still kills and waits for the process.
    let instance = Instance {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client
            .get(format!("{}/healthz", instance.base))
            .send()
            .await
            && r.status() == 200
        {
            return instance;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("tollgate {name} did not start");
}

async fn call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    key: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client.request(method, url).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req.send().await.expect("answered");
    res.json().await.expect("json")
}

/// Prices qwen-turbo, serves it from the mock's `stall` stream (two chunks, then silence) and
/// funds a user with $1; returns its key.
async fn setup(at: &Instance, mock: &MockProvider, user: &str) -> String {
    setup_serving(at, mock, user, "stall").await
}

/// As [`setup`], with qwen-turbo served by the mock's `upstream` model.
async fn setup_serving(at: &Instance, mock: &MockProvider, user: &str, upstream: &str) -> String {
    let c = Client::new();
    let admin = |path: &str| format!("{}/api/admin{path}", at.base);
    let ext = |path: &str| format!("{}/api/user/external{path}", at.base);
    use reqwest::Method;
    call(
        &c,
        Method::PUT,
        admin("/pricing/qwen-turbo"),
        ADMIN,
        Some(json!({"input": 2, "output": 6, "cached_input": 2})),
    )
    .await;
    let channels = call(&c, Method::GET, admin("/channels"), ADMIN, None).await;
    if channels["data"].as_array().is_none_or(Vec::is_empty) {
        call(
            &c,
            Method::POST,
            admin("/channels"),
            ADMIN,
            Some(json!({
            "name": "mock", "type": "openai_compatible", "base_url": mock.base_url, "key": "sk-up",
            "models": ["qwen-turbo"], "model_mapping": {"qwen-turbo": upstream}})),
        )
        .await;
    }
    call(
        &c,
        Method::POST,
        ext("/sync"),
        PLATFORM,
        Some(json!({"external_user_id": user, "username": "u"})),
    )
    .await;
    call(
        &c,
        Method::POST,
        ext("/topup"),
        PLATFORM,
        Some(
            json!({"external_user_id": user, "amount_usd": 1, "payment_id": format!("pay-{user}")}),
        ),
    )
    .await;
    let t = call(
        &c,
        Method::POST,
        ext("/token"),
        PLATFORM,
        Some(json!({"external_user_id": user, "token_name": "k"})),
    )
    .await;
    t["data"]["access_key"].as_str().expect("key").to_owned()
}

async fn user_info(at: &Instance, user: &str) -> Value {
    let c = Client::new();
    let v = call(
        &c,
        reqwest::Method::GET,
        format!("{}/api/user/external/{user}/stats", at.base),
        PLATFORM,
        None,
    )
    .await;
    v["data"]["user_info"].clone()
}

/// Opens `n` streams through `at` and waits until each has delivered its first chunk.
async fn streams(at: &Instance, key: &str, n: usize) -> Vec<reqwest::Response> {
    let c = Client::new();
    let mut open = Vec::new();
    for _ in 0..n {
        let mut res = c
            .post(format!("{}/v1/chat/completions", at.base))
            .bearer_auth(key)
            .json(&json!({"model": "qwen-turbo", "stream": true,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(res.status(), 200);
        res.chunk().await.expect("chunk").expect("first chunk");
        open.push(res);
    }
    open
}

async fn database() -> String {
    match testing::mysql_url().await.expect("MySQL test database") {
        Some(url) => url,
        None => testing::sqlite_url(),
    }
}

fn logs(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tollgate-crash-{name}-{}", std::process::id()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_holds_are_released_by_a_survivor() {
    let db = database().await;
    let mock = MockProvider::start().await;
    let mut a = start(&db, "gw-a", 3, &logs("a")).await;
    let key = setup(&a, &mock, "crash-1").await;
    let b = start(&db, "gw-b", 3, &logs("b")).await;
    let open = streams(&a, &key, 5).await;
    let held = user_info(&b, "crash-1").await;
    assert!(
        held["balance_capacity"].as_f64() < held["current_balance"].as_f64(),
        "five holds in flight: {held}"
    );
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    let killed = Instant::now();
    drop(open);
    let info = loop {
        let info = user_info(&b, "crash-1").await;
        if info["balance_capacity"] == info["current_balance"] {
            break info;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "still held: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Within the 3 s heartbeat bound plus one reap period; nothing was charged.
    assert!(
        killed.elapsed() < Duration::from_secs(10),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        (info["total_requests"].clone(), info["used_quota"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(info["current_balance"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_the_same_name_releases_its_predecessors_holds_at_once() {
    let db = database().await;
    let mock = MockProvider::start().await;
    // A 60 s bound: only the restart can explain a release within seconds.
    let mut first = start(&db, "gw-restart", 60, &logs("r1")).await;
    let key = setup(&first, &mock, "crash-2").await;
    let open = streams(&first, &key, 5).await;
    first.child.kill().expect("SIGKILL");
    first.child.wait().expect("reaped");
    drop(open);
    let second = start(&db, "gw-restart", 60, &logs("r2")).await;
    let info = user_info(&second, "crash-2").await;
    assert_eq!(
        info["balance_capacity"], info["current_balance"],
        "released at start-up: {info}"
    );
    assert_eq!(info["total_requests"], 0);
    drop(second);
}

/// Makes `json` calls and one stream through `at` at the same time (so they end within a few
/// milliseconds of each other), each read to its end by the client.
async fn answered(at: &Instance, key: &str, json: usize) {
    let c = Client::new();
    let url = format!("{}/v1/chat/completions", at.base);
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..=json {
        let (c, url, key) = (c.clone(), url.clone(), key.to_owned());
        let stream = n == json;
        calls.spawn(async move {
            let res = c
                .post(&url)
                .bearer_auth(key)
                .json(&json!({"model": "qwen-turbo", "stream": stream,
                              "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .expect("sent");
            assert_eq!(res.status(), 200);
            let text = res.text().await.expect("whole answer");
            if stream {
                assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
            }
        });
    }
    while let Some(done) = calls.join_next().await {
        done.expect("call");
    }
}

/// Quota of one call on the mock at $2 / $6 per 1M tokens: 14 prompt and 18 completion tokens.
const CALL_QUOTA: i64 = 68;

/// After a restart under the same name (which releases its predecessor's holds at once): the
/// user's calls, charge and balance, with nothing left held.
async fn books_after_restart(db: &str, name: &str, user: &str) -> (i64, i64, Value) {
    let again = start(db, name, 60, &logs(&format!("{name}-again"))).await;
    let info = user_info(&again, user).await;
    assert_eq!(
        info["balance_capacity"], info["current_balance"],
        "nothing held: {info}"
    );
    (
        info["total_requests"].as_i64().expect("requests"),
        info["used_quota"].as_i64().expect("used"),
        info["current_balance"].clone(),
    )
}

/// End to end on real processes. A background write that merely wins the race against the
/// kill would pass here too; that the last byte waits for the commit is pinned by the relay's
/// unit tests (`stream::tests`, and the ledger suite's durable case).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_window_of_zero_a_kill_loses_no_charge_of_an_answer_a_client_received() {
    let db = database().await;
    let mock = MockProvider::start().await;
    let mut a = start_with(
        &db,
        "gw-durable",
        60,
        &logs("durable"),
        &[("TOLLGATE_SETTLEMENT_WINDOW_MS", "0")],
    )
    .await;
    let key = setup_serving(&a, &mock, "crash-3", "fine").await;
    answered(&a, &key, 5).await;
    // At once: nothing is given time to finish in the background.
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    let (requests, used, _) = books_after_restart(&db, "gw-durable", "crash-3").await;
    assert_eq!((requests, used), (6, 6 * CALL_QUOTA));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_window_a_kill_loses_only_the_calls_of_the_last_window_and_charges_none_twice() {
    let db = database().await;
    let mock = MockProvider::start().await;
    // The longest window the setting allows.
    let window = Duration::from_secs(1);
    let mut a = start_with(
        &db,
        "gw-window",
        60,
        &logs("window"),
        &[("TOLLGATE_SETTLEMENT_WINDOW_MS", "1000")],
    )
    .await;
    let key = setup_serving(&a, &mock, "crash-4", "fine").await;
    // Committed: their window closes before the kill.
    answered(&a, &key, 2).await;
    tokio::time::sleep(window + Duration::from_secs(1)).await;
    let committed = user_info(&a, "crash-4").await;
    assert_eq!(committed["total_requests"], 3, "{committed}");
    // Within the next window: answered, not yet committed when the process dies.
    answered(&a, &key, 3).await;
    a.child.kill().expect("SIGKILL");
    a.child.wait().expect("reaped");
    let (requests, used, balance) = books_after_restart(&db, "gw-window", "crash-4").await;
    assert_eq!(
        (requests, used),
        (3, 3 * CALL_QUOTA),
        "the last window's four calls are lost, unbilled; the first three charged once"
    );
    assert_eq!(balance, committed["current_balance"]);
}
