//! Helpers for Tollgate's end-to-end tests: start the real server on a random port against a
//! fresh, migrated database (SQLite always; MariaDB/MySQL too when `TOLLGATE_TEST_MYSQL_URL` is
//! set) and talk to it over HTTP like a platform would.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

pub mod cut;
pub mod mock;
pub mod proxy;

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tollgate_server::{Application, Settings};
use tollgate_storage::testing;

/// The first platform's secret.
pub const PLATFORM_A: &str = "platform-secret-a";
/// The second platform's secret.
pub const PLATFORM_B: &str = "platform-secret-b";
/// The admin secret of test servers.
pub const ADMIN_KEY: &str = "admin-secret-for-tests";

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Which database it runs on.
    pub backend: &'static str,
    /// Its database (for tests that check what was stored).
    pub database_url: String,
    /// HTTP client.
    pub client: Client,
    handle: actix_web::dev::ServerHandle,
}

/// A response: status and parsed JSON body (`Value::Null` when not JSON).
#[derive(Debug)]
pub struct Reply {
    /// Status.
    pub status: StatusCode,
    /// Body.
    pub body: Value,
    /// `X-Request-Id`, if present.
    pub request_id: Option<String>,
}

impl Reply {
    /// `data` of a success envelope; panics with the body otherwise.
    pub fn data(&self) -> &Value {
        assert_eq!(
            self.status,
            StatusCode::OK,
            "expected 200, got {} {}",
            self.status,
            self.body
        );
        assert_eq!(self.body["success"], Value::Bool(true), "{}", self.body);
        &self.body["data"]
    }

    /// Asserts an error envelope with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body {}", self.body);
        assert_eq!(self.body["success"], Value::Bool(false), "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.body
        );
    }
}

/// A loopback port free right now (for a process the test starts itself).
///
/// # Panics
/// When no port can be bound.
#[must_use]
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The settings of a test server on `database_url`, with extra `TOLLGATE_*` settings.
///
/// # Panics
/// When the settings are invalid.
#[must_use]
pub fn settings(database_url: String, overrides: &[(&str, &str)]) -> Settings {
    let mut env = vec![
        ("TOLLGATE_LISTEN", "127.0.0.1:0".to_owned()),
        ("TOLLGATE_DATABASE_URL", database_url),
        (
            "TOLLGATE_EXTERNAL_API_KEYS",
            format!("{PLATFORM_A},{PLATFORM_B}"),
        ),
        ("TOLLGATE_ADMIN_KEY", "admin-secret-for-tests".to_owned()),
        (
            "TOLLGATE_LOG_DIR",
            std::env::temp_dir()
                .join("tollgate-test-logs")
                .display()
                .to_string(),
        ),
    ];
    env.extend(overrides.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Settings::from_lookup(|k| {
        env.iter()
            .rev()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("test settings are valid")
}

impl TestApp {
    /// Starts a server on `database_url`.
    pub async fn start(database_url: String, backend: &'static str) -> TestApp {
        Self::start_with(database_url, backend, &[]).await
    }

    /// Starts a server on `database_url` with extra `TOLLGATE_*` settings.
    pub async fn start_with(
        database_url: String,
        backend: &'static str,
        overrides: &[(&str, &str)],
    ) -> TestApp {
        let app = Application::build(&settings(database_url.clone(), overrides))
            .await
            .expect("application starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            backend,
            database_url,
            client: Client::new(),
            handle,
        }
    }

    /// The port of the server.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.base
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("base URL ends with the port")
    }

    /// One server per configured backend.
    pub async fn all() -> Vec<TestApp> {
        Self::all_with(&[]).await
    }

    /// One server per configured backend, with extra settings.
    pub async fn all_with(overrides: &[(&str, &str)]) -> Vec<TestApp> {
        let mut apps = vec![TestApp::start_with(testing::sqlite_url(), "sqlite", overrides).await];
        if let Some(url) = testing::mysql_url().await.expect("MySQL test database") {
            apps.push(TestApp::start_with(url, "mysql", overrides).await);
        }
        apps
    }

    /// A JSON call to the admin API.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let ct = bytes.as_ref().map(|_| "application/json");
        self.send(
            method,
            &format!("/api/admin{path}"),
            Some(ADMIN_KEY),
            bytes,
            ct,
        )
        .await
    }

    /// Sets a model's price (USD per 1M tokens).
    pub async fn price(&self, model: &str, input: &str, output: &str) {
        let body: Value = serde_json::from_str(&format!(
            r#"{{"input":{input},"output":{output},"cached_input":{input}}}"#
        ))
        .expect("price json");
        self.admin(Method::PUT, &format!("/pricing/{model}"), Some(body))
            .await
            .data();
    }

    /// Adds a channel of `kind` at `base_url` serving `models` (public → upstream names);
    /// returns its id.
    pub async fn channel(
        &self,
        kind: &str,
        base_url: &str,
        models: &[(&str, &str)],
        priority: i64,
    ) -> i64 {
        let names: Vec<&str> = models.iter().map(|(p, _)| *p).collect();
        let mapping: serde_json::Map<String, Value> = models
            .iter()
            .filter(|(p, u)| p != u)
            .map(|(p, u)| ((*p).to_owned(), Value::String((*u).to_owned())))
            .collect();
        let r = self
            .admin(
                Method::POST,
                "/channels",
                Some(
                    json!({"name": format!("{kind}-{priority}"), "type": kind, "base_url": base_url,
                            "key": "sk-upstream-secret", "models": names, "model_mapping": mapping,
                            "priority": priority, "weight": 1}),
                ),
            )
            .await;
        r.data()["id"].as_i64().expect("channel id")
    }

    /// Prices `public` at $2 / $6 per 1M tokens and serves it from a channel on the mock
    /// provider whose upstream model is `upstream` (which picks the mock's behaviour).
    pub async fn mock_model(&self, mock: &mock::MockProvider, public: &str, upstream: &str) -> i64 {
        self.price(public, "2.0", "6.0").await;
        self.channel(
            "openai_compatible",
            &mock.base_url,
            &[(public, upstream)],
            0,
        )
        .await
    }

    /// Prices `public` at $2 / $6 per 1M tokens and serves it from a local `echo` channel.
    pub async fn echo_model(&self, public: &str) {
        self.price(public, "2.0", "6.0").await;
        self.admin(
            Method::POST,
            "/channels",
            Some(json!({"name": "echo", "type": "echo", "models": [public]})),
        )
        .await
        .data();
    }

    /// A chat-completions request with `key`, ready to send (for tests that read the answer
    /// piece by piece or give up early).
    pub fn chat_request(&self, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(body)
    }

    /// Syncs a user, credits `usd` and issues a key; returns the key.
    pub async fn funded_key(&self, id: &str, usd: &str) -> String {
        self.ext(
            Method::POST,
            "/sync",
            Some(json!({"external_user_id": id, "username": "u"})),
        )
        .await
        .data();
        if usd != "0" {
            let body: Value = serde_json::from_str(&format!(
                r#"{{"external_user_id":"{id}","amount_usd":{usd},"payment_id":"pay-{id}"}}"#
            ))
            .expect("topup json");
            self.ext(Method::POST, "/topup", Some(body)).await.data();
        }
        let t = self
            .ext(
                Method::POST,
                "/token",
                Some(json!({"external_user_id": id, "token_name": "k"})),
            )
            .await;
        t.data()["access_key"].as_str().expect("key").to_owned()
    }

    /// `POST /v1/chat/completions` with a JSON body.
    pub async fn chat(&self, key: &str, body: &Value) -> Reply {
        let bytes = serde_json::to_vec(body).expect("json");
        self.send(
            Method::POST,
            "/v1/chat/completions",
            Some(key),
            Some(bytes),
            Some("application/json"),
        )
        .await
    }

    /// A streaming chat call read to the end: status, content type and raw body.
    pub async fn chat_stream(&self, key: &str, body: &Value) -> (StatusCode, String, String) {
        let res = self
            .chat_request(key, body)
            .send()
            .await
            .expect("request reaches the server");
        let status = res.status();
        let ctype = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let text = res.text().await.expect("body");
        (status, ctype, text)
    }

    /// `user_info` of a user's stats.
    pub async fn user_info(&self, id: &str) -> Value {
        self.ext(Method::GET, &format!("/{id}/stats"), None)
            .await
            .data()["user_info"]
            .clone()
    }

    /// Stats once `total_requests` reached `n` (settlement is asynchronous; SPEC allows 1 s).
    pub async fn settled(&self, id: &str, n: i64) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let info = self.user_info(id).await;
            if info["total_requests"].as_i64().unwrap_or(0) >= n
                || std::time::Instant::now() > deadline
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stats once no hold is left (`balance_capacity` equals the balance; releases and
    /// settlements are asynchronous, SPEC allows 1 s), or after 5 s.
    pub async fn no_hold_left(&self, id: &str) -> Value {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let info = self.user_info(id).await;
            if info["balance_capacity"] == info["current_balance"]
                || std::time::Instant::now() > deadline
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends a request with an optional bearer key and raw body (sent as JSON).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let res = req.send().await.expect("request reaches the server");
        let status = res.status();
        let request_id = res
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = res.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            body,
            request_id,
        }
    }

    /// A JSON call to the external API as platform A.
    pub async fn ext(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.ext_as(PLATFORM_A, method, path, body).await
    }

    /// A JSON call to the external API as the platform with `key`.
    pub async fn ext_as(
        &self,
        key: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        let bytes = body.map(|b| serde_json::to_vec(&b).expect("json"));
        let ct = bytes.as_ref().map(|_| "application/json");
        self.send(
            method,
            &format!("/api/user/external{path}"),
            Some(key),
            bytes,
            ct,
        )
        .await
    }

    /// Stops the server.
    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}
