//! Top-ups: the validated command, the receipt stored with each `payment_id`, and the rule that
//! decides whether a repeated `payment_id` is a harmless replay or a conflict.

use crate::ids::{ExternalUserId, PaymentId, UserId};
use crate::quota::{AmountError, Quota, UsdAmount};
use crate::validation::{ValidationErrors, rules};
use rust_decimal::Decimal;

/// A JSON number as received, parsed from its decimal text without passing through a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberInput {
    /// Representable exactly.
    Exact(Decimal),
    /// Too large in magnitude to represent (beyond about 7.9e28).
    Huge {
        /// Sign of the number.
        negative: bool,
    },
    /// Non-zero but too small in magnitude to represent (more than 28 decimals).
    Tiny {
        /// Sign of the number.
        negative: bool,
    },
}

impl NumberInput {
    /// Parses the text of a JSON number (`-12.5`, `1e3`, `0.29`). `None` when it is not one.
    #[must_use]
    pub fn parse(text: &str) -> Option<NumberInput> {
        if !is_json_number(text) {
            return None;
        }
        let exact = if text.contains(['e', 'E']) {
            Decimal::from_scientific(text)
        } else {
            Decimal::from_str_exact(text)
        };
        if let Ok(d) = exact {
            return Some(NumberInput::Exact(d));
        }
        let negative = text.starts_with('-');
        let mantissa_digits_before_point = text
            .trim_start_matches('-')
            .split(['.', 'e', 'E'])
            .next()
            .unwrap_or("")
            .trim_start_matches('0')
            .len();
        let exponent: i64 = text
            .split(['e', 'E'])
            .nth(1)
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        // The magnitude's order decides whether it failed for being too large or too precise.
        let order = i64::try_from(mantissa_digits_before_point)
            .unwrap_or(i64::MAX)
            .saturating_add(exponent);
        Some(if order > 0 {
            NumberInput::Huge { negative }
        } else {
            NumberInput::Tiny { negative }
        })
    }

    /// The exact value, or the Go tag an unrepresentable number fails on: too large a positive
    /// number exceeds any `max`, anything else that cannot be represented is below any `min`.
    pub fn exact(self) -> Result<Decimal, &'static str> {
        match self {
            NumberInput::Exact(d) => Ok(d),
            NumberInput::Huge { negative: false } => Err("max"),
            NumberInput::Huge { negative: true } | NumberInput::Tiny { .. } => Err("min"),
        }
    }
}

fn is_json_number(s: &str) -> bool {
    let b = s.strip_prefix('-').unwrap_or(s).as_bytes();
    let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    if int_len == 0 || (int_len > 1 && b[0] == b'0') {
        return false;
    }
    let mut rest = &b[int_len..];
    if let Some(r) = rest.strip_prefix(b".") {
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    if let Some(r) = rest.strip_prefix(b"e").or_else(|| rest.strip_prefix(b"E")) {
        let r = r
            .strip_prefix(b"+")
            .or_else(|| r.strip_prefix(b"-"))
            .unwrap_or(r);
        let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
        if n == 0 {
            return false;
        }
        rest = &r[n..];
    }
    rest.is_empty()
}

/// The go tag a top-up amount fails on, if any.
fn amount_tag(v: &Option<NumberInput>) -> Option<&'static str> {
    let Some(n) = v else { return Some("required") };
    let tag = |e| match e {
        AmountError::Required => "required",
        AmountError::Min => "min",
        AmountError::Max => "max",
    };
    n.exact()
        .and_then(|d| UsdAmount::parse(d).map_err(tag))
        .err()
}

/// The top-up request as received (`ExternalUserTopUpRequest`).
#[derive(Debug, Default, garde::Validate)]
pub struct TopUpInput {
    /// `external_user_id`.
    #[garde(custom(rules::text(true, 100)))]
    pub external_user_id: Option<String>,
    /// `amount_usd`.
    #[garde(custom(rules::checked(amount_tag)))]
    pub amount_usd: Option<NumberInput>,
    /// `payment_id`.
    #[garde(custom(rules::text(true, 200)))]
    pub payment_id: Option<String>,
}

const TOPUP_FIELDS: &[(&str, &str)] = &[
    ("external_user_id", "ExternalUserId"),
    ("amount_usd", "AmountUSD"),
    ("payment_id", "PaymentId"),
];

/// A validated top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUp {
    /// Who is credited.
    pub external_user_id: ExternalUserId,
    /// How much.
    pub amount: UsdAmount,
    /// The platform's payment id.
    pub payment_id: PaymentId,
}

impl TopUpInput {
    /// Applies the rules of `ExternalUserTopUpRequest`.
    pub fn into_command(self) -> Result<TopUp, ValidationErrors> {
        const S: &str = "ExternalUserTopUpRequest";
        ValidationErrors::check(&self, S, TOPUP_FIELDS)?;
        let fail = |field, tag| ValidationErrors::single(S, field, tag);
        let external_user_id = self
            .external_user_id
            .and_then(ExternalUserId::parse)
            .ok_or_else(|| fail("ExternalUserId", "required"))?;
        let amount = match self.amount_usd {
            Some(NumberInput::Exact(d)) => {
                UsdAmount::parse(d).map_err(|_| fail("AmountUSD", "min"))?
            }
            _ => return Err(fail("AmountUSD", "required")),
        };
        let payment_id = self
            .payment_id
            .and_then(PaymentId::parse)
            .ok_or_else(|| fail("PaymentId", "required"))?;
        Ok(TopUp {
            external_user_id,
            amount,
            payment_id,
        })
    }
}

/// What was recorded for a `payment_id` the first time it was credited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpReceipt {
    /// The credited user.
    pub user_id: UserId,
    /// Their external id.
    pub external_user_id: ExternalUserId,
    /// The amount, as credited.
    pub amount_usd: Decimal,
    /// Quota credited.
    pub quota_added: Quota,
    /// The user's balance right after the credit.
    pub quota_after: Quota,
    /// The payment id.
    pub payment_id: PaymentId,
}

impl TopUpReceipt {
    /// Whether a repeated request is the same top-up (same user, same amount by value), so that
    /// answering the original result is correct rather than a conflict.
    #[must_use]
    pub fn is_replay_of(&self, cmd: &TopUp) -> bool {
        self.external_user_id == cmd.external_user_id && self.amount_usd == cmd.amount.value()
    }
}

/// What the storage did with a top-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopUpOutcome {
    /// Credited now, in one transaction with its receipt and log row.
    Credited(TopUpReceipt),
    /// The `payment_id` was credited before; nothing changed.
    AlreadyProcessed(TopUpReceipt),
    /// No such user under this platform.
    UserNotFound,
}

/// A top-up as answered to the platform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopUpResult {
    /// The receipt (the original one on a replay).
    pub receipt: TopUpReceipt,
    /// Whether this answer repeats an earlier credit.
    pub replay: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> NumberInput {
        NumberInput::parse(s).expect("a JSON number")
    }

    fn input(amount: &str) -> TopUpInput {
        TopUpInput {
            external_user_id: Some("u".into()),
            amount_usd: Some(num(amount)),
            payment_id: Some("p".into()),
        }
    }

    fn tag_of(amount: &str) -> String {
        input(amount)
            .into_command()
            .expect_err("must fail")
            .fields()[0]
            .tag
            .clone()
    }

    #[test]
    fn json_numbers_parse_exactly() {
        assert_eq!(num("1.005"), NumberInput::Exact(Decimal::new(1005, 3)));
        assert_eq!(num("1e2"), NumberInput::Exact(Decimal::from(100)));
        assert_eq!(num("2.5E-1"), NumberInput::Exact(Decimal::new(25, 2)));
        assert_eq!(num("1e400"), NumberInput::Huge { negative: false });
        assert_eq!(num("-1e400"), NumberInput::Huge { negative: true });
        assert_eq!(num("1e-400"), NumberInput::Tiny { negative: false });
        assert_eq!(
            num("123456789012345678901234567890"),
            NumberInput::Huge { negative: false }
        );
        for bad in [
            "", "-", "01", "1.", ".5", "1e", "NaN", "Infinity", "0x10", "1_000", " 1",
        ] {
            assert!(NumberInput::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn amount_tags_follow_go() {
        assert_eq!(tag_of("0"), "required");
        assert_eq!(tag_of("-5.0"), "min");
        assert_eq!(tag_of("0.001"), "min");
        assert_eq!(tag_of("1e-400"), "min");
        assert_eq!(tag_of("100000.5"), "max");
        assert_eq!(tag_of("1e400"), "max");
        assert_eq!(tag_of("-1e400"), "min");
    }

    #[test]
    fn missing_payment_id_fails_required() {
        let e = TopUpInput {
            payment_id: None,
            ..input("5")
        }
        .into_command()
        .expect_err("fails");
        assert_eq!(
            e.to_string(),
            "请求参数错误: Key: 'ExternalUserTopUpRequest.PaymentId' Error:Field validation for 'PaymentId' failed on the 'required' tag"
        );
    }

    #[test]
    fn replay_compares_amounts_by_value() {
        let cmd = input("25.50").into_command().expect("valid");
        let receipt = TopUpReceipt {
            user_id: UserId::new(1),
            external_user_id: cmd.external_user_id.clone(),
            amount_usd: Decimal::new(255, 1),
            quota_added: cmd.amount.quota(),
            quota_after: cmd.amount.quota(),
            payment_id: cmd.payment_id.clone(),
        };
        assert!(receipt.is_replay_of(&cmd));
        assert!(!receipt.is_replay_of(&input("25.51").into_command().expect("valid")));
        let other_user = TopUpInput {
            external_user_id: Some("v".into()),
            ..input("25.5")
        };
        assert!(!receipt.is_replay_of(&other_user.into_command().expect("valid")));
    }
}
