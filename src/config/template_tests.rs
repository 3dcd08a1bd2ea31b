//! The template (`config/hubgate.toml`, `hubgate configfile`) is the reference for every key:
//! each key the schema takes appears in it, set or commented out, in its own table and, in
//! `[[source]]` and `[sink]`, under its own `type`. The schema's keys come from the schema
//! itself: after an unknown key, serde lists every field (or `type`) the table takes.

use std::collections::BTreeSet;

use super::{Config, TEMPLATE};

const PROBE: &str = "zz_probe";

/// A key where it belongs: (table, the table's `type`, key). The top level is table "".
type Place = (String, Option<String>, String);

/// The error `text` gets from the config parser.
fn reason(text: &str) -> String {
    match Config::parse(text) {
        Ok(_) => panic!("{text:?} parsed"),
        Err((_, reason)) => reason,
    }
}

/// The names serde lists after the probe: "unknown field `zz_probe`, expected one of `a`, `b`".
fn listed(reason: &str) -> Option<Vec<String>> {
    let (probe, list) = reason.split_once(", expected ")?;
    probe.contains(PROBE).then(|| {
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(String::from)
            .collect()
    })
}

/// Every key the schema takes, found by probing each table with an unknown key or `type`.
fn schema_keys() -> BTreeSet<Place> {
    let mut out = BTreeSet::new();
    let top = listed(&reason(&format!("{PROBE} = 1"))).expect("top-level keys");
    for table in top {
        out.insert((String::new(), None, table.clone()));
        let mut tables = [format!("[{table}]\n"), format!("[[{table}]]\n")]
            .into_iter()
            .map(|header| (header.clone(), reason(&format!("{header}{PROBE} = 1"))));
        let Some((header, found)) =
            tables.find(|(_, r)| listed(r).is_some() || r.starts_with("missing field `type`"))
        else {
            continue; // a plain value, such as gateway_id
        };
        let kinds = match listed(&found) {
            Some(keys) => vec![(String::new(), None, keys)],
            None => listed(&reason(&format!("{header}type = \"{PROBE}\"")))
                .expect("the kinds of a tagged table")
                .into_iter()
                .map(|kind| {
                    let line = format!("type = \"{kind}\"\n");
                    let keys = listed(&reason(&format!("{header}{line}{PROBE} = 1")))
                        .unwrap_or_else(|| panic!("keys of {table} type {kind}"));
                    (line, Some(kind), keys)
                })
                .collect(),
        };
        for (_, kind, keys) in kinds {
            if kind.is_some() {
                out.insert((table.clone(), kind.clone(), "type".into()));
            }
            for key in keys {
                out.insert((table.clone(), kind.clone(), key));
            }
        }
    }
    out
}

/// Every key `template` shows, set or commented out (`# key = …`), where it shows it: the
/// last table header above it (`[[source]]`, `# [sink]`) and that table's last `type`.
fn template_keys(template: &str) -> BTreeSet<Place> {
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let mut out = BTreeSet::new();
    let (mut table, mut kind) = (String::new(), None);
    for line in template.lines() {
        let line = line.trim_start_matches('#').trim();
        if let Some(header) = line
            .strip_prefix('[')
            .and_then(|h| h.split(']').next())
            .map(|h| h.trim_matches(['[', ']']))
            .filter(|h| h.split('.').all(bare))
        {
            match header.split_once('.') {
                // A table inside a table (`[sink.hubs]`) is a key of its parent.
                Some((parent, key)) => {
                    out.insert((parent.to_string(), kind.clone(), key.to_string()));
                }
                None => {
                    out.insert((String::new(), None, header.to_string()));
                    kind = None;
                }
            }
            table = header.to_string();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        if !bare(key) {
            continue;
        }
        if key == "type" {
            let value = value.split('#').next().unwrap_or("");
            kind = Some(value.trim().trim_matches('"').to_string());
        }
        out.insert((table.clone(), kind.clone(), key.to_string()));
    }
    out
}

/// The schema's keys that `template` does not show, as `table(type).key`.
fn missing_from(template: &str) -> Vec<String> {
    let shown = template_keys(template);
    schema_keys()
        .difference(&shown)
        .map(|(table, kind, key)| match kind {
            Some(kind) => format!("{table}(type = {kind:?}).{key}"),
            None if table.is_empty() => key.clone(),
            None => format!("{table}.{key}"),
        })
        .collect()
}

#[test]
fn the_template_shows_every_key_of_the_schema() {
    let schema = schema_keys();
    // The probe found the tables, their kinds and their keys.
    for place in [
        ("", None, "gateway_id"),
        ("buffer", None, "max_age"),
        ("device", None, "dev_eui"),
        ("source", Some("udp"), "gateways"),
        ("sink", Some("kafka"), "sasl_password"),
    ] {
        let place = (
            place.0.to_string(),
            place.1.map(String::from),
            place.2.to_string(),
        );
        assert!(schema.contains(&place), "{place:?} not in {schema:?}");
    }
    let missing = missing_from(TEMPLATE);
    assert!(
        missing.is_empty(),
        "config/hubgate.toml does not show these keys (add each, with its default and why): {missing:?}"
    );
    // And nothing it shows, commented out or not, is a key the schema does not take.
    let unknown: Vec<_> = template_keys(TEMPLATE)
        .difference(&schema)
        .cloned()
        .collect();
    assert!(unknown.is_empty(), "not in the schema: {unknown:?}");
}

#[test]
fn a_key_left_out_of_the_template_is_named() {
    let without = TEMPLATE.replace("dedup_window", "dedup_windw");
    assert_eq!(missing_from(&without), ["record.dedup_window"]);
    let without = TEMPLATE.replace("gateways =", "gateway =");
    assert_eq!(missing_from(&without), ["source(type = \"udp\").gateways"]);
}
