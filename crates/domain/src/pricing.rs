//! Prices and the charge rule. Prices are exact decimals in USD per 1M tokens; a call costs
//! `ceil(Σ tokens × price × 500,000 / 1,000,000)` quota, at least 1 when any token was used and
//! 0 when none was. The same rule sizes holds, so a hold and its settlement never disagree on
//! rounding.

use crate::quota::{QUOTA_PER_USD, Quota};
use crate::topup::NumberInput;
use crate::validation::ValidationErrors;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

/// Prices are per this many tokens.
pub const PRICE_UNIT_TOKENS: i64 = 1_000_000;
/// The highest price accepted, USD per 1M tokens (far above any real model).
pub const MAX_PRICE: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);
/// Longest model name.
pub const MAX_MODEL_CHARS: usize = 100;

/// A model name as clients send it: 1–100 characters, no control characters or spaces at
/// either end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName(String);

impl ModelName {
    /// Checks a model name.
    #[must_use]
    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.chars().count() <= MAX_MODEL_CHARS
            && !value.chars().any(char::is_control)
            && value.trim() == value;
        ok.then(|| ModelName(value.to_owned()))
    }

    /// The name.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Tokens of one call as the provider (or the tokenizer) counted them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens, cached ones included (OpenAI's convention).
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// The part of `prompt_tokens` served from the provider's cache.
    pub cached_tokens: u64,
}

impl Usage {
    /// A usage without cached tokens.
    #[must_use]
    pub const fn new(prompt_tokens: u64, completion_tokens: u64) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            cached_tokens: 0,
        }
    }

    /// All tokens.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// USD per 1M tokens of one model. Cannot be built negative or absurdly large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price {
    input: Decimal,
    output: Decimal,
    cached_input: Decimal,
}

/// A price outside `0..=100000` USD per 1M tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a price must be between 0 and 100000 USD per 1M tokens")]
pub struct PriceError;

fn check_price(d: Decimal) -> Result<Decimal, PriceError> {
    if d.is_sign_negative() && !d.is_zero() || d > MAX_PRICE {
        Err(PriceError)
    } else {
        Ok(d.normalize())
    }
}

impl Price {
    /// A price; each part in `0..=100000`.
    pub fn new(input: Decimal, output: Decimal, cached_input: Decimal) -> Result<Self, PriceError> {
        Ok(Price {
            input: check_price(input)?,
            output: check_price(output)?,
            cached_input: check_price(cached_input)?,
        })
    }

    /// USD per 1M prompt tokens.
    #[must_use]
    pub fn input(&self) -> Decimal {
        self.input
    }

    /// USD per 1M completion tokens.
    #[must_use]
    pub fn output(&self) -> Decimal {
        self.output
    }

    /// USD per 1M cached prompt tokens.
    #[must_use]
    pub fn cached_input(&self) -> Decimal {
        self.cached_input
    }

    /// What `usage` costs: `ceil(Σ tokens × price / 2)` (500,000 quota per USD over 1M tokens),
    /// at least 1 when any token was used. Saturates at `i64::MAX` quota rather than wrap.
    #[must_use]
    pub fn quota_for(&self, usage: &Usage) -> Quota {
        if usage.total() == 0 {
            return Quota::ZERO;
        }
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let uncached = usage.prompt_tokens - cached;
        let usd_micro = Decimal::from(uncached)
            .checked_mul(self.input)
            .and_then(|a| {
                Decimal::from(cached)
                    .checked_mul(self.cached_input)
                    .and_then(|b| a.checked_add(b))
            })
            .and_then(|a| {
                Decimal::from(usage.completion_tokens)
                    .checked_mul(self.output)
                    .and_then(|c| a.checked_add(c))
            });
        let quota = usd_micro
            .and_then(|x| x.checked_mul(Decimal::from(QUOTA_PER_USD)))
            .and_then(|x| x.checked_div(Decimal::from(PRICE_UNIT_TOKENS)))
            .map(|x| x.ceil())
            .and_then(|x| x.to_i64())
            .unwrap_or(i64::MAX);
        Quota::new(quota.max(1))
    }

    /// How many prompt tokens and how many completion tokens `quota` buys at this price
    /// (`None` for a free side, which has no limit).
    #[must_use]
    pub fn capacity(&self, quota: Quota) -> (Option<u64>, Option<u64>) {
        let buys = |price: Decimal| -> Option<u64> {
            if price.is_zero() {
                return None;
            }
            let q = Decimal::from(quota.get().max(0));
            // tokens = quota × 1M / (price × 500,000), rounded down: never promise a token more.
            let tokens = || {
                q.checked_mul(Decimal::from(PRICE_UNIT_TOKENS))?
                    .checked_div(price.checked_mul(Decimal::from(QUOTA_PER_USD))?)?
                    .floor()
                    .to_u64()
            };
            // A count beyond 64 bits, or beyond a decimal (a price of a few 1e-10 $/1M), is
            // as many as can be counted: `None` would call a priced side free.
            Some(tokens().unwrap_or(u64::MAX))
        };
        (buys(self.input), buys(self.output))
    }
}

/// `PUT /pricing/{model}` as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct PriceInput {
    /// `input`.
    pub input: Option<NumberInput>,
    /// `output`.
    pub output: Option<NumberInput>,
    /// `cached_input` (defaults to `input`: no cache discount unless one is set).
    pub cached_input: Option<NumberInput>,
}

impl PriceInput {
    /// Validates the three prices (Go tags: `required`, `min`, `max`).
    pub fn into_price(self) -> Result<Price, ValidationErrors> {
        const S: &str = "PriceRequest";
        let part = |v: Option<NumberInput>, field: &'static str, required: bool| {
            let Some(n) = v else {
                return if required {
                    Err(ValidationErrors::single(S, field, "required"))
                } else {
                    Ok(None)
                };
            };
            let d = n
                .exact()
                .map_err(|tag| ValidationErrors::single(S, field, tag))?;
            if d.is_sign_negative() && !d.is_zero() {
                return Err(ValidationErrors::single(S, field, "min"));
            }
            if d > MAX_PRICE {
                return Err(ValidationErrors::single(S, field, "max"));
            }
            Ok(Some(d))
        };
        let input = part(self.input, "Input", true)?.unwrap_or_default();
        let output = part(self.output, "Output", true)?.unwrap_or_default();
        let cached = part(self.cached_input, "CachedInput", false)?.unwrap_or(input);
        Price::new(input, output, cached).map_err(|_| ValidationErrors::single(S, "Input", "max"))
    }
}

/// The default price list (USD per 1M tokens, public list prices when this was written).
#[must_use]
pub fn default_prices() -> Vec<(&'static str, Price)> {
    let p = |i: i64, is: u32, o: i64, os: u32, c: i64, cs: u32| Price {
        input: Decimal::new(i, is),
        output: Decimal::new(o, os),
        cached_input: Decimal::new(c, cs),
    };
    vec![
        ("qwen-turbo", p(5, 2, 2, 1, 2, 2)),
        ("qwen-plus", p(4, 1, 12, 1, 16, 2)),
        ("qwen-max", p(16, 1, 64, 1, 64, 2)),
        ("deepseek-chat", p(27, 2, 11, 1, 7, 2)),
        ("deepseek-reasoner", p(55, 2, 219, 2, 14, 2)),
        ("gpt-4o", p(25, 1, 10, 0, 125, 2)),
        ("gpt-4o-mini", p(15, 2, 6, 1, 75, 3)),
        ("claude-sonnet-4-5", p(3, 0, 15, 0, 3, 1)),
        ("claude-haiku-4-5", p(1, 0, 5, 0, 1, 1)),
        ("gemini-2.5-flash", p(3, 1, 25, 1, 75, 3)),
        ("text-embedding-3-small", p(2, 2, 0, 0, 2, 2)),
        ("text-embedding-3-large", p(13, 2, 0, 0, 13, 2)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn price(i: &str, o: &str) -> Price {
        Price::new(
            i.parse().expect("decimal"),
            o.parse().expect("decimal"),
            i.parse().expect("decimal"),
        )
        .expect("price")
    }

    #[test]
    fn the_seed_example_costs_68() {
        // 14 × 2.0 + 18 × 6.0 = 136 USD per 1M → 68 quota.
        assert_eq!(
            price("2.0", "6.0").quota_for(&Usage::new(14, 18)),
            Quota::new(68)
        );
        // 14 × 0.27 + 18 × 1.1 = 23.58 → 11.79 → 12.
        assert_eq!(
            price("0.27", "1.1").quota_for(&Usage::new(14, 18)),
            Quota::new(12)
        );
    }

    #[test]
    fn any_use_costs_at_least_one_and_none_costs_nothing() {
        let p = price("0.0001", "0.0001");
        assert_eq!(p.quota_for(&Usage::new(1, 0)), Quota::new(1));
        assert_eq!(p.quota_for(&Usage::new(0, 0)), Quota::ZERO);
        assert_eq!(price("0", "0").quota_for(&Usage::new(5, 5)), Quota::new(1));
    }

    #[test]
    fn cached_tokens_are_charged_at_the_cached_price() {
        let p =
            Price::new(Decimal::new(2, 0), Decimal::new(6, 0), Decimal::new(1, 0)).expect("price");
        let u = Usage {
            prompt_tokens: 100,
            completion_tokens: 0,
            cached_tokens: 60,
        };
        // 40 × 2 + 60 × 1 = 140 → 70.
        assert_eq!(p.quota_for(&u), Quota::new(70));
        // More cached than prompt tokens is clamped, never negative.
        let odd = Usage {
            prompt_tokens: 10,
            completion_tokens: 0,
            cached_tokens: 99,
        };
        assert_eq!(p.quota_for(&odd), Quota::new(5));
    }

    #[test]
    fn prices_reject_negative_and_huge() {
        assert!(Price::new(Decimal::new(-1, 2), Decimal::ONE, Decimal::ONE).is_err());
        assert!(Price::new(Decimal::new(100_001, 0), Decimal::ONE, Decimal::ONE).is_err());
        let bad = PriceInput {
            input: Some(NumberInput::Exact(Decimal::new(-1, 0))),
            output: Some(NumberInput::Exact(Decimal::ONE)),
            cached_input: None,
        };
        assert_eq!(
            bad.into_price().expect_err("negative").to_string(),
            "请求参数错误: Key: 'PriceRequest.Input' Error:Field validation for 'Input' failed on the 'min' tag"
        );
        let missing = PriceInput::default().into_price().expect_err("missing");
        assert!(missing.to_string().contains("'required'"));
    }

    #[test]
    fn capacity_rounds_down() {
        let p = price("2.0", "6.0");
        // 5,000 quota = $0.01 → 5,000 input tokens at $2/1M, 1,666 output tokens at $6/1M.
        assert_eq!(p.capacity(Quota::new(5_000)), (Some(5_000), Some(1_666)));
        assert_eq!(price("0", "1").capacity(Quota::new(10)).0, None);
        assert_eq!(p.capacity(Quota::new(-5)), (Some(0), Some(0)));
    }

    #[test]
    fn model_names_are_1_to_100_characters_without_control_or_outer_spaces() {
        assert_eq!(
            ModelName::parse("qwen-turbo").map(|m| m.as_str().to_owned()),
            Some("qwen-turbo".to_owned())
        );
        // Characters, not bytes: 100 CJK characters are 300 bytes.
        assert!(ModelName::parse(&"模".repeat(100)).is_some());
        assert!(ModelName::parse(&"m".repeat(100)).is_some());
        assert!(
            ModelName::parse("a b").is_some(),
            "inner spaces are allowed"
        );
        for bad in [
            String::new(),
            "m".repeat(101),
            "模".repeat(101),
            " m".to_owned(),
            "m ".to_owned(),
            "m\n".to_owned(),
            "m\u{7f}x".to_owned(),
            "\tm".to_owned(),
        ] {
            assert_eq!(ModelName::parse(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn usage_totals_saturate() {
        assert_eq!(Usage::new(14, 18).total(), 32);
        assert_eq!(Usage::new(u64::MAX, 1).total(), u64::MAX);
        assert_eq!(Usage::new(3, 4).cached_tokens, 0);
    }

    #[test]
    fn prices_keep_their_three_parts_exactly() {
        let p = Price::new(
            "0.270".parse().expect("decimal"),
            "1.10".parse().expect("decimal"),
            "0.07".parse().expect("decimal"),
        )
        .expect("price");
        assert_eq!(
            (
                p.input().to_string(),
                p.output().to_string(),
                p.cached_input().to_string()
            ),
            ("0.27".to_owned(), "1.1".to_owned(), "0.07".to_owned())
        );
        // Both ends of 0..=100000 are allowed, and a negative zero is zero.
        assert!(Price::new(Decimal::ZERO, MAX_PRICE, Decimal::ZERO).is_ok());
        assert!(
            Price::new(
                "-0.00".parse().expect("decimal"),
                Decimal::ONE,
                Decimal::ONE
            )
            .is_ok()
        );
        for (i, o, c) in [
            ("100000.01", "1", "1"),
            ("1", "100000.01", "1"),
            ("1", "1", "100000.01"),
            ("1", "-0.01", "1"),
            ("1", "1", "-0.01"),
        ] {
            let parse = |s: &str| s.parse::<Decimal>().expect("decimal");
            assert_eq!(
                Price::new(parse(i), parse(o), parse(c)),
                Err(PriceError),
                "{i} {o} {c}"
            );
        }
    }

    #[test]
    fn cached_and_output_tokens_use_their_own_prices() {
        // 10 uncached × 4 + 30 cached × 2 + 5 completion × 8 = 140 USD per 1M → 70 quota.
        let p =
            Price::new(Decimal::new(4, 0), Decimal::new(8, 0), Decimal::new(2, 0)).expect("price");
        let u = Usage {
            prompt_tokens: 40,
            completion_tokens: 5,
            cached_tokens: 30,
        };
        assert_eq!(p.quota_for(&u), Quota::new(70));
        // Completion only: 3 × 8 = 24 → 12; 1 × 4 + 3 × 8 = 28 → 14.
        assert_eq!(p.quota_for(&Usage::new(0, 3)), Quota::new(12));
        assert_eq!(p.quota_for(&Usage::new(1, 3)), Quota::new(14));
        // A charge beyond 64 bits saturates instead of wrapping.
        let dear = Price::new(MAX_PRICE, MAX_PRICE, MAX_PRICE).expect("price");
        assert_eq!(
            dear.quota_for(&Usage::new(u64::MAX, u64::MAX)),
            Quota::new(i64::MAX)
        );
    }

    #[test]
    fn capacity_of_each_side_and_free_sides() {
        // 1,000,000 quota = $2: 400,000 tokens at $5/1M, 1,000,000 at $2/1M.
        let p = price("5", "2");
        assert_eq!(
            p.capacity(Quota::new(1_000_000)),
            (Some(400_000), Some(1_000_000))
        );
        assert_eq!(price("1", "0").capacity(Quota::new(10)), (Some(20), None));
        assert_eq!(p.capacity(Quota::ZERO), (Some(0), Some(0)));
        // Beyond 64 bits of tokens the answer saturates: i64::MAX quota buys about 3.7e19
        // tokens at $0.5/1M, and 2 × i64::MAX at $1/1M.
        assert_eq!(
            price("0.5", "1").capacity(Quota::new(i64::MAX)),
            (Some(u64::MAX), Some(18_446_744_073_709_551_614))
        );
        // A count too large even for a decimal still saturates: the side is priced, not free.
        assert_eq!(
            price("0.0000000001", "1").capacity(Quota::new(i64::MAX)),
            (Some(u64::MAX), Some(18_446_744_073_709_551_614))
        );
    }

    #[test]
    fn price_input_rules_follow_the_go_tags() {
        let n = |s: &str| NumberInput::parse(s);
        let message = |i: PriceInput| i.into_price().expect_err("invalid").to_string();
        let key = |field: &str, tag: &str| {
            format!(
                "请求参数错误: Key: 'PriceRequest.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"
            )
        };
        // cached_input defaults to input: no cache discount unless one is set.
        let p = PriceInput {
            input: n("2.50"),
            output: n("10"),
            cached_input: None,
        }
        .into_price()
        .expect("valid");
        assert_eq!(
            p,
            Price::new(Decimal::new(25, 1), Decimal::TEN, Decimal::new(25, 1)).expect("price")
        );
        let free = PriceInput {
            input: n("0"),
            output: n("100000"),
            cached_input: n("0"),
        }
        .into_price()
        .expect("0 and 100000 are allowed");
        assert_eq!((free.input(), free.output()), (Decimal::ZERO, MAX_PRICE));
        assert_eq!(
            message(PriceInput {
                input: n("1"),
                ..PriceInput::default()
            }),
            key("Output", "required")
        );
        assert_eq!(
            message(PriceInput {
                output: n("1"),
                ..PriceInput::default()
            }),
            key("Input", "required")
        );
        assert_eq!(
            message(PriceInput {
                input: n("1"),
                output: n("100000.01"),
                cached_input: None,
            }),
            key("Output", "max")
        );
        assert_eq!(
            message(PriceInput {
                input: n("1"),
                output: n("1"),
                cached_input: n("-0.5"),
            }),
            key("CachedInput", "min")
        );
        assert_eq!(
            message(PriceInput {
                input: n("1e400"),
                output: n("1"),
                cached_input: None,
            }),
            key("Input", "max")
        );
        assert_eq!(
            message(PriceInput {
                input: n("1"),
                output: n("1e-400"),
                cached_input: None,
            }),
            key("Output", "min")
        );
    }

    #[test]
    fn default_prices_cover_the_seeded_models() {
        let names: Vec<_> = default_prices().into_iter().map(|(n, _)| n).collect();
        // SPEC §4 and §4.3 name twelve models; each has exactly one default price.
        assert_eq!(names.len(), 12, "{names:?}");
        for m in [
            "qwen-turbo",
            "qwen-plus",
            "qwen-max",
            "deepseek-chat",
            "deepseek-reasoner",
            "gpt-4o",
            "gpt-4o-mini",
            "claude-sonnet-4-5",
            "claude-haiku-4-5",
            "gemini-2.5-flash",
            "text-embedding-3-small",
            "text-embedding-3-large",
        ] {
            assert!(names.contains(&m), "{m}");
        }
    }

    proptest! {
        /// The charge is the exact ceiling: never below the exact cost, less than one unit above.
        #[test]
        fn charge_is_the_exact_ceiling(p in 0u64..1_000_000, c in 0u64..1_000_000,
                                       pi in 0i64..10_000_000, po in 0i64..10_000_000) {
            let price = Price::new(Decimal::new(pi, 4), Decimal::new(po, 4), Decimal::new(pi, 4)).expect("price");
            let q = Decimal::from(price.quota_for(&Usage::new(p, c)).get());
            let exact = (Decimal::from(p) * price.input() + Decimal::from(c) * price.output()) / Decimal::from(2);
            if p + c == 0 {
                prop_assert_eq!(q, Decimal::ZERO);
            } else {
                prop_assert!(q >= exact);
                prop_assert!(q < exact + Decimal::ONE || q == Decimal::ONE);
                prop_assert!(q >= Decimal::ONE);
            }
        }

        /// More tokens never cost less: a hold sized for an upper bound covers the real usage.
        #[test]
        fn charge_is_monotonic(p in 0u64..100_000, c in 0u64..100_000, dp in 0u64..1000, dc in 0u64..1000,
                               pi in 0i64..1_000_000, po in 0i64..1_000_000) {
            let price = Price::new(Decimal::new(pi, 3), Decimal::new(po, 3), Decimal::new(pi, 3)).expect("price");
            prop_assert!(price.quota_for(&Usage::new(p, c)) <= price.quota_for(&Usage::new(p + dp, c + dc)));
        }

        /// What capacity promises is affordable, and one token more is not.
        #[test]
        fn capacity_is_affordable(q in 0i64..10_000_000_000, pi in 1i64..10_000_000) {
            let price = Price::new(Decimal::new(pi, 4), Decimal::new(pi, 4), Decimal::new(pi, 4)).expect("price");
            let (Some(tokens), _) = price.capacity(Quota::new(q)) else { unreachable!() };
            let exact = Decimal::from(tokens) * price.input() / Decimal::from(2);
            prop_assert!(exact <= Decimal::from(q));
            let more = Decimal::from(tokens + 1) * price.input() / Decimal::from(2);
            prop_assert!(more > Decimal::from(q));
        }
    }
}
