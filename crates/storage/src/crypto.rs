//! Encryption of upstream channel keys at rest. A database dump or backup alone must not hand
//! out the provider keys that Tollgate spends money with, so with a secret configured
//! (`TOLLGATE_SECRET_KEY`) a key is stored as `enc:v1:<base64(nonce ‖ ciphertext ‖ tag)>`:
//! ChaCha20-Poly1305 with a fresh random 96-bit nonce per encryption, bound to its purpose by
//! associated data. A stored value without the `enc:` marker is a key stored as given.

use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::fmt;

/// What every encrypted value starts with, whatever its version: a value with this marker is
/// never taken for a key stored as given.
pub(crate) const MARKER: &str = "enc:";

/// The prefix of the current format (ChaCha20-Poly1305, [`AAD`]).
const PREFIX_V1: &str = "enc:v1:";

/// Binds a ciphertext to what it is: a value encrypted for another purpose with the same
/// secret does not decrypt as a channel key.
const AAD: &[u8] = b"tollgate channel key v1";

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Secrets are read as standard base64 (what `openssl rand -base64 32` prints), with or
/// without the trailing `=`.
const SECRET_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Whether a stored channel key is encrypted (as opposed to stored as given).
#[must_use]
pub(crate) fn is_encrypted(stored: &str) -> bool {
    stored.starts_with(MARKER)
}

/// The 32-byte secret that channel keys are encrypted with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// Parses the secret from standard base64 text (surrounding whitespace ignored).
    ///
    /// # Errors
    /// When the text is not base64 or does not decode to exactly 32 bytes; the error never
    /// contains the text.
    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        let bytes = SECRET_BASE64
            .decode(text.trim())
            .map_err(|_| KeyError::NotBase64)?;
        let len = bytes.len();
        <[u8; 32]>::try_from(bytes)
            .map(SecretKey)
            .map_err(|_| KeyError::WrongLength(len))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(***)")
    }
}

/// Why a secret was refused. The texts name the expected form, never the value given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("must be 32 bytes encoded in base64 (it is not valid base64)")]
    NotBase64,
    /// Base64 of another length.
    #[error("must be 32 bytes encoded in base64 (it decodes to {0} bytes)")]
    WrongLength(usize),
}

/// Why a channel key could not be encrypted or decrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CipherError {
    /// The operating system gave no random bytes for the nonce.
    #[error("the system random number generator failed")]
    Random,
    /// A key beyond what the cipher can encrypt in one message (256 GiB); keys are far shorter.
    #[error("the key is too long to encrypt")]
    TooLong,
    /// An `enc:` value of a version this build does not know.
    #[error("stored in an unknown encrypted format (this build reads enc:v1:)")]
    UnknownFormat,
    /// Not base64, or too short to hold a nonce and a tag.
    #[error("the stored encrypted key is malformed")]
    Malformed,
    /// Authentication failed: another secret, or the stored text was altered.
    #[error("does not decrypt with this secret (encrypted with another secret, or altered)")]
    Rejected,
}

/// Encrypts and decrypts channel keys with one [`SecretKey`]. Its `Debug` never shows the key.
#[derive(Clone)]
pub struct KeyCipher {
    aead: ChaCha20Poly1305,
}

impl KeyCipher {
    /// A cipher for `secret`.
    #[must_use]
    pub fn new(secret: &SecretKey) -> Self {
        KeyCipher {
            aead: ChaCha20Poly1305::new(&Key::from(secret.0)),
        }
    }

    /// `enc:v1:` and the base64 of a fresh nonce, the ciphertext and its tag. Two encryptions
    /// of the same key differ.
    ///
    /// # Errors
    /// [`CipherError::Random`] when the system has no randomness to give.
    pub fn encrypt(&self, plain: &str) -> Result<String, CipherError> {
        // A random 96-bit nonce is safe for far more encryptions than a deployment has
        // channel keys (the bound is about 2^32 per secret).
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CipherError::Random)?;
        let sealed = self
            .aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: AAD,
                },
            )
            .map_err(|_| CipherError::TooLong)?;
        let mut raw = Vec::with_capacity(NONCE_LEN + sealed.len());
        raw.extend_from_slice(&nonce);
        raw.extend_from_slice(&sealed);
        Ok(format!("{PREFIX_V1}{}", STANDARD.encode(raw)))
    }

    /// The key inside a value made by [`KeyCipher::encrypt`].
    ///
    /// # Errors
    /// [`CipherError::UnknownFormat`] for a value that is not `enc:v1:`, `Malformed` for one
    /// that cannot hold a ciphertext, `Rejected` when the secret is not the one it was
    /// encrypted with or the text was altered.
    pub fn decrypt(&self, stored: &str) -> Result<String, CipherError> {
        let body = stored
            .strip_prefix(PREFIX_V1)
            .ok_or(CipherError::UnknownFormat)?;
        let raw = STANDARD.decode(body).map_err(|_| CipherError::Malformed)?;
        if raw.len() < NONCE_LEN + TAG_LEN {
            return Err(CipherError::Malformed);
        }
        let (nonce, sealed) = raw.split_at(NONCE_LEN);
        let nonce = <[u8; NONCE_LEN]>::try_from(nonce).map_err(|_| CipherError::Malformed)?;
        let plain = self
            .aead
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: AAD,
                },
            )
            .map_err(|_| CipherError::Rejected)?;
        // Authenticated bytes came from `encrypt`, which took a `&str`.
        String::from_utf8(plain).map_err(|_| CipherError::Malformed)
    }
}

impl fmt::Debug for KeyCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyCipher(chacha20-poly1305, ***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 32 bytes of 7, and 32 bytes 0..=31.
    const SEVENS: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const COUNTING: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn cipher(b64: &str) -> KeyCipher {
        KeyCipher::new(&SecretKey::from_base64(b64).expect("valid secret"))
    }

    #[test]
    fn a_secret_is_32_bytes_of_base64_with_or_without_padding() {
        let key = SecretKey::from_base64(SEVENS).expect("padded");
        assert_eq!(key.0, [7; 32]);
        let unpadded = SEVENS.trim_end_matches('=');
        assert_eq!(
            SecretKey::from_base64(unpadded).expect("unpadded").0,
            [7; 32]
        );
        assert_eq!(
            SecretKey::from_base64(&format!(" {SEVENS}\n"))
                .expect("trimmed")
                .0,
            [7; 32]
        );
    }

    #[test]
    fn a_secret_of_another_length_or_not_base64_is_refused_without_echoing_it() {
        // 31 bytes.
        let short = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBw==";
        let e = SecretKey::from_base64(short).expect_err("31 bytes");
        assert_eq!(e, KeyError::WrongLength(31));
        assert_eq!(
            e.to_string(),
            "must be 32 bytes encoded in base64 (it decodes to 31 bytes)"
        );
        assert!(!e.to_string().contains(short));
        let e = SecretKey::from_base64("not base64 at all!").expect_err("not base64");
        assert_eq!(e, KeyError::NotBase64);
        assert!(!e.to_string().contains("at all"));
        assert_eq!(
            SecretKey::from_base64("").expect_err("empty"),
            KeyError::WrongLength(0)
        );
        // 64 bytes of base64 text is not 32 bytes of key.
        assert!(SecretKey::from_base64(&"A".repeat(32)).is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SecretKey::from_base64(SEVENS).expect("valid");
        let shown = format!("{key:?} {:?}", KeyCipher::new(&key));
        assert!(!shown.contains("7, 7"), "{shown}");
        assert!(!shown.contains("Bwc"), "{shown}");
        assert_eq!(format!("{key:?}"), "SecretKey(***)");
    }

    #[test]
    fn encrypts_to_a_self_describing_text_and_back() {
        let c = cipher(SEVENS);
        let stored = c.encrypt("sk-upstream-secret").expect("encrypt");
        assert!(stored.starts_with("enc:v1:"), "{stored}");
        assert!(is_encrypted(&stored));
        assert!(!stored.contains("sk-upstream"));
        assert_eq!(c.decrypt(&stored).expect("decrypt"), "sk-upstream-secret");
        assert_eq!(c.decrypt(&c.encrypt("").expect("empty")).expect("back"), "");
        assert!(!is_encrypted("sk-upstream-secret"));
    }

    #[test]
    fn every_encryption_has_a_fresh_nonce() {
        let c = cipher(SEVENS);
        let a = c.encrypt("same").expect("a");
        let b = c.encrypt("same").expect("b");
        assert_ne!(a, b);
        assert_ne!(&a[..7 + 16], &b[..7 + 16], "the nonce leads the text");
    }

    #[test]
    fn another_secret_altered_text_or_other_purpose_is_rejected() {
        let c = cipher(SEVENS);
        let stored = c.encrypt("sk-1").expect("encrypt");
        assert_eq!(
            cipher(COUNTING).decrypt(&stored),
            Err(CipherError::Rejected)
        );

        // Flip one bit of the ciphertext.
        let mut raw = STANDARD.decode(&stored[7..]).expect("base64");
        raw[NONCE_LEN] ^= 1;
        let tampered = format!("enc:v1:{}", STANDARD.encode(&raw));
        assert_eq!(c.decrypt(&tampered), Err(CipherError::Rejected));

        // The same secret and format, but other associated data.
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("random");
        let sealed = c
            .aead
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: b"sk-1",
                    aad: b"other",
                },
            )
            .expect("encrypt");
        let other = format!("enc:v1:{}", STANDARD.encode([&nonce[..], &sealed].concat()));
        assert_eq!(c.decrypt(&other), Err(CipherError::Rejected));
    }

    #[test]
    fn malformed_or_unknown_values_are_errors() {
        let c = cipher(SEVENS);
        assert_eq!(c.decrypt("enc:v1:%%%"), Err(CipherError::Malformed));
        assert_eq!(c.decrypt("enc:v1:AAAA"), Err(CipherError::Malformed));
        assert_eq!(c.decrypt("enc:v9:AAAA"), Err(CipherError::UnknownFormat));
        assert_eq!(c.decrypt("sk-plain"), Err(CipherError::UnknownFormat));
        assert!(is_encrypted("enc:v9:AAAA"));
    }
}
