//! The admin read API on a large log (issue 12): seeds a database with a month of traffic
//! (1,000,000 log rows by default, ~1,000 users with their keys, six channels, several
//! models), prints the database's plan for every statement the read endpoints issue, and
//! measures each endpoint's latency over HTTP against a running `tollgate`. A benchmark, not a
//! test; `scripts/bench/admin-read.sh` drives it:
//!
//! ```sh
//! admin-read-bench seed    <database-url> <manifest.json>  # BENCH_ROWS, BENCH_USERS, BENCH_DAYS
//! admin-read-bench plans   <database-url> <manifest.json>  # exits 1 if a read scans logs
//! admin-read-bench measure <base-url> <admin-key> <manifest.json>
//!                                          # BENCH_REQUESTS, BENCH_WARMUP, BENCH_ROUNDS
//! ```
//!
//! `BENCH_ONLY=usage,heaviest` limits `plans` and `measure` to the cases whose names contain one
//! of those parts.
//!
//! The manifest, written by `seed`, names the users, channel and dates the cases use, so that
//! `plans` and `measure` ask about the same rows. Requests are sent one at a time on one
//! keep-alive connection: the figure is the latency of one request on an idle server, which is
//! what a query plan decides (throughput under load is the relay benchmark's subject).
#![expect(clippy::expect_used, reason = "a benchmark stops at the first failure")]

use reqwest::StatusCode;
use sea_orm::{ConnectionTrait, Database, DbBackend, TransactionTrait};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use tollgate_domain::admin_read::{AdminLogQueryInput, UsageQueryInput, UserSearchInput};
use tollgate_domain::channel::ChannelInput;
use tollgate_domain::ids::{PlatformId, UserId};
use tollgate_domain::logs::{LogKind, LogQueryInput};
use tollgate_domain::repository::{ChannelRepository, TokenRepository, UserRepository};
use tollgate_domain::time::{DAY, UnixTime};
use tollgate_domain::token::{AccessKey, TokenRecord};
use tollgate_domain::user::SyncUserInput;
use tollgate_storage::SeaStore;

/// Platforms the users belong to (every fifth user to the second).
const PLATFORMS: [&str; 2] = ["bench-platform-a", "bench-platform-b"];

/// Channels: name, type, models.
const CHANNELS: [(&str, &str, &[&str]); 6] = [
    ("openai", "openai", &["gpt-4o", "gpt-4o-mini"]),
    ("openai-backup", "openai", &["gpt-4o-mini"]),
    (
        "dashscope",
        "dashscope",
        &["qwen-turbo", "qwen-plus", "qwen-max"],
    ),
    (
        "deepseek",
        "deepseek",
        &["deepseek-chat", "deepseek-reasoner"],
    ),
    (
        "anthropic",
        "anthropic",
        &["claude-sonnet-4-5", "claude-haiku-4-5"],
    ),
    ("gemini", "gemini", &["gemini-2.5-flash"]),
];

/// Share of calls per model, in thousandths (they add up to 1,000). `qwen-plus` is rare on
/// purpose: a model filter that matches little is the one that searches furthest.
const MODELS: [(&str, u64); 10] = [
    ("qwen-turbo", 250),
    ("gpt-4o-mini", 200),
    ("deepseek-chat", 150),
    ("qwen-max", 100),
    ("gpt-4o", 100),
    ("claude-sonnet-4-5", 80),
    ("gemini-2.5-flash", 60),
    ("claude-haiku-4-5", 40),
    ("deepseek-reasoner", 19),
    ("qwen-plus", 1),
];

/// Token names a user's keys take, in order.
const TOKEN_NAMES: [&str; 3] = ["default", "ci", "batch"];

/// One top-up row in this many.
const TOP_UP_EVERY: u64 = 100;

/// SplitMix64: a small deterministic generator, so that every seed of the same size is the
/// same data and runs compare.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// In `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace([',', '_'], "").parse().ok())
        .unwrap_or(default)
}

fn now() -> UnixTime {
    UnixTime::from_system(SystemTime::now())
}

/// `YYYY-MM-DD` of an instant (UTC).
fn date(t: i64) -> String {
    let mut s = UnixTime::from_secs(t).to_string();
    s.truncate(10);
    s
}

/// A seeded user: id, keys (id, name), and what the log says of them.
struct SeededUser {
    id: i64,
    tokens: Vec<(i64, &'static str)>,
    calls: u64,
    used: i64,
    topped_up: i64,
}

async fn seed(url: &str, manifest: &str) {
    let rows = env_u64("BENCH_ROWS", 1_000_000);
    let user_count = env_u64("BENCH_USERS", 1_000);
    let days = i64::try_from(env_u64("BENCH_DAYS", 30)).expect("BENCH_DAYS");
    let store = SeaStore::connect(url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    let mut rng = Rng(12);
    let until = now().secs();
    let from = until - days * DAY;

    // Channels, users and keys go through the repositories, as the API would write them.
    let mut channel_of: HashMap<&str, Vec<i64>> = HashMap::new();
    for (name, kind, models) in CHANNELS {
        let spec = ChannelInput {
            name: Some(name.into()),
            kind: Some(kind.into()),
            key: Some(format!("sk-bench-{name}")),
            models: Some(models.iter().map(|m| (*m).to_owned()).collect()),
            ..ChannelInput::default()
        }
        .into_spec(|_| true)
        .expect("valid channel");
        let id = store
            .insert_channel(&spec, UnixTime::from_secs(from))
            .await
            .expect("channel")
            .id
            .get();
        for m in models {
            channel_of.entry(m).or_default().push(id);
        }
    }
    let mut users = Vec::new();
    for i in 0..user_count {
        let joined =
            UnixTime::from_secs(from - 1 - i64::try_from(rng.below(90 * 86_400)).unwrap_or(0));
        let cmd = SyncUserInput {
            external_user_id: Some(format!("user-{i:05}")),
            username: Some(format!("name-{i}")),
            display_name: Some(format!("User {i}")),
            email: Some(format!("user{i}@example.com")),
            ..SyncUserInput::default()
        }
        .into_command()
        .expect("valid user");
        let platform = PlatformId::from_secret(PLATFORMS[usize::from(i % 5 == 4)]);
        let user = store
            .sync_user(&platform, &cmd, joined)
            .await
            .expect("user")
            .user;
        let mut tokens = Vec::new();
        for name in TOKEN_NAMES.iter().take(1 + rng.below(3) as usize) {
            let key = AccessKey::generate(|b| rng.fill(b));
            let record = TokenRecord {
                user_id: user.id,
                name: (*name).to_owned(),
                key_hash: key.hash(),
                hint: key.hint(),
                created_at: joined,
                expires_at: joined.plus_days(3_650),
                quota_limit: None,
                limits: Default::default(),
            };
            let token = store.insert_token(&record).await.expect("token");
            tokens.push((token.id.get(), *name));
        }
        users.push(SeededUser {
            id: user.id.get(),
            tokens,
            calls: 0,
            used: 0,
            topped_up: 0,
        });
    }
    println!(
        "seeded {} channels, {} users, {} keys in {:.1?}",
        CHANNELS.len(),
        users.len(),
        users.iter().map(|u| u.tokens.len()).sum::<usize>(),
        started.elapsed()
    );

    // Skewed like real traffic (Zipf, exponent 0.8, over a shuffled order): a few users make a
    // large share of the calls (the heaviest about 6%), the median one a few hundred.
    let mut order: Vec<usize> = (0..users.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Cumulative share by rank, for picking a rank by a uniform draw.
    let mut by_rank: Vec<f64> = Vec::with_capacity(order.len());
    let mut acc = 0.0;
    for rank in 0..order.len() {
        acc += 1.0 / ((rank + 1) as f64).powf(0.8);
        by_rank.push(acc);
    }
    for c in &mut by_rank {
        *c /= acc;
    }

    let raw = Database::connect(url).await.expect("connect");
    let started = Instant::now();
    let span = until - from;
    const PER_STATEMENT: u64 = 1_000;
    let mut values = Vec::with_capacity(PER_STATEMENT as usize);
    let mut txn = raw.begin().await.expect("begin");
    let mut statements = 0u64;
    for i in 0..rows {
        // Ascending time, as rows are written; ids ascend with it.
        let at =
            from + i64::try_from(i128::from(i) * i128::from(span) / i128::from(rows)).unwrap_or(0);
        let pick = rng.unit();
        let rank = by_rank.partition_point(|&c| c < pick).min(order.len() - 1);
        let user = &mut users[order[rank]];
        let row = if rng.below(TOP_UP_EVERY) == 0 {
            let quota = 500_000 * (1 + rng.below(20) as i64);
            user.topped_up += quota;
            format!(
                "({}, {}, {at}, '', NULL, '', 0, 0, {quota}, 'pay-{i}', 0, 0, NULL)",
                user.id,
                LogKind::TopUp.code()
            )
        } else {
            let mut m = rng.below(1_000);
            let model = MODELS
                .iter()
                .find(|(_, share)| {
                    let hit = m < *share;
                    m = m.saturating_sub(*share);
                    hit
                })
                .map_or("qwen-turbo", |(name, _)| name);
            let channels = &channel_of[model];
            // The first channel of a model takes four calls in five.
            let channel = if channels.len() > 1 && rng.below(5) == 0 {
                channels[1]
            } else {
                channels[0]
            };
            let (token, token_name) = user.tokens[rng.below(user.tokens.len() as u64) as usize];
            let prompt = 20 + rng.below(4_000) as i64;
            let completion = 5 + rng.below(1_200) as i64;
            let quota = (prompt + 4 * completion) / 2 + 1;
            user.calls += 1;
            user.used += quota;
            format!(
                // The request id like Tollgate's own: the millisecond, then 80 random bits.
                "({}, {}, {at}, '{model}', {token}, '{token_name}', {prompt}, {completion}, \
                 {quota}, '{:012x}{:020x}', {}, {}, {channel})",
                user.id,
                LogKind::Consume.code(),
                at * 1000,
                u128::from(rng.next()) << 16 | u128::from(rng.next() as u16),
                u8::from(rng.below(10) < 6),
                150 + rng.below(20_000),
            )
        };
        values.push(row);
        if values.len() as u64 == PER_STATEMENT || i + 1 == rows {
            txn.execute_unprepared(&format!(
                "INSERT INTO logs (user_id, kind, created_at, model, token_id, token_name, \
                 prompt_tokens, completion_tokens, quota, request_id, is_stream, latency_ms, \
                 channel_id) VALUES {}",
                values.join(", ")
            ))
            .await
            .expect("insert logs");
            values.clear();
            statements += 1;
            // Commit now and then: one transaction of a million rows would hold MariaDB's undo
            // log; SQLite gets the same batches.
            if statements.is_multiple_of(50) {
                txn.commit().await.expect("commit");
                txn = raw.begin().await.expect("begin");
            }
        }
    }
    // Balances that agree with the log: top-ups in, calls out (topped up again if short).
    for u in &users {
        let quota = (u.topped_up - u.used).max(0) + 1_000_000;
        txn.execute_unprepared(&format!(
            "UPDATE users SET quota = {quota}, used_quota = {}, total_requests = {} WHERE id = {}",
            u.used, u.calls, u.id
        ))
        .await
        .expect("balances");
    }
    txn.commit().await.expect("commit");
    println!("seeded {rows} log rows in {:.1?}", started.elapsed());
    if raw.get_database_backend() == DbBackend::MySql {
        // InnoDB recalculates these statistics by itself after this many changes, in the
        // background; done here so the plans do not depend on when that happened. (SQLite
        // keeps none unless ANALYZE runs, which Tollgate never does: its plans come from the
        // schema alone, and so do the benchmark's.)
        raw.execute_unprepared("ANALYZE TABLE logs, users, tokens")
            .await
            .expect("analyze");
    }

    let mut by_calls: Vec<&SeededUser> = users.iter().filter(|u| u.calls > 0).collect();
    by_calls.sort_by_key(|u| u.calls);
    let heavy = by_calls.last().expect("a user with calls");
    let median = by_calls[by_calls.len() / 2];
    let m = json!({
        "rows": rows,
        "users": users.len(),
        "days": days,
        "from": from,
        "until": until,
        "heavy_user": heavy.id,
        "heavy_calls": heavy.calls,
        "median_user": median.id,
        "median_calls": median.calls,
        "big_channel": channel_of["qwen-turbo"][0],
        "small_channel": channel_of["gpt-4o-mini"][1],
        "heavy_user_channel": channel_of["gemini-2.5-flash"][0],
        "day": date(until - 15 * DAY),
        "week_from": date(until - 8 * DAY),
        "week_until": date(until - 2 * DAY),
    });
    std::fs::write(manifest, serde_json::to_vec_pretty(&m).expect("json")).expect("manifest");
    println!("{m}");
}

/// Which endpoint a case calls, with its query as the domain reads it.
enum Call {
    Users(UserSearchInput),
    User(i64),
    Logs(AdminLogQueryInput),
    Usage(u64),
}

struct Case {
    name: String,
    path: String,
    call: Call,
}

fn query_string(params: &[(&str, String)]) -> String {
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if q.is_empty() {
        String::new()
    } else {
        format!("?{}", q.join("&"))
    }
}

fn users_case(name: &str, params: &[(&str, String)]) -> Case {
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    Case {
        name: name.into(),
        path: format!("/users{}", query_string(params)),
        call: Call::Users(UserSearchInput {
            query: get("query"),
            page: get("page"),
            page_size: get("page_size"),
        }),
    }
}

fn logs_case(name: &str, params: &[(&str, String)]) -> Case {
    let get = |k: &str| params.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    Case {
        name: name.into(),
        path: format!("/logs{}", query_string(params)),
        call: Call::Logs(AdminLogQueryInput {
            log: LogQueryInput {
                start_date: get("start_date"),
                end_date: get("end_date"),
                model_name: get("model_name"),
                kind: get("type"),
                page: get("page"),
                page_size: get("page_size"),
            },
            user_id: get("user_id"),
            channel_id: get("channel_id"),
        }),
    }
}

/// The common questions an operator asks, per endpoint.
fn cases(m: &Value) -> Vec<Case> {
    let s = |k: &str| match &m[k] {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    let p = |k: &'static str, v: &str| (k, v.to_owned());
    let month_from = date(m["from"].as_i64().expect("from"));
    let user = |name: &str, id: String| Case {
        name: name.into(),
        path: format!("/users/{id}"),
        call: Call::User(id.parse().expect("user id")),
    };
    let usage = |hours: u64| Case {
        name: format!("usage, {hours} h"),
        path: format!("/usage?hours={hours}"),
        call: Call::Usage(hours),
    };
    vec![
        users_case("users, first page", &[]),
        users_case("users, last page (50)", &[p("page", "50")]),
        users_case("users, search (100 match)", &[p("query", "user-004")]),
        users_case("users, search (1 match)", &[p("query", "name-999")]),
        user("user detail, median user", s("median_user")),
        user("user detail, heaviest user", s("heavy_user")),
        logs_case("logs, first page", &[]),
        logs_case("logs, deep page (500 × 20)", &[p("page", "500")]),
        logs_case("logs, page_size 100", &[p("page_size", "100")]),
        logs_case("logs, type=topup", &[p("type", "topup")]),
        logs_case(
            "logs, type=consume, page 100",
            &[p("type", "consume"), p("page", "100")],
        ),
        logs_case(
            "logs, one day",
            &[p("start_date", &s("day")), p("end_date", &s("day"))],
        ),
        logs_case(
            "logs, model gpt-4o (30% of rows)",
            &[p("model_name", "gpt-4o")],
        ),
        logs_case(
            "logs, model qwen-plus (0.1%)",
            &[p("model_name", "qwen-plus")],
        ),
        logs_case(
            "logs, user_id (median user)",
            &[p("user_id", &s("median_user"))],
        ),
        logs_case(
            "logs, user_id (heaviest), page 50",
            &[p("user_id", &s("heavy_user")), p("page", "50")],
        ),
        logs_case(
            "logs, user_id + type=topup",
            &[p("user_id", &s("heavy_user")), p("type", "topup")],
        ),
        logs_case(
            "logs, channel_id (35% of rows)",
            &[p("channel_id", &s("big_channel"))],
        ),
        logs_case(
            "logs, channel_id (4%)",
            &[p("channel_id", &s("small_channel"))],
        ),
        logs_case(
            "logs, user_id + channel_id",
            &[
                p("user_id", &s("heavy_user")),
                p("channel_id", &s("heavy_user_channel")),
            ],
        ),
        logs_case(
            "logs, all 30 days + model qwen-plus",
            &[p("start_date", &month_from), p("model_name", "qwen-plus")],
        ),
        logs_case(
            "logs, dates + type + model",
            &[
                p("start_date", &s("week_from")),
                p("end_date", &s("week_until")),
                p("type", "consume"),
                p("model_name", "claude"),
            ],
        ),
        usage(24),
        usage(168),
    ]
}

/// The cases whose name contains one of `BENCH_ONLY`'s comma-separated parts (all without it).
fn selected(cases: Vec<Case>) -> Vec<Case> {
    let Ok(only) = std::env::var("BENCH_ONLY") else {
        return cases;
    };
    cases
        .into_iter()
        .filter(|c| only.split(',').any(|part| c.name.contains(part.trim())))
        .collect()
}

fn read_manifest(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("manifest")).expect("manifest json")
}

/// A plan line that walks the whole of `logs` or `tokens`: the table, or one of its indexes
/// from end to end (SQLite's `SCAN … USING COVERING INDEX`, MySQL's `type=index`) — as slow
/// on a large log as a table scan, where every read should be a range (`SEARCH`, `ref`,
/// `range`).
fn scans(line: &str) -> bool {
    let sqlite = ["SCAN logs", "SCAN tokens"]
        .iter()
        .any(|t| line.starts_with(t));
    let mysql = ["table=logs ", "table=tokens "]
        .iter()
        .any(|t| line.contains(t) && (line.contains("type=ALL") || line.contains("type=index ")));
    sqlite || mysql
}

async fn plans(url: &str, manifest: &str) {
    let m = read_manifest(manifest);
    let store = SeaStore::connect(url).await.expect("connect");
    // The SQL itself is long; BENCH_SQL=1 shows it under each plan.
    let show_sql = std::env::var("BENCH_SQL").is_ok_and(|v| v == "1");
    let mut scanning = 0;
    for case in selected(cases(&m)) {
        let plans = match case.call {
            Call::Users(input) => {
                let search = input.into_search().expect("valid search");
                store
                    .admin_user_plans(&search, UserId::new(1))
                    .await
                    .expect("plans")
                    .into_iter()
                    .filter(|p| p.name.starts_with("users."))
                    .collect()
            }
            Call::User(id) => {
                let search = UserSearchInput::default().into_search().expect("valid");
                store
                    .admin_user_plans(&search, UserId::new(id))
                    .await
                    .expect("plans")
                    .into_iter()
                    .filter(|p| !p.name.starts_with("users."))
                    .collect()
            }
            Call::Logs(input) => {
                let q = input.into_query().expect("valid query");
                let (from, until) = (now(), now());
                store
                    .admin_read_plans(&q, from, until)
                    .await
                    .expect("plans")
                    .into_iter()
                    .filter(|p| !matches!(p.name, "usage" | "holds"))
                    .collect()
            }
            Call::Usage(hours) => {
                let q = UsageQueryInput {
                    hours: Some(hours.to_string()),
                }
                .into_query()
                .expect("valid hours");
                let (from, until) = q.range(now());
                let logs = AdminLogQueryInput::default().into_query().expect("valid");
                store
                    .admin_read_plans(&logs, from, until)
                    .await
                    .expect("plans")
                    .into_iter()
                    .filter(|p| matches!(p.name, "usage" | "holds"))
                    .collect::<Vec<_>>()
            }
        };
        println!("{}  GET /api/admin{}", case.name, case.path);
        for p in plans {
            let flag = if p.plan.iter().any(|l| scans(l)) {
                scanning += 1;
                "  <-- FULL SCAN"
            } else {
                ""
            };
            println!("  {}: {}{flag}", p.name, p.plan.join(" | "));
            if show_sql {
                println!("    {}", p.sql);
            }
        }
    }
    if scanning > 0 {
        println!("{scanning} statements scan logs or tokens");
        std::process::exit(1);
    }
    println!("no statement scans logs or tokens");
}

/// Nearest-rank percentile of sorted durations, in milliseconds.
fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e3
}

/// What the first answer of a case said, to show that it found what it should.
fn gist(data: &Value) -> String {
    if let Some(p) = data.get("pagination") {
        let rows = data
            .get("logs")
            .or_else(|| data.get("users"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let more = if p["total_capped"] == true { "+" } else { "" };
        let from = match &data["searched_from"] {
            Value::String(s) => format!(", searched back to {s}"),
            _ => String::new(),
        };
        format!("{rows} rows of {}{more}{from}", p["total"])
    } else if let Some(u) = data.get("user") {
        format!(
            "{} calls, {} keys, {} models",
            u["total_requests"],
            data["tokens"].as_array().map_or(0, Vec::len),
            data["model_usage"]
                .as_object()
                .map_or(0, serde_json::Map::len)
        )
    } else {
        format!(
            "{} calls in {} buckets",
            data["totals"]["requests"],
            data["buckets"].as_array().map_or(0, Vec::len)
        )
    }
}

async fn measure(base: &str, key: &str, manifest: &str) {
    let m = read_manifest(manifest);
    let requests = env_u64("BENCH_REQUESTS", 200) as usize;
    let warmup = env_u64("BENCH_WARMUP", 20);
    let rounds = env_u64("BENCH_ROUNDS", 3);
    // One connection, kept alive: the figure is the server's, not connection set-up.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let get = |path: &str| {
        client
            .get(format!("{base}/api/admin{path}"))
            .bearer_auth(key)
            .send()
    };
    let cases = selected(cases(&m));
    let mut results: Vec<Vec<(f64, f64)>> = vec![Vec::new(); cases.len()];
    let mut gists = vec![String::new(); cases.len()];
    for round in 1..=rounds {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "round {round}: {requests} requests per case after {warmup} unmeasured; load average {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (i, case) in cases.iter().enumerate() {
            for _ in 0..warmup {
                let r = get(&case.path).await.expect("request");
                assert_eq!(r.status(), StatusCode::OK, "{}", case.path);
                let body: Value = r.json().await.expect("json");
                gists[i] = gist(&body["data"]);
            }
            let mut took = Vec::with_capacity(requests);
            for _ in 0..requests {
                let started = Instant::now();
                let r = get(&case.path).await.expect("request");
                let status = r.status();
                r.bytes().await.expect("body");
                took.push(started.elapsed());
                assert_eq!(status, StatusCode::OK, "{}", case.path);
            }
            took.sort();
            let (p50, p99) = (percentile(&took, 0.5), percentile(&took, 0.99));
            println!("  {:<36} p50 {p50:>8.2} ms  p99 {p99:>8.2} ms", case.name);
            results[i].push((p50, p99));
        }
    }
    // The median round of each case: other builds on this machine come and go, and one
    // round's stall should not be the figure.
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("\n| case | request | p50 ms | p99 ms | p50 of each round | answer |");
    println!("|---|---|---|---|---|---|");
    for (i, case) in cases.iter().enumerate() {
        let p50s: Vec<f64> = results[i].iter().map(|r| r.0).collect();
        let p99s: Vec<f64> = results[i].iter().map(|r| r.1).collect();
        let each: Vec<String> = p50s.iter().map(|v| format!("{v:.2}")).collect();
        println!(
            "| {} | `{}` | {:.2} | {:.2} | {} | {} |",
            case.name,
            case.path,
            median(p50s.clone()),
            median(p99s),
            each.join(", "),
            gists[i]
        );
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or_default();
    match arg(0) {
        "seed" => seed(arg(1), arg(2)).await,
        "plans" => plans(arg(1), arg(2)).await,
        "measure" => measure(arg(1), arg(2), arg(3)).await,
        _ => {
            eprintln!(
                "usage: admin-read-bench seed <database-url> <manifest> | \
                 plans <database-url> <manifest> | measure <base-url> <admin-key> <manifest>"
            );
            std::process::exit(2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scans;

    #[test]
    fn a_walk_of_a_whole_index_counts_as_a_scan_and_a_range_does_not() {
        for line in [
            "SCAN logs",
            "SCAN logs USING COVERING INDEX ix_logs_channel_time",
            "SCAN tokens USING INDEX ix_tokens_user",
            "table=logs type=ALL key= Extra=Using where",
            "table=logs type=index key=ix_logs_kind_time Extra=Using index",
        ] {
            assert!(scans(line), "{line}");
        }
        for line in [
            "SEARCH logs USING COVERING INDEX ix_logs_kind_time (kind=? AND created_at>?)",
            "SEARCH logs USING INTEGER PRIMARY KEY (rowid=?)",
            "SCAN counted",
            "table=logs type=range key=ix_logs_kind_time Extra=Using where; Using index",
            "table=logs type=ref key=ix_logs_user_kind_time Extra=Using where; Using index",
            "table=<derived2> type=ALL key= Extra=",
        ] {
            assert!(!scans(line), "{line}");
        }
    }
}
