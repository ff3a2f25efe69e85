//! Channel keys at rest on every configured backend: with a secret the stored column never holds
//! the key, rows written before the secret are encrypted at start-up without losing their key,
//! and a store without the secret (or with another) refuses encrypted rows with a clear error
//! instead of presenting ciphertext upstream.
#![allow(
    clippy::expect_used,
    reason = "test helpers fail the calling test by panicking"
)]

use tollgate_domain::channel::{Channel, ChannelInput, ChannelSpec};
use tollgate_domain::ids::ChannelId;
use tollgate_domain::repository::ChannelRepository;
use tollgate_domain::time::UnixTime;
use tollgate_storage::{KeyCipher, KeyStatus, SeaStore, SecretKey, StorageError, testing};

const NOW: UnixTime = UnixTime::from_secs(1_764_000_000);
const LATER: UnixTime = UnixTime::from_secs(1_764_000_100);

/// 32 bytes of 7, and 32 bytes 0..=31, in base64.
const SECRET: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const OTHER_SECRET: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

fn cipher(secret: &str) -> Option<KeyCipher> {
    Some(KeyCipher::new(
        &SecretKey::from_base64(secret).expect("valid secret"),
    ))
}

fn spec(name: &str, kind: &str, key: Option<&str>) -> ChannelSpec {
    ChannelInput {
        name: Some(name.into()),
        kind: Some(kind.into()),
        key: key.map(Into::into),
        models: Some(vec!["deepseek-chat".into()]),
        ..Default::default()
    }
    .into_spec(|_| true)
    .expect("valid channel")
}

async fn raw(store: &SeaStore, id: ChannelId) -> String {
    store
        .raw_channel_key(id)
        .await
        .expect("read raw key")
        .expect("channel exists")
}

fn assert_encrypted(stored: &str, key: &str, backend: &str) {
    assert!(stored.starts_with("enc:v1:"), "{backend}: {stored}");
    assert!(!stored.contains(key), "{backend}: the key is in the column");
}

#[tokio::test]
async fn with_a_secret_the_column_never_holds_the_key_and_reads_give_it_back() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let store = plain.with_cipher(cipher(SECRET));

        let c = store
            .insert_channel(&spec("a", "deepseek", Some("sk-first-secret")), NOW)
            .await
            .expect("insert");
        assert_eq!(c.spec.key.expose(), "sk-first-secret");
        let first = raw(&store, c.id).await;
        assert_encrypted(&first, "sk-first-secret", backend);
        let listed = store.list_channels().await.expect("list");
        assert_eq!(listed, vec![c.clone()], "{backend}");

        // An update re-encrypts the new key; the returned channel carries the key itself.
        let updated = store
            .update_channel(
                c.id,
                &spec("a2", "deepseek", Some("sk-second-secret")),
                LATER,
            )
            .await
            .expect("update")
            .expect("exists");
        assert_eq!(updated.spec.key.expose(), "sk-second-secret");
        assert_eq!(updated.spec.name, "a2");
        let second = raw(&store, c.id).await;
        assert_encrypted(&second, "sk-second-secret", backend);
        assert_ne!(first, second);
        assert_eq!(
            store.list_channels().await.expect("list"),
            vec![updated],
            "{backend}"
        );

        // A channel kind without a key keeps an empty column: there is nothing to hide.
        let echo = store
            .insert_channel(&spec("e", "echo", None), NOW)
            .await
            .expect("insert echo");
        assert_eq!(raw(&store, echo.id).await, "");

        assert_eq!(
            store.secure_channel_keys().await.expect("secure"),
            KeyStatus {
                encrypted_now: 0,
                already_encrypted: 1,
                plain: 0
            },
            "{backend}"
        );
    }
}

#[tokio::test]
async fn the_same_key_encrypts_differently_every_time() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let store = plain.with_cipher(cipher(SECRET));
        let same = spec("a", "deepseek", Some("sk-same"));
        let a = store.insert_channel(&same, NOW).await.expect("a");
        let b = store.insert_channel(&same, NOW).await.expect("b");
        let (ra, rb) = (raw(&store, a.id).await, raw(&store, b.id).await);
        assert_ne!(ra, rb, "{backend}: a nonce was reused");
        // Writing the unchanged key again stores a new ciphertext too.
        store
            .update_channel(a.id, &same, LATER)
            .await
            .expect("update")
            .expect("exists");
        assert_ne!(raw(&store, a.id).await, ra, "{backend}");
        for c in store.list_channels().await.expect("list") {
            assert_eq!(c.spec.key.expose(), "sk-same", "{backend}");
        }
    }
}

#[tokio::test]
async fn keys_stored_as_given_are_encrypted_at_start_up_and_read_back_the_same() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let one = plain
            .insert_channel(&spec("one", "deepseek", Some("sk-legacy-1")), NOW)
            .await
            .expect("one");
        let two = plain
            .insert_channel(&spec("two", "openai", Some("sk-legacy-2")), NOW)
            .await
            .expect("two");
        plain
            .insert_channel(&spec("echo", "echo", None), NOW)
            .await
            .expect("echo");
        // Without a secret the keys are stored as given, and start-up can say how many.
        assert_eq!(raw(&plain, one.id).await, "sk-legacy-1");
        assert_eq!(
            plain.secure_channel_keys().await.expect("count"),
            KeyStatus {
                encrypted_now: 0,
                already_encrypted: 0,
                plain: 2
            },
            "{backend}"
        );
        let before: Vec<Channel> = plain.list_channels().await.expect("list");

        let store = plain.clone().with_cipher(cipher(SECRET));
        assert_eq!(
            store.secure_channel_keys().await.expect("secure"),
            KeyStatus {
                encrypted_now: 2,
                already_encrypted: 0,
                plain: 0
            },
            "{backend}"
        );
        assert_encrypted(&raw(&store, one.id).await, "sk-legacy-1", backend);
        assert_encrypted(&raw(&store, two.id).await, "sk-legacy-2", backend);
        // Same channels, same keys, nothing else touched (not even `updated_at`).
        assert_eq!(
            store.list_channels().await.expect("list"),
            before,
            "{backend}"
        );
        // Running it again finds nothing left to do.
        assert_eq!(
            store.secure_channel_keys().await.expect("again"),
            KeyStatus {
                encrypted_now: 0,
                already_encrypted: 2,
                plain: 0
            },
            "{backend}"
        );
    }
}

#[tokio::test]
async fn without_the_secret_encrypted_keys_are_a_clear_error_not_a_key() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let store = plain.clone().with_cipher(cipher(SECRET));
        let c = store
            .insert_channel(&spec("a", "deepseek", Some("sk-hidden")), NOW)
            .await
            .expect("insert");
        let stored = raw(&store, c.id).await;

        let e = plain.list_channels().await.expect_err("no secret");
        let text = e.detail();
        assert_eq!(
            text,
            format!(
                "channel {}: its key is encrypted; set TOLLGATE_SECRET_KEY to the secret it was \
                 encrypted with",
                c.id.get()
            ),
            "{backend}"
        );
        assert!(!text.contains(&stored) && !text.contains("sk-hidden"));
        let e = plain.secure_channel_keys().await.expect_err("start-up");
        assert!(matches!(e, StorageError::SecretKey(_)), "{backend}: {e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "channel keys are encrypted (channel {}); set TOLLGATE_SECRET_KEY to the secret \
                 they were encrypted with",
                c.id.get()
            ),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn another_secret_is_refused_at_start_up_before_it_encrypts_anything() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let store = plain.clone().with_cipher(cipher(SECRET));
        let c = store
            .insert_channel(&spec("a", "deepseek", Some("sk-hidden")), NOW)
            .await
            .expect("insert");
        let stored = raw(&store, c.id).await;
        // A row written as given by an instance without the secret.
        let legacy = plain
            .insert_channel(&spec("b", "deepseek", Some("sk-legacy")), NOW)
            .await
            .expect("legacy");

        let wrong = plain.clone().with_cipher(cipher(OTHER_SECRET));
        let e = wrong.list_channels().await.expect_err("wrong secret");
        assert_eq!(
            e.detail(),
            format!(
                "channel {}: its key does not decrypt with TOLLGATE_SECRET_KEY (it was encrypted \
                 with another secret, or altered)",
                c.id.get()
            ),
            "{backend}"
        );
        let e = wrong.secure_channel_keys().await.expect_err("start-up");
        let text = e.to_string();
        assert!(matches!(e, StorageError::SecretKey(_)), "{backend}: {e:?}");
        assert_eq!(
            text,
            format!(
                "TOLLGATE_SECRET_KEY does not decrypt the stored keys of channel {}: they were \
                 encrypted with another secret (or altered); set TOLLGATE_SECRET_KEY to the \
                 secret they were encrypted with",
                c.id.get()
            ),
            "{backend}"
        );
        assert!(!text.contains(&stored) && !text.contains("sk-"));
        // Nothing was written with the wrong secret.
        assert_eq!(raw(&plain, legacy.id).await, "sk-legacy", "{backend}");
        assert_eq!(raw(&plain, c.id).await, stored, "{backend}");

        // The right secret still reads both.
        let keys: Vec<String> = store
            .list_channels()
            .await
            .expect("list")
            .into_iter()
            .map(|c| c.spec.key.expose().to_owned())
            .collect();
        assert_eq!(keys, ["sk-hidden", "sk-legacy"], "{backend}");
    }
}

#[tokio::test]
async fn an_altered_ciphertext_is_refused() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let store = plain.with_cipher(cipher(SECRET));
        let c = store
            .insert_channel(&spec("a", "deepseek", Some("sk-hidden")), NOW)
            .await
            .expect("insert");
        let stored = raw(&store, c.id).await;
        // Change one base64 character inside the ciphertext (past `enc:v1:` and the nonce).
        let at = "enc:v1:".len() + 20;
        let mut bytes = stored.into_bytes();
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert!(
            store
                .put_raw_channel_key(c.id, &tampered)
                .await
                .expect("tamper")
        );

        let e = store.list_channels().await.expect_err("tampered");
        assert!(
            e.detail()
                .contains("does not decrypt with TOLLGATE_SECRET_KEY"),
            "{backend}: {}",
            e.detail()
        );
        assert!(store.secure_channel_keys().await.is_err(), "{backend}");

        // Text that is not even a ciphertext is named as such.
        store
            .put_raw_channel_key(c.id, "enc:v1:???")
            .await
            .expect("break");
        let e = store.list_channels().await.expect_err("malformed");
        assert_eq!(
            e.detail(),
            format!(
                "channel {}: its key cannot be read: the stored encrypted key is malformed",
                c.id.get()
            ),
            "{backend}"
        );
    }
}

#[tokio::test]
async fn without_a_secret_a_key_that_looks_encrypted_is_not_stored_as_given() {
    for plain in testing::stores().await.expect("test databases") {
        let backend = plain.backend_name();
        let e = plain
            .insert_channel(&spec("a", "deepseek", Some("enc:v1:not-really")), NOW)
            .await
            .expect_err("ambiguous key");
        assert!(
            e.detail().contains("can be stored only encrypted"),
            "{backend}: {}",
            e.detail()
        );
        assert!(plain.list_channels().await.expect("list").is_empty());

        // With a secret it is just a key.
        let store = plain.with_cipher(cipher(SECRET));
        let c = store
            .insert_channel(&spec("a", "deepseek", Some("enc:v1:not-really")), NOW)
            .await
            .expect("insert");
        assert_eq!(
            store.list_channels().await.expect("list")[0]
                .spec
                .key
                .expose(),
            "enc:v1:not-really"
        );
        assert_ne!(raw(&store, c.id).await, "enc:v1:not-really", "{backend}");
    }
}
