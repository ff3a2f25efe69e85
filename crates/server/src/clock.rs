//! The wall clock, read in one place; the domain takes `now` as an argument.

use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_domain::time::UnixTime;

/// The current UTC time in whole seconds.
#[must_use]
pub fn now() -> UnixTime {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    UnixTime::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
}
