//! The [`RateLimiter`] on Redis: the same exact sliding window as `domain::ratelimit::Window`,
//! as atomic Lua scripts (one round trip per check), so instances sharing Redis admit together
//! what one would. Time is Redis's own clock (`TIME`), the same for every instance. Per
//! subject: a sorted set of the calls in the window (member `call|tokens`, score the admission
//! time in ms), a hash from call to member (to settle tokens), and a sorted set of concurrency
//! leases (score: expiry).

use async_trait::async_trait;
use deadpool_redis::Pool;
use std::time::Duration;
use tollgate_domain::RepoError;
use tollgate_domain::ratelimit::{
    Headroom, LEASE_MS, LimitKind, RateLimiter, RateLimits, Refusal, Subject, WINDOW_MS,
};

use crate::error::StorageError;

/// Longest wait for Redis on one check: past it the caller counts per instance instead.
pub const LIMIT_TIMEOUT: Duration = Duration::from_millis(500);

/// Admission. KEYS: calls, members, leases, total. ARGV: rpm, tpm, concurrency (0: none),
/// tokens, call, window ms, lease ms. Returns {1, remaining_requests, remaining_tokens} or
/// {0, kind (1 requests, 2 tokens, 3 concurrency), retry_after_ms}. Only what leaves the window
/// is walked and the token total has its own key, so an admitted call costs O(log n).
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rpm, tpm, conc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens, call = tonumber(ARGV[4]), ARGV[5]
local window, lease = tonumber(ARGV[6]), tonumber(ARGV[7])
local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
local freed = 0
for _, m in ipairs(old) do
  redis.call('HDEL', KEYS[2], string.match(m, '^([^|]*)'))
  freed = freed + tonumber(string.match(m, '|(%d+)$'))
end
if #old > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('DECRBY', KEYS[4], freed)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if conc > 0 and redis.call('ZCARD', KEYS[3]) >= conc then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local wait = tonumber(first[2]) - now
  if wait > 1000 then wait = 1000 end
  if wait < 1 then wait = 1 end
  return {0, 3, wait}
end
local count = redis.call('ZCARD', KEYS[1])
if rpm > 0 and count >= rpm then
  local leaving = redis.call('ZRANGE', KEYS[1], count - rpm, count - rpm, 'WITHSCORES')
  return {0, 1, tonumber(leaving[2]) + window - now}
end
local used = tonumber(redis.call('GET', KEYS[4]) or '0')
if used < 0 then used = 0 end
if tpm > 0 and used + tokens > tpm then
  -- Refused: only now walk the window, oldest first, for when enough tokens will have left.
  local entries = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  local left = used
  for i = 1, #entries, 2 do
    left = left - tonumber(string.match(entries[i], '|(%d+)$'))
    if left + tokens <= tpm then
      return {0, 2, tonumber(entries[i + 1]) + window - now}
    end
  end
  local last = now
  if #entries > 0 then last = tonumber(entries[#entries]) end
  return {0, 2, last + window - now}
end
local member = call .. '|' .. tokens
redis.call('ZADD', KEYS[1], now, member)
redis.call('HSET', KEYS[2], call, member)
redis.call('INCRBY', KEYS[4], tokens)
if conc > 0 then redis.call('ZADD', KEYS[3], now + lease, call) end
for i = 1, 4 do redis.call('PEXPIRE', KEYS[i], window + lease) end
local rr, rt = -1, -1
if rpm > 0 then rr = rpm - count - 1 end
if tpm > 0 then rt = tpm - used - tokens end
return {1, rr, rt}
";

/// Settlement. KEYS: calls, members, total. ARGV: call, tokens.
const SETTLE: &str = r"
local member = redis.call('HGET', KEYS[2], ARGV[1])
if not member then return 0 end
local score = redis.call('ZSCORE', KEYS[1], member)
if not score then return 0 end
local fresh = ARGV[1] .. '|' .. ARGV[2]
redis.call('ZREM', KEYS[1], member)
redis.call('ZADD', KEYS[1], score, fresh)
redis.call('HSET', KEYS[2], ARGV[1], fresh)
redis.call('INCRBY', KEYS[3], tonumber(ARGV[2]) - tonumber(string.match(member, '|(%d+)$')))
return 1
";

/// Lease renewal. KEYS: leases. ARGV: call, lease ms.
const RENEW: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
";

/// Rate limits shared by every instance on one Redis.
pub struct RedisLimiter {
    pool: Pool,
    admit: redis::Script,
    settle: redis::Script,
    renew: redis::Script,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> RepoError {
    RepoError::Unavailable {
        detail: format!("redis rate limit: {e}"),
    }
}

fn keys(subject: Subject) -> [String; 4] {
    // One hash tag per subject: the keys live on one node of a Redis cluster.
    let s = subject.name();
    [
        format!("tollgate:rl:{{{s}}}:calls"),
        format!("tollgate:rl:{{{s}}}:members"),
        format!("tollgate:rl:{{{s}}}:leases"),
        format!("tollgate:rl:{{{s}}}:total"),
    ]
}

impl RedisLimiter {
    /// A limiter on `url` (`redis://…`). Nothing connects yet.
    pub fn new(url: &str) -> Result<Self, StorageError> {
        let pool = crate::bus::pool(url, 32, LIMIT_TIMEOUT)?;
        Ok(RedisLimiter {
            pool,
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            renew: redis::Script::new(RENEW),
        })
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, RepoError> {
        let call = async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            invocation
                .invoke_async::<T>(&mut conn)
                .await
                .map_err(unavailable)
        };
        tokio::time::timeout(LIMIT_TIMEOUT, call)
            .await
            .map_err(|_| unavailable("timed out"))?
    }
}

#[async_trait]
impl RateLimiter for RedisLimiter {
    async fn admit(
        &self,
        subject: Subject,
        limits: &RateLimits,
        call: u64,
        tokens: u64,
    ) -> Result<Result<Headroom, Refusal>, RepoError> {
        let [calls, members, leases, total] = keys(subject);
        let mut inv = self.admit.prepare_invoke();
        inv.key(calls)
            .key(members)
            .key(leases)
            .key(total)
            .arg(limits.rpm.unwrap_or(0))
            .arg(limits.tpm.unwrap_or(0))
            .arg(limits.concurrency.unwrap_or(0))
            .arg(tokens)
            .arg(call)
            .arg(WINDOW_MS)
            .arg(LEASE_MS);
        let reply: Vec<i64> = self.invoke(inv).await?;
        match reply.as_slice() {
            [1, requests, tokens] => Ok(Ok(Headroom {
                remaining_requests: u64::try_from(*requests).ok(),
                remaining_tokens: u64::try_from(*tokens).ok(),
                reset_ms: WINDOW_MS,
            })),
            [0, kind, wait] => Ok(Err(Refusal {
                kind: match kind {
                    1 => LimitKind::Requests,
                    2 => LimitKind::Tokens,
                    _ => LimitKind::Concurrency,
                },
                retry_after_ms: (*wait).max(1),
            })),
            other => Err(unavailable(format!("unexpected reply {other:?}"))),
        }
    }

    async fn settle(&self, subject: Subject, call: u64, tokens: u64) -> Result<(), RepoError> {
        let [calls, members, _, total] = keys(subject);
        let mut inv = self.settle.prepare_invoke();
        inv.key(calls).key(members).key(total).arg(call).arg(tokens);
        self.invoke::<i64>(inv).await.map(|_| ())
    }

    async fn release(&self, subject: Subject, call: u64) -> Result<(), RepoError> {
        let [_, _, leases, _] = keys(subject);
        let cmd = redis::cmd("ZREM").arg(leases).arg(call).clone();
        let run = async {
            let mut conn = self.pool.get().await.map_err(unavailable)?;
            cmd.query_async::<i64>(&mut conn).await.map_err(unavailable)
        };
        tokio::time::timeout(LIMIT_TIMEOUT, run)
            .await
            .map_err(|_| unavailable("timed out"))?
            .map(|_| ())
    }

    async fn renew(&self, calls: &[(Subject, u64)]) -> Result<(), RepoError> {
        for (subject, call) in calls {
            let [_, _, leases, _] = keys(*subject);
            let mut inv = self.renew.prepare_invoke();
            inv.key(leases).arg(call).arg(LEASE_MS);
            self.invoke::<i64>(inv).await?;
        }
        Ok(())
    }
}
