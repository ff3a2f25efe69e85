//! Why a relayed call did not succeed, in terms the server maps to OpenAI-shaped errors.

use bytes::Bytes;
use tollgate_domain::RepoError;
use tollgate_domain::ratelimit::LimitKind;

/// A relay failure.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// No key, or a key Tollgate does not know (deleted keys included).
    #[error("无效的令牌")]
    InvalidKey,
    /// The key is past its expiry.
    #[error("令牌已过期")]
    TokenExpired,
    /// The key is switched off.
    #[error("令牌已被禁用")]
    TokenDisabled,
    /// The request body is not a valid chat-completions request.
    #[error("{0}")]
    InvalidRequest(String),
    /// No channel lists the model.
    #[error("模型 {0} 不存在")]
    ModelNotFound(String),
    /// Only disabled channels list the model.
    #[error("模型 {0} 当前没有可用的渠道")]
    NoAvailableChannel(String),
    /// The user's balance (or the key's cap) cannot cover the hold.
    #[error("{0}")]
    InsufficientQuota(&'static str),
    /// Every attempt failed (5xx, connection errors, rejected channel keys).
    #[error("上游服务出错: {0}")]
    Upstream(String),
    /// The upstream did not answer in time, after retries.
    #[error("上游服务超时")]
    UpstreamTimeout,
    /// The upstream refused the client's request (400/404/422…): its status and its error
    /// body, with the channel key removed.
    #[error("upstream refused the request with status {status}")]
    UpstreamRejected {
        /// Upstream status.
        status: u16,
        /// Upstream error body (JSON).
        body: Bytes,
    },
    /// Tollgate cannot take calls right now (its settlement backlog is full, say); nothing was
    /// held or sent.
    #[error("{0}")]
    Unavailable(&'static str),
    /// The key is over one of its rate limits: nothing was held or sent.
    #[error("{}", match kind {
        LimitKind::Requests => "请求过于频繁：超过该令牌每分钟请求数限制",
        LimitKind::Tokens => "请求过于频繁：超过该令牌每分钟 token 数限制",
        LimitKind::Concurrency => "请求过于频繁：超过该令牌的并发请求数限制",
    })]
    RateLimited {
        /// Which limit.
        kind: LimitKind,
        /// Seconds until a retry can be admitted.
        retry_after_secs: i64,
    },
    /// Every channel of the model is at its own limit or resting after an upstream 429.
    #[error("模型 {model} 的所有渠道都已达到速率限制，请稍后重试")]
    ChannelRateLimited {
        /// The model.
        model: String,
        /// Seconds until a channel takes calls again.
        retry_after_secs: i64,
    },
    /// Storage failed.
    #[error("服务暂时不可用")]
    Repo(#[from] RepoError),
}
