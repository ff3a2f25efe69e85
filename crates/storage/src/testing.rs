//! Fresh databases for tests: a temporary SQLite file always, and a new MariaDB/MySQL database
//! when `TOLLGATE_TEST_MYSQL_URL` names a server. Used by this crate's tests and by `tests/`.

use crate::entity::token;
use crate::tokens::{DISABLED, ENABLED};
use crate::{SeaStore, StorageError};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, Database, EntityTrait, QueryFilter};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_domain::Quota;
use tollgate_domain::ids::{PlatformId, TokenId, UserId};
use tollgate_domain::ratelimit::RateLimits;
use tollgate_domain::repository::{TokenRepository, TopUpRepository, UserRepository};
use tollgate_domain::time::UnixTime;
use tollgate_domain::token::{AccessKey, TokenRecord};
use tollgate_domain::topup::{NumberInput, TopUpInput};
use tollgate_domain::user::SyncUserInput;

/// Environment variable naming a MySQL server for the tests that need one.
pub const MYSQL_ENV: &str = "TOLLGATE_TEST_MYSQL_URL";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The URL of a new, empty SQLite database in the system's temporary folder.
#[must_use]
pub fn sqlite_url() -> String {
    let path = std::env::temp_dir().join(format!("{}.db", unique("tollgate_test")));
    format!("sqlite://{}?mode=rwc", path.display())
}

/// The URL of a new, empty database on the MySQL server of `TOLLGATE_TEST_MYSQL_URL`, or `None`
/// when that variable is unset.
pub async fn mysql_url() -> Result<Option<String>, StorageError> {
    let Ok(server) = std::env::var(MYSQL_ENV) else {
        return Ok(None);
    };
    let name = unique("tollgate_test");
    let db = Database::connect(&server)
        .await
        .map_err(|e| StorageError::Connect(e.to_string()))?;
    db.execute_unprepared(&format!(
        "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    ))
    .await?;
    db.close().await?;
    // Replace the database path of the server URL, keeping any query string.
    let (base, query) = server
        .split_once('?')
        .map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
    let authority_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    Ok(Some(match query {
        Some(q) => format!("{root}/{name}?{q}"),
        None => format!("{root}/{name}"),
    }))
}

/// [`stores`], shareable across the tasks of a concurrency test.
///
/// # Panics
/// When a test database cannot be created: the calling test fails there.
#[expect(clippy::expect_used, reason = "a test helper fails its test")]
pub async fn shared_stores() -> Vec<std::sync::Arc<SeaStore>> {
    stores()
        .await
        .expect("test databases")
        .into_iter()
        .map(std::sync::Arc::new)
        .collect()
}

/// URLs of new, empty databases to run a test against: SQLite, plus MySQL when configured.
pub async fn urls() -> Result<Vec<String>, StorageError> {
    let mut urls = vec![sqlite_url()];
    urls.extend(mysql_url().await?);
    Ok(urls)
}

/// Migrated stores to run a test against: SQLite, plus MySQL when configured.
pub async fn stores() -> Result<Vec<SeaStore>, StorageError> {
    let mut out = Vec::new();
    for url in urls().await? {
        let store = SeaStore::connect(&url).await?;
        store.migrate().await?;
        out.push(store);
    }
    Ok(out)
}

/// A user of platform `platform-a` with `usd` credited (none for `"0"`) and one key (capped at
/// `cap` when given, its bytes all `key_fill`), all dated `now`; returns (user id, token id).
///
/// # Panics
/// When a step fails: the calling test fails there.
pub async fn funded(
    store: &SeaStore,
    external_id: &str,
    usd: &str,
    cap: Option<Quota>,
    key_fill: u8,
    now: UnixTime,
) -> (UserId, TokenId) {
    let key = AccessKey::generate(|b| b.fill(key_fill));
    funded_with_key(store, external_id, usd, cap, &key, now).await
}

/// [`funded`] with the key given (more users than 256 need keys of their own).
///
/// # Panics
/// When a step fails: the calling test fails there.
#[expect(clippy::expect_used, reason = "a test helper fails its test")]
pub async fn funded_with_key(
    store: &SeaStore,
    external_id: &str,
    usd: &str,
    cap: Option<Quota>,
    key: &AccessKey,
    now: UnixTime,
) -> (UserId, TokenId) {
    let p = PlatformId::from_secret("platform-a");
    let cmd = SyncUserInput {
        external_user_id: Some(external_id.into()),
        username: Some("u".into()),
        ..Default::default()
    }
    .into_command()
    .expect("sync");
    let user = store.sync_user(&p, &cmd, now).await.expect("sync").user;
    if usd != "0" {
        let top = TopUpInput {
            external_user_id: Some(external_id.into()),
            amount_usd: NumberInput::parse(usd),
            payment_id: Some(format!("pay-{external_id}")),
        }
        .into_command()
        .expect("top-up");
        store.credit(&p, &top, now).await.expect("credit");
    }
    let token = store
        .insert_token(&TokenRecord {
            user_id: user.id,
            name: "key".into(),
            key_hash: key.hash(),
            hint: key.hint(),
            created_at: now,
            expires_at: now.plus_days(30),
            quota_limit: cap,
            limits: RateLimits::default(),
        })
        .await
        .expect("token");
    (user.id, token.id)
}

/// Switches a key off (`disabled`) or on again in the database, as no API does (SPEC §3.4's
/// status 2): the row only — no cache of a running relay is told. Whether the token exists.
pub async fn set_token_status(
    store: &SeaStore,
    token_id: TokenId,
    disabled: bool,
) -> Result<bool, StorageError> {
    let status = if disabled { DISABLED } else { ENABLED };
    let done = token::Entity::update_many()
        .col_expr(token::Column::Status, Expr::value(status))
        .filter(token::Column::Id.eq(token_id.get()))
        .exec(&store.db)
        .await?;
    Ok(done.rows_affected == 1)
}
