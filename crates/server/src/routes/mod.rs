//! HTTP routes. Each handler extracts, converts to a domain input, calls one service method and
//! maps the result; nothing here computes money or touches storage directly.
//!
//! A handler's method and path are written once, in its actix route attribute (`#[post("/sync")]`),
//! which `#[utoipa::path]` above it reads too; each module lists its handlers once, in
//! [`routes!`], which makes both its `configure` (the registration) and its `openapi` (the
//! description `crate::openapi` publishes). A route cannot be served without being described.

/// Declares a module's handlers once. Expands to `configure`, which registers each handler at
/// the method and path of its actix route attribute, and `openapi`, the OpenAPI description of
/// exactly those handlers (paths relative to the scope the module is mounted at).
macro_rules! routes {
    ($($handler:ident),+ $(,)?) => {
        /// Registers the routes (each at the method and path of its route attribute).
        pub fn configure(cfg: &mut actix_web::web::ServiceConfig) {
            $(cfg.service($handler);)+
        }

        /// The OpenAPI description of the routes that `configure` registers, paths relative
        /// to the module's scope.
        #[must_use]
        pub fn openapi() -> utoipa::openapi::OpenApi {
            #[derive(utoipa::OpenApi)]
            #[openapi(paths($($handler),+))]
            struct Routes;
            <Routes as utoipa::OpenApi>::openapi()
        }
    };
}
pub(crate) use routes;

pub mod admin;
pub mod admin_read;
pub mod console;
pub mod external;
pub mod health;
pub mod relay;

use crate::error::ApiError;
use actix_web::HttpRequest;
use actix_web::error::{JsonPayloadError, QueryPayloadError};
use actix_web::web::{JsonConfig, QueryConfig};

/// JSON body rules of the external API: JSON content type, size limit, mapped errors.
#[must_use]
pub fn json_config(limit: usize) -> JsonConfig {
    JsonConfig::default()
        .limit(limit)
        .content_type_required(true)
        .error_handler(move |err, _req: &HttpRequest| json_error(&err, limit).into())
}

fn json_error(err: &JsonPayloadError, limit: usize) -> ApiError {
    use actix_web::error::PayloadError;
    match err {
        JsonPayloadError::OverflowKnownLength { .. }
        | JsonPayloadError::Overflow { .. }
        | JsonPayloadError::Payload(PayloadError::Overflow) => ApiError::payload_too_large(limit),
        JsonPayloadError::ContentType => {
            ApiError::bad_request("Content-Type 必须是 application/json")
        }
        JsonPayloadError::Deserialize(e) if e.is_eof() && e.line() == 1 && e.column() == 0 => {
            ApiError::bad_request("请求体为空，需要一个 JSON 对象")
        }
        JsonPayloadError::Deserialize(e) => ApiError::bad_request(format!("JSON 无效: {e}")),
        other => ApiError::bad_request(format!("无法读取请求体: {other}")),
    }
}

/// Query-string rules: malformed values are a 400.
#[must_use]
pub fn query_config() -> QueryConfig {
    QueryConfig::default().error_handler(|err: QueryPayloadError, _req| {
        ApiError::bad_request(format!("查询参数无效: {err}")).into()
    })
}
