//! Several instances, one truth: the ports through which Tollgate processes sharing one
//! database keep their caches and their holds straight.
//!
//! - **Change feed.** Every write that an in-memory cache depends on (a key, the channels, the
//!   prices) is published through [`ChangeFeed`] once its transaction has committed. The feed
//!   applies it to this instance's caches before returning, appends it to a [`ChangeLog`] in
//!   the database that every instance polls, and rings a [`Doorbell`] (Redis) so the others
//!   look at once. The doorbell makes propagation fast; the log makes it correct, with or
//!   without Redis.
//! - **Instance registry.** Each process registers an [`Instance`] and heartbeats; holds carry
//!   the instance that took them. The holds of an instance that stopped heartbeating (killed,
//!   powered off) are released by any live instance, and a restarted instance releases its
//!   predecessor's at once ([`InstanceRegistry`]).

use crate::error::RepoError;
use crate::ids::TokenId;
use crate::time::UnixTime;
use async_trait::async_trait;

/// Longest instance name.
pub const MAX_INSTANCE_NAME_CHARS: usize = 200;

/// One process's identity: random per start, so a restart is a new instance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// Length of an id (hex characters).
    pub const LEN: usize = 24;

    /// An id from 12 random bytes.
    #[must_use]
    pub fn from_random(bytes: [u8; 12]) -> Self {
        InstanceId(crate::ids::hex(&bytes))
    }

    /// An id read back from storage (any non-empty text of at most [`InstanceId::LEN`] ASCII
    /// characters).
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        (!s.is_empty() && s.len() <= Self::LEN && s.is_ascii()).then(|| InstanceId(s.to_owned()))
    }

    /// The id.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A running process: its id and the stable name of the place it runs (host and port), which
/// its next start shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// This start of the process.
    pub id: InstanceId,
    /// Where it runs, e.g. `gateway-1:3000` (unique among live instances).
    pub name: String,
}

impl Instance {
    /// An instance; the name is cut to [`MAX_INSTANCE_NAME_CHARS`] characters.
    #[must_use]
    pub fn new(id: InstanceId, name: &str) -> Self {
        Instance {
            id,
            name: name.chars().take(MAX_INSTANCE_NAME_CHARS).collect(),
        }
    }
}

/// A write that caches depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheChange {
    /// A key was created, deleted or changed.
    Token(TokenId),
    /// A channel was created, edited, deleted, enabled or disabled (by an admin or by
    /// Tollgate).
    Channels,
    /// A price was set.
    Prices,
}

impl CacheChange {
    /// `(kind, subject)` as stored.
    #[must_use]
    pub fn code(self) -> (i16, i64) {
        match self {
            CacheChange::Token(id) => (1, id.get()),
            CacheChange::Channels => (2, 0),
            CacheChange::Prices => (3, 0),
        }
    }

    /// The change a stored `(kind, subject)` names.
    #[must_use]
    pub fn from_code(kind: i16, subject: i64) -> Option<Self> {
        match kind {
            1 => Some(CacheChange::Token(TokenId::new(subject))),
            2 => Some(CacheChange::Channels),
            3 => Some(CacheChange::Prices),
            _ => None,
        }
    }
}

/// A change as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedChange {
    /// Position in the log (increasing).
    pub id: i64,
    /// What changed.
    pub change: CacheChange,
    /// The instance that published it.
    pub origin: String,
}

/// Where writes announce what they changed. Publishing never fails the write that already
/// committed: a change that cannot be logged is reported in the log file, and other instances
/// still converge through their periodic full reload.
#[async_trait]
pub trait ChangeFeed: Send + Sync {
    /// `change` has committed: apply it here, then tell every other instance.
    async fn publish(&self, change: CacheChange);
}

/// A feed for a process that caches nothing (tools, tests of the domain alone).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoFeed;

#[async_trait]
impl ChangeFeed for NoFeed {
    async fn publish(&self, _: CacheChange) {}
}

/// The database's log of changes, which every instance polls.
#[async_trait]
pub trait ChangeLog: Send + Sync {
    /// Appends a change; its position.
    async fn append_change(
        &self,
        change: CacheChange,
        origin: &InstanceId,
        at: UnixTime,
    ) -> Result<i64, RepoError>;

    /// Changes after position `after`, oldest first, at most `limit`.
    async fn changes_since(&self, after: i64, limit: u64) -> Result<Vec<LoggedChange>, RepoError>;

    /// The newest position (0 when the log is empty).
    async fn last_change_id(&self) -> Result<i64, RepoError>;

    /// Forgets changes logged before `before`; how many.
    async fn prune_changes(&self, before: UnixTime) -> Result<u64, RepoError>;
}

/// A fast, lossy signal between instances that the change log grew (Redis pub/sub). Never
/// required for correctness.
#[async_trait]
pub trait Doorbell: Send + Sync {
    /// Rings every instance (best effort).
    async fn ring(&self) -> Result<(), RepoError>;

    /// Waits for the next ring; an error when the bus cannot be reached (the caller polls the
    /// log meanwhile and tries again later).
    async fn wait(&self) -> Result<(), RepoError>;

    /// Whether the bus answers now.
    async fn ping(&self) -> Result<(), RepoError>;
}

/// What a reap found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reaped {
    /// Dead instances removed from the registry.
    pub instances: u64,
    /// Their holds released.
    pub holds: u64,
}

/// The registry of live instances, and the release of holds whose instance died.
#[async_trait]
pub trait InstanceRegistry: Send + Sync {
    /// Marks `me` alive now, registering it if it is not (its first heartbeat, or after it was
    /// reaped while the database was out of its reach).
    async fn heartbeat(&self, me: &Instance, now: UnixTime) -> Result<(), RepoError>;

    /// Removes `me` from the registry (graceful stop, after its settlements were written).
    async fn deregister(&self, me: &InstanceId) -> Result<(), RepoError>;

    /// Releases the holds in flight of every instance other than `me` that either has not
    /// heartbeated since `stale_before` or bears `me`'s name (a previous start of this
    /// process), and of instances no longer registered, then forgets those instances. A late
    /// settlement of such a hold still charges, once.
    async fn reap(&self, me: &Instance, stale_before: UnixTime) -> Result<Reaped, RepoError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_round_trip_through_their_codes() {
        for c in [
            CacheChange::Token(TokenId::new(42)),
            CacheChange::Channels,
            CacheChange::Prices,
        ] {
            let (kind, subject) = c.code();
            assert_eq!(CacheChange::from_code(kind, subject), Some(c));
        }
        assert_eq!(CacheChange::Token(TokenId::new(7)).code(), (1, 7));
        assert_eq!(CacheChange::Channels.code(), (2, 0));
        assert_eq!(CacheChange::Prices.code(), (3, 0));
        assert_eq!(CacheChange::from_code(9, 0), None);
    }

    #[test]
    fn instance_ids_and_names() {
        let id = InstanceId::from_random([0xab; 12]);
        assert_eq!(id.as_str().len(), InstanceId::LEN);
        assert_eq!(InstanceId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(InstanceId::parse(""), None);
        assert_eq!(InstanceId::parse(&"a".repeat(25)), None);
        let long = Instance::new(id, &"n".repeat(300));
        assert_eq!(long.name.chars().count(), MAX_INSTANCE_NAME_CHARS);
    }
}
