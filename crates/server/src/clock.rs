//! The wall clock, read in one place; the domain takes `now` as an argument.

use std::time::SystemTime;
use tollgate_domain::time::UnixTime;

/// The current UTC time in whole seconds.
#[must_use]
pub fn now() -> UnixTime {
    UnixTime::from_system(SystemTime::now())
}
