//! Failed calls on every configured backend (SQLite always, MariaDB/MySQL when
//! `TOLLGATE_TEST_MYSQL_URL` is set): batches recorded concurrently add up exactly, one row per
//! hour, channel and kind; hours are UTC hours and the read range is half-open; the usage
//! report shows them per hour and in total; the read walks the primary key.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
use std::sync::Arc;
use tollgate_domain::admin_read::{
    AdminLogQueryInput, AdminReadRepository, AdminReadService, HOUR, UsageQueryInput,
};
use tollgate_domain::call_errors::{CallFailure, FailedCall};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::repository::CallErrorRepository;
use tollgate_domain::time::UnixTime;
use tollgate_storage::{SeaStore, testing};

/// 2025-11-24 16:00:00 UTC, on the hour.
const T0: i64 = 1_764_000_000;

/// A migrated store, shareable across tasks, and a plain connection to the same database.
struct Db {
    store: Arc<SeaStore>,
    raw: DatabaseConnection,
}

async fn dbs() -> Vec<Db> {
    let mut out = Vec::new();
    for url in testing::urls().await.expect("test databases") {
        let store = SeaStore::connect(&url).await.expect("connect");
        store.migrate().await.expect("migrate");
        let raw = Database::connect(&url).await.expect("connect");
        out.push(Db {
            store: Arc::new(store),
            raw,
        });
    }
    out
}

impl Db {
    async fn stored_rows(&self) -> i64 {
        self.raw
            .query_one_raw(sea_orm::Statement::from_string(
                self.raw.get_database_backend(),
                "SELECT COUNT(*) FROM call_errors",
            ))
            .await
            .expect("count")
            .expect("a row")
            .try_get_by_index::<i64>(0)
            .expect("an integer")
    }

    /// `(hour offset from T0, failed calls)` for the hours that start in `[from, until)`.
    async fn hours(&self, from: i64, until: i64) -> Vec<(i64, i64)> {
        self.store
            .error_cells(UnixTime::from_secs(from), UnixTime::from_secs(until))
            .await
            .expect("error cells")
            .expect("this store records failed calls")
            .iter()
            .map(|c| ((c.hour.secs() - T0) / HOUR, c.errors))
            .collect()
    }
}

fn failed(at: i64, channel: Option<i64>, kind: CallFailure) -> FailedCall {
    FailedCall {
        at: UnixTime::from_secs(at),
        channel: channel.map(ChannelId::new),
        kind,
    }
}

#[tokio::test]
async fn batches_recorded_concurrently_add_up_exactly_in_one_row_per_hour_channel_and_kind() {
    const TASKS: i64 = 8;
    const BATCHES: i64 = 40;
    for db in dbs().await {
        let backend = db.store.backend_name();
        // Every batch touches the same rows, in a different order each time, so the tasks
        // meet on every row (new and existing) at once.
        let batch = |task: i64, n: i64| {
            let mut b = vec![
                failed(T0 - 1, Some(1), CallFailure::Upstream),
                failed(T0, Some(1), CallFailure::Upstream),
                failed(T0 + 10, Some(2), CallFailure::Timeout),
                failed(T0 + 20, None, CallFailure::NoChannel),
                failed(T0 + HOUR, Some(1), CallFailure::Refused),
                failed(T0 + HOUR + 5, Some(1), CallFailure::Refused),
            ];
            let turn = usize::try_from((task + n) % 6).expect("small");
            b.rotate_left(turn);
            b
        };
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = db.store.clone();
            tasks.push(tokio::spawn(async move {
                for n in 0..BATCHES {
                    store
                        .record_call_errors(&batch(task, n))
                        .await
                        .expect("recorded");
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let batches = TASKS * BATCHES;
        assert_eq!(
            db.hours(T0 - HOUR, T0 + 2 * HOUR).await,
            vec![(-1, batches), (0, 3 * batches), (1, 2 * batches)],
            "{backend}: every failed call counted once"
        );
        assert_eq!(
            db.stored_rows().await,
            5,
            "{backend}: one row per hour, channel and kind, whatever the calls"
        );
    }
}

#[tokio::test]
async fn hours_are_utc_hours_and_the_range_is_half_open() {
    for db in dbs().await {
        let backend = db.store.backend_name();
        assert_eq!(
            db.hours(T0, T0 + 2 * HOUR).await,
            vec![],
            "{backend}: recorded, none yet"
        );
        db.store
            .record_call_errors(&[])
            .await
            .expect("an empty batch");
        assert_eq!(db.stored_rows().await, 0, "{backend}");
        db.store
            .record_call_errors(&[
                failed(T0 - 1, Some(3), CallFailure::Upstream),
                failed(T0, Some(3), CallFailure::Upstream),
                failed(T0 + HOUR - 1, Some(4), CallFailure::Interrupted),
                failed(T0 + HOUR, None, CallFailure::RateLimited),
                failed(T0 + HOUR + 1, None, CallFailure::Unavailable),
                failed(T0 + 2 * HOUR, Some(3), CallFailure::Upstream),
            ])
            .await
            .expect("recorded");
        assert_eq!(
            db.hours(T0, T0 + 2 * HOUR).await,
            vec![(0, 2), (1, 2)],
            "{backend}: the hour before and the hour at `until` are outside"
        );
        assert_eq!(
            db.hours(T0 - HOUR, T0 + 3 * HOUR).await,
            vec![(-1, 1), (0, 2), (1, 2), (2, 1)],
            "{backend}"
        );
        assert_eq!(db.hours(T0 + HOUR, T0 + HOUR).await, vec![], "{backend}");
    }
}

#[tokio::test]
async fn the_usage_report_shows_failed_calls_per_hour_and_in_total() {
    for db in dbs().await {
        let backend = db.store.backend_name();
        let service = AdminReadService::new(db.store.clone());
        let now = UnixTime::from_secs(T0 + 2 * HOUR + 125);
        let three_hours = || UsageQueryInput {
            hours: Some("3".into()),
        };
        let before = service.usage(three_hours(), now).await.expect("usage");
        assert_eq!(
            before.hours.iter().map(|h| h.errors).collect::<Vec<_>>(),
            vec![Some(0); 3],
            "{backend}: recorded, and none failed"
        );
        assert_eq!(before.errors, Some(0), "{backend}");
        db.store
            .record_call_errors(&[
                // Before the report's first hour.
                failed(T0 - 1, Some(1), CallFailure::Upstream),
                failed(T0, Some(1), CallFailure::Upstream),
                failed(T0 + 30, Some(2), CallFailure::Timeout),
                failed(T0 + 2 * HOUR + 100, None, CallFailure::NoChannel),
            ])
            .await
            .expect("recorded");
        db.store
            .record_call_errors(&[failed(T0 + 2 * HOUR + 120, Some(1), CallFailure::Refused)])
            .await
            .expect("recorded");
        let r = service.usage(three_hours(), now).await.expect("usage");
        assert_eq!(
            r.hours
                .iter()
                .map(|h| ((h.start.secs() - T0) / HOUR, h.errors))
                .collect::<Vec<_>>(),
            vec![(0, Some(2)), (1, Some(0)), (2, Some(2))],
            "{backend}"
        );
        assert_eq!(r.errors, Some(4), "{backend}");
        assert_eq!(
            r.total.requests, 0,
            "{backend}: failed calls are not settled calls"
        );
    }
}

#[tokio::test]
async fn the_failed_calls_read_walks_the_primary_key() {
    for db in dbs().await {
        if db.store.backend_name() != "sqlite" {
            // MySQL's optimiser may scan a table this small; SQLite's planner is deterministic.
            continue;
        }
        let query = AdminLogQueryInput::default().into_query().expect("valid");
        let plans = db
            .store
            .admin_read_plans(
                &query,
                UnixTime::from_secs(T0),
                UnixTime::from_secs(T0 + HOUR),
            )
            .await
            .expect("plans");
        let errors = &plans
            .iter()
            .find(|s| s.name == "errors")
            .expect("errors plan")
            .plan;
        assert!(
            errors
                .iter()
                .any(|l| l.starts_with("SEARCH call_errors USING")
                    && l.contains("sqlite_autoindex_call_errors_1")
                    && l.contains("hour_start>? AND hour_start<?")),
            "{errors:?}"
        );
        assert!(
            errors.iter().all(|l| !l.contains("TEMP B-TREE")),
            "{errors:?}"
        );
    }
}
