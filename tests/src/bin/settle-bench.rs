//! The settlement batch on its own (issue 9): what one call's settlement costs the database
//! path — the process (SeaORM, sqlx, SQLite in-process) and, on MySQL/MariaDB, the server —
//! without HTTP, the relay or the load generator around it. A benchmark, not a test;
//! `scripts/bench/settle.sh` drives it:
//!
//! ```sh
//! settle-bench <database-url>   # BENCH_USERS (1000), BENCH_BATCH (256), BENCH_BATCHES (300),
//!                               # BENCH_SQL (statements, `;`-separated, run after the migrations)
//! ```
//!
//! It creates `BENCH_USERS` funded users with a key and a balance lease each, then writes
//! `BENCH_BATCHES` batches of `BENCH_BATCH` lease calls of randomly drawn users (as the
//! relay's settlement worker does under load), one after another, and prints the wall time
//! and CPU time a call: this process's (all its threads) and, when a `mariadbd` or `mysqld`
//! runs on this machine, the server's. Request ids are made like the relay's (the millisecond
//! first), as the log rows carry them.
#![expect(clippy::expect_used, reason = "a benchmark stops at the first failure")]

use std::time::Instant;
use tollgate_domain::Quota;
use tollgate_domain::billing::{BatchAttempt, Lease, LeaseGrowth, SettleOutcome, Settlement};
use tollgate_domain::cluster::InstanceId;
use tollgate_domain::ids::{TokenId, UserId};
use tollgate_domain::pricing::Usage;
use tollgate_domain::repository::{BillingRepository, LeaseRepository};
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::AccessKey;
use tollgate_storage::{SeaStore, testing};

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().expect("a whole number"))
        .unwrap_or(default)
}

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The pid of a running MariaDB or MySQL server, if any.
fn database_server() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().into_string().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        matches!(comm.trim(), "mariadbd" | "mysqld").then_some(pid)
    })
}

/// xorshift64: the users a batch charges, the same sequence every run.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .expect("usage: settle-bench <database-url>");
    let users = setting("BENCH_USERS", 1000);
    let batch_size = setting("BENCH_BATCH", 256);
    let batches = setting("BENCH_BATCHES", 300);
    let store = SeaStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    if let Ok(sql) = std::env::var("BENCH_SQL") {
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&url).await.expect("connect");
        // Empty statements (a trailing `;`, an empty BENCH_SQL) are skipped, not sent.
        for s in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            db.execute_unprepared(s).await.expect("BENCH_SQL");
        }
    }
    let now = UnixTime::from_secs(1_764_000_000);
    let instance = InstanceId::parse("settle-bench").expect("instance id");
    let mut people: Vec<(UserId, TokenId, Lease)> = Vec::with_capacity(users);
    for i in 0..users {
        let key = AccessKey::generate(|b| {
            for (j, x) in b.iter_mut().enumerate() {
                // Distinct bytes per user: every key differs.
                *x = (i.wrapping_mul(2_654_435_761) >> (8 * (j % 4))) as u8 ^ (j as u8);
            }
        });
        let (user, token) =
            testing::funded_with_key(&store, &format!("bench-{i}"), "1000", None, &key, now).await;
        let lease = Lease::new(instance.clone(), user, 1);
        let grown = store
            .grow_lease(&lease, Quota::new(100_000_000), Quota::ZERO, 1, true, now)
            .await
            .expect("lease");
        assert_eq!(grown, LeaseGrowth::Grown, "user {i}'s lease");
        people.push((user, token, lease));
    }
    let server = database_server().filter(|_| url.starts_with("mysql"));
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let mut call = 0u64;
    let mut run = |n: usize| {
        (0..n)
            .map(|_| {
                let (user, token, lease) = &people[(next(&mut rng) % users as u64) as usize];
                call += 1;
                let millis = now.secs() as u64 * 1000 + call / 64;
                Settlement {
                    request_id: format!("{millis:012x}{call:020x}"),
                    user_id: *user,
                    token_id: *token,
                    token_name: "key".into(),
                    model: "qwen-turbo".into(),
                    usage: Usage::new(14, 18),
                    quota: Quota::new(50),
                    is_stream: false,
                    latency_ms: 5,
                    channel_id: None,
                    lease: Some(lease.id.clone()),
                    at: now,
                }
            })
            .collect::<Vec<_>>()
    };
    // Warm up: the page cache, the prepared statements.
    for _ in 0..batches / 10 {
        let b = run(batch_size);
        store
            .settle_batch(&b, BatchAttempt::First)
            .await
            .expect("batch");
    }
    let work: Vec<Vec<Settlement>> = (0..batches).map(|_| run(batch_size)).collect();
    let me = std::process::id().to_string();
    let (cpu0, srv0, t0) = (
        cpu_ticks(&me),
        server.as_deref().and_then(cpu_ticks),
        Instant::now(),
    );
    for b in &work {
        let out = store
            .settle_batch(b, BatchAttempt::First)
            .await
            .expect("batch");
        assert!(out.iter().all(|o| *o == SettleOutcome::Settled));
    }
    let wall = t0.elapsed();
    let calls = (batches * batch_size) as f64;
    let tick_us = 1e6 / 100.0; // USER_HZ is 100 on Linux.
    let per_call = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.1}", (b - a) as f64 * tick_us / calls),
        _ => "-".into(),
    };
    println!(
        "settle-bench {backend} users={users} batch={batch_size} batches={batches}: \
         wall {wall:.1} µs a call, process CPU {cpu} µs a call, server CPU {srv} µs a call",
        backend = url.split(':').next().unwrap_or("?"),
        wall = wall.as_secs_f64() * 1e6 / calls,
        cpu = per_call(cpu0, cpu_ticks(&me)),
        srv = per_call(srv0, server.as_deref().and_then(cpu_ticks)),
    );
}
