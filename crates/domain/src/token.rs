//! API keys (tokens): generation, the hash that is stored instead of the key, masking, and the
//! validated create/delete commands. A key spends from its user's balance; an optional cap
//! (`quota_limit_usd`) limits it further.

use crate::ids::{ExternalUserId, TokenId, UserId, hex};
use crate::quota::Quota;
use crate::ratelimit::{MAX_CONCURRENCY, MAX_RPM, MAX_TPM, RateLimits};
use crate::time::UnixTime;
use crate::topup::NumberInput;
use crate::validation::{ValidationErrors, rules};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use std::fmt;

/// Random characters after `sk-`.
pub const KEY_CHARS: usize = 48;
const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// Validity when `expires_in_days` is absent or 0.
pub const DEFAULT_VALID_DAYS: i64 = 365;

/// A full API key, `sk-` + 48 alphanumerics. Shown to the platform once, never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey(String);

impl AccessKey {
    /// Generates a key from a source of random bytes (rejection sampling keeps the 62 characters
    /// equally likely: about 285 bits of entropy).
    pub fn generate(mut fill: impl FnMut(&mut [u8])) -> Self {
        let mut key = String::with_capacity(3 + KEY_CHARS);
        key.push_str("sk-");
        let mut buf = [0u8; 64];
        let mut n = 0;
        while n < KEY_CHARS {
            fill(&mut buf);
            for b in buf {
                // 248 = 4 × 62: bytes above it would favour the first characters.
                if b < 248 && n < KEY_CHARS {
                    key.push(char::from(ALPHABET[usize::from(b % 62)]));
                    n += 1;
                }
            }
        }
        AccessKey(key)
    }

    /// Recognises a presented key; `None` for anything that cannot be one of ours.
    #[must_use]
    pub fn parse(presented: &str) -> Option<Self> {
        let body = presented.strip_prefix("sk-")?;
        (body.len() == KEY_CHARS && body.bytes().all(|b| b.is_ascii_alphanumeric()))
            .then(|| AccessKey(presented.to_owned()))
    }

    /// The key itself, for the one response that shows it.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What is stored and looked up: SHA-256 of the key. A fast hash is right here because the
    /// key carries ~285 random bits; there is nothing to brute-force.
    #[must_use]
    pub fn hash(&self) -> KeyHash {
        KeyHash(hex(&Sha256::digest(self.0.as_bytes())))
    }

    /// The parts kept to show the key masked: first and last four characters after `sk-`.
    #[must_use]
    pub fn hint(&self) -> KeyHint {
        let body = &self.0[3..];
        KeyHint {
            prefix: body[..4].to_owned(),
            suffix: body[KEY_CHARS - 4..].to_owned(),
        }
    }
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessKey({})", self.hint().masked())
    }
}

/// Hex SHA-256 of an access key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    /// Hex text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// First and last four key characters, enough to recognise a key, useless to use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHint {
    /// First four characters after `sk-`.
    pub prefix: String,
    /// Last four characters.
    pub suffix: String,
}

impl KeyHint {
    /// `sk-abcd...wxyz`.
    #[must_use]
    pub fn masked(&self) -> String {
        format!("sk-{}...{}", self.prefix, self.suffix)
    }
}

/// Status as shown to the platform (the Go fork's numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    /// Usable.
    Enabled = 1,
    /// Switched off.
    Disabled = 2,
    /// Past its expiry.
    Expired = 3,
    /// Its own cap is spent.
    Exhausted = 4,
}

/// A stored token (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Id.
    pub id: TokenId,
    /// Owner.
    pub user_id: UserId,
    /// Name given by the platform.
    pub name: String,
    /// Masking hint.
    pub hint: KeyHint,
    /// Whether it was switched off.
    pub disabled: bool,
    /// Creation time.
    pub created_at: UnixTime,
    /// Expiry time.
    pub expires_at: UnixTime,
    /// Its own cap, if any.
    pub quota_limit: Option<Quota>,
    /// Quota spent through this key.
    pub used_quota: Quota,
    /// Its rate limits (SPEC §4.1).
    pub limits: RateLimits,
}

impl Token {
    /// Status at `now`.
    #[must_use]
    pub fn status(&self, now: UnixTime) -> TokenStatus {
        if self.disabled {
            TokenStatus::Disabled
        } else if now >= self.expires_at {
            TokenStatus::Expired
        } else if self.quota_limit.is_some_and(|cap| self.used_quota >= cap) {
            TokenStatus::Exhausted
        } else {
            TokenStatus::Enabled
        }
    }

    /// What the key can still spend: the user's balance, or less under its own cap.
    #[must_use]
    pub fn remain_quota(&self, user_balance: Quota) -> Quota {
        let balance = user_balance.max(Quota::ZERO);
        match self.quota_limit {
            Some(cap) => balance.min(Quota::new(
                cap.get().saturating_sub(self.used_quota.get()).max(0),
            )),
            None => balance,
        }
    }
}

/// The create-token request as received (`ExternalUserTokenRequest`).
#[derive(Debug, Default, garde::Validate)]
pub struct TokenInput {
    /// `external_user_id`.
    #[garde(custom(rules::text(true, 100)))]
    pub external_user_id: Option<String>,
    /// `token_name`.
    #[garde(custom(rules::text(true, 100)))]
    pub token_name: Option<String>,
    /// `expires_in_days` (integers beyond 64 bits saturate, and then fail `max`/`min`).
    #[garde(custom(rules::checked(days_tag)))]
    pub expires_in_days: Option<i64>,
    /// `quota_limit_usd`.
    #[garde(custom(rules::checked(cap_tag)))]
    pub quota_limit_usd: Option<NumberInput>,
    /// `rpm_limit` (integers beyond 64 bits saturate, and then fail `max`/`min`).
    #[garde(custom(rules::checked(|v: &Option<i64>| range_tag(*v, MAX_RPM))))]
    pub rpm_limit: Option<i64>,
    /// `tpm_limit`.
    #[garde(custom(rules::checked(|v: &Option<i64>| range_tag(*v, MAX_TPM))))]
    pub tpm_limit: Option<i64>,
    /// `max_concurrency`.
    #[garde(custom(rules::checked(|v: &Option<i64>| range_tag(*v, MAX_CONCURRENCY))))]
    pub max_concurrency: Option<i64>,
}

/// `min=1,max=<max>` when present.
fn range_tag(v: Option<i64>, max: i64) -> Option<&'static str> {
    match v {
        Some(n) if n < 1 => Some("min"),
        Some(n) if n > max => Some("max"),
        _ => None,
    }
}

fn days_tag(v: &Option<i64>) -> Option<&'static str> {
    match *v {
        Some(d) if d < 0 => Some("min"),
        Some(d) if d > 3650 => Some("max"),
        _ => None,
    }
}

fn cap_quota(v: &NumberInput) -> Result<Quota, &'static str> {
    let d = v.exact()?;
    if d < Decimal::new(1, 2) {
        return Err("min");
    }
    Quota::from_usd(d).ok_or("max")
}

fn cap_tag(v: &Option<NumberInput>) -> Option<&'static str> {
    v.as_ref().and_then(|n| cap_quota(n).err())
}

const TOKEN_FIELDS: &[(&str, &str)] = &[
    ("external_user_id", "ExternalUserId"),
    ("token_name", "TokenName"),
    ("expires_in_days", "ExpiresInDays"),
    ("quota_limit_usd", "QuotaLimitUSD"),
    ("rpm_limit", "RpmLimit"),
    ("tpm_limit", "TpmLimit"),
    ("max_concurrency", "MaxConcurrency"),
];

/// A validated create-token command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Owner.
    pub external_user_id: ExternalUserId,
    /// Name.
    pub name: String,
    /// Days until expiry (1..=3650).
    pub valid_days: i64,
    /// Own cap, if any.
    pub quota_limit: Option<Quota>,
    /// Own rate limits (unset ones take the configured defaults when the key is made).
    pub limits: RateLimits,
}

impl TokenInput {
    /// Applies the rules of `ExternalUserTokenRequest`.
    pub fn into_command(self) -> Result<NewToken, ValidationErrors> {
        const S: &str = "ExternalUserTokenRequest";
        ValidationErrors::check(&self, S, TOKEN_FIELDS)?;
        let fail = |field, tag| ValidationErrors::single(S, field, tag);
        let external_user_id = self
            .external_user_id
            .and_then(ExternalUserId::parse)
            .ok_or_else(|| fail("ExternalUserId", "required"))?;
        let name = self
            .token_name
            .ok_or_else(|| fail("TokenName", "required"))?;
        let valid_days = match self.expires_in_days {
            None | Some(0) => DEFAULT_VALID_DAYS,
            Some(d) => d,
        };
        let quota_limit = self
            .quota_limit_usd
            .as_ref()
            .map(cap_quota)
            .transpose()
            .map_err(|tag| fail("QuotaLimitUSD", tag))?;
        // In range (checked above), so these conversions cannot fail.
        let limits = RateLimits {
            rpm: self.rpm_limit.and_then(|n| u32::try_from(n).ok()),
            tpm: self.tpm_limit.and_then(|n| u64::try_from(n).ok()),
            concurrency: self.max_concurrency.and_then(|n| u32::try_from(n).ok()),
        };
        Ok(NewToken {
            external_user_id,
            name,
            valid_days,
            quota_limit,
            limits,
        })
    }
}

/// What the storage needs to insert a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    /// Owner.
    pub user_id: UserId,
    /// Name.
    pub name: String,
    /// Hash of the key.
    pub key_hash: KeyHash,
    /// Masking hint.
    pub hint: KeyHint,
    /// Creation time.
    pub created_at: UnixTime,
    /// Expiry time.
    pub expires_at: UnixTime,
    /// Own cap.
    pub quota_limit: Option<Quota>,
    /// Rate limits.
    pub limits: RateLimits,
}

/// A created token with its key, for the one response that shows the key.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The stored token.
    pub token: Token,
    /// The full key.
    pub key: AccessKey,
    /// What the key can spend now.
    pub remain_quota: Quota,
}

/// The delete-token request as received (`DeleteExternalUserTokenRequest`).
#[derive(Debug, Default, garde::Validate)]
pub struct DeleteTokenInput {
    /// `external_user_id`.
    #[garde(custom(rules::text(true, 100)))]
    pub external_user_id: Option<String>,
    /// `token_id` (0 fails `required`, as in Go).
    #[garde(custom(rules::checked(|v: &Option<i64>| matches!(v, None | Some(0)).then_some("required"))))]
    pub token_id: Option<i64>,
}

/// A validated delete-token command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteToken {
    /// Owner.
    pub external_user_id: ExternalUserId,
    /// Token to delete.
    pub token_id: TokenId,
}

impl DeleteTokenInput {
    /// Applies the rules of `DeleteExternalUserTokenRequest`.
    pub fn into_command(self) -> Result<DeleteToken, ValidationErrors> {
        const S: &str = "DeleteExternalUserTokenRequest";
        let fields = &[
            ("external_user_id", "ExternalUserId"),
            ("token_id", "TokenId"),
        ];
        ValidationErrors::check(&self, S, fields)?;
        let fail = |field| ValidationErrors::single(S, field, "required");
        Ok(DeleteToken {
            external_user_id: self
                .external_user_id
                .and_then(ExternalUserId::parse)
                .ok_or_else(|| fail("ExternalUserId"))?,
            token_id: TokenId::new(self.token_id.ok_or_else(|| fail("TokenId"))?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `source`, which panics once asked for more buffers than any test key needs, so a
    /// generator that never finishes fails at once instead of hanging.
    fn bounded(mut source: impl FnMut(&mut [u8])) -> impl FnMut(&mut [u8]) {
        let mut calls = 0;
        move |buf| {
            calls += 1;
            assert!(
                calls <= 100,
                "a key needs 48 characters, not {calls} buffers"
            );
            source(buf);
        }
    }

    /// Bytes 0, 1, 2, …
    fn counter_bytes() -> impl FnMut(&mut [u8]) {
        let mut n: u8 = 0;
        bounded(move |buf| {
            for b in buf.iter_mut() {
                *b = n;
                n = n.wrapping_add(1);
            }
        })
    }

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = AccessKey::generate(counter_bytes());
        assert_eq!(key.expose().len(), 51);
        assert!(AccessKey::parse(key.expose()).is_some());
        let hint = key.hint();
        assert_eq!(
            hint.masked(),
            format!("sk-{}...{}", &key.expose()[3..7], &key.expose()[47..])
        );
        assert_eq!(key.hash().as_str().len(), 64);
        assert!(!format!("{key:?}").contains(&key.expose()[7..47]));
    }

    #[test]
    fn a_known_byte_source_gives_a_known_key_hash_and_hint() {
        let key = AccessKey::generate(counter_bytes());
        // Bytes 0, 1, 2, … pick the alphabet in order.
        assert_eq!(
            key.expose(),
            "sk-ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuv"
        );
        // SHA-256 of the key's text, as hex (`printf %s sk-ABC…uv | sha256sum`).
        assert_eq!(
            key.hash().as_str(),
            "cd6054ab23e773d580ccf561a7fcfd9a8a14de2c4057eb577f83a119266b7849"
        );
        assert_eq!(
            key.hint(),
            KeyHint {
                prefix: "ABCD".into(),
                suffix: "stuv".into()
            }
        );
        assert_eq!(key.hint().masked(), "sk-ABCD...stuv");
        assert_eq!(format!("{key:?}"), "AccessKey(sk-ABCD...stuv)");
        assert_eq!(AccessKey::parse(key.expose()), Some(key));
    }

    #[test]
    fn bytes_from_248_up_are_rejected_so_every_character_is_equally_likely() {
        // 248, 249 and 255 are skipped; 0, 62, 124 and 186 are 'A'; 61, 123, 185 and 247 are
        // '9'; 1 is 'B'. Nine characters per twelve bytes.
        let pattern = [248u8, 249, 255, 0, 61, 62, 123, 124, 185, 186, 247, 1];
        let mut i = 0;
        let key = AccessKey::generate(bounded(|buf| {
            for b in buf.iter_mut() {
                *b = pattern[i % pattern.len()];
                i += 1;
            }
        }));
        assert_eq!(
            key.expose(),
            "sk-A9A9A9A9BA9A9A9A9BA9A9A9A9BA9A9A9A9BA9A9A9A9BA9A"
        );
        // A source that only gives rejected bytes at first is read again until 48 are taken.
        let mut calls = 0;
        let key = AccessKey::generate(bounded(|buf| {
            calls += 1;
            buf.fill(if calls < 3 { 250 } else { 63 });
        }));
        assert_eq!(key.expose(), format!("sk-{}", "B".repeat(48)));
        assert_eq!(calls, 3);
    }

    #[test]
    fn foreign_keys_are_not_parsed() {
        for bad in [
            "sk-invalid-token",
            "",
            "sk-",
            &format!("sk-{}", "a".repeat(47)),
            &format!("pk-{}", "a".repeat(48)),
        ] {
            assert!(AccessKey::parse(bad).is_none(), "{bad}");
        }
    }

    fn token(cap: Option<i64>, used: i64) -> Token {
        Token {
            id: TokenId::new(1),
            user_id: UserId::new(1),
            name: "t".into(),
            hint: KeyHint {
                prefix: "abcd".into(),
                suffix: "wxyz".into(),
            },
            disabled: false,
            created_at: UnixTime::from_secs(0),
            expires_at: UnixTime::from_secs(100),
            quota_limit: cap.map(Quota::new),
            used_quota: Quota::new(used),
            limits: RateLimits::default(),
        }
    }

    #[test]
    fn status_reflects_expiry_and_cap() {
        assert_eq!(
            token(None, 0).status(UnixTime::from_secs(99)),
            TokenStatus::Enabled
        );
        assert_eq!(
            token(None, 0).status(UnixTime::from_secs(100)),
            TokenStatus::Expired
        );
        assert_eq!(
            token(Some(10), 10).status(UnixTime::from_secs(1)),
            TokenStatus::Exhausted
        );
    }

    #[test]
    fn status_precedence_is_disabled_expired_exhausted() {
        let at = UnixTime::from_secs(50);
        let disabled = Token {
            disabled: true,
            expires_at: UnixTime::from_secs(10),
            ..token(Some(5), 9)
        };
        assert_eq!(disabled.status(at), TokenStatus::Disabled);
        let expired = Token {
            expires_at: UnixTime::from_secs(50),
            ..token(Some(5), 9)
        };
        assert_eq!(expired.status(at), TokenStatus::Expired);
        assert_eq!(token(Some(5), 9).status(at), TokenStatus::Exhausted);
        assert_eq!(token(Some(10), 9).status(at), TokenStatus::Enabled);
        // SPEC §3.4: 1 enabled, 2 disabled, 3 expired, 4 exhausted.
        assert_eq!(
            [
                TokenStatus::Enabled as i32,
                TokenStatus::Disabled as i32,
                TokenStatus::Expired as i32,
                TokenStatus::Exhausted as i32
            ],
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn remain_is_the_balance_or_less_under_the_cap() {
        let balance = Quota::new(1_000);
        assert_eq!(token(None, 0).remain_quota(balance), Quota::new(1_000));
        assert_eq!(token(None, 400).remain_quota(balance), Quota::new(1_000));
        assert_eq!(token(Some(500), 100).remain_quota(balance), Quota::new(400));
        assert_eq!(
            token(Some(5_000), 100).remain_quota(balance),
            Quota::new(1_000)
        );
        assert_eq!(token(Some(500), 900).remain_quota(balance), Quota::ZERO);
        assert_eq!(token(None, 0).remain_quota(Quota::new(-7)), Quota::ZERO);
        assert_eq!(
            token(Some(i64::MAX), -5).remain_quota(Quota::new(i64::MAX)),
            Quota::new(i64::MAX),
            "saturates instead of overflowing"
        );
    }

    #[test]
    fn day_and_cap_bounds_are_inclusive() {
        let with = |days: Option<i64>, cap: Option<&str>| TokenInput {
            external_user_id: Some("u".into()),
            token_name: Some("n".into()),
            expires_in_days: days,
            quota_limit_usd: cap.and_then(NumberInput::parse),
            ..TokenInput::default()
        };
        assert_eq!(
            with(Some(1), None)
                .into_command()
                .expect("1 day")
                .valid_days,
            1
        );
        assert_eq!(
            with(Some(3650), None)
                .into_command()
                .expect("3650 days")
                .valid_days,
            3650
        );
        // SPEC §3: min=0.01 when present; 0.01 USD is 5,000 quota.
        assert_eq!(
            with(None, Some("0.01"))
                .into_command()
                .expect("min cap")
                .quota_limit,
            Some(Quota::new(5_000))
        );
        assert_eq!(
            with(None, Some("0.0099"))
                .into_command()
                .expect_err("below")
                .to_string(),
            "请求参数错误: Key: 'ExternalUserTokenRequest.QuotaLimitUSD' Error:Field validation for 'QuotaLimitUSD' failed on the 'min' tag"
        );
        assert_eq!(
            with(None, Some("1e400"))
                .into_command()
                .expect_err("huge")
                .to_string(),
            "请求参数错误: Key: 'ExternalUserTokenRequest.QuotaLimitUSD' Error:Field validation for 'QuotaLimitUSD' failed on the 'max' tag"
        );
        assert_eq!(
            with(None, Some("1e20"))
                .into_command()
                .expect_err("beyond 64 bits")
                .to_string(),
            "请求参数错误: Key: 'ExternalUserTokenRequest.QuotaLimitUSD' Error:Field validation for 'QuotaLimitUSD' failed on the 'max' tag"
        );
        let cmd = with(Some(30), Some("2")).into_command().expect("valid");
        assert_eq!(
            cmd,
            NewToken {
                external_user_id: ExternalUserId::parse("u").expect("id"),
                name: "n".into(),
                valid_days: 30,
                quota_limit: Some(Quota::new(1_000_000)),
                limits: RateLimits::default(),
            }
        );
        // Several failing fields are reported together, in field order.
        let all = TokenInput {
            external_user_id: None,
            token_name: Some("x".repeat(101)),
            expires_in_days: Some(-3),
            quota_limit_usd: NumberInput::parse("-1"),
            ..TokenInput::default()
        };
        assert_eq!(
            all.into_command().expect_err("fails").to_string(),
            "请求参数错误: Key: 'ExternalUserTokenRequest.ExternalUserId' Error:Field validation for 'ExternalUserId' failed on the 'required' tag\n\
             Key: 'ExternalUserTokenRequest.TokenName' Error:Field validation for 'TokenName' failed on the 'max' tag\n\
             Key: 'ExternalUserTokenRequest.ExpiresInDays' Error:Field validation for 'ExpiresInDays' failed on the 'min' tag\n\
             Key: 'ExternalUserTokenRequest.QuotaLimitUSD' Error:Field validation for 'QuotaLimitUSD' failed on the 'min' tag"
        );
    }

    #[test]
    fn rate_limits_are_checked_against_the_spec_ranges() {
        let with = |rpm: Option<i64>, tpm: Option<i64>, concurrency: Option<i64>| TokenInput {
            external_user_id: Some("u".into()),
            token_name: Some("n".into()),
            rpm_limit: rpm,
            tpm_limit: tpm,
            max_concurrency: concurrency,
            ..TokenInput::default()
        };
        let key = |field: &str, tag: &str| {
            format!(
                "请求参数错误: Key: 'ExternalUserTokenRequest.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"
            )
        };
        // SPEC §3: rpm 1..=1,000,000, tpm 1..=1,000,000,000, concurrency 1..=10,000.
        for (rpm, tpm, concurrency) in [(1, 1, 1), (1_000_000, 1_000_000_000, 10_000)] {
            let cmd = with(Some(rpm), Some(tpm), Some(concurrency))
                .into_command()
                .expect("in range");
            assert_eq!(
                (cmd.limits.rpm, cmd.limits.tpm, cmd.limits.concurrency),
                (
                    Some(u32::try_from(rpm).expect("rpm")),
                    Some(u64::try_from(tpm).expect("tpm")),
                    Some(u32::try_from(concurrency).expect("concurrency"))
                )
            );
        }
        assert_eq!(
            with(None, None, None)
                .into_command()
                .expect("no limits")
                .limits,
            RateLimits::default()
        );
        let cases = [
            (with(Some(0), None, None), key("RpmLimit", "min")),
            (with(Some(1_000_001), None, None), key("RpmLimit", "max")),
            (with(None, Some(0), None), key("TpmLimit", "min")),
            (
                with(None, Some(1_000_000_001), None),
                key("TpmLimit", "max"),
            ),
            (with(None, None, Some(-1)), key("MaxConcurrency", "min")),
            (with(None, None, Some(10_001)), key("MaxConcurrency", "max")),
        ];
        for (input, expected) in cases {
            assert_eq!(
                input.into_command().expect_err("out of range").to_string(),
                expected
            );
        }
    }

    #[test]
    fn delete_requires_both_fields() {
        let message = |i: DeleteTokenInput| i.into_command().expect_err("fails").to_string();
        let required = |field: &str| {
            format!(
                "请求参数错误: Key: 'DeleteExternalUserTokenRequest.{field}' Error:Field validation for '{field}' failed on the 'required' tag"
            )
        };
        assert_eq!(
            message(DeleteTokenInput {
                external_user_id: Some("u".into()),
                token_id: Some(0),
            }),
            required("TokenId")
        );
        assert_eq!(
            message(DeleteTokenInput {
                external_user_id: Some("u".into()),
                token_id: None,
            }),
            required("TokenId")
        );
        assert_eq!(
            message(DeleteTokenInput {
                external_user_id: Some(String::new()),
                token_id: Some(3),
            }),
            required("ExternalUserId")
        );
        assert_eq!(
            DeleteTokenInput {
                external_user_id: Some("u".into()),
                token_id: Some(4),
            }
            .into_command()
            .expect("valid"),
            DeleteToken {
                external_user_id: ExternalUserId::parse("u").expect("id"),
                token_id: TokenId::new(4),
            }
        );
    }

    #[test]
    fn days_and_caps_follow_the_rules() {
        let base = || TokenInput {
            external_user_id: Some("u".into()),
            token_name: Some("n".into()),
            ..TokenInput::default()
        };
        assert_eq!(base().into_command().expect("valid").valid_days, 365);
        let zero = TokenInput {
            expires_in_days: Some(0),
            ..base()
        };
        assert_eq!(zero.into_command().expect("valid").valid_days, 365);
        let tag = |i: TokenInput| i.into_command().expect_err("fails").fields()[0].tag.clone();
        assert_eq!(
            tag(TokenInput {
                expires_in_days: Some(-1),
                ..base()
            }),
            "min"
        );
        assert_eq!(
            tag(TokenInput {
                expires_in_days: Some(3651),
                ..base()
            }),
            "max"
        );
        assert_eq!(
            tag(TokenInput {
                quota_limit_usd: NumberInput::parse("0"),
                ..base()
            }),
            "min"
        );
        let capped = TokenInput {
            quota_limit_usd: NumberInput::parse("1.5"),
            ..base()
        };
        assert_eq!(
            capped.into_command().expect("valid").quota_limit,
            Some(Quota::new(750_000))
        );
        let missing = TokenInput {
            token_name: None,
            ..base()
        };
        assert_eq!(
            missing.into_command().expect_err("fails").to_string(),
            "请求参数错误: Key: 'ExternalUserTokenRequest.TokenName' Error:Field validation for 'TokenName' failed on the 'required' tag"
        );
    }

    proptest! {
        #[test]
        fn remain_never_exceeds_balance_or_cap(balance in -1_000i64..1_000_000, cap in proptest::option::of(0i64..1_000_000), used in 0i64..1_000_000) {
            let r = token(cap, used).remain_quota(Quota::new(balance));
            prop_assert!(r.get() >= 0);
            prop_assert!(r.get() <= balance.max(0));
            if let Some(c) = cap {
                prop_assert!(r.get() <= (c - used).max(0));
            }
        }

        #[test]
        fn keys_use_only_the_alphabet(seed in any::<u8>()) {
            let mut n = seed;
            let key = AccessKey::generate(bounded(|buf| for b in buf.iter_mut() { *b = n; n = n.wrapping_mul(5).wrapping_add(7); }));
            prop_assert!(AccessKey::parse(key.expose()).is_some());
        }
    }
}
