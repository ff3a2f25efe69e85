//! Users as the external platform syncs them: the validated sync command and the stored user.

use crate::ids::{ExternalUserId, UserId};
use crate::quota::Quota;
use crate::time::UnixTime;
use crate::validation::{ValidationErrors, rules};

/// Allowed `login_type` values.
pub const LOGIN_TYPES: &[&str] = &["email", "wechat", "alipay", "sms", "google"];

/// The sync request as received (`SyncExternalUserRequest`); `None` means absent or null.
#[derive(Debug, Default, garde::Validate)]
pub struct SyncUserInput {
    /// `external_user_id`.
    #[garde(custom(rules::text(true, 100)))]
    pub external_user_id: Option<String>,
    /// `username`.
    #[garde(custom(rules::text(true, 50)))]
    pub username: Option<String>,
    /// `display_name`.
    #[garde(custom(rules::text(false, 100)))]
    pub display_name: Option<String>,
    /// `email`.
    #[garde(custom(rules::email(100)))]
    pub email: Option<String>,
    /// `phone`.
    #[garde(custom(rules::text(false, 20)))]
    pub phone: Option<String>,
    /// `login_type`.
    #[garde(custom(rules::one_of(LOGIN_TYPES)))]
    pub login_type: Option<String>,
}

const SYNC_FIELDS: &[(&str, &str)] = &[
    ("external_user_id", "ExternalUserId"),
    ("username", "Username"),
    ("display_name", "DisplayName"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("login_type", "LoginType"),
];

/// Profile fields of a sync; `None` keeps the stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New email.
    pub email: Option<String>,
    /// New phone.
    pub phone: Option<String>,
    /// New login type (one of [`LOGIN_TYPES`]).
    pub login_type: Option<String>,
}

/// A validated sync: create the user, or update the fields it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncUser {
    external_user_id: ExternalUserId,
    username: String,
    profile: ProfilePatch,
}

impl SyncUserInput {
    /// Applies the rules of `SyncExternalUserRequest`. An empty optional string counts as
    /// absent, as in Go (`omitempty`).
    pub fn into_command(self) -> Result<SyncUser, ValidationErrors> {
        ValidationErrors::check(&self, "SyncExternalUserRequest", SYNC_FIELDS)?;
        let required = |v: Option<String>, field| {
            v.ok_or_else(|| ValidationErrors::single("SyncExternalUserRequest", field, "required"))
        };
        let external = required(self.external_user_id, "ExternalUserId")?;
        let external_user_id = ExternalUserId::parse(external).ok_or_else(|| {
            ValidationErrors::single("SyncExternalUserRequest", "ExternalUserId", "max")
        })?;
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(SyncUser {
            external_user_id,
            username: required(self.username, "Username")?,
            profile: ProfilePatch {
                display_name: non_empty(self.display_name),
                email: non_empty(self.email),
                phone: non_empty(self.phone),
                login_type: non_empty(self.login_type),
            },
        })
    }
}

impl SyncUser {
    /// Whose record this is.
    #[must_use]
    pub fn external_user_id(&self) -> &ExternalUserId {
        &self.external_user_id
    }

    /// The username to store (usernames need not be unique).
    #[must_use]
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Profile fields carried by the request.
    #[must_use]
    pub fn profile(&self) -> &ProfilePatch {
        &self.profile
    }
}

/// A stored user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Tollgate's id.
    pub id: UserId,
    /// The platform's id for the user.
    pub external_user_id: ExternalUserId,
    /// Username.
    pub username: String,
    /// Display name (empty when never set).
    pub display_name: String,
    /// Email (empty when never set).
    pub email: String,
    /// Phone (empty when never set).
    pub phone: String,
    /// Login type (empty when never set).
    pub login_type: String,
    /// Current balance.
    pub quota: Quota,
    /// Quota reserved by calls in flight and by balance leases (part of `quota`, not yet
    /// spent).
    pub held_quota: Quota,
    /// Of `held_quota`, what balance leases hold for instances (issue 9): reserved for calls
    /// that instance will take, so, like a call's hold, not free for others — and, until the
    /// lease folds them, its calls' charges already taken out of `quota`.
    pub leased_quota: Quota,
    /// Quota spent on LLM calls so far.
    pub used_quota: Quota,
    /// Settled LLM calls so far.
    pub total_requests: i64,
    /// When the user was created.
    pub created_at: UnixTime,
}

impl User {
    /// What the user can still start spending: the balance minus holds — of calls in flight
    /// and of balance leases, which calls anywhere may be taking from — never below zero. It
    /// never says more than a call can get.
    #[must_use]
    pub fn spendable(&self) -> Quota {
        Quota::new(self.quota.get().saturating_sub(self.held_quota.get())).max(Quota::ZERO)
    }
}

/// Result of a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The user as stored after the sync.
    pub user: User,
    /// Whether this sync created the user.
    pub created: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> SyncUserInput {
        SyncUserInput {
            external_user_id: Some("u1".into()),
            username: Some("name".into()),
            ..SyncUserInput::default()
        }
    }

    fn message(i: SyncUserInput) -> String {
        i.into_command().expect_err("must fail").to_string()
    }

    #[test]
    fn missing_external_id_fails_required() {
        let m = message(SyncUserInput {
            external_user_id: None,
            ..input()
        });
        assert_eq!(
            m,
            "请求参数错误: Key: 'SyncExternalUserRequest.ExternalUserId' Error:Field validation for 'ExternalUserId' failed on the 'required' tag"
        );
    }

    #[test]
    fn several_failures_join_in_field_order() {
        let m = message(SyncUserInput {
            external_user_id: Some(String::new()),
            username: Some("x".repeat(51)),
            email: Some("not-an-email".into()),
            login_type: Some("invalid_type".into()),
            ..input()
        });
        assert_eq!(
            m,
            "请求参数错误: Key: 'SyncExternalUserRequest.ExternalUserId' Error:Field validation for 'ExternalUserId' failed on the 'required' tag\n\
             Key: 'SyncExternalUserRequest.Username' Error:Field validation for 'Username' failed on the 'max' tag\n\
             Key: 'SyncExternalUserRequest.Email' Error:Field validation for 'Email' failed on the 'email' tag\n\
             Key: 'SyncExternalUserRequest.LoginType' Error:Field validation for 'LoginType' failed on the 'oneof' tag"
        );
    }

    #[test]
    fn max_counts_characters_not_bytes() {
        let ok = SyncUserInput {
            username: Some("名".repeat(50)),
            ..input()
        };
        assert!(ok.into_command().is_ok());
        let m = message(SyncUserInput {
            phone: Some("1".repeat(21)),
            ..input()
        });
        assert_eq!(
            m,
            "请求参数错误: Key: 'SyncExternalUserRequest.Phone' Error:Field validation for 'Phone' failed on the 'max' tag"
        );
    }

    #[test]
    fn empty_optional_fields_keep_stored_values() {
        let cmd = SyncUserInput {
            display_name: Some(String::new()),
            login_type: Some(String::new()),
            ..input()
        }
        .into_command()
        .expect("valid");
        assert_eq!(cmd.profile(), &ProfilePatch::default());
    }

    #[test]
    fn the_five_login_types_of_spec_are_accepted_and_nothing_else() {
        // SPEC §3: oneof=email wechat alipay sms google.
        for t in ["email", "wechat", "alipay", "sms", "google"] {
            let cmd = SyncUserInput {
                login_type: Some(t.into()),
                ..input()
            }
            .into_command()
            .expect(t);
            assert_eq!(cmd.profile().login_type.as_deref(), Some(t));
        }
        for t in ["Email", "email ", "phone", "github", "e"] {
            assert_eq!(
                message(SyncUserInput {
                    login_type: Some(t.into()),
                    ..input()
                }),
                "请求参数错误: Key: 'SyncExternalUserRequest.LoginType' Error:Field validation for 'LoginType' failed on the 'oneof' tag",
                "{t:?}"
            );
        }
    }

    #[test]
    fn each_field_fails_on_its_own_tag_at_max_plus_one() {
        let key = |field: &str, tag: &str| {
            format!(
                "请求参数错误: Key: 'SyncExternalUserRequest.{field}' Error:Field validation for '{field}' failed on the '{tag}' tag"
            )
        };
        // An address of `n` characters (a 60-character local part, as RFC 5321 allows 64).
        let email = |n: usize| format!("{}@{}.com", "a".repeat(60), "b".repeat(n - 65));
        // The limits of SPEC §3, in characters: at the limit valid, one more fails `max`.
        let at_limit = SyncUserInput {
            external_user_id: Some("界".repeat(100)),
            username: Some("名".repeat(50)),
            display_name: Some("显".repeat(100)),
            email: Some(email(100)),
            phone: Some("1".repeat(20)),
            login_type: None,
        };
        let cmd = at_limit.into_command().expect("every field at its limit");
        assert_eq!(cmd.external_user_id().as_str(), "界".repeat(100));
        assert_eq!(cmd.username(), "名".repeat(50));
        assert_eq!(
            cmd.profile(),
            &ProfilePatch {
                display_name: Some("显".repeat(100)),
                email: Some(email(100)),
                phone: Some("1".repeat(20)),
                login_type: None,
            }
        );
        let cases = [
            (
                SyncUserInput {
                    external_user_id: Some("界".repeat(101)),
                    ..input()
                },
                key("ExternalUserId", "max"),
            ),
            (
                SyncUserInput {
                    username: Some("名".repeat(51)),
                    ..input()
                },
                key("Username", "max"),
            ),
            (
                SyncUserInput {
                    username: Some(String::new()),
                    ..input()
                },
                key("Username", "required"),
            ),
            (
                SyncUserInput {
                    username: None,
                    ..input()
                },
                key("Username", "required"),
            ),
            (
                SyncUserInput {
                    display_name: Some("显".repeat(101)),
                    ..input()
                },
                key("DisplayName", "max"),
            ),
            (
                SyncUserInput {
                    email: Some(email(101)),
                    ..input()
                },
                key("Email", "max"),
            ),
            (
                SyncUserInput {
                    email: Some("no-at-sign".into()),
                    ..input()
                },
                key("Email", "email"),
            ),
            (
                SyncUserInput {
                    phone: Some("1".repeat(21)),
                    ..input()
                },
                key("Phone", "max"),
            ),
        ];
        for (i, expected) in cases {
            assert_eq!(message(i), expected);
        }
    }
}
