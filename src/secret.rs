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

    /// A secret from the config file: `written` as it stands there. Only one written as
    /// nothing but `${NAME}` references is from the environment: any other text around them
    /// (`sb://${NS}.servicebus…;SharedAccessKey=…`) may be the secret itself, so that is
    /// inline: masked when printed, and warned about in a config others can read.
    pub fn written(value: T, written: &str) -> Self {
        let origin = match only_references(written) {
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

/// Whether `written` is one or more `${NAME}` references and nothing else.
pub fn only_references(written: &str) -> bool {
    let mut rest = written;
    while let Some(after) = rest.strip_prefix("${") {
        match after.find('}') {
            Some(end) => rest = &after[end + 1..],
            None => return false,
        }
    }
    rest.is_empty() && !written.is_empty()
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

    #[test]
    fn from_the_environment_only_when_all_references() {
        for (written, env) in [
            ("${PW}", true),
            ("${A}${B}", true),
            ("", false),
            ("hunter2", false),
            ("hunter2${SUFFIX}", false),
            ("${PW}x", false),
            (
                "sb://${NS}.servicebus.windows.net/;SharedAccessKey=k",
                false,
            ),
            ("${PW", false),
        ] {
            assert_eq!(super::only_references(written), env, "{written}");
            let origin = super::Secret::written((), written).origin().clone();
            assert_eq!(matches!(origin, super::Origin::Env(_)), env, "{written}");
        }
    }
}
