//! The HTTP face of every failure: status, machine-readable `code` and message, in the envelope
//! `{"success":false,"message":…,"code":…}`. Domain and storage errors are mapped here and only
//! here; storage detail is logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;
use tollgate_domain::{DomainError, RepoError};

/// What a client sees while the database cannot be reached.
pub const UNAVAILABLE_MESSAGE: &str = "服务暂时不可用：数据库无法访问，请稍后重试";
use tollgate_domain::validation::PREFIX;
use tollgate_relay::RelayError;

/// An error answer of the external user API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

/// The error envelope of the external and admin APIs, as sent (and as `/openapi.json` shows it).
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorEnvelope<'a> {
    /// Always `false`.
    success: bool,
    /// For people: the validator's text for 400s, never storage or driver detail.
    message: &'a str,
    /// For programs: `validation_error` (400), `unauthorized` (401), `user_not_found`,
    /// `token_not_found`, `channel_not_found`, `not_found` (404), `payment_id_conflict` (409),
    /// `payload_too_large` (413), `internal_error` (500), `service_unavailable` (503).
    code: &'a str,
}

impl ApiError {
    /// 400 `validation_error` with the standard prefix before `detail`.
    pub fn bad_request(detail: impl fmt::Display) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "validation_error",
            message: format!("{PREFIX}{detail}"),
        }
    }

    /// 401 `unauthorized`.
    #[must_use]
    pub fn unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "未授权：缺少或无效的平台密钥".into(),
        }
    }

    /// 401 `unauthorized` for the admin API.
    #[must_use]
    pub fn admin_unauthorized() -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: "未授权：缺少或无效的管理密钥".into(),
        }
    }

    /// 413 `payload_too_large`.
    #[must_use]
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            code: "payload_too_large",
            message: format!("请求体过大：最多 {limit} 字节"),
        }
    }

    /// 404 `not_found` for unknown routes.
    #[must_use]
    pub fn route_not_found() -> Self {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: "接口不存在".into(),
        }
    }

    /// 503 `service_unavailable` while the database cannot be reached; the cause goes to the
    /// log only.
    pub fn unavailable(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "database unavailable");
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "service_unavailable",
            message: UNAVAILABLE_MESSAGE.into(),
        }
    }

    /// 500 `internal_error`; the cause goes to the log only.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal_error",
            message: "服务器内部错误".into(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorEnvelope {
            success: false,
            message: &self.message,
            code: self.code,
        })
    }
}

impl From<DomainError> for ApiError {
    fn from(e: DomainError) -> Self {
        let (status, code, message) = match e {
            DomainError::Validation(v) => {
                (StatusCode::BAD_REQUEST, "validation_error", v.to_string())
            }
            DomainError::UserNotFound => (
                StatusCode::NOT_FOUND,
                "user_not_found",
                "用户不存在".to_owned(),
            ),
            DomainError::TokenNotFound => (
                StatusCode::NOT_FOUND,
                "token_not_found",
                "Token不存在或无权删除".to_owned(),
            ),
            DomainError::ChannelNotFound => (
                StatusCode::NOT_FOUND,
                "channel_not_found",
                "渠道不存在".to_owned(),
            ),
            DomainError::PaymentIdConflict => (
                StatusCode::CONFLICT,
                "payment_id_conflict",
                "该支付ID已处理，请勿重复提交".to_owned(),
            ),
            DomainError::Repo(r @ RepoError::Unavailable { .. }) => {
                return ApiError::unavailable(&r.detail());
            }
            DomainError::Repo(r) => return ApiError::internal(&r.detail()),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}

/// An error answer of the relay API, in OpenAI's shape
/// `{"error":{"message","type","param","code"}}`, so the official SDKs raise their matching
/// exception (they key on the HTTP status).
#[derive(Debug)]
pub struct OpenAiError {
    status: StatusCode,
    kind: &'static str,
    code: Option<&'static str>,
    message: String,
    /// An upstream's own error body, passed through (already scrubbed of the channel key).
    raw: Option<actix_web::web::Bytes>,
    /// `Retry-After` in seconds (429s).
    retry_after: Option<i64>,
}

/// An error of the OpenAI-format relay APIs, as sent. An upstream's own 400/404/422 answer is
/// passed through instead (scrubbed of the channel key), usually in this shape too.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorBody<'a> {
    error: OpenAiErrorDetail<'a>,
}

/// The `error` of an OpenAI-format error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OpenAiErrorDetail<'a> {
    message: &'a str,
    /// `authentication_error`, `invalid_request_error`, `insufficient_quota`,
    /// `rate_limit_error`, `upstream_error` or `server_error`.
    #[serde(rename = "type")]
    kind: &'a str,
    /// Always `null`.
    #[schema(value_type = Option<String>)]
    param: Option<()>,
    /// `invalid_api_key`, `token_expired`, `token_disabled`, `invalid_request_error`,
    /// `model_not_found`, `insufficient_user_quota`, `payload_too_large`, `request_timeout`,
    /// `rate_limit_exceeded`, `channel_rate_limited`, `no_available_channel`, `upstream_error`,
    /// `upstream_timeout`, `service_unavailable`, `internal_error`, `unknown_url`.
    code: Option<&'a str>,
}

impl OpenAiError {
    fn new(status: StatusCode, kind: &'static str, code: &'static str, message: String) -> Self {
        OpenAiError {
            status,
            kind,
            code: Some(code),
            message,
            raw: None,
            retry_after: None,
        }
    }

    /// 413 for a request body over the relay limit.
    #[must_use]
    pub fn payload_too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            "payload_too_large",
            format!("请求体过大：最多 {limit} 字节"),
        )
    }

    /// 404 for an unknown path under `/v1`.
    #[must_use]
    pub fn route_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "unknown_url",
            "接口不存在".into(),
        )
    }

    /// 408 for a body that did not arrive in time.
    #[must_use]
    pub fn body_timeout(deadline: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            "request_timeout",
            format!("请求体未在 {} 秒内发送完毕", deadline.as_secs()),
        )
    }

    /// 400 for a body that could not be read.
    #[must_use]
    pub fn bad_body(detail: impl fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_request_error",
            format!("无法读取请求体: {detail}"),
        )
    }

    /// 500 `internal_error`; the cause goes to the log only.
    pub fn internal(cause: &dyn fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "服务器内部错误".into(),
        )
    }
}

impl From<RelayError> for OpenAiError {
    fn from(e: RelayError) -> Self {
        let message = e.to_string();
        let (status, kind, code) = match e {
            RelayError::InvalidKey => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            RelayError::TokenExpired => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "token_expired",
            ),
            RelayError::TokenDisabled => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "token_disabled",
            ),
            RelayError::InvalidRequest(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request_error",
            ),
            RelayError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
            ),
            RelayError::NoAvailableChannel(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "no_available_channel",
            ),
            RelayError::InsufficientQuota(_) => (
                StatusCode::FORBIDDEN,
                "insufficient_quota",
                "insufficient_user_quota",
            ),
            RelayError::Upstream(_) => {
                (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error")
            }
            RelayError::UpstreamTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            RelayError::UpstreamRejected { status, body } => {
                return OpenAiError {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
                    kind: "invalid_request_error",
                    code: None,
                    message,
                    raw: Some(body),
                    retry_after: None,
                };
            }
            RelayError::RateLimited {
                retry_after_secs, ..
            } => {
                let mut e = OpenAiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    message,
                );
                e.retry_after = Some(retry_after_secs);
                return e;
            }
            RelayError::ChannelRateLimited {
                retry_after_secs, ..
            } => {
                let mut e = OpenAiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    "channel_rate_limited",
                    message,
                );
                e.retry_after = Some(retry_after_secs);
                return e;
            }
            RelayError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "service_unavailable",
            ),
            RelayError::Repo(r @ RepoError::Unavailable { .. }) => {
                tracing::error!(error = %r, detail = r.detail(), "database unavailable");
                return OpenAiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server_error",
                    "service_unavailable",
                    UNAVAILABLE_MESSAGE.into(),
                );
            }
            RelayError::Repo(r) => {
                tracing::error!(error = %r, detail = r.detail(), "relay storage failure");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                )
            }
        };
        OpenAiError::new(status, kind, code, message)
    }
}

/// An error answer of Anthropic's Messages API (`/v1/messages`), in Anthropic's shape
/// `{"type":"error","error":{"type","message"}}` with the statuses of SPEC §4, so the official
/// `anthropic` SDKs raise their matching exception.
#[derive(Debug)]
pub struct AnthropicError(OpenAiError);

impl From<OpenAiError> for AnthropicError {
    fn from(e: OpenAiError) -> Self {
        AnthropicError(e)
    }
}

/// An error of Anthropic's Messages API (`/v1/messages`), as sent.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AnthropicErrorBody<'a> {
    /// Always `error`.
    #[serde(rename = "type")]
    kind: &'static str,
    error: AnthropicErrorDetail<'a>,
}

/// The `error` of an Anthropic-format error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AnthropicErrorDetail<'a> {
    /// `invalid_request_error` (400, 413), `authentication_error` (401), `permission_error`
    /// (403: the balance), `not_found_error` (404), `rate_limit_error` (429), `api_error`
    /// (5xx).
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

impl fmt::Display for AnthropicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl ResponseError for AnthropicError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        // An upstream's own error was already put in Anthropic's shape by the gateway.
        if let Some(raw) = &self.0.raw {
            return HttpResponse::build(self.0.status)
                .content_type("application/json")
                .body(raw.clone());
        }
        let mut res = HttpResponse::build(self.0.status);
        if let Some(secs) = self.0.retry_after {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        res.json(AnthropicErrorBody {
            kind: "error",
            error: AnthropicErrorDetail {
                kind: tollgate_relay::anthropic::error_type_for_status(self.0.status.as_u16()),
                message: &self.0.message,
            },
        })
    }
}

impl fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code.unwrap_or("-"),
            self.message
        )
    }
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        if let Some(raw) = &self.raw {
            return HttpResponse::build(self.status)
                .content_type("application/json")
                .body(raw.clone());
        }
        let mut res = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            res.insert_header((actix_web::http::header::RETRY_AFTER, secs.to_string()));
        }
        res.json(OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: &self.message,
                kind: self.kind,
                param: None,
                code: self.code,
            },
        })
    }
}
