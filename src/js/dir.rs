//! The codec directory (`[codecs] dir`): JavaScript codecs `<name>.js`, each with an optional
//! mapping table `<name>.toml` (src/mapping.rs). The operator drops vendor files in.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use super::{JsCodec, Launcher, Worker};
use crate::config::{valid_hub_name, Config, HubNames, HUB_NAMES};
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

/// Load the codec `name` of `dir` and its mapping table. A directory, file or table that
/// someone other than root or the agent's user could change is refused: whoever can add or
/// replace a file there runs code in the agent.
pub fn load(dir: &Path, name: &str, worker: &Worker) -> Result<Script, String> {
    crate::files::check_trusted_dir(dir, "codecs")?;
    load_file(&path(dir, name, "js")?, worker, Checks::Refuse)
}

/// Load the mapping table `name` of `dir` (`<name>.toml`), as [`load`] loads a codec.
pub fn load_table(dir: &Path, name: &str) -> Result<Table, String> {
    crate::files::check_trusted_dir(dir, "codecs")?;
    parse_table(&path(dir, name, "toml")?, &mut Checks::Refuse)
}

/// What a codec or mapping file others could change costs.
pub enum Checks<'a> {
    /// Refused: the agent's files.
    Refuse,
    /// A warning here: `hubgate decode --js FILE`, the operator trying a file of their own.
    Warn(&'a mut Vec<String>),
}

fn parse_table(file: &Path, checks: &mut Checks) -> Result<Table, String> {
    Table::parse(&read(file, "a mapping table", checks)?)
        .map_err(|e| format!("{}: {e}", file.display()))
}

/// The text of a codec or mapping file of at most [`FILE_CAP`] bytes
/// ([`crate::files::read_checked`]); the error names the file.
fn read(file: &Path, what: &str, checks: &mut Checks) -> Result<String, String> {
    let (text, untrusted) = crate::files::read_checked(file, FILE_CAP, what)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    match (untrusted, checks) {
        (None, _) => {}
        (Some(u), Checks::Refuse) => return Err(u.refused()),
        (Some(u), Checks::Warn(warnings)) => {
            warnings.push(format!("{}: the agent would refuse it; {}", u.what, u.fix))
        }
    }
    Ok(text)
}

/// Load one codec file and its mapping table, the `.toml` beside it (none when there is no
/// such file).
pub fn load_file(file: &Path, worker: &Worker, mut checks: Checks) -> Result<Script, String> {
    let source = read(file, "a codec", &mut checks)?;
    let name = file.file_stem().map_or_else(
        || file.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let codec = worker
        .load(&format!("{name}.js"), &source)
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let toml = file.with_extension("toml");
    // Not `exists()`, which follows a link: one that points nowhere was taken for no table.
    // Any entry by that name is read, and a link refused saying so.
    let table = match toml.symlink_metadata() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        _ => Some(parse_table(&toml, &mut checks)?),
    };
    let mut version = std::collections::hash_map::DefaultHasher::new();
    source.hash(&mut version);
    Ok(Script {
        codec,
        table,
        class: format!("js/{name}"),
        version: version.finish(),
    })
}

/// One codec of the directory as the decode stage uses it.
pub struct Script {
    pub codec: JsCodec,
    pub table: Option<Table>,
    /// `unpacker.class` of its records: `js/<name>`.
    pub class: String,
    /// A hash of its source: a reload that finds the same text keeps the codec's strikes and
    /// quarantines ([`super::guard`]).
    pub version: u64,
}

impl Script {
    /// Its codec's name, that of its file without `.js`.
    pub fn name(&self) -> &str {
        self.class.strip_prefix("js/").unwrap_or(&self.class)
    }
}

/// The codecs and mapping tables a config names (devices' `js_codec` and `mapping`,
/// `[codecs.profiles]`), each once, and the directory they come from.
#[derive(Clone)]
pub struct Named {
    pub dir: PathBuf,
    pub codecs: Vec<String>,
    pub tables: Vec<String>,
    /// Where the sink sends each recType; `None` for a sink without hubs.
    pub hubs: Option<HubNames>,
}

impl Named {
    pub fn of(cfg: &Config) -> Named {
        let mut codecs: Vec<String> = cfg
            .devices
            .iter()
            .filter_map(|d| d.js_codec.clone())
            .chain(cfg.codecs.profiles.values().cloned())
            .collect();
        let mut tables: Vec<String> = cfg
            .devices
            .iter()
            .filter_map(|d| d.mapping.clone())
            .collect();
        for names in [&mut codecs, &mut tables] {
            names.sort();
            names.dedup();
        }
        Named {
            dir: cfg.codecs.dir.clone(),
            codecs,
            tables,
            hubs: cfg.sink.hub_names(),
        }
    }

    /// `table` (of the file `name`.toml), unless its `rec_type` goes to a hub no hub can be
    /// named: the config's check refuses that at start, and a reload that took it would send
    /// the device's records where they wait, parked, until `max_age` (the version in use
    /// stays instead).
    fn to_a_hub(&self, name: &str, table: Option<&Table>) -> Result<(), String> {
        let Some((hubs, rec_type)) = self
            .hubs
            .as_ref()
            .zip(table.and_then(|t| t.rec_type.as_ref()))
        else {
            return Ok(());
        };
        let hub = hubs.hub(rec_type);
        if valid_hub_name(hub) {
            return Ok(());
        }
        Err(format!(
            "{}: rec_type {rec_type:?} goes to the hub named like it, and that is no hub name \
             ({HUB_NAMES}): rename it, or map it to a hub in the sink's config and restart",
            path(&self.dir, name, "toml")?.display()
        ))
    }

    /// The recTypes their mapping tables declare (`rec_type`): a codec's own table (none is
    /// fine) and the devices' tables. Reads only the tables; one that does not load declares
    /// nothing, as the decode stage uses none of it.
    pub fn declared_rec_types(&self) -> Vec<String> {
        let tables = self.codecs.iter().chain(&self.tables);
        tables
            .filter_map(|name| load_table(&self.dir, name).ok()?.rec_type)
            .collect()
    }

    /// Load them, the codecs into a worker started with `launcher`. Blocks: the agent runs
    /// it off the forwarder's thread except at start.
    pub fn load(&self, launcher: Launcher) -> Set {
        let Ok(set) = self.load_with(launcher, |_| Ok::<(), std::convert::Infallible>(()));
        set
    }

    /// [`Named::load`], asking `before` ahead of each codec file (a load that hangs costs
    /// seconds): it may tell systemd the start goes on, or answer an error to stop there,
    /// the files before it loaded for nothing. Warns (the log), once per file, about each
    /// table that loaded and leaves a record's recType to its frame's fields
    /// ([`Table::unpinned_rec_type`]).
    pub fn load_with<E>(
        &self,
        launcher: Launcher,
        mut before: impl FnMut(Next) -> Result<(), E>,
    ) -> Result<Set, E> {
        let worker = Worker::new(launcher);
        let mut codecs = HashMap::new();
        for (done, name) in self.codecs.iter().enumerate() {
            let next = Next {
                name,
                done,
                of: self.codecs.len(),
            };
            before(next)?;
            let script = load(&self.dir, name, &worker)
                .and_then(|s| self.to_a_hub(name, s.table.as_ref()).map(|()| s));
            codecs.insert(name.clone(), script);
        }
        let tables = self.tables.iter().map(|name| {
            let table =
                load_table(&self.dir, name).and_then(|t| self.to_a_hub(name, Some(&t)).map(|()| t));
            (name.clone(), table)
        });
        let set = Set {
            codecs,
            worker: Some(worker.clone()),
            tables: tables.collect(),
        };
        let codec_tables = set
            .scripts()
            .filter_map(|(n, s)| Some((n, s.table.as_ref()?)));
        let tables = set
            .tables
            .iter()
            .filter_map(|(n, t)| Some((n.as_str(), t.as_ref().ok()?)));
        let mut unpinned: Vec<String> = codec_tables
            .chain(tables)
            .filter_map(|(name, table)| {
                let why = table.unpinned_rec_type()?;
                let file = path(&self.dir, name, "toml").ok()?;
                Some(format!("mapping table {}: {why}", file.display()))
            })
            .collect();
        unpinned.sort();
        unpinned.dedup();
        for line in unpinned {
            log::warn!("{line}");
        }
        Ok(set)
    }
}

/// The codec file [`Named::load_with`] loads next: `name`, after `done` of `of`.
#[derive(Clone, Copy)]
pub struct Next<'a> {
    pub name: &'a str,
    pub done: usize,
    pub of: usize,
}

/// A [`Named::load_with`] stopped before the codec file `before`, `done` of `of` loaded.
#[derive(Debug)]
pub struct Stopped {
    pub before: String,
    pub done: usize,
    pub of: usize,
}

impl Stopped {
    /// Stopped before `next`.
    pub fn at(next: Next) -> Stopped {
        Stopped {
            before: next.name.to_string(),
            done: next.done,
            of: next.of,
        }
    }
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stopped before {}.js, {} of {} codec file(s) loaded",
            self.before, self.done, self.of
        )
    }
}

/// The codecs and mapping tables of a [`Named`], each loaded once; one that failed to load keeps its reason, which
/// its uplinks' packed records carry.
#[derive(Default)]
pub struct Set {
    codecs: HashMap<String, Result<Script, String>>,
    /// The worker the codecs were loaded into.
    worker: Option<Worker>,
    tables: HashMap<String, Result<Table, String>>,
}

impl Set {
    /// The process id of the worker the codecs were loaded into, while it runs.
    #[cfg(test)]
    pub fn worker_pid(&self) -> Option<u32> {
        self.worker.as_ref().and_then(Worker::pid)
    }

    pub fn codec(&self, name: &str) -> Option<&Result<Script, String>> {
        self.codecs.get(name)
    }

    /// The codecs that loaded, by name.
    pub fn scripts(&self) -> impl Iterator<Item = (&str, &Script)> {
        let loaded = self.codecs.iter();
        loaded.filter_map(|(name, c)| Some((name.as_str(), c.as_ref().ok()?)))
    }

    /// The mapping table `name`, if it loaded.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.get(name).and_then(|t| t.as_ref().ok())
    }

    /// Why the files that failed to load failed, each naming its file.
    pub fn failures(&self) -> Vec<String> {
        let codecs = self.codecs.values().filter_map(|c| c.as_ref().err());
        let tables = self.tables.values().filter_map(|t| t.as_ref().err());
        let mut out: Vec<String> = codecs
            .map(|e| format!("JavaScript codec {e}"))
            .chain(tables.map(|e| format!("mapping table {e}")))
            .collect();
        out.sort();
        out
    }

    /// How many codecs loaded.
    pub fn loaded(&self) -> usize {
        self.codecs.values().filter(|c| c.is_ok()).count()
    }

    /// Each file by its name (`js/<name>`, `table/<name>`) and why it failed to load, if it
    /// did, naming the file.
    pub fn outcomes(&self) -> Vec<(String, Option<String>)> {
        let codecs = self.codecs.iter().map(|(name, c)| {
            let e = c.as_ref().err().map(|e| format!("JavaScript codec {e}"));
            (format!("js/{name}"), e)
        });
        let tables = self.tables.iter().map(|(name, t)| {
            let e = t.as_ref().err().map(|e| format!("mapping table {e}"));
            (format!("table/{name}"), e)
        });
        let mut out: Vec<_> = codecs.chain(tables).collect();
        out.sort();
        out
    }

    /// Take the files of `new` (the same names, loaded again), each on its own: where the new
    /// version failed to load and the one in use had loaded, the one in use is kept. A codec
    /// and the table beside it are one [`Script`], kept or taken together; a device's
    /// `mapping` table is a file of its own, so a new codec can meet the previous version of
    /// that table (docs/operations.md, "Codec reload"). A codec kept moves to `new`'s worker
    /// (loaded there at its first call), so that the worker it was loaded into ends with the
    /// rest of what was replaced, and at most one set waits (see `decode::Pending`). Hands back what
    /// was replaced, for the caller to drop where freeing engines does no harm.
    pub fn update(&mut self, new: Set) -> Set {
        let mut replaced = Set {
            worker: std::mem::replace(&mut self.worker, new.worker.clone()),
            ..Set::default()
        };
        for (name, codec) in new.codecs {
            if codec.is_ok() || !matches!(self.codecs.get(&name), Some(Ok(_))) {
                if let Some(old) = self.codecs.insert(name.clone(), codec) {
                    replaced.codecs.insert(name, old);
                }
            } else if let (Some(Ok(kept)), Some(worker)) =
                (self.codecs.get_mut(&name), &self.worker)
            {
                kept.codec = worker.adopt(&kept.codec);
            }
        }
        for (name, table) in new.tables {
            if table.is_ok() || !matches!(self.tables.get(&name), Some(Ok(_))) {
                if let Some(old) = self.tables.insert(name.clone(), table) {
                    replaced.tables.insert(name, old);
                }
            }
        }
        replaced
    }
}
