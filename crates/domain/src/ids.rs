//! Identifier newtypes, so a user id cannot be passed where a token id is meant, and the
//! externally supplied identifiers that are matched byte for byte.

use sha2::{Digest, Sha256};
use std::fmt;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(i64);

        impl $name {
            /// Wraps a database id.
            #[must_use]
            pub const fn new(id: i64) -> Self {
                $name(id)
            }

            /// The raw database id.
            #[must_use]
            pub const fn get(self) -> i64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

int_id!(
    /// A Tollgate user.
    UserId
);
int_id!(
    /// An API key (token) of a user.
    TokenId
);
int_id!(
    /// A row of the usage/top-up log.
    LogId
);
int_id!(
    /// An upstream provider channel.
    ChannelId
);

/// The platform (one secret of `TOLLGATE_EXTERNAL_API_KEYS`) that owns a user. Stored as a
/// digest of the secret so that the database never holds the secret itself.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PlatformId(String);

impl PlatformId {
    /// Length of the stored form (hex characters).
    pub const LEN: usize = 32;

    /// The platform a secret stands for: the first 16 bytes of SHA-256 over a domain-separated
    /// form of the secret, in hex.
    #[must_use]
    pub fn from_secret(secret: &str) -> Self {
        let digest = Sha256::new()
            .chain_update(b"tollgate-platform\0")
            .chain_update(secret.as_bytes())
            .finalize();
        PlatformId(hex(&digest[..16]))
    }

    /// The stored form.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for PlatformId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PlatformId({})", &self.0[..8])
    }
}

/// Lower-case hex of bytes.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

macro_rules! text_id {
    ($(#[$doc:meta])* $name:ident, $max:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub struct $name(String);

        impl $name {
            /// Most characters (not bytes) allowed.
            pub const MAX_CHARS: usize = $max;

            /// Accepts a non-empty value of at most `MAX_CHARS` characters, kept byte for byte
            /// (no trimming, case folding or normalisation).
            pub fn parse(value: impl Into<String>) -> Option<Self> {
                let value = value.into();
                let n = value.chars().count();
                (n > 0 && n <= Self::MAX_CHARS).then_some($name(value))
            }

            /// The value.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

text_id!(
    /// The platform's own id for a user, unique per platform.
    ExternalUserId,
    100
);
text_id!(
    /// The platform's id for a payment, unique per platform forever.
    PaymentId,
    200
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_kept_byte_for_byte() {
        let a = ExternalUserId::parse("Ünïcode ").expect("valid");
        let b = ExternalUserId::parse("Ünïcode").expect("valid");
        assert_ne!(a, b);
        assert_eq!(a.as_str(), "Ünïcode ");
    }

    #[test]
    fn length_limits_count_characters() {
        assert!(ExternalUserId::parse("字".repeat(100)).is_some());
        assert!(ExternalUserId::parse("字".repeat(101)).is_none());
        assert!(ExternalUserId::parse("").is_none());
    }

    #[test]
    fn platform_ids_differ_per_secret_and_hide_it() {
        let a = PlatformId::from_secret("secret-a");
        assert_eq!(a, PlatformId::from_secret("secret-a"));
        assert_ne!(a, PlatformId::from_secret("secret-b"));
        assert_eq!(a.as_str().len(), PlatformId::LEN);
        assert!(!a.as_str().contains("secret"));
    }
}
