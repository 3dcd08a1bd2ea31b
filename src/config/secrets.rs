//! Secrets in the config: `${ENV}` expanded, `*_file` keys read, and parsed into what they
//! hold without ever quoting them.

use std::path::{Path, PathBuf};

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

use crate::connection_string::ConnectionString;
use crate::lorawan::Key;
use crate::secret::{only_references, Origin, Secret};

/// What a secret holds, parsed from its text (`${ENV}` expanded, a file's content trimmed).
/// Errors never quote the text.
pub trait SecretText: Sized {
    fn from_text(text: String) -> Result<Self, String>;
}

impl SecretText for String {
    fn from_text(text: String) -> Result<Self, String> {
        Ok(text)
    }
}

impl SecretText for Key {
    fn from_text(text: String) -> Result<Self, String> {
        Key::from_hex(&text).map_err(|e| e.to_string())
    }
}

impl SecretText for ConnectionString {
    fn from_text(text: String) -> Result<Self, String> {
        ConnectionString::parse(&text).map_err(|e| e.to_string())
    }
}

/// What `check --print` shows in place of a secret written into the config file. Given
/// back as a secret it is refused: it would otherwise pass for the password `***`.
pub const MASK: &str = "***";

fn refuse_mask(raw: &str) -> Result<(), String> {
    match raw == MASK {
        true => Err(format!(
            "{MASK:?} stands for a secret `check --print` did not show: write the secret itself, a ${{ENV}} reference, or use the *_file key"
        )),
        false => Ok(()),
    }
}

/// A secret's text as written: a string only. serde's own type error quotes a number or
/// boolean given instead (`invalid type: integer `31415926``), so those get a fixed message.
pub(crate) struct SecretString(pub String);

const UNQUOTED: &str = "a secret must be a quoted string (value not shown)";

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)
            .map(SecretString)
            .map_err(|_| de::Error::custom(UNQUOTED))
    }
}

impl<'de, T: SecretText> Deserialize<'de> for Secret<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = SecretString::deserialize(d)?.0;
        refuse_mask(&raw).map_err(de::Error::custom)?;
        // What is not a reference may be the secret (a password holding `${`): the variable
        // is named only when the value is nothing but references.
        let text = expand_env(&raw).map_err(|e| match only_references(&raw) {
            true => de::Error::custom(e),
            false => de::Error::custom(
                "a ${…} in it names an environment variable that is not set (not named here: \
                 the value is more than ${NAME} references, and the rest may be secret)",
            ),
        })?;
        let value = T::from_text(text).map_err(de::Error::custom)?;
        Ok(Secret::written(value, &raw))
    }
}

/// A secret as `check --print` shows it: a `${ENV}` reference as written, one written inline
/// as [`MASK`], one from a file not at all (its `*_file` key is shown).
impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.origin() {
            Origin::Env(written) => s.serialize_str(written),
            Origin::Inline => s.serialize_str(MASK),
            Origin::File => s.serialize_none(),
        }
    }
}

/// The keys whose values are secrets; `${ENV}` is expanded in them and in `*_file` paths.
const SECRET_KEYS: [&str; 5] = [
    "password",
    "nwk_s_key",
    "app_s_key",
    "connection_string",
    "sasl_password",
];

fn expanded_in(key: &str) -> bool {
    SECRET_KEYS.contains(&key) || key.ends_with("_file")
}

/// A `${…}` anywhere else would be taken literally (a gateway named "${HOSTNAME}"): refused,
/// naming the key and its line. On error (key path, reason).
pub(super) fn no_env_elsewhere(text: &str, table: &toml::Table) -> Result<(), (String, String)> {
    fn walk(path: &str, key: &str, value: &toml::Value) -> Option<(String, String)> {
        let here = match key.contains('.') {
            true => format!("{path}{key:?}"),
            false => format!("{path}{key}"),
        };
        match value {
            toml::Value::String(s) if s.contains("${") && !expanded_in(key) => {
                Some((here, key.to_string()))
            }
            toml::Value::Table(t) => t.iter().find_map(|(k, v)| walk(&format!("{here}."), k, v)),
            toml::Value::Array(items) => items.iter().enumerate().find_map(|(i, v)| match v {
                toml::Value::Table(t) => t
                    .iter()
                    .find_map(|(k, v)| walk(&format!("{here}[{i}]."), k, v)),
                v => walk(path, key, v),
            }),
            _ => None,
        }
    }
    let Some((path, key)) = table.iter().find_map(|(k, v)| walk("", k, v)) else {
        return Ok(());
    };
    let line = text
        .lines()
        .position(|l| {
            l.trim_start()
                .trim_start_matches('"')
                .starts_with(key.as_str())
                && l.contains("${")
        })
        .map(|n| format!(" (line {})", n + 1))
        .unwrap_or_default();
    Err((
        path,
        format!(
            "${{…}} is expanded only in secrets ({}) and *_file paths; write the value itself here{line}",
            SECRET_KEYS.join(", ")
        ),
    ))
}

/// Expand `${NAME}` from the environment; an unset variable is an error, not an empty string.
pub(super) fn expand_env(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${ in value".to_string())?;
        let name = &after[..end];
        let value =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Read a secret from `file` (`${ENV}` expanded in the path, e.g.
/// `${CREDENTIALS_DIRECTORY}/eventhubs.secret` under systemd `LoadCredential=`): a regular,
/// non-empty file of at most [`crate::files::SECRET_CAP`] bytes. Errors name the file only
/// when its path looks like one ([`looks_like_path`]).
pub fn read_secret_file<T: SecretText>(file: &Path) -> Result<Secret<T>, String> {
    read_from(file, true)
}

/// [`read_secret_file`]; with `nameable` false errors never name the file.
fn read_from<T: SecretText>(file: &Path, nameable: bool) -> Result<Secret<T>, String> {
    let file = secret_path(file)?;
    let named = nameable && looks_like_path(&file);
    let unnamed = "the value is not shown: it does not look like an absolute path, and may be \
                   the secret itself";
    let text =
        crate::files::read_capped(&file, crate::files::SECRET_CAP).map_err(|e| match named {
            true => format!("cannot read secret file {}: {e}", file.display()),
            false => format!("cannot read the file it names: {e} ({unnamed})"),
        })?;
    // The .deb installs the connection string's file empty, for the operator to fill.
    let text = text.trim();
    if text.is_empty() {
        return Err(match named {
            true => format!("the file {} is empty", file.display()),
            false => format!("the file it names is empty ({unnamed})"),
        });
    }
    T::from_text(text.to_string()).map(Secret::new)
}

/// Whether a secret file's path (`${ENV}` expanded) may be shown: absolute, without `=`, `;`
/// or white space. A secret pasted where its file goes (a password, a key, a connection
/// string), or the `${VAR}` holding one, would otherwise be printed as the file that cannot
/// be read.
fn looks_like_path(file: &Path) -> bool {
    let text = file.to_string_lossy();
    file.is_absolute() && !text.contains(['=', ';']) && !text.contains(char::is_whitespace)
}

/// A secret file's path with `${ENV}` expanded.
pub(super) fn secret_path(file: &Path) -> Result<PathBuf, String> {
    expand_env(&file.to_string_lossy()).map(PathBuf::from)
}

/// The secret files a config names, as they are read.
pub(super) struct SecretFiles {
    /// The paths written relative, resolved from the config's directory: never named, since
    /// what was written may be the secret itself.
    relative: Vec<PathBuf>,
    /// Each file read, with what it holds: for the warnings about who else may read it.
    pub(super) read: Vec<(PathBuf, &'static str)>,
}

impl SecretFiles {
    /// `relative`: the config's paths that were written relative, as resolved.
    pub(super) fn new(relative: Vec<PathBuf>) -> SecretFiles {
        SecretFiles {
            relative,
            read: Vec::new(),
        }
    }

    /// The secret in `file`, which holds `what` ([`read_secret_file`]).
    pub(super) fn read<T: SecretText>(
        &mut self,
        file: &Path,
        what: &'static str,
    ) -> Result<Secret<T>, String> {
        let secret = read_from(file, !self.relative.iter().any(|r| r == file))?;
        self.read.push((file.to_path_buf(), what));
        Ok(secret)
    }
}

/// Either `value` or `file`: a file's secret goes into `value`, and the file is noted in
/// `files`. `key` is the value's key path.
pub(super) fn load_secret<T: SecretText>(
    value: &mut Option<Secret<T>>,
    file: &Option<PathBuf>,
    key: &str,
    files: &mut SecretFiles,
) -> Result<(), (String, String)> {
    let Some(file) = file else {
        return Ok(());
    };
    let name = key.rsplit('.').next().unwrap_or(key);
    if value.is_some() {
        return Err((
            key.to_string(),
            format!("give {name} or {name}_file, not both"),
        ));
    }
    *value = Some(
        files
            .read(file, "a secret")
            .map_err(|e| (format!("{key}_file"), e))?,
    );
    Ok(())
}
