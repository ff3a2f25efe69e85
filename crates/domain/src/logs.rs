//! The per-user log: one row per settled LLM call (`consume`) and per top-up (`topup`), the
//! validated query of `GET /{id}/logs`, and the aggregates shown in stats.

use crate::ids::{ChannelId, LogId, TokenId, UserId};
use crate::quota::Quota;
use crate::time::{Date, UnixTime};
use crate::validation::ValidationErrors;

/// Kind of a log row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// A credit.
    TopUp,
    /// A settled LLM call.
    Consume,
}

impl LogKind {
    /// Every kind: a read of all of a user's rows walks one index range per kind (there is no
    /// user-led index without the kind; see storage's admin reads).
    pub const ALL: [LogKind; 2] = [LogKind::TopUp, LogKind::Consume];

    /// Stored code (the Go fork's numbers: 1 top-up, 2 consume).
    #[must_use]
    pub const fn code(self) -> i16 {
        match self {
            LogKind::TopUp => 1,
            LogKind::Consume => 2,
        }
    }

    /// From the stored code.
    #[must_use]
    pub const fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(LogKind::TopUp),
            2 => Some(LogKind::Consume),
            _ => None,
        }
    }

    /// API name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            LogKind::TopUp => "topup",
            LogKind::Consume => "consume",
        }
    }
}

/// A log row. Never holds prompt or completion text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Id.
    pub id: LogId,
    /// Owner.
    pub user_id: UserId,
    /// Kind.
    pub kind: LogKind,
    /// When it happened.
    pub created_at: UnixTime,
    /// Model (empty for top-ups).
    pub model: String,
    /// Key used (none for top-ups).
    pub token_id: Option<TokenId>,
    /// Name of the key at the time.
    pub token_name: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Quota charged (consume) or credited (top-up); never negative.
    pub quota: Quota,
    /// Request id (the `payment_id` for top-ups).
    pub request_id: String,
    /// Whether the call streamed.
    pub is_stream: bool,
    /// Call latency.
    pub latency_ms: i64,
}

/// A new log row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLogEntry {
    /// Owner.
    pub user_id: UserId,
    /// Kind.
    pub kind: LogKind,
    /// When.
    pub created_at: UnixTime,
    /// Model.
    pub model: String,
    /// Key.
    pub token_id: Option<TokenId>,
    /// Key name.
    pub token_name: String,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Quota.
    pub quota: Quota,
    /// Request id.
    pub request_id: String,
    /// Streamed.
    pub is_stream: bool,
    /// Latency.
    pub latency_ms: i64,
    /// The channel whose answer was billed (consume rows only).
    pub channel_id: Option<ChannelId>,
}

impl NewLogEntry {
    /// The row of a top-up: the credited quota, with the payment id as request id.
    #[must_use]
    pub fn top_up(user_id: UserId, quota: Quota, payment_id: &str, at: UnixTime) -> Self {
        NewLogEntry {
            user_id,
            kind: LogKind::TopUp,
            created_at: at,
            model: String::new(),
            token_id: None,
            token_name: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            quota,
            request_id: payment_id.to_owned(),
            is_stream: false,
            latency_ms: 0,
            channel_id: None,
        }
    }

    /// The row as stored under `id`.
    #[must_use]
    pub fn stored(self, id: LogId) -> LogEntry {
        LogEntry {
            id,
            user_id: self.user_id,
            kind: self.kind,
            created_at: self.created_at,
            model: self.model,
            token_id: self.token_id,
            token_name: self.token_name,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            quota: self.quota,
            request_id: self.request_id,
            is_stream: self.is_stream,
            latency_ms: self.latency_ms,
        }
    }
}

/// Query string of `GET /{id}/logs` as received.
#[derive(Debug, Default, Clone)]
pub struct LogQueryInput {
    /// `start_date` (`YYYY-MM-DD`).
    pub start_date: Option<String>,
    /// `end_date` (`YYYY-MM-DD`, inclusive).
    pub end_date: Option<String>,
    /// `model_name` substring.
    pub model_name: Option<String>,
    /// `type`: `consume` or `topup`.
    pub kind: Option<String>,
    /// `page` (from 1).
    pub page: Option<String>,
    /// `page_size` (1–100).
    pub page_size: Option<String>,
}

/// A validated log query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Rows at or after this instant.
    pub from: Option<UnixTime>,
    /// Rows strictly before this instant.
    pub until: Option<UnixTime>,
    /// Model name contains this, literally (`%` and `_` are plain characters).
    pub model_contains: Option<String>,
    /// Only this kind.
    pub kind: Option<LogKind>,
    /// Page, from 1.
    pub page: u64,
    /// Rows per page.
    pub page_size: u64,
}

/// Largest page number accepted (keeps offsets far from overflow).
pub const MAX_PAGE: u64 = 1_000_000;
/// Largest page size.
pub const MAX_PAGE_SIZE: u64 = 100;

impl LogQueryInput {
    /// Validates the query; invalid values are a 400, never silently ignored.
    pub fn into_query(self) -> Result<LogQuery, ValidationErrors> {
        const S: &str = "ExternalUserLogsQuery";
        let fail = |field, tag| ValidationErrors::single(S, field, tag);
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let date = |v: Option<String>, field| {
            non_empty(v)
                .map(|s| Date::parse(&s).ok_or_else(|| fail(field, "datetime")))
                .transpose()
        };
        let start = date(self.start_date, "StartDate")?;
        let end = date(self.end_date, "EndDate")?;
        if let (Some(s), Some(e)) = (start, end)
            && s > e
        {
            return Err(fail("EndDate", "gtefield"));
        }
        let model_contains = non_empty(self.model_name);
        if model_contains
            .as_ref()
            .is_some_and(|m| m.chars().count() > 100)
        {
            return Err(fail("ModelName", "max"));
        }
        let kind = match non_empty(self.kind).as_deref() {
            None => None,
            Some("consume") => Some(LogKind::Consume),
            Some("topup") => Some(LogKind::TopUp),
            Some(_) => return Err(fail("Type", "oneof")),
        };
        let number = |v: Option<String>, field, default, max| -> Result<u64, ValidationErrors> {
            let Some(s) = non_empty(v) else {
                return Ok(default);
            };
            if !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(
                    field,
                    if s.starts_with('-') { "min" } else { "number" },
                ));
            }
            match s.parse::<u64>() {
                Ok(0) => Err(fail(field, "min")),
                Ok(n) if n <= max => Ok(n),
                _ => Err(fail(field, "max")),
            }
        };
        Ok(LogQuery {
            from: start.map(Date::start),
            until: end.map(Date::end_exclusive),
            model_contains,
            kind,
            page: number(self.page, "Page", 1, MAX_PAGE)?,
            page_size: number(self.page_size, "PageSize", 20, MAX_PAGE_SIZE)?,
        })
    }
}

impl LogQuery {
    /// Rows to skip.
    #[must_use]
    pub fn offset(&self) -> u64 {
        (self.page - 1) * self.page_size
    }
}

/// Totals over the whole filtered range (not one page).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogSummary {
    /// Prompt plus completion tokens of consume rows.
    pub total_tokens: i64,
    /// Quota charged by consume rows.
    pub consumed: Quota,
    /// Quota credited by top-up rows.
    pub topped_up: Quota,
}

/// One page of a log query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPage {
    /// Rows, newest first.
    pub entries: Vec<LogEntry>,
    /// Rows matching the filter.
    pub total: u64,
    /// Totals over the filter.
    pub summary: LogSummary,
}

impl LogPage {
    /// Pages needed for `total` rows.
    #[must_use]
    pub fn total_pages(&self, page_size: u64) -> u64 {
        self.total.div_ceil(page_size.max(1))
    }
}

/// Usage of one model by one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelUsage {
    /// Model.
    pub model: String,
    /// Settled calls.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
    /// Quota charged.
    pub quota: Quota,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(f: impl FnOnce(&mut LogQueryInput)) -> Result<LogQuery, String> {
        let mut i = LogQueryInput::default();
        f(&mut i);
        i.into_query().map_err(|e| e.fields()[0].tag.clone())
    }

    #[test]
    fn all_kinds_are_every_stored_code() {
        let stored: Vec<i16> = (i16::MIN..=i16::MAX)
            .filter(|c| LogKind::from_code(*c).is_some())
            .collect();
        assert_eq!(stored, LogKind::ALL.map(LogKind::code).to_vec());
    }

    #[test]
    fn defaults_are_page_one_of_twenty() {
        let d = q(|_| {}).expect("valid");
        assert_eq!((d.page, d.page_size, d.offset()), (1, 20, 0));
    }

    #[test]
    fn bad_values_are_rejected() {
        assert_eq!(q(|i| i.page_size = Some("101".into())), Err("max".into()));
        assert_eq!(q(|i| i.page_size = Some("0".into())), Err("min".into()));
        assert_eq!(q(|i| i.page = Some("-1".into())), Err("min".into()));
        assert_eq!(q(|i| i.page = Some("abc".into())), Err("number".into()));
        assert_eq!(
            q(|i| i.page = Some("99999999999999999999999".into())),
            Err("max".into())
        );
        assert_eq!(
            q(|i| i.start_date = Some("invalid-date".into())),
            Err("datetime".into())
        );
        assert_eq!(q(|i| i.kind = Some("refund".into())), Err("oneof".into()));
        assert_eq!(
            q(|i| {
                i.start_date = Some("2024-02-02".into());
                i.end_date = Some("2024-02-01".into());
            }),
            Err("gtefield".into())
        );
    }

    #[test]
    fn end_date_is_inclusive() {
        let d = q(|i| {
            i.start_date = Some("2024-02-01".into());
            i.end_date = Some("2024-02-01".into());
        })
        .expect("valid");
        assert_eq!(
            d.until.map(|t| t.secs() - d.from.map_or(0, UnixTime::secs)),
            Some(86_400)
        );
    }
}
