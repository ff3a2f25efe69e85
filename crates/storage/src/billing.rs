//! [`BillingRepository`] on SeaORM. A hold is one transaction of conditional UPDATEs
//! (`held_quota + amount` only where `quota - held_quota >= amount`, and the same against the
//! key's cap) plus the hold row. Settling and releasing delete the hold row with a conditional
//! DELETE keyed by request id and state — only the transaction whose DELETE removed the row goes
//! on to move money, which is what makes each happen at most once — so the table holds only
//! calls in flight and expired holds. Expiry marks the row *expired* (a late settle still
//! charges, once). Lock order everywhere: hold row, user, token.

use crate::SeaStore;
use crate::entity::{hold, token, user};
use crate::error::StorageError;
use crate::logs::{insert_log, insert_logs};
use crate::retry::retrying;
use crate::tokens::ENABLED;
use async_trait::async_trait;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend,
    DbErr, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, TransactionTrait,
};
use std::collections::BTreeMap;
use tollgate_domain::RepoError;
use tollgate_domain::billing::{
    BatchAttempt, BatchReceipt, Hold, HoldRefusal, SettleOutcome, Settlement,
};
use tollgate_domain::repository::BillingRepository;
use tollgate_domain::time::UnixTime;

pub(crate) const HELD: i16 = 0;
/// The `token_id` of a balance lease's hold row (no key's).
pub(crate) const LEASE_TOKEN: i64 = 0;
/// A transaction that lost a race for a hold row (a batch for one of its rows, a finish for a
/// lease row whose amount changed since it was read): rolled back and retried.
pub(crate) const RACED: &str = "settlement batch raced a concurrent finish";
const EXPIRED: i16 = 3;

/// Removes the hold row of `request_id` if it is in state `from`; the row when this call
/// removed it (a concurrent settle, release or sweep that got there first leaves `None`).
///
/// The DELETE also requires the amount read: on MySQL the read sees the transaction's
/// snapshot, and a lease's growth or shrink committed after it would otherwise be deleted
/// with the row but given back as the amount read, leaving `held_quota` off by it. A row still
/// there with another amount fails the transaction, which is retried.
pub(crate) async fn take(
    txn: &DatabaseTransaction,
    request_id: &str,
    from: i16,
) -> Result<Option<hold::Model>, DbErr> {
    let find = || {
        hold::Entity::find()
            .filter(hold::Column::RequestId.eq(request_id))
            .filter(hold::Column::State.eq(from))
    };
    let Some(row) = find().one(txn).await? else {
        return Ok(None);
    };
    let done = hold::Entity::delete_many()
        .filter(hold::Column::RequestId.eq(request_id))
        .filter(hold::Column::State.eq(from))
        .filter(hold::Column::Amount.eq(row.amount))
        .exec(txn)
        .await?;
    if done.rows_affected == 1 {
        return Ok(Some(row));
    }
    if find().one(txn).await?.is_some() {
        return Err(DbErr::Custom(RACED.into()));
    }
    Ok(None)
}

/// Marks the held row of `request_id` expired; the row when this call did it.
async fn expire(txn: &DatabaseTransaction, request_id: &str) -> Result<Option<hold::Model>, DbErr> {
    let done = hold::Entity::update_many()
        .col_expr(hold::Column::State, Expr::value(EXPIRED))
        .filter(hold::Column::RequestId.eq(request_id))
        .filter(hold::Column::State.eq(HELD))
        .exec(txn)
        .await?;
    if done.rows_affected != 1 {
        return Ok(None);
    }
    hold::Entity::find()
        .filter(hold::Column::RequestId.eq(request_id))
        .one(txn)
        .await
}

/// Writes `receipt` as the first statement of a batch's transaction; `false` when it was
/// written already, by an earlier attempt of the batch that committed.
///
/// On MySQL the insert of a key that an uncommitted transaction inserted waits for that
/// transaction: an earlier attempt whose COMMIT was still under way when its connection failed
/// is waited for, then found (committed) or gone (rolled back) — a plain read would see its
/// snapshot instead. SQLite has one writer. `INSERT IGNORE` / `INSERT OR IGNORE`: a duplicate is
/// the answer, not an error (the table has no other constraint to ignore).
async fn write_receipt(txn: &DatabaseTransaction, receipt: BatchReceipt) -> Result<bool, DbErr> {
    let backend = txn.get_database_backend();
    let sql = match backend {
        DbBackend::MySql => "INSERT IGNORE INTO settle_receipts (at, digest) VALUES (?, ?)",
        _ => "INSERT OR IGNORE INTO settle_receipts (at, digest) VALUES (?, ?)",
    };
    let written = txn
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [receipt.at().secs().into(), receipt.digest().into()],
        ))
        .await?
        .rows_affected();
    Ok(written == 1)
}

/// Receipts deleted by one statement of [`prune_receipts`]: at settlement window 0 every lease
/// call has one, and one DELETE of a sweep interval's worth would hold SQLite's single writer
/// (and MySQL's locks) for as long as it takes.
const RECEIPTS_PER_PRUNE: u64 = 4_096;

/// Most [`prune_receipts`] statements a sweep runs: 16 × 4,096 receipts a sweep (every 30 s by
/// default) keeps up with ~2,000 lease calls a second at settlement window 0, where each has
/// its own receipt; a batched instance writes far fewer.
const PRUNES_PER_SWEEP: usize = 16;

/// Deletes up to [`RECEIPTS_PER_PRUNE`] of the receipts whose first call ended
/// [`BatchReceipt::KEPT_SECS`] before `now` (a range of the primary key, which leads with `at`);
/// how many.
async fn prune_receipts(db: &impl ConnectionTrait, now: UnixTime) -> Result<u64, DbErr> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::MySql => {
            format!(
                "DELETE FROM settle_receipts WHERE at < ? ORDER BY at LIMIT {RECEIPTS_PER_PRUNE}"
            )
        }
        // SQLite's DELETE takes no LIMIT unless compiled to; its rowid does.
        _ => format!(
            "DELETE FROM settle_receipts WHERE rowid IN (SELECT rowid FROM settle_receipts \
             WHERE at < ? ORDER BY at LIMIT {RECEIPTS_PER_PRUNE})"
        ),
    };
    Ok(db
        .execute_raw(Statement::from_sql_and_values(
            backend,
            sql,
            [now.secs().saturating_sub(BatchReceipt::KEPT_SECS).into()],
        ))
        .await?
        .rows_affected())
}

/// Takes up to `amount` out of the lease whose held row is `row` (never more than it holds),
/// only if its amount is still the one read (a concurrent change fails the transaction, which
/// is retried); what it took.
pub(crate) async fn shrink(
    txn: &DatabaseTransaction,
    row: &hold::Model,
    amount: i64,
) -> Result<i64, DbErr> {
    let taken = amount.clamp(0, row.amount);
    let changed = hold::Entity::update_many()
        .col_expr(
            hold::Column::Amount,
            Expr::col(hold::Column::Amount).sub(taken),
        )
        .filter(hold::Column::Id.eq(row.id))
        .filter(hold::Column::State.eq(HELD))
        .filter(hold::Column::Amount.eq(row.amount))
        .exec(txn)
        .await?;
    if changed.rows_affected != 1 {
        return Err(DbErr::Custom(RACED.into()));
    }
    Ok(taken)
}

/// Ids in one `IN` list of a batch's reads and deletes at most (each id one index lookup;
/// nothing in these statements grows with the square of the list). A power of two, as
/// [`id_lists`] pads to one.
const IDS_PER_READ: usize = 512;

/// `ids` as the `IN` lists of a batch's statements: at most [`IDS_PER_READ`] each, and each
/// padded to a power of two by repeating its last id (which changes nothing an `IN` list
/// matches). A statement's text is cached, prepared, per connection by its length; a list as
/// long as the batch's distinct calls made a new text for nearly every batch — on SQLite a
/// program compiled again and kept in the connection's cache of 100 statements, pushing the
/// others out (docs/benchmarks.md, ninth session) — where ten lengths now serve every batch.
fn id_lists<'a>(ids: &[&'a str]) -> impl Iterator<Item = Vec<&'a str>> {
    ids.chunks(IDS_PER_READ).map(padded)
}

/// `items` made a power of two long by repeating the last (none stay none): the batch's
/// statements list their ids and rows padded so, so that a few texts serve every batch size.
fn padded<T: Copy>(items: &[T]) -> Vec<T> {
    let mut list = items.to_vec();
    if let Some(&last) = items.last() {
        list.resize(items.len().next_power_of_two(), last);
    }
    list
}

/// Rows changed by one [`RowsUpdate`] statement at most: a bound on its parameter's size only
/// (a batch never exceeds the settlement worker's batch size).
const ROWS_PER_STATEMENT: usize = 1_000;

/// An UPDATE that changes many rows of `table`, each by its own amounts, in one statement.
///
/// The rows are bound as parameters, four numbers or so a row, and read by the statement as a
/// table joined to `table` by primary key, so each row costs one primary-key lookup: on SQLite
/// a `VALUES` list (`UPDATE OR FAIL`, see [`crate::SQLITE_OR_FAIL`]), on MySQL a first row
/// that names the fields (`SELECT ? AS id, …`) and the others after it by `UNION ALL VALUES`.
/// Their number is padded to a power of two by repeating the last row (a row of `table`
/// matched twice is changed once, on both databases), so a few texts, each prepared once per
/// connection, serve every batch. They replaced one JSON array parameter read by `jsonb_each`
/// (SQLite) or `JSON_TABLE` (MySQL), whose every field of every row was a JSON extraction: 11%
/// of a 1,000-user batch's instructions a call on SQLite, 7% of MariaDB's
/// (docs/benchmarks.md, eleventh session); and that replaced one `CASE id WHEN … THEN …`
/// UPDATE per 25 rows, whose every row walked the `CASE` list and whose statements — ten a
/// table for a 1,000-user batch — each crossed to the database and back (eighth session). On
/// MySQL the rows are read first (`STRAIGHT_JOIN`), in the order given — id order, the lock
/// order of every billing statement — and each found by primary key whatever the table's
/// statistics say (a small table would otherwise be scanned, its every row locked).
struct RowsUpdate {
    table: &'static str,
    /// The rows' fields, in order; the first is the row's `id`.
    fields: &'static [&'static str],
    /// `column = expression`: the expression names the table's columns `t.<column>` and the
    /// row's fields `v.<field>`.
    sets: &'static [(&'static str, &'static str)],
}

impl RowsUpdate {
    /// The statement for `rows` rows (at least one), each `fields.len()` parameters.
    fn sql(&self, backend: DbBackend, rows: usize) -> String {
        let mysql = backend == DbBackend::MySql;
        // MySQL names the changed table's columns in SET; SQLite does not allow it.
        let target = if mysql { "t." } else { "" };
        let sets = self
            .sets
            .iter()
            .map(|(c, e)| format!("{target}{c} = {e}"))
            .collect::<Vec<_>>()
            .join(", ");
        let table = self.table;
        let row = format!("({})", vec!["?"; self.fields.len()].join(", "));
        if mysql {
            // A `VALUES` list names its columns after its first row's values in MariaDB: the
            // first row is a SELECT that names them, the others follow by UNION ALL.
            let first = self
                .fields
                .iter()
                .map(|f| format!("? AS {f}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rest = if rows > 1 {
                format!(
                    " UNION ALL VALUES {}",
                    vec![row.as_str(); rows - 1].join(", ")
                )
            } else {
                String::new()
            };
            format!(
                "UPDATE (SELECT {first}{rest}) AS v STRAIGHT_JOIN {table} AS t FORCE INDEX \
                 (PRIMARY) ON t.id = v.id SET {sets}"
            )
        } else {
            let columns = self
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| format!("column{} AS {f}", i + 1))
                .collect::<Vec<_>>()
                .join(", ");
            let values = vec![row.as_str(); rows].join(", ");
            format!(
                "UPDATE {} {table} AS t SET {sets} FROM (SELECT {columns} FROM \
                 (VALUES {values})) AS v WHERE t.id = v.id",
                crate::SQLITE_OR_FAIL
            )
        }
    }

    /// Runs the update on `rows` (each `fields.len()` numbers, the id first), in statements of
    /// at most [`ROWS_PER_STATEMENT`] rows. The rows each statement matched, all told.
    async fn exec<const N: usize>(
        &self,
        txn: &DatabaseTransaction,
        rows: &[[i64; N]],
    ) -> Result<u64, DbErr> {
        debug_assert_eq!(N, self.fields.len());
        let backend = txn.get_database_backend();
        let mut matched = 0;
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            // A row of `table` matched twice by the padding is changed once (on both
            // databases), and by identical amounts.
            let chunk = padded(chunk);
            let values: Vec<sea_orm::Value> = chunk
                .iter()
                .flatten()
                .map(|&v| sea_orm::Value::from(v))
                .collect();
            let sql = self.sql(backend, chunk.len());
            matched += txn
                .execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?
                .rows_affected();
        }
        Ok(matched)
    }
}

/// What a batch does to each user.
const CHARGE_USERS: RowsUpdate = RowsUpdate {
    table: "users",
    fields: &["id", "charge", "unheld", "calls"],
    sets: &[
        ("quota", "t.quota - v.charge"),
        ("held_quota", "t.held_quota - v.unheld"),
        ("used_quota", "t.used_quota + v.charge"),
        ("total_requests", "t.total_requests + v.calls"),
    ],
};

/// What a batch does to each key.
const CHARGE_KEYS: RowsUpdate = RowsUpdate {
    table: "tokens",
    fields: &["id", "charge", "unheld"],
    sets: &[
        ("used_quota", "t.used_quota + v.charge"),
        ("held_quota", "t.held_quota - v.unheld"),
    ],
};

/// Gives a hold's reservation back to its user and key.
pub(crate) async fn unreserve(txn: &DatabaseTransaction, h: &hold::Model) -> Result<(), DbErr> {
    user::Entity::update_many()
        .col_expr(
            user::Column::HeldQuota,
            Expr::col(user::Column::HeldQuota).sub(h.amount),
        )
        .filter(user::Column::Id.eq(h.user_id))
        .exec(txn)
        .await?;
    token::Entity::update_many()
        .col_expr(
            token::Column::HeldQuota,
            Expr::col(token::Column::HeldQuota).sub(h.amount),
        )
        .filter(token::Column::Id.eq(h.token_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// What a batch does to one user: `charge` leaves the balance and joins the spent quota,
/// `unheld` leaves the holds, `calls` more settled calls.
#[derive(Debug, Clone, Copy, Default)]
struct UserCharge {
    charge: i64,
    unheld: i64,
    calls: i64,
}

/// What a batch does to one key: `charge` is spent against its cap, `unheld` leaves its holds.
#[derive(Debug, Clone, Copy, Default)]
struct KeyCharge {
    charge: i64,
    unheld: i64,
}

/// Charges users in id order — the lock order of every billing transaction.
async fn charge_users(
    txn: &DatabaseTransaction,
    users: &BTreeMap<i64, UserCharge>,
) -> Result<(), DbErr> {
    let rows: Vec<[i64; 4]> = users
        .iter()
        .map(|(id, c)| [*id, c.charge, c.unheld, c.calls])
        .collect();
    CHARGE_USERS.exec(txn, &rows).await?;
    Ok(())
}

/// The keys' side of [`charge_users`]; keys with neither a charge nor a hold to give back are
/// left alone.
async fn charge_keys(
    txn: &DatabaseTransaction,
    keys: &BTreeMap<i64, KeyCharge>,
) -> Result<(), DbErr> {
    let rows: Vec<[i64; 3]> = keys
        .iter()
        .filter(|(_, c)| c.charge != 0 || c.unheld != 0)
        .map(|(id, c)| [*id, c.charge, c.unheld])
        .collect();
    CHARGE_KEYS.exec(txn, &rows).await?;
    Ok(())
}

impl SeaStore {
    async fn hold_once(&self, h: &Hold, now: UnixTime) -> Result<Result<(), HoldRefusal>, DbErr> {
        let amount = h.amount.get();
        let txn = self.db.begin().await?;
        // The hold row first: the lock order of every billing transaction (hold row, user,
        // token). Taking the user's row first deadlocked, under load on MariaDB, against
        // settlements that had deleted neighbouring hold rows and waited for the user's row.
        // A refusal below rolls the row back.
        hold::Entity::insert(hold::ActiveModel {
            request_id: Set(h.request_id.clone()),
            user_id: Set(h.user_id.get()),
            token_id: Set(h.token_id.get()),
            amount: Set(amount),
            state: Set(HELD),
            created_at: Set(h.created_at.secs()),
            expires_at: Set(h.expires_at.secs()),
            instance_id: Set(h.instance.as_str().to_owned()),
            ..Default::default()
        })
        .exec(&txn)
        .await?;
        let user_ok = user::Entity::update_many()
            .col_expr(
                user::Column::HeldQuota,
                Expr::col(user::Column::HeldQuota).add(amount),
            )
            .filter(user::Column::Id.eq(h.user_id.get()))
            .filter(
                Expr::col(user::Column::Quota)
                    .sub(Expr::col(user::Column::HeldQuota))
                    .gte(amount),
            )
            .exec(&txn)
            .await?;
        if user_ok.rows_affected != 1 {
            txn.rollback().await?;
            return Ok(Err(HoldRefusal::InsufficientUserQuota));
        }
        let token_ok = token::Entity::update_many()
            .col_expr(
                token::Column::HeldQuota,
                Expr::col(token::Column::HeldQuota).add(amount),
            )
            .filter(token::Column::Id.eq(h.token_id.get()))
            .filter(token::Column::UserId.eq(h.user_id.get()))
            .filter(token::Column::Status.eq(ENABLED))
            .filter(token::Column::ExpiresAt.gt(now.secs()))
            .filter(
                Condition::any()
                    .add(token::Column::QuotaLimit.is_null())
                    .add(
                        Expr::col(token::Column::QuotaLimit)
                            .sub(Expr::col(token::Column::UsedQuota))
                            .sub(Expr::col(token::Column::HeldQuota))
                            .gte(amount),
                    ),
            )
            .exec(&txn)
            .await?;
        if token_ok.rows_affected != 1 {
            let t = token::Entity::find_by_id(h.token_id.get())
                .one(&txn)
                .await?;
            txn.rollback().await?;
            let refusal = match t {
                Some(t) if t.user_id != h.user_id.get() => HoldRefusal::TokenNotFound,
                Some(t) if t.status != ENABLED => HoldRefusal::TokenDisabled,
                Some(t) if t.expires_at <= now.secs() => HoldRefusal::TokenExpired,
                Some(_) => HoldRefusal::InsufficientKeyQuota,
                None => HoldRefusal::TokenNotFound,
            };
            return Ok(Err(refusal));
        }
        txn.commit().await?;
        Ok(Ok(()))
    }

    async fn settle_once(&self, s: &Settlement) -> Result<SettleOutcome, DbErr> {
        let txn = self.db.begin().await?;
        let (row, outcome, unheld) = match take(&txn, &s.request_id, HELD).await? {
            Some(row) => {
                let amount = row.amount;
                (row, SettleOutcome::Settled, amount)
            }
            None => match take(&txn, &s.request_id, EXPIRED).await? {
                // The sweeper gave the reservation back already: charge only.
                Some(row) => (row, SettleOutcome::SettledAfterExpiry, 0),
                None => {
                    txn.rollback().await?;
                    return Ok(SettleOutcome::AlreadyFinished);
                }
            },
        };
        let charge = s.quota.get();
        let user = UserCharge {
            charge,
            unheld,
            calls: 1,
        };
        charge_users(&txn, &BTreeMap::from([(row.user_id, user)])).await?;
        charge_keys(
            &txn,
            &BTreeMap::from([(row.token_id, KeyCharge { charge, unheld })]),
        )
        .await?;
        let mut entry = s.log_entry();
        // The hold row is the authority on whose call this was.
        entry.user_id = tollgate_domain::ids::UserId::new(row.user_id);
        insert_log(&txn, &entry).await?;
        txn.commit().await?;
        Ok(outcome)
    }

    /// Settles a batch in one transaction: the batch's hold rows are read, then deleted by one
    /// DELETE per state read, keyed by request id and that state; if one removed fewer rows than
    /// were read (a concurrent release, sweep or settle took or changed one in between), the
    /// whole transaction is
    /// rolled back and retried, so each row's money moves exactly once. Calls taken from a
    /// balance lease have no row of their own: a batch with any writes its [`BatchReceipt`]
    /// first ([`write_receipt`]), and an attempt that finds it written changes nothing — its
    /// batch committed before (an answer lost at COMMIT). A lease call listed twice is charged
    /// once, as a hold's call is. A lease call's charge leaves its user's balance, not the
    /// lease's row (which its instance folds later, see `LeaseRepository`): a batch only reads
    /// its leases' rows, to report a call of a lease that is gone as settled after expiry —
    /// with 1,000 users, each lease call's row was one of three rows a call changed. Then one
    /// UPDATE for the users and one for the keys (each row by its own amount), and one
    /// multi-row log insert.
    async fn settle_batch_once(&self, batch: &[Settlement]) -> Result<Vec<SettleOutcome>, DbErr> {
        // Repeated ids are found by sorting, not hashing: SipHash over each 32-character id
        // cost two hashes a call (docs/benchmarks.md, tenth session).
        let mut ids: Vec<&str> = batch
            .iter()
            .filter(|s| s.lease.is_none())
            .map(|s| s.request_id.as_str())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        // The lease calls by id, then place in the batch: of a call listed twice, the first
        // listing is charged.
        let mut leased: Vec<(&str, usize)> = batch
            .iter()
            .enumerate()
            .filter(|(_, s)| s.lease.is_some())
            .map(|(i, s)| (s.request_id.as_str(), i))
            .collect();
        leased.sort_unstable();
        let mut repeated = vec![false; batch.len()];
        for pair in leased.windows(2) {
            if pair[0].0 == pair[1].0 {
                repeated[pair[1].1] = true;
            }
        }
        let txn = self.db.begin().await?;
        if let Some(receipt) = BatchReceipt::of(batch)
            && !write_receipt(&txn, receipt).await?
        {
            txn.rollback().await?;
            return Ok(vec![SettleOutcome::AlreadyFinished; batch.len()]);
        }
        let mut rows: BTreeMap<String, hold::Model> = BTreeMap::new();
        // Bounded IN lists: a batch never exceeds the worker's batch size, but stay safe.
        for list in id_lists(&ids) {
            for row in hold::Entity::find()
                .filter(hold::Column::RequestId.is_in(list))
                .filter(hold::Column::State.is_in([HELD, EXPIRED]))
                .all(&txn)
                .await?
            {
                rows.insert(row.request_id.clone(), row);
            }
        }
        // Each row is deleted only in the state it was read in: on MySQL the read sees the
        // transaction's snapshot, and a row a sweep expired in between (giving its reservation
        // back) must not be settled as if still held (which would give it back again).
        for state in [HELD, EXPIRED] {
            let found: Vec<&str> = rows
                .values()
                .filter(|r| r.state == state)
                .map(|r| r.request_id.as_str())
                .collect();
            let mut deleted = 0;
            for list in id_lists(&found) {
                deleted += hold::Entity::delete_many()
                    .filter(hold::Column::RequestId.is_in(list))
                    .filter(hold::Column::State.eq(state))
                    .exec(&txn)
                    .await?
                    .rows_affected;
            }
            if deleted != found.len() as u64 {
                txn.rollback().await?;
                return Err(DbErr::Custom(RACED.into()));
            }
        }
        // Lease calls not charged: listed before in this batch.
        let skipped: Vec<bool> = batch
            .iter()
            .zip(&repeated)
            .map(|(s, &repeated)| s.lease.is_some() && repeated)
            .collect();
        // The leases whose rows are still held: a call of a lease that is gone (the instance
        // registry returned it, taking its instance for dead) is charged all the same, and
        // reported settled after expiry, which tells the instance to stop using the lease. A
        // read only: the rows are not changed (see `LeaseRepository`).
        let mut leases: Vec<&str> = batch
            .iter()
            .zip(&skipped)
            .filter(|(_, skipped)| !**skipped)
            .filter_map(|(s, _)| s.lease.as_ref().map(|l| l.as_str()))
            .collect();
        leases.sort_unstable();
        leases.dedup();
        // By request id alone, the state checked here: given `state = ?` as well, SQLite's
        // planner may walk the holds' `(state, expires_at)` index instead of looking each id up.
        let mut held_leases: Vec<String> = Vec::with_capacity(leases.len());
        for list in id_lists(&leases) {
            let found: Vec<(String, i16)> = hold::Entity::find()
                .select_only()
                .column(hold::Column::RequestId)
                .column(hold::Column::State)
                .filter(hold::Column::RequestId.is_in(list))
                .into_tuple()
                .all(&txn)
                .await?;
            held_leases.extend(
                found
                    .into_iter()
                    .filter(|(_, state)| *state == HELD)
                    .map(|(lease, _)| lease),
            );
        }
        held_leases.sort_unstable();
        // What the batch does to each user and key.
        let mut users: BTreeMap<i64, UserCharge> = BTreeMap::new();
        let mut keys: BTreeMap<i64, KeyCharge> = BTreeMap::new();
        let mut logs = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        for (s, &skipped) in batch.iter().zip(&skipped) {
            let charge = s.quota.get();
            let (outcome, user_id, key_unheld) = if let Some(lease) = &s.lease {
                if skipped {
                    outcomes.push(SettleOutcome::AlreadyFinished);
                    continue;
                }
                let outcome = if held_leases
                    .binary_search_by(|l| l.as_str().cmp(lease.as_str()))
                    .is_ok()
                {
                    SettleOutcome::Settled
                } else {
                    SettleOutcome::SettledAfterExpiry
                };
                // The lease's row keeps holding the charge until its instance folds it (see
                // `LeaseRepository`); a lease holds nothing against the key (capped keys never
                // take one).
                (outcome, s.user_id.get(), 0)
            } else {
                let Some(row) = rows.remove(&s.request_id) else {
                    outcomes.push(SettleOutcome::AlreadyFinished);
                    continue;
                };
                let (outcome, unheld) = if row.state == HELD {
                    (SettleOutcome::Settled, row.amount)
                } else {
                    // The sweeper gave the reservation back already: charge only.
                    (SettleOutcome::SettledAfterExpiry, 0)
                };
                let u = users.entry(row.user_id).or_default();
                u.unheld = u.unheld.saturating_add(unheld);
                (outcome, row.user_id, unheld)
            };
            let u = users.entry(user_id).or_default();
            u.charge = u.charge.saturating_add(charge);
            u.calls += 1;
            let k = keys.entry(s.token_id.get()).or_default();
            k.charge = k.charge.saturating_add(charge);
            k.unheld = k.unheld.saturating_add(key_unheld);
            let mut entry = s.log_entry();
            // The hold row (or the lease) is the authority on whose call this was.
            entry.user_id = tollgate_domain::ids::UserId::new(user_id);
            logs.push(entry);
            outcomes.push(outcome);
        }
        // Lock order as everywhere: (hold rows above,) users, then keys, each in id order.
        charge_users(&txn, &users).await?;
        charge_keys(&txn, &keys).await?;
        insert_logs(&txn, &logs).await?;
        txn.commit().await?;
        Ok(outcomes)
    }

    /// Releases (`expiring == false`) or expires a hold in flight.
    pub(crate) async fn finish_once(
        &self,
        request_id: &str,
        expiring: bool,
    ) -> Result<bool, DbErr> {
        let txn = self.db.begin().await?;
        let row = if expiring {
            expire(&txn, request_id).await?
        } else {
            take(&txn, request_id, HELD).await?
        };
        let Some(row) = row else {
            txn.rollback().await?;
            return Ok(false);
        };
        unreserve(&txn, &row).await?;
        txn.commit().await?;
        Ok(true)
    }
}

#[async_trait]
impl BillingRepository for SeaStore {
    async fn hold(&self, h: &Hold, now: UnixTime) -> Result<Result<(), HoldRefusal>, RepoError> {
        retrying("hold", || self.hold_once(h, now)).await
    }

    async fn settle(&self, s: &Settlement) -> Result<SettleOutcome, RepoError> {
        if s.lease.is_some() {
            // Only the batch knows how to settle against a lease. A caller of `settle` may be
            // retrying after an unclear failure and cannot say so: the call's receipt (a batch
            // of one) tells.
            let out =
                retrying("settle", || self.settle_batch_once(std::slice::from_ref(s))).await?;
            return Ok(out
                .first()
                .copied()
                .unwrap_or(SettleOutcome::AlreadyFinished));
        }
        retrying("settle", || self.settle_once(s)).await
    }

    async fn settle_batch(
        &self,
        batch: &[Settlement],
        _attempt: BatchAttempt,
    ) -> Result<Vec<SettleOutcome>, RepoError> {
        // Every attempt, first or not, writes the batch's receipt first: an attempt that
        // failed at its COMMIT, after writing, is found by the next one.
        retrying("settle", || self.settle_batch_once(batch)).await
    }

    async fn release(&self, request_id: &str) -> Result<bool, RepoError> {
        retrying("release", || self.finish_once(request_id, false)).await
    }

    async fn expire_holds(&self, now: UnixTime, limit: u64) -> Result<u64, RepoError> {
        // A plain read picks the candidates (no range locks that would block new holds); each
        // is then expired by its own conditional update, so a concurrent settle wins or loses
        // cleanly.
        let due: Vec<String> = hold::Entity::find()
            .select_only()
            .column(hold::Column::RequestId)
            .filter(hold::Column::State.eq(HELD))
            // Leases have no expiry of their own: they are returned when idle, at shutdown, or
            // by the instance registry when their instance dies.
            .filter(hold::Column::TokenId.ne(LEASE_TOKEN))
            .filter(hold::Column::ExpiresAt.lt(now.secs()))
            .order_by_asc(hold::Column::ExpiresAt)
            .limit(limit)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let mut expired = 0;
        for request_id in due {
            if retrying("expire", || self.finish_once(&request_id, true)).await? {
                expired += 1;
            }
        }
        // The sweep also forgets settlement receipts no attempt can still need, a bounded
        // statement at a time (each its own transaction), at most a few a sweep. A failure
        // here must not hide the holds already expired: it is logged, and the next sweep
        // tries again.
        for _ in 0..PRUNES_PER_SWEEP {
            match retrying("prune receipts", || prune_receipts(&self.db, now)).await {
                Ok(n) if n == RECEIPTS_PER_PRUNE => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "pruning settlement receipts failed; the next sweep retries");
                    break;
                }
            }
        }
        Ok(expired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each update reads the rows first, then finds each by primary key, on every backend
    /// the tests have.
    #[tokio::test]
    async fn each_update_looks_its_rows_up_by_primary_key() {
        for store in crate::testing::stores().await.expect("stores") {
            let backend = store.db.get_database_backend();
            for update in [&CHARGE_USERS, &CHARGE_KEYS] {
                // Two rows: SQLite reads a single row's VALUES as constants.
                let sql = update.sql(backend, 2);
                let values: Vec<sea_orm::Value> = (1..=2 * update.fields.len() as i64)
                    .map(sea_orm::Value::from)
                    .collect();
                let plan = store
                    .explain(Statement::from_sql_and_values(
                        backend,
                        sql.as_str(),
                        values,
                    ))
                    .await
                    .expect("explain");
                // MySQL's lines without `Extra`: which table, how it is read, by which key.
                let plan: Vec<String> = if backend == DbBackend::MySql {
                    plan.iter()
                        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
                        .collect()
                } else {
                    plan
                };
                let expected = if backend == DbBackend::MySql {
                    vec![
                        "table=<derived2> type=ALL key=".to_owned(),
                        "table=t type=eq_ref key=PRIMARY".to_owned(),
                        // The rows: the first row's SELECT and the `VALUES` after it.
                        "table= type= key=".to_owned(),
                        "table= type= key=".to_owned(),
                    ]
                } else {
                    vec![
                        "SCAN 2-ROW VALUES CLAUSE".to_owned(),
                        "SEARCH t USING INTEGER PRIMARY KEY (rowid=?)".to_owned(),
                    ]
                };
                assert_eq!(plan, expected, "{sql}");
            }
        }
    }

    /// MariaDB (SQLite has one writer): a lease's growth committed after a transaction's
    /// snapshot, before it deletes the row, fails the transaction (to be retried) instead of
    /// the row being deleted and given back at the amount the snapshot shows.
    #[tokio::test]
    async fn ending_a_lease_grown_since_its_snapshot_fails_and_is_retried() {
        use tollgate_domain::billing::{Lease, LeaseGrowth};
        use tollgate_domain::quota::Quota;
        use tollgate_domain::repository::LeaseRepository;
        let at = UnixTime::from_secs(1_764_000_000);
        for store in crate::testing::stores().await.expect("stores") {
            if store.db.get_database_backend() != DbBackend::MySql {
                continue;
            }
            let (user, _) = crate::testing::funded(&store, "snapshot-end", "1", None, 77, at).await;
            let lease = Lease::new(
                tollgate_domain::cluster::InstanceId::from_random([8; 12]),
                user,
                1,
            );
            let grow = |amount: i64, create: bool| {
                store.grow_lease(&lease, Quota::new(amount), Quota::ZERO, 1, create, at)
            };
            assert_eq!(grow(10_000, true).await.expect("grow"), LeaseGrowth::Grown);
            let txn = store.db.begin().await.expect("begin");
            // The snapshot: the row as it is now.
            let seen = hold::Entity::find()
                .filter(hold::Column::RequestId.eq(lease.id.as_str()))
                .one(&txn)
                .await
                .expect("read")
                .expect("the lease's row");
            assert_eq!(seen.amount, 10_000);
            assert_eq!(grow(2_000, false).await.expect("grow"), LeaseGrowth::Grown);
            let raced = take(&txn, lease.id.as_str(), HELD).await;
            assert!(
                matches!(&raced, Err(DbErr::Custom(m)) if m == RACED),
                "{raced:?}"
            );
            txn.rollback().await.expect("rollback");
            // Retried: all of it comes back.
            assert_eq!(
                store.end_lease(&lease.id).await.expect("end"),
                Some(Quota::new(12_000))
            );
            let after = user::Entity::find_by_id(user.get())
                .one(&store.db)
                .await
                .expect("read")
                .expect("the user");
            assert_eq!(after.held_quota, 0);
        }
    }

    /// A receipt is written once; the sweep's prune forgets it only once it is older than
    /// [`BatchReceipt::KEPT_SECS`], after which its batch could be written again.
    #[tokio::test]
    async fn a_receipt_is_written_once_and_pruned_only_after_it_is_kept() {
        use tollgate_domain::ids::{TokenId, UserId};
        use tollgate_domain::pricing::Usage;
        use tollgate_domain::quota::Quota;
        let at = UnixTime::from_secs(1_764_000_000);
        let lease = tollgate_domain::billing::Lease::new(
            tollgate_domain::cluster::InstanceId::from_random([3; 12]),
            UserId::new(1),
            1,
        );
        let call = |id: &str| Settlement {
            request_id: id.into(),
            user_id: UserId::new(1),
            token_id: TokenId::new(1),
            token_name: "key".into(),
            model: "m".into(),
            usage: Usage::new(1, 1),
            quota: Quota::new(1),
            is_stream: false,
            latency_ms: 1,
            at,
            channel_id: None,
            lease: Some(lease.id.clone()),
        };
        let receipt = BatchReceipt::of(&[call("kept-1")]).expect("a lease call");
        let other = BatchReceipt::of(&[call("kept-2")]).expect("a lease call");
        for store in crate::testing::stores().await.expect("stores") {
            let txn = store.db.begin().await.expect("begin");
            assert!(write_receipt(&txn, receipt).await.expect("write"));
            assert!(
                !write_receipt(&txn, receipt).await.expect("again"),
                "written once"
            );
            assert!(write_receipt(&txn, other).await.expect("another batch"));
            txn.commit().await.expect("commit");
            let kept = UnixTime::from_secs(at.secs() + BatchReceipt::KEPT_SECS);
            assert_eq!(prune_receipts(&store.db, kept).await.expect("prune"), 0);
            let txn = store.db.begin().await.expect("begin");
            assert!(!write_receipt(&txn, receipt).await.expect("still there"));
            txn.rollback().await.expect("rollback");
            let past = UnixTime::from_secs(kept.secs() + 1);
            assert_eq!(prune_receipts(&store.db, past).await.expect("prune"), 2);
            let txn = store.db.begin().await.expect("begin");
            assert!(write_receipt(&txn, receipt).await.expect("forgotten"));
            txn.rollback().await.expect("rollback");
            // One statement deletes a bounded number; the sweep runs it again while it is full.
            let rows: Vec<String> = (0..=RECEIPTS_PER_PRUNE)
                .map(|i| format!("(1, {i})"))
                .collect();
            store
                .db
                .execute_unprepared(&format!(
                    "INSERT INTO settle_receipts (at, digest) VALUES {}",
                    rows.join(", ")
                ))
                .await
                .expect("old receipts");
            let now = UnixTime::from_secs(BatchReceipt::KEPT_SECS + 2);
            assert_eq!(
                prune_receipts(&store.db, now).await.expect("prune"),
                RECEIPTS_PER_PRUNE
            );
            assert_eq!(prune_receipts(&store.db, now).await.expect("prune"), 1);
            assert_eq!(store.expire_holds(now, 10).await.expect("sweep"), 0);
        }
    }

    #[test]
    fn id_lists_are_padded_to_a_power_of_two_with_the_last_id() {
        let lists = |n: usize| {
            let ids: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
            id_lists(&ids)
                .map(|l| {
                    (
                        l.len(),
                        l.first().map(|s| s.to_string()),
                        l.last().map(|s| s.to_string()),
                    )
                })
                .collect::<Vec<_>>()
        };
        assert!(lists(0).is_empty());
        let one = |len: usize, first: &str, last: &str| {
            (len, Some(first.to_owned()), Some(last.to_owned()))
        };
        assert_eq!(lists(1), vec![one(1, "r0", "r0")]);
        assert_eq!(lists(3), vec![one(4, "r0", "r2")]);
        assert_eq!(lists(256), vec![one(256, "r0", "r255")]);
        assert_eq!(
            lists(IDS_PER_READ + 5),
            vec![one(IDS_PER_READ, "r0", "r511"), one(8, "r512", "r516")]
        );
        // The padding repeats the last id only: every id is listed, none added.
        let ids = ["a", "b", "c", "d", "e"];
        let list = id_lists(&ids).next().expect("a list");
        assert_eq!(list, ["a", "b", "c", "d", "e", "e", "e", "e"]);
    }

    #[test]
    fn each_backend_reads_the_rows_as_a_table_joined_by_primary_key() {
        let sqlite = CHARGE_KEYS.sql(DbBackend::Sqlite, 2);
        assert_eq!(
            sqlite,
            "UPDATE OR FAIL tokens AS t SET used_quota = t.used_quota + v.charge, held_quota = \
             t.held_quota - v.unheld FROM (SELECT column1 AS id, column2 AS charge, column3 AS \
             unheld FROM (VALUES (?, ?, ?), (?, ?, ?))) AS v WHERE t.id = v.id"
        );
        let mysql = CHARGE_KEYS.sql(DbBackend::MySql, 2);
        assert_eq!(
            mysql,
            "UPDATE (SELECT ? AS id, ? AS charge, ? AS unheld UNION ALL VALUES (?, ?, ?)) AS v \
             STRAIGHT_JOIN tokens AS t FORCE INDEX (PRIMARY) ON t.id = v.id SET t.used_quota = \
             t.used_quota + v.charge, t.held_quota = t.held_quota - v.unheld"
        );
    }
}
