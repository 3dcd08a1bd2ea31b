//! Tagged tables (`[[source]]`, `[sink]`: a `type` and that type's keys) and the key paths of
//! errors: the path serde reports, the one inside a tagged table (which serde's own tagged
//! enums lose), and the line it is on.

use std::fmt;

use serde::{de, de::DeserializeOwned, Deserialize, Deserializer, Serialize};

/// Ends the key path inside a tagged table at the front of an error message, for
/// [`super::from_toml`] to join to the table's own path.
const PATH_END: char = '\u{1f}';

/// An error at `path` inside a tagged table (`""`: the table itself).
pub(super) fn in_table<E: de::Error>(path: &str, reason: impl fmt::Display) -> E {
    E::custom(format!("{path}{PATH_END}{reason}"))
}

/// A tagged table (`[[source]]`, `[sink]`): its `type` and its other keys. serde's internally
/// tagged enums would lose the key path of an error inside the table; [`fields`] keeps it.
pub(super) fn tagged<'de, D: Deserializer<'de>>(d: D) -> Result<(String, toml::Value), D::Error> {
    let mut table = toml::Table::deserialize(d)?;
    match table.remove("type") {
        Some(toml::Value::String(kind)) => Ok((kind, toml::Value::Table(table))),
        Some(other) => Err(in_table(
            "type",
            format_args!(
                "invalid type: {} `{other}`, expected a type name string",
                other.type_str()
            ),
        )),
        None => Err(in_table("", "missing field `type`")),
    }
}

/// A tagged table as written: `type` first, then the type's keys.
#[derive(Serialize)]
pub(super) struct Tagged<'a, T> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    #[serde(flatten)]
    pub keys: &'a T,
}

pub(super) fn unknown_kind<E: de::Error>(kind: &str, kinds: &[&str]) -> E {
    let kinds: Vec<String> = kinds.iter().map(|k| format!("`{k}`")).collect();
    in_table(
        "type",
        format_args!(
            "unknown variant `{kind}`, expected one of {}",
            kinds.join(", ")
        ),
    )
}

/// A tagged table's keys as `T`; an error carries its key path inside the table.
pub(super) fn fields<T: DeserializeOwned, E: de::Error>(table: toml::Value) -> Result<T, E> {
    serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "" } else { &path };
        in_table(path, e.inner().message().trim())
    })
}

/// The line of `field` in the tagged table at `table` (`source[1]`, `sink`), or of the table's
/// header without a field; found in the text, since errors inside such a table have no
/// position of their own.
fn line_in_table(text: &str, table: &str, field: &str) -> Option<usize> {
    let (name, index) = match table.split_once('[') {
        Some((name, i)) => (name, i.trim_end_matches(']').parse::<usize>().ok()?),
        None => (table, 0),
    };
    let headers = [format!("[[{name}]]"), format!("[{name}]")];
    let all: Vec<&str> = text.lines().collect();
    // A line inside a value (a multi-line string, an array) is neither a header nor a key.
    let starts = starts_inside(&all);
    let outside = all
        .into_iter()
        .enumerate()
        .filter(|(i, _)| starts[*i].is_none());
    let mut lines = outside.skip_while(|(_, l)| {
        let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
        !headers.contains(&l)
    });
    let mut header = lines.next()?;
    for _ in 0..index {
        header = lines.find(|(_, l)| {
            let l: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            headers.contains(&l)
        })?;
    }
    let at_field = lines
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            let l = l.trim_start();
            !field.is_empty()
                && l.strip_prefix(field)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
        });
    Some(at_field.unwrap_or(header).0 + 1)
}

/// One-line reason from a toml error, with the line number when it has a span, and the key
/// written on that line when it has one (a value TOML cannot hold, as an integer past 2^63).
pub(crate) fn toml_error(text: &str, e: &toml::de::Error) -> (String, String) {
    let msg = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            let key = key_on_line(text, line).unwrap_or_else(|| "(parse)".into());
            (key, format!("{msg} (line {line})"))
        }
        None => ("(parse)".into(), msg),
    }
}

/// The key path that line `n` (from 1) of `text` assigns: the table header above it and the
/// key before `=` (`source[1].url` in the second `[[source]]`); `None` for a line that
/// assigns nothing. A line inside a value that spans lines (a multi-line string, an array)
/// is that value's: what stands before a `=` there is the value's text (a PEM body's base64
/// padding, a connection string's parts), not a key, and may be a secret.
fn key_on_line(text: &str, n: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    if n == 0 || n > lines.len() {
        return None;
    }
    let starts = starts_inside(&lines[..n]);
    let mut n = n;
    // The line a value began on starts before the value, so this ends.
    while let Some(start) = starts[n - 1] {
        n = start;
    }
    let (key, _) = lines[n - 1].split_once('=')?;
    let key = key.trim();
    if key.is_empty()
        || key.starts_with(['[', '#'])
        || toml::from_str::<toml::Table>(&format!("{key} = 0")).is_err()
    {
        return None;
    }
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    // Only a line that starts outside every value can be a table header.
    for (l, _) in lines[..n - 1]
        .iter()
        .zip(&starts)
        .filter(|(_, s)| s.is_none())
    {
        let l = l.trim();
        if let Some((name, _)) = l.strip_prefix("[[").and_then(|r| r.split_once("]]")) {
            let count = arrays.entry(name.trim()).or_default();
            table = format!("{}[{count}]", name.trim());
            *count += 1;
        } else if let Some((name, _)) = l.strip_prefix('[').and_then(|r| r.split_once(']')) {
            table = name.trim().to_string();
        }
    }
    Some(match table.is_empty() {
        true => key.to_string(),
        false => format!("{table}.{key}"),
    })
}

/// Where the scan of [`starts_inside`] stands.
#[derive(Clone, Copy, PartialEq)]
enum In {
    Code,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
}

/// For each of `lines`, the line (from 1) where the value it starts inside of began: a
/// multi-line string, or an array written over several lines. `None` for a line that starts
/// outside any value: only such a line holds a key or a table header; a line inside a value
/// holds the value's text, whatever it looks like.
fn starts_inside(lines: &[&str]) -> Vec<Option<usize>> {
    let mut state = In::Code;
    let mut depth = 0usize;
    let mut opened = 0;
    let mut starts = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        // A one-line string ends with its line, so a line starts in code or a multi-line value.
        let inside = matches!(state, In::MultiBasic | In::MultiLiteral) || depth > 0;
        starts.push(inside.then_some(opened));
        // A table header.
        if !inside && line.trim_start().starts_with('[') {
            continue;
        }
        let b = line.as_bytes();
        let mut j = 0;
        while j < b.len() {
            match (state, b[j]) {
                (In::Code, b'#') => break,
                (In::Code, b'[') => {
                    if depth == 0 {
                        opened = i + 1;
                    }
                    depth += 1;
                }
                (In::Code, b']') => depth = depth.saturating_sub(1),
                (In::Code, q @ (b'"' | b'\'')) => {
                    let multi = b[j..].starts_with(&[q; 3]);
                    state = match (q, multi) {
                        (b'"', true) => In::MultiBasic,
                        (b'"', false) => In::Basic,
                        (_, true) => In::MultiLiteral,
                        (_, false) => In::Literal,
                    };
                    if multi {
                        j += 2;
                        if depth == 0 {
                            opened = i + 1;
                        }
                    }
                }
                (In::Basic | In::MultiBasic, b'\\') => j += 1,
                (In::Basic, b'"') | (In::Literal, b'\'') => state = In::Code,
                (In::MultiBasic, b'"') | (In::MultiLiteral, b'\'')
                    if b[j..].starts_with(&[b[j]; 3]) =>
                {
                    // Up to two more quotes are the string's own, before its closing three.
                    let end = b[j..].iter().take(5).take_while(|&&c| c == b[j]).count();
                    j += end - 1;
                    state = In::Code;
                }
                _ => {}
            }
            j += 1;
        }
        // A one-line string ends with its line (unclosed, it is an error of its own).
        if matches!(state, In::Basic | In::Literal) {
            state = In::Code;
        }
    }
    starts
}

/// The key path and one-line reason of a deserialization error in `text`.
pub(super) fn located(
    text: &str,
    e: &serde_path_to_error::Error<toml::de::Error>,
) -> (String, String) {
    let key = e.path().to_string();
    let (mut key, reason) = match e.inner().message().split_once(PATH_END) {
        // Inside a tagged table: the span toml gives is the whole array's.
        Some((inner, reason)) => {
            let line = line_in_table(text, &key, inner.split('.').next().unwrap_or(""));
            let reason = reason.trim().replace('\n', " ");
            let reason = match line {
                Some(n) => format!("{reason} (line {n})"),
                None => reason,
            };
            match inner {
                "" => (key, reason),
                _ => (format!("{key}.{inner}"), reason),
            }
        }
        None => (key, toml_error(text, e.inner()).1),
    };
    // An unknown field's error may leave the field out of the path.
    if let Some(field) = reason
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
    {
        if !key.ends_with(field) {
            key = format!("{key}.{field}");
        }
    }
    if key == "." {
        key = "(top level)".into();
    }
    (key, reason)
}
