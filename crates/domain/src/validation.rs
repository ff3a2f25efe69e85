//! Request validation with the Go validator's wording, which platforms built against the Go
//! predecessor already parse: `请求参数错误: Key: 'Struct.Field' Error:Field validation for
//! 'Field' failed on the 'tag' tag`, one `Key:` part per failing field, in field order, joined by
//! `\n`. Rules run through garde; each custom rule reports the Go tag name as its message, and
//! [`ValidationErrors::from_report`] keeps the first failing tag of each field, as Go does.

use std::fmt;

/// Prefix of every validation message.
pub const PREFIX: &str = "请求参数错误: ";

/// One failing field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Go struct name, e.g. `SyncExternalUserRequest`.
    pub struct_name: &'static str,
    /// Go field name, e.g. `ExternalUserId`.
    pub field: &'static str,
    /// Go validator tag, e.g. `required`.
    pub tag: String,
}

/// One or more failing fields, in field order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(Vec<FieldError>);

impl ValidationErrors {
    /// A single failing field.
    #[must_use]
    pub fn single(struct_name: &'static str, field: &'static str, tag: &str) -> Self {
        ValidationErrors(vec![FieldError {
            struct_name,
            field,
            tag: tag.to_owned(),
        }])
    }

    /// Builds the Go-style list from a garde report. `fields` maps each JSON field name to its
    /// Go name, in declaration order, which fixes the order of the message parts.
    #[must_use]
    pub fn from_report(
        struct_name: &'static str,
        fields: &[(&str, &'static str)],
        report: &garde::Report,
    ) -> Option<Self> {
        let mut out = Vec::new();
        for (json_name, go_name) in fields {
            let first = report
                .iter()
                .find(|(path, _)| path.to_string() == *json_name);
            if let Some((_, error)) = first {
                out.push(FieldError {
                    struct_name,
                    field: go_name,
                    tag: error.message().to_owned(),
                });
            }
        }
        (!out.is_empty()).then_some(ValidationErrors(out))
    }

    /// Runs the garde rules of `value` and reports its failing fields, Go style.
    pub fn check<T: garde::Validate<Context = ()>>(
        value: &T,
        struct_name: &'static str,
        fields: &[(&str, &'static str)],
    ) -> Result<(), ValidationErrors> {
        match garde::Validate::validate(value) {
            Ok(()) => Ok(()),
            Err(report) => Self::from_report(struct_name, fields, &report).map_or(Ok(()), Err),
        }
    }

    /// The failing fields.
    #[must_use]
    pub fn fields(&self) -> &[FieldError] {
        &self.0
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(
                f,
                "Key: '{}.{}' Error:Field validation for '{}' failed on the '{}' tag",
                e.struct_name, e.field, e.field, e.tag
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Rule functions for `#[garde(custom(...))]`. Each returns a closure that garde calls with the
/// field value; the error message is the Go tag.
pub mod rules {
    use garde::Error;

    fn tag(t: &str) -> Error {
        Error::new(t.to_owned())
    }

    /// Go `required,max=N` (required) or `max=N` (optional) on a string: `required` fails on
    /// absence or the empty string; `max` counts characters.
    pub fn text(required: bool, max: usize) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
        move |v, ()| match v.as_deref() {
            None | Some("") if required => Err(tag("required")),
            Some(s) if s.chars().count() > max => Err(tag("max")),
            _ => Ok(()),
        }
    }

    /// Go `omitempty,email,max=N`.
    pub fn email(max: usize) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
        move |v, ()| match v.as_deref() {
            None | Some("") => Ok(()),
            Some(s) if garde::rules::email::parse_email(s).is_err() => Err(tag("email")),
            Some(s) if s.chars().count() > max => Err(tag("max")),
            Some(_) => Ok(()),
        }
    }

    /// Go `omitempty,oneof=…`.
    pub fn one_of(
        allowed: &'static [&'static str],
    ) -> impl FnOnce(&Option<String>, &()) -> garde::Result {
        move |v, ()| match v.as_deref() {
            None | Some("") => Ok(()),
            Some(s) if allowed.contains(&s) => Ok(()),
            Some(_) => Err(tag("oneof")),
        }
    }

    /// A field already reduced to its Go tag by parsing (numbers): report that tag.
    pub fn checked<T>(
        check: impl FnOnce(&T) -> Option<&'static str>,
    ) -> impl FnOnce(&T, &()) -> garde::Result {
        move |v, ()| match check(v) {
            Some(t) => Err(tag(t)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three fields with one rule each, to drive the rules and the report directly.
    #[derive(Debug, Default, garde::Validate)]
    struct Probe {
        #[garde(custom(rules::text(true, 3)))]
        name: Option<String>,
        #[garde(custom(rules::email(20)))]
        mail: Option<String>,
        #[garde(custom(rules::one_of(&["a", "b"])))]
        kind: Option<String>,
        #[garde(custom(rules::checked(|v: &Option<i64>| v.filter(|n| *n < 0).map(|_| "min"))))]
        count: Option<i64>,
    }

    const PROBE_FIELDS: &[(&str, &str)] = &[
        ("name", "Name"),
        ("mail", "Mail"),
        ("kind", "Kind"),
        ("count", "Count"),
    ];

    fn tags(p: &Probe) -> Vec<(&'static str, String)> {
        match ValidationErrors::check(p, "Probe", PROBE_FIELDS) {
            Ok(()) => Vec::new(),
            Err(e) => e
                .fields()
                .iter()
                .map(|f| {
                    assert_eq!(f.struct_name, "Probe");
                    (f.field, f.tag.clone())
                })
                .collect(),
        }
    }

    fn named(name: &str) -> Probe {
        Probe {
            name: Some(name.into()),
            ..Probe::default()
        }
    }

    #[test]
    fn text_rules_count_characters_and_require_non_empty() {
        assert_eq!(tags(&named("abc")), []);
        assert_eq!(tags(&named("名字啊")), [], "3 characters, 9 bytes");
        assert_eq!(tags(&named("abcd")), [("Name", "max".to_owned())]);
        assert_eq!(tags(&named("")), [("Name", "required".to_owned())]);
        assert_eq!(tags(&Probe::default()), [("Name", "required".to_owned())]);
    }

    #[test]
    fn optional_rules_pass_on_absent_or_empty_values() {
        let p = Probe {
            mail: Some(String::new()),
            kind: Some(String::new()),
            ..named("x")
        };
        assert_eq!(tags(&p), []);
        let ok = Probe {
            mail: Some("a@b.cn".into()),
            kind: Some("b".into()),
            count: Some(0),
            ..named("x")
        };
        assert_eq!(tags(&ok), []);
    }

    #[test]
    fn every_failing_field_is_reported_in_field_order() {
        let p = Probe {
            name: Some("long name".into()),
            mail: Some("not-mail".into()),
            kind: Some("c".into()),
            count: Some(-1),
        };
        assert_eq!(
            tags(&p),
            [
                ("Name", "max".to_owned()),
                ("Mail", "email".to_owned()),
                ("Kind", "oneof".to_owned()),
                ("Count", "min".to_owned()),
            ]
        );
        // An address can be well formed and still too long: 21 characters.
        let long = Probe {
            mail: Some("abcdefghijklm@bcd.com".into()),
            ..named("x")
        };
        assert_eq!(tags(&long), [("Mail", "max".to_owned())]);
        let at_limit = Probe {
            mail: Some("abcdefghijkl@bcd.com".into()),
            ..named("x")
        };
        assert_eq!(tags(&at_limit), []);
    }

    #[test]
    fn a_report_without_known_fields_is_no_error() {
        // Fields missing from the map are not reported; an empty result means no error.
        let p = Probe {
            kind: Some("z".into()),
            ..named("x")
        };
        let only_name = &[("name", "Name")];
        assert_eq!(ValidationErrors::check(&p, "Probe", only_name), Ok(()));
        let e = ValidationErrors::check(&p, "Probe", PROBE_FIELDS).expect_err("kind fails");
        assert_eq!(
            e.to_string(),
            "请求参数错误: Key: 'Probe.Kind' Error:Field validation for 'Kind' failed on the 'oneof' tag"
        );
    }

    #[test]
    fn two_fields_are_joined_by_one_newline_after_one_prefix() {
        let p = Probe {
            name: None,
            count: Some(-5),
            ..Probe::default()
        };
        assert_eq!(
            ValidationErrors::check(&p, "Probe", PROBE_FIELDS)
                .expect_err("fails")
                .to_string(),
            "请求参数错误: Key: 'Probe.Name' Error:Field validation for 'Name' failed on the 'required' tag\n\
             Key: 'Probe.Count' Error:Field validation for 'Count' failed on the 'min' tag"
        );
    }

    #[test]
    fn message_matches_the_go_validator() {
        let e = ValidationErrors::single("SyncExternalUserRequest", "ExternalUserId", "required");
        assert_eq!(
            e.to_string(),
            "请求参数错误: Key: 'SyncExternalUserRequest.ExternalUserId' Error:Field validation for 'ExternalUserId' failed on the 'required' tag"
        );
    }
}
