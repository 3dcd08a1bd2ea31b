//! A value that came from a secret (a password, a session key, a connection string): never
//! printed, and marked when it was written into the config file itself.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret<T = String> {
    value: T,
    /// Written into the config file itself (not from a file or `${ENV}`).
    inline: bool,
}

impl<T> Secret<T> {
    /// A secret from a file or the environment.
    pub fn new(value: T) -> Self {
        Secret {
            value,
            inline: false,
        }
    }

    /// A secret written into the config file.
    pub fn inline(value: T) -> Self {
        Secret {
            value,
            inline: true,
        }
    }

    pub fn expose(&self) -> &T {
        &self.value
    }

    pub fn is_inline(&self) -> bool {
        self.inline
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
