//! Money: quota is the integer unit every balance is kept in; USD amounts are exact decimals.
//! 1 USD = 500,000 quota. No binary float appears anywhere on these paths.

use rust_decimal::{Decimal, RoundingStrategy};
use std::fmt;

/// Quota units per US dollar (`QuotaPerUnit` of the Go predecessor).
pub const QUOTA_PER_USD: i64 = 500_000;

/// An amount of quota (may be negative only for a balance that a usage above its hold dipped
/// below zero; see SPEC §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Quota(i64);

impl Quota {
    /// No quota.
    pub const ZERO: Quota = Quota(0);

    /// Wraps a raw quota count.
    #[must_use]
    pub const fn new(units: i64) -> Self {
        Quota(units)
    }

    /// The raw quota count.
    #[must_use]
    pub const fn get(self) -> i64 {
        self.0
    }

    /// Converts a USD amount to quota exactly, rounding half-up (away from zero) to a whole
    /// quota. `None` when the result does not fit in 64 bits.
    #[must_use]
    pub fn from_usd(usd: Decimal) -> Option<Quota> {
        let exact = usd.checked_mul(Decimal::from(QUOTA_PER_USD))?;
        let rounded = exact.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
        i64::try_from(rounded).ok().map(Quota)
    }

    /// The USD value of this quota, exact (1 quota = 0.000002 USD), without trailing zeros.
    #[must_use]
    pub fn to_usd(self) -> Decimal {
        // quota / 500,000 = quota * 2 / 10^6: a multiplication, so the result is exact.
        Decimal::from_i128_with_scale(i128::from(self.0) * 2, 6).normalize()
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A top-up amount in USD that passed the rules of `ExternalUserTopUpRequest.AmountUSD`:
/// at least 0.01 and at most 100,000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsdAmount {
    value: Decimal,
    quota: Quota,
}

/// Why a USD amount was refused, as the Go validator tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountError {
    /// Zero (Go's `required` fails on the zero value).
    Required,
    /// Below the minimum.
    Min,
    /// Above the maximum.
    Max,
}

impl UsdAmount {
    /// Smallest top-up.
    pub const MIN: Decimal = Decimal::from_parts(1, 0, 0, false, 2);
    /// Largest top-up.
    pub const MAX: Decimal = Decimal::from_parts(100_000, 0, 0, false, 0);

    /// Checks the top-up rules (`required,min=0.01,max=100000`).
    pub fn parse(value: Decimal) -> Result<Self, AmountError> {
        if value.is_zero() {
            return Err(AmountError::Required);
        }
        if value < Self::MIN {
            return Err(AmountError::Min);
        }
        if value > Self::MAX {
            return Err(AmountError::Max);
        }
        // Within 0.01..=100000 the product always fits in 64 bits.
        let quota = Quota::from_usd(value).ok_or(AmountError::Max)?;
        Ok(UsdAmount {
            value: value.normalize(),
            quota,
        })
    }

    /// The amount, normalised (no trailing zeros).
    #[must_use]
    pub fn value(self) -> Decimal {
        self.value
    }

    /// The quota this amount credits.
    #[must_use]
    pub fn quota(self) -> Quota {
        self.quota
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn usd(s: &str) -> Decimal {
        Decimal::from_str(s).expect("test decimal")
    }

    #[test]
    fn seed_amounts_convert_exactly() {
        assert_eq!(Quota::from_usd(usd("10.0")), Some(Quota::new(5_000_000)));
        assert_eq!(Quota::from_usd(usd("25.50")), Some(Quota::new(12_750_000)));
        assert_eq!(Quota::from_usd(usd("1.005")), Some(Quota::new(502_500)));
        assert_eq!(Quota::from_usd(usd("0.29")), Some(Quota::new(145_000)));
    }

    #[test]
    fn half_a_quota_rounds_up() {
        assert_eq!(Quota::from_usd(usd("0.000001")), Some(Quota::new(1)));
        assert_eq!(Quota::from_usd(usd("0.0000009")), Some(Quota::new(0)));
        assert_eq!(Quota::from_usd(usd("0.000003")), Some(Quota::new(2)));
    }

    #[test]
    fn quota_displays_as_exact_usd() {
        assert_eq!(Quota::new(17_750_000).to_usd().to_string(), "35.5");
        assert_eq!(Quota::new(1).to_usd().to_string(), "0.000002");
        assert_eq!(Quota::new(-3).to_usd().to_string(), "-0.000006");
        assert_eq!(Quota::new(i64::MAX).to_usd(), usd("18446744073709.551614"));
    }

    #[test]
    fn overflowing_amounts_are_refused() {
        assert_eq!(Quota::from_usd(usd("99999999999999999999")), None);
    }

    #[test]
    fn topup_amount_rules_follow_the_go_tags() {
        assert_eq!(UsdAmount::parse(usd("0")), Err(AmountError::Required));
        assert_eq!(UsdAmount::parse(usd("-5")), Err(AmountError::Min));
        assert_eq!(UsdAmount::parse(usd("0.009")), Err(AmountError::Min));
        assert_eq!(UsdAmount::parse(usd("100000.01")), Err(AmountError::Max));
        let ok = UsdAmount::parse(usd("100000")).expect("max is allowed");
        assert_eq!(ok.quota(), Quota::new(50_000_000_000));
        assert_eq!(
            UsdAmount::parse(usd("25.50"))
                .expect("valid")
                .value()
                .to_string(),
            "25.5"
        );
    }

    #[test]
    fn quota_prints_as_its_integer() {
        assert_eq!(Quota::new(-42).to_string(), "-42");
        assert_eq!(Quota::new(5_000_000).to_string(), "5000000");
        assert_eq!(Quota::ZERO.get(), 0);
        assert_eq!(Quota::default(), Quota::new(0));
    }

    #[test]
    fn the_topup_bounds_are_inclusive() {
        // SPEC §3: min=0.01, max=100000; 0.01 USD is 5,000 quota.
        let min = UsdAmount::parse(usd("0.01")).expect("min is allowed");
        assert_eq!((min.value(), min.quota()), (usd("0.01"), Quota::new(5_000)));
        assert_eq!(UsdAmount::parse(usd("0.0099999")), Err(AmountError::Min));
        assert_eq!(UsdAmount::parse(usd("-0.01")), Err(AmountError::Min));
        assert_eq!(UsdAmount::parse(usd("-0")), Err(AmountError::Required));
        assert_eq!(
            UsdAmount::parse(usd("100000.000001")),
            Err(AmountError::Max)
        );
        let max = UsdAmount::parse(usd("100000.00")).expect("max is allowed");
        assert_eq!(max.value().to_string(), "100000");
        // SPEC §3.2: 1.005 → 502,500.
        assert_eq!(
            UsdAmount::parse(usd("1.005")).map(UsdAmount::quota),
            Ok(Quota::new(502_500))
        );
    }

    #[test]
    fn half_a_quota_rounds_away_from_zero_for_debts_too() {
        assert_eq!(Quota::from_usd(usd("-0.000001")), Some(Quota::new(-1)));
        assert_eq!(Quota::from_usd(usd("-0.0000009")), Some(Quota::new(0)));
        assert_eq!(Quota::from_usd(usd("0.0000011")), Some(Quota::new(1)));
        assert_eq!(Quota::from_usd(usd("0")), Some(Quota::ZERO));
        // i64::MAX quota is the largest amount that converts; one quota more does not fit.
        assert_eq!(
            Quota::from_usd(usd("18446744073709.551614")),
            Some(Quota::new(i64::MAX))
        );
        assert_eq!(Quota::from_usd(usd("18446744073709.551616")), None);
    }

    proptest! {
        #[test]
        fn whole_quotas_round_trip_through_usd(q in -(i64::MAX / 2)..(i64::MAX / 2)) {
            prop_assert_eq!(Quota::from_usd(Quota::new(q).to_usd()), Some(Quota::new(q)));
        }

        #[test]
        fn conversion_is_within_half_a_quota(cents in 1i64..10_000_000, micro in 0i64..10_000) {
            // amount = cents/100 + micro/10^8: any amount with up to 8 decimals.
            let amount = Decimal::new(cents, 2) + Decimal::new(micro, 8);
            let q = Quota::from_usd(amount).expect("fits");
            let diff = (amount * Decimal::from(QUOTA_PER_USD) - Decimal::from(q.get())).abs();
            prop_assert!(diff <= Decimal::new(5, 1));
        }

        #[test]
        fn conversion_is_monotonic(a in 0i64..1_000_000_000, b in 0i64..1_000_000_000) {
            let (x, y) = (Decimal::new(a, 6), Decimal::new(b, 6));
            let (qx, qy) = (Quota::from_usd(x).expect("fits"), Quota::from_usd(y).expect("fits"));
            if x <= y {
                prop_assert!(qx <= qy);
            }
        }
    }
}
