//! The client JSON format of the external user API: request bodies (unknown fields refused,
//! numbers kept as their decimal text) and response bodies, with explicit conversions from and
//! to domain types. Money goes out as exact JSON numbers built from decimal text.
//!
//! Every type here also derives its OpenAPI schema (`utoipa`), so `/openapi.json` describes the
//! JSON these types actually read and write. Request fields are optional in Rust because a
//! missing one must fail with the validator's text; the schema marks the ones the rules require.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Number;
use std::collections::BTreeMap;
use std::str::FromStr;
use tollgate_domain::Quota;
use tollgate_domain::channel::{Channel, ChannelInput};
use tollgate_domain::logs::{LogEntry, LogPage, LogQueryInput, ModelUsage};
use tollgate_domain::pricing::{Price, PriceInput};
use tollgate_domain::service::{UserLogs, UserStats};
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{DeleteTokenInput, IssuedToken, Token, TokenInput};
use tollgate_domain::topup::{NumberInput, TopUpInput, TopUpResult};
use tollgate_domain::user::{SyncOutcome, SyncUserInput};
use tollgate_relay::gateway::ChannelTest;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// A JSON number, parsed from its text (never through a float).
#[derive(Debug, Clone, Copy)]
pub struct JsonNumber(NumberInput);

impl<'de> Deserialize<'de> for JsonNumber {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = Number::deserialize(d)?;
        NumberInput::parse(&n.to_string())
            .map(JsonNumber)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid number {n}")))
    }
}

/// A JSON integer; integers beyond 64 bits saturate (and then fail their range rule), a
/// fractional value is a type error.
#[derive(Debug, Clone, Copy)]
pub struct JsonInt(i64);

impl<'de> Deserialize<'de> for JsonInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let JsonNumber(n) = JsonNumber::deserialize(d)?;
        let saturated = |negative: bool| JsonInt(if negative { i64::MIN } else { i64::MAX });
        match n {
            NumberInput::Exact(v) if v.fract().is_zero() => {
                Ok(i64::try_from(v).map_or_else(|_| saturated(v.is_sign_negative()), JsonInt))
            }
            NumberInput::Huge { negative } => Ok(saturated(negative)),
            _ => Err(serde::de::Error::custom(
                "invalid type: fractional number, expected an integer",
            )),
        }
    }
}

/// An exact USD amount as a JSON number: printed from decimal text on the way out, read from
/// its text on the way in (the request fields of type [`JsonNumber`]).
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Usd(Number);

impl PartialSchema for Usd {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .description(Some(
                "US dollars as an exact decimal JSON number (1 USD = 500,000 quota; read from \
                 and written as decimal text, never through a binary float)",
            ))
            .into()
    }
}

impl ToSchema for Usd {}

impl From<Number> for Usd {
    fn from(n: Number) -> Self {
        Usd(n)
    }
}

/// `POST /sync` body: creates the user, or updates the fields present.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// The platform's id of the user (at most 100 characters, matched byte for byte).
    #[schema(required = true, value_type = String)]
    external_user_id: Option<String>,
    /// At most 50 characters.
    #[schema(required = true, value_type = String)]
    username: Option<String>,
    display_name: Option<String>,
    email: Option<String>,
    phone: Option<String>,
    /// `email`, `wechat`, `alipay`, `sms` or `google`.
    login_type: Option<String>,
}

impl From<SyncRequest> for SyncUserInput {
    fn from(r: SyncRequest) -> Self {
        SyncUserInput {
            external_user_id: r.external_user_id,
            username: r.username,
            display_name: r.display_name,
            email: r.email,
            phone: r.phone,
            login_type: r.login_type,
        }
    }
}

/// `POST /topup` body. A `payment_id` credits once per platform, forever.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TopUpRequest {
    #[schema(required = true, value_type = String)]
    external_user_id: Option<String>,
    /// 0.01 to 100,000 USD.
    #[schema(required = true, value_type = Usd)]
    amount_usd: Option<JsonNumber>,
    /// The platform's payment id (at most 200 characters).
    #[schema(required = true, value_type = String)]
    payment_id: Option<String>,
}

impl From<TopUpRequest> for TopUpInput {
    fn from(r: TopUpRequest) -> Self {
        TopUpInput {
            external_user_id: r.external_user_id,
            amount_usd: r.amount_usd.map(|JsonNumber(n)| n),
            payment_id: r.payment_id,
        }
    }
}

/// `POST /token` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(required = true, value_type = String)]
    external_user_id: Option<String>,
    #[schema(required = true, value_type = String)]
    token_name: Option<String>,
    /// 1 to 3650; absent or 0 means 365 days.
    #[schema(value_type = Option<i64>)]
    expires_in_days: Option<JsonInt>,
    /// The key's own spending cap (absent: the user's balance only).
    #[schema(value_type = Option<Usd>)]
    quota_limit_usd: Option<JsonNumber>,
    /// Calls admitted in any 60 seconds.
    #[schema(value_type = Option<i64>)]
    rpm_limit: Option<JsonInt>,
    /// Tokens in any 60 seconds.
    #[schema(value_type = Option<i64>)]
    tpm_limit: Option<JsonInt>,
    /// Calls in flight.
    #[schema(value_type = Option<i64>)]
    max_concurrency: Option<JsonInt>,
}

impl From<TokenRequest> for TokenInput {
    fn from(r: TokenRequest) -> Self {
        TokenInput {
            external_user_id: r.external_user_id,
            token_name: r.token_name,
            expires_in_days: r.expires_in_days.map(|JsonInt(d)| d),
            quota_limit_usd: r.quota_limit_usd.map(|JsonNumber(n)| n),
            rpm_limit: r.rpm_limit.map(|JsonInt(n)| n),
            tpm_limit: r.tpm_limit.map(|JsonInt(n)| n),
            max_concurrency: r.max_concurrency.map(|JsonInt(n)| n),
        }
    }
}

/// `DELETE /token` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteTokenRequest {
    #[schema(required = true, value_type = String)]
    external_user_id: Option<String>,
    #[schema(required = true, value_type = i64)]
    token_id: Option<JsonInt>,
}

impl From<DeleteTokenRequest> for DeleteTokenInput {
    fn from(r: DeleteTokenRequest) -> Self {
        DeleteTokenInput {
            external_user_id: r.external_user_id,
            token_id: r.token_id.map(|JsonInt(i)| i),
        }
    }
}

/// `GET /{id}/logs` query string.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// `YYYY-MM-DD` (UTC), inclusive.
    start_date: Option<String>,
    /// `YYYY-MM-DD` (UTC), inclusive.
    end_date: Option<String>,
    /// A substring of the model name (`%` and `_` are literal).
    model_name: Option<String>,
    /// `consume` or `topup`.
    #[serde(rename = "type")]
    kind: Option<String>,
    /// From 1 (default 1).
    #[param(value_type = Option<u64>)]
    page: Option<String>,
    /// 1 to 100 (default 20).
    #[param(value_type = Option<u64>)]
    page_size: Option<String>,
}

impl From<LogsQuery> for LogQueryInput {
    fn from(q: LogsQuery) -> Self {
        LogQueryInput {
            start_date: q.start_date,
            end_date: q.end_date,
            model_name: q.model_name,
            kind: q.kind,
            page: q.page,
            page_size: q.page_size,
        }
    }
}

/// USD as an exact JSON number.
#[expect(
    clippy::expect_used,
    reason = "a normalised Decimal prints plain digits, always valid JSON number text; \
              a silent fallback would show a wrong amount"
)]
fn usd_number(d: rust_decimal::Decimal) -> Number {
    Number::from_str(&d.normalize().to_string()).expect("decimal text is a JSON number")
}

fn usd(q: Quota) -> Usd {
    Usd(usd_number(q.to_usd()))
}

/// Success envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T: Serialize> {
    /// Always `true`.
    success: bool,
    /// A short text for people (may be empty).
    message: &'static str,
    data: T,
}

impl<T: Serialize> Envelope<T> {
    /// `{"success":true,"message":…,"data":…}`.
    pub fn ok(message: &'static str, data: T) -> Self {
        Envelope {
            success: true,
            message,
            data,
        }
    }
}

/// `POST /sync` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct SyncData {
    user_id: i64,
    external_user_id: String,
    username: String,
    quota: i64,
    is_new_user: bool,
}

impl From<SyncOutcome> for SyncData {
    fn from(o: SyncOutcome) -> Self {
        SyncData {
            user_id: o.user.id.get(),
            external_user_id: o.user.external_user_id.as_str().to_owned(),
            username: o.user.username,
            quota: o.user.quota.get(),
            is_new_user: o.created,
        }
    }
}

/// `POST /topup` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopUpData {
    user_id: i64,
    external_user_id: String,
    amount_usd: Usd,
    quota_added: i64,
    /// The balance after this credit (a replay answers the first answer's value).
    current_quota: i64,
    current_balance: Usd,
    payment_id: String,
    /// `true` when this `payment_id` had already been credited: nothing was added now.
    idempotent_replay: bool,
}

impl From<TopUpResult> for TopUpData {
    fn from(r: TopUpResult) -> Self {
        let t = r.receipt;
        TopUpData {
            user_id: t.user_id.get(),
            external_user_id: t.external_user_id.as_str().to_owned(),
            amount_usd: Usd(usd_number(t.amount_usd)),
            quota_added: t.quota_added.get(),
            current_quota: t.quota_after.get(),
            current_balance: usd(t.quota_after),
            payment_id: t.payment_id.as_str().to_owned(),
            idempotent_replay: r.replay,
        }
    }
}

/// `POST /token` data: the only response that carries the full key.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedTokenData {
    token_id: i64,
    /// `sk-` and 48 characters, shown only here.
    access_key: String,
    token_name: String,
    expires_at: i64,
    remain_quota: i64,
}

impl From<IssuedToken> for IssuedTokenData {
    fn from(t: IssuedToken) -> Self {
        IssuedTokenData {
            token_id: t.token.id.get(),
            access_key: t.key.expose().to_owned(),
            token_name: t.token.name,
            expires_at: t.token.expires_at.secs(),
            remain_quota: t.remain_quota.get(),
        }
    }
}

/// `DELETE /token` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedTokenData {
    /// Deleted token.
    pub token_id: i64,
    /// Its owner.
    pub external_user_id: String,
}

/// A token in stats, key masked.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    token_id: i64,
    token_name: String,
    /// Masked: `sk-abcd...wxyz`.
    access_key: String,
    /// 1 enabled, 2 disabled, 3 expired, 4 exhausted.
    status: u8,
    created_time: i64,
    expired_time: i64,
    remain_quota: i64,
    quota_limit: Option<i64>,
    used_quota: i64,
    rpm_limit: Option<u32>,
    tpm_limit: Option<u64>,
    max_concurrency: Option<u32>,
}

impl TokenView {
    /// The key at `now`, masked, with what it can still spend out of `balance`.
    #[must_use]
    pub fn new(t: Token, balance: Quota, now: UnixTime) -> Self {
        TokenView {
            token_id: t.id.get(),
            access_key: t.hint.masked(),
            status: t.status(now) as u8,
            created_time: t.created_at.secs(),
            expired_time: t.expires_at.secs(),
            remain_quota: t.remain_quota(balance).get(),
            quota_limit: t.quota_limit.map(Quota::get),
            used_quota: t.used_quota.get(),
            rpm_limit: t.limits.rpm,
            tpm_limit: t.limits.tpm,
            max_concurrency: t.limits.concurrency,
            token_name: t.name,
        }
    }
}

/// A row of the log: a settled call (`consume`) or a credit (`topup`).
#[derive(Debug, Serialize, ToSchema)]
pub struct LogView {
    id: i64,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    time: String,
    /// `consume` or `topup`.
    #[serde(rename = "type")]
    kind: &'static str,
    model: String,
    token_name: String,
    prompt_tokens: i64,
    completion_tokens: i64,
    tokens: i64,
    quota: i64,
    /// Positive on both row types (a top-up's is the amount credited).
    spend: Usd,
    request_id: String,
    is_stream: bool,
    latency_ms: i64,
}

impl From<LogEntry> for LogView {
    fn from(e: LogEntry) -> Self {
        LogView {
            id: e.id.get(),
            time: e.created_at.to_string(),
            kind: e.kind.name(),
            tokens: e.prompt_tokens.saturating_add(e.completion_tokens),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            quota: e.quota.get(),
            spend: usd(e.quota),
            model: e.model,
            token_name: e.token_name,
            request_id: e.request_id,
            is_stream: e.is_stream,
            latency_ms: e.latency_ms,
        }
    }
}

/// Per-model usage in stats.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelUsageView {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    quota: i64,
    spend: Usd,
}

impl From<&ModelUsage> for ModelUsageView {
    fn from(m: &ModelUsage) -> Self {
        ModelUsageView {
            requests: m.requests,
            prompt_tokens: m.prompt_tokens,
            completion_tokens: m.completion_tokens,
            quota: m.quota.get(),
            spend: usd(m.quota),
        }
    }
}

/// What the balance buys of one model, in tokens of each kind (`null`: unlimited, a free
/// price).
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelCapacityView {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
}

/// `user_info` of stats.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserInfoView {
    external_user_id: String,
    username: String,
    display_name: String,
    email: String,
    current_quota: i64,
    current_balance: Usd,
    used_quota: i64,
    total_requests: i64,
    /// What the user can still start spending: the balance minus calls in flight.
    balance_capacity: Usd,
    /// Per served model.
    model_capacity: BTreeMap<String, ModelCapacityView>,
}

/// `GET /{id}/stats` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsData {
    user_info: UserInfoView,
    tokens: Vec<TokenView>,
    /// The last 10 consume rows.
    recent_logs: Vec<LogView>,
    model_usage: BTreeMap<String, ModelUsageView>,
}

impl StatsData {
    /// Builds the stats view at `now`.
    #[must_use]
    pub fn new(s: UserStats, now: UnixTime, served: &BTreeMap<String, Price>) -> Self {
        let balance = s.user.quota;
        let capacity = s.balance_capacity();
        let balance_capacity = usd(capacity);
        let model_capacity = s
            .model_capacity(served)
            .into_iter()
            .map(|(m, (input_tokens, output_tokens))| {
                (
                    m,
                    ModelCapacityView {
                        input_tokens,
                        output_tokens,
                    },
                )
            })
            .collect();
        let model_usage = s
            .model_usage
            .iter()
            .map(|m| (m.model.clone(), ModelUsageView::from(m)))
            .collect();
        StatsData {
            user_info: UserInfoView {
                external_user_id: s.user.external_user_id.as_str().to_owned(),
                username: s.user.username,
                display_name: s.user.display_name,
                email: s.user.email,
                current_quota: balance.get(),
                current_balance: usd(balance),
                used_quota: s.user.used_quota.get(),
                total_requests: s.user.total_requests,
                balance_capacity,
                model_capacity,
            },
            tokens: s
                .tokens
                .into_iter()
                // What a key can spend now: the balance minus holds in flight, or its cap.
                .map(|t| TokenView::new(t, capacity, now))
                .collect(),
            recent_logs: s.recent_logs.into_iter().map(LogView::from).collect(),
            model_usage,
        }
    }
}

/// `pagination` of logs.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    page: u64,
    page_size: u64,
    total: u64,
    total_page: u64,
}

/// `summary` of logs: the whole filtered range, not one page.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    total_tokens: i64,
    /// Consume rows only.
    total_spend: Usd,
    /// Top-up rows only.
    total_topup: Usd,
}

/// `GET /{id}/logs` data, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsData {
    logs: Vec<LogView>,
    pagination: Pagination,
    summary: Summary,
}

impl From<UserLogs> for LogsData {
    fn from(l: UserLogs) -> Self {
        let UserLogs { query, page } = l;
        let total_page = page.total_pages(query.page_size);
        let LogPage {
            entries,
            total,
            summary,
        } = page;
        LogsData {
            logs: entries.into_iter().map(LogView::from).collect(),
            pagination: Pagination {
                page: query.page,
                page_size: query.page_size,
                total,
                total_page,
            },
            summary: Summary {
                total_tokens: summary.total_tokens,
                total_spend: usd(summary.consumed),
                total_topup: usd(summary.topped_up),
            },
        }
    }
}

/// `POST /channels` and `PUT /channels/{id}` body (on `PUT`, absent fields keep their value).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    /// Required when creating.
    name: Option<String>,
    /// Required when creating: `openai`, `dashscope`, `deepseek`, `openai_compatible`,
    /// `anthropic`, `gemini` (or `echo`, a local test channel).
    #[serde(rename = "type")]
    kind: Option<String>,
    /// Including the version path (`…/v1`); default per type.
    base_url: Option<String>,
    /// The provider's key (required when creating, except for types that need none): stored
    /// encrypted when `TOLLGATE_SECRET_KEY` is set, never shown.
    key: Option<String>,
    /// Required when creating: public model names, each with a price.
    models: Option<Vec<String>>,
    /// Public name → the upstream's name.
    model_mapping: Option<BTreeMap<String, String>>,
    /// Higher first.
    #[schema(value_type = Option<i64>)]
    priority: Option<JsonInt>,
    /// Weighted random within a priority.
    #[schema(value_type = Option<i64>)]
    weight: Option<JsonInt>,
    /// The upstream account's requests per minute.
    #[schema(value_type = Option<i64>)]
    rpm_limit: Option<JsonInt>,
    /// The upstream account's tokens per minute.
    #[schema(value_type = Option<i64>)]
    tpm_limit: Option<JsonInt>,
}

impl From<ChannelRequest> for ChannelInput {
    fn from(r: ChannelRequest) -> Self {
        ChannelInput {
            name: r.name,
            kind: r.kind,
            base_url: r.base_url,
            key: r.key,
            models: r.models,
            model_mapping: r.model_mapping,
            priority: r.priority.map(|JsonInt(v)| v),
            weight: r.weight.map(|JsonInt(v)| v),
            rpm_limit: r.rpm_limit.map(|JsonInt(v)| v),
            tpm_limit: r.tpm_limit.map(|JsonInt(v)| v),
        }
    }
}

/// A channel as the admin API shows it: everything but the key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelView {
    id: i64,
    name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    base_url: String,
    /// Whether a key is stored (the key itself is never returned).
    has_key: bool,
    models: Vec<String>,
    model_mapping: BTreeMap<String, String>,
    priority: i64,
    weight: u32,
    rpm_limit: Option<u32>,
    tpm_limit: Option<u64>,
    /// `enabled`, `disabled` (by an admin) or `auto_disabled` (by Tollgate, probed to come
    /// back).
    status: &'static str,
    disabled_reason: String,
    created_at: i64,
    updated_at: i64,
}

impl From<Channel> for ChannelView {
    fn from(c: Channel) -> Self {
        ChannelView {
            id: c.id.get(),
            name: c.spec.name,
            kind: c.spec.kind.as_str(),
            base_url: c.spec.base_url,
            has_key: !c.spec.key.is_empty(),
            models: c
                .spec
                .models
                .iter()
                .map(|m| m.as_str().to_owned())
                .collect(),
            model_mapping: c.spec.model_mapping,
            priority: c.spec.priority,
            weight: c.spec.weight,
            rpm_limit: c.spec.limits.rpm,
            tpm_limit: c.spec.limits.tpm,
            status: c.status.as_str(),
            disabled_reason: c.disabled_reason,
            created_at: c.created_at.secs(),
            updated_at: c.updated_at.secs(),
        }
    }
}

/// `DELETE /channels/{id}` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedChannelData {
    /// The deleted channel.
    pub id: i64,
}

/// `POST /channels/{id}/test` data.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelTestView {
    ok: bool,
    status: Option<u16>,
    latency_ms: u64,
    message: String,
}

impl From<ChannelTest> for ChannelTestView {
    fn from(t: ChannelTest) -> Self {
        ChannelTestView {
            ok: t.ok,
            status: t.status,
            latency_ms: t.latency_ms,
            message: t.message,
        }
    }
}

/// `PUT /pricing/{model}` body: USD per 1M tokens.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    #[schema(required = true, value_type = Usd)]
    input: Option<JsonNumber>,
    #[schema(required = true, value_type = Usd)]
    output: Option<JsonNumber>,
    /// Defaults to `input`.
    #[schema(value_type = Option<Usd>)]
    cached_input: Option<JsonNumber>,
}

impl From<PriceRequest> for PriceInput {
    fn from(r: PriceRequest) -> Self {
        PriceInput {
            input: r.input.map(|JsonNumber(n)| n),
            output: r.output.map(|JsonNumber(n)| n),
            cached_input: r.cached_input.map(|JsonNumber(n)| n),
        }
    }
}

/// A price, USD per 1M tokens, as exact JSON numbers.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceView {
    input: Usd,
    output: Usd,
    cached_input: Usd,
}

impl From<&Price> for PriceView {
    fn from(p: &Price) -> Self {
        PriceView {
            input: Usd(usd_number(p.input())),
            output: Usd(usd_number(p.output())),
            cached_input: Usd(usd_number(p.cached_input())),
        }
    }
}

/// An entry of the external API's `GET /models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelPriceView {
    model: String,
    #[serde(flatten)]
    price: PriceView,
}

impl ModelPriceView {
    /// A served model and its price.
    #[must_use]
    pub fn new(model: &str, price: &Price) -> Self {
        ModelPriceView {
            model: model.to_owned(),
            price: PriceView::from(price),
        }
    }
}
