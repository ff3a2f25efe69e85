//! End-to-end tests of `GET /openapi.json` (SPEC §7): the running server serves an OpenAPI 3.1
//! document, and every operation it lists is a route the server has (none falls through to the
//! router's "no such route" answer). The other direction, a route the document lacks, is
//! checked where the routes are registered (`crates/server/src/openapi.rs`).
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tollgate_storage::testing;
use tollgate_tests::{Reply, TestApp};

/// Whether an answer is the router's own for a route it does not have: the root's 404
/// `not_found`, the relay's 404 `unknown_url`, or a 405.
fn unrouted(r: &Reply) -> bool {
    r.status == StatusCode::METHOD_NOT_ALLOWED
        || (r.status == StatusCode::NOT_FOUND
            && (r.body["code"] == "not_found" || r.body["error"]["code"] == "unknown_url"))
}

/// `path` with each `{parameter}` filled in.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "1"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_operation_in_it_is_served() {
    let app = TestApp::start(testing::sqlite_url(), "sqlite").await;
    let res = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .expect("request reaches the server");
    assert_eq!(res.status(), StatusCode::OK);
    let content_type = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let doc: Value = res.json().await.expect("the document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    // The probe can tell a missing route from a present one.
    for (method, path) in [
        (Method::GET, "/api/user/external/nope/nope/nope"),
        (Method::PATCH, "/api/user/external/sync"),
        (Method::GET, "/v1/nope"),
        (Method::DELETE, "/healthz"),
    ] {
        let r = app.send(method.clone(), path, None, None, None).await;
        assert!(unrouted(&r), "{method} {path}: {} {}", r.status, r.body);
    }

    let paths = doc["paths"].as_object().expect("paths");
    let mut probed = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            let Ok(method) = Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            // No key: every protected route answers 401 before reading anything.
            let body = matches!(method, Method::POST | Method::PUT | Method::DELETE)
                .then(|| b"{}".to_vec());
            let ct = body.as_ref().map(|_| "application/json");
            let r = app
                .send(method.clone(), &concrete(path), None, body, ct)
                .await;
            assert!(
                !unrouted(&r),
                "{method} {path} is documented but not served: {} {}",
                r.status,
                r.body
            );
            assert!(
                r.request_id.is_some(),
                "{method} {path} without X-Request-Id"
            );
            probed += 1;
        }
    }
    assert!(probed >= 35, "only {probed} operations documented");
}
