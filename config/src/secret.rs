//! Settings that carry credentials, kept out of every printed or logged form of a config.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// A URL that may carry a password (`mysql://USER:PASSWORD@HOST:3306`). Its `Debug` form
/// shows the URL with the password replaced, so `check-config`, a log line or an error that
/// prints a config never shows it; [`SecretUrl::expose`] gives the URL to the code that
/// connects.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        SecretUrl(url.into())
    }

    /// The URL itself, password included: for connecting, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (if any) replaced by `***`.
    pub fn redacted(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                if u.set_password(Some("***")).is_ok() {
                    u.to_string()
                } else {
                    "<URL hidden>".into()
                }
            }
            // No password by the URL's grammar, but an `@` may still follow one that a
            // malformed URL put elsewhere (`mysql://u:12/x@h`): show nothing before it.
            Ok(_) if self.looks_like_userinfo_left() => match self.0.rsplit_once('@') {
                Some((_, host)) => format!("<user and password hidden>@{host}"),
                None => "<URL hidden>".into(),
            },
            Ok(u) => u.to_string(),
            // Not parseable: it may still hold a password, so none of it is shown.
            Err(_) => "<unparsable URL hidden>".into(),
        }
    }
}

impl SecretUrl {
    /// Whether text before the last `@` holds more than a user name (a `:` or `/`), which a
    /// URL whose grammar found no password may still hide one in.
    fn looks_like_userinfo_left(&self) -> bool {
        self.0.rsplit_once('@').is_some_and(|(before, _)| {
            let after_scheme = before.split_once("://").map_or(before, |(_, rest)| rest);
            after_scheme.contains([':', '/'])
        })
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.redacted(), f)
    }
}

/// A secret string (an API token): shown as `***` in every `Debug` form;
/// [`SecretString::expose`] gives it to the code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        SecretString(secret.into())
    }

    /// The secret itself: for sending, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// Reads a secret as text. Anything else (an environment override such as `12345` reads as
/// a TOML integer) is refused with a fixed message: serde's own would quote the value.
struct SecretText;

impl Visitor<'_> for SecretText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a quoted string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<String, E> {
        Err(not_text())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<String, E> {
        Err(not_text())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<String, E> {
        Err(not_text())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<String, E> {
        Err(not_text())
    }
}

fn not_text<E: de::Error>() -> E {
    E::custom("a secret must be a quoted string (its value is not shown); in an environment variable, wrap it in double quotes")
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretText).map(SecretString)
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SecretText).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_string_never_shows() {
        let s = SecretString::new("lft_0123");
        assert_eq!(format!("{s:?}"), "\"***\"");
        assert_eq!(s.expose(), "lft_0123");
    }

    #[test]
    fn the_password_never_shows() {
        let u = SecretUrl::new("mysql://repl:s3cr%40t@db:3306");
        assert_eq!(format!("{u:?}"), "\"mysql://repl:***@db:3306\"");
        assert_eq!(u.expose(), "mysql://repl:s3cr%40t@db:3306");
        let plain = SecretUrl::new("mysql://root@db:3306");
        assert_eq!(plain.redacted(), "mysql://root@db:3306");
        let odd = SecretUrl::new("not a url with pw hunter2");
        assert!(!format!("{odd:?}").contains("hunter2"));
        let malformed = SecretUrl::new("mysql://u:12/hunter2@h");
        assert!(
            !format!("{malformed:?}").contains("hunter2"),
            "{malformed:?}"
        );
    }

    #[test]
    fn a_secret_that_reads_as_a_number_is_refused_without_showing_it() {
        #[derive(Debug, serde::Deserialize)]
        struct Cfg {
            #[allow(dead_code)]
            token: SecretString,
        }
        let said = crate::load::parse_str::<Cfg>(
            "",
            "a.toml",
            vec![("LOGFERRY__TOKEN".into(), "9876543210".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(!said.contains("9876543210"), "{said}");
        assert!(said.contains("quoted string"), "{said}");
        let ok = crate::load::parse_str::<Cfg>(
            "",
            "a.toml",
            vec![("LOGFERRY__TOKEN".into(), "lft_00ff".into())],
        )
        .unwrap();
        assert_eq!(ok.token.expose(), "lft_00ff");
    }
}
