//! The HTTP face of every failure: status, machine-readable `code` and message, in the envelope
//! `{"success":false,"message":…,"code":…}`. Domain and storage errors are mapped here and only
//! here; storage detail is logged, never sent.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use std::fmt;
use tollgate_domain::DomainError;
use tollgate_domain::validation::PREFIX;

/// An error answer of the external user API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    success: bool,
    message: &'a str,
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
        HttpResponse::build(self.status).json(Body {
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
            DomainError::PaymentIdConflict => (
                StatusCode::CONFLICT,
                "payment_id_conflict",
                "该支付ID已处理，请勿重复提交".to_owned(),
            ),
            DomainError::Repo(r) => return ApiError::internal(&r.detail()),
        };
        ApiError {
            status,
            code,
            message,
        }
    }
}
