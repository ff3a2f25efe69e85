//! The operator console at `/admin` (SPEC §7): one HTML page, one stylesheet and one
//! dependency-free script, compiled into the binary with `include_str!` (no build step, no file
//! or script from another host). The page signs in with the admin key, which the script keeps
//! in `sessionStorage` and sends as `Authorization: Bearer` to the admin API; every response
//! carries a strict Content-Security-Policy (scripts and styles from this origin only, nothing
//! inline), so even a value that slipped past the script's text-only rendering could not run.

use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, REFERRER_POLICY, X_CONTENT_TYPE_OPTIONS,
    X_FRAME_OPTIONS,
};
use actix_web::{HttpResponse, get};

/// The page.
pub const INDEX_HTML: &str = include_str!("../../console/index.html");
/// Its script.
pub const APP_JS: &str = include_str!("../../console/app.js");
/// Its stylesheet.
pub const APP_CSS: &str = include_str!("../../console/app.css");

/// Scripts, styles and API calls from this origin only; no inline script or style, no plugin,
/// no framing, no `<base>` or form posts elsewhere. `data:` images only for the empty favicon.
pub const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

super::routes!(index, index_slash, script, style);

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((CONTENT_SECURITY_POLICY, POLICY))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((REFERRER_POLICY, "no-referrer"))
        .insert_header((X_FRAME_OPTIONS, "DENY"))
        // Revalidate every time: a new binary serves a new console at once.
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// The console's page; it signs in with the admin key in the browser.
#[utoipa::path(responses((status = 200, description = "The console", content_type = "text/html", body = String)))]
#[get("/admin")]
async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's page, as `/admin` serves it.
#[utoipa::path(responses((status = 200, description = "The console", content_type = "text/html", body = String)))]
#[get("/admin/")]
async fn index_slash() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

/// The console's script.
#[utoipa::path(responses((status = 200, description = "The console's script", content_type = "text/javascript", body = String)))]
#[get("/admin/app.js")]
async fn script() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// The console's stylesheet.
#[utoipa::path(responses((status = 200, description = "The console's stylesheet", content_type = "text/css", body = String)))]
#[get("/admin/app.css")]
async fn style() -> HttpResponse {
    asset("text/css; charset=utf-8", APP_CSS)
}
