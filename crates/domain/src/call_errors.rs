//! Failed calls, the "errors" of the hourly usage report (SPEC §7): what the gateway counts as
//! one ([`CallFailure`]), the record it hands to storage ([`FailedCall`]) through
//! [`CallErrorRepository`](crate::repository::CallErrorRepository), and the hourly
//! [`ErrorTally`] storage keeps, so the stored count grows with hours, channels and kinds, never
//! with calls.
//!
//! A failed call is one client request that the gateway accepted (valid key, body and model,
//! within the key's limits, quota held) and that then did not get an answer, or got an error
//! from the upstream: it counts once, however many channels and retries it went through
//! (each attempt is already in the `tollgate_upstream_requests_total` metric). Requests refused
//! for the client's own reasons are not failed calls: a missing, unknown, expired or disabled
//! key, a body that does not parse, an unknown model, insufficient quota, the key's own rate
//! limits. Neither is a client that goes away. Two checks come before the client's own, so
//! their calls count whatever the client sent: a full settlement backlog (`Unavailable`,
//! refused before the body is read) and a model whose channels are all disabled (`NoChannel`,
//! refused before the key's limits and balance are looked at).

use crate::admin_read::HOUR;
use crate::ids::ChannelId;
use crate::time::UnixTime;
use std::collections::BTreeMap;

/// Why an accepted call failed. The stored codes ([`CallFailure::code`]) never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CallFailure {
    /// Every attempt failed: 5xx answers, connection errors, channel keys the upstream
    /// rejected (401/403), an answer that broke before it was read whole.
    Upstream,
    /// The upstream did not answer in time (after trying the other channels), or went silent
    /// while sending a whole (non-stream) answer.
    Timeout,
    /// A stream broke or went silent after it had started: the client got part of an answer
    /// (billed for what was delivered).
    Interrupted,
    /// The upstream refused the request with a 4xx other than 401, 403 and 429, and the client
    /// got that answer: valid for Tollgate, not for the upstream (a channel's wrong model
    /// mapping shows up here too).
    Refused,
    /// The model is listed only by disabled channels.
    NoChannel,
    /// Every channel of the model was at its own rate limit or resting after an upstream 429.
    RateLimited,
    /// Tollgate could not serve the call itself: its settlement backlog was full, or storage
    /// failed.
    Unavailable,
}

impl CallFailure {
    /// Every kind, in code order.
    pub const ALL: [CallFailure; 7] = [
        CallFailure::Upstream,
        CallFailure::Timeout,
        CallFailure::Interrupted,
        CallFailure::Refused,
        CallFailure::NoChannel,
        CallFailure::RateLimited,
        CallFailure::Unavailable,
    ];

    /// Stored code.
    #[must_use]
    pub const fn code(self) -> i16 {
        match self {
            CallFailure::Upstream => 1,
            CallFailure::Timeout => 2,
            CallFailure::Interrupted => 3,
            CallFailure::Refused => 4,
            CallFailure::NoChannel => 5,
            CallFailure::RateLimited => 6,
            CallFailure::Unavailable => 7,
        }
    }

    /// From the stored code (`None`: a kind written by a newer version).
    #[must_use]
    pub const fn from_code(code: i16) -> Option<Self> {
        match code {
            1 => Some(CallFailure::Upstream),
            2 => Some(CallFailure::Timeout),
            3 => Some(CallFailure::Interrupted),
            4 => Some(CallFailure::Refused),
            5 => Some(CallFailure::NoChannel),
            6 => Some(CallFailure::RateLimited),
            7 => Some(CallFailure::Unavailable),
            _ => None,
        }
    }

    /// Short name, for logs and metric labels.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            CallFailure::Upstream => "upstream",
            CallFailure::Timeout => "timeout",
            CallFailure::Interrupted => "interrupted",
            CallFailure::Refused => "refused",
            CallFailure::NoChannel => "no_channel",
            CallFailure::RateLimited => "rate_limited",
            CallFailure::Unavailable => "unavailable",
        }
    }
}

/// One failed call, as the gateway reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedCall {
    /// When it failed.
    pub at: UnixTime,
    /// The channel of its last attempt; `None` when no channel was tried.
    pub channel: Option<ChannelId>,
    /// What went wrong.
    pub kind: CallFailure,
}

/// The start of the UTC hour `t` falls in.
#[must_use]
pub fn hour_of(t: UnixTime) -> UnixTime {
    UnixTime::from_secs(t.secs() - t.secs().rem_euclid(HOUR))
}

/// Failed calls of one kind on one channel in one hour: what storage keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorTally {
    /// Start of the hour.
    pub hour: UnixTime,
    /// The channel (`None`: no channel was tried).
    pub channel: Option<ChannelId>,
    /// What went wrong.
    pub kind: CallFailure,
    /// Failed calls.
    pub calls: i64,
}

/// Counts `failures` per hour, channel and kind, ordered by those (the order storage takes
/// its row locks in, so concurrent batches cannot deadlock on each other).
#[must_use]
pub fn tally(failures: &[FailedCall]) -> Vec<ErrorTally> {
    let mut counts: BTreeMap<(UnixTime, Option<ChannelId>, CallFailure), i64> = BTreeMap::new();
    for f in failures {
        let n = counts
            .entry((hour_of(f.at), f.channel, f.kind))
            .or_default();
        *n = n.saturating_add(1);
    }
    counts
        .into_iter()
        .map(|((hour, channel, kind), calls)| ErrorTally {
            hour,
            channel,
            kind,
            calls,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_round_trip() {
        let codes: Vec<i16> = CallFailure::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes, vec![1, 2, 3, 4, 5, 6, 7]);
        for k in CallFailure::ALL {
            assert_eq!(CallFailure::from_code(k.code()), Some(k));
        }
        assert_eq!(CallFailure::from_code(0), None);
        assert_eq!(CallFailure::from_code(8), None);
        let names: Vec<&str> = CallFailure::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(
            names,
            vec![
                "upstream",
                "timeout",
                "interrupted",
                "refused",
                "no_channel",
                "rate_limited",
                "unavailable"
            ]
        );
    }

    #[test]
    fn hours_start_on_the_hour() {
        let h = |s| hour_of(UnixTime::from_secs(s)).secs();
        assert_eq!(h(0), 0);
        assert_eq!(h(HOUR - 1), 0);
        assert_eq!(h(HOUR), HOUR);
        assert_eq!(h(5 * HOUR + 1_234), 5 * HOUR);
        assert_eq!(h(-1), -HOUR);
    }

    #[test]
    fn a_batch_is_counted_per_hour_channel_and_kind_in_key_order() {
        let f = |at, channel: Option<i64>, kind| FailedCall {
            at: UnixTime::from_secs(at),
            channel: channel.map(ChannelId::new),
            kind,
        };
        let batch = [
            f(HOUR + 5, Some(2), CallFailure::Upstream),
            f(HOUR - 1, Some(2), CallFailure::Upstream),
            f(HOUR, Some(2), CallFailure::Upstream),
            f(2 * HOUR - 1, Some(2), CallFailure::Upstream),
            f(HOUR + 9, Some(1), CallFailure::Timeout),
            f(HOUR + 9, None, CallFailure::NoChannel),
            f(HOUR + 9, Some(2), CallFailure::Refused),
        ];
        let got: Vec<(i64, Option<i64>, CallFailure, i64)> = tally(&batch)
            .iter()
            .map(|t| {
                (
                    t.hour.secs(),
                    t.channel.map(ChannelId::get),
                    t.kind,
                    t.calls,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some(2), CallFailure::Upstream, 1),
                (HOUR, None, CallFailure::NoChannel, 1),
                (HOUR, Some(1), CallFailure::Timeout, 1),
                (HOUR, Some(2), CallFailure::Upstream, 3),
                (HOUR, Some(2), CallFailure::Refused, 1),
            ]
        );
        assert_eq!(tally(&[]), vec![]);
    }
}
