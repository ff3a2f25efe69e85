//! This instance's membership of the cluster: it heartbeats in the instance registry, and it
//! releases the holds of instances that stopped heartbeating (killed, powered off) — or, at
//! start-up, of its own previous start — so no money stays locked by a process that is gone.
//! With the default 30 s bound, a dead instance's holds are released within 40 s.

use crate::settle::now;
use std::sync::Arc;
use std::time::Duration;
use tollgate_domain::RepoError;
use tollgate_domain::cluster::{Instance, InstanceRegistry, Reaped};
use tollgate_domain::time::UnixTime;

/// Registry membership.
pub struct Membership {
    me: Instance,
    registry: Arc<dyn InstanceRegistry>,
    timeout: Duration,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("me", &self.me)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Membership {
    /// Membership of `me`; an instance silent for `timeout` counts as dead.
    #[must_use]
    pub fn new(me: Instance, registry: Arc<dyn InstanceRegistry>, timeout: Duration) -> Self {
        Membership {
            me,
            registry,
            timeout,
        }
    }

    /// This instance.
    #[must_use]
    pub fn me(&self) -> &Instance {
        &self.me
    }

    /// Registers this instance and releases what a previous start of it (same name) or a dead
    /// instance left held. Runs before the server takes its first call.
    pub async fn join(&self) -> Result<Reaped, RepoError> {
        self.registry.heartbeat(&self.me, now()).await?;
        self.reap().await
    }

    async fn reap(&self) -> Result<Reaped, RepoError> {
        let at = now();
        let stale_before = UnixTime::from_secs(
            at.secs()
                .saturating_sub(i64::try_from(self.timeout.as_secs()).unwrap_or(i64::MAX)),
        );
        let reaped = self.registry.reap(&self.me, stale_before).await?;
        if reaped.instances > 0 || reaped.holds > 0 {
            tracing::warn!(
                instances = reaped.instances,
                holds = reaped.holds,
                "released the holds of instances that stopped (killed or restarted)"
            );
        }
        Ok(reaped)
    }

    /// Heartbeats and reaps every third of the timeout until the process ends.
    pub fn run(self: &Arc<Self>) {
        let every = (self.timeout / 3).max(Duration::from_millis(500));
        let member = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = member.registry.heartbeat(&member.me, now()).await {
                    tracing::warn!(error = %e, detail = e.detail(), "heartbeat failed");
                    continue;
                }
                if let Err(e) = member.reap().await {
                    tracing::warn!(error = %e, detail = e.detail(), "releasing dead instances' holds failed");
                }
            }
        });
    }

    /// Leaves the registry (graceful stop, once settlements are written).
    pub async fn leave(&self) {
        if let Err(e) = self.registry.deregister(&self.me.id).await {
            tracing::warn!(error = %e, detail = e.detail(), "could not leave the instance registry; the others will reap this instance");
        }
    }
}
