//! The optional configuration file (`TOLLGATE_CONFIG`, TOML) that lies under the environment.
//! Its keys are the settings' variable names in lower case without `TOLLGATE_` (`listen`,
//! `database_url`, …), at the top level. A key that is no setting is an error, so that a typo
//! is not silently ignored.
//!
//! Values take their natural TOML type or the string the environment would hold:
//! * text settings (addresses, URLs, paths, names, secrets): a string;
//! * whole-number settings: an integer (`retries = 3`) or a string of digits (`"3"`); a float
//!   is refused rather than rounded;
//! * list settings (`external_api_keys`): an array of strings, or one comma-separated string;
//! * no setting is a boolean, a date or a table: those are refused, so that `admin_key = true`
//!   cannot become the secret `"true"`.
//!
//! Every value is held as a [`SecretString`] until its setting reads it (the file may hold
//! secrets), and no error quotes a value read here.

use super::{ConfigError, SETTINGS, Shape};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The variable that names the file.
pub const CONFIG_VARIABLE: &str = "TOLLGATE_CONFIG";

/// One setting's value in the file.
pub(super) enum FileValue {
    /// A string (or a number, as its decimal text).
    One(SecretString),
    /// The entries of an array, as written.
    Many(Vec<SecretString>),
}

/// A parsed and checked configuration file.
pub struct ConfigFile {
    path: PathBuf,
    /// By the setting's variable name.
    values: BTreeMap<&'static str, FileValue>,
}

impl std::fmt::Debug for ConfigFile {
    /// The path and the keys set, never the values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigFile")
            .field("path", &self.path)
            .field(
                "keys",
                &self.values.keys().map(|v| file_key(v)).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A variable's key in the file: `TOLLGATE_LISTEN` → `listen`.
#[must_use]
pub fn file_key(variable: &str) -> String {
    variable
        .strip_prefix("TOLLGATE_")
        .unwrap_or(variable)
        .to_ascii_lowercase()
}

impl ConfigFile {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            variable: CONFIG_VARIABLE,
            file: None,
            problem: format!("cannot read {}: {e}", path.display()),
        })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as the contents of the file at `path`: TOML, known keys only, each of the
    /// type its setting takes.
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let whole = |problem: String| ConfigError {
            variable: CONFIG_VARIABLE,
            file: Some(path.to_owned()),
            problem,
        };
        // The parser's own message, without its multi-line excerpt of the file: the error must
        // stay one line, and the excerpt could show a secret.
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            let at = e
                .span()
                .map(|s| line_and_column(text, s.start))
                .map(|(l, c)| format!(" at line {l}, column {c}"))
                .unwrap_or_default();
            whole(format!(
                "not valid TOML{at}: {}",
                e.message().trim().replace('\n', " ")
            ))
        })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let Some(&(variable, shape)) = SETTINGS.iter().find(|(v, _)| file_key(v) == key) else {
                return Err(whole(unknown_key(&key)));
            };
            let bad = |problem: &str| ConfigError {
                variable,
                file: Some(path.to_owned()),
                problem: problem.to_owned(),
            };
            let one = |s: String| FileValue::One(SecretString::from(s));
            let value = match (shape, value) {
                (_, toml::Value::String(s)) => one(s),
                (Shape::Number, toml::Value::Integer(n)) => one(n.to_string()),
                (Shape::Number, _) => {
                    return Err(bad(
                        "must be a whole number (an integer, or a string of digits)",
                    ));
                }
                (Shape::List, toml::Value::Array(items)) => {
                    let mut entries = Vec::with_capacity(items.len());
                    for (i, item) in items.into_iter().enumerate() {
                        match item {
                            toml::Value::String(s) => entries.push(SecretString::from(s)),
                            _ => return Err(bad(&format!("entry {} must be a string", i + 1))),
                        }
                    }
                    FileValue::Many(entries)
                }
                (Shape::List, _) => {
                    return Err(bad(
                        "must be an array of strings, or one comma-separated string",
                    ));
                }
                (Shape::Text, _) => return Err(bad("must be a string (in quotes)")),
            };
            values.insert(variable, value);
        }
        Ok(ConfigFile {
            path: path.to_owned(),
            values,
        })
    }

    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn get(&self, variable: &str) -> Option<&FileValue> {
        self.values.get(variable)
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

/// The problem of a key that is no setting, with the setting it was probably meant to be.
fn unknown_key(key: &str) -> String {
    // The variable's own spelling (`TOLLGATE_LISTEN`), or a typo of one or two letters.
    let wanted = file_key(key);
    let guess = SETTINGS
        .iter()
        .map(|(v, _)| file_key(v))
        .map(|k| (edit_distance(&wanted, &k), k))
        .filter(|(d, _)| *d <= 2)
        .min();
    match guess {
        Some((_, k)) => format!("unknown key {key:?} (did you mean {k:?}?)"),
        None => format!(
            "unknown key {key:?} (keys are the TOLLGATE_* variables in lower case without the prefix, e.g. \"listen\")"
        ),
    }
}

/// Levenshtein distance, for suggestions on short keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn parse(text: &str) -> Result<ConfigFile, ConfigError> {
        ConfigFile::parse(Path::new("/etc/tollgate.toml"), text)
    }

    fn one(file: &ConfigFile, variable: &str) -> String {
        match file.get(variable) {
            Some(FileValue::One(s)) => s.expose_secret().to_owned(),
            _ => panic!("{variable} is not one value"),
        }
    }

    #[test]
    fn values_take_their_natural_type_or_the_string_form() {
        let f = parse(
            "listen = \"127.0.0.1:8080\"\nrelay_retries = 3\nhold_ttl_secs = \"600\"\n\
             external_api_keys = [\"platform-one\", \"platform-two\"]\n",
        )
        .expect("valid");
        assert_eq!(one(&f, "TOLLGATE_LISTEN"), "127.0.0.1:8080");
        assert_eq!(one(&f, "TOLLGATE_RELAY_RETRIES"), "3");
        assert_eq!(one(&f, "TOLLGATE_HOLD_TTL_SECS"), "600");
        assert!(matches!(
            f.get("TOLLGATE_EXTERNAL_API_KEYS"),
            Some(FileValue::Many(v)) if v.len() == 2
        ));
        let shown = format!("{f:?}");
        assert!(
            shown.contains("listen") && !shown.contains("platform-one"),
            "{shown}"
        );
    }

    #[test]
    fn wrong_types_name_the_file_and_the_key_without_the_value() {
        for (text, expected) in [
            (
                "listen = 3000",
                "/etc/tollgate.toml: listen: must be a string (in quotes)",
            ),
            (
                "admin_key = true",
                "/etc/tollgate.toml: admin_key: must be a string (in quotes)",
            ),
            (
                "relay_retries = 2.5",
                "/etc/tollgate.toml: relay_retries: must be a whole number (an integer, or a string of digits)",
            ),
            (
                "external_api_keys = [\"platform-one\", 12345678]",
                "/etc/tollgate.toml: external_api_keys: entry 2 must be a string",
            ),
            (
                "external_api_keys = 12345678",
                "/etc/tollgate.toml: external_api_keys: must be an array of strings, or one comma-separated string",
            ),
        ] {
            let e = parse(text).expect_err(text);
            assert_eq!(e.to_string(), expected);
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_a_suggestion() {
        let e = parse("lisen = \"0.0.0.0:3000\"").expect_err("typo");
        assert_eq!(
            e.to_string(),
            "/etc/tollgate.toml: unknown key \"lisen\" (did you mean \"listen\"?)"
        );
        let e = parse("TOLLGATE_ADMIN_KEY = \"x\"").expect_err("variable name");
        assert!(
            e.to_string().ends_with("(did you mean \"admin_key\"?)"),
            "{e}"
        );
        let e = parse("[relay]\nretries = 1").expect_err("table");
        assert!(
            e.to_string()
                .starts_with("/etc/tollgate.toml: unknown key \"relay\""),
            "{e}"
        );
        let e = parse("config = \"other.toml\"").expect_err("no nesting");
        assert!(e.to_string().contains("unknown key \"config\""), "{e}");
    }

    #[test]
    fn bad_toml_is_one_line_with_its_position_and_no_excerpt() {
        let e = parse("listen = \"0.0.0.0:3000\"\nadmin_key = \"s3cret-unterminated\n")
            .expect_err("unterminated string");
        let text = e.to_string();
        assert!(
            text.starts_with("/etc/tollgate.toml: not valid TOML at line 2, column "),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn a_missing_file_names_the_variable_and_the_path() {
        let e = ConfigFile::load(Path::new("/nonexistent/tollgate.toml")).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("TOLLGATE_CONFIG: cannot read /nonexistent/tollgate.toml: "),
            "{e}"
        );
    }
}
