//! A value that came from a secret (a password, a session key, a connection string): never
//! printed, and with it where it came from, so that the config can be shown without it.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String> {
    value: T,
    origin: Origin,
}

/// Where a secret came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A file (its `*_file` key names it).
    File,
    /// `${ENV}` references, as written in the config file.
    Env(String),
    /// Written into the config file itself.
    Inline,
}

impl<T> Secret<T> {
    /// A secret read from a file.
    pub fn new(value: T) -> Self {
        Secret {
            value,
            origin: Origin::File,
        }
    }

    /// A secret from the config file: `written` as it stands there.
    pub fn written(value: T, written: &str) -> Self {
        let origin = match written.contains("${") {
            true => Origin::Env(written.to_string()),
            false => Origin::Inline,
        };
        Secret { value, origin }
    }

    pub fn expose(&self) -> &T {
        &self.value
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn is_inline(&self) -> bool {
        self.origin == Origin::Inline
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_is_masked() {
        let s = super::Secret::new("Endpoint=sb://x/;SharedAccessKey=abc".to_string());
        assert_eq!(format!("{s:?}"), "Secret(***)");
    }
}
