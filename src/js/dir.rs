//! The codec directory (`[codecs] dir`): JavaScript codecs `<name>.js`, each with an optional
//! mapping table `<name>.toml` (src/mapping.rs). The operator drops vendor files in.

use std::path::{Path, PathBuf};

use super::JsCodec;
use crate::mapping::Table;

/// Largest codec file read: vendor codecs with lookup tables reach a few hundred KB.
pub const FILE_CAP: u64 = 1 << 20;

/// The codec names in `dir` (`<name>.js`), sorted.
pub fn names(dir: &Path) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut out: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "js"))
        .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(String::from))
        .collect();
    out.sort();
    Ok(out)
}

/// `<dir>/<name>.<ext>`; a name that would leave the directory is refused.
pub fn path(dir: &Path, name: &str, ext: &str) -> Result<PathBuf, String> {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if !plain {
        return Err(format!(
            "codec name {name:?}: letters, digits, '-', '_' and '.' only"
        ));
    }
    Ok(dir.join(format!("{name}.{ext}")))
}

/// Load the codec `name` of `dir` and its mapping table. A directory others may write to is
/// refused: whoever can add or replace a file there runs code in the agent.
pub fn load(dir: &Path, name: &str) -> Result<Script, String> {
    crate::files::refuse_writable_by_others(dir, "codecs")?;
    load_file(&path(dir, name, "js")?)
}

/// Load the mapping table `name` of `dir` (`<name>.toml`), as [`load`] loads a codec.
pub fn load_table(dir: &Path, name: &str) -> Result<Table, String> {
    crate::files::refuse_writable_by_others(dir, "codecs")?;
    parse_table(&path(dir, name, "toml")?)
}

fn parse_table(file: &Path) -> Result<Table, String> {
    Table::parse(&read(file)?).map_err(|e| format!("{}: {e}", file.display()))
}

/// The text of a codec or mapping file of at most [`FILE_CAP`] bytes that only its owner may
/// write; the error names the file.
pub fn read(file: &Path) -> Result<String, String> {
    crate::files::refuse_writable_by_others(file, "a codec")?;
    crate::files::read_capped(file, FILE_CAP).map_err(|e| format!("{}: {e}", file.display()))
}

/// Load one codec file and its mapping table, the `.toml` beside it (none when there is no
/// such file).
pub fn load_file(file: &Path) -> Result<Script, String> {
    let source = read(file)?;
    let name = file.file_stem().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let codec = JsCodec::load(&format!("{name}.js"), &source)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let toml = file.with_extension("toml");
    let table = if toml.exists() {
        Some(parse_table(&toml)?)
    } else {
        None
    };
    Ok(Script {
        codec,
        table,
        class: format!("js/{name}"),
    })
}

/// One codec of the directory as the decode stage uses it.
pub struct Script {
    pub codec: JsCodec,
    pub table: Option<Table>,
    /// `unpacker.class` of its records: `js/<name>`.
    pub class: String,
}

/// The codecs a config names (devices' `js_codec`, `[codecs.profiles]`), each loaded once;
/// one that failed to load keeps its reason, which its uplinks' packed records carry.
#[derive(Default)]
pub struct Scripts {
    loaded: std::collections::HashMap<String, Result<Script, String>>,
}

impl Scripts {
    /// Load `names` from `dir`; `failed` hears about each that could not be loaded.
    pub fn load<'a>(
        dir: &Path,
        names: impl IntoIterator<Item = &'a str>,
        mut failed: impl FnMut(&str),
    ) -> Scripts {
        let mut loaded = std::collections::HashMap::new();
        for name in names {
            if loaded.contains_key(name) {
                continue;
            }
            let script = load(dir, name);
            if let Err(e) = &script {
                failed(e);
            }
            loaded.insert(name.to_string(), script);
        }
        Scripts { loaded }
    }

    pub fn get(&self, name: &str) -> Option<&Result<Script, String>> {
        self.loaded.get(name)
    }

    pub fn len(&self) -> usize {
        self.loaded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.loaded.is_empty()
    }
}
