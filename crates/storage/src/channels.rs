//! [`ChannelRepository`] and [`PriceRepository`] on SeaORM. Prices are kept as exact decimal
//! text; channel model lists and mappings as JSON text. Channel keys are encrypted at rest when
//! the store has a cipher (see `crypto`), and [`SeaStore::secure_channel_keys`] brings the rows
//! written before that under it.

use crate::SeaStore;
use crate::crypto::{CipherError, KeyCipher, MARKER, is_encrypted};
use crate::entity::{channel, price};
use crate::error::{StorageError, corrupt};
use async_trait::async_trait;
use rust_decimal::Decimal;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeMap;
use std::str::FromStr;
use tollgate_domain::RepoError;
use tollgate_domain::channel::{Channel, ChannelKey, ChannelKind, ChannelSpec, ChannelStatus};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::pricing::{ModelName, Price};
use tollgate_domain::ratelimit::RateLimits;
use tollgate_domain::repository::{ChannelRepository, PriceRepository};
use tollgate_domain::time::UnixTime;

/// The setting that holds the secret, named in errors so an operator knows what to fix.
const SECRET_VAR: &str = "TOLLGATE_SECRET_KEY";

/// The key to present upstream from a stored `api_key` of channel `id`: decrypted, or as
/// stored for a row written without a cipher. An encrypted value is never returned as a key.
fn reveal(stored: String, cipher: Option<&KeyCipher>, id: i64) -> Result<String, StorageError> {
    if !is_encrypted(&stored) {
        return Ok(stored);
    }
    let Some(cipher) = cipher else {
        return Err(StorageError::SecretKey(format!(
            "channel {id}: its key is encrypted; set {SECRET_VAR} to the secret it was \
             encrypted with"
        )));
    };
    cipher.decrypt(&stored).map_err(|e| unreadable(id, e))
}

fn unreadable(id: i64, e: CipherError) -> StorageError {
    StorageError::SecretKey(match e {
        CipherError::Rejected => format!(
            "channel {id}: its key does not decrypt with {SECRET_VAR} (it was encrypted with \
             another secret, or altered)"
        ),
        other => format!("channel {id}: its key cannot be read: {other}"),
    })
}

/// The `api_key` column for `key`: encrypted with a cipher, else as given. An empty key (a
/// channel kind that needs none) stays empty: there is nothing to hide.
fn conceal(key: &str, cipher: Option<&KeyCipher>) -> Result<String, StorageError> {
    match cipher {
        _ if key.is_empty() => Ok(String::new()),
        Some(c) => c
            .encrypt(key)
            .map_err(|e| StorageError::SecretKey(format!("cannot encrypt a channel key: {e}"))),
        // Stored as given, such a key would read back as an encrypted one and make every
        // channel list fail; only a cipher can store it (encrypted, so unambiguous).
        None if is_encrypted(key) => Err(StorageError::SecretKey(format!(
            "a channel key starting with \"{MARKER}\" can be stored only encrypted; set \
             {SECRET_VAR}"
        ))),
        None => Ok(key.to_owned()),
    }
}

fn to_channel(m: channel::Model, cipher: Option<&KeyCipher>) -> Result<Channel, StorageError> {
    let models: Vec<String> =
        serde_json::from_str(&m.models).map_err(|_| corrupt("channel models", m.id))?;
    let models = models
        .iter()
        .map(|s| ModelName::parse(s))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| corrupt("channel model name", m.id))?;
    let model_mapping: BTreeMap<String, String> = serde_json::from_str(&m.model_mapping)
        .map_err(|_| corrupt("channel model mapping", m.id))?;
    Ok(Channel {
        id: ChannelId::new(m.id),
        spec: ChannelSpec {
            name: m.name,
            kind: ChannelKind::parse(&m.kind).ok_or_else(|| corrupt("channel kind", m.id))?,
            base_url: m.base_url,
            key: ChannelKey::new(reveal(m.api_key, cipher, m.id)?),
            models,
            model_mapping,
            priority: m.priority,
            weight: u32::try_from(m.weight).map_err(|_| corrupt("channel weight", m.id))?,
            limits: RateLimits {
                rpm: m.rpm_limit.and_then(|n| u32::try_from(n).ok()),
                tpm: m.tpm_limit.and_then(|n| u64::try_from(n).ok()),
                concurrency: None,
            },
        },
        status: ChannelStatus::from_code(m.status),
        disabled_reason: m.disabled_reason,
        created_at: UnixTime::from_secs(m.created_at),
        updated_at: UnixTime::from_secs(m.updated_at),
    })
}

fn spec_columns(
    spec: &ChannelSpec,
    cipher: Option<&KeyCipher>,
    row: &mut channel::ActiveModel,
) -> Result<(), StorageError> {
    let models: Vec<&str> = spec.models.iter().map(ModelName::as_str).collect();
    let json = |e: serde_json::Error| StorageError::Corrupt(format!("channel json: {e}"));
    row.name = Set(spec.name.clone());
    row.kind = Set(spec.kind.as_str().to_owned());
    row.base_url = Set(spec.base_url.clone());
    row.api_key = Set(conceal(spec.key.expose(), cipher)?);
    row.models = Set(serde_json::to_string(&models).map_err(json)?);
    row.model_mapping = Set(serde_json::to_string(&spec.model_mapping).map_err(json)?);
    row.priority = Set(spec.priority);
    row.weight = Set(i64::from(spec.weight));
    row.rpm_limit = Set(spec.limits.rpm.map(i64::from));
    row.tpm_limit = Set(spec.limits.tpm.and_then(|n| i64::try_from(n).ok()));
    Ok(())
}

/// What [`SeaStore::secure_channel_keys`] found and did. Channels without a key are not
/// counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyStatus {
    /// Keys stored as given that this call encrypted.
    pub encrypted_now: usize,
    /// Keys encrypted before this call (all of them decrypt with the store's secret).
    pub already_encrypted: usize,
    /// Keys left as given: every key when the store has no cipher; with one, only a key that
    /// an admin kept changing while this ran (the next start-up encrypts it).
    pub plain: usize,
}

/// How often one row is tried again when an admin changed its key between the read and the
/// conditional write.
const SECURE_ATTEMPTS: usize = 3;

/// What became of one channel's key in [`SeaStore::secure_channel_keys`].
enum Secured {
    NoKey,
    EncryptedNow,
    Already,
    Plain,
    Unreadable(CipherError),
}

impl SeaStore {
    /// Brings the stored channel keys in line with the store's cipher; the server runs it at
    /// start-up, before serving.
    ///
    /// With a cipher: checks that every encrypted key decrypts (before writing anything, so a
    /// wrong secret never encrypts more keys with itself), then encrypts every key stored as
    /// given, each by a conditional UPDATE on the value read so that an admin's concurrent
    /// edit is not overwritten. Without one: counts the keys stored as given, so the caller can
    /// warn once.
    ///
    /// # Errors
    /// [`StorageError::SecretKey`] when encrypted keys exist but the store has no cipher, or
    /// when they do not decrypt with its secret; a database error otherwise.
    pub async fn secure_channel_keys(&self) -> Result<KeyStatus, StorageError> {
        let rows: Vec<(i64, String)> = channel::Entity::find()
            .select_only()
            .columns([channel::Column::Id, channel::Column::ApiKey])
            .order_by_asc(channel::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut status = KeyStatus::default();
        let Some(cipher) = self.cipher.as_deref() else {
            let encrypted: Vec<i64> = rows
                .iter()
                .filter(|(_, k)| is_encrypted(k))
                .map(|(id, _)| *id)
                .collect();
            if !encrypted.is_empty() {
                return Err(StorageError::SecretKey(format!(
                    "channel keys are encrypted ({}); set {SECRET_VAR} to the secret they \
                     were encrypted with",
                    channel_list(&encrypted)
                )));
            }
            status.plain = rows.iter().filter(|(_, k)| !k.is_empty()).count();
            return Ok(status);
        };

        let failed: Vec<(i64, CipherError)> = rows
            .iter()
            .filter(|(_, k)| is_encrypted(k))
            .filter_map(|(id, k)| cipher.decrypt(k).err().map(|e| (*id, e)))
            .collect();
        check_decrypted(&failed)?;

        let mut failed = Vec::new();
        for (id, stored) in rows {
            match self.secure_one(cipher, id, stored).await? {
                Secured::NoKey => {}
                Secured::EncryptedNow => status.encrypted_now += 1,
                Secured::Already => status.already_encrypted += 1,
                Secured::Plain => status.plain += 1,
                // Written meanwhile by an instance with another secret.
                Secured::Unreadable(e) => failed.push((id, e)),
            }
        }
        check_decrypted(&failed)?;
        Ok(status)
    }

    async fn secure_one(
        &self,
        cipher: &KeyCipher,
        id: i64,
        mut stored: String,
    ) -> Result<Secured, StorageError> {
        let mut attempts = 0;
        loop {
            if stored.is_empty() {
                return Ok(Secured::NoKey);
            }
            if is_encrypted(&stored) {
                return Ok(match cipher.decrypt(&stored) {
                    Ok(_) => Secured::Already,
                    Err(e) => Secured::Unreadable(e),
                });
            }
            if attempts == SECURE_ATTEMPTS {
                return Ok(Secured::Plain);
            }
            attempts += 1;
            let sealed = conceal(&stored, Some(cipher))?;
            // Only the value read is replaced: an admin's edit since then stands. The value
            // changes, so MySQL (which counts changed rows) reports 1 as SQLite does.
            let done = channel::Entity::update_many()
                .col_expr(channel::Column::ApiKey, Expr::value(sealed))
                .filter(channel::Column::Id.eq(id))
                .filter(channel::Column::ApiKey.eq(stored.as_str()))
                .exec(&self.db)
                .await?;
            if done.rows_affected == 1 {
                return Ok(Secured::EncryptedNow);
            }
            match self.raw_channel_key(ChannelId::new(id)).await? {
                Some(now) => stored = now,
                None => return Ok(Secured::NoKey),
            }
        }
    }

    /// The `api_key` column of channel `id` exactly as stored (encrypted or not), for tests of
    /// encryption at rest; `None` when there is no such channel.
    #[doc(hidden)]
    pub async fn raw_channel_key(&self, id: ChannelId) -> Result<Option<String>, StorageError> {
        Ok(channel::Entity::find_by_id(id.get())
            .select_only()
            .column(channel::Column::ApiKey)
            .into_tuple()
            .one(&self.db)
            .await?)
    }

    /// Overwrites the `api_key` column of channel `id` with `stored` as it is, for tests that
    /// damage it on purpose. Whether the channel exists.
    #[doc(hidden)]
    pub async fn put_raw_channel_key(
        &self,
        id: ChannelId,
        stored: &str,
    ) -> Result<bool, StorageError> {
        channel::Entity::update_many()
            .col_expr(channel::Column::ApiKey, Expr::value(stored))
            .filter(channel::Column::Id.eq(id.get()))
            .exec(&self.db)
            .await?;
        Ok(self.raw_channel_key(id).await?.is_some())
    }
}

/// The start-up error for keys that do not decrypt with the configured secret.
fn check_decrypted(failed: &[(i64, CipherError)]) -> Result<(), StorageError> {
    let rejected: Vec<i64> = failed
        .iter()
        .filter(|(_, e)| *e == CipherError::Rejected)
        .map(|(id, _)| *id)
        .collect();
    if !rejected.is_empty() {
        return Err(StorageError::SecretKey(format!(
            "{SECRET_VAR} does not decrypt the stored keys of {}: they were encrypted with \
             another secret (or altered); set {SECRET_VAR} to the secret they were encrypted \
             with",
            channel_list(&rejected)
        )));
    }
    match failed.first() {
        Some(&(id, e)) => Err(unreadable(id, e)),
        None => Ok(()),
    }
}

/// `channel 3` or `channels 1, 4, 9` (the first ten, then how many more).
fn channel_list(ids: &[i64]) -> String {
    const SHOWN: usize = 10;
    let mut text = if ids.len() == 1 {
        "channel ".to_owned()
    } else {
        "channels ".to_owned()
    };
    let shown: Vec<String> = ids.iter().take(SHOWN).map(i64::to_string).collect();
    text.push_str(&shown.join(", "));
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

#[async_trait]
impl ChannelRepository for SeaStore {
    async fn list_channels(&self) -> Result<Vec<Channel>, RepoError> {
        let rows = channel::Entity::find()
            .order_by_asc(channel::Column::Id)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let cipher = self.cipher.as_deref();
        Ok(rows
            .into_iter()
            .map(|m| to_channel(m, cipher))
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn insert_channel(
        &self,
        spec: &ChannelSpec,
        now: UnixTime,
    ) -> Result<Channel, RepoError> {
        let mut row = channel::ActiveModel {
            status: Set(ChannelStatus::Enabled.code()),
            disabled_reason: Set(String::new()),
            created_at: Set(now.secs()),
            updated_at: Set(now.secs()),
            ..Default::default()
        };
        spec_columns(spec, self.cipher.as_deref(), &mut row)?;
        let id = channel::Entity::insert(row)
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?
            .last_insert_id;
        Ok(Channel {
            id: ChannelId::new(id),
            spec: spec.clone(),
            status: ChannelStatus::Enabled,
            disabled_reason: String::new(),
            created_at: now,
            updated_at: now,
        })
    }

    async fn update_channel(
        &self,
        id: ChannelId,
        spec: &ChannelSpec,
        now: UnixTime,
    ) -> Result<Option<Channel>, RepoError> {
        let mut row = channel::ActiveModel {
            updated_at: Set(now.secs()),
            ..Default::default()
        };
        spec_columns(spec, self.cipher.as_deref(), &mut row)?;
        channel::Entity::update_many()
            .set(row)
            .filter(channel::Column::Id.eq(id.get()))
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        let found = channel::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(found
            .map(|m| to_channel(m, self.cipher.as_deref()))
            .transpose()?)
    }

    async fn delete_channel(&self, id: ChannelId) -> Result<bool, RepoError> {
        let done = channel::Entity::delete_by_id(id.get())
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(done.rows_affected == 1)
    }

    async fn set_channel_status(
        &self,
        id: ChannelId,
        status: ChannelStatus,
        reason: &str,
        now: UnixTime,
        only_from: Option<ChannelStatus>,
    ) -> Result<bool, RepoError> {
        let reason: String = reason.chars().take(500).collect();
        let mut update = channel::Entity::update_many()
            .col_expr(channel::Column::Status, Expr::value(status.code()))
            .col_expr(channel::Column::DisabledReason, Expr::value(reason))
            .col_expr(channel::Column::UpdatedAt, Expr::value(now.secs()))
            .filter(channel::Column::Id.eq(id.get()));
        if let Some(from) = only_from {
            update = update.filter(channel::Column::Status.eq(from.code()));
        }
        let done = update.exec(&self.db).await.map_err(StorageError::from)?;
        if only_from.is_some() {
            // The status itself changes, so the row counts as changed on MySQL too.
            return Ok(done.rows_affected == 1);
        }
        // MySQL counts only changed rows, so existence is checked apart.
        let exists = channel::Entity::find_by_id(id.get())
            .one(&self.db)
            .await
            .map_err(StorageError::from)?
            .is_some();
        Ok(exists)
    }
}

#[async_trait]
impl PriceRepository for SeaStore {
    async fn list_prices(&self) -> Result<Vec<(String, Price)>, RepoError> {
        let rows = price::Entity::find()
            .order_by_asc(price::Column::Model)
            .all(&self.db)
            .await
            .map_err(StorageError::from)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let d = |s: &str| Decimal::from_str(s).ok();
            let p = match (d(&r.input), d(&r.output), d(&r.cached_input)) {
                (Some(i), Some(o), Some(c)) => Price::new(i, o, c).ok(),
                _ => None,
            }
            .ok_or_else(|| StorageError::Corrupt(format!("price of {}", r.model)))?;
            out.push((r.model, p));
        }
        Ok(out)
    }

    async fn put_price(&self, model: &str, p: &Price, now: UnixTime) -> Result<(), RepoError> {
        let row = price::ActiveModel {
            model: Set(model.to_owned()),
            input: Set(p.input().to_string()),
            output: Set(p.output().to_string()),
            cached_input: Set(p.cached_input().to_string()),
            updated_at: Set(now.secs()),
        };
        price::Entity::insert(row)
            .on_conflict(
                OnConflict::column(price::Column::Model)
                    .update_columns([
                        price::Column::Input,
                        price::Column::Output,
                        price::Column::CachedInput,
                        price::Column::UpdatedAt,
                    ])
                    .to_owned(),
            )
            .exec(&self.db)
            .await
            .map_err(StorageError::from)?;
        Ok(())
    }
}
