//! Helpers for Tollgate's end-to-end tests: start the real server on a random port against a
//! fresh, migrated database (SQLite always; MariaDB/MySQL too when `TOLLGATE_TEST_MYSQL_URL` is
//! set) and talk to it over HTTP like a platform would.
#![expect(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::{Client, Method, StatusCode};
use serde_json::Value;
use tollgate_server::{Application, Settings};
use tollgate_storage::testing;

/// The first platform's secret.
pub const PLATFORM_A: &str = "platform-secret-a";
/// The second platform's secret.
pub const PLATFORM_B: &str = "platform-secret-b";

/// A running server.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Which database it runs on.
    pub backend: &'static str,
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

fn settings(database_url: String) -> Settings {
    let env = [
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
    Settings::from_lookup(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.clone())
    })
    .expect("test settings are valid")
}

impl TestApp {
    /// Starts a server on `database_url`.
    pub async fn start(database_url: String, backend: &'static str) -> TestApp {
        let app = Application::build(&settings(database_url))
            .await
            .expect("application starts");
        let base = format!("http://127.0.0.1:{}", app.port());
        let handle = app.handle();
        tokio::spawn(app.run_until_stopped());
        TestApp {
            base,
            backend,
            client: Client::new(),
            handle,
        }
    }

    /// One server per configured backend.
    pub async fn all() -> Vec<TestApp> {
        let mut apps = vec![TestApp::start(testing::sqlite_url(), "sqlite").await];
        if let Some(url) = testing::mysql_url().await.expect("MySQL test database") {
            apps.push(TestApp::start(url, "mysql").await);
        }
        apps
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
